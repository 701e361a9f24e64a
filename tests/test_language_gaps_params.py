"""Issue 15 item 8: computed block parameters (``$c * $t``, ``$in_channels``, ``min``/``max``):
exact values, the whitelist (never ``eval``), and one-line errors naming file, line and field."""

from __future__ import annotations

import pytest
import torch

from spdnn.codegen import build_module, emit_module
from spdnn.errors import ShapeError, SpecError
from spdnn.shapes import infer
from spdnn.spec import loads
from spdnn.spec.expr import ExprError, is_expression, parse
from tests.helpers import exec_class

IR = """name: t
input: {channels: 16, height: 8, width: 8}
blocks:
  IR:
    params: {c: null, t: 6, stride: 1, hidden: $in_channels * $t}
    layers:
      - {name: expand, op: Conv2d, kernel_size: 1, out_channels: $hidden, bias: false,
         batch_norm: true, activation: relu6, inputs: [x]}
      - {name: dw, op: Conv2d, kernel_size: 3, padding: 1, stride: $stride, groups: $hidden,
         out_channels: $hidden, bias: false, batch_norm: true, activation: relu6}
      - {name: project, op: Conv2d, kernel_size: 1, out_channels: $c, bias: false,
         batch_norm: true}
    structure: "IR({c},{t},{stride})"
layers:
  - {name: b1, op: IR, c: 24, stride: 2}
  - {name: b2, op: IR, c: 24, t: 3}
  - {name: b3, op: IR, c: 8, hidden: "max(8, $c // 2 + 1)"}
"""


def _ir_params(cin: int, hidden: int, cout: int) -> int:
    """expand 1x1 (no bias) + BN, depthwise 3x3 + BN, project 1x1 + BN."""
    return cin * hidden + 2 * hidden + 9 * hidden + 2 * hidden + hidden * cout + 2 * cout


def test_computed_widths_exact():
    spec = loads(IR)
    info = infer(spec)
    b1, b2, b3 = info.layers
    assert [b.out_shape for b in info.layers] == [(24, 4, 4), (24, 4, 4), (8, 4, 4)]
    # b1: hidden = 16 * 6 = 96; b2: 24 * 3 = 72; b3: the instance's own max(8, 8 // 2 + 1) = 8
    assert b1.params == _ir_params(16, 96, 24) == 5136
    assert b2.params == _ir_params(24, 72, 24) == 4440
    assert b3.params == _ir_params(24, 8, 8) == 376
    m = build_module(spec)
    assert sum(p.numel() for p in m.parameters()) == info.params == 5136 + 4440 + 376
    assert m.b1.dw[0].groups == 96 and m.b2.expand[0].out_channels == 72
    gen = exec_class(emit_module(spec), spec)()
    gen.load_state_dict(m.state_dict(), strict=True)
    x = torch.randn(2, 16, 8, 8)
    m.eval()
    gen.eval()
    with torch.no_grad():
        assert torch.equal(gen(x), m(x))
    assert [lay.structure() for lay in spec.layers] == ["IR(24,6,2)", "IR(24,3,1)", "IR(8,6,1)"]
    # the width-derived parameter stays an expression until the instance is shaped
    assert spec.layers[0].args() == {"c": 24, "t": 6, "stride": 2, "hidden": "$in_channels * $t"}
    assert spec.layers[2].args()["hidden"] == 8


def test_expressions_in_layer_fields_and_chained_defaults():
    spec = loads("""name: t
input: {channels: 6, height: 4, width: 4}
blocks:
  B:
    params: {c: null, t: 2, wide: $c * $t, narrow: "max(1, $wide // 3 - 1)", same: $wide}
    layers:
      - {name: a, op: Conv2d, kernel_size: 1, out_channels: ($c + 1) * $t - $in_channels % 4}
      - {name: b, op: Conv2d, kernel_size: 1, out_channels: $narrow}
      - {name: c, op: Conv2d, kernel_size: 1, out_channels: "min($same, 100, -(-$c // 3))"}
layers:
  - {name: x1, op: B, c: 5}
  - {name: x2, op: B, c: 9, t: 3}
""")
    info = infer(spec)
    # x1: a = 6*2 - 6%4 = 10; wide = 10, narrow = max(1, 10//3 - 1) = 2; c = min(10, 100, 2) = 2
    # x2 (input 2 channels): a = 10*3 - 2 = 28; wide 27, narrow 8; c = min(27, 100, 3) = 3
    body1 = spec.layers[0].shaped_body([(6, 4, 4)])[1]
    body2 = spec.layers[1].shaped_body([(2, 4, 4)])[1]
    assert [lay.out_shape[0] for lay in body1.layers] == [10, 2, 2]
    assert [lay.out_shape[0] for lay in body2.layers] == [28, 8, 3]
    assert info.shapes["x2"] == (3, 4, 4)


@pytest.mark.parametrize("text,env,want", [
    ("$a * $b", {"a": 3, "b": 7}, 21),
    ("($a + 1) // 2", {"a": 6}, 3),
    ("-$a % 5", {"a": 7}, 3),
    ("max(8, $a // 4, 2 * 3)", {"a": 64}, 16),
    ("min($a, $b) - +1", {"a": 4, "b": 9}, 3),
    ("$in_channels*$t", {"in_channels": 24, "t": 6}, 144),
])
def test_evaluate_exact(text, env, want):
    assert is_expression(text)
    assert parse(text).evaluate(env) == want


@pytest.mark.parametrize("text,message", [
    ("$a / 2", "'/' is not allowed, write // (integer division)"),
    ("$a ** 2", "'**' is not allowed"),
    ("$a * b", "unknown name 'b' (write $b for a parameter)"),
    ("__import__('os')", "is not an expression"),
    ("$a + __import__('os').getpid()", "only min(...) and max(...) may be called"),
    ("$a.bit_length()", "only min(...) and max(...) may be called"),
    ("$a if $a else 1", "ifexp is not allowed"),
    ("[$a][0]", "subscript is not allowed"),
    ("$a + 1.5", "only integer literals are allowed, not 1.5"),
    ("$a < 3", "compare is not allowed"),
    ("max($a)", "max() needs two or more arguments"),
    ("($a", "is not a valid expression"),
    ("$ + 1", "'$' must be followed by a parameter name"),
    ("$a + " + "1 + " * 60 + "1", "too long"),
])
def test_whitelist_errors(text, message):
    with pytest.raises(ExprError) as err:
        parse(text)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("env,message", [
    ({"a": 3}, "$b is not known here"),
    ({"a": 3, "b": 0}, "division by zero"),
    ({"a": [3, 3], "b": 1}, "$a is [3, 3], not an integer"),
    ({"a": True, "b": 1}, "$a is True, not an integer"),
    ({"a": 1 << 40, "b": 1}, "beyond 2**62"),
])
def test_evaluation_errors(env, message):
    with pytest.raises(ExprError, match=message.replace("$", r"\$").replace("[", r"\[")
                       .replace("*", r"\*")):
        parse("$a * $a // $b").evaluate(env)


def test_plain_substitution_is_not_an_expression():
    assert not is_expression("$k") and not is_expression("relu") and not is_expression(3)
    assert is_expression("$k + 0")


BAD = """name: t
input: {channels: 4, height: 8, width: 8}
blocks:
  B:
    params: {c: 8, t: 2}
    layers:
      - {name: a, op: Conv2d, kernel_size: 1, out_channels: $c}
      - {name: b, op: Conv2d, kernel_size: 1, out_channels: FIELD}
layers:
  - {name: x1, op: B}
"""


@pytest.mark.parametrize("value,message", [
    ("$c * t", "t.yaml:8: blocks.B.layers[1].out_channels: block 'B': '$c * t': unknown name "
               "'t' (write $t for a parameter)"),
    ("$c * $q", "t.yaml:8: blocks.B.layers[1].out_channels: block 'B' uses '$q', which is not "
                "one of its params (add 'q' to params)"),
    ("$c / $t", "t.yaml:8: blocks.B.layers[1].out_channels: block 'B': '$c / $t': '/' is not "
                "allowed, write // (integer division)"),
])
def test_errors_name_file_line_and_field(tmp_path, value, message):
    f = tmp_path / "t.yaml"
    f.write_text(BAD.replace("FIELD", value))
    from spdnn.spec import load

    with pytest.raises(SpecError) as err:
        load(f)
    assert str(err.value) == f"{tmp_path}/{message}"


def test_param_default_errors(tmp_path):
    from spdnn.spec import load

    f = tmp_path / "t.yaml"
    f.write_text(BAD.replace("params: {c: 8, t: 2}", "params: {c: $d + 1, d: $c, t: 2}")
                 .replace("FIELD", "$c"))
    with pytest.raises(SpecError) as err:
        load(f)
    assert str(err.value) == (f"{f}:5: blocks.B.params.c: block 'B': computed parameters read "
                              "each other in a cycle: c -> d")
    f.write_text(BAD.replace("params: {c: 8, t: 2}", "params: {c: 8, t: $t}")
                 .replace("FIELD", "$c"))
    with pytest.raises(SpecError, match="parameter 't' uses '\\$t', which is itself"):
        load(f)
    f.write_text(BAD.replace("params: {c: 8, t: 2}", "params: {c: 8, in_channels: 2}")
                 .replace("FIELD", "$c"))
    with pytest.raises(SpecError, match="'in_channels' cannot be a parameter name"):
        load(f)


def test_instance_value_errors():
    # evaluated when the instance is built: located at the instance layer
    with pytest.raises(SpecError) as err:
        loads(BAD.replace("FIELD", "$c // ($t - 2)"), file="n.yaml")
    assert "layers[0]" in str(err.value) and "division by zero" in str(err.value)
    # a width that makes a computed value invalid: found at shape inference, at the instance
    spec = loads(BAD.replace("FIELD", "$in_channels - 4"), file="n.yaml")
    with pytest.raises(ShapeError) as err:
        infer(spec)
    text = str(err.value)
    assert "layer 'x1' (B): in block body, layers[1](b).out_channels" in text
    assert "greater than 0" in text and "\n" not in text


def test_cli_validate_reports_one_line(tmp_path, capsys):
    from spdnn.cli import main

    f = tmp_path / "bad.yaml"
    f.write_text(BAD.replace("FIELD", "$c ** 2"))
    assert main(["validate", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "blocks.B.layers[1].out_channels" in err[0] and "'**'" in err[0]


def test_default_structure_code_leaves_out_width_derived_values():
    """Without a structure template the code names the arguments; a value derived from the
    input width is not an argument of the instance and is left out (it is not known before
    the instance is shaped)."""
    spec = loads("""name: t
input: {channels: 4, height: 4, width: 4}
blocks:
  B:
    params: {c: null, t: 2, hidden: $in_channels * $t, half: $c // 2}
    layers:
      - {name: a, op: Conv2d, kernel_size: 1, out_channels: $hidden}
      - {name: b, op: Conv2d, kernel_size: 1, out_channels: $half}
layers:
  - {name: x1, op: B, c: 6}
""")
    assert spec.layers[0].structure() == "B(6,2,3)"
    assert [lay.out_shape[0] for lay in spec.layers[0].shaped_body([(4, 4, 4)])[1].layers] == [8, 3]
