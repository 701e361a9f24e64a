"""Train stage: recipes, the task interface and the shared trainer.

Public surface: :class:`Recipe`, :func:`load_recipe`, :class:`Task`, :func:`register_task`,
:class:`Trainer`, :func:`train`.
"""

from spdnn.train.recipe import Recipe, load_recipe
from spdnn.train.task import Task, get_task, register_task
from spdnn.train.trainer import Trainer


def train(recipe: Recipe, **kwargs) -> dict[str, float]:
    """Train a recipe to the end; returns the final validation metrics (see :class:`Trainer`)."""
    return Trainer(recipe, **kwargs).run()


__all__ = ["Recipe", "Task", "Trainer", "get_task", "load_recipe", "register_task", "train"]
