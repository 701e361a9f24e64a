"""``spdnn invert`` and ``spdnn generate``: the latent-space aspect mapping of thesis sec. 3.3.1
and App. F (:mod:`spdnn.tasks.aspect`, :mod:`spdnn.tasks.gan.invert`)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from spdnn.cli.console import err, out, plural
from spdnn.errors import SpdnnError

if TYPE_CHECKING:
    import torch

ENCODER_NETSPEC = "netspecs/gan/aspect/iris_encoder_24x32.yaml"
"""The default inversion encoder of ``--method encoder`` (the iris BEGAN's 1 x 24 x 32 images)."""
PREVIEW_PAIRS = 16
"""Image | aspect pairs in ``preview.png`` (App. F Fig. 11)."""
INTERPOLATION_STEPS = 9
"""Points on the line between two latents in ``interpolation.png`` (App. F Fig. 7)."""
MASK_THRESHOLD = 0.45
"""The aspect map is written as a mask thresholded as the iris metrics are (App. D sec. 4)."""


class Method(str, Enum):
    optimize = "optimize"
    encoder = "encoder"


class Split(str, Enum):
    train = "train"
    val = "val"
    all = "all"


def load_run(path: Path) -> tuple[Any, dict, Path]:
    """``(trainer, evaluation models in eval mode, checkpoint file)`` of a run folder or
    checkpoint (:func:`spdnn.runs.trainer_from_checkpoint`, the loader of ``spdnn predict``)."""
    from spdnn.io import find_checkpoint
    from spdnn.runs import trainer_from_checkpoint

    ckpt = find_checkpoint(path)
    tr = trainer_from_checkpoint(ckpt, [])
    models = tr.eval_models()
    for m in models.values():
        m.eval()
    return tr, models, ckpt


def load_generator_run(path: Path) -> tuple[Any, dict, Path]:
    """:func:`load_run` of a GAN run.

    Raises:
        SpdnnError: the run holds no generator (naming its checkpoint).
    """
    from spdnn.tasks.gan.base import GANTask

    tr, models, ckpt = load_run(path)
    if not isinstance(tr.task, GANTask) or "generator" not in models:
        raise SpdnnError(f"the run trains {sorted(models)} (task '{tr.task.name}'), no "
                         "generator", file=str(ckpt),
                         hint="give a GAN run, e.g. one of recipes/aspect/iris_began.yaml")
    if tr.task.conditional != "none":
        raise SpdnnError(f"the generator of task '{tr.task.name}' is conditional; inversion and "
                         "aspect generation need an unconditional one", file=str(ckpt))
    return tr, models, ckpt


def inversion_data(task, data: Path | None, split: str, limit: int | None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor], str]:
    """``(images (N, C, H, W) in [0, 1] at the generator's size, aspects, description)`` to
    invert: the run's own eyes with their exact masks (``began_iris``) or images (other GANs),
    or ``data``: an ``images/`` + ``masks/`` folder (the iris folder loader) or a folder of
    images with 68-point ``.pts`` files (:class:`spdnn.data.landmarks.LandmarkFolderDataset`)."""
    import torch

    from spdnn.tasks.aspect import eye_pairs

    shape = task.image_shape
    aspects: dict[str, torch.Tensor] = {}
    if data is None:
        if hasattr(task, "eye_pairs"):
            (ti, tm), (vi, vm) = task.eye_pairs()
            parts = {"train": (ti, tm), "val": (vi, vm),
                     "all": (torch.cat([ti, vi]), torch.cat([tm, vm]))}
            images, masks = parts[split]
            aspects["masks"] = masks
        else:
            train, val = task.datasets()
            parts = {"train": train.images, "val": val.images,
                     "all": torch.cat([train.images, val.images])}
            images = parts[split]
        what = f"the run's {split} data ({task.recipe.data.source})"
    elif (data / "images").is_dir() and (data / "masks").is_dir():
        from spdnn.data.iris import IrisFolderDataset

        images, masks = eye_pairs(IrisFolderDataset(data), shape)
        aspects["masks"] = masks
        what = f"the iris folder {data}"
    else:
        from spdnn.data.landmarks import LandmarkFolderDataset

        ds = LandmarkFolderDataset(data, shape[1], shape[2], shape[0])
        items = [ds[i] for i in range(len(ds))]
        images = torch.stack([it[0] for it in items])
        aspects["landmarks"] = torch.stack([it[1] for it in items])
        what = f"the landmark folder {data}"
    if limit is not None:
        images = images[:limit]
        aspects = {k: v[:limit] for k, v in aspects.items()}
    if len(images) == 0:
        raise SpdnnError("no images to invert", field="--data")
    return images, aspects, what


def _refuse_existing(path: Path, overwrite: bool, inputs: list[Path], folder: bool = False) -> None:
    """Refuse an output that would overwrite an input (always: :func:`spdnn.io.check_outputs`;
    ``folder``: the output is a folder), or a file / non-empty folder that exists (unless
    ``overwrite``)."""
    from spdnn.io import check_outputs

    check_outputs(inputs, [] if folder else [path], folders=[path] if folder else [])
    real = path.resolve()
    for p in inputs:
        rp = Path(p).resolve()
        if real == rp.parent or real in rp.parents:
            raise SpdnnError(f"the output would write into the input run folder {rp.parent}",
                             file=str(path), hint="choose another output path")
    if not overwrite and path.exists() and (path.is_file() or any(path.iterdir())):
        raise SpdnnError("the output exists and is not empty; nothing was written",
                         file=str(path), hint="choose another path, or pass --overwrite")


def _mae_histogram(mae: torch.Tensor, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spdnn.io import save_figure

    fig, ax = plt.subplots(figsize=(5.6, 3.2))
    ax.hist(mae.numpy(), bins=min(40, max(5, len(mae) // 5)), color="tab:blue")
    ax.axvline(float(mae.mean()), color="tab:red", lw=1, label=f"mean {float(mae.mean()):.4f}")
    ax.set_xlabel("reconstruction MAE per image, mean |G(z) - x| (pixels in [0, 1])")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def run_inversion(tr, models, images, method: str, *, steps: int, lr: float, batch_size: int,
                  seed: int, encoder_netspec: Path | None = None, encoder_steps: int = 500,
                  encoder_lr: float = 2e-4, show_progress: bool = True):
    """Invert the run's generator on ``images`` by ``method`` (:mod:`spdnn.tasks.gan.invert`),
    with a progress bar on stderr; returns the :class:`~spdnn.tasks.gan.invert.Inversion`."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from spdnn.tasks.gan import invert as I

    task, G = tr.task, models["generator"]
    G.to(tr.device)
    cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                                                                      "{task.total}"),
            TimeRemainingColumn())
    with Progress(*cols, console=err, transient=True, disable=not show_progress) as bar:
        if method == "optimize":
            job = bar.add_task("inverting (Adam on the MAE)", total=len(images))
            return I.invert_optimize(G, images, to_net=task.to_net, to_unit=task.to_unit,
                                     steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                                     latent_size=task.z_dim,
                                     progress=lambda k: bar.update(job, completed=k))
        from spdnn import spec as S
        from spdnn.codegen.build import build_module
        from spdnn.zoo import locate

        path = locate(encoder_netspec or ENCODER_NETSPEC)
        espec = S.load(path)
        if tuple(espec.inputs[0].shape) != tuple(task.image_shape):
            raise SpdnnError(f"the encoder reads {tuple(espec.inputs[0].shape)}, the generator "
                             f"makes {tuple(task.image_shape)}", file=str(path),
                             hint="give an encoder netspec for the generator's image shape "
                                  "(--encoder)")
        torch_seed(seed)
        enc = build_module(espec).to(tr.device)
        D = models.get("discriminator")
        job = bar.add_task("training the inversion encoder", total=encoder_steps)
        t = I.train_encoder(enc, G, images, discriminator=D, to_net=task.to_net,
                            steps=encoder_steps, lr=encoder_lr, seed=seed,
                            progress=lambda k: bar.update(job, completed=k))
        return I.invert_encoder(enc, G, images, to_net=task.to_net, to_unit=task.to_unit,
                                train_seconds=t, settings={
                                    "encoder": str(path), "encoder_steps": encoder_steps,
                                    "encoder_lr": encoder_lr, "lambda": I.ENCODER_LAMBDA,
                                    "seed": seed})


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def write_pairs(images: torch.Tensor, aspect: torch.Tensor, kind: str, outdir: Path) -> int:
    """Write generated ``images`` ``(N, C, H, W)`` in [0, 1] and their aspects into ``outdir``:
    ``images/NNNNN.png`` (8-bit) with ``masks/NNNNN.png`` (0/255, the map > 0.45) in the
    layout of :class:`spdnn.data.iris.IrisFolderDataset`, or ``landmarks/NNNNN.pts`` (68-point
    layout of :mod:`spdnn.data.landmarks`, pixel coordinates). Returns the count."""
    import numpy as np
    from skimage.io import imsave

    from spdnn.io import write_atomic

    (outdir / "images").mkdir(parents=True, exist_ok=True)
    sub = outdir / ("masks" if kind == "masks" else "landmarks")
    sub.mkdir(parents=True, exist_ok=True)
    for d in (outdir / "images", sub):  # --overwrite: earlier pairs must not stay behind
        for f in d.iterdir():
            if f.is_file() and f.suffix.lower() in (".png", ".pts"):
                f.unlink()
    h, w = images.shape[-2:]
    width = max(5, len(str(len(images) - 1)))
    for i in range(len(images)):
        stem = f"{i:0{width}d}"
        img = (images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        imsave(outdir / "images" / f"{stem}.png", img[..., 0] if img.shape[2] == 1 else img,
               check_contrast=False)
        if kind == "masks":
            m = (aspect[i, 0] > MASK_THRESHOLD).numpy().astype(np.uint8) * 255
            imsave(sub / f"{stem}.png", m, check_contrast=False)
        else:
            pts = aspect[i].reshape(-1, 2).numpy() * np.array([w, h])
            body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
            write_atomic(sub / f"{stem}.pts",
                         f"version: 1\nn_points: {len(pts)}\n{{\n{body}\n}}\n")
    return len(images)


def overlay(images: torch.Tensor, aspect: torch.Tensor, kind: str) -> torch.Tensor:
    """RGB ``(N, 3, H, W)``: the gray image with the aspect drawn on it (mask > 0.45 tinted
    red; landmarks as red dots)."""
    import torch

    gray = images.float().mean(1, keepdim=True).expand(-1, 3, -1, -1).clone()
    if kind == "masks":
        m = (aspect[:, :1] > MASK_THRESHOLD).float()
        red = torch.tensor([1.0, 0.1, 0.1]).view(1, 3, 1, 1)
        return gray * (1 - 0.5 * m) + red * 0.5 * m
    h, w = images.shape[-2:]
    pts = aspect.reshape(len(aspect), -1, 2)
    for i in range(len(aspect)):
        xs = (pts[i, :, 0] * w).long().clamp(0, w - 1)
        ys = (pts[i, :, 1] * h).long().clamp(0, h - 1)
        gray[i, :, ys, xs] = torch.tensor([1.0, 0.1, 0.1]).view(3, 1)
    return gray


def register(app: typer.Typer) -> None:
    @app.command()
    def invert(
        run: Annotated[Path, typer.Argument(help="A GAN run folder or checkpoint (its generator "
                                                 "is inverted).")],
        output: Annotated[Path, typer.Option("-o", "--output",
                                             help="The latents file to write.")],
        data: Annotated[Path | None, typer.Option(
            "--data", help="Real images to invert: an images/ + masks/ folder (iris layout) or a "
                           "folder of images with 68-point .pts files. Default: the run's own "
                           "data (for an iris BEGAN: its eyes with their exact masks).")] = None,
        split: Annotated[Split, typer.Option(
            "--split", help="Which part of the run's own data (ignored with --data).")
        ] = Split.train,
        method: Annotated[Method, typer.Option(
            "--method", help="optimize: Adam on the MAE per image (App. F eq. 4); encoder: "
                             "train an inversion network first (SPADE-SR sec. 3.4).")
        ] = Method.optimize,
        steps: Annotated[int, typer.Option("--steps", help="Adam steps per image batch "
                                                           "(optimize).")] = 200,
        lr: Annotated[float, typer.Option("--lr", help="Adam learning rate (optimize; App. F: "
                                                       "0.1).")] = 0.1,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Images inverted "
                                                                     "together.")] = 256,
        encoder: Annotated[Path | None, typer.Option(
            "--encoder", help=f"Encoder netspec (encoder; default {ENCODER_NETSPEC}).")] = None,
        encoder_steps: Annotated[int, typer.Option("--encoder-steps",
                                                   help="Encoder training steps.")] = 500,
        limit: Annotated[int | None, typer.Option("--limit", help="Invert only the first N "
                                                                  "images.")] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the starting points / the "
                                                         "encoder.")] = 0,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing "
                                                                    "output file.")] = False,
    ) -> None:
        """Find the latent z of each real image with G(z) ~= x (thesis App. F eq. 4: Adam on
        the mean absolute error, z kept in U[-1, 1] by z = tanh(w)), and write the latents
        file the aspect task trains on (z, per-image MAE, images, masks or landmarks), with a
        histogram of the reconstruction MAE beside it (<output stem>_mae.png).

        Examples:

          spdnn invert runs/iris_began -o runs/iris_latents.pt
          spdnn invert runs/iris_began --method encoder --split val -o runs/iris_val_enc.pt
        """
        from spdnn.extras import require
        from spdnn.tasks.gan.invert import save_latents

        require("train", "spdnn invert")
        for name, v in (("--steps", steps), ("--batch-size", batch_size),
                        ("--encoder-steps", encoder_steps)):
            if v < 1:
                raise SpdnnError(f"{name} must be >= 1, got {v}", field=name)
        if not lr > 0:
            raise SpdnnError(f"--lr must be > 0, got {lr}", field="--lr")
        if limit is not None and limit < 1:
            raise SpdnnError(f"--limit must be >= 1, got {limit}", field="--limit")
        hist = output.with_name(output.stem + "_mae.png")
        tr, models, ckpt = load_generator_run(run)
        inputs = [ckpt] + ([data] if data is not None else [])
        for p in (output, hist):
            _refuse_existing(p, overwrite, inputs)
        if output.exists() and output.is_dir():
            raise SpdnnError("the output is a folder", file=str(output), hint="give a file name")
        images, aspects, what = inversion_data(tr.task, data, split.value, limit)
        inv = run_inversion(tr, models, images, method.value, steps=steps, lr=lr,
                            batch_size=batch_size, seed=seed, encoder_netspec=encoder,
                            encoder_steps=encoder_steps)
        meta = {"run": str(ckpt), "task": tr.task.name, "data": what,
                "image_shape": list(tr.task.image_shape)}
        save_latents(output, inv, images, aspects, meta)
        m = inv.mae
        _mae_histogram(m, hist, f"{tr.recipe.name}: {method.value} inversion of "
                                f"{plural(len(m), 'image')} ({inv.seconds:.0f} s)")
        out.print(f"Inverted {plural(len(m), 'image')} of {what} by {method.value} in "
                  f"{inv.seconds:.1f} s: reconstruction MAE mean {float(m.mean()):.4f}, median "
                  f"{float(m.median()):.4f}, 90th percentile {float(m.quantile(0.9)):.4f}")
        out.print(f"Wrote {output} ({', '.join(['z'] + list(aspects))}) and {hist}")

    @app.command()
    def generate(
        run: Annotated[Path, typer.Argument(help="The GAN run folder or checkpoint.")],
        aspect: Annotated[Path, typer.Option("--aspect", help="The aspect run (task: aspect) "
                                                              "trained on its latents.")],
        output: Annotated[Path, typer.Option("-o", "--output", help="Folder to write.")],
        num: Annotated[int, typer.Option("-n", "--num", help="Pairs to generate.")] = 1000,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the latents.")] = 0,
        overwrite: Annotated[bool, typer.Option(
            "--overwrite", help="Write into a folder that holds files (its images/ and masks/ "
                                "or landmarks/ files are replaced).")] = False,
    ) -> None:
        """Generate new labelled pairs (thesis Fig. 3.15, App. F Fig. 10): z ~ U[-1, 1] feeds
        the generator (image) and the aspect generator (its mask or landmarks). Writes
        images/ + masks/ (the iris folder layout: spdnn train recipes/iris_a_merged.yaml --set
        data.source=folder --set data.root=OUT reads them) or images/ + landmarks/ (.pts),
        preview.png (image | aspect, App. F Fig. 11) and interpolation.png (a line in z,
        App. F Fig. 7).

        Example: spdnn generate runs/iris_began --aspect runs/iris_mask -n 1000 -o generated/
        """
        import torch

        from spdnn.extras import require
        from spdnn.tasks.common import sample_grid

        require("train", "spdnn generate")
        if num < 1:
            raise SpdnnError(f"--num must be >= 1, got {num}", field="--num")
        tr, models, ckpt = load_generator_run(run)
        atr, amodels, ackpt = load_run(aspect)
        if atr.task.name != "aspect":
            raise SpdnnError(f"not an aspect run (task '{atr.task.name}')", file=str(ackpt),
                             hint="train one with recipes/aspect/iris_mask.yaml")
        want = tuple(atr.task.netspecs["net"].inputs[0].shape)
        if want != (tr.task.z_dim,):
            raise SpdnnError(f"the aspect network reads latents of {want[0]} values, the "
                             f"generator of {ckpt} takes {tr.task.z_dim}", file=str(ackpt),
                             hint="train the aspect run on latents of this generator")
        _refuse_existing(output, overwrite, [ckpt, ackpt], folder=True)
        if output.exists() and not output.is_dir():
            raise SpdnnError("the output is a file", file=str(output), hint="give a folder")
        task, G, M = tr.task, models["generator"].to(tr.device), amodels["net"].to(tr.device)
        kind = atr.task.kind
        g = torch.Generator().manual_seed(seed)
        z = task.sample_noise(num, g)
        imgs, asp = [], []
        with torch.no_grad():
            for s in range(0, num, 256):
                zz = z[s:s + 256].to(tr.device)
                imgs.append(task.to_unit(G(zz)).cpu())
                asp.append(M(zz).float().clamp(0, 1).cpu())
        images, aspects = torch.cat(imgs), torch.cat(asp)
        count = write_pairs(images, aspects, kind, output)
        k = min(PREVIEW_PAIRS, count)
        tiles = torch.stack([images[:k].expand(-1, 3, -1, -1),
                             overlay(images[:k], aspects[:k], kind)], 1).flatten(0, 1)
        preview = sample_grid(tiles, output / "preview.png",
                              f"{task.recipe.name} + {atr.recipe.name}: generated image | its "
                              f"{'mask (red)' if kind == 'masks' else 'landmarks'}", cols=8)
        t = torch.linspace(0, 1, INTERPOLATION_STEPS).view(-1, 1)
        za, zb = z[0:1], z[min(1, num - 1):min(2, num)]
        line = (1 - t) * za + t * zb
        with torch.no_grad():
            li = task.to_unit(G(line.to(tr.device))).cpu()
            la = M(line.to(tr.device)).float().clamp(0, 1).cpu()
        strip = torch.cat([li.expand(-1, 3, -1, -1), overlay(li, la, kind)])
        inter = sample_grid(strip, output / "interpolation.png",
                            "z moving on a line between two samples: image (top), aspect "
                            "(bottom)", cols=INTERPOLATION_STEPS)
        out.print(f"Wrote {plural(count, 'pair')} to {output}/images and {output}/"
                  f"{'masks' if kind == 'masks' else 'landmarks'}; {preview.name}, {inter.name}")
