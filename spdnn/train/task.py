"""The task interface: a task supplies data, models, losses, metrics, figures and prediction;
the trainer (:mod:`spdnn.train.trainer`) supplies the loop, devices, mixed precision, EMA,
clipping, checkpoints and logs.

Adding a task is one file: subclass :class:`Task` (or :class:`SupervisedTask` for ``(input,
target[, mask])`` data, or :class:`ImageToMapTask` for image-in, map-out networks), decorate it
with :func:`spdnn.tasks.registry.register_task`, and import it from :mod:`spdnn.tasks` (or from
your own code before training). The hooks, in the order the trainer calls them:

==========================  ===================================================================
hook                        contract
==========================  ===================================================================
``model_names``             names the recipe's ``models`` must have, e.g. ``("generator",
                            "discriminator")``; ``("net",)`` for the one-network form
``datasets()``              ``(train, validation)`` :class:`torch.utils.data.Dataset` objects;
                            an item is a tuple of tensors (images ``float32 (C, H, W)``, labels
                            ``int64 ()``); the trainer batches them and moves every 4-D tensor
                            to the device in channels-last layout
``module_netspec(name)``    the netspec model ``name`` is built from (default: as written)
``build_models(nets)``      the models to train from ``{name: nn.Module}`` built from the
                            netspecs (default: unchanged)
``configure_optimizers``    ``{name: Optimizer}``; default: one per model from its recipe
                            ``optim`` section (Nesterov SGD or Adam)
``training_step(tr, b)``    one iteration on batch ``b`` (a tuple of device tensors): compute the
                            losses under ``tr.autocast()`` and call ``tr.backward_step(loss,
                            name)`` once per model to update; return ``{name: float}`` to log.
                            The trainer then steps the schedulers, calls ``scaler.update()``
                            once, and updates the EMA copies
``state_dict()``            the task's own training state (BEGAN's ``k_t``), checkpointed
``new_metrics()``           a :class:`spdnn.metrics.Metric` accumulator or ``None``
``validation_step(m, b, a)``  ``m``: the evaluation models (EMA weights where EMA is on), in
                            eval mode, under ``torch.no_grad()``; ``a``: the accumulator of
                            ``new_metrics()``. Return per-batch mean values ``{name: float}``;
                            the trainer averages them over the validation set (weighted by
                            batch size) as ``val_<name>`` and adds ``val_<metric>`` from ``a``
``figures(m, b, outdir)``   write sample figures of a validation batch; return the files
``predict_files(...)``      ``spdnn predict``: turn user inputs (files) into outputs in a folder
==========================  ===================================================================
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from spdnn.errors import SpdnnError, SpecError

if TYPE_CHECKING:
    from spdnn.metrics import Metric
    from spdnn.spec import Netspec
    from spdnn.train.recipe import Recipe
    from spdnn.train.trainer import Trainer


class Task(ABC):
    """Base class of training tasks (see the module docstring for the hooks). ``datasets``,
    ``training_step`` and ``validation_step`` are abstract: a task must define them (or
    inherit them, as from :class:`SupervisedTask`).

    Args:
        recipe: the validated recipe.
        netspecs: the network of every model of the recipe, ``{name: Netspec}`` (resolved and
            merged before the task is built: :func:`spdnn.tasks.build_task`).

    Raises:
        SpecError: the recipe's model names are not the ones the task needs.
    """

    name: ClassVar[str] = "task"
    model_names: ClassVar[tuple[str, ...]] = ("net",)
    default_best_metric: ClassVar[str] = "val_loss"
    default_best_mode: ClassVar[str] = "min"
    summary_metrics: ClassVar[tuple[str, ...] | None] = None
    """The metrics ``spdnn compare`` shows for this task, in order (``val_*`` from validation,
    others from :meth:`report`); ``None``: every validation metric."""

    def __init__(self, recipe: Recipe, netspecs: dict[str, Netspec]) -> None:
        self.recipe = recipe
        self.netspecs = netspecs
        want, got = set(self.model_names), set(recipe.models)
        if want != got:
            form = ("model: {...}" if self.model_names == ("net",)
                    else "models: {" + ", ".join(f"{n}: {{...}}" for n in self.model_names) + "}")
            raise SpecError(f"task '{self.name}' trains the models {sorted(want)}, the recipe "
                            f"declares {sorted(got)}", field="models", hint=f"write {form}")

    # -- data ---------------------------------------------------------------------------------
    @abstractmethod
    def datasets(self) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        """``(train, validation)`` datasets of tuples of tensors."""

    # -- models and optimizers -------------------------------------------------------------
    def module_netspec(self, name: str) -> Netspec:
        """The netspec the trainer builds model ``name`` from (default: ``netspecs[name]``; a
        task may return a variant, e.g. one that ends in logits instead of a sigmoid)."""
        return self.netspecs[name]

    def build_models(self, nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
        """The models to train, from the modules built from ``self.netspecs`` (default: as is)."""
        return nets

    def configure_optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        """One optimizer per model, from that model's (or the recipe's) ``optim`` section."""
        return {k: make_optimizer(self.recipe.model_optim(k), m.parameters())
                for k, m in models.items()}

    # -- steps ------------------------------------------------------------------------------
    @abstractmethod
    def training_step(self, trainer: Trainer, batch: tuple) -> dict[str, float]:
        """One optimisation iteration; returns the values to log (see the module docstring)."""

    @abstractmethod
    def validation_step(self, models: dict[str, nn.Module], batch: tuple,
                        metrics: Metric | None) -> dict[str, float]:
        """Per-batch validation values (see the module docstring)."""

    def new_metrics(self) -> Metric | None:
        """A fresh metric accumulator for one pass over the validation set, or ``None``."""
        return None

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The task's own training state for exact resume (e.g. BEGAN's ``k_t``), saved in
        every checkpoint; tensors, numbers and plain containers only (read back with
        ``weights_only=True``). Default: ``{}``."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (an empty dict from checkpoints without task state).
        Default: nothing to restore."""
        return None

    # -- outputs -----------------------------------------------------------------------------
    def figures(self, models: dict[str, nn.Module], batch: tuple, outdir: Path) -> list[Path]:
        """Save sample figures of a validation batch (e.g. an image grid); returns the files."""
        return []

    def report(self, models: dict[str, nn.Module], outdir: Path,
               device: torch.device) -> dict[str, float]:
        """The task's evaluation suite beyond the validation metrics (e.g. FID for a GAN), run
        by ``spdnn evaluate`` and ``spdnn compare``, not during training; writes its plots under
        ``outdir``. Default: nothing (``{}``)."""
        return {}

    def predict_files(self, models: dict[str, nn.Module], inputs: list[Path], outdir: Path,
                      device: torch.device, options: dict[str, Any]) -> list[tuple[str, Path]]:
        """``spdnn predict``: run the trained models on ``inputs`` and write the results into
        ``outdir``; returns ``(what, written file)`` pairs for the user.

        Raises:
            SpdnnError: the task does not predict from files, or an input is unusable.
        """
        raise SpdnnError(f"task '{self.name}' has no prediction command")

    def prediction_outputs(self, inputs: list[Path], outdir: Path,
                           options: dict[str, Any]) -> list[Path]:
        """The files :meth:`predict_files` would write for ``inputs`` into ``outdir``, so that
        ``spdnn predict`` checks them (:func:`spdnn.io.check_outputs`: no input overwritten,
        no two outputs on one file) before anything is computed or written."""
        return []


class SupervisedTask(Task):
    """A one-network task on ``(input, target)`` or ``(input, target, mask)`` batches:
    override :meth:`datasets`, :meth:`loss` and :meth:`new_metrics`."""

    @abstractmethod
    def loss(self, pred: torch.Tensor, target: torch.Tensor,
             mask: torch.Tensor | None) -> torch.Tensor:
        """Scalar float32 loss of a batch (``pred`` is float32, same shape as ``target``)."""

    @torch.no_grad()
    def predict(self, models: dict[str, nn.Module], x: torch.Tensor) -> torch.Tensor:
        """The network's output for a batch ``x``."""
        return models["net"](x)

    def training_step(self, trainer: Trainer, batch: tuple) -> dict[str, float]:
        x, y, mask = unpack(batch)
        with trainer.autocast():
            pred = trainer.train_models["net"](x)  # DDP-wrapped when distributed
        loss = self.loss(pred.float(), y, mask)
        trainer.backward_step(loss, "net")
        return {"loss": float(loss.detach())}

    def validation_step(self, models, batch, metrics):
        x, y, mask = unpack(batch)
        pred = self.predict(models, x).float()
        if metrics is not None:
            metrics.update(pred, y, mask)
        return {"loss": float(self.loss(pred, y, mask))}


class ImageToMapTask(SupervisedTask):
    """A supervised task whose network maps an image to a map of the same size (segmentation,
    depth): ``spdnn predict`` reads image files and writes one PNG map per image."""

    def prediction_outputs(self, inputs, outdir, options):
        """``<stem>_pred.png`` in ``outdir`` for each input."""
        return [outdir / f"{Path(p).stem}_pred.png" for p in inputs]

    def predict_files(self, models, inputs, outdir, device, options):
        """Write ``<stem>_pred.png`` (8-bit gray, the map in [0, 1]) for each image, at the
        image's own resolution (height x width), read and fitted by :meth:`predict_images`;
        each file is written atomically (:func:`spdnn.io.write_atomic`).

        Raises:
            SpdnnError: as :meth:`predict_images`, or a destination that cannot be written.
        """
        import io

        import numpy as np
        from PIL import Image

        from spdnn.io import write_atomic

        written = []
        for (_, y, undo, what), dest in zip(
                self.predict_images(models, inputs, device, options),
                self.prediction_outputs(inputs, outdir, options), strict=True):
            m = np.clip(undo(y[0, 0].numpy()), 0, 1)
            buf = io.BytesIO()
            Image.fromarray((m * 255).round().astype(np.uint8)).save(buf, format="PNG")
            write_atomic(dest, buf.getvalue(), what="prediction")
            written.append((what, dest))
        return written

    def predict_images(self, models, inputs, device, options):
        """``spdnn predict``'s image reading, shared by the map tasks: for each image, yield
        ``(path, y, undo, description)`` with ``y`` the network's output (:meth:`predict`,
        ``(1, C, h, w)`` float32 on the CPU), ``undo`` taking an ``(h, w)`` map back to the
        image's size, and a description of what was done.

        Each image is read as floats in [0, 1] (integer images divided by their type's maximum;
        float images above 1 divided by 255), its alpha channel dropped, converted to the
        network's channels (RGB -> gray by luminance, ``skimage.color.rgb2gray``: 0.2125 R +
        0.7154 G + 0.0721 B; gray -> RGB by repetition), brought to the input size by
        :func:`spdnn.tasks.common.fit_image` with ``options["fit"]`` (``pad``, the default, ``crop`` or
        ``stretch``). The description says which of these steps were applied.

        Raises:
            SpdnnError: no inputs, an unreadable or too large image (:func:`spdnn.io.read_image`),
                an unsupported channel count or an unknown ``fit``.
        """
        import numpy as np
        from skimage.color import gray2rgb, rgb2gray
        from skimage.util import img_as_float32

        from spdnn.tasks.common import FIT_MODES, fit_image

        if not inputs:
            raise SpdnnError("no input images given", hint="spdnn predict RUN image.png ...")
        fit = options.get("fit", "pad")
        if fit not in FIT_MODES:
            raise SpdnnError(f"unknown fit '{fit}'", field="--fit", hint="use pad, crop or stretch")
        c, h, w = self.netspecs["net"].inputs[0].shape
        from spdnn.io import read_image

        for path in inputs:
            try:
                raw = read_image(path)
            except (OSError, ValueError, SyntaxError) as exc:
                raise SpdnnError(f"cannot read image: {exc}", file=str(path)) from None
            notes = []
            img = img_as_float32(raw) if raw.dtype.kind in "uib" else raw.astype(np.float32)
            if raw.dtype.kind == "f" and img.max() > 1:
                img = img / 255.0
                notes.append("float values above 1 divided by 255")
            if img.ndim == 3 and img.shape[2] in (2, 4):
                img = img[..., :-1]
                notes.append("alpha dropped")
            if img.ndim == 3 and img.shape[2] == 1:
                img = img[..., 0]
            if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
                raise SpdnnError(f"unsupported image of shape {raw.shape}", file=str(path),
                                 hint="give a gray or RGB image")
            kind = "gray" if img.ndim == 2 else "RGB"
            if c == 1 and img.ndim == 3:
                img = rgb2gray(img).astype(np.float32)
                notes.append("RGB -> gray (luminance)")
            elif c == 3 and img.ndim == 2:
                img = gray2rgb(img)
                notes.append("gray -> RGB (repeated)")
            elif c not in (1, 3):
                raise SpdnnError(f"the network takes {c} channels; predict reads gray or RGB "
                                 "images", file=str(path))
            H, W = img.shape[:2]
            x_np, undo, how = fit_image(img, h, w, fit)
            x = torch.from_numpy(np.ascontiguousarray(x_np, np.float32)).reshape(1, h, w, -1)
            y = self.predict(models, x.permute(0, 3, 1, 2).to(device)).float().cpu()
            notes.append(how)
            yield path, y, undo, f"{path}: {H}x{W} {kind}; " + "; ".join(notes)


def unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(input, target, mask or None)`` of a supervised batch."""
    if len(batch) == 3:
        return batch[0], batch[1], batch[2]
    return batch[0], batch[1], None


def make_optimizer(o: Any, params) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum, as the thesis trains its networks, or Adam with betas
    (SPADE-SR, "Low-Resolution Thermal Sensor-Guided Image Synthesis" sec. 4) from an
    :class:`~spdnn.train.recipe.OptimSpec`."""
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum,
                               nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay)
    return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
