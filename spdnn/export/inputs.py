"""The inputs onnxruntime and torch are compared on: random tensors, real photographs
(scikit-image's ``camera`` and ``astronaut``, for image inputs with 1 or 3 channels) and the
caller's own."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from spdnn.export.report import ExportError
from spdnn.spec import Netspec

__all__ = ["check_sets", "real_inputs"]


def real_inputs(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Real photographs shaped ``(1, C, H, W)`` for an image input with 1 or 3 channels
    (scikit-image's ``camera`` and ``astronaut``, resized, in [0, 1]); ``{}`` otherwise."""
    if len(shape) != 3 or shape[0] not in (1, 3):
        return {}
    from skimage import color, data, transform

    c, h, w = shape
    imgs = {"camera": data.camera().astype(np.float64) / 255.0,
            "astronaut": data.astronaut().astype(np.float64) / 255.0}
    out = {}
    for name, img in imgs.items():
        if c == 1 and img.ndim == 3:
            img = color.rgb2gray(img)
        elif c == 3 and img.ndim == 2:
            img = color.gray2rgb(img)
        img = transform.resize(img, (h, w), anti_aliasing=True)
        img = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
        out[name] = np.clip(img, 0.0, 1.0).astype(np.float32)[None]
    return out


def check_sets(spec: Netspec, batch: int | None, user: list | None,
                seed: int = 0) -> list[tuple[str, list[np.ndarray]]]:
    """Named lists of input arrays (one per network input) to compare on."""
    rng = np.random.default_rng(seed)
    shapes = [i.shape for i in spec.inputs]
    sets: list[tuple[str, list[np.ndarray]]] = []
    rb = batch or 3

    def rand(inp: Any, n: int) -> np.ndarray:
        if inp.dtype == "int64":
            return rng.integers(0, inp.num_classes, (n, *inp.shape), dtype=np.int64)
        return rng.random((n, *inp.shape), dtype=np.float32)

    sets.append(("random", [rand(i, rb) for i in spec.inputs]))
    reals = [real_inputs(s) for s in shapes]
    for name in ("camera", "astronaut"):
        if any(name in r for r in reals):
            arrs = []
            for i, r in zip(spec.inputs, reals):
                arrs.append(r[name] if name in r else rand(i, 1))
            if batch and batch != 1:
                arrs = [np.repeat(a, batch, axis=0) for a in arrs]
            sets.append((name, arrs))
    for k, item in enumerate(user or []):
        items = item if isinstance(item, (list, tuple)) else [item]
        arrs = [np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t,
                           dtype=np.int64 if i.dtype == "int64" else np.float32)
                for t, i in zip(items, spec.inputs)]
        if len(arrs) != len(shapes):
            raise ExportError(f"check input {k} has {len(arrs)} tensor(s); the network takes "
                              f"{len(shapes)}")
        sets.append((f"user[{k}]", arrs))
    return sets

