"""Resumable multi-step pipelines for the sensing tables: each step is a recipe trained into its
own run folder; a finished step (``step_done.json`` with the hash of its recipe after the
overrides, the final metrics and the wall time of the (last) training session) is not
recomputed, an interrupted one continues from its ``last.pt``, and a changed
recipe or override trains anew. Evaluations are cached the same way (:func:`cached`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spdnn.io import write_atomic

DONE = "step_done.json"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_step(recipe_path: str | Path, overrides: list[str], run_dir: Path, console=None
             ) -> tuple[Path, bool]:
    """Train ``recipe_path`` with ``overrides`` into ``run_dir`` unless that exact step is
    finished there. Returns ``(run_dir, trained_now)``."""
    from spdnn.runs import trainer_for
    from spdnn.train import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    key = _hash(recipe.model_dump(mode="json"))
    done = run_dir / DONE
    if done.is_file() and json.loads(done.read_text()).get("recipe_hash") == key:
        if console is not None:
            console.print(f"{recipe.name}: finished before, taking {run_dir}")
        return run_dir, False
    last = run_dir / "last.pt"
    if last.is_file():
        stored = run_dir / "step_started.json"
        if not stored.is_file() or json.loads(stored.read_text()).get("recipe_hash") != key:
            shutil.rmtree(run_dir)  # a different recipe: start over
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / "step_started.json", json.dumps({"recipe_hash": key}))
    t0 = time.perf_counter()
    trainer = trainer_for(recipe, outdir=run_dir, resume="auto", console=console,
                          progress=False, log_lines=console is not None)
    final = trainer.run()
    write_atomic(done, json.dumps({"recipe_hash": key, "final": final, "steps": trainer.step,
                                   "wall_s": time.perf_counter() - t0}, indent=1))
    return run_dir, True


def cached(path: Path, key: Any, compute: Callable[[], dict]) -> dict:
    """``compute()`` stored as JSON at ``path`` with ``key``'s hash; reused while it matches."""
    h = _hash(key)
    if path.is_file():
        data = json.loads(path.read_text())
        if data.get("key") == h:
            return data["value"]
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"key": h, "value": value}, indent=1))
    return value


def step_walls(runs: dict[str, Path]) -> str:
    """``name minutes`` of each finished step: its recorded wall time (a resumed step: its last
    session only), else the time between its ``step_started.json`` and ``step_done.json``."""
    parts = []
    for name, run in runs.items():
        done, started = run / DONE, run / "step_started.json"
        wall = json.loads(done.read_text()).get("wall_s") if done.is_file() else None
        if wall is None and done.is_file() and started.is_file():  # older runs: timestamps
            wall = done.stat().st_mtime - started.stat().st_mtime
        parts.append(f"{name} {wall / 60:.1f} min" if wall is not None else f"{name} n/a")
    return ", ".join(parts)
