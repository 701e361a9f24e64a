"""A new op is one class: define, register and use an op that lives only in this file.

``GatedConv2d`` is a compute op (SPDNN structure code ``kG``) with its own torch module
(:class:`GatedConv`, below), and ``SoftPool2d`` a resampling op the merge's rebuild may re-create
(``resampling_layer``). The test registers both, validates two parents that use them, merges the
parents, draws every view, emits standalone source and checks it against the in-process module,
and exports the merged network to ONNX with onnxruntime parity. The fixture unregisters them
again, so no other test sees them.
"""

from __future__ import annotations

import ast
import math
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import torch
from torch import nn

import spdnn.spec as S
from spdnn import render as R
from spdnn.codegen import build_module, emit_module
from spdnn.errors import SpecError
from spdnn.graph import check_embedding, merge, parent_graph
from spdnn.ops import OPS, Call, Helper, Op, Shape, register_op, resampling_layer
from spdnn.ops.base import pair
from spdnn.ops.types import PosInt
from tests.helpers import exec_class


# --------------------------------------------------------------------------------------------
# the torch helpers (module level: their source is copied into emitted files)
# --------------------------------------------------------------------------------------------
class GatedConv(nn.Module):
    """A gated convolution: ``conv(x) * sigmoid(gate(x))``, "same" padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.gate = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.sigmoid(self.gate(x))


class SoftPool(nn.Module):
    """Average of max and mean pooling over ``k x k`` windows."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        return 0.5 * (nn.functional.max_pool2d(x, k) + nn.functional.avg_pool2d(x, k))


# --------------------------------------------------------------------------------------------
# the op classes (registered by the fixture only)
# --------------------------------------------------------------------------------------------
class GatedConv2d(Op):
    """Gated convolution ``conv(x) * sigmoid(gate(x))`` (odd kernel, "same" padding).

    Shapes ``(C, H, W) -> (out_channels, H, W)``; structure code ``kG``."""

    op: Literal["GatedConv2d"]
    kernel_size: PosInt = 3
    out_channels: PosInt

    kind = "compute"
    draw_class = "conv"
    helpers = (Helper(f"{__name__}:GatedConv"),)
    onnx_exportable: ClassVar[bool] = True

    def infer_shape(self, ins: list[Shape]) -> Shape:
        _, h, w = self.need_spatial(ins[0])
        if self.kernel_size % 2 == 0:
            raise self.fail("kernel_size must be odd")
        return (self.out_channels, h, w)

    def num_params(self, ins: list[Shape], out: Shape) -> int:
        return 2 * (self.kernel_size ** 2 * ins[0][0] * self.out_channels + self.out_channels)

    def macs(self, ins: list[Shape], out: Shape) -> int:
        return 2 * self.kernel_size ** 2 * ins[0][0] * math.prod(out) + math.prod(out)

    def module(self, ins: list[Shape], out: Shape) -> Call:
        return Call.of("GatedConv", ins[0][0], self.out_channels, self.kernel_size)

    def structure(self) -> str:
        return f"{self.kernel_size}G"

    def out_channels_of(self) -> int:
        return self.out_channels

    def with_width(self, width: int) -> Op:
        return self.model_copy(update={"out_channels": int(width)})

    def label_parts(self) -> tuple[str, list[str]]:
        return f"GatedConv {self.kernel_size}x{self.kernel_size}, {self.out_channels} ch", []


class SoftPool2d(Op):
    """Soft pooling by ``kernel_size`` (stride = kernel): ``(C, H, W) -> (C, H/k, W/k)``."""

    op: Literal["SoftPool2d"]
    kernel_size: PosInt = 2

    kind = "resample"
    helpers = (Helper(f"{__name__}:SoftPool"),)
    onnx_exportable: ClassVar[bool] = True

    def infer_shape(self, ins: list[Shape]) -> Shape:
        c, h, w = self.need_spatial(ins[0])
        k = self.kernel_size
        if h < k or w < k:
            raise self.fail(f"kernel_size {k} is larger than the input {h}x{w}")
        return (c, h // k, w // k)

    def module(self, ins: list[Shape], out: Shape) -> Call:
        return Call.of("SoftPool", self.kernel_size)

    def resample_factor(self) -> Fraction:
        return Fraction(pair(self.kernel_size)[0])

    @classmethod
    def resampling_layer(cls, factor: Fraction) -> dict[str, Any] | None:
        if factor <= 1 or factor.denominator != 1:
            return None
        return {"op": cls.__name__, "kernel_size": int(factor)}


@pytest.fixture
def plugin_ops():
    """Register the two ops for one test, and restore the registry afterwards."""
    saved = dict(OPS)
    register_op(GatedConv2d)
    register_op(SoftPool2d)
    S.rebuild_layer_union()
    try:
        yield
    finally:
        OPS.clear()
        OPS.update(saved)
        S.rebuild_layer_union()


# two parents: both have a 3x3 gated conv at distance 2 (they merge); only the second pools
# before it, so the merged edge from the shared first layer must be re-pooled (by a SoftPool2d,
# recalled from that parent)
PARENT_A = """
name: plugin_a
input: {name: x, channels: 2, height: 16, width: 16}
layers:
  - {name: c1, op: Conv2d, kernel_size: 3, out_channels: 4, padding: same, activation: relu}
  - {name: pool, op: SoftPool2d, kernel_size: 2}
  - {name: g1, op: GatedConv2d, kernel_size: 3, out_channels: 6}
  - {name: up, op: Unpool, scale_factor: 2}
  - {name: head, op: Conv2d, kernel_size: 1, out_channels: 3}
output: {name: y, from: head}
"""

PARENT_B = (PARENT_A.replace("plugin_a", "plugin_b")
            .replace("kernel_size: 3, out_channels: 4", "kernel_size: 5, out_channels: 4")
            .replace("out_channels: 6", "out_channels: 8"))


def _parents() -> list[S.Netspec]:
    return [S.loads(PARENT_A, "a.yaml"), S.loads(PARENT_B, "b.yaml")]


def test_unregistered_op_is_unknown():
    assert "GatedConv2d" not in OPS
    with pytest.raises(SpecError, match="unknown op"):
        S.loads(PARENT_A)


def test_plugin_op_validates_labels_and_merges(plugin_ops):
    a, b = _parents()
    assert type(a.layer("g1")).__name__ == "GatedConv2d"
    g = parent_graph(a)
    labels = {d["layer"]: d["label"] for _, d in g.nodes(data=True) if d["kind"] == "compute"}
    assert labels == {"c1": ("3C", 1), "g1": ("3G2P", 2), "head": ("1C", 3)}
    result = merge([a, b], params="keep")
    assert check_embedding(result) == []
    gated = [lay for lay in result.spec.layers if lay.op_name == "GatedConv2d"]
    assert len(gated) == 1 and gated[0].out_channels == 8  # the widest parent width
    assert sorted(gated[0].merged_from) == ["plugin_a:g1", "plugin_b:g1"]
    # the two parents' first layers differ (3C, 5C): both feed the merged gated conv, each
    # through the pooling its parent had, a SoftPool2d
    assert sum(lay.op_name == "SoftPool2d" for lay in result.spec.layers) == 2
    # a budget merge scales the plugin op's width too
    budget = merge([a, b], min_width=1)  # 4-8 channel parents: below the default floor of 4
    assert budget.report.target_params and abs(budget.report.budget_error) < 0.05


def test_rebuild_asks_the_op_class_how_to_resample(plugin_ops):
    """Where a merged edge must be re-pooled, the rebuild takes the first op (on the edge, then
    in the parents) whose class answers ``resampling_layer``: the plugin pool is recalled."""
    pool = S.loads(PARENT_A).layer("pool")
    conv = S.loads(PARENT_A).layer("c1")
    assert resampling_layer(Fraction(4), [conv, pool]) == {"op": "SoftPool2d", "kernel_size": 4}
    assert resampling_layer(Fraction(4), [conv]) == {"op": "MaxPool2d", "kernel_size": 4}
    assert resampling_layer(Fraction(1, 2), [pool]) == {"op": "Unpool", "scale_factor": 2}
    with pytest.raises(ValueError):
        resampling_layer(Fraction(3, 2), [pool])


def test_merge_keeps_the_plugin_ops_of_each_path(plugin_ops):
    a = S.loads(PARENT_A, "a.yaml")
    direct = S.loads(PARENT_A.replace("name: plugin_a", "name: plugin_c").replace(
        "  - {name: pool, op: SoftPool2d, kernel_size: 2}\n", "").replace(
        "  - {name: up, op: Unpool, scale_factor: 2}\n", "").replace(
        "kernel_size: 3, out_channels: 4", "kernel_size: 7, out_channels: 4"), "c.yaml")
    result = merge([a, direct], params="keep")
    ops = [lay.op_name for lay in result.spec.layers]
    assert ops.count("SoftPool2d") == 1 and ops.count("GatedConv2d") == 2
    assert check_embedding(result) == []


def test_plugin_op_renders(plugin_ops, tmp_path: Path):
    a, b = _parents()
    result = merge([a, b], params="keep")
    for view in R.VIEWS:
        dot = R.build_view(view, result)
        assert dot.source.count("{") == dot.source.count("}")
    src = R.netspec_diagram(a).source
    assert "GatedConv 3x3, 6 ch" in src
    assert R._FILL["conv"] in src  # drawn in the colour class the op declares
    assert "(3G2P, 2)" in R.labelled_diagram(parent_graph(a)).source
    path = R.save(R.side_by_side(result), tmp_path / "x.dot")
    assert "digraph" in path.read_text()


def test_plugin_op_emits_standalone_source(plugin_ops):
    a, b = _parents()
    spec = merge([a, b], params="keep").spec
    src = emit_module(spec)
    assert "class GatedConv(nn.Module):" in src and "class SoftPool(nn.Module):" in src
    imports = [n for n in ast.walk(ast.parse(src)) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert {a.name.split(".")[0] for n in imports for a in n.names} | {
        n.module for n in imports if isinstance(n, ast.ImportFrom)} == {"torch", "nn"}
    ref = build_module(spec).eval()
    gen = exec_class(src, spec)().eval()
    assert list(gen.state_dict()) == list(ref.state_dict())
    gen.load_state_dict(ref.state_dict())
    x = torch.rand(2, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(gen(x), ref(x))


def test_plugin_op_exports_to_onnx(plugin_ops, tmp_path: Path):
    pytest.importorskip("onnxruntime")
    import numpy as np
    import onnxruntime as ort

    from spdnn.export import export_onnx

    a, b = _parents()
    spec = merge([a, b], params="keep").spec
    ref = build_module(spec).eval()
    report = export_onnx(spec, tmp_path / "plugin.onnx", state_dict=ref.state_dict())
    assert Path(report.path).is_file()
    x = torch.rand(1, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    sess = ort.InferenceSession(str(tmp_path / "plugin.onnx"), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = ref(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_registry_is_restored():
    assert "GatedConv2d" not in OPS and "SoftPool2d" not in OPS
    from spdnn.codegen.helpers import helper_table

    assert "GatedConv" not in helper_table()
