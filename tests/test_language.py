"""Netspec language features of issue #3 beyond ops and blocks: int64 (class index) inputs,
several named inputs and outputs in labelling and merging, layers whose inputs play different
parts (SPADE, two-input blocks) on merged edges."""

from __future__ import annotations

import re
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
import pytest
import torch

import spdnn.export as E
import spdnn.spec as S
from spdnn.codegen import build_module, emit_module
from spdnn.errors import ShapeError, SpecError
from spdnn.graph import merge, to_graph
from spdnn.graph.label import forward_distances
from spdnn.shapes import infer
from tests.helpers import exec_class

CGAN = """
name: cgan_toy
inputs:
  - {name: z, features: 8}
  - {name: label, features: 1, dtype: int64, num_classes: 10}
layers:
  - {name: embed, op: Embedding, num_embeddings: 10, embedding_dim: 4, inputs: [label]}
  - {name: cat, op: Concat, inputs: [z, embed]}
  - {name: fc, op: Linear, out_features: 16, activation: relu}
output: {name: y, from: fc}
"""


# --------------------------------------------------------------------------------------------
# int64 inputs
# --------------------------------------------------------------------------------------------
def test_int64_input_round_trips_and_feeds_embedding():
    spec = S.loads(CGAN)
    assert spec.inputs[1].dtype == "int64" and spec.inputs[1].num_classes == 10
    assert spec.inputs[0].dtype == "float32"
    text = S.dump(spec)
    assert "dtype: int64" in text and text.count("dtype") == 1  # float32 is the default
    assert S.loads(text) == spec
    xs = S.example_inputs(spec, 64, generator=torch.Generator().manual_seed(0))
    assert xs[1].dtype == torch.int64 and xs[1].shape == (64, 1)
    assert int(xs[1].min()) >= 0 and int(xs[1].max()) <= 9 and len(set(xs[1].tolist()[0])) >= 1
    assert xs[0].dtype == torch.float32
    torch.manual_seed(0)
    m = build_module(spec)
    out = m(*xs)
    assert out.shape == (64, 16)
    # the label matters: two labels give two outputs for one z
    z = torch.rand(1, 8)
    a, b = m(z, torch.tensor([[1]])), m(z, torch.tensor([[2]]))
    assert not torch.equal(a, b)
    src = emit_module(spec)
    assert "label: (N, 1) int64 class indices in [0, 10)" in src


def test_int64_input_exports_as_int64(tmp_path: Path):
    rep = E.export_onnx(S.loads(CGAN), tmp_path / "cgan.onnx")
    assert rep.ok and rep.max_abs_err <= 1e-5
    model = onnx.load(str(tmp_path / "cgan.onnx"))
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    assert types == {"z": onnx.TensorProto.FLOAT, "label": onnx.TensorProto.INT64}
    assert [t.dtype for t in rep.inputs] == ["float32", "int64"]


@pytest.mark.parametrize("inp, message", [
    ("{name: label, features: 1, dtype: int64}", "needs 'num_classes'"),
    ("{name: label, channels: 1, height: 2, width: 2, dtype: int64, num_classes: 3}",
     "declare it as a vector"),
    ("{name: label, features: 1, num_classes: 3}", "'num_classes' is for int64"),
    ("{name: label, features: 1, dtype: int32, num_classes: 3}", "dtype"),
])
def test_bad_int64_inputs_are_named(inp: str, message: str):
    text = f"name: t\ninput: {inp}\nlayers:\n  - {{name: e, op: Embedding, num_embeddings: 3, " \
           "embedding_dim: 2}\n"
    with pytest.raises(SpecError) as exc:
        S.loads(text)
    assert message in exc.value.one_line()
    assert "input" in exc.value.one_line()


def test_int64_input_cannot_feed_a_conv():
    text = CGAN.replace("inputs: [z, embed]", "inputs: [z, label]")
    with pytest.raises(ShapeError) as exc:
        infer(S.loads(text))
    assert "int64 input 'label'" in exc.value.one_line() and "Concat" in exc.value.one_line()


# --------------------------------------------------------------------------------------------
# SPADE (two roles) in merged networks, several named inputs and outputs
# --------------------------------------------------------------------------------------------
def spade_parent(name: str, extra: int, hidden: int = 8) -> S.Netspec:
    """A tiny SPADE generator: z (16) and heatmap h (1, 4, 4) -> image (3, 8, 8) and a
    second output ``feat`` (the 4x4 features), with ``extra`` 3x3 convs at 4x4."""
    convs = "".join(
        f"  - {{name: mid{k}, op: Conv2d, kernel_size: 3, padding: same, out_channels: 8, "
        f"activation: relu}}\n" for k in range(extra))
    return S.loads(f"""
name: {name}
inputs:
  - {{name: z, features: 16}}
  - {{name: h, channels: 1, height: 4, width: 4}}
layers:
  - {{name: fc, op: Linear, out_features: 128, inputs: [z]}}
  - {{name: map, op: Reshape, shape: [8, 4, 4]}}
  - {{name: spade1, op: SPADE, hidden: {hidden}, inputs: [map, h]}}
  - {{name: conv1, op: Conv2d, kernel_size: 3, padding: same, out_channels: 8, activation: relu}}
{convs}  - {{name: up, op: Upsample, scale_factor: 2}}
  - {{name: spade2, op: SPADE, hidden: {hidden}, inputs: [up, h]}}
  - {{name: conv_out, op: Conv2d, kernel_size: 3, padding: same, out_channels: 3, activation: tanh}}
outputs:
  - {{name: image, from: conv_out}}
  - {{name: feat, from: conv1}}
""")


def _spade_inputs(spec: S.Netspec) -> list[list[str]]:
    return [list(lay.inputs) for lay in spec.layers if lay.op_name == "SPADE"]


def test_spade_is_a_node_with_roles_and_labels_count_from_the_nearest_input():
    p = spade_parent("p", 1)
    g = to_graph(p)
    spade = [n for n, d in g.nodes(data=True) if d.get("layer", "").startswith("spade")]
    assert len(spade) == 2
    for n in spade:
        roles = sorted(path.role for u in g.predecessors(n) for path in g.edges[u, n]["paths"])
        assert roles == [0, 1]
        assert g.nodes[n]["structure"].startswith("SPADE3")
    d = forward_distances(g)
    # spade1 reads fc (distance 1 from z) and h directly: the nearest input (h) is 0 away
    assert d[(0, "fc")] == 1
    assert d[(0, "spade1")] == 1
    assert d[(0, "conv1")] == 2
    # the second SPADE: the longest path from h has 4 nodes (spade1, conv1, mid0, spade2),
    # the one from z 5: the nearest input counts
    assert d[(0, "mid0")] == 3
    assert d[(0, "spade2")] == 4
    assert forward_distances(g, "shortest")[(0, "spade2")] == 1
    # the up-sampled path remembers its resolution: SPADE2's feature map is at factor 1/2
    assert g.nodes[(0, "spade2")]["role_factors"][0] * 2 == g.nodes[(0, "spade1")]["role_factors"][0]


def test_merge_keeps_spade_inputs_apart():
    parents = [spade_parent("shallow", 0), spade_parent("deep", 2, hidden=12)]
    res = merge(parents, params="keep")
    spec = res.spec
    assert [i.name for i in spec.inputs] == ["z", "h"]
    assert [o.name for o in spec.outputs] == ["image", "feat"]
    spades = [lay for lay in spec.layers if lay.op_name == "SPADE"]
    assert spades and all(len(lay.inputs) == 2 for lay in spades)
    # the segmap argument of every SPADE traces back to the heatmap input only
    g = nx.DiGraph(spec.edges())
    for lay in spades:
        seg_sources = {a for a in nx.ancestors(g, lay.inputs[1]) | {lay.inputs[1]}
                       if a in ("z", "h")}
        assert seg_sources == {"h"}, lay.name
        assert "z" in nx.ancestors(g, lay.inputs[0])
    info = infer(spec)
    assert info.output_shapes() == {"image": (3, 8, 8), "feat": (8, 4, 4)}
    torch.manual_seed(0)
    m = build_module(spec).eval()
    out = m(torch.randn(2, 16), torch.rand(2, 1, 4, 4))
    assert out["image"].shape == (2, 3, 8, 8)
    # emitted code agrees with the interpreter
    gen = exec_class(emit_module(spec), spec)()
    gen.load_state_dict(m.state_dict())
    xs = [torch.randn(2, 16), torch.rand(2, 1, 4, 4)]
    with torch.no_grad():
        want, got = m(*xs), gen.eval()(*xs)
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_merge_of_one_spade_network_is_itself():
    p = spade_parent("p", 1)
    spec = merge([p], params="keep").spec
    assert infer(spec).params == infer(p).params
    assert sorted(lay.op_name for lay in spec.layers if lay.kind == "compute"
                  or lay.op_name == "SPADE") == sorted(
        lay.op_name for lay in p.layers if lay.kind == "compute" or lay.op_name == "SPADE")


def test_merge_requires_shared_input_names():
    a = spade_parent("a", 0)
    b = S.loads(S.dump(spade_parent("b", 0)).replace("name: h", "name: heat")
                .replace("[map, h]", "[map, heat]").replace("[up, h]", "[up, heat]"))
    with pytest.raises(Exception) as exc:
        merge([a, b])
    assert "input" in str(exc.value).lower()


TWO_INPUT_BLOCK = """
name: {name}
inputs:
  - {{name: x, channels: 4, height: 8, width: 8}}
  - {{name: s, channels: 2, height: 8, width: 8}}
blocks:
  Mix:
    params: {{width: null}}
    inputs: [x, s]
    layers:
      - {{name: a, op: Conv2d, kernel_size: 3, padding: same, out_channels: $width, inputs: [x]}}
      - {{name: b, op: Conv2d, kernel_size: 1, out_channels: $width, inputs: [s]}}
      - {{name: y, op: Add, inputs: [a, b]}}
layers:
{layers}
"""


def test_merge_of_networks_with_a_two_input_block():
    one = TWO_INPUT_BLOCK.format(name="one", layers="""\
  - {name: c1, op: Conv2d, kernel_size: 3, padding: same, out_channels: 6, inputs: [x]}
  - {name: m1, op: Mix, width: 6, inputs: [c1, s]}
  - {name: out, op: Conv2d, kernel_size: 1, out_channels: 1, activation: sigmoid}""")
    two = TWO_INPUT_BLOCK.format(name="two", layers="""\
  - {name: c1, op: Conv2d, kernel_size: 3, padding: same, out_channels: 6, inputs: [x]}
  - {name: c2, op: Conv2d, kernel_size: 5, padding: same, out_channels: 6}
  - {name: m1, op: Mix, width: 6, inputs: [c2, s]}
  - {name: out, op: Conv2d, kernel_size: 1, out_channels: 1, activation: sigmoid}""")
    spec = merge([S.loads(one), S.loads(two)], params="keep").spec
    mixes = [lay for lay in spec.layers if lay.op_name == "Mix"]
    assert len(mixes) == 1 and len(mixes[0].inputs) == 2
    assert mixes[0].inputs[1] == "s"  # the second role keeps its own source
    out = build_module(spec)(torch.rand(2, 4, 8, 8), torch.rand(2, 2, 8, 8))
    assert out.shape == (2, 1, 8, 8)
    assert np.isfinite(out.detach().numpy()).all()


def test_merge_of_two_spade_sr_generators_keeps_every_role():
    """SPADE-SR-32 and -64 (seed 001 Table 1) share inputs z, h and output image; their
    up-blocks take three inputs (x, s_in, s_out) that must stay apart in the merge."""
    a, b = (S.load(Path(__file__).parents[1] / f"netspecs/spade_sr/spade_sr_{w}.yaml")
            for w in (32, 64))
    res = merge([a, b], params="keep")
    spec = res.spec
    ups = [lay for lay in spec.layers if lay.op_name == "SPADESRResBlockUp"]
    assert len(ups) == 3 and all(len(lay.inputs) == 3 for lay in ups)
    g = nx.DiGraph(spec.edges())
    for lay in ups:  # the semantic arguments come from the heat map only
        for s in lay.inputs[1:]:
            assert "z" not in nx.ancestors(g, s) and "h" in nx.ancestors(g, s)
        assert "z" in nx.ancestors(g, lay.inputs[0])
    # the block structure codes name their widths (SemRes(32) vs SemRes(64)), so the two
    # semantic branches stay apart and each merged up-block reads both, concatenated per role
    sem = [lay for lay in spec.layers if lay.op_name.startswith("SemResBlock")]
    assert sorted(lay.args()["channels"] for lay in sem) == [32] * 4 + [64] * 4
    shapes = infer(spec).shapes
    for lay in ups:
        assert spec.layer(lay.inputs[1]).op_name == "Concat"
        assert shapes[lay.inputs[1]][0] == shapes[lay.inputs[2]][0] == 32 + 64
    assert infer(spec).output_shapes() == {"image": (3, 40, 64)}
    out = build_module(spec).eval()(torch.randn(2, 128), torch.rand(2, 1, 5, 8))
    assert out.shape == (2, 3, 40, 64)


def test_channel_budget_stops_where_fixed_slices_no_longer_fit():
    """A ChannelSlice (generative units, seed 000) fixes a lower bound on the width it reads;
    the budget search stays above it instead of failing."""
    head = "input: {name: x, channels: 3, height: 8, width: 8}\nlayers:\n"
    conv = "{op: Conv2d, kernel_size: 3, padding: same, out_channels: 16, activation: relu}"
    one = S.loads("name: one\n" + head + f"""\
  - {{name: c1, {conv[1:]}
  - {{name: top, op: ChannelSlice, start: 0, stop: 12}}
  - {{name: c2, {conv[1:]}
  - {{name: out, op: Conv2d, kernel_size: 1, out_channels: 1}}
""")
    two = S.loads("name: two\n" + head + f"""\
  - {{name: c1, {conv[1:]}
  - {{name: c2, op: Conv2d, kernel_size: 5, padding: same, out_channels: 16, activation: relu}}
  - {{name: out, op: Conv2d, kernel_size: 1, out_channels: 1}}
""")
    spec = merge([one, two], params=300).spec  # far below what 12 sliced channels need
    info = infer(spec)
    first = next(lay for lay in spec.layers if lay.merged_from and "one:c1" in lay.merged_from)
    assert first.out_channels >= 12
    assert info.output_shapes() == {"out": (1, 8, 8)}


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "netspecs").rglob("*.yaml")),
                         ids=lambda p: p.relative_to(Path(__file__).parents[1]).as_posix())
def test_every_netspec_file_has_a_header_citing_its_source(path: Path):
    """Issue #3: each netspec's header cites the table/section it follows."""
    lines = path.read_text().splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    assert header, f"{path.name}: no header comment"
    text = " ".join(header)
    assert re.search(r"\b(sec\.|section|table|app\.|appendix|fig\.|torchvision)", text, re.I), (
        f"{path.name}: the header cites no table, section or figure")


def test_a_layer_with_roles_may_read_one_source_twice():
    text = TWO_INPUT_BLOCK.format(name="twice", layers="""\
  - {name: c1, op: Conv2d, kernel_size: 3, padding: same, out_channels: 2, inputs: [x]}
  - {name: m1, op: Mix, width: 6, inputs: [c1, c1]}
  - {name: cat, op: Concat, inputs: [m1, s]}""")
    spec = S.loads(text)
    assert spec.layer("m1").inputs == ["c1", "c1"]
    torch.manual_seed(0)
    m = build_module(spec).eval()
    x = torch.rand(2, 4, 8, 8)
    assert m(x, torch.rand(2, 2, 8, 8)).shape == (2, 8, 8, 8)
    gen = exec_class(emit_module(spec), spec)().eval()
    gen.load_state_dict(m.state_dict())
    s = torch.rand(2, 2, 8, 8)
    assert torch.equal(gen(x, s), m(x, s))
    # a one-input layer still may not
    with pytest.raises(SpecError, match="same input twice"):
        S.loads(text.replace("inputs: [m1, s]}", "inputs: [m1, s]}\n  - {name: bad, op: Conv2d, "
                                                 "kernel_size: 1, out_channels: 1, inputs: [cat, cat]}"))
