"""Trainer overhead: throughput of `spdnn.train.Trainer` vs a minimal hand-written torch loop.

Same model (netspecs/iris/appendix_a/parent_2_6x3x3.yaml), same in-memory data (synthetic
degraded eyes), same optimizer (Nesterov SGD), same batch size and memory format, on this
machine, interleaved in one run. The trainer's throughput is read from its own log (samples/s
between log points, so it includes every per-step cost of the trainer: progress bar, LR
scheduler, logging) and the hand loop is timed the same way. Target: ratio >= 0.95.

    .venv/bin/python benchmarks/bench_trainer_overhead.py [--steps 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spdnn import spec as S  # noqa: E402
from spdnn.codegen import build_module  # noqa: E402
from spdnn.data.iris import SyntheticIrisDataset  # noqa: E402
from spdnn.tasks.iris import IrisTask  # noqa: E402
from spdnn.train import Trainer, register_task  # noqa: E402
from spdnn.train.recipe import Recipe  # noqa: E402

NETSPEC = ROOT / "netspecs/iris/appendix_a/parent_2_6x3x3.yaml"
_DATA: dict[str, TensorDataset] = {}


@register_task
class InMemoryIris(IrisTask):
    """The iris task on pre-rendered tensors (so both loops see identical, free data)."""

    name = "bench_iris_in_memory"

    def datasets(self):
        return _DATA["train"], _DATA["val"]


def hand_loop(steps: int, batch: int, seed: int) -> float:
    """Samples per second of the minimal loop (after one warm-up step)."""
    torch.manual_seed(seed)
    model = build_module(S.load(NETSPEC)).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x_all, y_all = _DATA["train"].tensors
    g = torch.Generator().manual_seed(seed)
    t0 = None
    for step in range(steps + 1):
        if step == 1:
            t0 = time.perf_counter()
        idx = torch.randint(0, len(x_all), (batch,), generator=g)
        x = x_all[idx].contiguous(memory_format=torch.channels_last)
        y = y_all[idx]
        opt.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy(model(x).clamp(1e-7, 1 - 1e-7), y)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def trainer_loop(steps: int, batch: int, seed: int, outdir: Path) -> float:
    recipe = Recipe(name="overhead", task="bench_iris_in_memory", model={"netspec": str(NETSPEC)},
                    data={"train_size": len(_DATA["train"]), "val_size": len(_DATA["val"])},
                    optim={"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": True},
                    batch_size=batch, steps=steps + 1, eval_every=10_000, checkpoint_every=10_000,
                    log_every=1, seed=seed, samples=1)
    tr = Trainer(recipe, outdir=outdir, progress=True)
    tr.run()
    rows = [r for r in tr.history if "samples_per_s" in r][1:]  # drop the warm-up step
    total_time = sum(batch / r["samples_per_s"] for r in rows)
    return len(rows) * batch / total_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = ap.parse_args()
    n = max(64, args.batch * 4)
    ds = SyntheticIrisDataset(n + 8, seed=0)
    xs, ys = zip(*(ds[i] for i in range(n + 8)))
    _DATA["train"] = TensorDataset(torch.stack(xs[:n]), torch.stack(ys[:n]))
    _DATA["val"] = TensorDataset(torch.stack(xs[n:]), torch.stack(ys[n:]))
    hand, trainer = [], []
    for r in range(args.rounds):
        hand.append(hand_loop(args.steps, args.batch, r))
        trainer.append(trainer_loop(args.steps, args.batch, r, Path("/tmp/spdnn_overhead") / str(r)))
        print(f"round {r}: hand {hand[-1]:.2f} samples/s, trainer {trainer[-1]:.2f} samples/s")
    h, t = statistics.median(hand), statistics.median(trainer)
    result = {"netspec": str(NETSPEC.relative_to(ROOT)), "batch": args.batch, "steps": args.steps,
              "rounds": args.rounds, "threads": torch.get_num_threads(),
              "hand_samples_per_s": hand, "trainer_samples_per_s": trainer,
              "median_ratio_trainer_over_hand": t / h}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "trainer_overhead.json").write_text(json.dumps(result, indent=2))
    md = [f"| loop | samples/s (median of {args.rounds} rounds) |", "|---|---:|",
          f"| hand-written torch loop | {h:.2f} |", f"| spdnn Trainer | {t:.2f} |",
          "", f"Trainer / hand-written throughput: **{t / h:.3f}** (target >= 0.95); "
              f"batch {args.batch}, {args.steps} timed steps per round, "
              f"{torch.get_num_threads()} threads, model {NETSPEC.name}."]
    (args.out / "trainer_overhead.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
