"""Training tasks of the papers, one module per task family, and :func:`build_task`.

* ``iris`` -- iris segmentation (thesis App. A and App. D): BCE loss, segmentation metrics at
  threshold 0.45.
* ``depth`` -- monocular depth (thesis App. B): MSE loss on valid pixels, PSNR/SSIM/... and
  KITTI-style metrics.
* ``dcgan`` and the GAN family (:mod:`spdnn.tasks.gan`) -- generators trained adversarially (thesis sec. 3.3), on
  scikit-learn's real 8x8 digits by default: the two-network form of the trainer.
* ``classifier`` -- a generic image classifier (thesis App. C), optional traditional
  augmentation; ``smart_augmentation`` -- network A blending k same-class images, trained with
  classifier B (thesis App. E).

A new task is one file here (see :mod:`spdnn.train.task` for the hooks), imported below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spdnn.errors import SpecError
from spdnn.tasks import aspect as _aspect  # noqa: F401  (began_iris, aspect)
from spdnn.tasks import classifier as _classifier  # noqa: F401  (registers the task)
from spdnn.tasks import depth as _depth  # noqa: F401  (registers the task)
from spdnn.tasks import gan as _gan  # noqa: F401  (registers the GAN tasks)
from spdnn.tasks import iris as _iris  # noqa: F401
from spdnn.tasks import sensing as _sensing  # noqa: F401  (Generative Sensing, Dirty Pixels)
from spdnn.tasks import smart_augmentation as _smart_augmentation  # noqa: F401
from spdnn.tasks import thermalnet as _thermalnet  # noqa: F401  (Kniaz et al.)
from spdnn.tasks.registry import TASKS, get_task, register_task, unregister_task

if TYPE_CHECKING:
    from spdnn.spec import Netspec
    from spdnn.train.recipe import Recipe
    from spdnn.train.task import Task


def build_task(recipe: Recipe, netspecs: dict[str, Netspec] | None = None) -> Task:
    """The recipe's task with its networks: ``netspecs`` when given (e.g. from a checkpoint),
    else loaded and merged from the recipe's ``models`` (:func:`spdnn.train.recipe.netspecs_of`).

    Raises:
        SpdnnError: unknown task, missing or invalid netspecs, merge errors, model names the
            task does not train.
    """
    from spdnn.train.recipe import netspecs_of

    try:
        cls = get_task(recipe.task)
    except SpecError as exc:  # named where the recipe wrote it (load_recipe records it)
        raise exc.located(*recipe.task_origin) from None
    return cls(recipe, netspecs if netspecs is not None else netspecs_of(recipe))


__all__ = ["TASKS", "build_task", "get_task", "register_task", "unregister_task"]
