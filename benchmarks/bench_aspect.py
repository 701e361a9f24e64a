"""GAN+aspect on iris (thesis sec. 3.3.1, App. F sec. 3.2): does an aspect generator learned from
inverted latents give usable segmentation maps, and do its generated pairs help a segmenter?

Pipeline (each stage cached in ``runs/bench_aspect/``, so a rerun resumes where it stopped):

1. ``began``: BEGAN on the embedded SYNTHETIC degraded eyes at 24 x 32
   (recipes/aspect/iris_began.yaml; the paper: Bath800 + CASIA1000 at 96 x 128), with the
   collapse check of :meth:`spdnn.tasks.aspect.IrisBEGANTask.report`.
2. ``invert_*``: the generator inverted on the real training eyes and on held-out real eyes by
   Adam on the MAE (App. F eq. 4, lr 0.1) and, for the comparison, by a trained encoder
   (SPADE-SR sec. 3.4) on the held-out eyes: MAE and seconds.
3. ``aspect``: the mask decoder (recipes/aspect/iris_mask.yaml) trained on the training latents
   and the exact masks (MSE, Adam 3e-4).
4. ``segmenter``: the SPDNN merge of the App. A iris parents (recipes/iris_a_merged.yaml, the
   "iris merged network") with its input set to 1 x 24 x 32, trained on the same real pairs.

Measurements (written to ``benchmarks/results/aspect_iris.md`` / ``.json``):

* **aspect accuracy on held-out real eyes**: invert -> aspect generator -> mask vs the exact
  mask (MCC, F1 at 0.45, confusion counts over the whole set, App. D sec. 4), next to the
  segmenter on the same images;
* **agreement on generated eyes**: the aspect generator's mask vs the segmenter's mask on the
  same generated image (the thesis used MIRLIN as the reference);
* **usefulness**: the merged network trained on N in {64, 256} real pairs with and without K
  generated pairs, 3 seeds (each seed draws the real subset and the initialisation), MCC on the
  held-out real eyes; the mean difference with its spread.

    python benchmarks/bench_aspect.py --name aspect_iris_lk01 --began-set options.lambda_k=0.01
    python benchmarks/bench_aspect.py --name aspect_iris --began-set options.lambda_k=0.001
    python benchmarks/bench_aspect.py --quick    # a smoke run of every stage (~5 min)

Each full run takes ~35-45 min on 2 cores shared by six sessions. ``--name`` names the results
(``benchmarks/results/<name>.md``) and the work folder (``runs/bench_<name>``); ``--began-set``
overrides the BEGAN recipe: the recipe's lambda_k 0.01 (first line) and the paper's 0.001
(second line; the BEGAN collapses at this budget).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

FULL = {"began_steps": 3000, "train_eyes": 1024, "heldout": 256, "invert_train": 512,
        "invert_steps": 100,
        "encoder_steps": 300, "aspect_steps": 1500, "seg_steps": 300, "use_steps": 200,
        "n_real": [64, 256], "k_gen": 256, "seeds": [0, 1, 2], "agree": 256}
QUICK = {"began_steps": 20, "train_eyes": 64, "heldout": 32, "invert_train": 48,
         "invert_steps": 5,
         "encoder_steps": 5, "aspect_steps": 20, "seg_steps": 10, "use_steps": 5,
         "n_real": [16], "k_gen": 16, "seeds": [0], "agree": 16}


def cached(work: Path, name: str, fn):
    """``fn()`` once: its JSON result is kept in ``work/<name>.json``."""
    path = work / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    res = fn()
    res["stage_seconds"] = round(time.perf_counter() - t0, 1)
    from spdnn.io import write_atomic

    write_atomic(path, json.dumps(res, indent=2))
    print(f"[{name}] {res}", flush=True)
    return res


def train_began(work: Path, b: dict, overrides: list[str]) -> dict:
    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe

    r = load_recipe(ROOT / "recipes/aspect/iris_began.yaml",
                    [f"steps={b['began_steps']}", f"data.train_size={b['train_eyes']}",
                     f"data.val_size={b['heldout']}",
                     f"eval_every={max(1, b['began_steps'] // 4)}",
                     f"checkpoint_every={max(1, b['began_steps'] // 4)}"] + overrides)
    out = work / "iris_began"
    tr = trainer_for(r, outdir=out, resume=(out / "last.pt").is_file(), progress=False)
    t0 = time.perf_counter()
    final = tr.run()
    secs = time.perf_counter() - t0
    models = tr.eval_models()
    for m in models.values():
        m.eval()
    rep = tr.task.report(models, out / "eval", tr.device)
    return {"final": final, "report": rep, "train_seconds": secs, "overrides": overrides}


def invert(work: Path, split: str, method: str, b: dict) -> dict:
    from spdnn.cli.latent import inversion_data, load_generator_run, run_inversion
    from spdnn.tasks.gan.invert import save_latents

    tr, models, ckpt = load_generator_run(work / "iris_began")
    limit = b["invert_train"] if split == "train" else None
    images, aspects, what = inversion_data(tr.task, None, split, limit)
    inv = run_inversion(tr, models, images, method, steps=b["invert_steps"], lr=0.1,
                        batch_size=256, seed=0, encoder_steps=b["encoder_steps"],
                        encoder_lr=1e-3, show_progress=False)
    save_latents(work / f"latents_{split}_{method}.pt", inv, images, aspects,
                 {"run": str(ckpt), "data": what})
    m = inv.mae
    return {"method": method, "split": split, "n": len(m), "mae_mean": float(m.mean()),
            "mae_median": float(m.median()), "mae_p90": float(m.quantile(0.9)),
            "seconds": inv.seconds, "ms_per_image": 1000 * inv.seconds / len(m),
            "settings": {k: v for k, v in inv.settings.items() if k != "encoder"}}


def train_aspect(work: Path, b: dict) -> dict:
    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe

    n = b["invert_train"]
    val = max(1, n // 10)
    r = load_recipe(ROOT / "recipes/aspect/iris_mask.yaml",
                    [f"data.root={work / 'latents_train_optimize.pt'}",
                     f"data.train_size={n - val}", f"data.val_size={val}",
                     f"steps={b['aspect_steps']}", f"eval_every={max(1, b['aspect_steps'] // 3)}",
                     f"checkpoint_every={max(1, b['aspect_steps'] // 3)}"])
    tr = trainer_for(r, outdir=work / "iris_mask", resume=(work / "iris_mask/last.pt").is_file(),
                     progress=False)
    final = tr.run()
    return {"final": final}


def merged_24x32():
    """The iris merged network (recipes/iris_a_merged.yaml) with its input set to 1x24x32."""
    from spdnn.train import load_recipe
    from spdnn.train.recipe import netspecs_of

    r = load_recipe(ROOT / "recipes/iris_a_merged.yaml")
    s = netspecs_of(r)["net"]
    inp = s.inputs[0].model_copy(update={"height": 24, "width": 32})
    return r, s.model_copy(update={"inputs": [inp]})


def _segmenter_task(steps: int, seed: int, train: tuple, val: tuple):
    """The iris task on the merged network at 24x32 with the benchmark's own pairs."""
    from torch.utils.data import TensorDataset

    from spdnn.tasks import build_task
    from spdnn.train import load_recipe

    _, spec = merged_24x32()
    r = load_recipe(ROOT / "recipes/iris_a_merged.yaml",
                    [f"steps={steps}", f"seed={seed}", f"eval_every={steps}",
                     f"checkpoint_every={steps}", "name=iris_merged_24x32"])
    task = build_task(r, netspecs={"net": spec})
    ds = (TensorDataset(*train), TensorDataset(*val))
    task.datasets = lambda: ds  # the benchmark's own pairs instead of the recipe's data
    return task


def train_segmenter(outdir: Path, train: tuple, val: tuple, steps: int, seed: int) -> dict:
    """Train the merged network at 24x32 on ``train`` = (images, masks), validate on ``val``."""
    from spdnn.train.trainer import Trainer

    tr = Trainer(_segmenter_task(steps, seed, train, val), outdir=outdir,
                 resume=(outdir / "last.pt").is_file(), progress=False)
    final = tr.run()
    return {k: v for k, v in final.items() if k.startswith("val_")}


def load_segmenter(outdir: Path):
    """The trained merged network of :func:`train_segmenter` (its ``best.pt``), in eval mode."""
    from spdnn.codegen.build import build_module
    from spdnn.io import load_checkpoint

    _, spec = merged_24x32()
    net = build_module(spec)
    net.load_state_dict(load_checkpoint(outdir)["models"]["net"])
    return net.eval()


def seg_metrics(prob: torch.Tensor, target: torch.Tensor) -> dict:
    from spdnn.metrics import SegmentationMetric, segmentation_metrics_per_image

    m = SegmentationMetric()
    m.update(prob.float(), target.float())
    res = {k: m.compute()[k] for k in ("mcc", "f1", "accuracy")}
    per = segmentation_metrics_per_image(prob.float(), target.float())
    res["mcc_per_image_mean"] = float(per["mcc"].nanmean())
    res["mcc_per_image_std"] = float(per["mcc"][~per["mcc"].isnan()].std())
    return res


@torch.no_grad()
def net_of(run: Path, name: str = "net"):
    from spdnn.cli.latent import load_run

    tr, models, _ = load_run(run)
    return tr, models[name]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run of every stage")
    ap.add_argument("--began-set", action="append", default=[],
                    help="recipe override of the BEGAN stage (e.g. optim.lr=0.0003)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="aspect_iris",
                    help="results file stem and work folder (runs/bench_<name>)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    b = QUICK if args.quick else FULL
    work = ROOT / "runs" / (f"bench_{args.name}" + ("_quick" if args.quick else ""))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    began = cached(work, "began", lambda: train_began(work, b, args.began_set))
    inv = {f"{s}_{m}": cached(work, f"invert_{s}_{m}", lambda s=s, m=m: invert(work, s, m, b))
           for s, m in (("train", "optimize"), ("val", "optimize"), ("val", "encoder"))}
    aspect = cached(work, "aspect", lambda: train_aspect(work, b))

    from spdnn.cli.latent import load_generator_run
    from spdnn.tasks.gan.invert import load_latents

    gtr, gmodels, _ = load_generator_run(work / "iris_began")
    (ti, tm), (vi, vm) = gtr.task.eye_pairs()
    seg = cached(work, "segmenter", lambda: train_segmenter(work / "segmenter", (ti, tm),
                                                            (vi, vm), b["seg_steps"], 0))
    _, M = net_of(work / "iris_mask")
    S = load_segmenter(work / "segmenter")
    G = gmodels["generator"]

    def measure_real() -> dict:
        res = {}
        for method in ("optimize", "encoder"):
            z = load_latents(work / f"latents_val_{method}.pt")["z"]
            with torch.no_grad():
                res[f"aspect_via_{method}"] = seg_metrics(M(z).clamp(0, 1), vm)
        with torch.no_grad():
            res["segmenter"] = seg_metrics(S(vi), vm)
        # the prior: the mean training mask for every image (what ignoring z scores)
        prior = load_latents(work / "latents_train_optimize.pt")["masks"].mean(0, keepdim=True)
        res["mean_mask"] = seg_metrics(prior.expand_as(vm), vm)
        return res

    real = cached(work, "measure_real", measure_real)

    def generated(k: int, seed: int):
        g = torch.Generator().manual_seed(10_000 + seed)
        z = gtr.task.sample_noise(k, g)
        with torch.no_grad():
            return gtr.task.to_unit(G(z)), (M(z).clamp(0, 1) > 0.45).float()

    def measure_agree() -> dict:
        img, mask = generated(b["agree"], 99)
        with torch.no_grad():
            ref = (S(img) > 0.45).float()
        res = seg_metrics(mask, ref)  # the segmenter is the reference (MIRLIN's role)
        res["iris_fraction_aspect"] = float(mask.mean())
        res["iris_fraction_segmenter"] = float(ref.mean())
        res["iris_fraction_real"] = float(vm.mean())
        return res

    agree = cached(work, "measure_agree", measure_agree)

    use_rows = []
    for n in b["n_real"]:
        for seed in b["seeds"]:
            for k in (0, b["k_gen"]):
                def one(n=n, seed=seed, k=k) -> dict:
                    perm = torch.randperm(len(ti), generator=torch.Generator().manual_seed(seed))
                    idx = perm[:n]
                    x, y = ti[idx], tm[idx]
                    if k:
                        gi, gm = generated(k, seed)
                        x, y = torch.cat([x, gi]), torch.cat([y, gm])
                    return train_segmenter(work / f"use_n{n}_k{k}_s{seed}", (x, y), (vi, vm),
                                           b["use_steps"], seed)
                row = cached(work, f"use_n{n}_k{k}_s{seed}", one)
                use_rows.append({"n_real": n, "k_gen": k, "seed": seed, "mcc": row["val_mcc"],
                                 "f1": row["val_f1"]})
    from spdnn.cli import main as cli
    from spdnn.cli.latent import _mae_histogram

    lat = load_latents(work / "latents_train_optimize.pt")
    _mae_histogram(lat["mae"], work / "invert_mae.png",
                   f"optimize inversion of {len(lat['mae'])} training eyes")
    cli(["generate", str(work / "iris_began"), "--aspect", str(work / "iris_mask"), "-n", "64",
         "-o", str(work / "generated"), "--overwrite"])
    write_results(work, b, began, inv, aspect, seg, real, agree, use_rows,
                  time.perf_counter() - t_start, args.quick, args.name)


def _spread(xs: list[float]) -> str:
    if len(xs) < 2:
        return f"{xs[0]:+.3f}" if xs else "-"
    return f"{statistics.mean(xs):+.3f} ± {statistics.stdev(xs):.3f}"


def _began_settings(work: Path) -> str:
    import yaml

    r = yaml.safe_load((work / "iris_began" / "recipe.yaml").read_text())
    o, opt = r.get("options", {}), r.get("optim", {})
    return (f"Adam {opt.get('lr')} betas {opt.get('betas')}, gamma {o.get('gamma')}, lambda_k "
            f"{o.get('lambda_k')}, pixels {o.get('pixel_range')}, {r.get('steps')} steps of "
            f"{r.get('batch_size')}")


def write_results(work, b, began, inv, aspect, seg, real, agree, use_rows, seconds, quick,
                  name):
    from spdnn.io import write_atomic

    rep = began["report"]
    collapsed = bool(rep.get("collapsed"))
    lines = [
        "# GAN+aspect on iris: aspect generator from inverted latents (thesis sec. 3.3.1, "
        "App. F sec. 3.2)",
        "",
        "Data: the embedded **synthetic** degraded eyes with exact masks (spdnn/data/iris.py; "
        "the thesis: Bath800 + CASIA1000 with MIRLIN masks, 262K augmented images), at **24 x 32** "
        f"(a quarter of the paper's 96 x 128). {b['train_eyes']} training eyes, "
        f"{b['heldout']} held-out eyes (another seed). Width-reduced networks (netspec headers). "
        f"Budget: BEGAN {b['began_steps']} steps (the paper: trained to convergence on a GPU), "
        f"inversion {b['invert_steps']} Adam steps per image, aspect generator "
        f"{b['aspect_steps']} steps, segmenters {b['seg_steps']} / {b['use_steps']} steps; "
        f"1 thread on 2 CPU cores shared by six sessions; total {seconds / 60:.1f} min "
        f"(cached stages not counted again)." + (" **QUICK SMOKE RUN: not evidence.**"
                                                  if quick else ""),
        "",
        "## The generator",
        "",
        f"BEGAN as trained (the run's recipe.yaml): {_began_settings(work)}; the paper: Adam "
        "1e-4, gamma 0.5, lambda_k 0.001. "
        f"Diversity: two generated eyes differ by MSE {rep['div_within_mse']:.4f} on average, "
        f"two real eyes by {rep['real_within_mse']:.4f} (SSIM {rep['div_within_ssim']:.3f} vs "
        f"{rep['real_within_ssim']:.3f}). "
        + (f"Ratio {rep['div_within_mse'] / rep['real_within_mse']:.1%}: **the generator is "
           "flagged as collapsed** (below 10% of the real pairs' MSE): its samples vary far "
           "less than real eyes, so the measurements below test the aspect mapping on a "
           "generator that covers little of the data, not the thesis' claim for a good one."
           if collapsed else f"Ratio {rep['div_within_mse'] / rep['real_within_mse']:.1%}: "
           "not collapsed by the 10% criterion."),
        "",
        "## Inversion: optimisation (App. F eq. 4) vs encoder (SPADE-SR sec. 3.4)",
        "",
        "| method | images | MAE mean | median | 90th pct | seconds | ms / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in inv.values():
        lines.append(f"| {r['method']} ({r['split']}) | {r['n']} | {r['mae_mean']:.4f} | "
                     f"{r['mae_median']:.4f} | {r['mae_p90']:.4f} | {r['seconds']:.1f} | "
                     f"{r['ms_per_image']:.1f} |")
    lines += ["", "The encoder's seconds include its training (on the training eyes); "
              "MAE is mean |G(z) - x| with pixels in [0, 1]. The thesis reports no MAE "
              "(App. F Fig. 3 shows reconstructions).", "",
              "## 1. Aspect accuracy on held-out real eyes (vs the exact masks)", "",
              "| maps from | MCC | F1 | accuracy | MCC per image (mean ± sd) |",
              "|---|---|---|---|---|"]
    names = {"aspect_via_optimize": "invert (optimize) -> aspect generator",
             "aspect_via_encoder": "invert (encoder) -> aspect generator",
             "segmenter": "iris merged network trained on the same real eyes",
             "mean_mask": "the mean training mask for every eye (ignores z: the prior)"}
    for k, r in real.items():
        if k in names:
            lines.append(f"| {names[k]} | {r['mcc']:.3f} | {r['f1']:.3f} | {r['accuracy']:.3f} | "
                         f"{r['mcc_per_image_mean']:.3f} ± {r['mcc_per_image_std']:.3f} |")
    lines += ["", "Thesis: no number; App. F Fig. 11 shows generated eyes with maps that "
              "follow them (\"the segmentation maps are generated using the proposed aspect "
              "generation method\").", "",
              "## 2. Agreement on generated eyes: aspect generator vs the trained segmenter", "",
              f"{b['agree']} generated eyes; the segmenter's mask is the reference (the thesis "
              f"used MIRLIN). MCC {agree['mcc']:.3f}, F1 {agree['f1']:.3f}, accuracy "
              f"{agree['accuracy']:.3f}; iris fraction of the maps: aspect "
              f"{agree['iris_fraction_aspect']:.3f}, segmenter "
              f"{agree['iris_fraction_segmenter']:.3f}, real eyes {agree['iris_fraction_real']:.3f}.",
              "", "## 3. Usefulness: the merged network with and without generated pairs", "",
              f"MCC on the {b['heldout']} held-out real eyes; K = {b['k_gen']} generated pairs "
              "added to N real pairs; seeds draw the real subset and the initialisation.", "",
              "| N real | seed | MCC real only | MCC real + K generated | difference |",
              "|---|---|---|---|---|"]
    summary = {}
    for n in b["n_real"]:
        diffs = []
        for seed in b["seeds"]:
            a = next(r for r in use_rows if r["n_real"] == n and r["seed"] == seed
                     and r["k_gen"] == 0)
            c = next(r for r in use_rows if r["n_real"] == n and r["seed"] == seed
                     and r["k_gen"] > 0)
            diffs.append(c["mcc"] - a["mcc"])
            lines.append(f"| {n} | {seed} | {a['mcc']:.3f} | {c['mcc']:.3f} | "
                         f"{c['mcc'] - a['mcc']:+.3f} |")
        summary[n] = diffs
        lines.append(f"| {n} | mean ± sd | | | **{_spread(diffs)}** |")
    lines += ["", "## Verdict", ""]
    for n, diffs in summary.items():
        mean = statistics.mean(diffs)
        sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
        helped = mean > 0 and (len(diffs) < 2 or mean > sd)
        lines.append(f"* N = {n}: generated pairs change the held-out MCC by {_spread(diffs)}: "
                     + ("they **help** at this budget." if helped else
                        "they do **not** help beyond the seed spread at this budget."))
    lines.append("")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_atomic(RESULTS / f"{name}.md", "\n".join(lines))
    write_atomic(RESULTS / f"{name}.json", json.dumps(
        {"budget": b, "quick": quick, "seconds": seconds, "began": began, "inversion": inv,
         "aspect": aspect, "segmenter": seg, "real": real, "agree": agree, "use": use_rows},
        indent=2))
    for src, dst in ((work / "iris_began/samples.png", f"{name}_began_samples.png"),
                     (work / "invert_mae.png", f"{name}_mae.png"),
                     (work / "generated/preview.png", f"{name}_preview.png"),
                     (work / "generated/interpolation.png", f"{name}_interpolation.png")):
        if src.is_file():
            shutil.copyfile(src, RESULTS / dst)
    print((RESULTS / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
