"""Monocular depth data (thesis App. B): Middlebury motorcycle, a synthetic scene, KITTI layout.

Every dataset yields ``(image, target, mask)``, three ``(1, H, W)`` float32 tensors with
H x W = 80 x 264 (the input size of App. B): a grayscale image in [0, 1], a depth/disparity map
normalised to [0, 1], and a 0/1 validity mask. **Pixels where the mask is 0 have no ground truth**
and must be left out of losses and metrics (``spdnn.metrics`` takes the mask; a loss should be
``((pred - target) ** 2 * mask).sum() / mask.sum()``); their target is set to 0.

* :class:`MotorcycleDepthDataset`: the real Middlebury 2014 "motorcycle" pair that ships with
  scikit-image (``skimage.data.stereo_motorcycle()``, works offline): random crops with flips from
  the left image and its ground-truth disparity, with train and validation crops taken from
  disjoint column bands.
* :class:`SyntheticDepthDataset`: ray-cast scenes (ground plane, boxes, spheres, an optional back
  wall) seen by a perspective camera, with exact per-pixel depth.
* :class:`KittiDepthDataset`: the KITTI 2015 stereo layout, when the user has it on disk.

Caching (default on): every item depends only on the constructor arguments and its index (the
motorcycle's crop and flips are drawn from ``default_rng([seed, i, split])``, the same on every
access, not anew per epoch; the synthetic scene from ``default_rng([seed, i])``; KITTI items are
files), so each dataset computes an item once and keeps it in a shared-memory
:class:`~spdnn.data.cache.ItemCache` that DataLoader workers (``fork`` or ``spawn``) fill too.
``cache=None`` (default): on while the cache takes at most 1 GiB (253,440 bytes per 80 x 264
item: up to 4,236 items; 512 take 124 MiB); ``cache=True/False`` forces it. Returned items
are bit-identical with and without the cache. Cost of an uncached item on one core: ~13 ms
for a synthetic scene, ~1.5 ms for a motorcycle crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from spdnn.data.cache import CachedItems, make_cache
from spdnn.errors import SpdnnError

__all__ = [
    "DEPTH_HEIGHT",
    "DEPTH_WIDTH",
    "MOTORCYCLE_TARGETS",
    "SYNTHETIC_TARGETS",
    "MotorcycleScene",
    "load_motorcycle",
    "resize_with_mask",
    "MotorcycleDepthDataset",
    "DepthScene",
    "render_depth_scene",
    "SyntheticDepthDataset",
    "KittiDepthDataset",
]

DEPTH_HEIGHT = 80
DEPTH_WIDTH = 264
MOTORCYCLE_TARGETS = ("normalised", "disparity")
SYNTHETIC_TARGETS = ("depth", "inverse_depth", "scaled_depth")


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]


def _resize(x: np.ndarray, height: int, width: int) -> np.ndarray:
    from skimage.transform import resize

    if x.shape == (height, width):
        return x.astype(np.float64)
    shrink = x.shape[0] > height or x.shape[1] > width
    return resize(x.astype(np.float64), (height, width), order=1, mode="edge", anti_aliasing=shrink)


def resize_with_mask(
    values: np.ndarray,
    valid: np.ndarray,
    height: int,
    width: int,
    min_valid_fraction: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Resize a map with missing values without letting them leak into valid pixels.

    Normalised convolution: ``out = resize(values * valid) / resize(valid)`` (bilinear, Gaussian
    anti-aliasing when shrinking), i.e. every output pixel is a weighted mean of **valid** input
    pixels only (``inf``/``nan`` at invalid pixels never enter). An output pixel is valid when the
    valid inputs carry at least ``min_valid_fraction`` of its interpolation weight; invalid output
    pixels get value 0. Returns ``(values, valid)`` as float64 and bool arrays.
    """
    valid = np.asarray(valid, dtype=bool) & np.isfinite(values)
    v = np.where(valid, values, 0.0).astype(np.float64)
    num = _resize(v, height, width)
    den = _resize(valid.astype(np.float64), height, width)
    ok = den >= min_valid_fraction - 1e-9
    ok &= den > 0
    out = np.where(ok, num / np.where(ok, den, 1.0), 0.0)
    return out, ok


# --------------------------------------------------------------------------------------------
# Middlebury motorcycle
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MotorcycleScene:
    """The motorcycle pair prepared for training.

    Attributes:
        image: ``(500, 741)`` float64 grayscale of the left image, in [0, 1].
        target: ``(500, 741)`` disparity normalised to [0, 1] with the global finite min/max
            (``(d - d_min) / (d_max - d_min)``; 1 = nearest); 0 at invalid pixels.
        valid: ``(500, 741)`` bool, False where the ground-truth disparity is ``inf``.
        d_min, d_max: the finite disparity range in pixels (about 7.19 and 59.91).
    """

    image: np.ndarray
    target: np.ndarray
    valid: np.ndarray
    d_min: float
    d_max: float


@lru_cache(maxsize=1)
def load_motorcycle() -> MotorcycleScene:
    """Load ``skimage.data.stereo_motorcycle()`` (bundled with scikit-image, no download).

    Returns a :class:`MotorcycleScene`; the result is cached (the arrays are marked read-only).
    """
    import skimage.data
    from skimage.color import rgb2gray

    try:
        left, _right, disp = skimage.data.stereo_motorcycle()
    except Exception as e:  # noqa: BLE001
        raise SpdnnError(
            f"cannot load skimage.data.stereo_motorcycle(): {e}",
            hint="reinstall scikit-image, or use SyntheticDepthDataset",
        ) from e
    image = rgb2gray(left).astype(np.float64)
    valid = np.isfinite(disp)
    d = disp[valid].astype(np.float64)
    d_min, d_max = float(d.min()), float(d.max())
    target = np.where(valid, (np.where(valid, disp, d_min) - d_min) / (d_max - d_min), 0.0)
    for a in (image, target, valid):
        a.setflags(write=False)
    return MotorcycleScene(image, target, valid, d_min, d_max)


class MotorcycleDepthDataset(CachedItems, Dataset):
    """Random crops of the Middlebury motorcycle scene, resized to 80 x 264 (App. B input).

    **Train/validation split.** The 741 image columns are cut at
    ``b = round(741 (1 - val_fraction))`` (534 for the default 0.28): training crops lie
    entirely in columns ``[0, b - gap/2)``, validation crops entirely in ``[b + gap/2, 741)``
    (``gap`` = 16 columns unused between them), so no pixel of a validation crop is ever seen in
    training. The left band holds the bench, the rear of the motorcycle and its engine; the right
    band the front wheel and the shelves.

    **Crops.** For item ``i`` a generator ``default_rng([seed, i, split])`` draws an aspect
    ratio ``(264 / 80) · j`` with ``j`` log-uniform in [0.8, 1.25], a crop height uniform between
    48 px (or less if the band is too narrow) and the largest height whose width fits the
    narrower of the two bands (``matched_zoom=True``, the default: 48-75 px in both splits, so
    training and validation crops share one zoom distribution; the disparity target does not
    change with the zoom, so a network trained on 48-159 px crops meets unseen magnifications
    on the 199-column validation band: in the issue 16 diagnosis the 6-channel parent 4 scored
    validation MSE 0.067 after 300 steps without it, worse than the constant prediction's
    0.060, and 0.055-0.061 with it), and a position uniform within the band. The crop (image, normalised disparity, validity) is
    resized to ``height x width`` with :func:`resize_with_mask` (an output pixel is valid when at
    least half its interpolation weight comes from valid ground truth). Training items are then
    flipped horizontally with probability 1/2 (``flips`` defaults to ``split == "train"``);
    ``vertical_flips=True`` also flips them upside down with probability 1/2. That is off by
    default: an upside-down crop puts the floor (near) at the top, against the monocular cue
    "lower in the image = nearer" the networks can learn. The flip coins are drawn either way,
    so crops and horizontal flips do not depend on the setting.

    **Targets.** ``target="normalised"`` (default): ``(d - d_min) / (d_max - d_min)`` as below.
    ``target="disparity"``: ``d / d_max`` in [0.12, 1], proportional to the disparity, so the
    ratio measures delta < 1.25^k of Eigen et al. are those of the depth itself
    (max(p/t, t/p) is the same for a quantity and its inverse); on the normalised target they
    are not (its far end is 0).

    Item ``i`` is ``(image, target, mask)``: ``(1, 80, 264)`` float32 each; the target is the
    disparity normalised by the scene's global finite min/max (see :class:`MotorcycleScene`),
    i.e. inverse depth up to an affine map, not rescaled by the crop's zoom (or ``d / d_max``).

    Raises:
        SpdnnError: an unknown ``split`` or ``target``.

    ``cache``: keep computed items (see the module docstring; default: when <= 1 GiB).
    """

    def __init__(
        self,
        split: str = "train",
        n: int | None = None,
        seed: int = 0,
        height: int = DEPTH_HEIGHT,
        width: int = DEPTH_WIDTH,
        flips: bool | None = None,
        vertical_flips: bool = False,
        target: str = "normalised",
        val_fraction: float = 0.28,
        gap: int = 16,
        min_valid_fraction: float = 0.5,
        matched_zoom: bool = True,
        cache: bool | None = None,
    ):
        if split not in ("train", "val"):
            raise SpdnnError(f"unknown split '{split}'", hint="use split='train' or split='val'")
        if target not in MOTORCYCLE_TARGETS:
            raise SpdnnError(f"unknown target '{target}'", field="data.options.target",
                             hint="use " + " or ".join(MOTORCYCLE_TARGETS))
        self.split = split
        self.target = target
        self.vertical_flips = bool(vertical_flips)
        self.n = int(n if n is not None else (512 if split == "train" else 64))
        self.seed = int(seed)
        self.height = height
        self.width = width
        self.flips = (split == "train") if flips is None else flips
        self.min_valid_fraction = min_valid_fraction
        scene = load_motorcycle()
        self.scene = scene
        h_img, w_img = scene.image.shape
        b = int(round(w_img * (1.0 - val_fraction)))
        if split == "train":
            self.col_range = (0, b - gap // 2)
        else:
            self.col_range = (b + (gap - gap // 2), w_img)
        self._split_id = 0 if split == "train" else 1
        bands = (b - gap // 2, w_img - b - (gap - gap // 2))  # train, val widths (526, 199)
        band = self.col_range[1] - self.col_range[0]
        self.zoom_band = min(bands) if matched_zoom else band
        self.cache = make_cache(cache, self.n, [(1, height, width)] * 3)

    def __len__(self) -> int:
        return self.n

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index, self._split_id])

    def crop_box(self, index: int) -> tuple[int, int, int, int]:
        """``(top, left, crop_height, crop_width)`` of item ``index`` in the 500 x 741 image."""
        return self._draw(self._rng(index))[0]

    def _draw(self, rng: np.random.Generator):
        h_img = self.scene.image.shape[0]
        c0, c1 = self.col_range
        band = c1 - c0
        aspect = self.width / self.height * math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
        h_max = max(8, min(h_img, int(self.zoom_band / aspect)))
        h_lo = min(48, h_max)
        ch = int(rng.integers(h_lo, h_max + 1))
        cw = min(band, max(1, int(round(ch * aspect))))
        top = int(rng.integers(0, h_img - ch + 1))
        left = c0 + int(rng.integers(0, band - cw + 1))
        hflip = bool(rng.random() < 0.5)
        vflip = bool(rng.random() < 0.5)
        return (top, left, ch, cw), hflip, vflip

    def compute_item(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Item ``index`` computed from scratch (what ``__getitem__`` returns or caches)."""
        if not 0 <= index < self.n:
            raise IndexError(index)
        (top, left, ch, cw), hflip, vflip = self._draw(self._rng(index))
        sl = (slice(top, top + ch), slice(left, left + cw))
        img = np.clip(_resize(self.scene.image[sl], self.height, self.width), 0.0, 1.0)
        tgt, ok = resize_with_mask(
            self.scene.target[sl],
            self.scene.valid[sl],
            self.height,
            self.width,
            self.min_valid_fraction,
        )
        tgt = np.clip(tgt, 0.0, 1.0)
        if self.target == "disparity":  # d / d_max: proportional to disparity (an affine map)
            s = self.scene
            tgt = np.where(ok, (tgt * (s.d_max - s.d_min) + s.d_min) / s.d_max, 0.0)
        mask = ok.astype(np.float64)
        if self.flips:
            if hflip:
                img, tgt, mask = img[:, ::-1], tgt[:, ::-1], mask[:, ::-1]
            if vflip and self.vertical_flips:
                img, tgt, mask = img[::-1], tgt[::-1], mask[::-1]
        return _to_tensor(img), _to_tensor(tgt), _to_tensor(mask)


# --------------------------------------------------------------------------------------------
# Synthetic scene
# --------------------------------------------------------------------------------------------


@dataclass
class DepthScene:
    """A rendered synthetic scene: ``image`` [0, 1], ``depth`` (metres along the optical axis,
    ``inf`` where nothing is hit), ``depth01`` normalised depth in [0, 1], ``valid`` bool, and the
    drawn ``params``."""

    image: np.ndarray
    depth: np.ndarray
    depth01: np.ndarray
    valid: np.ndarray
    params: dict


def _procedural(
    u: np.ndarray,
    v: np.ndarray,
    rng: np.random.Generator,
    n: int = 6,
    freq: tuple[float, float] = (0.5, 4.0),
) -> np.ndarray:
    """Sum of ``n`` random oriented sinusoids in surface coordinates (metres), in [-1, 1];
    frequencies uniform in ``freq`` cycles per metre."""
    out = np.zeros_like(u)
    total = 0.0
    for _ in range(n):
        f = rng.uniform(*freq)
        a = rng.uniform(0, math.pi)
        amp = rng.uniform(0.3, 1.0)
        out += amp * np.sin(
            2 * math.pi * f * (u * math.cos(a) + v * math.sin(a)) + rng.uniform(0, 6.3)
        )
        total += amp
    return out / total


def render_depth_scene(
    rng: np.random.Generator,
    height: int = DEPTH_HEIGHT,
    width: int = DEPTH_WIDTH,
    z_near: float = 1.0,
    z_far: float = 60.0,
) -> DepthScene:
    """Ray-cast a random scene and return its image and exact depth.

    Camera: pinhole at height 1.2-2.0 m above the ground plane y = 0, pitched down 0-8°,
    horizontal field of view 70-90°, principal point at the image centre; one ray per pixel centre.
    World: x right, y up, z forward. Scene: the textured ground plane; 2-7 objects resting on it,
    boxes (sizes 0.5-3 m, random yaw) and spheres (radius 0.3-1.5 m) at 3-40 m; with probability
    1/2 a textured back wall facing the camera at 25-55 m, else sky. Shading: Lambertian with a
    random light from above plus ambient; procedural sinusoid textures in surface coordinates; the
    image gets a slight blur (σ 0.5 px) and noise (σ 0.01). Sky is bright.

    Depth is the z distance along the optical axis of the nearest hit (exact, analytic per pixel
    centre). ``depth01 = clip((z - z_near) / (z_far - z_near), 0, 1)`` (larger = farther); pixels
    with no hit (sky) or z > z_far are **invalid** (``valid`` False, ``depth01`` = 1).
    """
    hfov = math.radians(rng.uniform(70.0, 90.0))
    f = (width / 2) / math.tan(hfov / 2)
    cam_h = rng.uniform(1.2, 2.0)
    pitch = math.radians(rng.uniform(0.0, 8.0))
    jj, ii = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    dcx = (jj - (width - 1) / 2) / f
    dcy = -(ii - (height - 1) / 2) / f
    cp, sp = math.cos(pitch), math.sin(pitch)
    dx = dcx
    dy = dcy * cp - sp  # camera z component is 1
    dz = dcy * sp + cp
    ox, oy, oz = 0.0, cam_h, 0.0

    big = np.inf
    t_best = np.full((height, width), big)
    nx = np.zeros_like(t_best)
    ny = np.zeros_like(t_best)
    nz = np.zeros_like(t_best)
    albedo = np.zeros_like(t_best)

    def commit(t, hit, normal, alb):
        nonlocal t_best
        better = hit & (t < t_best) & (t > 1e-6)
        t_best = np.where(better, t, t_best)
        for arr, val in zip((nx, ny, nz, albedo), (*normal, alb), strict=True):
            arr[better] = np.broadcast_to(val, t_best.shape)[better]

    light = np.array([rng.uniform(-0.6, 0.6), 1.0, rng.uniform(-0.8, 0.2)])
    light /= np.linalg.norm(light)

    # ground plane
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = np.where(dy < 0, -oy / dy, big)
    gx, gz = ox + tg * dx, oz + tg * dz
    gx, gz = np.where(np.isfinite(gx), gx, 0.0), np.where(np.isfinite(gz), gz, 0.0)
    ground_alb = rng.uniform(0.3, 0.5) + 0.12 * _procedural(gx, gz, rng, freq=(0.15, 1.5))
    commit(tg, dy < 0, (0.0, 1.0, 0.0), ground_alb)

    # back wall
    wall = bool(rng.random() < 0.5)
    z_wall = rng.uniform(25.0, 55.0)
    if wall:
        with np.errstate(divide="ignore"):
            tw = np.where(dz > 0, (z_wall - oz) / dz, big)
        wx, wy = ox + tw * dx, oy + tw * dy
        wx, wy = np.where(np.isfinite(wx), wx, 0.0), np.where(np.isfinite(wy), wy, 0.0)
        commit(
            tw,
            (dz > 0) & (wy >= 0),
            (0.0, 0.0, -1.0),
            rng.uniform(0.3, 0.7) + 0.15 * _procedural(wx, wy, rng),
        )

    objects = []
    for _ in range(int(rng.integers(2, 8))):
        z = rng.uniform(3.0, 40.0)
        x = rng.uniform(-0.9, 0.9) * z * math.tan(hfov / 2)
        alb0 = rng.uniform(0.2, 0.9)
        if rng.random() < 0.6:  # box
            sx, sy, sz = (rng.uniform(0.25, 1.5) for _ in range(3))
            yaw = rng.uniform(0, math.pi / 2)
            c, s = math.cos(yaw), math.sin(yaw)
            # ray in box frame (rotation about y by -yaw)
            rox, roy, roz = ox - x, oy - sy, oz - z
            lox, loz = c * rox - s * roz, s * rox + c * roz
            ldx, ldz = c * dx - s * dz, s * dx + c * dz
            lo = (np.full_like(dx, lox), np.full_like(dx, roy), np.full_like(dx, loz))
            ld = (ldx, dy, ldz)
            half = (sx, sy, sz)
            tmin = np.full_like(dx, -big)
            tmax = np.full_like(dx, big)
            axis = np.zeros(dx.shape, dtype=int)
            for k in range(3):
                d = np.where(np.abs(ld[k]) < 1e-12, 1e-12, ld[k])
                t1 = (-half[k] - lo[k]) / d
                t2 = (half[k] - lo[k]) / d
                lo_t = np.minimum(t1, t2)
                axis = np.where(lo_t > tmin, k, axis)
                tmin = np.maximum(tmin, lo_t)
                tmax = np.minimum(tmax, np.maximum(t1, t2))
            hit = (tmax >= tmin) & (tmin > 0)
            # local normal: -sign(direction) on the entry axis, rotated back to world
            ln = [np.where(axis == k, -np.sign(ld[k]), 0.0) for k in range(3)]
            wnx, wnz = c * ln[0] + s * ln[2], -s * ln[0] + c * ln[2]
            px_ = lo[0] + tmin * ld[0]
            py_ = lo[1] + tmin * ld[1]
            pz_ = lo[2] + tmin * ld[2]
            uu = np.where(axis == 0, pz_, px_)
            vv = np.where(axis == 1, pz_, py_)
            alb = alb0 + 0.12 * _procedural(uu, vv, rng)
            commit(tmin, hit, (wnx, ln[1], wnz), alb)
            objects.append(("box", x, z, (sx, sy, sz), yaw))
        else:  # sphere
            r = rng.uniform(0.3, 1.5)
            cx_, cy_, cz_ = x, r, z
            a = dx * dx + dy * dy + dz * dz
            bx, by, bz = ox - cx_, oy - cy_, oz - cz_
            b = 2 * (dx * bx + dy * by + dz * bz)
            cc = bx * bx + by * by + bz * bz - r * r
            disc = b * b - 4 * a * cc
            hit = disc >= 0
            ts = (-b - np.sqrt(np.where(hit, disc, 0.0))) / (2 * a)
            hit &= ts > 0
            hx, hy, hz = ox + ts * dx - cx_, oy + ts * dy - cy_, oz + ts * dz - cz_
            lat = np.arcsin(np.clip(hy / r, -1, 1))
            alb = alb0 + 0.15 * np.sin(lat * rng.integers(3, 9)) * np.cos(
                np.arctan2(hx, hz) * rng.integers(2, 6)
            )
            commit(ts, hit, (hx / r, hy / r, hz / r), alb)
            objects.append(("sphere", x, z, r))

    hit_any = np.isfinite(t_best)
    shade = 0.35 + 0.65 * np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0.0, 1.0)
    sky = rng.uniform(0.7, 0.95) - 0.2 * np.clip(dy / np.sqrt(dx**2 + dy**2 + dz**2), 0, 1)
    img = np.where(hit_any, np.clip(albedo, 0.02, 1.0) * shade, sky)
    img = ndimage.gaussian_filter(img, 0.5, mode="nearest")
    img = np.clip(img + rng.normal(0.0, 0.01, img.shape), 0.0, 1.0)

    depth = np.where(hit_any, t_best, np.inf)
    valid = hit_any & (depth <= z_far)
    depth01 = np.where(valid, np.clip((depth - z_near) / (z_far - z_near), 0.0, 1.0), 1.0)
    params = {
        "hfov_deg": math.degrees(hfov),
        "focal_px": f,
        "camera_height": cam_h,
        "pitch_deg": math.degrees(pitch),
        "wall": wall,
        "z_wall": z_wall if wall else None,
        "objects": objects,
        "z_near": z_near,
        "z_far": z_far,
    }
    return DepthScene(image=img, depth=depth, depth01=depth01, valid=valid, params=params)


class SyntheticDepthDataset(CachedItems, Dataset):
    """``n`` synthetic scenes (:func:`render_depth_scene`), item ``i`` seeded by ``(seed, i)``.

    Item ``i`` is ``(image, target, mask)``, ``(1, 80, 264)`` float32 each: grayscale image in
    [0, 1], the target in [0, 1], and the validity mask (0 on sky and beyond ``z_far``; target 0
    there). ``target="depth"`` (default): ``(z - z_near) / (z_far - z_near)``, 0 = 1 m, 1 = 60 m,
    larger = farther. ``target="inverse_depth"``: ``(1/z - 1/z_far) / (1/z_near - 1/z_far)``,
    larger = nearer, the same sense as the motorcycle's and KITTI's normalised disparity.
    ``target="scaled_depth"``: ``z / z_far`` in [1/60, 1], proportional to depth, so that the
    ratio measures delta < 1.25^k and Abs Rel are those of the depth itself (the two affine
    targets above put 0 at one end of the range, where every ratio explodes).

    Raises:
        SpdnnError: an unknown ``target``.

    ``cache``: keep computed items (see the module docstring; default: when <= 1 GiB).
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        height: int = DEPTH_HEIGHT,
        width: int = DEPTH_WIDTH,
        z_near: float = 1.0,
        z_far: float = 60.0,
        target: str = "depth",
        cache: bool | None = None,
    ):
        if target not in SYNTHETIC_TARGETS:
            raise SpdnnError(f"unknown target '{target}'", field="data.options.target",
                             hint="use " + ", ".join(SYNTHETIC_TARGETS))
        self.target = target
        self.n = int(n)
        self.seed = int(seed)
        self.height = height
        self.width = width
        self.z_near = z_near
        self.z_far = z_far
        self.cache = make_cache(cache, self.n, [(1, height, width)] * 3)

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> DepthScene:
        if not 0 <= index < self.n:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        return render_depth_scene(rng, self.height, self.width, self.z_near, self.z_far)

    def compute_item(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Item ``index`` computed from scratch (what ``__getitem__`` returns or caches)."""
        s = self.scene(index)
        if self.target == "depth":
            tgt = np.where(s.valid, s.depth01, 0.0)
        elif self.target == "scaled_depth":
            tgt = np.where(s.valid, np.clip(s.depth / self.z_far, 0.0, 1.0), 0.0)
        else:
            z = np.where(s.valid, s.depth, self.z_far)
            inv = (1.0 / np.maximum(z, self.z_near) - 1.0 / self.z_far) / (
                1.0 / self.z_near - 1.0 / self.z_far
            )
            tgt = np.where(s.valid, np.clip(inv, 0.0, 1.0), 0.0)
        return _to_tensor(s.image), _to_tensor(tgt), _to_tensor(s.valid.astype(np.float64))


# --------------------------------------------------------------------------------------------
# KITTI
# --------------------------------------------------------------------------------------------


class KittiDepthDataset(CachedItems, Dataset):
    """KITTI 2015 stereo training set, as laid out by the official download.

    Files: ``root/training/image_2/<id>_10.png`` (left colour image of the reference frame) and
    ``root/training/<disp_dir>/<id>_10.png`` (``disp_noc_0`` by default, or ``disp_occ_0``):
    uint16 PNG, disparity = value / 256, 0 = no ground truth. App. B sec. 3.4 evaluates on these
    200 disparity maps (Table 5).

    Item ``i`` (sorted by id) is ``(image, target, mask)``, ``(1, 80, 264)`` float32: grayscale
    image in [0, 1] (bilinear, anti-aliased resize); target = disparity / ``max_disparity``
    (default 256 px, clipped to [0, 1]; disparities at the original resolution), resized with
    :func:`resize_with_mask` (sparse maps: an output pixel is valid when at least
    ``min_valid_fraction`` of its interpolation weight falls on measured pixels, and its value is
    the weighted mean of those); mask = 1 where valid.

    ``cache``: keep items after their first read (see the module docstring; default: when
    <= 1 GiB, which the 200 training pairs are: 48 MiB). Assumes the files do not change.

    Raises:
        SpdnnError: when ``root``, ``training/image_2`` or ``training/<disp_dir>`` is missing,
            holds no ``*_10.png``, or the ids of images and disparities differ.
    """

    def __init__(
        self,
        root: str | Path,
        height: int = DEPTH_HEIGHT,
        width: int = DEPTH_WIDTH,
        disp_dir: str = "disp_noc_0",
        max_disparity: float = 256.0,
        min_valid_fraction: float = 0.05,
        cache: bool | None = None,
    ):
        root = Path(root)
        layout = f"root/training/image_2/*_10.png and root/training/{disp_dir}/*_10.png"
        if not root.is_dir():
            raise SpdnnError(f"KITTI folder {root} does not exist", hint=f"expected {layout}")
        img_dir = root / "training" / "image_2"
        disp_path = root / "training" / disp_dir
        for d in (img_dir, disp_path):
            if not d.is_dir():
                raise SpdnnError(
                    f"missing folder {d}", hint=f"expected the KITTI 2015 layout {layout}"
                )
        images = {p.name: p for p in sorted(img_dir.glob("*_10.png"))}
        disps = {p.name: p for p in sorted(disp_path.glob("*_10.png"))}
        if not images:
            raise SpdnnError(f"no *_10.png image in {img_dir}", hint=f"expected {layout}")
        missing = sorted(set(images) - set(disps))
        extra = sorted(set(disps) - set(images))
        if missing or extra:
            parts = []
            if missing:
                parts.append(
                    f"{len(missing)} image(s) without disparity ({', '.join(missing[:5])})"
                )
            if extra:
                parts.append(
                    f"{len(extra)} disparity map(s) without image ({', '.join(extra[:5])})"
                )
            raise SpdnnError(
                f"KITTI images and disparities in {root / 'training'} do not match: "
                + "; ".join(parts),
                hint=f"every image_2/<id>_10.png needs {disp_dir}/<id>_10.png",
            )
        self.root = root
        self.names = sorted(images)
        self.image_paths = [images[n] for n in self.names]
        self.disp_paths = [disps[n] for n in self.names]
        self.height = height
        self.width = width
        self.max_disparity = float(max_disparity)
        self.min_valid_fraction = min_valid_fraction
        self.cache = make_cache(cache, len(self.names), [(1, height, width)] * 3)

    def __len__(self) -> int:
        return len(self.names)

    def compute_item(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Item ``index`` read from disk (what ``__getitem__`` returns or caches)."""
        from skimage.color import rgb2gray
        from skimage.util import img_as_float

        from spdnn.io import read_image

        img = read_image(self.image_paths[index])
        if img.ndim == 3:
            img = rgb2gray(img[..., :3]) if img.shape[-1] >= 3 else img[..., 0]
        img = img_as_float(img).astype(np.float64)
        raw = read_image(self.disp_paths[index], "disparity map")
        if raw.ndim == 3:
            raw = raw[..., 0]
        if raw.dtype != np.uint16:
            raise SpdnnError(
                f"{self.disp_paths[index]} is {raw.dtype}, not a 16-bit PNG",
                hint="KITTI disparity maps are uint16 PNGs (disparity = value / 256)",
            )
        disp = raw.astype(np.float64) / 256.0
        valid = raw > 0
        img = np.clip(_resize(img, self.height, self.width), 0.0, 1.0)
        tgt, ok = resize_with_mask(
            disp / self.max_disparity, valid, self.height, self.width, self.min_valid_fraction
        )
        return (
            _to_tensor(img),
            _to_tensor(np.clip(tgt, 0.0, 1.0)),
            _to_tensor(ok.astype(np.float64)),
        )
