"""Start-up time of the compiler commands, as a ratio to ``python -c "import torch"``.

Each command is run as a whole new process (``python -m spdnn ...``, the same interpreter as
this script) and timed by wall clock from spawn to exit, in rounds that visit every command in
turn (the order rotates each round), so a slow spell of the shared machine hits them all alike.
The reference, a bare ``import torch``, is timed in the same rounds. Reported: the median over
rounds of each command's time, and its ratio to the reference's median, with the ratio's spread
(min-max over rounds of the per-round ratio). Targets (architecture issue): ``--help`` and
``validate`` at most 0.3 of ``import torch``.

    python benchmarks/bench_startup.py            # 15 rounds (~1.5 min)
    python benchmarks/bench_startup.py --quick    # 3 rounds

Writes ``benchmarks/results/startup.md`` and ``startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IRIS_A = sorted(str(p) for p in (ROOT / "netspecs/iris/appendix_a").glob("*.yaml"))
TARGET = {"--help": 0.3, "validate": 0.3}


def commands(tmp: Path) -> dict[str, list[str]]:
    spdnn = [sys.executable, "-m", "spdnn"]
    return {
        "import torch": [sys.executable, "-c", "import torch"],
        "--help": spdnn + ["--help"],
        "validate": spdnn + ["validate", *IRIS_A],
        "inspect": spdnn + ["inspect", IRIS_A[0]],
        "merge": spdnn + ["merge", *IRIS_A, "-o", str(tmp / "merged.yaml")],
        "render": spdnn + ["render", *IRIS_A, "-o", str(tmp / "contracted.dot")],
        "ops": spdnn + ["ops"],
    }


def time_once(cmd: list[str]) -> float:
    """Wall-clock seconds of one process from spawn to exit (output discarded)."""
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="3 rounds")
    args = ap.parse_args()
    rounds = 3 if args.quick else args.rounds
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(Path(tmp))
        names = list(cmds)
        for name in names:  # warm the file cache once
            time_once(cmds[name])
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                times[name].append(time_once(cmds[name]))
            print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names),
                  flush=True)
    ref = statistics.median(times["import torch"])
    rows = []
    for name in names:
        med = statistics.median(times[name])
        per_round = [t / rt for t, rt in zip(times[name], times["import torch"])]
        rows.append({"command": name, "median_s": med, "ratio": med / ref,
                     "ratio_min": min(per_round), "ratio_max": max(per_round),
                     "target": TARGET.get(name)})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "startup.json").write_text(json.dumps({"rounds": rounds, "rows": rows}, indent=2))
    md = [f"Whole-process wall time, median of {rounds} rounds, in the same run as the reference "
          "`python -c \"import torch\"` (ratio spread: min-max of the per-round ratio).", "",
          "| command | median s | / import torch | spread | target |", "|---|---:|---:|---|---:|"]
    for row in rows:
        tgt = f"<= {row['target']}" if row["target"] else ""
        md.append(f"| `spdnn {row['command']}` | {row['median_s']:.3f} | {row['ratio']:.2f} | "
                  f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f} | {tgt} |"
                  if row["command"] != "import torch" else
                  f"| `python -c \"import torch\"` | {row['median_s']:.3f} | 1.00 | | |")
    (RESULTS / "startup.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
