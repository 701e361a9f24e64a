"""Pieces shared by the tasks: a recipe's ``options`` validated into a task's model, deterministic splits, prediction grids (with colour maps, colour
bars and invalid pixels in a neutral colour), sample grids, and :func:`fit_image` (how ``spdnn
predict`` brings an image to a network's input size and its map back)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch.utils.data import Dataset, Subset

from spdnn.errors import SpecError, validated
from spdnn.io import save_figure


def validate_options(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    """``model`` validated from a recipe's ``options`` section.

    Raises:
        SpecError: at ``options.<field>`` with pydantic's message.
    """
    return validated(model, data or {}, "options", error=SpecError,
                     hint=f"options of this task: {', '.join(model.model_fields)}")


def split_dataset(ds: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Deterministic train/validation split of a dataset by a seeded permutation."""
    n = len(ds)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, int(round(n * val_fraction)))
    return Subset(ds, perm[n_val:]), Subset(ds, perm[:n_val])


@dataclass(frozen=True)
class MapStyle:
    """How :func:`prediction_grid` draws one named map.

    Attributes:
        cmap: a matplotlib colour map (``"gray"``, ``"magma"``...); ``None``: the tensor is an
            RGB image ``(N, 3, H, W)`` in [0, 1] (e.g. a categorical error map).
        vmin, vmax: the value range the colour map spans (fixed, so samples compare).
        valid: ``(N, 1, H, W)`` 0/1, 0 where the map has no ground truth: those pixels are
            drawn in the neutral colour ``bad`` instead of as speckle.
        bad: the neutral colour of invalid pixels (a matplotlib colour).
        colorbar: the colour bar's label; ``None``: no colour bar.
        legend: ``(colour, label)`` patches explaining a categorical RGB map.
    """

    cmap: str | None = "gray"
    vmin: float = 0.0
    vmax: float = 1.0
    valid: torch.Tensor | None = None
    bad: str = "0.62"
    colorbar: str | None = None
    legend: tuple[tuple[Any, str], ...] = ()


def prediction_grid(rows: list[tuple], path: Path, title: str) -> Path:
    """Save an image grid of a validation batch: one named map per ``(name, tensor)`` or
    ``(name, tensor, MapStyle)`` entry, one sample per position along the other axis.

    Tensors are ``(N, 1, H, W)`` (or ``(N, 3, H, W)`` RGB with ``MapStyle(cmap=None)``); without
    a style a map is drawn in gray over [0, 1]. Maps at least twice as wide as high (depth's
    80 x 264) are laid out one sample per row and one named map per column, others one named map
    per row. Colour bars sit beside their row (below their column). PNG at 150 dpi.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    entries = [(r[0], r[1], r[2] if len(r) > 2 else MapStyle()) for r in rows]
    n = entries[0][1].shape[0]
    h, w = entries[0][1].shape[-2:]
    m = len(entries)
    wide = w >= 2 * h
    if wide:  # samples down, maps across
        pw = 2.9
        fig, axes = plt.subplots(n, m, figsize=(pw * m, pw * h / w * n + 1.3), squeeze=False,
                                 layout="constrained")
        grid = axes.T  # grid[map][sample]
    else:
        ph = 1.5
        bars = any(e[2].colorbar for e in entries)
        legends = any(e[2].legend for e in entries)
        fig, axes = plt.subplots(m, n, figsize=(ph * w / h * n * 1.05 + (1.2 if bars else 0.3),
                                                ph * m + 0.5 + (0.3 if legends else 0.0)),
                                 squeeze=False, layout="constrained")
        if bars:  # the inset colour bars lie outside the layout: keep room for them and labels
            fig.get_layout_engine().set(rect=(0, 0, 1 - 0.8 / fig.get_figwidth(), 1))
        grid = axes
    for i, (name, t, st) in enumerate(entries):
        im = None
        for j in range(n):
            ax = grid[i][j]
            a = t[j].detach().float().cpu().numpy()
            if st.cmap is None:
                im = ax.imshow(np.clip(a.transpose(1, 2, 0), 0, 1), interpolation="nearest")
            else:
                a = a[0]
                if st.valid is not None:
                    a = np.ma.masked_where(st.valid[j, 0].detach().cpu().numpy() < 0.5, a)
                cmap = plt.get_cmap(st.cmap).with_extremes(bad=st.bad)
                im = ax.imshow(a, cmap=cmap, vmin=st.vmin, vmax=st.vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if wide and j == 0:
                ax.set_title(name, fontsize=9)
            elif not wide and j == 0:
                ax.set_ylabel(name, fontsize=9)
        if wide and i == 0:
            for j in range(n):
                grid[i][j].set_ylabel(f"{j + 1}", fontsize=8, rotation=0, labelpad=8, va="center")
        if st.colorbar and st.cmap is not None and im is not None:
            if wide:
                cb = fig.colorbar(im, ax=list(grid[i]), location="bottom", shrink=0.9,
                                  aspect=25, pad=0.02)
            else:  # an inset beside the row's last panel keeps the columns aligned
                cb = fig.colorbar(im, cax=grid[i][-1].inset_axes((1.06, 0.04, 0.06, 0.92)))
            cb.set_label(st.colorbar, fontsize=8)
            cb.ax.tick_params(labelsize=7)
        if st.legend:
            handles = [Patch(facecolor=c, edgecolor="0.3", label=lab) for c, lab in st.legend]
            fig.legend(handles=handles, loc="outside lower center", ncol=len(handles),
                       fontsize=8, frameon=False, title=name, title_fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi=150)


def sample_grid(images: torch.Tensor, path: Path, title: str, cols: int | None = None,
                row_labels: list[str] | None = None) -> Path:
    """Save ``(N, C, H, W)`` images in [0, 1] (C = 1 or 3) as a grid PNG: ``cols`` per row
    (default: a square-ish grid), tiled into one picture with a 1-pixel gap (one ``imshow``,
    so a 100-image grid takes a fraction of a second); ``row_labels`` name the rows (e.g. the
    class of each row of a conditional GAN's samples)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, c, h, w = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    gap = 1
    tile = torch.ones(rows * (h + gap) - gap, cols * (w + gap) - gap, c)
    imgs = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu()
    for i in range(n):
        r, k = divmod(i, cols)
        tile[r * (h + gap):r * (h + gap) + h, k * (w + gap):k * (w + gap) + w] = imgs[i]
    scale = max(0.25, min(0.8, 8.0 / max(cols, rows)))  # inches per image, large grids smaller
    fig, ax = plt.subplots(figsize=(scale * cols + (0.9 if row_labels else 0.2),
                                    scale * rows + 0.5))
    arr = tile.numpy()
    ax.imshow(arr[..., 0] if c == 1 else arr, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    if row_labels:
        ax.set_yticks([r * (h + gap) + h / 2 for r in range(min(rows, len(row_labels)))])
        ax.set_yticklabels(row_labels[:rows], fontsize=7)
        ax.tick_params(length=0)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=8)
    return _save(fig, path, dpi=max(90, int(2 * h / scale)))


def _save(fig, path: Path, dpi: int = 90) -> Path:
    """Lay out (unless the figure has a layout engine), write (PNG, folders created) and close
    a matplotlib figure."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    return save_figure(fig, path, dpi=dpi)


FIT_MODES = ("pad", "crop", "stretch")
"""How ``spdnn predict --fit`` brings an image to the network's input size (see
:func:`fit_image`)."""


def fit_image(img: Any, height: int, width: int, fit: str) -> tuple[Any, Any, str]:
    """Bring an ``(H, W)`` or ``(H, W, C)`` float image to ``(height, width)``.

    ``fit``: ``pad`` scales it to fit inside, keeping its aspect ratio, and pads the rest by
    repeating the edge pixels (the whole image is seen); ``crop`` scales it to cover, keeping its
    aspect ratio, and takes the centre (the borders are not seen); ``stretch`` resizes it to
    the input size (aspect ratio lost). An image of the input size is used as it is.

    Returns ``(network input, undo, what was done)``: ``undo(map)`` takes the network's
    ``(height, width)`` output map back to ``(H, W)`` (under ``crop``, the parts the network
    did not see are 0).
    """
    import numpy as np
    from skimage.transform import resize

    H, W = img.shape[:2]
    if (H, W) == (height, width):
        return img, (lambda m: m), f"already {height}x{width}"

    def scaled(a, shape):
        return resize(a, shape, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)

    if fit == "stretch":
        return (scaled(img, (height, width)), lambda m: scaled(m, (H, W)),
                f"stretched to {height}x{width} (aspect {W / H:.2f} -> {width / height:.2f}); "
                f"map resized back to {H}x{W}")
    if fit == "pad":
        s = min(height / H, width / W)
        nh, nw = min(height, max(1, round(H * s))), min(width, max(1, round(W * s)))
        top, left = (height - nh) // 2, (width - nw) // 2
        pad = [(top, height - nh - top), (left, width - nw - left)] + [(0, 0)] * (img.ndim - 2)
        x = np.pad(scaled(img, (nh, nw)), pad, mode="edge")
        return (x, lambda m: scaled(m[top:top + nh, left:left + nw], (H, W)),
                f"scaled x{s:.3g} to {nh}x{nw} and padded (edge pixels) to {height}x{width}; "
                f"map unpadded and resized back to {H}x{W}")
    s = max(height / H, width / W)  # crop
    nh, nw = max(height, round(H * s)), max(width, round(W * s))
    top, left = (nh - height) // 2, (nw - width) // 2
    x = scaled(img, (nh, nw))[top:top + height, left:left + width]
    r0, r1 = round(top / s), min(H, round((top + height) / s))
    c0, c1 = round(left / s), min(W, round((left + width) / s))

    def undo(m):
        out = np.zeros((H, W), np.float32)
        out[r0:r1, c0:c1] = scaled(m, (r1 - r0, c1 - c0))
        return out

    return (x, undo, f"scaled x{s:.3g} to {nh}x{nw} and centre-cropped to {height}x{width}; "
            f"map resized back to {H}x{W}, rows {r0}-{r1} x columns {c0}-{c1} (0 elsewhere)")
