"""The importers' shared half: a layer graph read from ONNX or torch.fx -> netspec + state dict.

Both front ends (:mod:`spdnn.importers.onnx`, :mod:`spdnn.importers.fx`) translate their graph
into :class:`Node` objects that already speak the netspec's language (an op of the registry
and its fields) and carry the node's tensors (numpy arrays or torch tensors). This module does
what is common to both:

1. **Fusion** into the netspec's compute layers (thesis ch. 3.1 step 1: batch norm and
   activation belong to their layer): a ``Conv2d``/``ConvTranspose2d``/``Linear`` whose only
   reader is a batch norm takes it as ``batch_norm: true`` (when its ``eps`` is torch's default
   1e-5, the only one the fused option builds; otherwise the norm stays a ``BatchNorm2d``
   layer), then an activation that is its only reader as ``activation:`` (any name of
   :data:`spdnn.ops.base.ActivationName`). A ``Flatten`` read only by a ``Linear`` is dropped
   (``Linear`` flattens C-major itself); a keep-dims global average pool read only by a
   flatten becomes one ``GlobalAvgPool2d``.
2. **The netspec**: layer names from the source (module paths), unique; ``inputs`` written only
   where a layer does not read the previous one; validated with :func:`spdnn.spec.from_data`.
3. **A shape check**: every layer's shape by :func:`spdnn.shapes.infer` must equal the source's
   own shape of that value (onnx's shape inference, torch.fx's ``ShapeProp``); a difference is
   an :class:`ModelImportError` naming the source node.
4. **The state dict**: the network is built with :func:`spdnn.codegen.build_module` and each
   layer's tensors are copied into its modules (the convolution/linear module, then its batch
   norm), so the returned ``state_dict`` is the compiled module's own and loads strictly.
"""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass, field
from typing import Any, get_args

from spdnn.errors import SpdnnError

__all__ = ["ImportResult", "ModelImportError", "Node", "SourceGraph", "build", "conv_fields",
           "nearest", "pool_fields", "short"]


class ModelImportError(SpdnnError):
    """A model cannot be imported: unreadable file, unsupported op, dynamic shape, bad weights."""


@dataclass
class Node:
    """One layer of the source graph, in netspec terms.

    Attributes:
        name: proposed layer name (the module path, e.g. ``layer1.0.conv1``).
        op: a netspec op name (``Conv2d``), or ``BatchNorm1d`` (fusable into ``Linear`` only).
        fields: the op's netspec fields (no ``name``/``op``/``inputs``).
        inputs: value names read, in order.
        output: the value name written.
        params: tensors by role: ``weight``/``bias`` of the layer's own module; a batch norm's
            ``weight``, ``bias``, ``running_mean``, ``running_var`` (the norm's roles are
            prefixed ``bn.`` once it is fused into a layer). Arrays or tensors, any float dtype.
        origin: how errors name the source node, e.g. ``node '/conv1/Conv' (Conv)``.
        keepdims: a global average pool whose source keeps a 1x1 map (ONNX
            ``GlobalAveragePool``, ``nn.AdaptiveAvgPool2d(1)``).
        members: filled by the fusion.
    """

    name: str
    op: str
    fields: dict[str, Any]
    inputs: list[str]
    output: str
    params: dict[str, Any] = field(default_factory=dict)
    origin: str = ""
    keepdims: bool = False
    members: list[str] = field(default_factory=list)
    """Names of the source nodes fused into this one (its batch norm, activation, flatten)."""


@dataclass
class SourceGraph:
    """A whole source graph: named inputs with shapes (batch axis excluded), the nodes in a
    topological order, the graph's outputs ``(output name, value name)`` and every value's
    shape as the source knows it (batch axis excluded; may be partial)."""

    name: str
    inputs: list[tuple[str, tuple[int, ...]]]
    nodes: list[Node]
    outputs: list[tuple[str, str]]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    description: str = ""


@dataclass
class ImportResult:
    """An imported model: the netspec, the compiled module's state dict holding the source's
    weights (``None`` when imported without weights), notes on what was folded, and the
    compiled module (:func:`spdnn.codegen.build_module`) holding those weights."""

    spec: Any
    state_dict: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)
    module: Any = None

    @property
    def params(self) -> int:
        """Trainable parameters of the netspec (:func:`spdnn.shapes.infer`)."""
        from spdnn.shapes import infer

        return infer(self.spec).params


def nearest(op: str, supported: list[str], known: dict[str, str] | None = None) -> str:
    """The nearest supported alternative to an unsupported ``op``: a known substitute from
    ``known``, else the closest name of ``supported`` (``difflib``)."""
    if known and op in known:
        return known[op]
    close = difflib.get_close_matches(op, supported, n=1, cutoff=0.0)
    return close[0] if close else supported[0]


def pool_fields(kernel, stride, padding, ceil_mode: bool,
                count_include_pad: bool = True) -> dict[str, Any]:
    """The netspec fields of a ``MaxPool2d``/``AvgPool2d`` from per-axis pairs, defaults left
    out (``count_include_pad`` matters only with padding)."""
    fields: dict[str, Any] = {"kernel_size": short(kernel)}
    if tuple(stride) != tuple(kernel):
        fields["stride"] = short(stride)
    if tuple(padding) != (0, 0):
        fields["padding"] = short(padding)
        if not count_include_pad:
            fields["count_include_pad"] = False
    if ceil_mode:
        fields["ceil_mode"] = True
    return fields


# --------------------------------------------------------------------------------------------
# fusion
# --------------------------------------------------------------------------------------------
_FUSES_BN = {"Conv2d": "BatchNorm2d", "ConvTranspose2d": "BatchNorm2d", "Linear": "BatchNorm1d"}
_BN_EPS = 1e-5


def activation_name(op: str, fields: dict[str, Any]) -> str | None:
    """The ``activation:`` name of a stand-alone activation op (``ReLU`` -> ``relu``, ``GELU``
    with ``approximate: tanh`` -> ``gelu_tanh``), or ``None`` when the op is none or has no
    fused form (the op itself answers: its ``activation_name()``, or its ``act_fn``; checked
    against :data:`spdnn.ops.base.ActivationName`)."""
    from spdnn.ops import OPS
    from spdnn.ops.base import ActivationName

    cls = OPS.get(op)
    if cls is None or not hasattr(cls, "act_fn"):
        return None
    try:
        layer = cls.model_validate({"name": "probe", "op": op, **fields})
    except ValueError:
        return None
    name = layer.activation_name() if hasattr(layer, "activation_name") else cls.act_fn
    return name if name in get_args(ActivationName) and name != "none" else None


def _readers(nodes: list[Node], outputs: list[tuple[str, str]]) -> dict[str, int]:
    count: dict[str, int] = {}
    for n in nodes:
        for v in n.inputs:
            count[v] = count.get(v, 0) + 1
    for _, v in outputs:
        count[v] = count.get(v, 0) + 1
    return count


def _fuse(graph: SourceGraph, notes: list[str]) -> list[Node]:
    nodes = list(graph.nodes)
    readers = _readers(nodes, graph.outputs)
    by_input: dict[str, list[Node]] = {}
    for n in nodes:
        for v in n.inputs:
            by_input.setdefault(v, []).append(n)
    dropped: set[int] = set()
    alias: dict[str, str] = {}
    folded: list[tuple[str, Node]] = []

    def only_reader(n: Node) -> Node | None:
        if readers.get(n.output) != 1:
            return None
        cands = by_input.get(n.output, [])
        return cands[0] if len(cands) == 1 and id(cands[0]) not in dropped else None

    for n in nodes:
        if id(n) in dropped:
            continue
        if n.op in _FUSES_BN:
            nxt = only_reader(n)
            if (nxt is not None and nxt.op == _FUSES_BN[n.op]
                    and abs(nxt.fields.get("eps", _BN_EPS) - _BN_EPS) <= 1e-9
                    and nxt.fields.get("affine", True)):
                n.fields["batch_norm"] = True
                n.fields["bias"] = "bias" in n.params
                n.params.update({f"bn.{k}": v for k, v in nxt.params.items()})
                n.output = nxt.output
                n.members.append(nxt.name)
                dropped.add(id(nxt))
                folded.append((nxt.origin, n))
            nxt = only_reader(n)
            if nxt is not None and "activation" not in n.fields:
                act = activation_name(nxt.op, nxt.fields)
                if act is not None:
                    n.fields["activation"] = act
                    if act == "leaky_relu":
                        n.fields["negative_slope"] = nxt.fields.get("negative_slope", 0.01)
                    n.output = nxt.output
                    n.members.append(nxt.name)
                    dropped.add(id(nxt))
            if "bias" in n.fields and n.fields["bias"] == (not n.fields.get("batch_norm")):
                del n.fields["bias"]  # the default: a bias unless batch norm follows
        elif n.op == "GlobalAvgPool2d" and n.keepdims:
            nxt = only_reader(n)
            if nxt is not None and nxt.op == "Flatten":
                n.keepdims = False
                n.output = nxt.output
                dropped.add(id(nxt))
        elif n.op == "Flatten":
            nxt = only_reader(n)
            if nxt is not None and nxt.op == "Linear":
                alias[n.output] = n.inputs[0]
                nxt.members.append(n.name)
                dropped.add(id(n))
    out = []
    for n in nodes:
        if id(n) in dropped:
            continue
        if n.op == "BatchNorm1d":
            raise ModelImportError(f"{n.origin}: a batch norm of a vector that follows no "
                                   "Linear layer", hint="nearest supported: a Linear layer's "
                                   "batch_norm, or BatchNorm2d of a feature map")
        n.inputs = [_follow(alias, v) for v in n.inputs]
        out.append(n)
    graph.outputs = [(name, _follow(alias, v)) for name, v in graph.outputs]
    _name_groups(out)
    notes += [f"{origin} folded into layer '{n.name}' (batch_norm: true)" for origin, n in folded]
    return out


def _name_groups(nodes: list[Node]) -> None:
    """A fused layer whose source nodes are the children of one module (``conv1.0``,
    ``conv1.1``, ``conv1.2`` of a ``Sequential`` named ``conv1``) takes that module's name,
    unless another layer lives under it too."""
    owner: dict[str, int] = {}
    for k, n in enumerate(nodes):
        for name in (n.name, *n.members):
            prefix = name
            while "." in prefix:
                prefix = prefix.rpartition(".")[0]
                owner[prefix] = k if owner.get(prefix, k) == k else -1
            owner[name] = -1
    for k, n in enumerate(nodes):
        if not n.members:
            continue
        parent = n.name.rpartition(".")[0]
        if (parent and owner.get(parent) == k
                and any(m.rpartition(".")[0] == parent for m in n.members)):
            n.name = parent


def _follow(alias: dict[str, str], v: str) -> str:
    while v in alias:
        v = alias[v]
    return v


# --------------------------------------------------------------------------------------------
# netspec and state dict
# --------------------------------------------------------------------------------------------
def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``, ... the first not in ``taken`` (added to it)."""
    if name in taken:
        name = next(c for c in (f"{name}_{k}" for k in itertools.count(2)) if c not in taken)
    taken.add(name)
    return name


def short(v) -> int | list[int]:
    """A per-axis value as a netspec writes it: ``(3, 3)`` -> ``3``, ``(1, 2)`` -> ``[1, 2]``."""
    v = [int(x) for x in v]
    return v[0] if len(set(v)) == 1 else v


def conv_fields(kernel, stride, padding, dilation, groups: int, out_channels: int,
                bias: bool, output_padding=None) -> dict[str, Any]:
    """The netspec fields of a ``Conv2d``/``ConvTranspose2d`` from per-axis pairs, defaults
    left out (both front ends build convolutions through this)."""
    fields: dict[str, Any] = {"kernel_size": short(kernel), "out_channels": int(out_channels)}
    for key, value in (("stride", stride), ("padding", padding),
                       ("output_padding", output_padding), ("dilation", dilation)):
        default = (0, 0) if key.endswith("padding") else (1, 1)
        if value is not None and tuple(int(x) for x in value) != default:
            fields[key] = short(value)
    if groups != 1:
        fields["groups"] = int(groups)
    fields["bias"] = bool(bias)
    return fields


def build(graph: SourceGraph, weights: bool = True, file: str | None = None) -> ImportResult:
    """Turn a :class:`SourceGraph` into a netspec and (``weights``) its state dict.

    Raises:
        ModelImportError: a fused layer's shape differs from the source's, a tensor does not
            fit its module, or the netspec does not validate (naming the source node).
    """
    from spdnn.spec import from_data

    notes: list[str] = []
    nodes = _fuse(graph, notes)
    # a keep-dims global pool that stays: the netspec's 1x1 map is AdaptiveAvgPool2d(1), or a
    # GlobalAvgPool2d and a Reshape where that op is not there
    from spdnn.ops import OPS

    expanded: list[Node] = []
    for n in nodes:
        if n.op == "GlobalAvgPool2d" and n.keepdims:
            if "AdaptiveAvgPool2d" in OPS:
                n.op, n.fields, n.keepdims = "AdaptiveAvgPool2d", {"output_size": 1}, False
                expanded.append(n)
            else:
                c = graph.shapes.get(n.output, (0,))[0]
                flat = Node(n.name, "GlobalAvgPool2d", {}, n.inputs, n.output + "#flat",
                            origin=n.origin)
                expanded += [flat, Node(n.name + "_map", "Reshape", {"shape": [c, 1, 1]},
                                        [flat.output], n.output, origin=n.origin)]
        else:
            expanded.append(n)
    nodes = expanded

    taken = {name for name, _ in graph.inputs}
    producer: dict[str, str] = {name: name for name, _ in graph.inputs}
    layers: list[dict[str, Any]] = []
    named: list[tuple[str, Node]] = []
    prev = graph.inputs[0][0] if graph.inputs else None
    for n in nodes:
        lname = _unique(n.name or n.op.lower(), taken)
        srcs = []
        for v in n.inputs:
            if v not in producer:
                raise ModelImportError(f"{n.origin} reads '{v}', which no supported node "
                                       "computes", file=file,
                                       hint="an input that is neither a graph input nor "
                                            "the output of a node")
            srcs.append(producer[v])
        data = {"name": lname, "op": n.op, **n.fields}
        if srcs != [prev]:
            data["inputs"] = srcs
        layers.append(data)
        producer[n.output] = lname
        named.append((lname, n))
        prev = lname
    ins = []
    for name, shape in graph.inputs:
        if len(shape) == 3:
            ins.append({"name": name, "channels": shape[0], "height": shape[1],
                        "width": shape[2]})
        elif len(shape) == 1:
            ins.append({"name": name, "features": shape[0]})
        else:
            raise ModelImportError(f"input '{name}' has shape {shape} (batch axis excluded); "
                                   "a netspec input is (C, H, W) or (features,)", file=file)
    outs = []
    for oname, v in graph.outputs:
        if v not in producer or v in dict(graph.inputs):
            raise ModelImportError(f"output '{oname}' is not computed by any layer", file=file)
        outs.append({"name": oname, "from": producer[v]})
    data: dict[str, Any] = {"name": graph.name, "inputs": ins, "layers": layers,
                            "outputs": outs}
    if graph.description:
        data["description"] = graph.description
    try:
        spec = from_data(data, file=file)
    except SpdnnError as exc:
        raise ModelImportError(f"the imported graph is not a valid netspec: {exc.message}",
                               file=file, field=exc.field, hint=exc.hint) from None
    _check_shapes(spec, named, graph.shapes, file)
    state, module = _state_dict(spec, named, file) if weights else (None, None)
    return ImportResult(spec, state, notes, module)


def _check_shapes(spec, named: list[tuple[str, Node]], shapes: dict, file: str | None) -> None:
    from spdnn.shapes import infer

    info = infer(spec, file=file)
    for lname, n in named:
        want = shapes.get(n.output)
        got = info.shapes.get(lname)
        if want is not None and got is not None and tuple(want) != tuple(got):
            raise ModelImportError(f"{n.origin}: the netspec layer '{lname}' ({n.op}) computes "
                                   f"shape {tuple(got)}, the source {tuple(want)}", file=file,
                                   hint="this form of the op has no netspec equivalent")


def _as_tensor(v: Any):
    import numpy as np
    import torch

    if isinstance(v, torch.Tensor):
        return v.detach().to("cpu", torch.float32)
    return torch.from_numpy(np.array(v, dtype=np.float32, copy=True))


def _state_dict(spec, named: list[tuple[str, Node]], file: str | None):
    import torch
    from torch import nn

    from spdnn.codegen import build_module
    from spdnn.codegen.names import layer_identifiers

    module = build_module(spec)
    _, idents = layer_identifiers(spec)
    main_types = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm2d, nn.InstanceNorm2d)
    for lname, n in named:
        if not n.params:
            continue
        sub = getattr(module, idents[lname], None)
        mods = list(sub.modules()) if sub is not None else []
        main = next((m for m in mods if isinstance(m, main_types)), None)
        bn = next((m for m in mods if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))
                   and m is not main), None)
        for role, value in n.params.items():
            target, key = (bn, role[3:]) if role.startswith("bn.") else (main, role)
            slot = getattr(target, key, None) if target is not None else None
            if not isinstance(slot, torch.Tensor):
                raise ModelImportError(f"{n.origin}: the netspec layer '{lname}' has no "
                                       f"tensor for its {role}", file=file)
            t = _as_tensor(value)
            if tuple(t.shape) != tuple(slot.shape):
                raise ModelImportError(f"{n.origin}: {role} of shape {tuple(t.shape)} does not "
                                       f"fit layer '{lname}' ({tuple(slot.shape)})", file=file)
            with torch.no_grad():
                slot.copy_(t)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}, module.eval()
