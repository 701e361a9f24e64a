"""Issue 15 item 8 and the ``groups`` part of item 2: the activations ReLU6, SiLU, GELU (exact and
tanh), Hardswish and Hardsigmoid (stand-alone ops and ``activation:`` values of Conv2d/Linear),
``AdaptiveAvgPool2d(output_size)``, and grouped convolutions (shape rule, parameters, MACs,
structure code, labels, code generation, ONNX export).

Each is checked against ``torch.nn`` itself: the compiled module (in-process and emitted source)
computes exactly what the torch module computes, the parameter and MAC counts equal the torch
module's and the closed forms, and the ONNX export matches torch in onnxruntime.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from spdnn.codegen import build_module, emit_module
from spdnn.errors import SpecError
from spdnn.ops import OPS
from spdnn.ops.base import ACTIVATIONS, activation_call
from spdnn.ops.layers import adaptive_windows
from spdnn.shapes import infer
from spdnn.spec import loads
from tests.helpers import exec_class

# op -> (netspec fields, the torch module it must equal)
ACT_OPS = {
    "ReLU6": ("", nn.ReLU6()),
    "SiLU": ("", nn.SiLU()),
    "GELU": ("", nn.GELU()),
    "GELU tanh": (", approximate: tanh", nn.GELU(approximate="tanh")),
    "Hardswish": ("", nn.Hardswish()),
    "Hardsigmoid": ("", nn.Hardsigmoid()),
}
FUSED = {"relu6": nn.ReLU6, "silu": nn.SiLU, "gelu": nn.GELU, "gelu_tanh": nn.GELU,
         "hardswish": nn.Hardswish, "hardsigmoid": nn.Hardsigmoid}


def _x(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * 4  # covers both sides of ReLU6's and hard caps


def _both(spec):
    """The in-process module and the emitted-source module (weights copied), in eval mode."""
    ref = build_module(spec).eval()
    gen = exec_class(emit_module(spec), spec)()
    gen.load_state_dict(ref.state_dict(), strict=True)
    return ref, gen.eval()


@pytest.mark.parametrize("case", list(ACT_OPS))
def test_activation_op_equals_torch(case):
    fields, want_mod = ACT_OPS[case]
    op = case.split()[0]
    spec = loads(f"name: t\ninput: {{channels: 3, height: 5, width: 6}}\nlayers:\n"
                 f"  - {{name: a, op: {op}{fields}}}\n")
    info = infer(spec)
    assert info.shapes["a"] == (3, 5, 6) and info.params == 0
    x = _x(2, 3, 5, 6)
    ref, gen = _both(spec)
    with torch.no_grad():
        want = want_mod(x)
        assert torch.equal(ref(x), want)
        assert torch.equal(gen(x), want)
    assert spec.layers[0].kind == "rider"


def test_gelu_tanh_differs_from_exact():
    """The two GELU forms are different functions (so the field is not ignored)."""
    a = loads("name: t\ninput: {features: 4}\nlayers:\n  - {name: a, op: GELU}\n")
    b = loads("name: t\ninput: {features: 4}\nlayers:\n  - {name: a, op: GELU, "
              "approximate: tanh}\n")
    x = torch.linspace(-3, 3, 4)[None]
    da = build_module(a)(x) - build_module(b)(x)
    assert 1e-5 < da.abs().max() < 1e-2
    assert b.layers[0].label_parts() == ("GELU", ["tanh"])
    with pytest.raises(SpecError, match="approximate"):
        loads("name: t\ninput: {features: 4}\nlayers:\n  - {name: a, op: GELU, "
              "approximate: erf}\n")


@pytest.mark.parametrize("act", list(FUSED))
def test_fused_activation_on_conv_and_linear(act):
    spec = loads(f"""name: t
input: {{channels: 2, height: 6, width: 6}}
layers:
  - {{name: c, op: Conv2d, kernel_size: 3, out_channels: 4, padding: same, batch_norm: true,
     activation: {act}}}
  - {{name: f, op: Linear, out_features: 3, activation: {act}}}
""")
    ref, gen = _both(spec)
    mods = list(ref.modules())
    assert sum(isinstance(m, FUSED[act]) for m in mods) == 2
    assert spec.layers[0].label_parts()[1] == ["pad same", "BN", act]
    x = _x(2, 2, 6, 6)
    fn = FUSED[act](**dict(ACTIVATIONS[act][1]))
    with torch.no_grad():
        h = fn(ref.c[1](ref.c[0](x)))  # conv -> BN -> activation
        want = fn(ref.f[1](h.flatten(1)))  # flatten -> linear -> activation
        assert torch.equal(ref(x), want)
        assert torch.equal(gen(x), want)


def test_activation_set_is_defined_once():
    """Every ``activation:`` value builds, every stand-alone activation op names an entry, and
    a name outside the set is refused with the allowed values."""
    assert activation_call("none") is None and activation_call(None) is None
    for name in ACTIVATIONS:
        assert activation_call(name).target.startswith("nn.")
    acts = {n: c for n, c in OPS.items() if hasattr(c, "act_fn")}
    assert {"ReLU6", "SiLU", "GELU", "Hardswish", "Hardsigmoid"} <= set(acts)
    for name, cls in acts.items():
        assert cls.act_fn in ACTIVATIONS or name == "GELU", name
    with pytest.raises(SpecError, match="relu6"):
        loads("name: t\ninput: {features: 4}\nlayers:\n"
              "  - {name: f, op: Linear, out_features: 2, activation: swish}\n")


# --------------------------------------------------------------------------------------------
# AdaptiveAvgPool2d
# --------------------------------------------------------------------------------------------
def test_adaptive_windows_match_torch():
    assert adaptive_windows(7, 3) == [(0, 3), (2, 5), (4, 7)]
    assert adaptive_windows(8, 2) == [(0, 4), (4, 8)]
    assert adaptive_windows(3, 5) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]
    x = _x(1, 1, 10, 6)
    want = nn.AdaptiveAvgPool2d((4, 5))(x)[0, 0]
    got = torch.tensor([[x[0, 0, a:b, c:d].mean() for c, d in adaptive_windows(6, 5)]
                        for a, b in adaptive_windows(10, 4)])
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("size,out,macs", [
    ((4, 14, 14), 7, 4 * 14 * 14),                    # divides: every value read once
    ((4, 7, 7), 3, 4 * 9 * 9),                        # windows 3,3,3 on both axes
    ((2, 10, 6), [4, 5], 2 * (3 + 3 + 3 + 3) * (2 + 2 + 2 + 2 + 2)),
    ((3, 5, 5), 1, 3 * 25),
])
def test_adaptive_avg_pool(size, out, macs):
    c, h, w = size
    spec = loads(f"name: t\ninput: {{channels: {c}, height: {h}, width: {w}}}\nlayers:\n"
                 f"  - {{name: p, op: AdaptiveAvgPool2d, output_size: {out}}}\n"
                 f"  - {{name: f, op: Linear, out_features: 2}}\n")
    oh, ow = (out, out) if isinstance(out, int) else out
    info = infer(spec)
    assert info.shapes["p"] == (c, oh, ow)
    assert info.layers[0].macs == macs
    assert info.params == c * oh * ow * 2 + 2
    assert spec.layers[0].label_parts() == (f"AdaptiveAvgPool2d {oh}x{ow}", [])
    assert spec.layers[0].kind == "reshape"
    x = _x(3, c, h, w)
    ref, gen = _both(spec)
    with torch.no_grad():
        pooled = nn.AdaptiveAvgPool2d((oh, ow))(x)
        assert torch.equal(ref.f(pooled.flatten(1)), ref(x))
        assert torch.equal(gen(x), ref(x))


def test_adaptive_avg_pool_bad_input():
    with pytest.raises(SpecError, match=r"output_size"):
        loads("name: t\ninput: {channels: 1, height: 4, width: 4}\nlayers:\n"
              "  - {name: p, op: AdaptiveAvgPool2d, output_size: 0}\n")
    from spdnn.errors import ShapeError

    with pytest.raises(ShapeError, match=r"layer 'p' \(AdaptiveAvgPool2d\).*\(C, H, W\)"):
        infer(loads("name: t\ninput: {features: 4}\nlayers:\n"
                    "  - {name: p, op: AdaptiveAvgPool2d, output_size: 2}\n"))


# --------------------------------------------------------------------------------------------
# groups
# --------------------------------------------------------------------------------------------
GROUPED = """name: t_groups
input: {channels: 8, height: 9, width: 9}
layers:
  - {name: grouped, op: Conv2d, kernel_size: 3, out_channels: 12, groups: 4, padding: same}
  - {name: depthwise, op: Conv2d, kernel_size: 3, out_channels: 12, groups: 12, stride: 2,
     padding: 1, batch_norm: true, activation: relu6}
  - {name: up, op: ConvTranspose2d, kernel_size: 2, stride: 2, out_channels: 6, groups: 3}
"""


def test_groups_shape_params_macs_and_codegen():
    spec = loads(GROUPED)
    info = infer(spec)
    assert [lay.out_shape for lay in info.layers] == [(12, 9, 9), (12, 5, 5), (6, 10, 10)]
    ref, gen = _both(spec)
    want = [9 * 2 * 12 + 12, 9 * 1 * 12 + 2 * 12, 4 * 4 * 6 + 6]  # k^2 (C_in/g) C_out + extras
    for lay, n in zip(info.layers, want):
        mod = getattr(ref, lay.name)
        assert lay.params == n == sum(p.numel() for p in mod.parameters()), lay.name
    assert [lay.macs for lay in info.layers] == [9 * 2 * 12 * 81, 9 * 1 * 12 * 25,
                                                 4 * 4 * 6 * 25]
    assert ref.grouped.groups == 4 and ref.depthwise[0].groups == 12 and ref.up.groups == 3
    x = _x(2, 8, 9, 9)
    with torch.no_grad():
        assert torch.equal(gen(x), ref(x))


def test_groups_labels_structure_and_width():
    spec = loads(GROUPED)
    g, dw, up = spec.layers
    assert g.label_parts() == ("Conv2d 3x3, 12 ch", ["groups 4", "pad same"])
    assert dw.label_parts() == ("Conv2d 3x3, 12 ch", ["stride 2", "groups 12", "pad 1", "BN",
                                                     "relu6"])
    assert (g.structure(), dw.structure(), up.structure()) == ("3C(g4)", "3C(s2)(dw)",
                                                                "2D(s2)(g3)")
    assert g.with_width(17).out_channels == 16  # the nearest multiple of groups
    assert g.with_width(1).out_channels == 4
    wide = dw.with_width(20)  # a depthwise conv stays depthwise
    assert (wide.out_channels, wide.groups) == (20, 20) and wide.structure() == dw.structure()
    assert loads(GROUPED.replace("kernel_size: 3, out_channels: 12, groups: 4",
                                 "kernel_size: 3, out_channels: 12")).layers[0].structure() == "3C"


def test_groups_must_divide_channels():
    from spdnn.errors import ShapeError

    with pytest.raises(ShapeError, match=r"layer 'grouped' \(Conv2d\): groups=4 must divide "
                                         r"input channels 8 and out_channels 10"):
        infer(loads(GROUPED.replace("out_channels: 12, groups: 4", "out_channels: 10, groups: 4")))


# --------------------------------------------------------------------------------------------
# ONNX export (one export for all of them) and the op list
# --------------------------------------------------------------------------------------------
ALL_NEW = """name: t_gaps
input: {name: x, channels: 8, height: 11, width: 11}
layers:
  - {name: grouped, op: Conv2d, kernel_size: 3, out_channels: 12, groups: 4, padding: same,
     activation: hardswish}
  - {name: dw, op: Conv2d, kernel_size: 3, out_channels: 12, groups: 12, padding: 1,
     batch_norm: true, activation: relu6}
  - {name: r6, op: ReLU6}
  - {name: silu, op: SiLU}
  - {name: gelu, op: GELU}
  - {name: gelu_t, op: GELU, approximate: tanh}
  - {name: hsw, op: Hardswish}
  - {name: hsig, op: Hardsigmoid}
  - {name: up, op: ConvTranspose2d, kernel_size: 2, stride: 2, out_channels: 6, groups: 3,
     activation: gelu_tanh}
  - {name: pool, op: AdaptiveAvgPool2d, output_size: [5, 3]}
  - {name: fc, op: Linear, out_features: 4, activation: silu}
output: {name: y, from: fc}
"""


def test_onnx_export_parity(tmp_path):
    import onnx

    from spdnn.export import export_onnx

    spec = loads(ALL_NEW)
    report = export_onnx(spec, tmp_path / "gaps.onnx")
    assert report.ok and report.max_abs_err < 1e-4, report.checks
    ops = {n.op_type for n in onnx.load(tmp_path / "gaps.onnx").graph.node}
    assert {"Gelu", "HardSwish", "HardSigmoid"} <= ops, ops
    assert report.inputs[0].shape == (1, 8, 11, 11)  # the pool reads 22x22 -> 5x3: no divisor


def test_onnx_torchscript_exporter_names_the_adaptive_pool(tmp_path):
    """The TorchScript exporter (opset < 18) cannot export an adaptive pool whose output size
    does not divide the input: a one-line error naming the layer; nothing is written."""
    from spdnn.export import export_onnx
    from spdnn.export.report import ExportError

    spec = loads("name: t\ninput: {channels: 2, height: 7, width: 7}\nlayers:\n"
                 "  - {name: c, op: Conv2d, kernel_size: 1, out_channels: 2}\n"
                 "  - {name: pool7to3, op: AdaptiveAvgPool2d, output_size: 3}\n")
    with pytest.raises(ExportError) as err:
        export_onnx(spec, tmp_path / "p.onnx", opset=17)
    text = str(err.value)
    assert "\n" not in text
    assert "layer 'pool7to3' (AdaptiveAvgPool2d)" in text and "7x7 to 3x3" in text, text
    assert not (tmp_path / "p.onnx").exists()  # (the default exporter can: see above)


def test_new_ops_are_listed(capsys):
    from spdnn.cli import main

    assert main(["ops"]) == 0
    text = capsys.readouterr().out
    for name in ("ReLU6", "SiLU", "GELU", "Hardswish", "Hardsigmoid", "AdaptiveAvgPool2d"):
        assert name in text and name in OPS
        doc = OPS[name].__doc__ or ""
        assert "torch.nn." in doc and re.search(r"\b(19|20)\d\d\b", doc), name  # cites a source


def test_emitted_source_names_torch_modules():
    src = emit_module(loads(ALL_NEW))
    for call in ("nn.ReLU6()", "nn.SiLU()", "nn.GELU()", "nn.GELU(approximate='tanh')",
                 "nn.Hardswish()", "nn.Hardsigmoid()", "nn.AdaptiveAvgPool2d((5, 3))",
                 "groups=4", "groups=12", "groups=3"):
        assert call in src, call
