"""Robust classification from degraded sensors: Generative Sensing (Karam et al.: selective
feature regeneration) and Dirty Pixels (Diamond et al.: joint Anscombe + unrolled HQS
denoising / deblurring and classification).

Tasks: ``sensing_classifier`` (:mod:`.common`: pre-training on clean or fine-tuning on
degraded images), ``generative_sensing`` (:mod:`.generative_sensing`), ``dirty_pixels_unit``
and ``dirty_pixels_joint`` (:mod:`.dirty_pixels`). Recipes: ``recipes/sensing/``; the tables:
``benchmarks/bench_sensing_gs.py`` and ``benchmarks/bench_sensing_dp.py``.
"""

from spdnn.tasks.sensing import common as _common  # noqa: F401  (registers the tasks)
from spdnn.tasks.sensing import dirty_pixels as _dp  # noqa: F401
from spdnn.tasks.sensing import generative_sensing as _gs  # noqa: F401
