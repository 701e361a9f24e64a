"""Runs: the layer above the train stage and the task registry.

:mod:`spdnn.train` knows recipes, the :class:`~spdnn.train.Task` interface and the
:class:`~spdnn.train.Trainer` (which receives a built task and never looks one up);
:mod:`spdnn.tasks` registers the tasks. This module joins them for the command line, the demo
and scripts:

* :func:`trainer_for` -- the recipe's task (netspecs loaded and merged once, before training)
  and a trainer for it;
* :func:`trainer_from_checkpoint` -- a trainer restored from a checkpoint or a run folder
  (recipe and networks come from the checkpoint, read with ``weights_only=True``);
* :func:`train` -- one call;
* :func:`compare_recipes` -- several recipes with the same budget and seed, one table (the
  thesis claim: the SPDNN merge matches or beats the best parent with far fewer parameters than
  the parents together; App. A Figs. 8-9, App. B Table 10).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from spdnn.errors import SpecError
from spdnn.io import BEST, load_checkpoint, save_figure, write_atomic
from spdnn.shapes import infer
from spdnn.tasks import build_task
from spdnn.train.recipe import (
    Recipe,
    apply_overrides,
    blame_override,
    load_recipe,
    validate_recipe,
)
from spdnn.train.trainer import Trainer


def trainer_for(recipe: Recipe, **kwargs: Any) -> Trainer:
    """Build the recipe's task (resolving and merging its netspecs) and a trainer for it;
    ``kwargs`` go to :class:`~spdnn.train.Trainer` (``outdir``, ``resume``, ``console``...).

    Raises:
        SpdnnError: unknown task, missing or invalid netspecs, merge errors.
    """
    return Trainer(build_task(recipe), **kwargs)


def trainer_from_checkpoint(path: str | Path, overrides: list[str] | None = None,
                            prefer: str = BEST, **kwargs: Any) -> Trainer:
    """A trainer restored from a checkpoint file or run folder (``best.pt`` first): the recipe
    and the networks come from the checkpoint itself, not from files that may have changed
    since; ``--set``-style ``overrides`` apply to the stored recipe.

    Raises:
        CheckpointError: the checkpoint is missing, unsafe or corrupt.
        SpecError: the stored recipe or netspecs do not validate.
    """
    from spdnn import spec as S

    st = load_checkpoint(path, prefer=prefer)
    file = st["path"]
    data = apply_overrides(st["recipe"], overrides) if overrides else st["recipe"]
    try:
        recipe = validate_recipe(data, file=f"{file}:recipe")
    except SpecError as exc:
        raise blame_override(exc, overrides or []) from None
    netspecs = {k: S.loads(v, file=f"{file}:netspecs.{k}") for k, v in st["netspecs"].items()}
    kwargs.setdefault("outdir", Path(file).parent)
    kwargs.setdefault("progress", False)
    tr = Trainer(build_task(recipe, netspecs=netspecs), **kwargs)
    tr.load_state(st)
    return tr


def train(recipe: Recipe, **kwargs: Any) -> dict[str, float]:
    """Train a recipe to the end; returns the final validation metrics."""
    return trainer_for(recipe, **kwargs).run()


def compare_recipes(paths: list[Path], overrides: list[str], outdir: Path,
                    console: Console | None = None, report: bool = True,
                    reuse: bool = True) -> Table:
    """Train each recipe into ``outdir/<name>`` with the same overrides, run the task's
    evaluation suite (:meth:`~spdnn.train.Task.report`, e.g. FID for a GAN; ``report=False``
    skips it) and write ``compare.md``, ``compare.json`` and ``compare.png`` (one bar chart per
    metric). The columns are each task's :attr:`~spdnn.train.Task.summary_metrics` (all
    validation metrics by default) after params, MACs and training time.

    Resumable: a finished row is kept in ``outdir/<name>/compare_row.json`` with a hash of its
    recipe; a rerun with ``reuse=True`` takes it instead of training again (a changed recipe
    or override trains anew, and the earlier run folder is renamed ``<name>.old-<date>-<time>``).

    Returns the rich table printed to the user.
    """
    import hashlib

    console = console or Console(stderr=True)
    rows = []
    for p in paths:
        r = load_recipe(p, overrides)
        run_dir = outdir / r.name
        key = hashlib.sha256(json.dumps([r.model_dump(mode="json"), report],
                                        sort_keys=True).encode()).hexdigest()[:16]
        cached = run_dir / "compare_row.json"
        if reuse and cached.is_file():
            row = json.loads(cached.read_text())
            if row.get("recipe_hash") == key:
                console.print(f"{r.name}: finished before, taking {cached}")
                rows.append(row)
                continue
        # a changed recipe or --fresh trains anew: the earlier run is moved aside, not lost
        trainer = trainer_for(r, outdir=run_dir, console=console, overwrite=True)
        infos = [infer(s) for s in trainer.netspecs.values()]
        t0 = time.perf_counter()
        final = trainer.run()
        row = {"name": r.name, "task": r.task, "params": sum(i.params for i in infos),
               "macs": sum(i.macs for i in infos),
               "train_s": time.perf_counter() - t0, "steps": trainer.step, **final}
        if report:
            models = trainer.eval_models()
            for m in models.values():
                m.eval()
            t1 = time.perf_counter()
            row.update(trainer.task.report(models, run_dir / "eval", trainer.device))
            row["eval_s"] = time.perf_counter() - t1
        summary = trainer.task.summary_metrics
        row["columns"] = [k for k in summary if k in row] if summary else [
            k for k in row if k.startswith("val_")]
        row["column_order"] = list(summary) if summary else row["columns"]
        row["recipe_hash"] = key
        write_atomic(cached, json.dumps(row, indent=2))
        rows.append(row)
    outdir.mkdir(parents=True, exist_ok=True)
    write_atomic(outdir / "compare.json", json.dumps(rows, indent=2))
    metric_keys: list[str] = []
    order: list[str] = []
    for row in rows:
        metric_keys += [k for k in row["columns"] if k not in metric_keys]
        order += [k for k in row.get("column_order", row["columns"]) if k not in order]
    metric_keys.sort(key=order.index)  # the tasks' order, whichever row has a column first
    header = ["network", "params", "MACs", "train s"] + [k.removeprefix("val_") for k in metric_keys]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        md.append("| " + " | ".join([row["name"], f"{row['params']:,}", f"{row['macs']:,}",
                                      f"{row['train_s']:.0f}"]
                                     + [_fmt(row.get(k)) for k in metric_keys]) + " |")
    write_atomic(outdir / "compare.md", "\n".join(md) + "\n")
    _plot(rows, metric_keys, outdir / "compare.png")
    steps = sorted({row["steps"] for row in rows})
    each = f"{'/'.join(map(str, steps))} step{'' if steps == [1] else 's'} each"
    table = Table(title=f"Comparison ({each}, same seed)", title_justify="left")
    for h in header:  # names and numbers in full (a log's console is 200 columns wide)
        if h == "network":
            table.add_column(h, no_wrap=True, min_width=max(len(r["name"]) for r in rows))
        else:
            table.add_column(h, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(row["name"], f"{row['params']:,}", f"{row['macs'] / 1e6:.0f}M",
                      f"{row['train_s']:.0f}", *[_fmt(row.get(k)) for k in metric_keys])
    return table


def _fmt(v: Any) -> str:
    """A metric for a table cell: 4 decimals, 2 from 100 up, a dash when the row lacks it."""
    if not isinstance(v, (int, float)):
        return "-"
    return f"{v:.2f}" if abs(v) >= 100 else f"{v:.4f}"


def _plot(rows: list[dict], keys: list[str], path: Path) -> None:
    """``compare.png``: one bar panel per metric (params and MACs first), the value on each
    bar, the better direction in the panel title where it is known
    (:data:`spdnn.metrics.HIGHER_IS_BETTER`), SPDNN merges in green; a ``*_real_floor`` metric
    is drawn as a dashed line in the panel of the metric it is the floor of."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spdnn.metrics import HIGHER_IS_BETTER

    floors = {k.removesuffix("_real_floor"): k for k in keys if k.endswith("_real_floor")
              and k.removesuffix("_real_floor") in keys}
    keys = ["params", "macs"] + [k for k in keys if k not in floors.values()]
    cols = min(4, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, 2.9 * nrows + 0.5),
                             squeeze=False)
    names = [r["name"] for r in rows]
    merged = ["merge" in n for n in names]
    for ax, key in zip(axes.flat, keys):
        vals = [r.get(key) for r in rows]
        vals = [float(v) if isinstance(v, (int, float)) else float("nan") for v in vals]
        colors = ["tab:green" if m else "tab:gray" for m in merged]
        bars = ax.bar(range(len(rows)), vals, color=colors)
        big = key in ("params", "macs")
        ax.bar_label(bars, labels=[(_short(v) if big else _fmt(v)) if math.isfinite(v) else "n/a"
                                   for v in vals], fontsize=6, padding=1)
        name = {"params": "parameters", "macs": "MACs per sample"}.get(key, key.removeprefix("val_"))
        better = HIGHER_IS_BETTER.get(key.removeprefix("val_"))
        if better is not None:
            name += " (higher is better)" if better else " (lower is better)"
        ax.set_title(name, fontsize=8)
        if key in floors:
            floor = [r.get(floors[key]) for r in rows if isinstance(r.get(floors[key]), (int, float))]
            if floor:
                ax.axhline(floor[0], ls="--", color="tab:blue", lw=1,
                           label=f"real vs real floor {_fmt(floor[0])}")
                ax.legend(fontsize=6, loc="upper right")
        if big:
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _short(v)))
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.margins(y=0.18)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    steps = sorted({r["steps"] for r in rows})
    title = f"{'/'.join(map(str, steps))} training steps per row, same seed"
    if any(merged):
        title += " (green: SPDNN merge)"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def _short(v: float) -> str:
    """A count in short form: 3.34M, 45.8k, 912."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.0f}"
