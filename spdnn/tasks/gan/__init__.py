"""The GAN family of the thesis (sec. 3.3; App. F-I) on the shared trainer, one module per
method, all built on :class:`spdnn.tasks.gan.base.GANTask`:

* ``dcgan`` -- DCGAN with the BCE GAN loss (App. H Tables 1-2, 4-5).
* ``began`` -- BEGAN: auto-encoder discriminator, k_t control, M_global (eqs. 3.1-3.2).
"""

from __future__ import annotations

from spdnn.tasks.gan import began as _began  # noqa: F401  (registers the task)
from spdnn.tasks.gan import dcgan as _dcgan  # noqa: F401
from spdnn.tasks.gan.base import GANOptions, GANTask

__all__ = ["GANOptions", "GANTask"]
