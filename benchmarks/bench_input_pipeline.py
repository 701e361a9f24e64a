"""Input pipeline: training throughput of the iris merged recipe with and without the item cache.

Trains ``recipes/iris_a_merged.yaml`` (the SPDNN merge of the three App. A parents; 512
synthetic degraded eyes, batch 16) for the same number of steps with several input pipelines,
in one process, interleaved: repeat ``r`` runs the variants in an order rotated by ``r`` so
that no variant always goes first. The variants:

* ``before``: the pipeline as it was: every access renders and degrades the eye (~10 ms an eye
  on one core) in the training loop (``cache=False``, forced here by patching the datasets'
  ``make_cache``; ``data.num_workers=0``);
* ``cache``: the datasets' default shared-memory item cache (:mod:`spdnn.data.cache`), items
  rendered in the loop on first access, read from the cache afterwards;
* ``cache+wN``: the cache, filled by ``N`` DataLoader worker processes beside the loop
  (``data.num_workers=N``);
* ``cache+pN``: the cache, filled before the loop by ``train_dataset.prefill(num_workers=N)``
  (``N`` processes rendering at once); the prefill's wall clock is **added** to the loop's;
* ``wN``: no cache, ``N`` workers (with ``--variants``).

**What is measured.** samples/s = samples trained / wall-clock seconds of the training loop,
from the trainer's own log (``log_every=1``: ``samples_per_s`` of every step is the batch over
the ``time.perf_counter`` time since the previous log point, so the sum over the steps is the
wall clock from the start of the loop, first DataLoader and its workers included, to the last
step; the final evaluation and the run summary come after it and are not counted). Reported per
variant: the median over repeats and the min-max spread (after an untimed 2-step warm-up
run); per repeat the ratio variant / before
(same repeat, so a slow spell of the shared machine hits both), its median and spread; and the
same split by epoch (epoch 0 fills the cache, later epochs read it). ``setup s`` is the wall
clock of ``Trainer(...)`` (model build, datasets incl. cache allocation), ``run s`` of
``Trainer.run()`` (loop + final evaluation on ``data.val_size`` eyes + summary). For ``pN``
variants the prefill time is counted in the loop's wall clock (and in epoch 0's).

The overrides (``--set`` syntax of ``load_recipe``): ``steps`` (default 40), ``eval_every`` and
``checkpoint_every`` past the end, ``log_every=1``, ``data.val_size=32`` (the final
evaluation only). ``OMP_WAIT_POLICY=PASSIVE`` is set before torch is imported (see the
README's "Threads that spin").

    .venv/bin/python benchmarks/bench_input_pipeline.py [--steps 40] [--repeats 5] [--variants before,cache+p2]
    .venv/bin/python benchmarks/bench_input_pipeline.py --quick   # CI-sized, ~1 min
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import spdnn.data.depth as data_depth  # noqa: E402
import spdnn.data.iris as data_iris  # noqa: E402
from spdnn.runs import trainer_for  # noqa: E402
from spdnn.train import Trainer, load_recipe  # noqa: E402

RECIPE = ROOT / "recipes/iris_a_merged.yaml"
DEFAULT_VARIANTS = "before,cache,cache+w1,cache+w2"


@contextlib.contextmanager
def uncached():
    """Datasets built inside compute every item on every access (the pipeline before the cache)."""
    saved = data_iris.make_cache, data_depth.make_cache
    data_iris.make_cache = data_depth.make_cache = lambda *a, **k: None
    try:
        yield
    finally:
        data_iris.make_cache, data_depth.make_cache = saved


def make_trainer(recipe, outdir: Path) -> Trainer:
    """A trainer for ``recipe`` (its task built first, as ``spdnn train`` does)."""
    return trainer_for(recipe, outdir=outdir, progress=False)


def parse_variant(name: str) -> tuple[bool, int, int]:
    """``before`` -> (no cache, 0 workers, no prefill); ``cache+w2`` -> (cache, 2 workers, no
    prefill); ``cache+p2`` -> (cache, 0 workers, prefill with 2 processes)."""
    if name == "before":
        return False, 0, 0
    cache, workers, prefill = False, 0, 0
    for part in name.split("+"):
        if part == "cache":
            cache = True
        elif part[:1] in ("w", "p") and part[1:].isdigit():
            if part[0] == "w":
                workers = int(part[1:])
            else:
                prefill = int(part[1:])
        else:
            raise SystemExit(f"unknown variant part '{part}' in '{name}'")
    if prefill and not cache:
        raise SystemExit(f"variant '{name}': prefill (pN) needs the cache")
    return cache, workers, prefill


def run_once(variant: str, overrides: list[str], outdir: Path) -> dict:
    """Train once; return the loop's samples/s (all steps and per epoch) and setup/run times."""
    cache, workers, prefill = parse_variant(variant)
    recipe = load_recipe(RECIPE, [*overrides, f"data.num_workers={workers}"])
    ctx = contextlib.nullcontext() if cache else uncached()
    t0 = time.perf_counter()
    with ctx:
        tr = make_trainer(recipe, outdir)
    t1 = time.perf_counter()
    if prefill:
        tr.train_ds.prefill(num_workers=prefill)
    t2 = time.perf_counter()
    tr.run()
    t3 = time.perf_counter()
    rows = [r for r in tr.history if "samples_per_s" in r]
    batch = recipe.batch_size * recipe.log_every
    prefill_s = t2 - t1 if prefill else 0.0

    def rate(rs: list[dict], extra_s: float = 0.0) -> float | None:
        if not rs:
            return None
        return len(rs) * batch / (extra_s + sum(batch / r["samples_per_s"] for r in rs))

    return {
        "samples_per_s": rate(rows, prefill_s),
        "epoch0_samples_per_s": rate([r for r in rows if r.get("epoch", 0) == 0], prefill_s),
        "later_epochs_samples_per_s": rate([r for r in rows if r.get("epoch", 0) > 0]),
        "loop_s": sum(batch / r["samples_per_s"] for r in rows),
        "prefill_s": prefill_s,
        "steps": len(rows) * recipe.log_every,
        "setup_s": t1 - t0,
        "run_s": t3 - t2,
    }


def spread(xs: list[float]) -> dict:
    xs = [x for x in xs if x is not None]
    if not xs:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def fmt(s: dict, digits: int = 2) -> str:
    if s["median"] is None:
        return "-"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="training steps per run (40)")
    ap.add_argument("--repeats", type=int, default=None, help="runs per variant (5)")
    ap.add_argument("--variants", default=None, help=f"comma list (default {DEFAULT_VARIANTS})")
    ap.add_argument("--set", dest="extra", action="append", default=[],
                    help="extra recipe override, e.g. --set batch_size=8")
    ap.add_argument("--quick", action="store_true",
                    help="CI-sized: 4 steps on 32 eyes, 1 repeat, before vs cache+w1")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = ap.parse_args()
    steps = args.steps or (4 if args.quick else 40)
    repeats = args.repeats or (1 if args.quick else 5)
    variants = (args.variants or ("before,cache+w1" if args.quick else DEFAULT_VARIANTS)).split(",")
    for v in variants:
        parse_variant(v)
    if "before" not in variants:
        variants.insert(0, "before")
    overrides = [f"steps={steps}", "eval_every=1000000", "checkpoint_every=1000000",
                 "log_every=1", "data.val_size=32"]
    if args.quick:
        overrides += ["data.train_size=32", "data.val_size=8", "batch_size=8"]
    overrides += args.extra

    runs: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="spdnn_pipeline_") as tmp:
        # untimed warm-up: the merge, imports and one-time kernel set-up land on no variant
        run_once("cache+w1", [*overrides, "steps=2"], Path(tmp) / "warmup")
        for r in range(repeats):
            order = variants[r % len(variants):] + variants[: r % len(variants)]
            for v in order:
                res = run_once(v, overrides, Path(tmp) / f"{v}_{r}")
                res["repeat"], res["position"] = r, order.index(v)
                runs[v].append(res)
                print(f"repeat {r} {v:>10}: {res['samples_per_s']:.2f} samples/s over "
                      f"{res['steps']} steps (setup {res['setup_s']:.1f} s, run {res['run_s']:.1f} s)",
                      flush=True)

    keys = ("samples_per_s", "epoch0_samples_per_s", "later_epochs_samples_per_s")
    summary = {}
    for v in variants:
        s = {k: spread([x[k] for x in runs[v]]) for k in keys}
        for k in keys:
            s[f"ratio_{k}"] = spread([
                (x[k] / b[k]) if x[k] and b[k] else None
                for x, b in zip(runs[v], runs["before"], strict=True)])
        s["setup_s"] = spread([x["setup_s"] for x in runs[v]])
        s["run_s"] = spread([x["run_s"] for x in runs[v]])
        summary[v] = s
    after = [v for v in variants if v != "before"]
    best = max(after, key=lambda v: summary[v]["samples_per_s"]["median"]) if after else "before"
    recipe = load_recipe(RECIPE, overrides)
    result = {
        "recipe": str(RECIPE.relative_to(ROOT)), "overrides": overrides, "steps": steps,
        "repeats": repeats, "variants": variants, "best": best,
        "batch_size": recipe.batch_size, "train_size": recipe.data.train_size,
        "steps_per_epoch": recipe.data.train_size // recipe.batch_size,
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "start_method": mp.get_start_method(allow_none=True) or mp.get_context().get_start_method(),
        "torch": torch.__version__, "python": platform.python_version(),
        "summary": summary, "runs": runs,
    }
    stem = "input_pipeline" + ("_quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    md = [
        f"Training throughput of `{result['recipe']}` (batch {recipe.batch_size}, "
        f"{recipe.data.train_size} eyes = {result['steps_per_epoch']} steps an epoch), "
        f"{steps} steps per run, {repeats} repeats, variants interleaved; "
        f"{result['threads']} torch threads on {result['cpus']} CPUs, "
        f"OMP_WAIT_POLICY={result['omp_wait_policy']}, workers started by "
        f"`{result['start_method']}`. Samples/s = samples / wall clock of the training loop; "
        "median (min-max) over repeats; ratios per repeat against `before`.",
        "",
        "| pipeline | samples/s | / before | epoch 0 samples/s | / before | later epochs "
        "samples/s | / before | setup s | run s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        s = summary[v]
        md.append(
            f"| {v} | {fmt(s['samples_per_s'])} | {fmt(s['ratio_samples_per_s'], 3)} "
            f"| {fmt(s['epoch0_samples_per_s'])} | {fmt(s['ratio_epoch0_samples_per_s'], 3)} "
            f"| {fmt(s['later_epochs_samples_per_s'])} "
            f"| {fmt(s['ratio_later_epochs_samples_per_s'], 3)} "
            f"| {fmt(s['setup_s'], 1)} | {fmt(s['run_s'], 1)} |")
    b = summary[best]["ratio_samples_per_s"]
    md += ["", f"Best pipeline: **{best}**, samples/s after / before = **{fmt(b, 3)}** "
               "(median, min-max over repeats)."]
    (args.out / f"{stem}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
