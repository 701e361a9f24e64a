"""Thermalnet (Kniaz et al., seed 004): SqueezeNet 1.0 fire modules, no global average pool,
two deconvolutions back to the input resolution, per-pixel logits over 256 thermal levels.

The paper gives no parameter count and no layer table beyond sec. 3.2 (Figure 6 is missing
from the text; no public code). The netspec's reconstruction (224x224 input, 256 levels, a
linear conv10 score layer, two per-level k8 s4 deconvolutions) is described in its header; the
count below is hand arithmetic from SqueezeNet 1.0's fire table (Iandola et al. 2016, Table 1),
cross-checked against SqueezeNet 1.0's published 1,248,424.
"""

from __future__ import annotations

import torch

from spdnn.codegen import build_module
from spdnn.shapes import infer
from spdnn.spec import load
from tests.helpers import NETSPECS

SPEC = NETSPECS / "thermalnet" / "thermalnet.yaml"
LEVELS = 256
SIZE = 224

# SqueezeNet 1.0 fire modules: (squeeze, expand1x1, expand3x3); input channels chain from conv1
FIRES = [(16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128), (48, 192, 192),
         (48, 192, 192), (64, 256, 256), (64, 256, 256)]


def fire(cin: int, s: int, e1: int, e3: int) -> int:
    return (cin * s + s) + (s * e1 + e1) + (9 * s * e3 + e3)


def trunk() -> int:
    """conv1 (7x7, 3 -> 96) and fire2..fire9."""
    n, cin = 7 * 7 * 3 * 96 + 96, 96
    for s, e1, e3 in FIRES:
        n += fire(cin, s, e1, e3)
        cin = e1 + e3
    return n


def test_hand_arithmetic():
    assert trunk() == 735_424
    assert trunk() + 512 * 1000 + 1000 == 1_248_424  # SqueezeNet 1.0 (1,000 classes)
    thermal = trunk() + (512 * LEVELS + LEVELS) + 2 * (LEVELS * 1 * 8 * 8)
    assert thermal == 899_520


def test_parameters_match_hand_count():
    spec = load(SPEC)
    info = infer(spec)
    expected = trunk() + (512 * LEVELS + LEVELS) + 2 * (LEVELS * 8 * 8)
    assert info.params == expected
    assert sum(p.numel() for p in build_module(spec).parameters()) == expected


def test_structure():
    spec = load(SPEC)
    ops = [lay.op for lay in spec.layers]
    assert "GlobalAvgPool2d" not in ops  # removed (sec. 3.2)
    assert ops.count("Fire") == 8 and ops.count("ConvTranspose2d") == 2
    assert ops[-2:] == ["ConvTranspose2d", "ConvTranspose2d"]  # the two added deconvolutions
    fires = [lay for lay in spec.layers if lay.op == "Fire"]
    assert [(f.squeeze, f.expand1x1, f.expand3x3) for f in fires] == FIRES
    assert spec.layer("conv10").activation is None  # scores are logits
    info = infer(spec)
    assert info.shapes["fire9"] == (512, 13, 13)
    assert info.shapes["conv10"] == (LEVELS, 13, 13)
    assert info.shapes["up1"] == (LEVELS, 56, 56)
    assert info.shapes["up2"] == (LEVELS, SIZE, SIZE)
    assert spec.outputs[0].from_ == "up2"


def test_forward_restores_input_resolution():
    spec = load(SPEC)
    model = build_module(spec).eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, LEVELS, SIZE, SIZE)
    assert out.shape[-2:] == x.shape[-2:]
    assert torch.isfinite(out).all()
    # a per-pixel distribution over the thermal levels (eq. 1 takes the softmax over q)
    probs = out.softmax(dim=1)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2, SIZE, SIZE))
