"""The SPDNN comparison: merged networks against their parents, on torch and onnxruntime.

For iris App. A (3 parents, merged with the paper's budget, ``like-each``) and depth App. B
(8 parents, merged with ``keep``: the widest parent width of every merged layer; the default
budget cannot be met there because the FC layers keep their size, see README), this times in
one run:

* the merged network;
* (a) each parent alone;
* (b) all parents one after another (``parents-sequential``);
* (c) all parents as one module that runs them on the same input and concatenates the
  outputs (``parents-parallel``, the naive ensemble SPDNN replaces);

with torch eager (``no_grad``), torch ``inference_mode`` and onnxruntime (CPU, all graph
optimizations), optionally ``torch.compile`` (``--compile``) and CUDA (``--device cpu,cuda``),
at batch 1, 8 and 32. Ratios against the merged network and onnxruntime/torch ratios come from
the same run, next to the machine's dense matmul GFLOP/s.

    python benchmarks/bench_models.py             # both families, ~10 minutes on 2 cores
    python benchmarks/bench_models.py --quick     # batch 1 and 4, short runs (CI-sized)
    python benchmarks/bench_models.py --family iris --compile

Writes benchmarks/results/models_<family>.{md,json,png}.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (see README)

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spdnn import bench as B  # noqa: E402
from spdnn.graph import merge  # noqa: E402
from spdnn.spec import load  # noqa: E402

FAMILIES = {
    "iris": ("netspecs/iris/appendix_a/*.yaml", "like-each", "Iris segmentation, thesis App. A"),
    "depth": ("netspecs/depth/parent_*.yaml", "like-each", "Monocular depth, thesis App. B"),
}


def summary(rows: list[B.BenchRow], reference: str) -> str:
    """Per runtime and batch: merged vs best single parent, sequential and parallel parents."""
    by = {(r.model, r.runtime, r.device, r.batch): r for r in rows if r.ok}
    keys = sorted({(r.runtime, r.device, r.batch) for r in rows if r.ok and r.model == reference},
                  key=lambda k: (k[1], k[0], k[2]))
    parents = [r.model for r in rows if r.kind == "single" and r.model != reference]
    parents = list(dict.fromkeys(parents))
    lines = ["| runtime | device | batch | merged p50 ms | fastest parent ms | mean parent ms | "
             "sequential / merged | parallel / merged | merged / mean parent |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for rt, dev, b in keys:
        m = by[(reference, rt, dev, b)]
        ps = [by[(p, rt, dev, b)].p50_ms for p in parents if (p, rt, dev, b) in by]
        seq = by.get(("parents-sequential", rt, dev, b))
        par = by.get(("parents-parallel", rt, dev, b))
        mean = sum(ps) / len(ps) if ps else float("nan")
        lines.append(
            f"| {rt} | {dev} | {b} | {m.p50_ms:.2f} | {min(ps):.2f} | {mean:.2f} | "
            f"{seq.p50_ms / m.p50_ms if seq else float('nan'):.2f} | "
            f"{par.p50_ms / m.p50_ms if par else float('nan'):.2f} | {m.p50_ms / mean:.2f} |")
    return "\n".join(lines) + "\n"


def ort_vs_torch(rows: list[B.BenchRow]) -> str:
    rat = B.runtime_ratios(rows, "torch")
    lines = ["| model | runtime | device | batch | p50 / torch p50 |", "|---|---|---|---:|---:|"]
    for r in rat:
        lines.append(f"| {r['model']} | {r['runtime']} | {r['device']} | {r['batch']} | "
                     f"{r['latency']:.2f} |")
    return "\n".join(lines) + "\n"


def sizes(targets: dict[str, B.Target], reference: str) -> str:
    ref = targets[reference]
    lines = ["| model | params | MACs/image | params / merged | MACs / merged |",
             "|---|---:|---:|---:|---:|"]
    for name, t in targets.items():
        lines.append(f"| {name} | {t.params:,} | {t.macs / 1e6:,.1f} M | "
                     f"{t.params / ref.params:.2f} | {t.macs / ref.macs:.2f} |")
    return "\n".join(lines) + "\n"


def run_family(name: str, args) -> None:
    pattern, params, title = FAMILIES[name]
    parents = [load(p) for p in sorted(ROOT.glob(pattern))]
    res = merge(parents, params=params, name=f"{name}_merged")
    targets = B.spdnn_targets(parents, merged=res.spec)
    reference = "merged"
    print(f"== {title}: {len(parents)} parents, merged with params={params}: "
          f"{res.report.merged_params:,} parameters", flush=True)

    def show(r: B.BenchRow) -> None:
        txt = f"p50 {r.p50_ms:8.2f} ms {r.throughput:8.1f} img/s" if r.ok else r.status
        print(f"  {r.model:22s} {r.runtime:16s} {r.device:4s} b={r.batch:<3d} {txt}", flush=True)

    t0 = time.perf_counter()
    rows = B.bench(targets, batches=args.batch, runtimes=args.runtime, threads=args.threads,
                   device=args.device, warmup=args.warmup, min_time=args.min_time,
                   min_runs=args.min_runs, progress=show)
    ceiling = B.matmul_ceiling(threads=args.threads)
    seconds = time.perf_counter() - t0
    rat = B.ratios(rows, reference)
    md = [f"# {title}: merged vs parents\n",
          f"Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/bench_models.py "
          f"{' '.join(sys.argv[1:])}".rstrip() + f"` ({seconds:.0f} s). Machine: "
          f"{B.machine_info()['cpu']}, {B.machine_info()['cores']} cores, "
          f"torch {B.machine_info()['torch']}, onnxruntime {B.machine_info()['onnxruntime']}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}.\n",
          f"Merge: `params={params}`; {res.report.merged_params:,} parameters "
          f"({res.report.reduction_vs_sum:.0%} fewer than the parents together).\n",
          "## Sizes\n", sizes(targets, reference),
          "## Merged vs parents (p50 latency ratios, same run)\n", summary(rows, reference),
          "## onnxruntime and inference_mode vs torch eager (p50 latency ratios)\n",
          ort_vs_torch(rows),
          "## All measurements\n", B.to_markdown(rows, ceiling),
          "\n## Every ratio against the merged network\n", B.ratios_markdown(rat)]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"models_{name}" + ("_quick" if args.quick else "")
    (args.out / f"{stem}.md").write_text("\n".join(md))
    B.to_json(rows, args.out / f"{stem}.json", ceiling=ceiling, ratios=rat,
              runtime_ratios=B.runtime_ratios(rows), merge_params=params,
              merged_params=res.report.merged_params, seconds=seconds)
    B.plot(rows, args.out / f"{stem}.png", title=f"{title}: throughput")
    print(summary(rows, reference))
    print(f"wrote {args.out / stem}.{{md,json,png}}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", choices=[*FAMILIES, "all"], default="all")
    ap.add_argument("--quick", action="store_true", help="batch 1,4; 0.2 s per measurement")
    ap.add_argument("--batch", default=None, help="batch sizes (default 1,8,32)")
    ap.add_argument("--runtime", default="torch,torch-inference,ort")
    ap.add_argument("--compile", action="store_true", help="add torch.compile (slow to compile)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cpu,cuda")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--min-time", type=float, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    args.batch = args.batch or ("1,4" if args.quick else "1,8,32")
    args.min_time = args.min_time if args.min_time is not None else (0.2 if args.quick else 1.0)
    args.min_runs = 3 if args.quick else 5
    args.warmup = 1 if args.quick else 3
    if args.compile:
        args.runtime += ",torch-compile"
    for fam in (FAMILIES if args.family == "all" else [args.family]):
        run_family(fam, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
