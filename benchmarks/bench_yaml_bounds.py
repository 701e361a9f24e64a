"""How long spdnn takes to decide on a hostile YAML file of up to 1 MiB (issue 28, item 3).

Every YAML file spdnn reads (netspecs, recipes, block libraries) goes through
:func:`spdnn.spec.yaml_io.read_yaml`: at most 1 MiB, at most ``MAX_DEPTH`` levels,
``MAX_NODES`` nodes and ``MAX_ALIAS_NODES`` nodes added by aliases. This script writes files of
each hostile shape just under the 1 MiB cap (a flat flow list, a flat block list, 90k keys, one
long string, deep nesting, an alias bomb) and a netspec-like file near the node limit, and times
``read_yaml`` on each (best of ``--repeat``), with libyaml's C parser (what spdnn uses when PyYAML
has it) and with PyYAML's pure-Python parser (the fallback). Before issue 28, the pure-Python
parser without a node limit took 16 s on a 680 KB flat list and 9 s on 90k keys.

    python benchmarks/bench_yaml_bounds.py            # writes benchmarks/results/yaml_bounds.md
    python benchmarks/bench_yaml_bounds.py --no-python --repeat 1

The goal is every file decided (loaded or refused with one line) in under 2 s with libyaml.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import yaml

from spdnn.errors import SpecError
from spdnn.spec import yaml_io

MIB = 1 << 20
RESULTS = Path(__file__).resolve().parent / "results" / "yaml_bounds.md"


def _fill(unit: str, head: str = "", tail: str = "") -> str:
    """``head + unit * n + tail`` as long as possible under 1 MiB."""
    n = (MIB - len(head) - len(tail) - 1) // len(unit)
    return head + unit * n + tail


def cases() -> dict[str, str]:
    """The hostile files, by name: each under 1 MiB."""
    keys = "".join(f"k{i}: 1\n" for i in range(90_000))
    layer = "  - {name: c%d, op: Conv2d, out_channels: 8, kernel_size: 3}\n"
    netspec = "name: big\ninput: [1, 32, 32]\nlayers:\n" + "".join(
        layer % i for i in range(5_500))  # 9 nodes a layer: about 49,500 nodes
    alias = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" + "".join(
        f"b{i}: &b{i} [*{'a' if i == 0 else f'b{i - 1}'}, "
        f"*{'a' if i == 0 else f'b{i - 1}'}]\n" for i in range(40))
    return {
        "flat flow list [1,1,...]": _fill("1,", "[", "1]"),
        "flat block list - 1": _fill("- 1\n"),
        "90k keys k: v": keys,
        "one long string": _fill("x", "s: "),
        "deep flow nesting [[[...": _fill("["),
        "deep block nesting - - -": "".join(" " * i + "-\n" for i in range(1400)),
        "alias bomb (40 levels)": alias,
        "netspec-like, 5,500 layers": netspec,
    }


def decide(path: Path, loader: type) -> tuple[float, str]:
    """Seconds ``read_yaml`` took with ``loader``, and what it decided."""
    before = yaml_io._BoundedLoader
    yaml_io._BoundedLoader = loader
    try:
        t0 = time.perf_counter()
        try:
            yaml_io.read_yaml(path)
            outcome = "loaded"
        except SpecError as exc:
            outcome = "refused: " + exc.one_line().split(": ", 1)[1][:70]
        return time.perf_counter() - t0, outcome
    finally:
        yaml_io._BoundedLoader = before


def main() -> None:
    """Run the cases and write the result table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs (default 3)")
    ap.add_argument("--no-python", action="store_true", help="skip the pure-Python parser")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    loaders = []
    if yaml_io.LIBYAML:
        loaders.append(("libyaml", yaml_io._BoundedLoader))
    if not args.no_python:
        loaders.append(("pure Python", yaml_io._PyBoundedLoader))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in cases().items():
            path = Path(tmp) / "case.yaml"
            path.write_text(text)
            row = [name, f"{len(text.encode()) / 1024:,.0f} KiB"]
            outcome = ""
            for _, loader in loaders:
                best = min(decide(path, loader) for _ in range(args.repeat))
                row.append(f"{best[0]:.2f} s")
                outcome = outcome or best[1]
            rows.append(row + [outcome])
            print(" | ".join(row + [outcome]), flush=True)
    head = ["file", "size"] + [f"{n} (s)" for n, _ in loaders] + ["decision"]
    lines = [
        "# Hostile YAML files: time to decide (benchmarks/bench_yaml_bounds.py)",
        "",
        f"`read_yaml` on files of each shape under the 1 MiB cap, best of {args.repeat} "
        "(no random seeds: the files are fixed; one run of the script, no spread reported; "
        "the verdict is a time against the 2 s bound, far from it); "
        f"limits: depth {yaml_io.MAX_DEPTH}, {yaml_io.MAX_NODES:,} nodes, "
        f"{yaml_io.MAX_ALIAS_NODES:,} alias-expanded nodes. PyYAML {yaml.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()}, on a shared 2-core machine.",
        "Before issue 28 (pure Python, no node limit): 16 s for a 680 KB flat list, 9 s for a "
        "0.9 MB file of 90k keys.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
