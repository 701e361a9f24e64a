"""Compiler speed: SPDNN merge time against network size, and a networkx reference.

Synthetic families of P parents with L layers each are built in memory (plain dicts ->
``spdnn.spec.from_data``): chains of 'same'-padded convolutions with kernels drawn from
{3, 5, 7} and widths from {4, 8, 16}; half of the parents pool by 2 after a third of their
layers and unpool after two thirds, so labels carry sticky factors (``3C2P``). Every family
merges into one network.

Per family, measured in the same run:

* ``merge``: the whole ``spdnn.graph.merge(..., params="keep")`` (canonical order, labelling,
  both contractions, rebuild, validation, shape inference);
* ``contract``: spdnn's forward + backward contraction alone on the parallel graph;
* ``reference``: the straightforward networkx contraction of the same parallel graph:
  ``networkx.quotient_graph`` over the forward-label partition, backward labels on the
  quotient, ``quotient_graph`` again. It gives the same number of merged nodes, and is skipped
  (marked) once its predicted time passes ``--ref-budget`` seconds.

Times are the best of up to five runs with the garbage collector off (as ``timeit`` does).
The growth is the slope of a least-squares line through log(time) against log(nodes + edges)
(sizes with at least 200 nodes, below which fixed costs dominate): 1 is linear, 2 quadratic.

    python benchmarks/bench_merge_scaling.py            # default grid, ~1-2 minutes on 2 cores
    python benchmarks/bench_merge_scaling.py --quick    # CI-sized (seconds)
    python benchmarks/bench_merge_scaling.py --full     # adds 1,000 parents x 100-200 layers

Writes benchmarks/results/merge_scaling.{md,json,png}.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (see README)

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spdnn.graph.contract import contract  # noqa: E402
from spdnn.graph.label import label_backward, label_forward  # noqa: E402
from spdnn.graph.merge import merge, parallel_graph, parent_graph  # noqa: E402
from spdnn.spec import Netspec, from_data  # noqa: E402

QUICK = [(2, 10), (5, 10), (10, 20), (20, 20), (20, 50), (50, 20)]
DEFAULT = [(2, 10), (5, 20), (10, 20), (20, 50), (50, 50), (100, 50), (100, 100), (200, 100),
           (500, 20), (1000, 10)]
FIT_MIN_NODES = 200
FULL = DEFAULT + [(500, 100), (1000, 100), (1000, 200)]


def family(parents: int, layers: int, seed: int = 0) -> list[Netspec]:
    """``parents`` synthetic chain networks of ``layers`` compute layers each."""
    rng = random.Random(seed)
    specs = []
    for p in range(parents):
        lays: list[dict] = []
        pool_at = rng.choice([None, layers // 3]) if layers >= 6 else None
        for i in range(layers - 1):
            lays.append({"name": f"c{i}", "op": "Conv2d", "kernel_size": rng.choice([3, 5, 7]),
                         "out_channels": rng.choice([4, 8, 16]), "padding": "same",
                         "activation": "relu"})
            if pool_at is not None and i == pool_at:
                lays.append({"name": f"pool{i}", "op": "MaxPool2d", "kernel_size": 2})
            if pool_at is not None and i == 2 * layers // 3:
                lays.append({"name": f"unpool{i}", "op": "Unpool", "scale_factor": 2})
        lays.append({"name": "out", "op": "Conv2d", "kernel_size": 3, "out_channels": 1,
                     "padding": "same", "activation": "sigmoid"})
        specs.append(from_data({"name": f"p{p}",
                                "input": {"name": "x", "channels": 1, "height": 32, "width": 32},
                                "layers": lays, "output": {"name": "y", "from": "out"}}))
    return specs


def the_parallel_graph(specs: list[Netspec]) -> nx.DiGraph:
    graphs = [parent_graph(s, tag) for tag, s in enumerate(specs)]
    par = parallel_graph(graphs, [s.name for s in specs])
    label_forward(par)
    return par


def spdnn_contract(par: nx.DiGraph) -> nx.DiGraph:
    fwd, _ = contract(par, "forward", check_cycles=False)
    label_backward(fwd)
    bwd, _ = contract(fwd, "backward", check_cycles=False)
    return bwd


def quotient_reference(par: nx.DiGraph) -> nx.DiGraph:
    """The straightforward contraction: ``networkx.quotient_graph`` twice."""
    blocks: dict = defaultdict(set)
    for n, d in par.nodes(data=True):
        blocks[d["label"] if d["kind"] == "compute" else ("io", n)].add(n)
    q = nx.quotient_graph(par, list(blocks.values()))
    first = {b: par.nodes[next(iter(b))] for b in q}
    dist: dict = {}
    for b in reversed(list(nx.topological_sort(q))):
        if first[b]["kind"] == "output":
            dist[b] = 0
            continue
        after = [dist[s] for s in q.successors(b) if s in dist]
        if after:
            dist[b] = max(after) + (1 if first[b]["kind"] == "compute" else 0)
    blocks2: dict = defaultdict(set)
    for b in q:
        key = (first[b]["structure"], dist.get(b)) if first[b]["kind"] == "compute" else ("io", b)
        blocks2[key].add(b)
    return nx.quotient_graph(q, list(blocks2.values()))


def timed(fn, min_total: float = 0.3, max_reps: int = 5):
    """Best time of a few repetitions (one when a run is long), with the garbage collector
    off as ``timeit`` does: its passes grow with everything alive in the process, not with
    the work being timed."""
    best, out, spent, reps = float("inf"), None, 0.0, 0
    while reps < max_reps and (reps == 0 or spent < min_total):
        out = None
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
        finally:
            gc.enable()
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    return best, out


def slope(xs: list[float], ys: list[float]) -> float | None:
    pts = [(x, y) for x, y in zip(xs, ys) if x and y and y > 0]
    if len(pts) < 2:
        return None
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def run(grid: list[tuple[int, int]], ref_budget: float) -> dict:
    rows = []
    last_ref: tuple[int, float] | None = None
    for parents, layers in grid:
        specs = family(parents, layers)
        t_merge, res = timed(lambda specs=specs: merge(specs, params="keep",
                                                       name=f"synthetic_{len(specs)}"))
        par = the_parallel_graph(specs)
        size = par.number_of_nodes() + par.number_of_edges()
        t_con, bwd = timed(lambda par=par: spdnn_contract(par))
        row = {"parents": parents, "layers": layers,
               "nodes": par.number_of_nodes(), "edges": par.number_of_edges(),
               "size": size, "merged_nodes": res.report.merged_nodes,
               "merge_s": t_merge, "contract_s": t_con, "reference_s": None,
               "reference_nodes": None}
        predicted = (last_ref[1] * (size / last_ref[0]) ** 2) if last_ref else 0.0
        if predicted <= ref_budget:
            t_ref, q = timed(lambda par=par: quotient_reference(par), max_reps=3)
            row["reference_s"], row["reference_nodes"] = t_ref, q.number_of_nodes()
            if q.number_of_nodes() != bwd.number_of_nodes():
                row["note"] = "reference node count differs"
            last_ref = (size, t_ref)
        else:
            row["note"] = f"reference skipped (predicted {predicted:.0f} s > {ref_budget:.0f} s)"
        rows.append(row)
        ref_txt = "-" if row["reference_s"] is None else f"{row['reference_s']:.3f} s"
        print(f"{parents:5d} x {layers:3d}: {row['nodes']:7,} nodes, {row['edges']:7,} edges -> "
              f"{row['merged_nodes']:4d} merged; merge {t_merge:7.3f} s, contract {t_con:7.3f} s, "
              f"quotient_graph {ref_txt}", flush=True)
    big = [r for r in rows if r["nodes"] >= FIT_MIN_NODES]
    fit = {
        "merge": slope([r["size"] for r in big], [r["merge_s"] for r in big]),
        "contract": slope([r["size"] for r in big], [r["contract_s"] for r in big]),
        "reference": slope([r["size"] for r in big if r["reference_s"]],
                           [r["reference_s"] for r in big if r["reference_s"]]),
    }
    return {"rows": rows, "slopes": fit}


def markdown(result: dict) -> str:
    s = result["slopes"]

    def f(v):
        return "-" if v is None else f"{v:.2f}"
    lines = [
        "| parents | layers | nodes | edges | merged nodes | merge s | contract s | "
        "quotient_graph s | quotient / contract |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        ref = r["reference_s"]
        ref_txt = "skipped" if ref is None else f"{ref:.3f}"
        ratio = "-" if ref is None else f"{ref / max(r['contract_s'], 1e-9):,.0f}x"
        lines.append(f"| {r['parents']} | {r['layers']} | {r['nodes']:,} | {r['edges']:,} | "
                     f"{r['merged_nodes']} | {r['merge_s']:.3f} | {r['contract_s']:.4f} | "
                     f"{ref_txt} | {ratio} |")
    lines += ["", f"Growth (log-log slope of time against nodes + edges, sizes >= {FIT_MIN_NODES} nodes): "
              f"merge {f(s['merge'])}, spdnn contraction {f(s['contract'])}, "
              f"networkx.quotient_graph reference {f(s['reference'])} "
              "(1 = linear, 2 = quadratic)."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    rows = sorted(result["rows"], key=lambda r: r["size"])
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    x = [r["size"] for r in rows]
    sl = result["slopes"]
    ax.plot(x, [r["merge_s"] for r in rows], "o-",
            label=f"spdnn merge (slope {sl['merge'] or 0:.2f})")
    ax.plot(x, [r["contract_s"] for r in rows], "s-",
            label=f"spdnn contraction (slope {sl['contract'] or 0:.2f})")
    ref = [(r["size"], r["reference_s"]) for r in rows if r["reference_s"]]
    if ref:
        ax.plot([p[0] for p in ref], [p[1] for p in ref], "^-",
                label=f"networkx.quotient_graph (slope {sl['reference'] or 0:.2f})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("nodes + edges of the parallel graph")
    ax.set_ylabel("seconds")
    ax.set_title("SPDNN merge time against network size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="CI-sized grid (a few seconds)")
    g.add_argument("--full", action="store_true", help="add 1,000 parents x 100-200 layers")
    ap.add_argument("--ref-budget", type=float, default=60.0,
                    help="skip the networkx reference once its predicted time passes this")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    grid = QUICK if args.quick else FULL if args.full else DEFAULT
    t0 = time.perf_counter()
    result = run(grid, args.ref_budget)
    result["seconds"] = time.perf_counter() - t0
    result["grid"] = "quick" if args.quick else "full" if args.full else "default"
    from spdnn.bench import machine_info
    result["machine"] = machine_info()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "merge_scaling" + ("_quick" if args.quick else "")
    md = markdown(result)
    (args.out / f"{stem}.md").write_text(f"# SPDNN merge scaling ({result['grid']} grid)\n\n" + md)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / f"{stem}.png")
    print(md)
    print(f"wrote {args.out / stem}.{{md,json,png}} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
