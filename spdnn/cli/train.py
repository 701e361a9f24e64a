"""``spdnn train``, ``spdnn evaluate``, ``spdnn predict`` and ``spdnn compare``."""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from spdnn.cli.console import out, plural

SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a recipe field, e.g. --set optim.lr=0.001 --set steps=50 (repeatable).")]
EvalSetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a field of the run's stored recipe for this evaluation, e.g. "
    "--set data.val_size=512, or a real database: --set data.source=folder --set "
    "data.root=DIR (repeatable).")]


class Fit(str, Enum):
    """``spdnn predict --fit``: :func:`spdnn.tasks.common.fit_image`."""

    pad = "pad"
    crop = "crop"
    stretch = "stretch"


def register(app: typer.Typer) -> None:
    """Add the training commands to the application."""

    @app.command()
    def train(
        recipe: Annotated[Path, typer.Argument(help="A training recipe (YAML), e.g. recipes/iris_a_merged.yaml.")],
        set_: SetOpt = None,
        output: Annotated[Path | None, typer.Option("-o", "--output", help="Run folder (default: the recipe's 'output').")] = None,
        resume: Annotated[bool, typer.Option(
            "--resume", help="Continue from the run folder's last.pt (an error if there is "
            "none). --set overrides apply on top of the restored state, e.g. --set optim.lr=0.001.")] = False,
        resume_or_start: Annotated[bool, typer.Option(
            "--resume-or-start", help="Continue from last.pt if the run folder has one, else "
            "start (for schedulers that rerun the same command).")] = False,
        overwrite: Annotated[bool, typer.Option(
            "--overwrite", help="Start again in a run folder that holds a run (last.pt, "
            "best.pt or metrics.csv): the old run folder is first renamed to "
            "<folder>.old-<date>-<time>, nothing is deleted. Without it such a run is "
            "refused.")] = False,
        quiet: Annotated[bool, typer.Option(
            "--quiet", "-q", help="Print only errors and a one-line summary at the end.")] = False,
        tensorboard: Annotated[bool, typer.Option(
            "--tensorboard", help="Also write TensorBoard event files to RUN/tensorboard/ "
            "(needs the tensorboard package; view with: tensorboard --logdir RUN).")] = False,
    ) -> None:
        """Train a recipe: progress, checkpoints, metrics CSV/JSON, plots, sample grid.

        On a terminal progress is a bar; otherwise (nohup, a scheduler, CI, a pipe) a plain
        line every N steps (step/total, losses, lr, samples/s, ETA; N = log_every scaled so a
        run prints at most 50 lines) and one per validation.

        Ctrl-C (or SIGTERM) finishes the current step, writes last.pt and exits 130 (143);
        --resume continues from there exactly. A second signal, or 5 s without the step
        ending, stops at once (last.pt is written unless a step was half done).

        The run folder may not hold the recipe or its netspecs; a run folder that holds a
        run needs --resume or --overwrite.

        Distributed: torchrun --nproc_per_node 2 -m spdnn train RECIPE
        """
        from spdnn.extras import require
        from spdnn.runs import trainer_for
        from spdnn.train import load_recipe

        require("train", "spdnn train")
        if tensorboard:
            require("tensorboard", "spdnn train --tensorboard")
        r = load_recipe(recipe, set_ or [])
        trainer = trainer_for(r, outdir=output, console=out,
                              resume="auto" if resume_or_start else resume,
                              quiet=quiet, tensorboard=tensorboard, overwrite=overwrite)
        t0 = time.perf_counter()
        final = trainer.run()
        if trainer.rank == 0 and quiet:
            out.print(_summary_line(trainer, final, time.perf_counter() - t0), highlight=False)
        elif trainer.rank == 0:
            out.print(_metrics_table(final, title=f"{r.name}: validation after {plural(trainer.step, 'step')} "
                                                  f"({time.perf_counter() - t0:.0f} s)"))
            out.print(f"Run folder: {trainer.outdir} (last.pt, best.pt, metrics.csv, metrics.json, "
                      "plots/, samples.png" + (", tensorboard/" if tensorboard else "") + ")")

    @app.command()
    def evaluate(
        checkpoint: Annotated[Path, typer.Argument(help="A run folder or a .pt checkpoint.")],
        set_: EvalSetOpt = None,
        output: Annotated[Path | None, typer.Option(
            "-o", "--output", help="Folder for the evaluation suite's plots and cached "
            "classifiers (default: the run folder's eval/).")] = None,
        no_report: Annotated[bool, typer.Option(
            "--no-report", help="Only the validation metrics: skip the task's evaluation "
            "suite.")] = False,
    ) -> None:
        """Evaluate a trained model: its recipe's validation metrics, then the task's evaluation
        suite on the evaluation weights (EMA where the run has it). GANs: FID on a feature
        extractor trained on the real training data and the real-vs-real floor, conditional
        accuracy by an independent classifier (confusion.png), diversity within and between
        classes (diversity.png), attribute error; the classifiers are trained once and cached
        in the eval folder. Writes <run folder>/evaluation.json.

        Example: spdnn evaluate runs/dcgan_digits -o runs/dcgan_digits/eval
        """
        import torch

        from spdnn.extras import require
        from spdnn.io import check_outputs, find_checkpoint, write_atomic
        from spdnn.runs import trainer_from_checkpoint

        require("train", "spdnn evaluate")
        ckpt = find_checkpoint(checkpoint)
        run_dir = ckpt.parent
        evaldir = output if output is not None else run_dir / "eval"
        result = run_dir / "evaluation.json"
        check_outputs(_checkpoints(ckpt), [result], folders=[] if no_report else [evaldir])
        tr = trainer_from_checkpoint(ckpt, set_ or [])
        t0 = time.perf_counter()
        metrics = tr.evaluate()
        if not no_report:
            models = tr.eval_models()
            for m in models.values():
                m.eval()
            with torch.no_grad():
                metrics.update(tr.task.report(models, evaldir, tr.device))
        seconds = time.perf_counter() - t0
        out.print(_metrics_table(metrics, title=f"{tr.recipe.name} ({ckpt}, step {tr.step}; "
                                                f"{seconds:.0f} s)"))
        clean = {k: (v if not isinstance(v, float) or v == v and abs(v) != float("inf")
                     else None) for k, v in metrics.items()}
        write_atomic(result, json.dumps({"checkpoint": str(ckpt), "step": tr.step,
                                         "eval_dir": None if no_report else str(evaldir),
                                         "seconds": round(seconds, 2), "metrics": clean},
                                        indent=2) + "\n", what="evaluation")
        out.print(f"Wrote {result}" + ("" if no_report or not evaldir.is_dir()
                                       else f"; plots in {evaldir}"))

    @app.command()
    def predict(
        checkpoint: Annotated[Path, typer.Argument(help="A run folder or a .pt checkpoint.")],
        inputs: Annotated[list[Path] | None, typer.Argument(
            help="Input files, as the task reads them (images for iris/depth; none for a "
                 "generator).")] = None,
        output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the predictions.")] = Path("predictions"),
        num: Annotated[int, typer.Option(min=1, max=4096, help="Generators: how many samples.")] = 64,
        seed: Annotated[int, typer.Option(min=0, max=2**63 - 1,
                                          help="Generators: seed of the latent vectors.")] = 0,
        fit: Annotated[Fit, typer.Option(
            "--fit", help="Images: how to bring an image to the network's input size. pad: scale to "
            "fit inside, keeping the aspect ratio, pad with edge pixels; crop: scale to cover "
            "and take the centre; stretch: resize, aspect ratio lost.")] = Fit.pad,
    ) -> None:
        """Run a trained model: the task decides what that means (segmentation and depth
        networks write one PNG map per image, at the image's own resolution; a generator
        writes a grid of samples).

        Images are converted to the network's channels (RGB -> gray by luminance) and size
        (--fit); one line per image says what was done.

        Examples: spdnn predict runs/iris_a_merged eye.png -o maps/;
        spdnn predict runs/depth_merged street.jpg --fit crop -o maps/;
        spdnn predict runs/dcgan_digits --num 64 --seed 1 -o samples/
        """
        import torch

        from spdnn.extras import require
        from spdnn.io import check_outputs, find_checkpoint
        from spdnn.runs import trainer_from_checkpoint

        require("train", "spdnn predict")
        ckpt = find_checkpoint(checkpoint)
        tr = trainer_from_checkpoint(ckpt, [])
        files = list(inputs or [])
        options = {"num": num, "seed": seed, "fit": fit.value}
        check_outputs(_checkpoints(ckpt) + files, tr.task.prediction_outputs(files, output, options))
        models = tr.eval_models()
        for m in models.values():
            m.eval()
        with torch.no_grad():
            written = tr.task.predict_files(models, files, output, tr.device, options)
        for what, dest in written:
            out.print(f"{what} -> {dest}")

    @app.command()
    def compare(
        recipes: Annotated[list[Path], typer.Argument(help="Recipes to train with the same budget and seed.")],
        set_: SetOpt = None,
        output: Annotated[Path, typer.Option("-o", "--output", help="Where the table and plot go.")] = Path("runs/compare"),
        report: Annotated[bool, typer.Option(
            "--report/--no-report", help="Run each task's evaluation suite after training "
            "(FID, conditional accuracy and diversity for GANs).")] = True,
        fresh: Annotated[bool, typer.Option(
            "--fresh", help="Train every recipe again, even one whose finished row (same "
            "recipe and overrides) is in the output folder.")] = False,
    ) -> None:
        """Train several recipes (e.g. parents and their SPDNN merge) and compare them.

        Writes compare.md (params, MACs, training time and the task's summary metrics),
        compare.json and compare.png. Rows already finished with the same recipe are reused,
        so an interrupted comparison continues where it stopped.
        Examples: spdnn compare recipes/iris_a_*.yaml --set steps=200;
        spdnn compare recipes/gan/mnist_*.yaml -o runs/gan_mnist
        """
        from spdnn.extras import require
        from spdnn.runs import compare_recipes

        require("train", "spdnn compare")
        table = compare_recipes(recipes, set_ or [], output, console=out, report=report,
                                reuse=not fresh)
        out.print(table)


def _checkpoints(ckpt: Path) -> list[Path]:
    """What ``evaluate`` and ``predict`` read from a run: ``ckpt`` and its folder's checkpoints."""
    from spdnn.io import BEST, LAST

    return [ckpt] + [ckpt.parent / n for n in (BEST, LAST) if (ckpt.parent / n).is_file()]


def _summary_line(trainer, final: dict[str, float], seconds: float) -> str:
    """``spdnn train --quiet``'s one line: steps, time, validation loss and best metric, folder."""
    parts = [f"{k} {final[k]:.4f}" for k in final if k.startswith("val_loss")]
    best = trainer.best_metric
    if best in final and not best.startswith("val_loss"):
        parts.append(f"{best} {final[best]:.4f}")
    if trainer.best is not None:
        parts.append(f"best {best} {trainer.best:.4f}")
    return (f"{trainer.recipe.name}: {trainer.step} steps in {seconds:.0f} s; "
            + ", ".join(parts) + f"; run folder {trainer.outdir}")


def _metrics_table(metrics: dict[str, float], title: str):
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in metrics.items():
        t.add_row(k, f"{v:.4f}" if isinstance(v, float) else json.dumps(v))
    return t
