"""Train stage: recipes, the task interface and the shared trainer.

Public surface: :class:`Recipe`, :func:`load_recipe`, :class:`Task` (and
:class:`SupervisedTask`, :class:`ImageToMapTask`), :class:`Trainer`, :func:`train`. Tasks are
registered in :mod:`spdnn.tasks` (:func:`spdnn.tasks.build_task` builds a recipe's task).
"""

from spdnn.train.recipe import Recipe, load_recipe
from spdnn.train.task import ImageToMapTask, SupervisedTask, Task
from spdnn.train.trainer import Trainer, TrainingInterrupted


def train(recipe: Recipe, **kwargs) -> dict[str, float]:
    """Train a recipe to the end; returns the final validation metrics (see :class:`Trainer`)."""
    return Trainer.from_recipe(recipe, **kwargs).run()


__all__ = ["ImageToMapTask", "Recipe", "SupervisedTask", "Task", "Trainer", "TrainingInterrupted",
           "load_recipe", "train"]
