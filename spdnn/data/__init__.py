"""Datasets of the thesis' experiments, all usable offline.

* :mod:`spdnn.data.iris` - iris segmentation (App. A/D): a synthetic NIR eye generator with exact
  masks, the App. D 2.3 degradation pipeline, and a loader for a real ``images/`` + ``masks/``
  folder. Items are ``(image, mask)``, ``(1, 96, 128)`` float32 each.
* :mod:`spdnn.data.depth` - monocular depth (App. B): the Middlebury motorcycle bundled with
  scikit-image, a synthetic ray-cast scene, and a KITTI 2015 layout loader. Items are
  ``(image, target, mask)``, ``(1, 80, 264)`` float32 each; never train on ``mask == 0``.
* :mod:`spdnn.data.cache` - every dataset above computes an item once and keeps it in a
  shared-memory cache that DataLoader workers fill too (constructor argument ``cache``: default
  None = on while the cache takes at most 1 GiB; ``True``/``False`` force it). Items are
  bit-identical with and without the cache; ``dataset.prefill(num_workers)`` fills it up front.
"""

from spdnn.data.cache import CACHE_LIMIT_BYTES, ItemCache
from spdnn.data.depth import (
    DEPTH_HEIGHT,
    DEPTH_WIDTH,
    KittiDepthDataset,
    MotorcycleDepthDataset,
    SyntheticDepthDataset,
    load_motorcycle,
    render_depth_scene,
    resize_with_mask,
)
from spdnn.data.iris import (
    IRIS_HEIGHT,
    IRIS_WIDTH,
    ColumnShadow,
    Compose,
    ContrastMapping,
    EyeSample,
    IrisFolderDataset,
    MotionBlur,
    Resize,
    SyntheticIrisDataset,
    contrast_lut_inside,
    contrast_lut_outside,
    degradation_pipeline,
    motion_blur_kernel,
    render_eye,
    shadow_gains,
)

__all__ = [
    "CACHE_LIMIT_BYTES",
    "DEPTH_HEIGHT",
    "DEPTH_WIDTH",
    "IRIS_HEIGHT",
    "IRIS_WIDTH",
    "ColumnShadow",
    "Compose",
    "ContrastMapping",
    "EyeSample",
    "IrisFolderDataset",
    "ItemCache",
    "KittiDepthDataset",
    "MotionBlur",
    "MotorcycleDepthDataset",
    "Resize",
    "SyntheticDepthDataset",
    "SyntheticIrisDataset",
    "contrast_lut_inside",
    "contrast_lut_outside",
    "degradation_pipeline",
    "load_motorcycle",
    "motion_blur_kernel",
    "render_depth_scene",
    "render_eye",
    "resize_with_mask",
    "shadow_gains",
]
