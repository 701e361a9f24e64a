"""SPADE-SR netspecs (seed 001, Chiu et al., "Low-Resolution Thermal Sensor-Guided Image
Synthesis"): generators SPADE-SR-32/64/128 and SPADE-64/128, the discriminator and the inversion
encoder (netspecs/spade_sr/, blocks in netspecs/blocks/spade.yaml).

Parameter counts are checked three ways: against Table 3 of the paper (which truncates to 0.1M),
against an exact count worked out here by hand from the layer tables (Table 1 + the authors' code,
sychiu/SPADE-SR), and the hand formulas against literal numbers. Rejected readings of the
architecture are checked to miss Table 3. Forward passes are checked against shapes and against
direct torch re-implementations of the authors' Keras models built from the same weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spdnn.spec as S
from spdnn.codegen import build_module, emit_module
from spdnn.shapes import infer
from tests.helpers import exec_class, randomize_norms

ROOT = Path(__file__).resolve().parents[1]
DIR = ROOT / "netspecs/spade_sr"
LIB = (ROOT / "netspecs/blocks/spade.yaml").as_posix()
BATCH = 2
GENERATORS = ["spade_sr_32", "spade_sr_64", "spade_sr_128", "spade_64", "spade_128"]


def load(name: str) -> S.Netspec:
    return S.load(DIR / f"{name}.yaml")


# --------------------------------------------------------------------------------------------
# hand arithmetic (Table 1; authors' code models/*.py, blocks_v2.py)
# --------------------------------------------------------------------------------------------
def conv(cin: int, cout: int, k: int = 3, bias: bool = True) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def bn(c: int) -> int:  # learned scale and shift (running statistics are buffers)
    return 2 * c


Z, FC = 128, 512 * 5 * 8  # z in R^128 -> Linear -> Hh x Wh x 512 (Table 1), no bias


def main_fixed() -> int:
    """The generator parts that do not depend on the width: the linear layer, the convs of the
    three up-blocks (512->512, 512->256, 256->128; shortcut 1x1 and both 3x3 convs without bias)
    and the output conv 128 -> 3 (with bias)."""
    convs = 0
    for fin, fout in ((512, 512), (512, 256), (256, 128)):
        convs += conv(fin, fout, 1, False) + conv(fin, fout, bias=False) + conv(fout, fout, bias=False)
    return Z * FC + convs + conv(128, 3)


NORMED = [512, 512, 512, 256, 256, 128, 128]  # channels of the 7 (SPADE or SPADE-SR) norms


def semantic_branch(t: int) -> int:
    """ResBlk 1 -> t (1x1 shortcut, two 3x3 convs, all with bias), then 3 x ResBlk up t -> t."""
    first = conv(1, t, 1) + conv(1, t) + conv(t, t)
    up = conv(t, t, 1) + conv(t, t) + conv(t, t)
    return first + 3 * up


def spade_sr_norm(t: int, c: int) -> int:
    """SPADE-SR: gamma and beta 3x3 convs t -> c straight from the semantic features."""
    return 2 * conv(t, c)


def spade_norm(hidden: int, c: int) -> int:
    """SPADE: shared 3x3 conv 1 -> hidden (+ReLU), gamma and beta 3x3 convs hidden -> c."""
    return conv(1, hidden) + 2 * conv(hidden, c)


def spade_sr_generator(t: int) -> int:
    return main_fixed() + semantic_branch(t) + sum(spade_sr_norm(t, c) for c in NORMED)


def spade_generator(hidden: int) -> int:
    return main_fixed() + sum(spade_norm(hidden, c) for c in NORMED)


def discriminator() -> int:
    trunk = (conv(3, 128, 1) + conv(3, 128) + conv(128, 128)           # ResBlock down, no pre-act
             + conv(128, 256, 1) + conv(128, 256) + conv(256, 256)    # ResBlock down
             + conv(256, 512, 1) + conv(256, 512) + conv(512, 512))   # ResBlock down -> 5x8
    score = 512 * 5 * 8 + 1                                           # dense -> 1
    heat = conv(512, 128, 1) + conv(512, 128) + conv(128, 128) + conv(128, 1)
    return trunk + score + heat


def encoder() -> int:
    def down(cin: int, c: int) -> int:  # BN on the block input, BN after the first conv
        return conv(cin, c, 1, False) + bn(cin) + conv(cin, c, bias=False) + bn(c) + conv(c, c, bias=False)

    blocks = down(3, 64) + down(64, 128) + down(128, 256) + down(256, 512)
    return blocks + bn(512) + 512 * 2 * 4 * 128 + bn(128)  # BN, flatten 2x4, dense (no bias), BN


# Table 3 ("param."), in units of 0.1M: the paper truncates (11.38M reads 11.3M, 16.38M 16.3M).
PAPER_TENTHS = {"spade_sr_32": 113, "spade_sr_64": 129, "spade_sr_128": 163,
                "spade_64": 126, "spade_128": 153}
EXACT = {"spade_sr_32": 11_381_315, "spade_sr_64": 12_911_875, "spade_sr_128": 16_378_499,
         "spade_64": 12_644_611, "spade_128": 15_303_299,
         "discriminator": 5_566_338, "encoder": 5_384_070}


def in_table3(name: str, n: int) -> bool:
    """Within Table 3's figure as the paper prints it (truncated to 0.1M)."""
    return n // 100_000 == PAPER_TENTHS[name]


def test_hand_formulas():
    assert spade_sr_generator(32) == EXACT["spade_sr_32"]
    assert spade_sr_generator(64) == EXACT["spade_sr_64"]
    assert spade_sr_generator(128) == EXACT["spade_sr_128"]
    assert spade_generator(64) == EXACT["spade_64"]
    assert spade_generator(128) == EXACT["spade_128"]
    assert discriminator() == EXACT["discriminator"]
    assert encoder() == EXACT["encoder"]


@pytest.mark.parametrize("name", list(EXACT))
def test_parameter_counts_exact(name):
    assert infer(load(name)).params == EXACT[name]


@pytest.mark.parametrize("name", GENERATORS)
def test_parameter_counts_match_table3(name):
    n = infer(load(name)).params
    assert in_table3(name, n), f"{name}: {n:,} vs Table 3 {PAPER_TENTHS[name] / 10}M"
    # and within 1% of the printed figure
    assert abs(n - PAPER_TENTHS[name] * 100_000) / (PAPER_TENTHS[name] * 100_000) < 0.01


def test_rejected_readings_miss_table3():
    """Readings of the architecture that the counts rule out (see the netspec headers)."""
    # Table 1's closing "BN" as a plain affine BatchNorm instead of the code's SPADE-SR norm:
    plain_bn = {t: spade_sr_generator(t) - spade_sr_norm(t, 128) + bn(128) for t in (32, 64, 128)}
    assert plain_bn == {32: 11_307_587, 64: 12_764_419, 128: 16_083_587}
    assert not in_table3("spade_sr_64", plain_bn[64])
    assert not in_table3("spade_sr_128", plain_bn[128])
    # SPADE-SR with a standard SPADE (shared 3x3 conv t -> 128 + ReLU before gamma/beta):
    shared = {t: main_fixed() + semantic_branch(t) + sum(conv(t, 128) + 2 * conv(128, c) for c in NORMED)
              for t in (32, 64, 128)}
    assert all(not in_table3(f"spade_sr_{t}", n) for t, n in shared.items())
    # "-N" as the main-branch width (512/128 * N channels) is ruled out by Table 1, which fixes
    # the main branch at 512 -> 512 -> 256 -> 128 and scales only the semantic branch `ch`.


# --------------------------------------------------------------------------------------------
# NVlabs SPADEResnetBlock reading of the SPADE baseline (architectures.md sec. 6.2-6.3)
# --------------------------------------------------------------------------------------------
NVLABS_128 = f"""
name: spade_nvlabs_128
imports: [{LIB}]
inputs:
  - {{name: z, features: 128}}
  - {{name: h, channels: 1, height: 5, width: 8}}
layers:
  - {{name: fc, op: Linear, out_features: 20480, bias: false, inputs: [z]}}
  - {{name: fc_map, op: Reshape, shape: [512, 5, 8]}}
  - {{name: blk1, op: SPADEResnetBlock, fmiddle: 512, fout: 512, inputs: [fc_map, h]}}
  - {{name: up1, op: Upsample}}
  - {{name: blk2, op: SPADEResnetBlockShortcut, fmiddle: 256, fout: 256, inputs: [up1, h]}}
  - {{name: up2, op: Upsample}}
  - {{name: blk3, op: SPADEResnetBlockShortcut, fmiddle: 128, fout: 128, inputs: [up2, h]}}
  - {{name: up3, op: Upsample}}
  - {{name: norm_out, op: SPADE, inputs: [up3, h]}}
  - {{name: act_out, op: LeakyReLU, negative_slope: 0.2}}
  - {{name: conv_out, op: Conv2d, kernel_size: 3, padding: 1, out_channels: 3, activation: tanh}}
output: {{name: image, from: conv_out}}
"""


def nvlabs_block(hidden: int, fin: int, fout: int) -> int:
    fm = min(fin, fout)
    shortcut = spade_norm(hidden, fin) + conv(fin, fout, 1, False) if fin != fout else 0
    return shortcut + spade_norm(hidden, fin) + conv(fin, fm) + spade_norm(hidden, fm) + conv(fm, fout)


def test_nvlabs_reading_of_spade_baseline_misses_table3():
    spec = S.loads(NVLABS_128)
    info = infer(spec)
    hand = (Z * FC + nvlabs_block(128, 512, 512) + nvlabs_block(128, 512, 256)
            + nvlabs_block(128, 256, 128) + spade_norm(128, 128) + conv(128, 3))
    assert hand == 16_816_515
    assert info.params == hand
    assert not in_table3("spade_128", hand)  # 16.8M vs 15.3M: the code's layout is the paper's
    assert info.output_shapes() == {"image": (3, 40, 64)}
    mod = build_module(spec).eval()
    with torch.no_grad():
        out = mod(torch.randn(BATCH, Z), torch.rand(BATCH, 1, 5, 8))
    assert out.shape == (BATCH, 3, 40, 64)


# --------------------------------------------------------------------------------------------
# structure and shapes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [32, 64, 128])
def test_spade_sr_structure(t):
    spec = load(f"spade_sr_{t}")
    info = infer(spec)
    assert [i.name for i in spec.inputs] == ["z", "h"]
    assert [i.shape for i in spec.inputs] == [(128,), (1, 5, 8)]
    # semantic branch at the four resolutions, width t (Table 1 left column)
    for name, hw in (("sem1", (5, 8)), ("sem2", (10, 16)), ("sem3", (20, 32)), ("sem4", (40, 64))):
        assert info[name].out_shape == (t, *hw)
    # main branch: 512 -> 512 -> 256 -> 128 whatever t (Table 1 right column)
    assert info["fc_map"].out_shape == (512, 5, 8)
    assert info["up1"].out_shape == (512, 10, 16)
    assert info["up2"].out_shape == (256, 20, 32)
    assert info["up3"].out_shape == (128, 40, 64)
    # self-resampling: each up-block reads the semantic features at its in and out resolutions
    assert spec.layer("up1").inputs == ["fc_map", "s1", "s2"]
    assert spec.layer("up2").inputs == ["up1", "s2", "s3"]
    assert spec.layer("up3").inputs == ["up2", "s3", "s4"]
    assert spec.layer("norm_out").inputs == ["up3", "s4"]
    # SPADE-SR has no shared MLP conv: gamma and beta read the semantic features directly
    assert info["norm_out"].params == spade_sr_norm(t, 128)
    assert info["up2"].params == (conv(512, 256, 1, False) + spade_sr_norm(t, 512) + conv(512, 256, bias=False)
                                  + spade_sr_norm(t, 256) + conv(256, 256, bias=False))
    assert info.output_shapes() == {"image": (3, 40, 64)}


@pytest.mark.parametrize("hidden", [64, 128])
def test_spade_structure(hidden):
    spec = load(f"spade_{hidden}")
    info = infer(spec)
    # every SPADE norm reads the raw 5x8 heat map (resized inside SPADE), hidden width = "-N"
    for name in ("up1", "up2", "up3", "norm_out"):
        assert "h" in spec.layer(name).inputs
    assert spec.layer("norm_out").hidden == hidden
    assert info["norm_out"].params == spade_norm(hidden, 128)
    assert info.output_shapes() == {"image": (3, 40, 64)}


def test_discriminator_structure():
    spec = load("discriminator")
    info = infer(spec)
    assert info["res1"].out_shape == (128, 20, 32)
    assert info["res2"].out_shape == (256, 10, 16)
    assert info["res3"].out_shape == (512, 5, 8)
    assert info["heat_res"].out_shape == (128, 5, 8)
    assert info.output_shapes() == {"score": (1,), "heatmap": (1, 5, 8)}
    # no spectral norm anywhere (the paper uses R1; the code's D uses plain layers)
    assert not any(getattr(lay, "spectral_norm", False) for lay in spec.layers)
    assert not any("spectral" in str(lay) for b in spec.blocks.values() for lay in b.layers)


def test_encoder_structure():
    info = infer(load("encoder"))
    assert info["res1"].out_shape == (64, 20, 32)
    assert info["res4"].out_shape == (512, 2, 4)  # 5 rows pooled to 2 (floor, Keras "valid")
    assert info.output_shapes() == {"z": (128,)}


@pytest.mark.parametrize("name", GENERATORS)
def test_generator_forward(name):
    mod = build_module(load(name)).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        out = mod(torch.randn(BATCH, 128), torch.rand(BATCH, 1, 5, 8) * 2 - 1)
    assert out.shape == (BATCH, 3, 40, 64)
    assert out.abs().max() < 1  # tanh


def test_discriminator_and_encoder_forward():
    torch.manual_seed(0)
    x = torch.rand(BATCH, 3, 40, 64) * 2 - 1
    with torch.no_grad():
        d = build_module(load("discriminator")).eval()(x)
        z = build_module(load("encoder")).eval()(x)
    assert set(d) == {"score", "heatmap"}
    assert d["score"].shape == (BATCH, 1)
    assert d["heatmap"].shape == (BATCH, 1, 5, 8)
    assert d["heatmap"].abs().max() < 1  # tanh
    assert z.shape == (BATCH, 128)


# --------------------------------------------------------------------------------------------
# numeric check against direct torch re-implementations of the authors' Keras models
# (train mode: every batch norm uses batch statistics)
# --------------------------------------------------------------------------------------------
def _conv(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    c = m[0] if isinstance(m, nn.Sequential) else m
    return F.conv2d(x, c.weight, c.bias, padding=c.padding)


def _lrelu(x):
    return F.leaky_relu(x, 0.01)


def _up(x, s=2):
    return F.interpolate(x, scale_factor=s, mode="nearest")


def _bn(x, eps=1e-3, m=None):
    w, b = (m.weight, m.bias) if m is not None else (None, None)
    return F.batch_norm(x, None, None, w, b, training=True, eps=eps)


def _resblock_up(x, blk, first=False):  # blocks_v2.resblock_up, use_bn=False
    if first:  # pre_activation=False, up_size=1
        skip, y = _conv(blk.skip, x), x
    else:
        skip, y = _conv(blk.skip, _up(x)), _up(_lrelu(x))
    y = _conv(blk.conv2, _lrelu(_conv(blk.conv1, y)))
    return y + skip


def _spade_sr(x, m, blk):  # blocks_v2.spade_bn(x, m, C, spade_filters=False)
    return _bn(x) * (1 + _conv(blk.gamma, m)) + _conv(blk.beta, m)


def _spade(x, seg, blk):  # blocks_v2.spade_bn with spade filters (eps: SPADE op's 1e-5)
    seg = F.interpolate(seg, size=x.shape[-2:], mode="nearest")
    a = F.relu(_conv(blk.mlp_shared, seg))
    return _bn(x, 1e-5) * (1 + _conv(blk.mlp_gamma, a)) + _conv(blk.mlp_beta, a)


def _up_block(x, blk, norm1, norm2):  # resblock_up_spade_sr / resblock_up_spade
    skip = _conv(blk.skip, _up(x))
    y = _conv(blk.conv1, _up(_lrelu(norm1(x, blk.norm1))))
    y = _conv(blk.conv2, _lrelu(norm2(y, blk.norm2)))
    return y + skip


def test_spade_sr_matches_reference():
    mod = build_module(load("spade_sr_32")).train()
    torch.manual_seed(1)
    z, h = torch.randn(4, 128), torch.rand(4, 1, 5, 8) * 2 - 1
    with torch.no_grad():
        got = mod(z, h)
        t1 = _resblock_up(h, mod.sem1, first=True)
        t2 = _resblock_up(t1, mod.sem2)
        t3 = _resblock_up(t2, mod.sem3)
        t4 = _resblock_up(t3, mod.sem4)
        x = F.linear(z, mod.fc.weight).reshape(4, 512, 5, 8)
        for blk, a, b in ((mod.up1, t1, t2), (mod.up2, t2, t3), (mod.up3, t3, t4)):
            x = _up_block(x, blk, lambda v, n, a=a: _spade_sr(v, _lrelu(a), n),
                          lambda v, n, b=b: _spade_sr(v, _lrelu(b), n))
        x = _lrelu(_spade_sr(x, _lrelu(t4), mod.norm_out))
        want = torch.tanh(_conv(mod.conv_out, x))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_spade_matches_reference():
    mod = build_module(load("spade_64")).train()
    torch.manual_seed(2)
    z, h = torch.randn(4, 128), torch.rand(4, 1, 5, 8)
    with torch.no_grad():
        got = mod(z, h)
        x = F.linear(z, mod.fc.weight).reshape(4, 512, 5, 8)
        for blk in (mod.up1, mod.up2, mod.up3):
            x = _up_block(x, blk, lambda v, n: _spade(v, h, n), lambda v, n: _spade(v, h, n))
        x = _lrelu(_spade(x, h, mod.norm_out))
        want = torch.tanh(_conv(mod.conv_out, x))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def _resblock_down(x, blk, pre_activation=True, pool=True, bns=None):  # blocks_v2.resblock_down
    p = (lambda v: F.avg_pool2d(v, 2)) if pool else (lambda v: v)
    if pre_activation:
        skip = p(_conv(blk.skip_conv if hasattr(blk, "skip_conv") else blk.skip, x))
        y = _lrelu(_bn(x, m=bns[0]) if bns else x)
    else:
        skip = _conv(blk.skip, p(x))
        y = _bn(x, m=bns[0]) if bns else x
    y = _conv(blk.conv1, y)
    y = _lrelu(_bn(y, m=bns[1]) if bns else y)
    return p(_conv(blk.conv2, y)) + skip


def test_discriminator_matches_reference():
    mod = build_module(load("discriminator")).eval()
    torch.manual_seed(3)
    x = torch.rand(BATCH, 3, 40, 64) * 2 - 1
    with torch.no_grad():
        got = mod(x)
        c1 = _resblock_down(x, mod.res1, pre_activation=False)
        c2 = _resblock_down(c1, mod.res2)
        c3 = _resblock_down(c2, mod.res3)
        score = F.linear(torch.flatten(_lrelu(c3), 1), mod.fc_score.weight, mod.fc_score.bias)
        heat = _lrelu(_resblock_down(c3, mod.heat_res, pool=False))
        heat = torch.tanh(_conv(mod.heat_conv, heat))
    torch.testing.assert_close(got["score"], score, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["heatmap"], heat, rtol=1e-4, atol=1e-5)


def test_encoder_matches_reference():
    mod = build_module(load("encoder")).train()
    torch.manual_seed(4)
    x = torch.rand(4, 3, 40, 64) * 2 - 1
    with torch.no_grad():
        got = mod(x)
        y = _resblock_down(x, mod.res1, pre_activation=False, bns=(mod.res1.bn1, mod.res1.bn2))
        for blk in (mod.res2, mod.res3, mod.res4):
            y = _resblock_down(y, blk, bns=(blk.bn1, blk.bn2))
        y = torch.flatten(_lrelu(_bn(y, m=mod.bn)), 1)
        lin, bn1d = mod.fc_z[0], mod.fc_z[1]
        want = F.batch_norm(F.linear(y, lin.weight), None, None, bn1d.weight, bn1d.bias,
                            training=True, eps=bn1d.eps)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------
# emitted code vs in-process module, with non-trivial norm statistics (affine-free batch norms
# have no weight/bias, so only their running statistics are randomized)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["spade_sr_32", "spade_64", "discriminator", "encoder"])
def test_emitted_matches_build_module(name):
    spec = load(name)
    cls = exec_class(emit_module(spec), spec)
    torch.manual_seed(0)
    ref = build_module(spec)
    randomize_norms(ref)
    gen = cls()
    gen.load_state_dict(ref.state_dict(), strict=True)
    ref.eval()
    gen.eval()
    xs = S.example_inputs(spec, BATCH, float_fn="randn")
    with torch.no_grad():
        want, got = ref(*xs), gen(*xs)
    if isinstance(want, dict):
        assert list(want) == list(got) == ["score", "heatmap"]
        for k in want:
            assert torch.equal(want[k], got[k])
    else:
        assert torch.equal(want, got)
