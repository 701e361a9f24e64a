"""The GAN family of the thesis (sec. 3.3; App. F-I) on the shared trainer, one module per
method, all built on :class:`spdnn.tasks.gan.base.GANTask`:

* ``dcgan`` -- DCGAN with the BCE GAN loss (App. H Tables 1-2, 4-5).
* ``began`` -- BEGAN: auto-encoder discriminator, k_t control, M_global (eqs. 3.1-3.2).
* ``cgan`` / ``cbegan`` -- conditional GAN (Mirza & Osindero): the label in ``z`` and in the
  discriminator (DCGAN), or in ``z`` only (the CBEGAN of App. G eq. 13).
* ``acgan`` -- ACGAN (Odena et al.): a discriminator with source and class heads (App. H).
* ``vacgan`` / ``vacbegan`` -- VAC+GAN: a classifier in parallel with the discriminator of
  DCGAN or BEGAN (App. G eq. 15, App. H eq. 14).
* ``vargan`` / ``vardcgan`` -- VAR+GAN: a regressor in parallel with the discriminator of
  BEGAN or DCGAN, conditioned on continuous image attributes (App. I eqs. 1, 15).
* ``cbigan`` -- cBiGAN, VAR+GAN's baseline: an attribute encoder and a discriminator on
  (attribute, image) pairs (App. I eqs. 17-18).
* ``spade_sr`` -- SPADE-SR and SPADE, thermal heatmap-guided synthesis (Chiu et al., seed 001
  sec. 3.4); ``spade_sr_inversion`` -- its inversion encoder (eqs. 5-6).
"""

from __future__ import annotations

from spdnn.tasks.gan import acgan as _acgan  # noqa: F401
from spdnn.tasks.gan import began as _began  # noqa: F401  (registers the task)
from spdnn.tasks.gan import cbigan as _cbigan  # noqa: F401
from spdnn.tasks.gan import cgan as _cgan  # noqa: F401
from spdnn.tasks.gan import dcgan as _dcgan  # noqa: F401
from spdnn.tasks.gan import spade_sr as _spade_sr  # noqa: F401
from spdnn.tasks.gan import spade_sr_inversion as _spade_sr_inversion  # noqa: F401
from spdnn.tasks.gan import vac as _vac  # noqa: F401
from spdnn.tasks.gan import var as _var  # noqa: F401
from spdnn.tasks.gan.base import GANOptions, GANTask

__all__ = ["GANOptions", "GANTask"]
