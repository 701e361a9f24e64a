"""Train stage: recipes, the task interface and the shared trainer.

Public surface: :class:`Recipe`, :func:`load_recipe`, :class:`Task` (and
:class:`SupervisedTask`, :class:`ImageToMapTask`), :class:`Trainer`. Tasks are registered in
:mod:`spdnn.tasks` (:func:`spdnn.tasks.build_task` builds a recipe's task); :mod:`spdnn.runs`
joins the two (``trainer_for(recipe)``, ``trainer_from_checkpoint(run)``, ``train(recipe)``).
"""

from spdnn.train.recipe import Recipe, load_recipe
from spdnn.train.task import ImageToMapTask, SupervisedTask, Task
from spdnn.train.trainer import Trainer, TrainingInterrupted

__all__ = ["ImageToMapTask", "Recipe", "SupervisedTask", "Task", "Trainer", "TrainingInterrupted",
           "load_recipe"]
