"""Generator inversion (thesis App. F eq. 4; SPADE-SR sec. 3.4): a generator whose inverse is
known gives its latent back; the range, batching and the latents file."""

from __future__ import annotations

import torch
from torch import nn

from spdnn.tasks.gan.invert import (
    invert_encoder,
    invert_optimize,
    load_latents,
    save_latents,
    train_encoder,
)


def _linear_generator(d: int = 4, seed: int = 0) -> nn.Module:
    """G(z) = A z + b reshaped to (1, 4, 4): A (16 x d) has full column rank, so the MAE has
    the unique minimiser z* for an image G(z*)."""
    torch.manual_seed(seed)
    g = nn.Sequential(nn.Linear(d, 16), nn.Unflatten(1, (1, 4, 4)))
    with torch.no_grad():
        g[0].weight.mul_(3)
    return g


def test_optimize_recovers_the_latent_of_a_linear_generator():
    g = _linear_generator()
    z_true = torch.rand(6, 4, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    with torch.no_grad():
        x = g(z_true)
    inv = invert_optimize(g, x, to_unit=lambda v: v, steps=300, batch_size=4)
    assert inv.z.shape == (6, 4)
    assert (inv.z - z_true).abs().max() < 2e-2, (inv.z - z_true).abs().max()
    assert inv.mae.shape == (6,) and inv.mae.max() < 1e-2
    assert inv.settings["range"] == "tanh"


def test_latent_stays_in_range_and_batching_does_not_change_it():
    g = _linear_generator()
    z_far = torch.full((3, 4), 3.0)  # outside U[-1, 1]: the best in-range z sits at the bound
    with torch.no_grad():
        x = g(z_far)
    a = invert_optimize(g, x, to_unit=lambda v: v, steps=40, batch_size=3)
    b = invert_optimize(g, x, to_unit=lambda v: v, steps=40, batch_size=1)
    assert a.z.abs().max() <= 1.0
    assert torch.allclose(a.z, b.z, atol=1e-5)
    assert not any(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())
    assert all(p.requires_grad for p in g.parameters())


def test_encoder_learns_the_inverse_of_a_linear_generator():
    torch.manual_seed(0)
    g = _linear_generator()
    z = torch.rand(256, 4) * 1.6 - 0.8
    with torch.no_grad():
        x = g(z)
    enc = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.Tanh())
    before = invert_encoder(enc, g, x[:32], to_unit=lambda v: v).mae.mean()
    train_encoder(enc, g, x, steps=400, lr=1e-2, batch_size=32)
    inv = invert_encoder(enc, g, x[:32], to_unit=lambda v: v)
    assert inv.mae.mean() < 0.1 * before
    assert (inv.z - z[:32]).abs().mean() < 0.05


def test_latents_file_roundtrip(tmp_path):
    g = _linear_generator()
    x = torch.rand(3, 1, 4, 4)
    inv = invert_optimize(g, x, steps=2)
    masks = (torch.rand(3, 1, 4, 4) > 0.5).float()
    p = save_latents(tmp_path / "l.pt", inv, x, {"masks": masks}, {"run": "r"})
    st = load_latents(p)
    assert torch.equal(st["z"], inv.z) and torch.equal(st["masks"], masks)
    assert st["meta"]["z_dim"] == 4 and st["meta"]["method"] == "optimize"
