"""Iris segmentation data: a synthetic NIR eye generator, the App. D 2.3 degradations, datasets.

No real iris database can ship with the package (Bath800, CASIA-Iris-Thousand, UBIRIS, MobBio are
all licensed), so the embedded default is a **synthetic near-infrared-like eye** with an exact
ground-truth mask (:func:`render_eye`), degraded by the augmentation pipeline of the thesis
(App. D sec. 2.3, and the authors' ``DBaug.m``): resize to 128x96 -> contrast mapping inside and
outside the iris (eqs. 1-2) -> column shadow (eq. 3) -> motion blur (sec. 2.3.4), in that order
(:func:`degradation_pipeline`). A real database in the usual images/masks folder layout loads with
:class:`IrisFolderDataset`.

Conventions: images are ``(H, W)`` float64 in [0, 1] inside the numpy pipeline, ``(1, H, W)``
float32 tensors out of the datasets; H x W = 96 x 128 (the paper's "128 x 96" is W x H). Masks
are float 0/1. Every random draw comes from a ``numpy.random.Generator`` passed in, so every sample
is reproducible.

Caching (default on): an item depends only on ``(seed, i)``, so both datasets compute it once and
keep it in a shared-memory :class:`~spdnn.data.cache.ItemCache` (``cache=None``: on while the
cache takes at most 1 GiB, i.e. up to 10,922 items of 96 x 128; ``cache=True/False`` forces it).
The first epoch renders (~10 ms an eye on one core), later epochs and re-evaluations read the
cache. The cache works with DataLoader workers under ``fork`` and ``spawn``: items a worker
computes land in the same shared cache. Returned items are bit-identical with and without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from spdnn.data.cache import CachedItems, make_cache
from spdnn.errors import SpdnnError

__all__ = [
    "IRIS_HEIGHT",
    "IRIS_WIDTH",
    "IMAGE_EXTENSIONS",
    "EyeSample",
    "render_eye",
    "Transform",
    "Compose",
    "Resize",
    "ContrastMapping",
    "ColumnShadow",
    "MotionBlur",
    "contrast_lut_outside",
    "contrast_lut_inside",
    "shadow_gains",
    "motion_blur_kernel",
    "degradation_pipeline",
    "SyntheticIrisDataset",
    "IrisFolderDataset",
]

IRIS_HEIGHT = 96
IRIS_WIDTH = 128
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class EyeSample:
    """One eye image with its ground truth.

    Attributes:
        image: ``(H, W)`` float64 grayscale in [0, 1].
        mask: ``(H, W)`` float64 0/1, the **iris** mask (segmentation target): iris annulus minus
            pupil minus what the eyelids cover.
        region: ``(H, W)`` float64 0/1, the **whole-iris** region (iris disc *including* the
            pupil, minus eyelid occlusion). ``DBaug.m`` splits the contrast mapping by this mask
            (``MaskWholeTensor``), not by the iris-only mask.
        params: the geometry drawn by :func:`render_eye` (centres, radii, lids), for tests/debug.
    """

    image: np.ndarray
    mask: np.ndarray
    region: np.ndarray
    params: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Synthetic eye
# --------------------------------------------------------------------------------------------


def _coverage(signed_dist: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels (negative inside), 1 px ramp."""
    return np.clip(0.5 - signed_dist, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise normalised to zero mean, unit max-abs."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    n -= n.mean()
    return n / (np.abs(n).max() + 1e-12)


def _splat(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, w: np.ndarray | float) -> None:
    """Bilinear splat of points (ys, xs) with weights w into ``img`` (in place; outside ignored)."""
    h, wd = img.shape
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), ys.shape)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    fy = ys - y0
    fx = xs - x0
    for dy, dx, ww in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yy = y0 + dy
        xx = x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < wd)
        np.add.at(img, (yy[ok], xx[ok]), (w * ww)[ok])


def render_eye(
    rng: np.random.Generator, height: int = IRIS_HEIGHT, width: int = IRIS_WIDTH
) -> EyeSample:
    """Render a synthetic near-infrared eye image and its exact iris mask.

    The model (pixel centres at integer coordinates, x to the right, y down; lengths scale with
    ``height / 96``):

    * **eye opening** between two smooth eyelid curves, parabolas in x with a common tilt (head
      roll): ``y_up(x) = oy - hu (1 - u²) + t (x - ox)``, ``y_lo(x) = oy + hl (1 - u²) + t (x - ox)``,
      ``u = (x - ox) / a``; the opening is where ``y_up(x) < y < y_lo(x)``. The upper lid often
      covers the top of the iris, the lower lid sometimes its bottom;
    * **skin** outside the opening (low-frequency shading, fine texture, an eyelid crease), a
      brighter **sclera** inside it, darker towards the corners and under the upper lid;
    * **iris** disc of radius R (18-28 px at 96 x 128) at a gaze-dependent offset from the
      opening's centre, with a radial stripe texture (random angular frequencies), a collarette
      ring and a dark limbus; a dark **pupil** disc (0.28-0.55 R), slightly off the iris centre;
    * **eyelashes**: thin dark curved strokes rooted on the upper lid (pointing up and out, a few
      drooping a few pixels into the opening) and a few short ones on the lower lid;
    * **specular reflections**: 1-3 bright soft spots from the illuminator, near the pupil;
    * optics blur (Gaussian, σ 0.4-0.9 px) and sensor noise (σ 0.005-0.02), clipped to [0, 1].

    Ground truth, exact with respect to this geometry (a pixel centre test, no interpolation):
    ``mask = (|p - c_iris| < R) & (|p - c_pupil| >= r_pupil) & opening`` and
    ``region = (|p - c_iris| < R) & opening``. Eyelashes and specular reflections are thin or
    small overlays and, as in manual ground truths (e.g. IRISSEG), they do not cut the mask.

    Args:
        rng: the source of every random draw.
        height, width: output size (default 96 x 128).

    Returns:
        an :class:`EyeSample`.
    """
    s = height / IRIS_HEIGHT
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)

    # ---- geometry -------------------------------------------------------------------------
    R = rng.uniform(18.0, 28.0) * s
    ox = width / 2 + rng.uniform(-10.0, 10.0) * s
    oy = height / 2 + rng.uniform(-6.0, 6.0) * s
    a = R * rng.uniform(2.0, 2.6)
    hu = R * rng.uniform(0.55, 1.15)
    hl = R * rng.uniform(0.6, 1.1)
    tilt = rng.uniform(-0.08, 0.08)
    cx = ox + rng.uniform(-0.6, 0.6) * R
    cy = oy + rng.uniform(-0.25, 0.25) * R
    rp = R * rng.uniform(0.28, 0.55)
    off_max = min(0.08 * R, 0.9 * R - rp)
    off_r = rng.uniform(0.0, off_max)
    off_t = rng.uniform(-math.pi, math.pi)
    px = cx + off_r * math.cos(off_t)
    py = cy + off_r * math.sin(off_t)

    u = (xx - ox) / a
    bowl = np.clip(1.0 - u**2, 0.0, None)
    y_up = oy - hu * bowl + tilt * (xx - ox)
    y_lo = oy + hl * bowl + tilt * (xx - ox)
    opening = (yy > y_up) & (yy < y_lo)
    d_iris = np.hypot(xx - cx, yy - cy)
    d_pupil = np.hypot(xx - px, yy - py)
    in_iris = d_iris < R
    in_pupil = d_pupil < rp
    mask = (in_iris & ~in_pupil & opening).astype(np.float64)
    region = (in_iris & opening).astype(np.float64)

    # anti-aliased coverages for the picture (vertical distance is a fine proxy near the lids)
    cov_open = np.minimum(_coverage(y_up - yy), _coverage(yy - y_lo)) * (np.abs(u) < 1)
    cov_iris = _coverage(d_iris - R)
    cov_pupil = _coverage(d_pupil - rp)

    # ---- skin -----------------------------------------------------------------------------
    skin = rng.uniform(0.35, 0.65)
    img_skin = (
        skin
        + 0.08 * _smooth_noise(rng, (height, width), 14.0 * s)
        + 0.025 * _smooth_noise(rng, (height, width), 0.8 * s)
    )
    crease_y = oy - hu * bowl * rng.uniform(1.3, 1.7) - R * 0.25 + tilt * (xx - ox)
    img_skin -= 0.10 * np.exp(-(((yy - crease_y) / (2.5 * s)) ** 2)) * (np.abs(u) < 1.1)

    # ---- sclera ---------------------------------------------------------------------------
    sclera = rng.uniform(0.55, 0.85)
    img_sclera = sclera * (1.0 - 0.35 * u**2) + 0.02 * _smooth_noise(rng, (height, width), 2 * s)
    below_lid = np.clip(yy - y_up, 0.0, None)
    img_sclera *= 1.0 - 0.25 * np.exp(-below_lid / (3.0 * s))

    # ---- iris -----------------------------------------------------------------------------
    iris = rng.uniform(0.18, 0.45)
    theta = np.arctan2(yy - cy, xx - cx)
    rn = np.clip((d_iris - rp) / max(R - rp, 1e-6), 0.0, 1.0)
    tex = np.zeros_like(xx)
    for _ in range(int(rng.integers(5, 10))):
        n_ang = rng.integers(12, 60)
        tex += rng.uniform(0.3, 1.0) * np.cos(
            n_ang * theta + rng.uniform(0, 2 * math.pi) + rng.uniform(-3, 3) * rn
        )
    tex /= np.abs(tex).max() + 1e-12
    collarette_r = rng.uniform(0.3, 0.5)
    img_iris = (
        iris * (1.0 + 0.25 * tex * (0.4 + rn))
        + 0.06 * np.exp(-(((rn - collarette_r) / 0.07) ** 2))
        - 0.12 * np.exp(-(((rn - 1.0) / 0.12) ** 2))
        + 0.03 * _smooth_noise(rng, (height, width), 1.0 * s)
    )
    img_iris *= 1.0 - 0.3 * np.exp(-below_lid / (3.0 * s))
    pupil = rng.uniform(0.02, 0.10)

    # ---- compose --------------------------------------------------------------------------
    eye = img_sclera * (1 - cov_iris) + img_iris * cov_iris
    eye = eye * (1 - cov_pupil) + pupil * cov_pupil
    img = img_skin * (1 - cov_open) + eye * cov_open
    # dark lid margins
    img -= 0.12 * np.exp(-(((yy - y_up) / (1.2 * s)) ** 2)) * (np.abs(u) < 1)
    img -= 0.06 * np.exp(-(((yy - y_lo) / (1.2 * s)) ** 2)) * (np.abs(u) < 1)

    # ---- eyelashes ------------------------------------------------------------------------
    lash = np.zeros((height, width))
    n_upper = int(rng.integers(25, 70))
    n_lower = int(rng.integers(0, 15))
    t = np.linspace(0.0, 1.0, 40)
    for k in range(n_upper + n_lower):
        upper = k < n_upper
        ur = rng.uniform(-0.9, 0.9)
        x0 = ox + ur * a
        if upper:
            y0 = oy - hu * (1 - ur**2) + tilt * (x0 - ox)
            droop = rng.random() < 0.3
            direction = 1.0 if droop else -1.0  # +1 points down (into the opening)
            length = (rng.uniform(3.0, 7.0) if droop else rng.uniform(5.0, 14.0)) * s
        else:
            y0 = oy + hl * (1 - ur**2) + tilt * (x0 - ox)
            direction = 1.0
            length = rng.uniform(2.0, 5.0) * s
        ang = rng.uniform(-0.5, 0.5) + 0.8 * ur  # lean outwards at the corners
        dx = math.sin(ang) * length
        dy = direction * math.cos(ang) * length
        bend = rng.uniform(0.1, 0.5) * length * np.sign(ur if ur != 0 else 1.0)
        xs = x0 + dx * t + bend * t**2
        ys = y0 + dy * t
        # unit line density (weight per point = spacing), so a lash is ~1 px wide after the blur
        _splat(lash, ys, xs, rng.uniform(0.5, 1.0) * length / (len(t) - 1))
    lash = np.clip(1.8 * ndimage.gaussian_filter(lash, 0.45 * s), 0.0, 1.0)
    img = img * (1.0 - 0.8 * lash)

    # ---- specular reflections -------------------------------------------------------------
    for _ in range(int(rng.integers(1, 4))):
        sx = px + rng.uniform(-0.6, 0.6) * R
        sy = py + rng.uniform(-0.5, 0.5) * R
        sr = rng.uniform(1.0, 3.0) * s
        spot = np.exp(-((xx - sx) ** 2 + (yy - sy) ** 2) / (2 * sr**2)) * cov_open
        img = img + (1.0 - img) * rng.uniform(0.7, 1.0) * spot

    # ---- optics and sensor ----------------------------------------------------------------
    img = ndimage.gaussian_filter(img, rng.uniform(0.4, 0.9) * s, mode="nearest")
    img = img + rng.normal(0.0, rng.uniform(0.005, 0.02), img.shape)
    img = np.clip(img, 0.0, 1.0)

    params = {
        "iris_center": (cx, cy),
        "iris_radius": R,
        "pupil_center": (px, py),
        "pupil_radius": rp,
        "opening_center": (ox, oy),
        "opening_half_width": a,
        "upper_lid_height": hu,
        "lower_lid_depth": hl,
        "tilt": tilt,
    }
    return EyeSample(image=img, mask=mask, region=region, params=params)


# --------------------------------------------------------------------------------------------
# Degradation pipeline (thesis App. D sec. 2.3, DBaug.m)
# --------------------------------------------------------------------------------------------

Transform = Callable[[EyeSample, np.random.Generator], EyeSample]


def _tanh_map(x: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """``norm(tanh(gain (x + offset)))`` with norm the min-max over x in [0, 1].

    tanh is increasing, so the min and max over the LUT domain [0, 1] sit at x = 0 and x = 1, and
    the result maps [0, 1] onto [0, 1] monotonically (0 -> 0, 1 -> 1).
    """
    lo = math.tanh(gain * offset)
    hi = math.tanh(gain * (1.0 + offset))
    y = (np.tanh(gain * (np.asarray(x, dtype=np.float64) + offset)) - lo) / (hi - lo)
    return np.clip(y, 0.0, 1.0)  # only rounding can step outside


def contrast_lut_outside(x: np.ndarray, u: float) -> np.ndarray:
    """Contrast mapping outside the iris, thesis App. D eq. (1) as coded in ``DBaug.m``.

    ``y = norm(tanh(3 (x - 0.5 + (U - 0.5) 0.6)))``, x in [0, 1], U ~ U[0, 1), so the offset
    lies in [-0.3, 0.3]; ``norm`` min-max normalises over x in [0, 1] (the 256-entry LUT of the
    MATLAB code; here evaluated continuously). Monotone, [0, 1] -> [0, 1]: bright, dark or
    normally exposed low-contrast outputs. The paper prints the offset outside the factor 3
    (``tanh(3 (x/255 - 0.5) + U(-0.3, 0.3))``); the code, followed here, puts it inside.
    """
    return _tanh_map(x, 3.0, -0.5 + (u - 0.5) * 0.6)


def contrast_lut_inside(x: np.ndarray, u: float) -> np.ndarray:
    """Contrast mapping inside the iris, thesis App. D eq. (2) as coded in ``DBaug.m``.

    ``y = norm(tanh(3 (x - 0.5 - 0.8 U)))``, U ~ U[0, 1), offset in [-0.8, 0]: darkens the
    region and lowers its contrast. Monotone, [0, 1] -> [0, 1].
    """
    return _tanh_map(x, 3.0, -0.5 - 0.8 * u)


def shadow_gains(width: int, sign: float, u_offset: float, u_add: float) -> np.ndarray:
    """Per-column shadow gains, thesis App. D eq. (3) as coded in ``DBaug.m``.

    ``g(x2) = norm(tanh(2 sign (x2 - 0.5 + (U1 - 0.5) 0.6))) + 0.1 U2`` for
    ``x2 = linspace(0, 1, width)``, ``norm`` the min-max over the columns, ``sign`` in {-1, +1}
    (``sign(N)``, N standard normal: a shadow on the left or on the right). Returns ``(width,)``
    with values in [0.1 U2, 1 + 0.1 U2].
    """
    x2 = np.linspace(0.0, 1.0, width)
    f = np.tanh(2.0 * (sign * (x2 - 0.5 + (u_offset - 0.5) * 0.6)))
    g = (f - f.min()) / (f.max() - f.min())
    return g + 0.1 * u_add


def motion_blur_kernel(length: float, angle: float) -> np.ndarray:
    """Linear motion blur kernel: a line segment of ``length`` pixels at ``angle`` radians.

    The segment is centred on the kernel's centre pixel, oriented ``angle`` radians
    counter-clockwise from the +x axis (image x to the right, y **up**, as MATLAB's
    ``fspecial('motion', len, theta)``), and rasterised by bilinear splatting of densely spaced
    points, so the kernel is the segment's uniform density integrated with a tent interpolant:
    non-negative, sums to 1, centred (zero first moment), extent ~length along the direction.
    Odd square size ``2 ceil(length / 2) + 3``.
    """
    half = int(math.ceil(length / 2.0)) + 1
    size = 2 * half + 1
    k = np.zeros((size, size))
    n = max(200, int(40 * length))
    s = (np.arange(n) + 0.5) / n * length - length / 2.0
    xs = half + s * math.cos(angle)
    ys = half - s * math.sin(angle)
    _splat(k, ys, xs, 1.0 / n)
    return k / k.sum()


@dataclass
class Compose:
    """Apply transforms in order, each with the same generator (draws happen in sequence)."""

    transforms: Sequence[Transform]

    def __call__(self, sample: EyeSample, rng: np.random.Generator) -> EyeSample:
        for t in self.transforms:
            sample = t(sample, rng)
        return sample


@dataclass
class Resize:
    """Bilinear resize to ``height x width`` (App. D 2.3.1: images go to 128 x 96, W x H).

    The image is resized with bilinear interpolation (and Gaussian anti-aliasing when shrinking);
    the masks are resized the same way and thresholded at 0.5. A no-op at the right size. Draws no
    random numbers.
    """

    height: int = IRIS_HEIGHT
    width: int = IRIS_WIDTH

    def __call__(self, sample: EyeSample, rng: np.random.Generator | None = None) -> EyeSample:
        if sample.image.shape == (self.height, self.width):
            return sample
        return replace(
            sample,
            image=np.clip(_resize(sample.image, self.height, self.width), 0.0, 1.0),
            mask=(_resize(sample.mask, self.height, self.width) > 0.5).astype(np.float64),
            region=(_resize(sample.region, self.height, self.width) > 0.5).astype(np.float64),
        )


@dataclass
class ContrastMapping:
    """Different contrast mappings inside and outside the iris (App. D 2.3.2, eqs. 1-2).

    Draws U1, U2 ~ U[0, 1); pixels of the whole-iris ``region`` (iris + pupil, as ``DBaug.m``'s
    ``MaskWholeTensor``) are mapped by :func:`contrast_lut_inside` with U2 (darker, less
    contrast), the others by :func:`contrast_lut_outside` with U1 (lower contrast, random exposure).
    """

    def __call__(self, sample: EyeSample, rng: np.random.Generator) -> EyeSample:
        u_out = rng.random()
        u_in = rng.random()
        inside = sample.region > 0.5
        img = np.where(
            inside,
            contrast_lut_inside(sample.image, u_in),
            contrast_lut_outside(sample.image, u_out),
        )
        return replace(sample, image=np.clip(img, 0.0, 1.0))


@dataclass
class ColumnShadow:
    """Shadow from one side: every column multiplied by its gain (App. D 2.3.3, eq. 3).

    Draws N ~ N(0, 1) (sign), U1, U2 ~ U[0, 1); gains from :func:`shadow_gains`; the result is
    clipped to [0, 1] (the MATLAB code's saturating uint8 arithmetic).
    """

    def __call__(self, sample: EyeSample, rng: np.random.Generator) -> EyeSample:
        sign = 1.0 if rng.standard_normal() >= 0 else -1.0
        u_offset = rng.random()
        u_add = rng.random()
        g = shadow_gains(sample.image.shape[1], sign, u_offset, u_add)
        return replace(sample, image=np.clip(sample.image * g[None, :], 0.0, 1.0))


@dataclass
class MotionBlur:
    """Linear camera-motion blur (App. D 2.3.4): length U(5, 10) px, direction U(-π, π).

    The direction is drawn **in radians** over the full circle, as the paper states. Note: the
    authors' ``DBaug.m`` passes ``angle = 2π U`` to MATLAB's ``fspecial('motion', len, angle)``,
    which takes **degrees**, so their blur was almost horizontal (0-6.3°);
    ``MotionBlur(angle_range=(0.0, math.radians(2 * math.pi)))`` reproduces that slip.
    Kernel: :func:`motion_blur_kernel`;
    borders replicated (MATLAB ``imfilter(..., 'replicate')``). Masks are not blurred.
    """

    length_range: tuple[float, float] = (5.0, 10.0)
    angle_range: tuple[float, float] = (-math.pi, math.pi)

    def __call__(self, sample: EyeSample, rng: np.random.Generator) -> EyeSample:
        length = rng.uniform(*self.length_range)
        angle = rng.uniform(*self.angle_range)
        k = motion_blur_kernel(length, angle)
        img = ndimage.convolve(sample.image, k, mode="nearest")
        return replace(sample, image=np.clip(img, 0.0, 1.0))


def degradation_pipeline(height: int = IRIS_HEIGHT, width: int = IRIS_WIDTH) -> Compose:
    """The App. D 2.3 pipeline in the paper's order: resize -> contrast -> shadow -> motion blur."""
    return Compose([Resize(height, width), ContrastMapping(), ColumnShadow(), MotionBlur()])


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


def _resize(x: np.ndarray, height: int, width: int) -> np.ndarray:
    from skimage.transform import resize

    if x.shape == (height, width):
        return x.astype(np.float64)
    shrink = x.shape[0] > height or x.shape[1] > width
    return resize(x.astype(np.float64), (height, width), order=1, mode="edge", anti_aliasing=shrink)


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]


class _EyeDataset(CachedItems, Dataset):
    """Shared by the iris datasets: the seeded degradation of item ``i``, tensor items, and the
    optional item cache (:class:`spdnn.data.cache.ItemCache`)."""

    seed: int
    transform: Transform | None

    def sample(self, index: int) -> EyeSample:
        raise NotImplementedError  # abstract

    def _degrade(self, s: EyeSample, index: int) -> EyeSample:
        if self.transform is not None:
            s = self.transform(s, np.random.default_rng([self.seed, index, 1]))
        return s

    def compute_item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ``index`` computed from scratch (what :meth:`__getitem__` returns or caches)."""
        s = self.sample(index)
        return _to_tensor(s.image), _to_tensor(s.mask)

    def _make_cache(self, cache: bool | None) -> None:
        shape = (1, self.height, self.width)
        self.cache = make_cache(cache, len(self), [shape, shape])


class SyntheticIrisDataset(_EyeDataset):
    """``n`` synthetic eyes (:func:`render_eye`), optionally degraded (App. D 2.3).

    Item ``i`` is ``(image, mask)``: ``(1, H, W)`` float32 in [0, 1] and ``(1, H, W)`` float32
    0/1 (H x W = 96 x 128 by default). Item ``i`` depends only on ``(seed, i)``: it is rendered
    with ``numpy.random.default_rng([seed, i, 0])`` and degraded with
    ``default_rng([seed, i, 1])``, so the clean and degraded datasets show the same eyes, and
    datasets with different seeds never share a sample (``seed + i`` would make
    ``seed=1, i=0`` equal ``seed=0, i=1``).

    **Cache.** Rendering and degrading an eye takes ~10 ms on one core, so items are cached:
    ``cache=None`` (default) keeps every item after its first access when the cache takes at
    most 1 GiB (98,304 bytes per 96 x 128 item: up to 10,922 eyes; 512 eyes take 48 MiB), in
    shared memory that DataLoader workers fill too (:mod:`spdnn.data.cache`); ``True``
    always, ``False`` never. Cached items are bit-identical to computed ones, and the cache
    assumes a custom ``transform`` draws only from the generator it is given.
    :meth:`prefill` computes all items up front (optionally in worker processes).
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        degrade: bool = True,
        height: int = IRIS_HEIGHT,
        width: int = IRIS_WIDTH,
        transform: Transform | None = None,
        cache: bool | None = None,
    ):
        if n < 0:
            raise ValueError("n must be >= 0")
        self.n = int(n)
        self.seed = int(seed)
        self.degrade = degrade
        self.height = height
        self.width = width
        self.transform = transform or (degradation_pipeline(height, width) if degrade else None)
        self._make_cache(cache)

    def __len__(self) -> int:
        return self.n

    def sample(self, index: int) -> EyeSample:
        """The :class:`EyeSample` behind item ``index`` (numpy, with geometry params)."""
        if not 0 <= index < self.n:
            raise IndexError(index)
        s = render_eye(np.random.default_rng([self.seed, index, 0]), self.height, self.width)
        return self._degrade(s, index)


def _list_images(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            if p.stem in out:
                raise SpdnnError(
                    f"two files with the stem '{p.stem}' in {folder}: {out[p.stem].name}, {p.name}",
                    hint="keep one file per image name",
                )
            out[p.stem] = p
    return out


def _read_gray(path: Path, label: bool = False) -> np.ndarray:
    """Read an image as float64 grayscale in [0, 1] (RGB -> luminance, alpha dropped).

    With ``label=True`` (masks) an integer image whose values are all 0 or 1 is taken as a 0/1
    label image rather than as almost-black intensities.
    """
    from skimage.color import rgb2gray
    from skimage.util import img_as_float

    from spdnn.io import read_image

    try:
        img = read_image(path)
    except SpdnnError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is a user data problem
        raise SpdnnError(
            f"cannot read image {path}: {e}", hint="check the file is a valid image"
        ) from e
    if img.ndim == 3:
        if img.shape[-1] == 4:
            img = img[..., :3]
        if img.shape[-1] == 3:
            img = rgb2gray(img)
        elif img.shape[-1] == 1:
            img = img[..., 0]
    if img.ndim != 2:
        raise SpdnnError(f"image {path} has shape {img.shape}", hint="use grayscale or RGB images")
    if img.dtype == bool or (label and np.issubdtype(img.dtype, np.integer) and img.max() <= 1):
        return img.astype(np.float64)
    return img_as_float(img).astype(np.float64)


class IrisFolderDataset(_EyeDataset):
    """A real iris database in the folder layout ``root/images/*`` + ``root/masks/*``.

    ``root/images/<stem>.{png,jpg,jpeg,bmp,tif,tiff}`` are the eye images, and
    ``root/masks/<stem>.<any of those>`` their iris masks (same stem; iris = white, or 1 in a 0/1
    label image). Images are
    read with ``skimage.io``, converted to grayscale in [0, 1] and resized (bilinear) to
    ``height x width`` (96 x 128); masks are resized the same way and thresholded at 0.5. Item
    ``i`` (sorted by stem) is ``(image, mask)`` as in :class:`SyntheticIrisDataset`.

    With ``degrade=True`` the App. D 2.3 pipeline is applied (seeded by ``(seed, i)``); the
    whole-iris region the contrast step needs is the mask with its holes filled (the pupil).

    **Cache** (as :class:`SyntheticIrisDataset`): ``cache=None`` (default) keeps every item
    after its first read (decode + resize + degradation happen once per run) when the folder
    holds at most 10,922 images at 96 x 128 (1 GiB); a larger database is read from disk on
    every access unless ``cache=True``. ``False``: never cache. The cache assumes the files do
    not change during the run.

    Raises:
        SpdnnError: ``root``, ``images/`` or ``masks/`` missing, no image, or image and mask
            stems that do not match one to one.
    """

    def __init__(
        self,
        root: str | Path,
        height: int = IRIS_HEIGHT,
        width: int = IRIS_WIDTH,
        degrade: bool = False,
        seed: int = 0,
        cache: bool | None = None,
    ):
        root = Path(root)
        layout = "root/images/<name>.png|jpg|bmp|tif and root/masks/<name>.<ext>"
        if not root.is_dir():
            raise SpdnnError(
                f"iris dataset folder {root} does not exist", hint=f"expected {layout}"
            )
        img_dir, mask_dir = root / "images", root / "masks"
        for d in (img_dir, mask_dir):
            if not d.is_dir():
                raise SpdnnError(f"missing folder {d}", hint=f"expected {layout}")
        images = _list_images(img_dir)
        masks = _list_images(mask_dir)
        if not images:
            raise SpdnnError(
                f"no image in {img_dir}",
                hint=f"expected files ending in {', '.join(IMAGE_EXTENSIONS)}",
            )
        no_mask = sorted(set(images) - set(masks))
        no_image = sorted(set(masks) - set(images))
        if no_mask or no_image:
            parts = []
            if no_mask:
                parts.append(f"{len(no_mask)} image(s) without a mask ({', '.join(no_mask[:5])})")
            if no_image:
                parts.append(
                    f"{len(no_image)} mask(s) without an image ({', '.join(no_image[:5])})"
                )
            raise SpdnnError(
                f"images and masks in {root} do not match: " + "; ".join(parts),
                hint="give every image in images/ a mask with the same name in masks/",
            )
        self.root = root
        self.stems = sorted(images)
        self.image_paths = [images[s] for s in self.stems]
        self.mask_paths = [masks[s] for s in self.stems]
        self.height = height
        self.width = width
        self.seed = int(seed)
        self.transform = degradation_pipeline(height, width) if degrade else None
        self._make_cache(cache)

    def __len__(self) -> int:
        return len(self.stems)

    def sample(self, index: int) -> EyeSample:
        img = _read_gray(self.image_paths[index])
        mask = _read_gray(self.mask_paths[index], label=True)
        img = np.clip(_resize(img, self.height, self.width), 0.0, 1.0)
        mask = (_resize(mask, self.height, self.width) > 0.5).astype(np.float64)
        region = ndimage.binary_fill_holes(mask > 0.5).astype(np.float64)
        s = EyeSample(image=img, mask=mask, region=region, params={"stem": self.stems[index]})
        return self._degrade(s, index)
