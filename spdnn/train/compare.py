"""Train several recipes with the same budget and seed and compare them (the thesis claim:
the SPDNN merge matches or beats the best parent with far fewer parameters than the parents
together; App. A Figs. 8-9, App. B Table 10)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from spdnn.io import write_atomic
from spdnn.shapes import infer
from spdnn.train.recipe import load_recipe
from spdnn.train.trainer import Trainer


def compare_recipes(paths: list[Path], overrides: list[str], outdir: Path,
                    console: Console | None = None) -> Table:
    """Train each recipe into ``outdir/<name>`` and write ``compare.md``, ``compare.json`` and
    ``compare.png`` (one bar chart per metric). Returns the rich table printed to the user."""
    console = console or Console(stderr=True)
    rows = []
    for p in paths:
        r = load_recipe(p, overrides)
        trainer = Trainer.from_recipe(r, outdir=outdir / r.name, console=console)
        infos = [infer(s) for s in trainer.netspecs.values()]
        t0 = time.perf_counter()
        final = trainer.run()
        rows.append({"name": r.name, "params": sum(i.params for i in infos),
                     "macs": sum(i.macs for i in infos),
                     "train_s": time.perf_counter() - t0, "steps": trainer.step, **final})
    outdir.mkdir(parents=True, exist_ok=True)
    write_atomic(outdir / "compare.json", json.dumps(rows, indent=2))
    metric_keys = [k for k in rows[0] if k.startswith("val_")]
    header = ["network", "params", "MACs", "train s"] + [k[4:] for k in metric_keys]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        md.append("| " + " | ".join([row["name"], f"{row['params']:,}", f"{row['macs']:,}",
                                      f"{row['train_s']:.0f}"]
                                     + [f"{row.get(k, float('nan')):.4f}" for k in metric_keys]) + " |")
    write_atomic(outdir / "compare.md", "\n".join(md) + "\n")
    _plot(rows, metric_keys, outdir / "compare.png")
    table = Table(title=f"Comparison ({rows[0]['steps']} steps each, same seed)", title_justify="left")
    for h in header:
        table.add_column(h, justify="left" if h == "network" else "right")
    for row in rows:
        table.add_row(row["name"], f"{row['params']:,}", f"{row['macs'] / 1e6:.0f}M",
                      f"{row['train_s']:.0f}", *[f"{row.get(k, float('nan')):.4f}" for k in metric_keys])
    return table


def _plot(rows: list[dict], keys: list[str], path: Path) -> None:
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["params"] + keys
    cols = min(4, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False)
    names = [r["name"] for r in rows]
    for ax, key in zip(axes.flat, keys):
        vals = [r.get(key, float("nan")) for r in rows]
        colors = ["tab:green" if "merge" in n else "tab:gray" for n in names]
        ax.bar(range(len(rows)), vals, color=colors)
        ax.set_title(key.removeprefix("val_"), fontsize=9)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
