"""Thermal data for SPADE-SR (Chiu et al., "Low-Resolution Thermal Sensor-Guided Image
Synthesis", seed 001) and Thermalnet (Kniaz et al., seed 004), all offline.

**Everything thermal this module computes is SYNTHETIC.** No thermal or paired RGB-thermal data
ships in any package, so :func:`synthetic_thermal_field` is a stand-in: a body-temperature field
drawn from a person's foreground mask (skin and cloth temperatures, an ambient background,
Gaussian sensor noise; :data:`SYNTHETIC_SKIN_C`, :data:`SYNTHETIC_CLOTH_C`,
:data:`SYNTHETIC_AMBIENT_C`, :data:`SYNTHETIC_NOISE_STD_C`). It is not a measurement and says
nothing about how real skin, clothing or a real thermopile behave beyond those constants.

* SPADE-SR: the field (degrees C, ``(40, 64)`` height x width, the generator's output, paper
  Table 2: RGB 64 x 40 w x h) is average-pooled to the thermopile heatmap ``(5, 8)`` (Table 2:
  heatmap 8 x 5 w x h, a Panasonic AMG8833 Grid-EYE; the netspecs' input ``h`` is ``channels 1,
  height 5, width 8``) by :func:`pool_heatmap`, and rescaled linearly from
  [:data:`HEATMAP_MIN_C`, :data:`HEATMAP_MAX_C`] = [19, 30] degrees C to [-1, 1] (sec. 4.2:
  "Thermal heatmaps between 19 to 30 degree Celsius are re-scaled linearly to [-1 : 1]") by
  :func:`rescale_heatmap` (values outside are clipped).
* Thermalnet: the full-resolution field is quantised to :data:`THERMALNET_LEVELS` = 256 levels
  (``netspecs/thermalnet/thermalnet.yaml``: 8-bit levels, sec. 3.1) over
  :data:`THERMALNET_RANGE_C` by :func:`quantise_levels` (:func:`dequantise_levels` inverts it to
  the level centres).

Data sources:

* :class:`SyntheticThermalDataset` (CI and machines without real data): person silhouettes
  rendered from ellipses (:func:`render_person`: head, torso, two arms, two legs; seedable
  position, scale and pose) over background patches cut from scikit-image photographs
  (:data:`BACKGROUND_PHOTOS`), with exact foreground and skin masks
  (:func:`synthetic_scene`), and the SYNTHETIC thermal field above.
* :class:`VtestThermalDataset`: **real RGB people from OpenCV's vtest.avi** (a street, 795
  frames; :mod:`spdnn.data.people` extracts person crops, or whole scenes for Thermalnet, with
  MOG2 foreground masks, once, cached) with the SYNTHETIC thermal field of each foreground mask
  (skin by :func:`skin_mask_from_rgb`). Without the video or OpenCV, ``data.source: vtest``
  falls back to the synthetic scenes with one warning.
* :class:`ThermalFolderDataset`: real paired data, ``root/rgb/<stem>.<image>`` with
  ``root/thermal/<stem>.npy`` (degrees C, float) or ``root/thermal/<stem>.png`` (16-bit,
  hundredths of a degree C: :data:`PNG_UNITS_C`), e.g. LRT-Human-like data: heatmaps for
  SPADE-SR, full-resolution thermal images for Thermalnet.

Items are ``(rgb float32 (3, H, W) in [0, 1], target)`` (``(H, W)`` the ``image_size``, 40 x 64
for SPADE-SR, 224 x 224 for Thermalnet), the target ``heatmap float32 (1, 5, 8) in [-1, 1]`` or,
with ``target="levels"``, ``levels int64 (H, W) in [0, 255]``.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from spdnn.data.images import fit_images, read_image
from spdnn.errors import SpdnnError

__all__ = [
    "BACKGROUND_PHOTOS",
    "HEATMAP_HEIGHT",
    "HEATMAP_MAX_C",
    "HEATMAP_MIN_C",
    "HEATMAP_WIDTH",
    "IMAGE_HEIGHT",
    "IMAGE_WIDTH",
    "PNG_UNITS_C",
    "SYNTHETIC_AMBIENT_C",
    "SYNTHETIC_CLOTH_C",
    "SYNTHETIC_NOISE_STD_C",
    "SYNTHETIC_SKIN_C",
    "THERMALNET_LEVELS",
    "THERMALNET_RANGE_C",
    "THERMAL_SOURCES",
    "SyntheticScene",
    "SyntheticThermalDataset",
    "ThermalFolderDataset",
    "VtestThermalDataset",
    "dequantise_levels",
    "pool_heatmap",
    "quantise_levels",
    "render_person",
    "read_heatmap",
    "rescale_heatmap",
    "skin_mask_from_rgb",
    "synthetic_scene",
    "synthetic_thermal_field",
    "thermal_datasets",
    "unscale_heatmap",
]

IMAGE_HEIGHT, IMAGE_WIDTH = 40, 64
"""The SPADE-SR generator's output, height x width (paper Table 2: 64 x 40 w x h; Fig. 4)."""

HEATMAP_HEIGHT, HEATMAP_WIDTH = 5, 8
"""The thermopile heatmap, height x width (paper Table 2: 8 x 5 w x h; the netspecs' ``h``)."""

HEATMAP_MIN_C, HEATMAP_MAX_C = 19.0, 30.0
"""Degrees C mapped to -1 and +1 (paper sec. 4.2: "between 19 to 30 degree Celsius are
re-scaled linearly to [-1 : 1]")."""

SYNTHETIC_SKIN_C = 33.0
"""SYNTHETIC stand-in: exposed skin, degrees C (a chosen value near typical skin surface
temperature; not from either paper)."""

SYNTHETIC_CLOTH_C = 28.0
"""SYNTHETIC stand-in: the surface of clothing on a person, degrees C (chosen)."""

SYNTHETIC_AMBIENT_C = 22.0
"""SYNTHETIC stand-in: background (room) temperature, degrees C (chosen)."""

SYNTHETIC_NOISE_STD_C = 0.25
"""SYNTHETIC stand-in: standard deviation of the per-pixel Gaussian sensor noise, degrees C
(chosen; the AMG8833's data sheet states +-2.5 C absolute accuracy, which is a bias, not noise)."""

THERMALNET_LEVELS = 256
"""Thermal levels of Thermalnet's per-pixel classification (``netspecs/thermalnet/thermalnet.
yaml``: 8-bit IR brightness as label map, Kniaz et al. sec. 3.1)."""

THERMALNET_RANGE_C = (15.0, 40.0)
"""Degrees C of level 0 and level 255 (chosen: covers the SYNTHETIC stand-in's ambient to skin
with margin; Kniaz et al. quantise 8-bit brightness and state no temperature range)."""

PNG_UNITS_C = 0.01
"""Degrees C per unit of a 16-bit PNG heatmap (value 2500 = 25.00 C) in
:class:`ThermalFolderDataset`."""

BACKGROUND_PHOTOS = ("coffee", "chelsea", "rocket", "astronaut", "brick", "grass", "gravel",
                     "camera")
"""``skimage.data`` photographs (shipped in scikit-image's wheel, no download) the synthetic
scenes cut their backgrounds from; gray ones are repeated to RGB."""

RGB_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File endings (any case) :class:`ThermalFolderDataset` reads from ``rgb/``."""


# -- the SYNTHETIC thermal model -------------------------------------------------------------------
def skin_mask_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pixels of skin colour by Kovac et al.'s uniform-daylight RGB rule (2003): R > 95, G > 40,
    B > 20, max - min > 15, \\|R - G\\| > 15, R > G, R > B (on 0..255).

    Args:
        rgb: ``(3, H, W)`` float in [0, 1].
    Returns:
        ``(H, W)`` bool. Used by :func:`synthetic_thermal_field` on real crops, where no skin
        mask is known (a heuristic; it feeds the SYNTHETIC stand-in only).
    """
    r, g, b = (np.asarray(rgb, dtype=np.float32) * 255.0)[:3]
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    return ((r > 95) & (g > 40) & (b > 20) & (mx - mn > 15) & (np.abs(r - g) > 15)
            & (r > g) & (r > b))


def synthetic_thermal_field(mask: np.ndarray, rgb: np.ndarray | None = None,
                            skin: np.ndarray | None = None, *,
                            skin_c: float = SYNTHETIC_SKIN_C, cloth_c: float = SYNTHETIC_CLOTH_C,
                            ambient_c: float = SYNTHETIC_AMBIENT_C,
                            noise_std_c: float = SYNTHETIC_NOISE_STD_C,
                            rng: np.random.Generator | None = None) -> np.ndarray:
    """The SYNTHETIC body-temperature field of one person (a stand-in, not a measurement).

    Background pixels are ``ambient_c``, person pixels ``cloth_c`` and person pixels that are
    skin ``skin_c``; then i.i.d. Gaussian noise of std ``noise_std_c`` is added to every pixel.

    Args:
        mask: ``(H, W)`` bool, the person's foreground.
        rgb: ``(3, H, W)`` float in [0, 1]; when ``skin`` is None, skin is
            :func:`skin_mask_from_rgb` of it inside ``mask``.
        skin: ``(H, W)`` bool, known skin pixels (e.g. from :func:`render_person`); wins over
            ``rgb``. With neither, the whole person is cloth.
        rng: noise source; None draws from a fresh unseeded generator.
    Returns:
        ``(H, W)`` float32, degrees C.
    Raises:
        SpdnnError: shapes of ``mask`` / ``rgb`` / ``skin`` that do not match.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise SpdnnError(f"a foreground mask is (H, W), got shape {mask.shape}")
    if skin is None and rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape[1:] != mask.shape or rgb.shape[0] < 3:
            raise SpdnnError(f"RGB crop of shape {rgb.shape} does not match the mask's "
                             f"{mask.shape} (expected (3, H, W))")
        skin = skin_mask_from_rgb(rgb)
    if skin is not None:
        skin = np.asarray(skin, dtype=bool)
        if skin.shape != mask.shape:
            raise SpdnnError(f"skin mask of shape {skin.shape} does not match the foreground "
                             f"mask's {mask.shape}")
    field = np.full(mask.shape, ambient_c, dtype=np.float32)
    field[mask] = cloth_c
    if skin is not None:
        field[mask & skin] = skin_c
    if noise_std_c > 0:
        rng = rng if rng is not None else np.random.default_rng()
        field += rng.normal(0.0, noise_std_c, size=mask.shape).astype(np.float32)
    return field


def pool_heatmap(field: np.ndarray, size: tuple[int, int] = (HEATMAP_HEIGHT, HEATMAP_WIDTH)
                 ) -> np.ndarray:
    """Average-pool a temperature field to the thermopile's resolution (each heatmap pixel the
    mean of its block, as a thermopile element integrates its field of view).

    Args:
        field: ``(..., H, W)`` degrees C; H and W multiples of ``size`` (40 x 64 -> 5 x 8: 8 x 8
            blocks).
        size: heatmap height x width (paper Table 2: 8 x 5 w x h).
    Returns:
        ``(..., size[0], size[1])`` float32, degrees C.
    Raises:
        SpdnnError: H or W not a multiple of the heatmap's.
    """
    field = np.asarray(field, dtype=np.float32)
    h, w = field.shape[-2:]
    th, tw = size
    if th <= 0 or tw <= 0 or h % th or w % tw:
        raise SpdnnError(f"a {h}x{w} field does not pool to a {th}x{tw} heatmap (height and "
                         f"width must be multiples of the heatmap's)")
    blocks = field.reshape(*field.shape[:-2], th, h // th, tw, w // tw)
    return blocks.mean(axis=(-3, -1), dtype=np.float64).astype(np.float32)


def rescale_heatmap(celsius: np.ndarray, lo: float = HEATMAP_MIN_C, hi: float = HEATMAP_MAX_C
                    ) -> np.ndarray:
    """Degrees C -> [-1, 1] linearly, ``lo`` -> -1 and ``hi`` -> +1, clipped (paper sec. 4.2:
    19..30 C re-scaled linearly to [-1 : 1]).

    Returns:
        float32 of ``celsius``' shape, in [-1, 1].
    """
    x = 2.0 * (np.asarray(celsius, dtype=np.float32) - lo) / (hi - lo) - 1.0
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def unscale_heatmap(unit: np.ndarray, lo: float = HEATMAP_MIN_C, hi: float = HEATMAP_MAX_C
                    ) -> np.ndarray:
    """[-1, 1] -> degrees C, the inverse of :func:`rescale_heatmap` (before its clipping)."""
    return ((np.asarray(unit, dtype=np.float32) + 1.0) * 0.5 * (hi - lo) + lo).astype(np.float32)


def quantise_levels(celsius: np.ndarray, levels: int = THERMALNET_LEVELS,
                    range_c: tuple[float, float] = THERMALNET_RANGE_C) -> np.ndarray:
    """Degrees C -> Thermalnet's class labels: ``round((t - lo) / (hi - lo) * (levels - 1))``,
    clipped to [0, levels - 1] (Kniaz et al. sec. 3.1: per-pixel classes over quantised
    thermal levels; 256 levels, ``netspecs/thermalnet/thermalnet.yaml``).

    Returns:
        int64 of ``celsius``' shape, in [0, levels - 1].
    """
    lo, hi = range_c
    q = np.rint((np.asarray(celsius, dtype=np.float64) - lo) / (hi - lo) * (levels - 1))
    return np.clip(q, 0, levels - 1).astype(np.int64)


def dequantise_levels(levels_: np.ndarray, levels: int = THERMALNET_LEVELS,
                      range_c: tuple[float, float] = THERMALNET_RANGE_C) -> np.ndarray:
    """Thermalnet class labels (or expected levels, float) -> degrees C at the level centres,
    the inverse of :func:`quantise_levels` within half a level ((hi - lo) / (2 (levels - 1)),
    0.049 C at the defaults) inside ``range_c``.

    Returns:
        float32 of the labels' shape, degrees C.
    """
    lo, hi = range_c
    return (lo + np.asarray(levels_, dtype=np.float64) * (hi - lo) / (levels - 1)).astype(
        np.float32)


# -- synthetic scenes ------------------------------------------------------------------------------
@dataclass
class SyntheticScene:
    """One synthetic scene: ``rgb`` ``(3, H, W)`` float32 in [0, 1], ``mask`` ``(H, W)`` bool
    (the person, exact), ``skin`` ``(H, W)`` bool (head and hands, exact; inside ``mask``)."""

    rgb: np.ndarray
    mask: np.ndarray
    skin: np.ndarray


_SKIN_TONES = np.array([[0.94, 0.76, 0.62], [0.86, 0.63, 0.48], [0.72, 0.50, 0.36],
                        [0.55, 0.37, 0.25], [0.40, 0.26, 0.17]], dtype=np.float32)
_CLOTH_COLOURS = np.array([[0.80, 0.10, 0.10], [0.10, 0.30, 0.80], [0.10, 0.60, 0.20],
                           [0.95, 0.85, 0.15], [0.15, 0.15, 0.15]], dtype=np.float32)
"""Five clothing colours (the LRT-Human dataset has 5, paper Table 2)."""


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float,
             angle: float = 0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = c * dx + s * dy      # along the rotated x axis
    v = -s * dx + c * dy
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def render_person(rng: np.random.Generator, height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A standing person's silhouette from ellipses: head, torso, two arms (swung by a random
    angle), two legs (spread by a random stride), at a random horizontal position and a random
    height of 55..95% of the image, feet near the bottom.

    Args:
        rng: the pose source (same generator state, same person).
    Returns:
        ``(person, skin)``: ``(height, width)`` bool each, skin (head, hands) inside person.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    tall = rng.uniform(0.55, 0.95) * height
    foot = height - rng.uniform(0.0, 0.08) * height
    top = foot - tall
    cx = rng.uniform(0.12, 0.88) * width
    u = tall / 7.5                                     # a head height (7.5 heads tall)
    head = _ellipse(yy, xx, top + 0.5 * u, cx, 0.5 * u, 0.38 * u)
    torso_cy = top + 2.6 * u
    torso = _ellipse(yy, xx, torso_cy, cx, 1.65 * u, 0.75 * u)
    stride = rng.uniform(0.0, 0.35)
    legs = np.zeros_like(head)
    for side in (-1, 1):
        legs |= _ellipse(yy, xx, top + 5.6 * u, cx + side * 0.35 * u, 2.0 * u, 0.32 * u,
                         side * stride)
    arms = np.zeros_like(head)
    hands = np.zeros_like(head)
    for side in (-1, 1):
        swing = side * rng.uniform(0.05, 0.6)
        ax = cx + side * 0.95 * u
        ay = top + 2.7 * u
        arms |= _ellipse(yy, xx, ay, ax, 1.4 * u, 0.22 * u, swing)
        hx, hy = ax - np.sin(swing) * 1.5 * u, ay + np.cos(swing) * 1.5 * u
        hands |= _ellipse(yy, xx, hy, hx, 0.28 * u, 0.22 * u)
    person = head | torso | legs | arms | hands
    skin = head | (hands & ~torso)
    return person, skin


@functools.lru_cache(maxsize=len(BACKGROUND_PHOTOS))
def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3].transpose(2, 0, 1))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    import torch.nn.functional as F

    photo = _photo(BACKGROUND_PHOTOS[int(rng.integers(len(BACKGROUND_PHOTOS)))])
    _, ph, pw = photo.shape
    scale = rng.uniform(1.0, min(ph / height, pw / width) * 0.9)
    ch, cw = int(height * scale), int(width * scale)
    y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    patch = torch.from_numpy(photo[:, y0:y0 + ch, x0:x0 + cw].copy())[None]
    patch = F.interpolate(patch, size=(height, width), mode="bilinear", antialias=True,
                          align_corners=False)
    return patch[0].clamp_(0.0, 1.0).numpy()


def synthetic_scene(seed: int, height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH,
                    empty_probability: float = 0.1) -> SyntheticScene:
    """One SYNTHETIC scene: a background patch cut from a scikit-image photograph
    (:data:`BACKGROUND_PHOTOS`, random photo, position and zoom) and, unless the scene is empty
    (probability ``empty_probability``; LRT-Human has 0 or 1 occupant, paper Table 2), one
    person of :func:`render_person` in one of five clothing colours (legs a darker shade) with
    a skin-toned head and hands, a little shading noise on the person.

    Args:
        seed: the scene's seed, >= 0 (same seed, same scene).
    Returns:
        a :class:`SyntheticScene` with exact masks.
    """
    rng = np.random.default_rng(seed)
    rgb = _background(rng, height, width)
    if rng.uniform() < empty_probability:
        none = np.zeros((height, width), dtype=bool)
        return SyntheticScene(rgb.astype(np.float32), none, none.copy())
    person, skin = render_person(rng, height, width)
    cloth = _CLOTH_COLOURS[int(rng.integers(len(_CLOTH_COLOURS)))]
    tone = _SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))]
    colour = np.empty((3, height, width), dtype=np.float32)
    colour[:] = cloth[:, None, None]
    lower = np.arange(height)[:, None] > (np.argmax(person.any(axis=1)) + 0.55 * person.any(
        axis=1).sum())
    colour[:, lower.repeat(width, axis=1)] *= 0.6
    colour[:, skin] = tone[:, None]
    colour += rng.normal(0.0, 0.03, size=colour.shape).astype(np.float32)
    rgb = np.where(person[None], colour, rgb)
    return SyntheticScene(np.clip(rgb, 0.0, 1.0).astype(np.float32), person, skin)


def _target(field: np.ndarray, target: str, size: tuple[int, int]) -> torch.Tensor:
    if target == "heatmap":
        return torch.from_numpy(rescale_heatmap(pool_heatmap(field, size)))[None]
    return torch.from_numpy(quantise_levels(field))


def _check_target(target: str) -> None:
    if target not in ("heatmap", "levels"):
        raise SpdnnError(f"unknown thermal target {target!r}; expected 'heatmap' (SPADE-SR) or "
                         f"'levels' (Thermalnet)", field="data.options.target")


class SyntheticThermalDataset(Dataset):
    """``n`` SYNTHETIC scenes (:func:`synthetic_scene` of ``seed + i``) with the SYNTHETIC
    thermal stand-in (:func:`synthetic_thermal_field`, noise seeded per item).

    Items ``(rgb float32 (3, 40, 64) in [0, 1], target)``: ``target="heatmap"`` gives
    ``float32 (1, 5, 8)`` in [-1, 1] (pooled, rescaled; paper sec. 4.2), ``"levels"`` gives
    ``int64 (40, 64)`` in [0, 255] (Thermalnet). Deterministic: same arguments, same items.

    Raises:
        SpdnnError: ``n`` < 1, or an unknown ``target``.
    """

    def __init__(self, n: int, seed: int = 0, target: str = "heatmap",
                 height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH,
                 heatmap_size: tuple[int, int] = (HEATMAP_HEIGHT, HEATMAP_WIDTH),
                 empty_probability: float = 0.1) -> None:
        if n < 1:
            raise SpdnnError(f"the synthetic thermal set needs at least 1 scene, got {n}",
                             field="data.train_size")
        _check_target(target)
        self.n, self.seed, self.target = int(n), int(seed), target
        self.height, self.width, self.heatmap_size = height, width, tuple(heatmap_size)
        self.empty_probability = empty_probability

    def __len__(self) -> int:
        return self.n

    def scene(self, i: int) -> tuple[SyntheticScene, np.ndarray]:
        """Item ``i``'s scene and its SYNTHETIC field ``(H, W)`` float32 in degrees C."""
        s = synthetic_scene(self.seed + i, self.height, self.width, self.empty_probability)
        rng = np.random.default_rng([self.seed + i, 1])
        return s, synthetic_thermal_field(s.mask, skin=s.skin, rng=rng)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        s, field = self.scene(i)
        return torch.from_numpy(s.rgb), _target(field, self.target, self.heatmap_size)


# -- real paired data ------------------------------------------------------------------------------
def _listing(folder: Path, extensions: Sequence[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or p.suffix.lower() not in extensions:
            continue
        if p.stem in out:
            raise SpdnnError(f"{folder} holds two files of stem {p.stem!r}: {out[p.stem].name} "
                             f"and {p.name}", field="data.root", hint="keep one")
        out[p.stem] = p
    return out


def read_heatmap(path: str | Path, field: str | None = "data.root") -> np.ndarray:
    """A thermal file in degrees C: ``.npy`` (any numeric dtype; no pickles) or a 16-bit PNG
    (:data:`PNG_UNITS_C` degrees C per unit), as float32 ``(h, w)`` (a leading axis of 1 is
    dropped). The folder loader's heatmaps and full-resolution thermal images, and ``spdnn
    predict``'s heatmaps of a SPADE-SR run, are read with it.

    Raises:
        SpdnnError: the file cannot be read, is not numeric, or is a PNG of another bit depth
            (one line naming the file, at ``field``).
    """
    from spdnn.io import check_regular_input

    path = Path(path)
    check_regular_input(path, "heatmap")
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
            if not np.issubdtype(arr.dtype, np.number):
                raise ValueError(f"dtype {arr.dtype} is not numeric")
            arr = arr.astype(np.float32)
        else:
            from spdnn.io import read_image

            raw = read_image(path, "heatmap", field=field)
            if raw.dtype != np.uint16:
                raise ValueError(f"a PNG heatmap must be 16-bit, this one is {raw.dtype}")
            arr = raw.astype(np.float32) * PNG_UNITS_C
    except SpdnnError:
        raise
    except Exception as e:  # numpy / imageio raise many kinds
        raise SpdnnError(f"cannot read heatmap {path}: {type(e).__name__}: {e}", field=field,
                         hint="remove or replace the file") from None
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


class ThermalFolderDataset(Dataset):
    """Real paired data: ``root/rgb/<stem>.<png|jpg|...>`` with ``root/thermal/<stem>.npy``
    (degrees C, float ``(h, w)`` or ``(1, h, w)``) or ``root/thermal/<stem>.png`` (16-bit,
    :data:`PNG_UNITS_C` degrees C per unit). Nothing is written.

    What a thermal file is, is told by its shape: exactly ``heatmap_size`` (5 x 8) is a
    thermopile heatmap (SPADE-SR, ``target="heatmap"``); any other shape at least as large in
    both dimensions is a full-resolution thermal image (Thermalnet, ``target="levels"``).

    Items ``(rgb float32 (3, H, W) in [0, 1], target)``: the RGB image resized (anti-aliased
    bilinear, :func:`spdnn.data.images.fit_images`) to ``image_size``; ``target="heatmap"``: the
    heatmap ``float32 (1, 5, 8)`` rescaled from [19, 30] C to [-1, 1] (paper sec. 4.2);
    ``target="levels"``: the thermal image resized the same way to ``image_size`` (in degrees C)
    and quantised, ``int64 (H, W)`` in [0, 255] (:func:`quantise_levels`). Thermal files are
    read and checked when the dataset is built; RGB images (and full-resolution thermal images,
    again) when an item is read.

    Raises:
        SpdnnError (``data.root``), one line each: no ``rgb/`` or ``thermal/`` folder, no pairs,
        stems in one folder but not the other (the first few named), a thermal file that cannot
        be read or holds NaN / infinity; for ``"heatmap"`` a heatmap whose size is not
        ``heatmap_size`` (the generator's ``h`` input), for ``"levels"`` a thermal file of the
        heatmap's size or smaller (no full-resolution image); an unreadable RGB image when its
        item is read. An unknown ``target``.
    """

    def __init__(self, root: str | Path, heatmap_size: tuple[int, int] = (HEATMAP_HEIGHT,
                                                                          HEATMAP_WIDTH),
                 image_size: tuple[int, int] = (IMAGE_HEIGHT, IMAGE_WIDTH),
                 target: str = "heatmap") -> None:
        _check_target(target)
        root = Path(root)
        folders = {name: root / name for name in ("rgb", "thermal")}
        for name, folder in folders.items():
            if not folder.is_dir():
                raise SpdnnError(f"{root} has no {name}/ folder (expected rgb/ and thermal/ "
                                 f"with files of the same stem)", field="data.root")
        rgb = _listing(folders["rgb"], RGB_EXTENSIONS)
        thermal = _listing(folders["thermal"], (".npy", ".png"))
        only_rgb, only_thermal = sorted(set(rgb) - set(thermal)), sorted(set(thermal) - set(rgb))
        if only_rgb or only_thermal:
            parts = [f"{len(s)} only in {n}/ ({', '.join(s[:3])}{', ...' if len(s) > 3 else ''})"
                     for n, s in (("rgb", only_rgb), ("thermal", only_thermal)) if s]
            raise SpdnnError(f"unpaired stems in {root}: {'; '.join(parts)}", field="data.root",
                             hint="every rgb/ image needs a thermal/ heatmap of the same stem")
        if not rgb:
            raise SpdnnError(f"{root} holds no (rgb, thermal) pairs", field="data.root")
        self.stems = sorted(rgb)
        self.rgb_paths = [rgb[s] for s in self.stems]
        self.thermal_paths = [thermal[s] for s in self.stems]
        self.heatmap_size, self.image_size = tuple(heatmap_size), tuple(image_size)
        self.target = target
        heatmaps = []
        for path in self.thermal_paths:
            arr = read_heatmap(path)
            size = "x".join(map(str, arr.shape))
            if target == "heatmap" and arr.shape != self.heatmap_size:
                raise SpdnnError(
                    f"heatmap {path} is {size}, the generator's h "
                    f"input is {heatmap_size[0]}x{heatmap_size[1]} (height x width)",
                    field="data.root")
            if target == "levels" and (arr.ndim != 2 or arr.shape == self.heatmap_size
                                       or arr.shape[0] < self.heatmap_size[0]
                                       or arr.shape[1] < self.heatmap_size[1]):
                raise SpdnnError(
                    f"thermal file {path} is {size}, not a full-resolution thermal image (a "
                    f"{heatmap_size[0]}x{heatmap_size[1]} file is a heatmap); Thermalnet's "
                    f"levels need thermal images larger than the heatmap", field="data.root")
            if not np.all(np.isfinite(arr)):
                raise SpdnnError(f"heatmap {path} holds NaN or infinite values",
                                 field="data.root", hint="remove or replace the file")
            if target == "heatmap":
                heatmaps.append(arr)
        self.heatmaps = (torch.from_numpy(rescale_heatmap(np.stack(heatmaps)))[:, None]
                         if target == "heatmap" else None)

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = read_image(self.rgb_paths[i])
        img = fit_images(img, (3, *self.image_size))[0]
        if self.heatmaps is not None:
            return img, self.heatmaps[i].clone()
        import torch.nn.functional as F

        field = torch.from_numpy(read_heatmap(self.thermal_paths[i]))[None, None]
        if tuple(field.shape[2:]) != self.image_size:
            field = F.interpolate(field, size=self.image_size, mode="bilinear", antialias=True,
                                  align_corners=False)
        return img, torch.from_numpy(quantise_levels(field[0, 0].numpy()))


class VtestThermalDataset(Dataset):
    """Real RGB people (windows of a video, :class:`spdnn.data.people.PeopleCrops`, by default
    OpenCV's vtest.avi) with the SYNTHETIC thermal stand-in of each window's foreground mask
    (:func:`synthetic_thermal_field`, skin by :func:`skin_mask_from_rgb`, noise seeded by
    ``(seed, crop index)``): the RGB is real, the thermal side is not.

    Args:
        crops: the extracted windows (``(N, 3, H, W)`` uint8, masks ``(N, H, W)``).
        indices: which windows, in item order (e.g. one side of
            :func:`spdnn.data.people.split_by_frames`).
        seed: the noise seed.
        target: ``"heatmap"``: ``float32 (1, h, w)`` in [-1, 1] (pooled to ``heatmap_size``,
            rescaled from 19..30 C, SPADE-SR sec. 4.2); ``"levels"``: ``int64 (H, W)`` in
            [0, 255] (Thermalnet, :func:`quantise_levels`).
    Items:
        ``(rgb float32 (3, H, W) in [0, 1], target)``; deterministic (same arguments, same items).
    Raises:
        SpdnnError: an unknown ``target``; windows that do not pool to ``heatmap_size``.
    """

    def __init__(self, crops, indices: Sequence[int], seed: int = 0, target: str = "heatmap",
                 heatmap_size: tuple[int, int] = (HEATMAP_HEIGHT, HEATMAP_WIDTH)) -> None:
        _check_target(target)
        self.crops, self.indices = crops, [int(i) for i in indices]
        self.seed, self.target, self.heatmap_size = int(seed), target, tuple(heatmap_size)
        if target == "heatmap":
            pool_heatmap(np.zeros(crops.mask.shape[1:], np.float32), self.heatmap_size)

    def __len__(self) -> int:
        return len(self.indices)

    def scene(self, i: int) -> tuple[SyntheticScene, np.ndarray]:
        """Item ``i``'s window (``skin`` by the colour rule, inside the mask) and its SYNTHETIC
        field ``(H, W)`` float32 in degrees C."""
        j = self.indices[i]
        rgb = self.crops.rgb[j].astype(np.float32) / 255.0
        mask = self.crops.mask[j]
        skin = skin_mask_from_rgb(rgb) & mask
        rng = np.random.default_rng([self.seed, j, 1])
        return SyntheticScene(rgb, mask, skin), synthetic_thermal_field(mask, skin=skin, rng=rng)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self.indices):
            raise IndexError(i)
        s, field = self.scene(i)
        return torch.from_numpy(s.rgb), _target(field, self.target, self.heatmap_size)


# -- the one entry point the thermal tasks use -------------------------------------------------------
THERMAL_SOURCES = ("synthetic", "vtest", "folder")
"""``data.source`` values :func:`thermal_datasets` reads."""


def _vtest_missing(root: str | None) -> str | None:
    """Why ``data.source: vtest`` cannot run here (None: it can).

    Raises:
        SpdnnError: ``data.root`` names a file that does not exist (a typo is not a fallback).
    """
    from spdnn.data.people import VTEST_PATH

    if root is not None and not Path(root).is_file():
        raise SpdnnError("the video of data.source vtest does not exist", file=str(root),
                         field="data.root", hint="point data.root at a video, or leave it "
                                                 f"out for {VTEST_PATH}")
    gone = []
    if root is None and not VTEST_PATH.is_file():
        gone.append(f"OpenCV's vtest.avi ({VTEST_PATH}; `make opencv-vtest` extracts it from "
                    f"the Debian package opencv-doc)")
    try:
        has_cv2 = importlib.util.find_spec("cv2") is not None
    except (ImportError, ValueError):
        has_cv2 = False
    if not has_cv2:
        gone.append("OpenCV (`pip install 'spdnn[train]'`, or opencv-python-headless>=4.8,<5)")
    return " and ".join(gone) or None


def thermal_datasets(data, target: str = "heatmap",
                     image_size: tuple[int, int] = (IMAGE_HEIGHT, IMAGE_WIDTH),
                     heatmap_size: tuple[int, int] = (HEATMAP_HEIGHT, HEATMAP_WIDTH),
                     progress: bool = True) -> tuple[Dataset, Dataset]:
    """``(train, validation)`` thermal datasets of a recipe's ``data`` section
    (:class:`spdnn.train.recipe.DataSpec`), the one loader of the thermal tasks (SPADE-SR and
    Thermalnet).

    Sources (``data.source``):

    * ``synthetic``: :class:`SyntheticThermalDataset`, ``train_size`` scenes from seed
      ``data.seed`` and ``val_size`` disjoint ones after them (SYNTHETIC RGB and thermal).
    * ``vtest``: :class:`VtestThermalDataset`, real RGB people from the video ``data.root``
      (default OpenCV's vtest.avi, :data:`spdnn.data.people.VTEST_PATH`) with the SYNTHETIC
      thermal stand-in. ``target="heatmap"``: person crops of ``image_size`` (40 x 64);
      ``"levels"``: one scene a frame resized to ``image_size`` (224 x 224), the MOG2 foreground
      as the person mask. Split by frame ranges (:func:`spdnn.data.people.split_by_frames`), then
      a permutation seeded with ``data.seed`` picks up to ``train_size`` / ``val_size`` of each
      side (fewer when the video has fewer: 534 / 193 crops, 123 / 31 scenes at the defaults).
      ``data.options``: :class:`spdnn.data.people.PeopleSettings`. Without the default video or
      without OpenCV: the ``synthetic`` source, with one warning naming what is missing and how
      to get it.
    * ``folder``: :class:`ThermalFolderDataset` at ``data.root``, split by a permutation seeded
      with ``data.seed``: ``val_size`` pairs for validation, up to ``train_size`` of the rest
      for training. Heatmap files for ``"heatmap"``, full-resolution thermal images for
      ``"levels"``.

    Args:
        data: the recipe's data section (``source``, ``root``, ``train_size``, ``val_size``,
            ``seed``, ``options``; ``options`` only for ``vtest``).
        target: ``"heatmap"`` (items ``(rgb (3, H, W), heatmap (1, h, w) in [-1, 1])``) or
            ``"levels"`` (``(rgb, levels int64 (H, W) in [0, 255])``).
        image_size: ``(H, W)`` of the RGB images (the generator's output / Thermalnet's input).
        heatmap_size: ``(h, w)`` of the heatmap (the generator's ``h`` input).
        progress: a progress bar while ``vtest`` extracts (not when it reads its cache).

    Raises:
        SpdnnError: an unknown source (``data.source``), a folder source without ``root``,
            fewer than ``val_size + 1`` pairs in the folder, a ``vtest`` ``root`` that does not
            exist, bad ``data.options``, an unknown ``target``, or any error of the datasets
            and the extraction themselves.
    """
    from torch.utils.data import Subset

    _check_target(target)
    if data.source == "vtest":
        from spdnn.data import people as P

        settings = P.people_settings(data.options)
        why = _vtest_missing(data.root)
        if why is None:
            mode = "crops" if target == "heatmap" else "scenes"
            if target == "heatmap":   # a size that cannot pool fails before the extraction
                pool_heatmap(np.zeros(image_size, np.float32), heatmap_size)
            crops = P.extract_people(data.root or P.VTEST_PATH, image_size, mode, settings,
                                     progress=progress)
            train, val = P.split_by_frames(crops, settings.val_fraction, settings.gap_frames)
            rng = np.random.default_rng(data.seed)
            train = rng.permutation(train)[:data.train_size]
            val = rng.permutation(val)[:data.val_size]
            return tuple(VtestThermalDataset(crops, idx, seed=data.seed, target=target,
                                             heatmap_size=heatmap_size) for idx in (train, val))
        warnings.warn(f"data.source vtest: {why} missing; using data.source synthetic "
                      f"(SYNTHETIC scenes) instead", stacklevel=2)
        data = data.model_copy(update={"source": "synthetic", "options": {}})
    if data.options:
        key = next(iter(data.options))
        raise SpdnnError(f"data.options.{key} is not an option of data.source {data.source!r}",
                         field=f"data.options.{key}",
                         hint="only data.source vtest takes options")
    if data.source == "synthetic":
        kw = dict(target=target, height=image_size[0], width=image_size[1],
                  heatmap_size=heatmap_size)
        return (SyntheticThermalDataset(data.train_size, seed=data.seed, **kw),
                SyntheticThermalDataset(data.val_size, seed=data.seed + data.train_size, **kw))
    if data.source == "folder":
        if not data.root:
            raise SpdnnError("data.source 'folder' needs data.root: a folder with rgb/ and "
                             "thermal/", field="data.root")
        ds = ThermalFolderDataset(data.root, heatmap_size=heatmap_size, image_size=image_size,
                                  target=target)
        if len(ds) <= data.val_size:
            raise SpdnnError(f"{data.root} holds {len(ds)} pairs, too few for val_size "
                             f"{data.val_size} and a training set", field="data.val_size")
        perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(data.seed))
        val, train = perm[:data.val_size].tolist(), perm[data.val_size:].tolist()
        return Subset(ds, train[:data.train_size]), Subset(ds, val)
    raise SpdnnError(f"unknown thermal data.source {data.source!r}", field="data.source",
                     hint="use " + ", ".join(THERMAL_SOURCES))
