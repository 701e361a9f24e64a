"""Training tasks of the papers, one module per task family (registered on import).

* ``iris`` -- iris segmentation (thesis App. A and App. D): BCE loss, segmentation metrics at
  threshold 0.45.
* ``depth`` -- monocular depth (thesis App. B): MSE loss on valid pixels, PSNR/SSIM/... and
  KITTI-style metrics.
"""

from spdnn.tasks import depth as _depth  # noqa: F401
from spdnn.tasks import iris as _iris  # noqa: F401
