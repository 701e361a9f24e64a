"""Sensor degradations, seedable and batched: Gaussian blur levels (Generative Sensing) and the
Poisson-Gaussian image formation with a PSF and clipping (Dirty Pixels).

* :func:`gaussian_blur` -- Karam et al., "Generative Sensing", sec. 4: "blurring the original
  images by a Gaussian kernel, where the size of the blur kernel is set to 4 times the blur
  standard deviation sigma_b", sigma_b in {0, 1, .., 6} (:data:`BLUR_LEVELS`; 0 is the original
  sensor). The kernel is odd-sized around the centre pixel: ``4 sigma_b + 1`` taps
  (:func:`spdnn.ops.imaging.gaussian_size`, the rule the ``FixedConv2d`` op uses too). The
  blur itself is kornia's ``gaussian_blur2d`` with reflect borders (tested against
  ``skimage.filters.gaussian(..., mode="mirror", truncate=2)``).
* :func:`poisson_gaussian` -- Diamond et al., "Dirty Pixels", sec. 3.1 eq. 1:
  ``y = clip_[0,1](a * Poisson((k * x) / a) + N(0, b^2))`` with the lens PSF ``k`` (a
  normalized Gaussian stand-in here, circular borders so that the HQS inverse filter is its
  exact adjoint) and the noise parameters ``(a, b)`` of a light level (:data:`NOISE_LEVELS`).
* The generalized Anscombe transform and its exact unbiased inverse are the ops
  ``Anscombe`` / ``InverseAnscombe`` (:mod:`spdnn.ops.imaging`, runtime modules in
  :mod:`spdnn.codegen.runtime`); :func:`anscombe_pair` gives the two for a noise level.

Every function takes images ``(N, C, H, W)`` float in [0, 1] and an optional
``torch.Generator``: the same generator state gives the same degraded batch.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from spdnn.errors import SpdnnError, validated
from spdnn.ops.imaging import gaussian_size

BLUR_LEVELS = tuple(range(7))
"""Generative Sensing's blur standard deviations sigma_b (sec. 4): 0 (original) .. 6."""


class NoiseLevel(BaseModel):
    """Poisson-Gaussian noise of one light level (Dirty Pixels sec. 3.1): ``a`` > 0 the gain
    (the image value of one photo-electron), ``b`` >= 0 the read-noise standard deviation, both
    in units of the [0, 1] image range; ``psf_sigma`` >= 0 the Gaussian PSF standard deviation
    in pixels (0: no blur) on a ``psf_size`` x ``psf_size`` grid (odd)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    a: float = Field(gt=0.0)
    b: float = Field(ge=0.0)
    psf_sigma: float = Field(default=0.0, ge=0.0)
    psf_size: int = Field(default=5, ge=1, le=63)


def light_level(lux: float) -> tuple[float, float]:
    """``(a, b)`` of the Dirty Pixels public code's Nexus 6P rear-camera curve
    (``preprocessing/sensor_model.py``, ``get_coeffs``): light level ``l = lux / 2000``,
    ``a = 1.8724e-4 / l``, ``b = 4.733e-4 / l`` (image range [0, 1]). 3 lux gives
    (0.12483, 0.31553), the values of ``netspecs/dirty_pixels/denoise.yaml``."""
    level = lux / 2000.0
    return round(1.8724e-4 / level, 5), round(4.733e-4 / level, 5)


NOISE_LEVELS: dict[str, NoiseLevel] = {
    "3lux": NoiseLevel(a=light_level(3)[0], b=light_level(3)[1]),
    "6lux": NoiseLevel(a=light_level(6)[0], b=light_level(6)[1]),
    "6lux_psf": NoiseLevel(a=light_level(6)[0], b=light_level(6)[1], psf_sigma=1.0, psf_size=5),
}
"""The Table 2 conditions of Dirty Pixels in kind: "3 lux", "6 lux" (noise only) and "6 lux"
with a PSF (the paper's calibrated off-axis Nexus 5 PSF is not in the text: a Gaussian of
sigma 1 px on 5 x 5, as in ``netspecs/dirty_pixels/deblur_denoise.yaml``, stands in)."""


def noise_level(value: Any, field: str = "options.noise") -> NoiseLevel:
    """A :class:`NoiseLevel` from a name of :data:`NOISE_LEVELS` or a mapping ``{a, b[,
    psf_sigma, psf_size]}``.

    Raises:
        SpdnnError: an unknown name, ``a <= 0``, ``b < 0`` or another bad field (at ``field``).
    """
    if isinstance(value, NoiseLevel):
        return value
    if isinstance(value, str):
        if value not in NOISE_LEVELS:
            raise SpdnnError(f"unknown noise level '{value}'", field=field,
                             hint=f"use one of {', '.join(NOISE_LEVELS)} or {{a: .., b: ..}}")
        return NOISE_LEVELS[value]
    return validated(NoiseLevel, value, field,
                     hint="a noise level is {a: gain > 0, b: read noise >= 0}")


def blur_kernel_size(sigma_b: int) -> int:
    """Taps of the blur kernel of level ``sigma_b``: ``4 sigma_b + 1`` (1 for sigma_b = 0).

    Raises:
        SpdnnError: ``sigma_b`` not an integer in 0..6.
    """
    check_blur_level(sigma_b)
    return gaussian_size(float(sigma_b))


def check_blur_level(sigma_b: Any, field: str = "sigma_b") -> int:
    """``sigma_b`` as an int if it is one of :data:`BLUR_LEVELS`.

    Raises:
        SpdnnError: anything else (at ``field``).
    """
    if isinstance(sigma_b, bool) or not isinstance(sigma_b, int) or sigma_b not in BLUR_LEVELS:
        raise SpdnnError(f"blur level {sigma_b!r} is not one of Generative Sensing's levels "
                         f"0..6", field=field, hint="sigma_b is an integer from 0 to 6")
    return int(sigma_b)


def gaussian_blur(images: torch.Tensor, sigma_b: int) -> torch.Tensor:
    """Images ``(N, C, H, W)`` blurred at Generative Sensing level ``sigma_b`` (0..6): a
    normalized ``(4 sigma_b + 1)``-tap Gaussian of standard deviation ``sigma_b`` pixels,
    reflect borders (kornia ``gaussian_blur2d``); level 0 returns the images unchanged.

    Raises:
        SpdnnError: a level outside 0..6, or a kernel radius ``2 sigma_b`` that does not fit
            the image (reflect borders need a radius smaller than H and W).
    """
    k = blur_kernel_size(sigma_b)
    if sigma_b == 0:
        return images
    h, w = images.shape[-2:]
    if k // 2 >= min(h, w):
        raise SpdnnError(f"a blur kernel of {k}x{k} (sigma_b = {sigma_b}) does not fit a "
                         f"{h}x{w} image", field="sigma_b",
                         hint=f"use sigma_b < {(min(h, w) - 1) // 2 + 1} or larger images")
    from kornia.filters import gaussian_blur2d

    s = float(sigma_b)
    return gaussian_blur2d(images, (k, k), (s, s), border_type="reflect")


def blur_mixed(images: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Each image ``images[i]`` blurred at its own level ``levels[i]`` (``(N,)`` int64 in 0..6).

    Raises:
        SpdnnError: as :func:`gaussian_blur`.
    """
    out = images.clone()
    for lev in levels.unique().tolist():
        sel = levels == lev
        out[sel] = gaussian_blur(images[sel], int(lev))
    return out


def random_levels(n: int, generator: torch.Generator | None = None,
                  levels: tuple[int, ...] = BLUR_LEVELS) -> torch.Tensor:
    """``(n,)`` int64 blur levels drawn uniformly from ``levels`` (seedable)."""
    pick = torch.randint(len(levels), (n,), generator=generator)
    return torch.tensor(levels, dtype=torch.long)[pick]


def psf_blur(images: torch.Tensor, sigma: float, size: int) -> torch.Tensor:
    """``k * x`` with a normalized Gaussian PSF (``sigma`` px, odd ``size``), circular borders
    (the periodic convolution the ``InverseFilter`` op inverts); ``sigma = 0``: unchanged.

    Raises:
        SpdnnError: an even ``size`` or one larger than the image.
    """
    if sigma == 0:
        return images
    if size % 2 == 0 or size // 2 > min(images.shape[-2:]):
        raise SpdnnError(f"PSF size {size} must be odd and fit a {tuple(images.shape[-2:])} "
                         f"image", field="psf_size")
    from spdnn.codegen.runtime import FixedConv2d

    op = FixedConv2d(images.shape[1], sigma=float(sigma), size=int(size), padding="circular")
    return op.to(images.device)(images)


def poisson_gaussian(images: torch.Tensor, level: NoiseLevel | str | dict,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Dirty Pixels' image formation (sec. 3.1): ``y = clip_[0,1](a P((k * x) / a) + N(0,
    b^2))``, ``P`` Poisson, ``k`` the level's PSF (none when ``psf_sigma = 0``).

    Args:
        images: the scene ``x``, ``(N, C, H, W)`` float in [0, 1].
        level: a :class:`NoiseLevel`, a name of :data:`NOISE_LEVELS` or ``{a, b, ..}``.
        generator: seeds the Poisson and Gaussian draws (CPU generator; the draws are made
            on the CPU and moved to the images' device).

    Returns:
        ``(N, C, H, W)`` float32 in [0, 1].

    Raises:
        SpdnnError: an unknown or invalid level (``a <= 0``, ``b < 0``).
    """
    lev = noise_level(level, field="noise")
    x = psf_blur(images.float(), lev.psf_sigma, lev.psf_size).clamp(0.0, 1.0)
    rate = (x / lev.a).cpu()
    counts = torch.poisson(rate, generator=generator)
    read = torch.randn(rate.shape, generator=generator) * lev.b
    y = (lev.a * counts + read).clamp_(0.0, 1.0)
    return y.to(images.device)


def anscombe_pair(level: NoiseLevel | str | dict):
    """``(Anscombe, InverseAnscombe)`` runtime modules (exact unbiased inverse) for a noise
    level's ``(a, b)`` (Makitalo & Foi 2013; Dirty Pixels sec. 5.4)."""
    from spdnn.codegen.runtime import Anscombe, InverseAnscombe

    lev = noise_level(level, field="noise")
    return Anscombe(gain=lev.a, sigma=lev.b), InverseAnscombe(gain=lev.a, sigma=lev.b)


__all__ = ["BLUR_LEVELS", "NOISE_LEVELS", "NoiseLevel", "anscombe_pair", "blur_kernel_size",
           "blur_mixed", "check_blur_level", "gaussian_blur", "light_level", "noise_level",
           "poisson_gaussian", "psf_blur", "random_levels"]
