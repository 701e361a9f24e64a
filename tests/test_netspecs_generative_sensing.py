"""Generative Sensing (Karam et al., seed 000): AlexNet baselines and generative units, plus the
``ChannelSlice`` op the units need.

Expected parameter counts are hand arithmetic from the layer tables, not the compiler's output:
- alexnet.yaml: torchvision's AlexNet, 61,100,840 (its published count; exact);
- alexnet_small.yaml: widths / 4, 64x64 input, 10 classes (a reconstruction; no paper figure);
- alexnet_small_generative.yaml: + DeepCorrect-style units (the paper gives no unit table;
  layout from DeepCorrect's AlexNet code, its [15]); a unit of width n and kernel k has
  2 n^2 (1 + k^2) + 10 n parameters. The unit itself is checked against DeepCorrect's published
  trainable-parameter count for ImageNet AlexNet (README: "2.81 M").
"""

from __future__ import annotations

import ast
import re

import pytest
import torch

from spdnn.codegen import build_module, emit_module
from spdnn.errors import ShapeError
from spdnn.export import export_onnx
from spdnn.ops import OPS
from spdnn.shapes import infer
from spdnn.spec import Netspec, load, loads
from tests.helpers import NETSPECS, exec_class

DIR = NETSPECS / "generative_sensing"
LIB = NETSPECS / "blocks" / "generative_sensing.yaml"


def conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def fc(fin: int, fout: int) -> int:
    return fin * fout + fout


def unit(n: int, k: int) -> int:
    """1x1 -> kxk -> kxk -> 1x1 convs of width n with bias, 3 BNs (scale + shift)."""
    return conv(n, n, 1) + conv(n, n, k) + conv(n, n, k) + conv(n, n, 1) + 3 * 2 * n


def alexnet_hand(widths: list[int], kernels: list[int], flat_hw: int, fcs: list[int],
                 classes: int) -> int:
    n, cin = 0, 3
    for w, k in zip(widths, kernels):
        n += conv(cin, w, k)
        cin = w
    fin = cin * flat_hw
    for f in fcs + [classes]:
        n += fc(fin, f)
        fin = f
    return n


ALEXNET = alexnet_hand([64, 192, 384, 256, 256], [11, 5, 3, 3, 3], 6 * 6, [4096, 4096], 1000)
SMALL = alexnet_hand([16, 48, 96, 64, 64], [11, 5, 3, 3, 3], 3 * 3, [1024, 1024], 10)
# (corrected channels, inner kernel) after conv1..conv5: 75% of 16, 48; 50% of 96, 64, 64
UNITS = [(12, 5), (36, 3), (48, 3), (32, 3), (32, 3)]


def test_hand_arithmetic():
    assert ALEXNET == 61_100_840  # torchvision alexnet's published count
    assert SMALL == 1_809_626
    assert unit(72, 5) == 270_288  # 2 n^2 (1 + k^2) + 10 n
    assert all(unit(n, k) == 2 * n * n * (1 + k * k) + 10 * n for n, k in UNITS)
    assert sum(unit(n, k) for n, k in UNITS) == 122_048


@pytest.mark.parametrize("stem,expected,shape", [
    ("alexnet", ALEXNET, (3, 224, 224)),
    ("alexnet_small", SMALL, (3, 64, 64)),
    ("alexnet_small_generative", SMALL + sum(unit(n, k) for n, k in UNITS), (3, 64, 64)),
])
def test_parameters_and_forward(stem, expected, shape):
    spec = load(DIR / f"{stem}.yaml")
    info = infer(spec)
    assert info.params == expected
    model = build_module(spec).eval()
    assert sum(p.numel() for p in model.parameters()) == expected
    assert spec.inputs[0].shape == shape
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 1000 if stem == "alexnet" else 10)
    assert torch.isfinite(out).all()


def test_alexnet_layer_table():
    info = infer(load(DIR / "alexnet.yaml"))
    # torchvision: 224 -> 55 -> 27 -> 27 -> 13 -> 13 -> 6 (so its adaptive 6x6 pool is identity)
    assert info.shapes["conv1"] == (64, 55, 55)
    assert info.shapes["pool1"] == (64, 27, 27)
    assert info.shapes["conv2"] == (192, 27, 27)
    assert info.shapes["pool2"] == (192, 13, 13)
    assert info.shapes["conv5"] == (256, 13, 13)
    assert info.shapes["pool5"] == (256, 6, 6)
    assert info["fc6"].params == 9216 * 4096 + 4096


def test_small_alexnet_keeps_a_3x3_map():
    info = infer(load(DIR / "alexnet_small.yaml"))
    assert [info.shapes[n][1] for n in ("conv1", "pool1", "pool2", "conv5", "pool5")] \
        == [32, 15, 7, 7, 3]
    full = load(DIR / "alexnet.yaml")
    small = load(DIR / "alexnet_small.yaml")
    for a, b in zip(full.layers, small.layers):  # same table, widths / 4
        assert (a.name, a.op) == (b.name, b.op)
        if a.op == "Conv2d":
            assert b.out_channels * 4 == a.out_channels and a.kernel_size == b.kernel_size
        if a.op == "Linear" and a.name != "fc8":
            assert b.out_features * 4 == a.out_features


def test_units_sit_before_the_relu_on_the_first_channels():
    spec = load(DIR / "alexnet_small_generative.yaml")
    names = [lay.name for lay in spec.layers]
    for i, (n, k) in enumerate(UNITS, start=1):
        c, g, r = (spec.layer(f"conv{i}"), spec.layer(f"gen{i}"), spec.layer(f"relu{i}"))
        assert names.index(f"gen{i}") == names.index(f"conv{i}") + 1
        assert names.index(f"relu{i}") == names.index(f"gen{i}") + 1
        assert c.activation is None and r.op == "ReLU"  # conv linear, ReLU after the unit
        assert g.op == "GenerativeUnit" and (g.corrected, g.kernel_size) == (n, k)
        assert n == (c.out_channels * 3) // 4 if i <= 2 else n == c.out_channels // 2
    assert infer(spec)["gen3"].params == unit(48, 3)


def test_zeroed_units_reproduce_the_baseline():
    """A unit whose last 1x1 conv is zero is the identity: phi_gen == phi with its weights."""
    torch.manual_seed(0)
    base = build_module(load(DIR / "alexnet_small.yaml")).eval()
    gen = build_module(load(DIR / "alexnet_small_generative.yaml")).eval()
    sd = gen.state_dict()
    for key, value in base.state_dict().items():
        # the baseline's conv + ReLU is a Sequential; the generative net's convs are linear
        key = re.sub(r"^(conv\d)\.0\.", r"\1.", key)
        assert key in sd
        sd[key] = value
    gen.load_state_dict(sd)
    with torch.no_grad():
        for i in range(1, 6):
            out = getattr(gen, f"gen{i}").conv_out
            out.weight.zero_()
            out.bias.zero_()
        x = torch.randn(2, 3, 64, 64)
        torch.testing.assert_close(gen(x), base(x))
        # and a non-zero unit changes only the corrected channels of its layer
        unit1 = gen.gen1
        unit1.conv_out.bias.fill_(1.0)
        feats = torch.randn(2, 16, 32, 32)
        y = unit1(feats)
        torch.testing.assert_close(y[:, 12:], feats[:, 12:], rtol=0, atol=0)
        torch.testing.assert_close(y[:, :12], feats[:, :12] + 1.0)


def test_unit_matches_deepcorrect_imagenet_count():
    """DeepCorrect's AlexNet (Caffe widths 96/256/384/384/256; 75% corrected in conv1-2, 50% in
    conv3-5; 5x5 inner kernels after conv1) trains "2.81 M" parameters (tsborkar/DeepCorrect
    README): 2,816,848 by the unit formula, and the block gives the same."""
    caffe = [(96, 72, 5), (256, 192, 3), (384, 192, 3), (384, 192, 3), (256, 128, 3)]
    total = 0
    for c, n, k in caffe:
        spec = loads(f"name: u\nimports: [{LIB}]\ninput: {{channels: {c}, height: 13, width: 13}}\n"
                     f"layers:\n  - {{name: g, op: GenerativeUnit, corrected: {n}, "
                     f"kernel_size: {k}}}\n")
        p = infer(spec).params
        assert p == unit(n, k)
        total += p
    assert total == 2_816_848 and int(total / 1e4) == 281


# --------------------------------------------------------------------------------------------
# the ChannelSlice op
# --------------------------------------------------------------------------------------------
SLICE = """name: t_slice
inputs:
  - {name: x, channels: 10, height: 4, width: 5}
  - {name: v, features: 7}
layers:
  - {name: head, op: ChannelSlice, stop: 3, inputs: [x]}
  - {name: mid, op: ChannelSlice, start: 3, stop: 8, inputs: [x]}
  - {name: tail, op: ChannelSlice, start: 8, inputs: [x]}
  - {name: conv, op: Conv2d, kernel_size: 1, out_channels: 3, inputs: [mid]}
  - {name: sum, op: Add, inputs: [head, conv]}
  - {name: cat, op: Concat, inputs: [sum, tail]}
  - {name: vec, op: ChannelSlice, start: 2, stop: 6, inputs: [v]}
outputs:
  - {name: out, from: cat}
  - {name: vec, from: vec}
"""


def _slice_inputs(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 10, 4, 5, generator=g), torch.randn(3, 7, generator=g)]


def test_channel_slice_shapes_params_and_reference():
    assert "ChannelSlice" in OPS and OPS["ChannelSlice"].kind == "reshape"
    assert len(OPS["ChannelSlice"].__doc__) > 200
    spec = loads(SLICE)
    info = infer(spec)
    assert info.shapes["head"] == (3, 4, 5) and info.shapes["mid"] == (5, 4, 5)
    assert info.shapes["tail"] == (2, 4, 5) and info.shapes["cat"] == (5, 4, 5)
    assert info.shapes["vec"] == (4,)
    assert info["head"].params == info["tail"].params == info["vec"].params == 0
    m = build_module(spec).eval()
    assert sum(p.numel() for p in m.parameters()) == info.params == 5 * 3 + 3
    x, v = _slice_inputs()
    with torch.no_grad():
        got = m(x, v)
        out, vec = got["out"], got["vec"]
        want = torch.cat([x[:, 0:3] + m.conv(x[:, 3:8]), x[:, 8:10]], dim=1)
    assert torch.equal(out, want)
    assert torch.equal(vec, v[:, 2:6])


def test_channel_slice_emitted_matches_in_process():
    spec = loads(SLICE)
    torch.manual_seed(0)
    ref = build_module(spec).eval()
    src = emit_module(spec)
    assert "x_[:, :3]" in src and "x_[:, 3:8]" in src and "x_[:, 8:]" in src
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            assert [a.name for a in node.names] in (["torch"], ["nn"])
    gen = exec_class(src, spec)()
    gen.load_state_dict(ref.state_dict(), strict=True)
    gen.eval()
    xs = _slice_inputs(1)
    with torch.no_grad():
        want, got = ref(*xs), gen(*xs)
    assert list(want) == list(got) == ["out", "vec"]
    for key in want:
        assert torch.equal(want[key], got[key])


def test_channel_slice_onnx_parity(tmp_path):
    spec = loads(SLICE)
    report = export_onnx(spec, tmp_path / "slice.onnx")
    assert report.ok and report.max_abs_err < 1e-5, report.checks


@pytest.mark.parametrize("fields,message", [
    ("start: 4, stop: 4", "larger than start"),
    ("start: 5, stop: 2", "larger than start"),
    ("start: -1", "greater than or equal to 0"),
])
def test_channel_slice_rejects_bad_params(fields, message):
    with pytest.raises(Exception, match=message):
        loads("name: b\ninput: {channels: 4, height: 2, width: 2}\n"
              f"layers:\n  - {{name: s, op: ChannelSlice, {fields}}}\n")


@pytest.mark.parametrize("fields", ["stop: 5", "start: 4"])
def test_channel_slice_out_of_range_is_a_shape_error(fields):
    spec = loads("name: b\ninput: {channels: 4, height: 2, width: 2}\n"
                 f"layers:\n  - {{name: s, op: ChannelSlice, {fields}}}\n")
    with pytest.raises(ShapeError, match="out of range"):
        infer(spec)


def test_block_library_is_only_blocks():
    import yaml

    data = yaml.safe_load(LIB.read_text())
    assert set(data) == {"description", "blocks"} and set(data["blocks"]) == {"GenerativeUnit"}
    assert isinstance(load(DIR / "alexnet_small_generative.yaml"), Netspec)
