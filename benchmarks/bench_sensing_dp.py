"""Dirty Pixels (Diamond et al.) Table 2 in kind, on real images, from the recipes:

1. ``recipes/sensing/dp_classifier.yaml``: the classifier pre-trained on clean real
   Fashion-MNIST (32x32 RGB; the ImageNet role).
2. Per condition (``3lux``: noise only, the denoising unit; ``6lux_psf``: noise and a Gaussian
   PSF, the joint deblurring + denoising unit):
   ``dp_finetune`` (the classifier fine-tuned on degraded images), ``dp_denoise`` /
   ``dp_deblur_denoise`` (the unit alone, image loss, on scikit-image photograph patches) and
   ``dp_joint`` / ``dp_joint_deblur`` (unit + classifier end to end from both pre-trained runs).
3. Evaluation on 500 Fashion-MNIST validation images degraded once (fixed seed): top-1 and the
   PSNR of the image the classifier sees, for (a) pre-trained, (b) fine-tuned, (c) BM3D
   (Anscombe domain; + Wiener deconvolution with the PSF for ``6lux_psf``) + pre-trained,
   (d) joint, and, for reference, the unit trained alone + pre-trained.

    python benchmarks/bench_sensing_dp.py            # ~12-15 min on 2 shared cores
    python benchmarks/bench_sensing_dp.py --quick    # a smoke run

Resumable: finished steps and evaluations are kept under ``runs/bench_sensing/dp/``. Writes
``benchmarks/results/sensing_dp.md`` / ``.json`` and ``sensing_dp_restoration.png`` (noisy |
restored by the unit | restored by the joint model | clean, PSNR under each).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from rich.console import Console  # noqa: E402

from spdnn.tasks.sensing.pipeline import cached, run_step, step_walls  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPES = ROOT / "recipes" / "sensing"

CONDITIONS = {"3lux": ("dp_denoise.yaml", "dp_joint.yaml"),
              "6lux_psf": ("dp_deblur_denoise.yaml", "dp_joint_deblur.yaml")}
# Diamond et al., Table 2 (Inception-v4 on ImageNet, top-1): 3 lux and 6 lux + off-axis PSF
PAPER = {"3lux": {"pretrained": 45.54, "finetuned": 64.49, "conventional": 47.43,
                  "joint": 69.58, "conventional_name": "BM3D + Pretrained"},
         "6lux_psf": {"pretrained": 61.07, "finetuned": 68.32, "conventional": 48.64,
                      "joint": 71.08, "conventional_name": "HQS + Pretrained"}}
BUDGET = {
    "full": {"classifier": ["steps=600", "data.val_size=500"],
             "finetune": ["steps=200", "data.val_size=500", "eval_every=200"],
             "unit": ["steps=300", "eval_every=300"],
             "joint": ["steps=200", "data.val_size=500", "eval_every=200"],
             "test": 500},
    "quick": {"classifier": ["steps=20", "data.train_size=512", "data.val_size=64",
                             "eval_every=20"],
              "finetune": ["steps=5", "data.train_size=512", "data.val_size=64", "eval_every=5"],
              "unit": ["steps=5", "data.train_size=64", "data.val_size=16", "eval_every=5"],
              "joint": ["steps=5", "data.train_size=512", "data.val_size=64", "eval_every=5"],
              "test": 40},
}


@torch.no_grad()
def evaluate(cond: str, runs: dict[str, Path], n: int, figure: Path | None) -> dict:
    """Top-1 and PSNR of the four Table 2 rows (+ unit alone) on ``n`` degraded images."""
    from spdnn.data.degrade import poisson_gaussian
    from spdnn.data.images import image_datasets
    from spdnn.runs import trainer_from_checkpoint
    from spdnn.tasks.sensing.common import accuracy
    from spdnn.tasks.sensing.dirty_pixels import (
        conventional_restore,
        image_quality,
        restoration_figure,
    )
    from spdnn.train.recipe import DataSpec

    nets = {k: trainer_from_checkpoint(p, quiet=True) for k, p in runs.items()}
    models = {k: tr.eval_models() for k, tr in nets.items()}
    for ms in models.values():
        for m in ms.values():
            m.eval()
    # the classifier's validation split (never trained on), as the recipes draw it
    data = DataSpec(source="fashion_mnist", train_size=20000, val_size=n, seed=0)
    _, val = image_datasets(data, (3, 32, 32))
    x, labels = val.images, val.labels
    y = poisson_gaussian(x, cond, torch.Generator().manual_seed(12345))
    pre = models["classifier"]["net"]
    t = time.perf_counter()
    conv = conventional_restore(y, cond)
    conv_s = time.perf_counter() - t
    unit = models["unit"]["net"]
    joint = models["joint"]["joint"]
    restored_unit = torch.cat([unit(y[s:s + 100]) for s in range(0, n, 100)]).clamp(0, 1)
    restored_joint, logits_joint = [], []
    for s in range(0, n, 100):
        r, lg = joint(y[s:s + 100])
        restored_joint.append(r.clamp(0, 1))
        logits_joint.append(lg)
    restored_joint = torch.cat(restored_joint)

    def cls(net, imgs):
        return torch.cat([net(imgs[s:s + 100]) for s in range(0, n, 100)]).float()

    rows = {
        "pretrained": (accuracy(cls(pre, y), labels), image_quality(y, x)),
        "finetuned": (accuracy(cls(models["finetune"]["net"], y), labels), image_quality(y, x)),
        "conventional": (accuracy(cls(pre, conv), labels), image_quality(conv, x)),
        "unit_alone": (accuracy(cls(pre, restored_unit), labels),
                       image_quality(restored_unit, x)),
        "joint": (accuracy(torch.cat(logits_joint).float(), labels),
                  image_quality(restored_joint, x)),
        "clean_pretrained": (accuracy(cls(pre, x), labels), {"psnr": float("inf"),
                                                             "ssim": 1.0}),
    }
    if figure is not None:
        k = slice(0, 4)
        restoration_figure([("noisy", y[k]), ("unit alone", restored_unit[k]),
                            ("joint", restored_joint[k]), ("clean", x[k])], x[k], figure,
                           f"Dirty Pixels in kind, {cond}: Fashion-MNIST validation images")
    return {name: {"acc": a, "psnr": q["psnr"], "ssim": q["ssim"]} for name, (a, q) in
            rows.items()} | {"conventional_s": conv_s, "n": n}


LABELS = {"pretrained": "(a) Pretrained on clean, tested on degraded",
          "finetuned": "(b) Fine-tuned on degraded",
          "conventional": "(c) Conventional + pretrained",
          "joint": "(d) Joint architecture",
          "unit_alone": "unit trained alone (image loss) + pretrained",
          "clean_pretrained": "pretrained on the clean images (reference)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few steps")
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_sensing" / "dp")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    console = Console(stderr=True)
    budget = BUDGET["quick" if args.quick else "full"]
    out = args.out / ("quick" if args.quick else "full")
    stem = "sensing_dp_quick" if args.quick else "sensing_dp"
    t0 = time.time()
    clf, _ = run_step(RECIPES / "dp_classifier.yaml", budget["classifier"],
                      out / "dp_classifier", console)
    results = {}
    walls: dict[str, str] = {}
    for cond in args.conditions:
        unit_recipe, joint_recipe = CONDITIONS[cond]
        ft, _ = run_step(RECIPES / "dp_finetune.yaml", budget["finetune"] + [
            f"options.noise={cond}", f"options.pretrained={clf}"], out / f"finetune_{cond}",
            console)
        unit, _ = run_step(RECIPES / unit_recipe, budget["unit"] + [f"options.noise={cond}"],
                           out / f"unit_{cond}", console)
        joint, _ = run_step(RECIPES / joint_recipe, budget["joint"] + [
            f"options.noise={cond}", f"options.unit_pretrained={unit}",
            f"options.classifier_pretrained={clf}"], out / f"joint_{cond}", console)
        runs = {"classifier": clf, "finetune": ft, "unit": unit, "joint": joint}
        walls[cond] = step_walls(runs)
        key = [str(p) + (p / "step_done.json").read_text() for p in runs.values()]
        fig = RESULTS / f"{stem}_restoration_{cond}.png"
        results[cond] = cached(out / f"eval_{cond}.json", key + [budget["test"]],
                               functools.partial(evaluate, cond, runs, budget["test"], fig))
        results[cond]["unit_train"] = json.loads((unit / "step_done.json").read_text())["final"]
    wall = time.time() - t0

    md = ["# Dirty Pixels (Diamond et al.) Table 2 in kind", "",
          "Classifier: `netspecs/dirty_pixels/classifier.yaml` (a 141k-parameter VGG-style "
          "stand-in for Inception-v4), 32x32. Data: **real Fashion-MNIST** (gray repeated to "
          "RGB, 28 -> 32) in the ImageNet role; the units are pre-trained on 32x32 patches of "
          "scikit-image's photographs (the BSDS300 role). Image formation: y = clip(a P(k*x / a) "
          "+ N(0, b^2)) with the public code's Nexus 6P noise curve: 3 lux (a, b) = (0.12483, "
          "0.31553); 6 lux (0.06241, 0.15777) with a Gaussian PSF sigma 1 px on 5x5 standing in "
          "for the calibrated off-axis PSF. Conventional denoiser: **BM3D** (pip `bm3d` 4.0.3, "
          "in the Anscombe domain at unit sigma, exact unbiased inverse; images denoised 100 at "
          "a time as one mosaic), followed for 6lux_psf by scikit-image's Wiener deconvolution "
          "with the known PSF (the paper's row there is HQS).", "",
          f"Budget: classifier `{' '.join(budget['classifier'])}`, fine-tune "
          f"`{' '.join(budget['finetune'])}`, unit `{' '.join(budget['unit'])}`, joint "
          f"`{' '.join(budget['joint'])}`; test: {budget['test']} validation images degraded "
          f"once (seed 12345); seed 0; 2 shared CPU cores (load ~12 from six sessions in the "
          f"recorded run); this invocation's wall time (finished steps and evaluations are "
          f"reused): {wall / 60:.1f} min; training wall time per step: "
          + "; ".join(f"{c}: {w}" for c, w in walls.items()) + " (the classifier is shared).",
          ""]
    for cond, r in results.items():
        p = PAPER[cond]
        md += [f"## {cond}", "", "| method | top-1 (ours) | PSNR of the classifier's input, dB "
               "(ours) | SSIM (ours) | top-1, paper (Inception-v4, ImageNet) |",
               "|---|---|---|---|---|"]
        for key in ("pretrained", "finetuned", "conventional", "joint", "unit_alone",
                    "clean_pretrained"):
            paper = (f"{p[key]:.2f}%" + (f" ({p['conventional_name']})"
                                         if key == "conventional" else "")) if key in p else ""
            md.append(f"| {LABELS[key]} | {100 * r[key]['acc']:.2f}% | {r[key]['psnr']:.2f} | "
                      f"{r[key]['ssim']:.3f} | {paper} |")
        order = sorted(("pretrained", "finetuned", "conventional", "joint"),
                       key=lambda k: -r[k]["acc"])
        paper_order = sorted(("pretrained", "finetuned", "conventional", "joint"),
                             key=lambda k: -p[k])
        same = order == paper_order
        ut = r["unit_train"]
        md += ["", f"Ordering by top-1, ours: {' > '.join(order)}; the paper's: "
               f"{' > '.join(paper_order)} ({'the same' if same else 'different'}). "
               f"The unit alone on its held-out photograph patches: PSNR "
               f"{ut.get('val_psnr', float('nan')):.2f} dB / SSIM "
               f"{ut.get('val_ssim', float('nan')):.3f} (noisy input "
               f"{ut.get('val_psnr_noisy', float('nan')):.2f} dB / "
               f"{ut.get('val_ssim_noisy', float('nan')):.3f}). BM3D took "
               f"{r['conventional_s']:.0f} s for {r['n']} images.", "",
               f"![restoration](sensing_dp{'_quick' if args.quick else ''}_restoration_{cond}.png)",
               ""]
    md += ["## Where ours agrees and disagrees", ""]
    for cond, r in results.items():
        p = PAPER[cond]
        jf, pjf = 100 * (r["joint"]["acc"] - r["finetuned"]["acc"]), p["joint"] - p["finetuned"]
        cp = 100 * (r["conventional"]["acc"] - r["pretrained"]["acc"])
        pcp = p["conventional"] - p["pretrained"]
        md += [f"- **{cond}**: joint minus fine-tuned {jf:+.1f} points (paper {pjf:+.1f}: "
               f"{'agrees' if (jf > 0) == (pjf > 0) else 'disagrees'}); conventional minus "
               f"pretrained {cp:+.1f} (paper, {p['conventional_name']}, {pcp:+.1f}: "
               f"{'agrees' if (cp > 0) == (pcp > 0) else 'disagrees'}); PSNR of the joint "
               f"unit's output {r['joint']['psnr']:.1f} dB vs the conventional "
               f"{r['conventional']['psnr']:.1f} dB (the paper: the joint unit scores worse "
               f"PSNR while the classifier does better: "
               f"{'agrees' if r['joint']['psnr'] < r['conventional']['psnr'] else 'disagrees'})."]
    n = next(iter(results.values()))["n"]
    md += [f"- One standard error of a top-1 near 84% on {n} test images is "
           f"{100 * (0.84 * 0.16 / n) ** 0.5:.1f} points: differences between fine-tuned and "
           "joint below about twice that are not resolved by this table."]
    md += ["- Fine-tuned and joint both recover most of the clean accuracy "
           f"({100 * next(iter(results.values()))['clean_pretrained']['acc']:.1f}% on clean "
           "images); our 3lux noise (b = 0.32 of the range, ~11 dB) is far stronger relative to "
           "Fashion-MNIST's dark backgrounds than on ImageNet photographs, and the unit trained "
           "alone for PSNR over-smooths (second column of the pictures).", ""]
    md += ["## The paper's statements", "",
           "Table 2: joint > fine-tuned > conventional + pretrained ~ pretrained (BM3D adds a few "
           "points at 3 lux, HQS loses >10 points with the off-axis PSF); the jointly tuned unit "
           "scores *worse* PSNR than conventional restoration (sec. 7.2, Fig. 7) while helping "
           "the classifier most. Where our ordering differs it is stated above; our budget is "
           "minutes of CPU training on a 10-class 32x32 task, not 2 epochs of ImageNet.", ""]
    if args.quick:
        md.insert(1, "\n**Quick smoke run: not a result.**\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.md").write_text("\n".join(md))
    (RESULTS / f"{stem}.json").write_text(json.dumps({"budget": budget, "results": results},
                                                     indent=1))
    console.print("\n".join(md))


if __name__ == "__main__":
    main()
