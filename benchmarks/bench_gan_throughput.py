"""Generator throughput: samples/s of every GAN generator netspec (``netspecs/gan/dcgan/
*generator*``, ``netspecs/gan/began/*generator*``) as ``spdnn`` builds it, at batch 64 and 256,
with every CPU thread of the machine.

No paper reports generator speed; the references are measured in the same run:

* **plain torch**: an ``nn.Sequential`` of the very same layer modules (weights shared, the
  ``Reshape`` as ``nn.Unflatten``, each block's layers inlined), i.e. the network without
  spdnn's interpreter (:class:`spdnn.codegen.build.SpdnnModule` walks its layer plan and a
  name -> tensor dict). Its output is checked to be identical before timing. The ratio
  ``spdnn / plain`` is taken per round (both timed back to back, the order alternating), so a
  slow spell of the shared machine hits both; median and min-max over the rounds.
* **GMAC/s** = MACs per sample (spdnn's shape inference) x samples/s, against the machine's
  dense fp32 matmul rate (``spdnn.bench.matmul_ceiling``, 1024x1024, same threads).

Timing: eval mode, ``torch.inference_mode()``, weights in channels-last layout (as the trainer
and ``spdnn evaluate`` hold a GAN's models), the latent drawn once per batch size (N(0, 1));
one warm-up forward per model and batch (the one whose outputs are compared), then per round
each model runs until ``--min-time`` seconds and at least one forward have passed; up to
``--rounds`` rounds, fewer where the warm-up says they would take more than ``--budget``
seconds (the 128x128 BEGAN generator, 1.6 GMAC per sample). ``OMP_WAIT_POLICY=PASSIVE`` is set before torch
is imported (benchmarks/README.md, "Threads that spin").

    .venv/bin/python benchmarks/bench_gan_throughput.py            # ~2-3 min on 2 cores
    .venv/bin/python benchmarks/bench_gan_throughput.py --quick    # batch 64, 2 rounds

Writes ``benchmarks/results/gan_throughput.md`` and ``.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spdnn import spec as S  # noqa: E402
from spdnn.bench import machine_info, matmul_ceiling  # noqa: E402
from spdnn.codegen.build import BlockModule, build_module  # noqa: E402
from spdnn.shapes import infer  # noqa: E402

PATTERNS = ("netspecs/gan/dcgan/*generator*.yaml", "netspecs/gan/began/*generator*.yaml")


def plain_sequential(module) -> nn.Sequential:
    """The same layers as ``module`` (a :class:`SpdnnModule` of a chain netspec) in one
    ``nn.Sequential``: stateful layers are the module's own objects, blocks are inlined and a
    ``Reshape`` becomes ``nn.Unflatten``.

    Raises:
        ValueError: a layer that reads anything but the previous one, or a parameter-free op
            other than ``Reshape``.
    """
    layers: list[nn.Module] = []
    prev = module.spec.inputs[0].name
    for name, attr, srcs in module._plan:
        if srcs != [prev]:
            raise ValueError(f"{module.spec.name}: layer {name} reads {srcs}, not a chain")
        prev = name
        if attr is None:
            op = module._ops[name]
            if type(op).__name__ != "Reshape":
                raise ValueError(f"{module.spec.name}: no plain module for {type(op).__name__}")
            layers.append(nn.Unflatten(1, tuple(op.shape)))
            continue
        sub = getattr(module, attr)
        if isinstance(sub, BlockModule):
            var = sub._in_args[0]
            for _op, battr, args, out in sub._plan:
                if list(args) != [var] or battr is None:
                    raise ValueError(f"{module.spec.name}: block {name} is not a chain of modules")
                layers.append(getattr(sub, battr))
                var = out
        else:
            layers.append(sub)
    return nn.Sequential(*layers)


def timed(fn, min_time: float) -> float:
    """Forwards per second of ``fn`` over at least ``min_time`` s and one call."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return n / dt


def spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def measure(path: Path, batches: list[int], rounds: int, min_time: float,
            budget: float) -> list[dict]:
    spec = S.load(path)
    info = infer(spec)
    torch.manual_seed(0)
    # channels-last weights, as the trainer holds every model of a run with image inputs
    spd = build_module(spec, info).eval().to(memory_format=torch.channels_last)
    seq = plain_sequential(spd).eval()
    rows = []
    for batch in batches:
        z = torch.randn(batch, *spec.inputs[0].shape, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            t0 = time.perf_counter()
            a, b = spd(z), seq(z)  # the warm-up
            warm = time.perf_counter() - t0
            assert torch.equal(a, b), f"{path.name}: plain Sequential differs from spdnn"
            del a, b
            # the largest networks get fewer rounds, so the whole run stays within minutes
            n_rounds = max(1, min(rounds, int(budget / max(warm, 2 * min_time))))
            got: dict[str, list[float]] = {"spdnn": [], "plain": []}
            for r in range(n_rounds):
                order = ("spdnn", "plain") if r % 2 == 0 else ("plain", "spdnn")
                for which in order:
                    m = spd if which == "spdnn" else seq
                    got[which].append(batch * timed(lambda m=m, z=z: m(z), min_time))
        ratios = [s / p for s, p in zip(got["spdnn"], got["plain"])]
        sps = statistics.median(got["spdnn"])
        rows.append({"netspec": str(path.relative_to(ROOT)), "name": spec.name,
                     "params": info.params, "macs_per_sample": info.macs,
                     "output": list(list(info.output_shapes().values())[0]), "batch": batch,
                     "rounds": n_rounds,
                     "spdnn_samples_per_s": got["spdnn"], "plain_samples_per_s": got["plain"],
                     "spdnn": spread(got["spdnn"]), "plain": spread(got["plain"]),
                     "ratio_spdnn_over_plain": spread(ratios),
                     "gmacs_per_s": sps * info.macs / 1e9})
        print(f"{path.name} batch {batch}: spdnn {sps:,.0f} samples/s, plain "
              f"{statistics.median(got['plain']):,.0f}, ratio "
              f"{rows[-1]['ratio_spdnn_over_plain']['median']:.3f} ({n_rounds} rounds)",
              flush=True)
    return rows


def to_markdown(rows: list[dict], ceiling: dict, meta: dict) -> str:
    md = ["# GAN generators: throughput (samples/s)", "",
          f"Measured {meta['date']} with `python benchmarks/bench_gan_throughput.py"
          f"{meta['args']}` ({meta['seconds']:.0f} s). Machine: {meta['machine']['cpu']}, "
          f"{meta['machine']['cores']} cores, {meta['threads']} torch threads, torch "
          f"{meta['machine']['torch']}, OMP_WAIT_POLICY={meta['machine']['omp_wait_policy']}; "
          f"eval mode, `torch.inference_mode()`, up to {meta['rounds']} rounds per generator and "
          f"batch size (>= {meta['min_time']} s per model and round; fewer rounds where one "
          f"forward is slow, at most ~{meta['budget']:.0f} s of rounds each: column 'rounds').",
          "",
          "`spdnn` = the netspec built by `spdnn.codegen.build_module`, weights channels-last "
          "(the generator as the trainer and `spdnn evaluate` run it); `plain` = an `nn.Sequential` of the same layer modules "
          "(same weights, identical output), without spdnn's interpreter. Ratio: spdnn / plain "
          "samples/s per round, median (min-max). GMAC/s: MACs per sample x spdnn samples/s; "
          f"ceiling: dense fp32 matmul {ceiling['n']}x{ceiling['n']}, {ceiling['threads']} "
          f"threads, **{ceiling['gmacs']:.1f} GMAC/s** (the better of the start and the end of "
          f"the run: {ceiling['gmacs_start']:.1f} and {ceiling['gmacs_end']:.1f}). The machine is "
          f"shared: 1-minute load average {meta['load_average_1min'][0]:.1f} at the start, "
          f"{meta['load_average_1min'][1]:.1f} at the end, on {meta['machine']['cores']} cores.",
          "",
          "| generator | params | MACs/sample | output | batch | rounds | spdnn samples/s | "
          "plain samples/s | spdnn / plain | GMAC/s | % of matmul |",
          "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        q = r["ratio_spdnn_over_plain"]
        md.append(f"| {r['netspec'].removeprefix('netspecs/gan/')} | {r['params']:,} | "
                  f"{r['macs_per_sample'] / 1e6:,.1f} M | {'x'.join(map(str, r['output']))} | "
                  f"{r['batch']} | {r['rounds']} | {r['spdnn']['median']:,.0f} | {r['plain']['median']:,.0f} | "
                  f"{q['median']:.3f} ({q['min']:.3f}-{q['max']:.3f}) | {r['gmacs_per_s']:.1f} | "
                  f"{100 * r['gmacs_per_s'] / ceiling['gmacs']:.0f}% |")
    qs = [r["ratio_spdnn_over_plain"]["median"] for r in rows]
    md += ["", f"Interpreter cost: spdnn / plain ratio {min(qs):.3f}-{max(qs):.3f} over all "
           f"generators and batch sizes (median {statistics.median(qs):.3f}); 1.0 means none.",
           ""]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="64,256", help="batch sizes, comma-separated")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--min-time", type=float, default=0.15, help="seconds per model and round")
    ap.add_argument("--budget", type=float, default=10.0,
                    help="seconds of rounds per generator and batch size at most (at least one "
                    "round): fewer rounds for the largest networks")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quick", action="store_true", help="batch 64 only, 2 rounds")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.rounds = "64", 2
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch.split(",")]
    t0 = time.perf_counter()
    load = [os.getloadavg()[0]]
    first = matmul_ceiling(threads=args.threads, min_time=1.0)
    paths = sorted({p for pat in PATTERNS for p in ROOT.glob(pat)})
    rows = [row for p in paths
            for row in measure(p, batches, args.rounds, args.min_time, args.budget)]
    last = matmul_ceiling(threads=args.threads, min_time=1.0)
    load.append(os.getloadavg()[0])
    # best of the two (a shared machine's slow spell only lowers it)
    ceiling = {**max(first, last, key=lambda c: c["gmacs"]),
               "gmacs_start": first["gmacs"], "gmacs_end": last["gmacs"]}
    meta = {"date": date.today().isoformat(), "seconds": time.perf_counter() - t0,
            "args": (" " + " ".join(sys.argv[1:])) if sys.argv[1:] else "",
            "threads": args.threads, "rounds": args.rounds, "min_time": args.min_time,
            "budget": args.budget, "load_average_1min": load,
            "batches": batches, "machine": machine_info()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gan_throughput.json").write_text(
        json.dumps({**meta, "ceiling": ceiling, "rows": rows}, indent=2) + "\n")
    (args.out / "gan_throughput.md").write_text(to_markdown(rows, ceiling, meta))
    print(f"wrote {args.out / 'gan_throughput.md'} ({meta['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
