"""The task interface: a task supplies data, models, losses, metrics and figures; the trainer
supplies the loop (:mod:`spdnn.train.trainer`).

A simple supervised task overrides :meth:`Task.datasets`, :meth:`Task.loss` and
:meth:`Task.new_metrics`. A task with several networks and losses (a GAN: generator and
discriminator, each with its optimizer) overrides :meth:`Task.build_models`,
:meth:`Task.configure_optimizers` and :meth:`Task.training_step`, and uses
:meth:`Trainer.backward_step` for each of its updates -- the trainer itself does not change.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from spdnn.errors import SpecError

if TYPE_CHECKING:
    from spdnn.train.recipe import Recipe
    from spdnn.train.trainer import Trainer

TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available to recipes as ``task: <cls.name>``."""
    TASKS[cls.name] = cls
    return cls


def get_task(name: str) -> type[Task]:
    """The task class registered under ``name``.

    Raises:
        SpecError: no such task.
    """
    import spdnn.tasks  # noqa: F401  (registers the built-in tasks)

    if name not in TASKS:
        raise SpecError(f"unknown task '{name}'", field="task",
                        hint=f"known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


class Metrics:
    """Accumulates a metric over batches; ``compute()`` returns ``{name: float}``."""

    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        raise NotImplementedError  # abstract

    def compute(self) -> dict[str, float]:
        raise NotImplementedError  # abstract


class Task:
    """Base class of training tasks (see module docstring)."""

    name: ClassVar[str] = "task"
    default_best_metric: ClassVar[str] = "val_loss"
    default_best_mode: ClassVar[str] = "min"

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    # -- data ---------------------------------------------------------------------------------
    def datasets(self) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        """``(train, validation)`` datasets yielding ``(input, target)`` or
        ``(input, target, mask)`` tuples of tensors."""
        raise NotImplementedError  # abstract

    # -- models and optimizers -------------------------------------------------------------
    def build_models(self, net: nn.Module) -> dict[str, nn.Module]:
        """The models to train; the default is the recipe's network alone, as ``"net"``."""
        return {"net": net}

    def configure_optimizers(self, models: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
        """One optimizer per model, from the recipe's ``optim`` section."""
        return {k: make_optimizer(self.recipe, m.parameters()) for k, m in models.items()}

    # -- one step -------------------------------------------------------------------------------
    def loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError  # abstract

    def training_step(self, trainer: Trainer, batch: tuple) -> dict[str, float]:
        """One optimisation step; returns the logged losses. Default: supervised learning."""
        x, y, mask = unpack(batch)
        with trainer.autocast():
            pred = trainer.train_models["net"](x)  # DDP-wrapped when distributed
            loss = self.loss(pred.float(), y, mask)
        trainer.backward_step(loss, "net")
        return {"loss": float(loss.detach())}

    @torch.no_grad()
    def predict(self, models: dict[str, nn.Module], x: torch.Tensor) -> torch.Tensor:
        return models["net"](x)

    # -- evaluation -------------------------------------------------------------------------------
    def new_metrics(self) -> Metrics | None:
        return None

    def figures(self, models: dict[str, nn.Module], batch: tuple, outdir: Path) -> list[Path]:
        """Save sample predictions (e.g. an image grid); returns the files written."""
        return []


def unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if len(batch) == 3:
        return batch[0], batch[1], batch[2]
    return batch[0], batch[1], None


def make_optimizer(recipe: Recipe, params) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum, as the thesis) or Adam (betas, as seed 001) from the recipe."""
    o = recipe.optim
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum,
                               nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay)
    return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
