"""Pieces shared by the sensing tasks: a previous run's weights, degradation of a batch from the
task's options, seeded per step, and a plain image classifier task (``sensing_classifier``) that
pre-trains on clean images or fine-tunes on degraded ones.

A step that needs an earlier step's network names that run in an option (``pretrained: runs/x``,
a run folder or a ``.pt`` file; its ``best.pt`` first); the weights are read with
:func:`spdnn.io.load_checkpoint` (``weights_only=True``) and must fit the recipe's netspec.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from spdnn.data.degrade import BLUR_LEVELS, NoiseLevel, blur_mixed, poisson_gaussian, random_levels
from spdnn.data.images import image_datasets
from spdnn.errors import SpdnnError
from spdnn.tasks.common import validate_options
from spdnn.tasks.registry import register_task
from spdnn.train.task import Task


class Degradation(BaseModel):
    """How a task degrades its images: ``blur: mixed`` (each image at a Generative Sensing
    level drawn uniformly from ``levels``, sec. 4) and/or ``noise`` (a Dirty Pixels light level:
    a name of :data:`spdnn.data.degrade.NOISE_LEVELS` or ``{a, b, psf_sigma, psf_size}``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    blur: Literal["none", "mixed"] = "none"
    levels: tuple[int, ...] = BLUR_LEVELS
    noise: str | dict[str, Any] | None = None

    def level(self) -> NoiseLevel | None:
        from spdnn.data.degrade import noise_level

        return None if self.noise is None else noise_level(self.noise, field="options.noise")

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batch ``(N, C, H, W)`` in [0, 1] degraded (same shape), seeded by ``generator``."""
        if self.blur == "mixed":
            x = blur_mixed(x, random_levels(len(x), generator, self.levels).to(x.device))
        lev = self.level()
        if lev is not None:
            x = poisson_gaussian(x, lev, generator)
        return x


def step_generator(seed: int, step: int, salt: int = 0) -> torch.Generator:
    """A CPU generator for the degradation of training step ``step`` (exact resume: the same
    step draws the same degradation)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + salt) % 2**63)


def load_weights(path: str, module: torch.nn.Module, field: str, model: str = "net",
                 strict: bool = True) -> dict[str, Any]:
    """Load model ``model`` of the run at ``path`` into ``module``; returns the checkpoint.

    Raises:
        CheckpointError: no checkpoint there, or an unsafe / corrupt one.
        SpdnnError: its weights do not fit ``module`` (at ``field``).
    """
    from spdnn.io import load_checkpoint

    st = load_checkpoint(path)
    models = st.get("models", {})
    if model not in models:
        raise SpdnnError(f"the run {path} has no model '{model}' (it has "
                         f"{', '.join(models) or 'none'})", field=field)
    try:
        module.load_state_dict(models[model], strict=strict)
    except RuntimeError as exc:
        raise SpdnnError(f"the weights of {path} do not fit this network "
                         f"({' '.join(str(exc).split())[:160]})", field=field,
                         hint="name a run of the same netspec") from None
    return st


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``(N, K)`` logits against ``(N,)`` labels, in [0, 1]."""
    return float((logits.argmax(1) == labels).float().mean())


class ClassifierOptions(Degradation):
    """``options`` of ``sensing_classifier``: a :class:`Degradation` of the training (and
    validation) images, and ``pretrained`` (a run to start from, e.g. fine-tuning on degraded
    images, Dirty Pixels Table 2 "Fine-tuned")."""

    pretrained: str | None = None
    eval_clean: bool = Field(default=True)


@register_task
class SensingClassifier(Task):
    """An image classifier trained with cross-entropy on ``(image, label)`` data from
    :func:`spdnn.data.images.image_datasets` (brought to the netspec's input), optionally on
    degraded images (:class:`Degradation`, drawn anew every step, seeded by step).

    Validation: ``val_loss`` and ``val_acc`` on the degraded validation images (a fixed seed
    per pass), and ``val_acc_clean`` on the clean ones. Serves Generative Sensing (the
    pretrained baseline phi on the clean source set, sec. 4) and Dirty Pixels (Table 2:
    "Pretrained" on clean images, "Fine-tuned" on images passed through the image formation).
    """

    name = "sensing_classifier"
    default_best_metric = "val_acc"
    default_best_mode = "max"
    summary_metrics = ("val_acc", "val_acc_clean", "val_loss")

    def __init__(self, recipe, netspecs) -> None:
        super().__init__(recipe, netspecs)
        self.opts: ClassifierOptions = validate_options(ClassifierOptions, recipe.options)
        self.opts.level()  # a bad noise level fails before training
        self._val = torch.Generator()

    def datasets(self):
        return image_datasets(self.recipe.data, self.netspecs["net"].inputs[0].shape)

    def build_models(self, nets):
        if self.opts.pretrained:
            load_weights(self.opts.pretrained, nets["net"], "options.pretrained")
        return nets

    def training_step(self, trainer, batch):
        x, y = batch[0], batch[1]
        x = self.opts.apply(x, step_generator(self.recipe.seed, trainer.step))
        with trainer.autocast():
            logits = trainer.train_models["net"](x)
        loss = F.cross_entropy(logits.float(), y)
        trainer.backward_step(loss, "net")
        return {"loss": float(loss.detach())}

    def new_metrics(self):
        self._val = torch.Generator().manual_seed(self.recipe.data.seed + 1)
        return None

    def validation_step(self, models, batch, metrics):
        x, y = batch[0], batch[1]
        net = models["net"]
        logits = net(self.opts.apply(x, self._val)).float()
        out = {"loss": float(F.cross_entropy(logits, y)), "acc": accuracy(logits, y)}
        if self.opts.eval_clean:
            out["acc_clean"] = accuracy(net(x).float(), y)
        return out

