"""A small latents file for the aspect recipes (tests/test_recipes.py, tests/test_aspect.py):
the aspect task reads the output of ``spdnn invert``, which needs a trained generator; the
small form of a recipe gets random latents in [-1, 1] with random 0/1 masks (or landmarks)
of the recipe network's shapes instead."""

from __future__ import annotations

from pathlib import Path

import torch


def small_latents(path: Path, z_dim: int, aspect_shape: tuple[int, ...], n: int = 8,
                  kind: str = "masks", seed: int = 0) -> Path:
    """Write ``n`` random latents of ``z_dim`` with aspects of ``aspect_shape`` to ``path``."""
    from spdnn.tasks.gan.invert import Inversion, save_latents

    g = torch.Generator().manual_seed(seed)
    z = torch.rand(n, z_dim, generator=g) * 2 - 1
    aspect = torch.rand(n, *aspect_shape, generator=g)
    if kind == "masks":
        aspect = (aspect > 0.5).float()
    inv = Inversion(z, torch.zeros(n), 0.0, {"method": "optimize"})
    return save_latents(path, inv, torch.zeros(n, 1, 2, 2), {kind: aspect}, {"run": "test"})


def recipe_latents(recipe, tmp_path: Path) -> Path:
    """:func:`small_latents` fitting an aspect recipe's network."""
    from spdnn.shapes import infer
    from spdnn.train.recipe import netspecs_of

    net = netspecs_of(recipe)["net"]
    out = tuple(list(infer(net).output_shapes().values())[0])
    kind = "masks" if len(out) == 3 else "landmarks"
    n = recipe.data.train_size + recipe.data.val_size
    return small_latents(tmp_path / "latents.pt", net.inputs[0].shape[0], out, n, kind)
