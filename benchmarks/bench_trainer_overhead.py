"""Trainer overhead: throughput of `spdnn.train.Trainer` vs a minimal hand-written torch loop.

Same model (netspecs/iris/appendix_a/parent_2_6x3x3.yaml), same in-memory data (256 synthetic
degraded eyes held as tensors, so data costs nothing in either loop), same optimizer (Nesterov
SGD, lr 0.01, momentum 0.9), same loss (BCE), same batch size (8) and channels-last memory
format, on this machine, in one process.

**How both loops are timed (the same way).** Each loop trains ``warmup + steps`` steps; the
samples/s of a loop is ``steps * batch / wall clock`` from the end of step ``warmup`` to the end
of step ``warmup + steps`` (``time.perf_counter``), so both are timed over the same number of
steps after the same warm-up. The hand loop reads the clock itself; the trainer's clock is its
own log (``log_every = gcd(warmup, steps)``: every log row's ``samples_per_s`` is the samples
since the previous log point over the ``perf_counter`` time since it, so the rows after step
``warmup`` add up to exactly that wall-clock window). Everything the trainer does per step is
inside the window (DataLoader and collation, LR scheduler, logging, progress bar, recreating the
loader at each epoch of 32 steps); its final evaluation and checkpoint come after the last step
and are not. Rounds alternate which loop runs first (hand first in even rounds). The result is
the per-round ratio trainer / hand (same round, so a slow spell of the shared machine hits
both): median and min-max over the rounds. ``OMP_WAIT_POLICY=PASSIVE`` is set before torch is
imported (benchmarks/README.md, "Threads that spin"). Target: ratio >= 0.95.

    .venv/bin/python benchmarks/bench_trainer_overhead.py [--steps 30] [--warmup 5] [--rounds 9]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spdnn import spec as S  # noqa: E402
from spdnn.codegen import build_module  # noqa: E402
from spdnn.data.iris import SyntheticIrisDataset  # noqa: E402
from spdnn.runs import trainer_for  # noqa: E402
from spdnn.tasks import register_task  # noqa: E402
from spdnn.tasks.iris import IrisTask  # noqa: E402
from spdnn.train.recipe import Recipe  # noqa: E402

NETSPEC = ROOT / "netspecs/iris/appendix_a/parent_2_6x3x3.yaml"
TRAIN_SIZE, VAL_SIZE = 256, 8
LR, MOMENTUM = 0.01, 0.9
_DATA: dict[str, TensorDataset] = {}


@register_task
class InMemoryIris(IrisTask):
    """The iris task on pre-rendered tensors (so both loops see identical, free data)."""

    name = "bench_iris_in_memory"

    def datasets(self):
        return _DATA["train"], _DATA["val"]


def hand_loop(warmup: int, steps: int, batch: int, seed: int) -> float:
    """Samples/s of the minimal loop over steps ``warmup+1 .. warmup+steps`` (wall clock)."""
    torch.manual_seed(seed)
    model = build_module(S.load(NETSPEC)).to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True)
    x_all, y_all = _DATA["train"].tensors
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for step in range(1, warmup + steps + 1):
        idx = torch.randint(0, len(x_all), (batch,), generator=g)
        x = x_all[idx].contiguous(memory_format=torch.channels_last)
        y = y_all[idx]
        opt.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy(model(x).clamp(1e-7, 1 - 1e-7), y)
        loss.backward()
        opt.step()
        if step == warmup:
            t0 = time.perf_counter()
    return steps * batch / (time.perf_counter() - t0)


def trainer_loop(warmup: int, steps: int, batch: int, seed: int, outdir: Path) -> float:
    """Samples/s of the trainer over steps ``warmup+1 .. warmup+steps``, from its own log."""
    log_every = math.gcd(warmup, steps)
    recipe = Recipe(name="overhead", task=InMemoryIris.name, model={"netspec": str(NETSPEC)},
                    data={"train_size": TRAIN_SIZE, "val_size": VAL_SIZE},
                    optim={"name": "sgd", "lr": LR, "momentum": MOMENTUM, "nesterov": True},
                    batch_size=batch, steps=warmup + steps, eval_every=10**6,
                    checkpoint_every=10**6, log_every=log_every, seed=seed, samples=1)
    tr = trainer_for(recipe, outdir=outdir, progress=True)
    tr.run()
    rows = [r for r in tr.history if "samples_per_s" in r and r["step"] > warmup]
    assert sum(log_every for _ in rows) == steps, rows
    seconds = sum(log_every * batch / r["samples_per_s"] for r in rows)
    return steps * batch / seconds


def spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="timed steps per loop and round")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = ap.parse_args()
    ds = SyntheticIrisDataset(TRAIN_SIZE + VAL_SIZE, seed=0)
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    _DATA["train"] = TensorDataset(torch.stack(xs[:TRAIN_SIZE]), torch.stack(ys[:TRAIN_SIZE]))
    _DATA["val"] = TensorDataset(torch.stack(xs[TRAIN_SIZE:]), torch.stack(ys[TRAIN_SIZE:]))
    hand, trainer, ratios, firsts = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="spdnn_overhead_") as tmp:
        for r in range(args.rounds):
            first = "hand" if r % 2 == 0 else "trainer"
            res = {}
            for which in (["hand", "trainer"] if first == "hand" else ["trainer", "hand"]):
                if which == "hand":
                    res[which] = hand_loop(args.warmup, args.steps, args.batch, r)
                else:
                    res[which] = trainer_loop(args.warmup, args.steps, args.batch, r,
                                              Path(tmp) / str(r))
            hand.append(res["hand"])
            trainer.append(res["trainer"])
            ratios.append(res["trainer"] / res["hand"])
            firsts.append(first)
            print(f"round {r} ({first} first): hand {hand[-1]:.2f} samples/s, "
                  f"trainer {trainer[-1]:.2f} samples/s, ratio {ratios[-1]:.3f}", flush=True)
    h, t, q = spread(hand), spread(trainer), spread(ratios)
    result = {"netspec": str(NETSPEC.relative_to(ROOT)), "batch": args.batch,
              "warmup_steps": args.warmup, "timed_steps": args.steps, "rounds": args.rounds,
              "train_size": TRAIN_SIZE, "threads": torch.get_num_threads(),
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "torch": torch.__version__,
              "first_in_round": firsts, "hand_samples_per_s": hand,
              "trainer_samples_per_s": trainer, "ratio_trainer_over_hand": ratios,
              "hand": h, "trainer": t, "ratio": q}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trainer_overhead.json").write_text(json.dumps(result, indent=2))

    def f(s: dict, d: int = 2) -> str:
        return f"{s['median']:.{d}f} ({s['min']:.{d}f}-{s['max']:.{d}f})"

    md = [f"| loop | samples/s, median (min-max) of {args.rounds} rounds |", "|---|---:|",
          f"| hand-written torch loop | {f(h)} |", f"| spdnn Trainer | {f(t)} |", "",
          f"Trainer / hand-written throughput, per round: **{f(q, 3)}** (median, min-max; "
          f"target >= 0.95). Both loops: wall clock over the same {args.steps} steps after "
          f"{args.warmup} warm-up steps, batch {args.batch}, rounds alternating which loop runs "
          f"first, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={result['omp_wait_policy']}, model {NETSPEC.name}.",
          "", "Per round: " + ", ".join(f"{x:.3f} ({w} first)" for x, w in zip(ratios, firsts,
                                                                              strict=True)) + "."]
    (args.out / "trainer_overhead.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
