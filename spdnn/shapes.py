"""Shape inference and cost model: every layer's output shape, parameters and MACs.

Shapes exclude the batch axis: ``(C, H, W)`` for feature maps, ``(F,)`` for vectors. MACs are
multiply-accumulates for one sample; parameters are trainable scalars (batch-norm running
statistics are buffers and not counted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import networkx as nx

from spdnn.errors import ShapeError, SpecError
from spdnn.ops import OPS
from spdnn.ops.base import Op, Shape

if TYPE_CHECKING:
    from spdnn.spec.models import Netspec


@dataclass(frozen=True)
class LayerInfo:
    """Inferred facts about one layer."""

    name: str
    op: Op
    inputs: tuple[str, ...]
    in_shapes: tuple[Shape, ...]
    out_shape: Shape
    params: int
    macs: int


@dataclass
class NetInfo:
    """Inferred facts about a whole netspec, layers in execution (topological) order."""

    spec: Netspec
    layers: list[LayerInfo]
    shapes: dict[str, Shape] = field(default_factory=dict)

    @property
    def params(self) -> int:
        return sum(lay.params for lay in self.layers)

    @property
    def macs(self) -> int:
        return sum(lay.macs for lay in self.layers)

    def __getitem__(self, name: str) -> LayerInfo:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(name)

    def output_shapes(self) -> dict[str, Shape]:
        return {o.name: self.shapes[o.from_] for o in self.spec.outputs}


def execution_order(spec: Netspec) -> list[int]:
    """Layer indices in a deterministic topological order (declaration order breaks ties)."""
    g = nx.DiGraph()
    index = {lay.name: i for i, lay in enumerate(spec.layers)}
    g.add_nodes_from(range(len(spec.layers)))
    for src, dst in spec.edges():
        if src in index:
            g.add_edge(index[src], index[dst])
    return list(nx.lexicographical_topological_sort(g))


def infer(spec: Netspec, file: str | None = None) -> NetInfo:
    """Infer shapes, parameters and MACs of every layer.

    Raises:
        ShapeError: a layer cannot take its inputs; the message names the layer, its op, the
            producing layer(s) and their shapes.
    """
    shapes: dict[str, Shape] = {i.name: i.shape for i in spec.inputs}
    int_inputs = {i.name for i in spec.inputs if i.dtype == "int64"}
    infos: list[LayerInfo] = []
    for idx in execution_order(spec):
        lay = spec.layers[idx]
        srcs = spec.input_names(idx)
        ins = [shapes[s] for s in srcs]
        for s in srcs:
            if s in int_inputs and not lay.reads_class_indices:
                readers = " or ".join(sorted(n for n, c in OPS.items() if c.reads_class_indices))
                raise ShapeError(f"int64 input '{s}' holds class indices and can only feed an "
                                 f"{readers} layer, not {lay.op_name}", file=file,
                                 field=f"layers[{idx}]({lay.name})",
                                 hint="embed the label first: {op: Embedding, num_embeddings: "
                                      "..., embedding_dim: ...}")
        try:
            out = tuple(int(v) for v in lay.infer_shape(ins))
        except ShapeError as exc:
            feeds = ", ".join(f"'{s}' gives {shapes[s]}" for s in srcs)
            raise ShapeError(f"{exc.message}; input {feeds}", file=file,
                             field=f"layers[{idx}]({lay.name})", hint=exc.hint) from None
        except SpecError:
            raise
        shapes[lay.name] = out
        infos.append(LayerInfo(lay.name, lay, tuple(srcs), tuple(ins), out,
                               lay.num_params(ins, out), lay.macs(ins, out)))
    return NetInfo(spec, infos, shapes)
