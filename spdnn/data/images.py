"""Image datasets for the generative tasks (GANs) and classifiers: real images that ship with
packages, as ``(image float32 (C, H, W) in [0, 1], label int64 ())`` items.

* ``digits``: scikit-learn's 1,797 **real** 8x8 handwritten digits (UCI optical digits),
  scaled from 0..16 to [0, 1]; ten classes.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from spdnn.errors import SpdnnError


class TensorImages(Dataset):
    """Images ``(N, C, H, W)`` float32 in [0, 1] and labels ``(N,)`` int64 as a dataset of
    ``(image, label)`` items."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> None:
        self.images, self.labels = images.contiguous(), labels.contiguous()
        self.class_names = class_names

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]


def load_digits_images() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """scikit-learn's real 8x8 digits: images ``(1797, 1, 8, 8)`` in [0, 1], labels 0..9."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images).float().div_(16.0).unsqueeze(1)
    return images, torch.from_numpy(d.target).long(), [str(i) for i in range(10)]


SOURCES = {"digits": load_digits_images}
"""Loaders by ``data.source`` name: each returns ``(images, labels, class_names)``."""


def image_datasets(data, image_shape: tuple[int, int, int]) -> tuple[TensorImages, TensorImages]:
    """``(train, validation)`` datasets of the recipe's ``data`` section for networks that read
    images of ``image_shape`` ``(C, H, W)``: the first ``train_size`` images of a permutation
    seeded by ``data.seed`` train, the last ``val_size`` validate (they never overlap).

    Raises:
        SpdnnError: unknown source, sizes beyond the dataset, an image shape the source cannot
            give.
    """
    if data.source not in SOURCES:
        raise SpdnnError(f"unknown image data source '{data.source}'", field="data.source",
                         hint=f"use one of: {', '.join(sorted(SOURCES))}")
    images, labels, names = SOURCES[data.source]()
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise SpdnnError(f"data source '{data.source}' gives images of shape "
                         f"{tuple(images.shape[1:])}, the networks read {tuple(image_shape)}",
                         field="data.source")
    n = len(images)
    if data.train_size + data.val_size > n:
        raise SpdnnError(f"train_size + val_size = {data.train_size + data.val_size} exceeds the "
                         f"{n:,} images of '{data.source}'", field="data.train_size")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(data.seed))
    tr, va = perm[:data.train_size], perm[n - data.val_size:]
    return (TensorImages(images[tr], labels[tr], names),
            TensorImages(images[va], labels[va], names))
