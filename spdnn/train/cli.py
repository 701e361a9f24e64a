"""``spdnn train``, ``spdnn evaluate``, ``spdnn predict`` and ``spdnn compare``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from spdnn.errors import SpdnnError

SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a recipe field, e.g. --set optim.lr=0.001 --set steps=50 (repeatable).")]


def register(app: typer.Typer) -> None:
    """Add the training commands to the main CLI."""
    from spdnn.cli import out

    @app.command()
    def train(
        recipe: Annotated[Path, typer.Argument(help="A training recipe (YAML), e.g. recipes/iris_a_merged.yaml.")],
        set_: SetOpt = None,
        output: Annotated[Path | None, typer.Option("-o", "--output", help="Run folder (default: the recipe's 'output').")] = None,
        resume: Annotated[bool, typer.Option(help="Continue from the run folder's last checkpoint.")] = False,
    ) -> None:
        """Train a recipe: progress bar, checkpoints, metrics CSV/JSON, plots, sample grid.

        Distributed: torchrun --nproc_per_node 2 -m spdnn train RECIPE
        """
        from spdnn.train import Trainer, load_recipe

        r = load_recipe(recipe, set_ or [])
        trainer = Trainer(r, outdir=output, resume=resume, console=out)
        t0 = time.perf_counter()
        final = trainer.run()
        if trainer.rank == 0:
            out.print(_metrics_table(final, title=f"{r.name}: validation after {trainer.step} steps "
                                                  f"({time.perf_counter() - t0:.0f} s)"))
            out.print(f"Run folder: {trainer.outdir} (last.pt, best.pt, metrics.csv, metrics.json, "
                      "plots/, samples.png)")

    @app.command()
    def evaluate(
        checkpoint: Annotated[Path, typer.Argument(help="A run folder or a .pt checkpoint.")],
        set_: SetOpt = None,
    ) -> None:
        """Evaluate a trained model on its recipe's validation data."""
        tr = _trainer_from_checkpoint(checkpoint, set_ or [])
        metrics = tr.evaluate()
        out.print(_metrics_table(metrics, title=f"{tr.recipe.name} ({checkpoint})"))

    @app.command()
    def predict(
        checkpoint: Annotated[Path, typer.Argument(help="A run folder or a .pt checkpoint.")],
        images: Annotated[list[Path], typer.Argument(help="Image files (any format scikit-image reads).")],
        output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the predicted maps.")] = Path("predictions"),
    ) -> None:
        """Run a trained model on images; writes one PNG map per image."""
        import numpy as np
        import torch
        from skimage.io import imread, imsave
        from skimage.transform import resize

        tr = _trainer_from_checkpoint(checkpoint, [])
        c, h, w = tr.netspec.inputs[0].shape
        models = tr.eval_models()
        for m in models.values():
            m.eval()
        output.mkdir(parents=True, exist_ok=True)
        for path in images:
            try:
                img = imread(path).astype(np.float32)
            except (OSError, ValueError) as exc:
                raise SpdnnError(f"cannot read image: {exc}", file=str(path)) from None
            if img.max() > 1:
                img /= 255.0
            if img.ndim == 3 and c == 1:
                img = img[..., :3].mean(axis=2)
            img = resize(img, (h, w), anti_aliasing=True)
            x = torch.from_numpy(img.astype(np.float32)).reshape(1, h, w, -1).permute(0, 3, 1, 2)
            with torch.no_grad():
                y = tr.task.predict(models, x.to(tr.device)).float().cpu()
            dest = output / f"{path.stem}_pred.png"
            imsave(dest, (y[0, 0].clamp(0, 1).numpy() * 255).astype(np.uint8), check_contrast=False)
            out.print(f"{path} -> {dest} ({tuple(y.shape)})")

    @app.command()
    def compare(
        recipes: Annotated[list[Path], typer.Argument(help="Recipes to train with the same budget and seed.")],
        set_: SetOpt = None,
        output: Annotated[Path, typer.Option("-o", "--output", help="Where the table and plot go.")] = Path("runs/compare"),
    ) -> None:
        """Train several recipes (e.g. parents and their SPDNN merge) and compare them.

        Writes compare.md (params, MACs, every metric, training time) and compare.png.
        Example: spdnn compare recipes/iris_a_*.yaml --set steps=200
        """
        from spdnn.train.compare import compare_recipes

        table = compare_recipes(recipes, set_ or [], output, console=out)
        out.print(table)


def _trainer_from_checkpoint(path: Path, overrides: list[str]):
    import torch

    from spdnn.train.recipe import Recipe
    from spdnn.train.trainer import BEST, CHECKPOINT, Trainer

    ckpt = path
    if path.is_dir():
        ckpt = path / BEST if (path / BEST).exists() else path / CHECKPOINT
    if not ckpt.is_file():
        raise SpdnnError("no checkpoint found", file=str(path), hint="give a run folder with last.pt/best.pt")
    try:
        st = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise SpdnnError(f"not a readable checkpoint ({type(exc).__name__})", file=str(ckpt)) from None
    if not isinstance(st, dict) or "spdnn_checkpoint" not in st:
        raise SpdnnError("not an spdnn checkpoint", file=str(ckpt))
    from spdnn.train.recipe import apply_overrides

    data = apply_overrides(st["recipe"], overrides) if overrides else st["recipe"]
    recipe = Recipe.model_validate(data)
    # the network comes from the checkpoint itself, not from files that may have changed since
    from spdnn import spec as S

    tr = Trainer(recipe, outdir=ckpt.parent, progress=False,
                 netspec=S.loads(st["netspec"], file=f"{ckpt}:netspec"))
    tr.load_state(st)
    return tr


def _metrics_table(metrics: dict[str, float], title: str):
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in metrics.items():
        t.add_row(k, f"{v:.4f}" if isinstance(v, float) else json.dumps(v))
    return t
