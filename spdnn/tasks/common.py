"""Pieces shared by the tasks: deterministic splits, prediction grids and sample grids."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset


def split_dataset(ds: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Deterministic train/validation split of a dataset by a seeded permutation."""
    n = len(ds)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, int(round(n * val_fraction)))
    return Subset(ds, perm[n_val:]), Subset(ds, perm[:n_val])


def prediction_grid(rows: list[tuple[str, torch.Tensor]], path: Path, title: str) -> Path:
    """Save an image grid: one row per named ``(N, 1, H, W)`` tensor, one column per sample.

    Values are shown in [0, 1] with a gray colormap (inputs, targets, predictions).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = rows[0][1].shape[0]
    h, w = rows[0][1].shape[-2:]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n * w / h, 1.6 * len(rows) + 0.4),
                             squeeze=False)
    for r, (name, t) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(t[c, 0].detach().float().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def sample_grid(images: torch.Tensor, path: Path, title: str, cols: int | None = None) -> Path:
    """Save ``(N, C, H, W)`` images in [0, 1] (C = 1 or 3) as a grid PNG: ``cols`` per row
    (default: a square-ish grid)."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(0.8 * cols, 0.8 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = images[i].permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
    fig.suptitle(title, fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    """Lay out, write (PNG, 90 dpi, folders created) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
