"""Netspec -> SPDNN graph (thesis ch. 3.1, "translate the network into a graph"; depth paper A.2.1).

One node per compute layer (``Conv2d``, ``ConvTranspose2d``, ``Linear``, block instances) and per
layer whose inputs play different parts (SPADE, a two-input block: see
:meth:`~spdnn.ops.base.Op.input_roles`); batch norm, activation and dropout belong to their
layer. Pooling and unpooling are not nodes: they are sticky properties carried by the data
("the pooling property stays with the data except when an unpooling or a fully connected layer
is reached"), so every compute node records the pooling
factor of the data it reads (``in_factor``) and of the data it writes (``out_factor``).
Every path of non-compute layers between two nodes is kept on the edge (``paths``) so that the
network can be rebuilt from the graph ("the pooling quality will be recalled from the original
network", A.2.1).

Node keys: ``("in", name)`` and ``("out", name)`` for network inputs/outputs, ``(tag, layer)``
for compute layers, where ``tag`` identifies the parent network.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import networkx as nx

from spdnn.ops.base import Op
from spdnn.shapes import NetInfo, infer
from spdnn.spec import Netspec


@dataclass(frozen=True)
class EdgePath:
    """The non-compute layers on one parent edge ``u -> v``, in data-flow order."""

    parent: int
    src: str
    dst: str
    ops: tuple[Op, ...]
    in_factor: Fraction | None
    out_factor: Fraction | None
    role: int | None = None
    """For a node whose inputs have roles (:meth:`~spdnn.ops.base.Op.input_roles`), the index
    of the input this path feeds; ``None`` otherwise."""


def factor_suffix(factor: Fraction | None) -> str:
    """The sticky pooling part of a structure code: ``8`` -> ``8P``, ``1/2`` -> ``2U``, ``1`` -> ``""``."""
    if factor is None or factor == 1:
        return ""
    if factor > 1:
        return f"{factor}P" if factor.denominator == 1 else f"({factor})P"
    inv = 1 / factor
    return f"{inv}U" if inv.denominator == 1 else f"({inv})U"


def _reference_height(spec: Netspec, info: NetInfo) -> int | None:
    for i in spec.inputs:
        if len(i.shape) == 3:
            return i.shape[1]
    for o in spec.outputs:
        shape = info.shapes[o.from_]
        if len(shape) == 3:
            return shape[1]
    return None


def to_graph(spec: Netspec, tag: int = 0, info: NetInfo | None = None) -> nx.DiGraph:
    """The SPDNN graph of one netspec.

    Node attributes (compute nodes): ``kind="compute"``, ``parent`` (= ``tag``), ``layer`` (name),
    ``op`` (the layer model), ``structure`` (e.g. ``"3C8P"``: a 3x3 conv on data pooled by 8),
    ``in_factor``/``out_factor`` (:class:`~fractions.Fraction` or ``None`` for vectors),
    ``out_shape``, ``order`` (topological position in the parent). Input/output nodes have
    ``kind="input"``/``"output"`` and ``shape``.

    Edge attribute ``paths``: list of :class:`EdgePath` (one here; several after contraction).

    Raises:
        ShapeError: from shape inference.
    """
    info = info or infer(spec)
    ref_h = _reference_height(spec, info)
    g = nx.DiGraph(name=spec.name)
    # sources[name] = list of (origin node key, ops so far, factor at origin, factor now)
    sources: dict[str, list[tuple[tuple, tuple[Op, ...], Fraction | None, Fraction | None]]] = {}
    for i in spec.inputs:
        key = ("in", i.name)
        g.add_node(key, kind="input", name=i.name, shape=i.shape)
        f = Fraction(1) if len(i.shape) == 3 and ref_h is not None else None
        sources[i.name] = [(key, (), f, f)]
    for order, lay in enumerate(info.layers):
        op = lay.op
        roles = op.input_roles()
        ins = [s for src in lay.inputs for s in sources[src]]
        if not op.is_spdnn_node():
            out_f = _factor_after(op, ins, lay.out_shape, ref_h)
            sources[lay.name] = [(o, ops + (op,), f0, out_f) for o, ops, f0, _ in ins]
            continue
        role_factors = None
        if roles is not None:
            # the first input (the feature map) sets the node's resolution; every role
            # remembers its own, so that a merge resamples each input to where it was
            role_factors = tuple(_joined_factor([f for *_, f in sources[src]])
                                 for src in lay.inputs)
            in_f = role_factors[0]
        else:
            in_f = _joined_factor([f for *_, f in ins])
        key = (tag, lay.name)
        if op.clears_factor:
            out_f = None
            structure = op.structure()
        else:
            out_f = None if in_f is None else in_f * op.resample_factor()
            if len(lay.out_shape) != 3:
                out_f = None
            structure = (op.structure() or op.op_name) + factor_suffix(in_f)
        g.add_node(key, kind="compute", parent=tag, layer=lay.name, op=op, structure=structure,
                   in_factor=in_f, out_factor=out_f, out_shape=lay.out_shape, order=order,
                   role_factors=role_factors)
        for k, src in enumerate(lay.inputs):
            for origin, ops, f0, f1 in sources[src]:
                _add_path(g, origin, key, EdgePath(tag, _name(origin), lay.name, ops, f0, f1,
                                                   k if roles is not None else None))
        sources[lay.name] = [(key, (), out_f, out_f)]
    for o in spec.outputs:
        key = ("out", o.name)
        g.add_node(key, kind="output", name=o.name, shape=info.shapes[o.from_])
        for origin, ops, f0, f1 in sources[o.from_]:
            _add_path(g, origin, key, EdgePath(tag, _name(origin), f"<{o.name}>", ops, f0, f1))
    return g


def _joined_factor(factors: list) -> Fraction | None:
    """The factor of data joined from several paths: the coarsest map's (vectors: ``None``)."""
    return max(factors, key=lambda f: (f is not None, f or 0))


def _name(node: tuple) -> str:
    return f"<{node[1]}>" if node[0] == "in" else node[1]


def _add_path(g: nx.DiGraph, u: tuple, v: tuple, path: EdgePath) -> None:
    if g.has_edge(u, v):
        g.edges[u, v]["paths"].append(path)
    else:
        g.add_edge(u, v, paths=[path])


def _factor_after(op: Op, ins, out_shape, ref_h) -> Fraction | None:
    factors = [f for *_, f in ins]
    if len(out_shape) != 3 or ref_h is None:
        return None
    if op.kind == "reshape" or any(f is None for f in factors):
        # a reshape from a vector to a map: the factor is read off the resolution
        return Fraction(ref_h, out_shape[1]).limit_denominator(64)
    f = max(factors)
    return f * op.resample_factor()
