"""Blocks (issue #3): parameterized sub-graphs declared once, instantiated with arguments."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import spdnn.spec as S
from spdnn.codegen import build_module, emit_module
from spdnn.errors import SpecError
from spdnn.graph import check_embedding, merge, parent_graph
from spdnn.render import netspec_diagram
from spdnn.shapes import infer
from tests.helpers import exec_class

ROOT = Path(__file__).resolve().parents[1]
LIB = (ROOT / "netspecs/blocks/squeezenet.yaml").as_posix()

RES = """
blocks:
  Res:
    params: {width: null, k: 3}
    layers:
      - {name: a, op: Conv2d, kernel_size: $k, padding: same, out_channels: $width, activation: relu}
      - {name: b, op: Conv2d, kernel_size: $k, padding: same, out_channels: $width}
      - {name: sum, op: Add, inputs: [x, b]}
    structure: "Res({k})"
  Stage:
    params: {width: null}
    layers:
      - {name: r1, op: Res, width: $width}
      - {name: r2, op: Res, width: $width, k: 5}
      - {name: pool, op: MaxPool2d, kernel_size: 2}
"""


def small(body: str, layers: str, name: str = "net", extra: str = "") -> str:
    return (f"name: {name}\n{extra}input: {{channels: 4, height: 16, width: 16}}\n{body}\n"
            f"layers:\n{layers}")


def parity(spec: S.Netspec, shape=(2, 4, 16, 16)) -> None:
    emitted = exec_class(emit_module(spec), spec)().eval()
    built = build_module(spec).eval()
    assert list(emitted.state_dict()) == list(built.state_dict())
    emitted.load_state_dict(built.state_dict())
    x = torch.randn(*shape)
    torch.testing.assert_close(emitted(x), built(x))


def test_instances_with_different_arguments_and_nesting():
    spec = S.loads(small(RES, "  - {name: s, op: Stage, width: 4}\n"
                              "  - {name: r, op: Res, width: 4, k: 1}\n"))
    info = infer(spec)
    assert info.shapes["s"] == (4, 8, 8) and info.shapes["r"] == (4, 8, 8)
    # Res(3) + Res(5) at width 4, then a Res(1)
    conv = lambda k: 4 * 4 * k * k + 4  # noqa: E731
    assert info.params == 2 * conv(3) + 2 * conv(5) + 2 * conv(1)
    assert spec.layers[0].structure() == "Stage(4)"
    assert spec.layers[1].structure() == "Res(1)"
    assert spec.layers[0].resample_factor() == 2
    assert S.loads(S.dump(spec)) == spec
    parity(spec)
    src = emit_module(spec)
    assert src.count("class Res(nn.Module)") == 1 and "class Stage(nn.Module)" in src
    g = parent_graph(spec)
    structures = sorted(d["structure"] for _, d in g.nodes(data=True) if d["kind"] == "compute")
    assert structures == ["Res(1)2P", "Stage(4)"]


def test_import_library_and_equal_loads(tmp_path):
    text = small("", "  - {name: f, op: Fire, squeeze: 2, expand1x1: 4, expand3x3: 4}\n",
                 extra=f"imports: [{LIB}]\n")
    a, b = S.loads(text), S.loads(text)
    assert a == b and "Fire" in a.blocks
    assert infer(a).shapes["f"] == (8, 16, 16)
    assert a.layers[0].structure() == "Fire(2,4,4)"
    parity(a)
    # collapsed view: one node per instance, showing its structure code
    assert "Fire(2,4,4)" in netspec_diagram(a).source


@pytest.mark.parametrize("layers, message", [
    ("  - {name: r, op: Res}\n", "required field 'width' is missing"),
    ("  - {name: r, op: Res, width: 4, depth: 2}\n", "unknown field 'depth'"),
    ("  - {name: r, op: Res, width: -1}\n", "in block 'Res'"),
    ("  - {name: r, op: Ress, width: 4}\n", "did you mean 'Res'"),
])
def test_instance_errors(layers, message):
    with pytest.raises(SpecError) as err:
        S.loads(small(RES, layers))
    assert message in err.value.one_line() and err.value.line is not None


@pytest.mark.parametrize("blocks, message", [
    ("blocks:\n  A:\n    layers: [{name: a, op: A}]\n", "recursive block: A -> A"),
    ("blocks:\n  A:\n    layers: [{name: a, op: B}]\n  B:\n    layers: [{name: b, op: A}]\n",
     "recursive block"),
    ("blocks:\n  A:\n    layers: [{name: a, op: Conv2d, kernel_size: $k, out_channels: 2}]\n",
     "'$k', which is not one of its params"),
    ("blocks:\n  Conv2d:\n    layers: [{name: a, op: ReLU}]\n", "name of a built-in op"),
    ("blocks:\n  A:\n    params: {inputs: 1}\n    layers: [{name: a, op: ReLU}]\n",
     "cannot be a parameter name"),
    ("blocks:\n  A:\n    structure: 'A({w})'\n    layers: [{name: a, op: ReLU}]\n",
     "not a param"),
])
def test_definition_errors(blocks, message):
    with pytest.raises(SpecError) as err:
        S.loads(small(blocks, "  - {name: a, op: ReLU}\n"))
    assert message in err.value.one_line() and err.value.line is not None


def test_shape_error_inside_block_names_block():
    text = small(RES, "  - {name: r, op: Res, width: 5}\n")  # Add of 4 and 5 channels
    with pytest.raises(SpecError) as err:
        infer(S.loads(text))
    assert "'r' (Res)" in str(err.value) and "in block body" in str(err.value)


def test_missing_import(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        S.loads(small("", "  - {name: a, op: ReLU}\n", extra="imports: [nope.yaml]\n"))


def test_squeezenet_parameter_counts():
    for name, params in (("squeezenet_1_0", 1_248_424), ("squeezenet_1_1", 1_235_496)):
        spec = S.load(ROOT / f"netspecs/squeezenet/{name}.yaml")
        info = infer(spec)
        assert info.params == params
        assert info.output_shapes() == {"logits": (1000,)}


def squeeze_variant(name: str, fires: list[tuple[int, int]], pool_after: int) -> S.Netspec:
    lines = ["  - {name: conv1, op: Conv2d, kernel_size: 3, padding: same, out_channels: 16, "
             "activation: relu}",
             "  - {name: pool1, op: MaxPool2d, kernel_size: 2}"]
    for i, (s, e) in enumerate(fires):
        lines.append(f"  - {{name: fire{i}, op: Fire, squeeze: {s}, expand1x1: {e}, "
                     f"expand3x3: {e}}}")
        if i == pool_after:
            lines.append(f"  - {{name: fpool{i}, op: MaxPool2d, kernel_size: 2}}")
    lines += ["  - {name: conv10, op: Conv2d, kernel_size: 1, out_channels: 10, activation: relu}",
              "  - {name: gap, op: GlobalAvgPool2d}"]
    return S.loads(f"name: {name}\nimports: [{LIB}]\n"
                   "input: {channels: 3, height: 32, width: 32}\n"
                   "layers:\n" + "\n".join(lines) + "\n")


def test_merge_two_squeezenet_variants():
    a = squeeze_variant("sq_a", [(4, 8), (4, 8), (8, 16)], 1)
    b = squeeze_variant("sq_b", [(4, 8), (8, 16), (8, 16)], 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = merge([a, b])
    spec = result.spec
    assert "Fire" in spec.blocks
    fires = [lay for lay in spec.layers if lay.op_name == "Fire"]
    assert fires
    # the channel budget scales inside the blocks: like-each lands on the parents' mean
    target = (infer(a).params + infer(b).params) / 2
    assert abs(infer(spec).params - target) / target < 0.01
    for lay in fires:  # every width of an instance scaled by one factor (up to rounding)
        args = lay.args()
        assert args["expand1x1"] == args["expand3x3"]
        assert abs(args["squeeze"] * 2 - args["expand1x1"]) <= 1
    assert any(lay.args()["expand1x1"] not in (8, 16) for lay in fires)
    assert check_embedding(result) == []
    assert infer(spec).output_shapes() == {"out": (10,)}
    assert S.loads(S.dump(spec)) == spec
    parity(spec, shape=(2, 3, 32, 32))


def test_block_width_scaling():
    a = squeeze_variant("sq_a", [(16, 64)], 0)
    fire = a.layer("fire0")
    assert fire.channel_params() == ("squeeze", "expand1x1", "expand3x3")
    assert fire.out_channels_of() == 128
    half = fire.with_width(64)
    assert half.args() == {"squeeze": 8, "expand1x1": 32, "expand3x3": 32}
    assert half.name == fire.name and half.inputs == fire.inputs
    assert fire.with_width(1).args() == {"squeeze": 1, "expand1x1": 1, "expand3x3": 1}


def test_width_following_blocks_are_not_scaled():
    text = small("""blocks:
  Res:
    params: {c: null}
    layers:
      - {name: a, op: Conv2d, kernel_size: 3, padding: same, out_channels: $c, inputs: [x]}
      - {name: y, op: Add, inputs: [x, a]}
""", "  - {name: r, op: Res, c: 4}\n")
    res = S.loads(text).layer("r")
    assert res.channel_params() == ("c",)
    assert res.out_channels_of() is None  # its width follows its input
    with pytest.raises(TypeError):
        res.with_width(6)


def test_merge_conflicting_block_definitions():
    a = squeeze_variant("sq_a", [(4, 8)], 0)
    other = S.loads(small(RES.replace("Res", "Fire").replace("Stage", "Stage2"),
                          "  - {name: f, op: Fire, width: 4}\n"))
    with pytest.raises(SpecError, match="defined differently"):
        from spdnn.spec.blocks import merge_blocks
        merge_blocks([a, other])
