"""ONNX front end: an ``.onnx`` file -> :class:`~spdnn.importers.graph.SourceGraph`.

Reading never executes anything from the file: it is parsed by ``onnx`` (protobuf), checked
by ``onnx.checker.check_model`` (its message, in one line, is the error for an invalid or
truncated file), given fixed shapes by ``onnx.shape_inference.infer_shapes`` (strict mode,
with data propagation) and constant-folded by onnxscript's optimizer passes
(``onnxscript.optimizer.fold_constants`` and ``remove_unused_nodes``: ``Shape -> Gather ->
Concat -> Reshape`` chains, ``Constant`` nodes, weight transposes). The fusing rewrite rules
of ``onnxscript.optimizer.optimize`` are *not* run: they fold batch norms into convolutions,
which would change the parameter count the netspec reports.

The batch axis: a symbolic batch (``N``) is fixed to 1 for the import (the netspec has no
batch axis); every other axis must be a number, or be given with ``input_shapes``.

Op coverage (ONNX op -> netspec op; ``|`` marks alternatives):

* ``Conv`` -> ``Conv2d`` (``group``, ``dilations``, symmetric ``pads``, ``auto_pad``
  ``VALID``/``SAME_UPPER``/``SAME_LOWER`` where the total padding is even);
  ``ConvTranspose`` -> ``ConvTranspose2d`` (``pads``, ``output_padding``, ``output_shape``);
* ``BatchNormalization`` -> the preceding layer's ``batch_norm: true`` | ``BatchNorm2d``;
  ``InstanceNormalization`` -> ``InstanceNorm2d``;
* ``Relu``, ``LeakyRelu``, ``Sigmoid``, ``Tanh``, ``Softmax`` (axis 1), ``Elu`` (alpha 1),
  ``Clip(0, 6)`` (ReLU6), ``HardSwish``, ``HardSigmoid`` (torch's alpha 1/6), ``Gelu``,
  ``x * Sigmoid(x)`` (SiLU), ``Softplus`` -> the layer's ``activation:`` | the stand-alone op;
* ``MaxPool``, ``AveragePool`` -> ``MaxPool2d``, ``AvgPool2d``; ``GlobalAveragePool`` and
  ``ReduceMean`` over H, W -> ``GlobalAvgPool2d`` | ``AdaptiveAvgPool2d(1)``;
* ``Gemm``, ``MatMul`` (+ ``Add`` of a constant bias) -> ``Linear``;
* ``Flatten``, ``Reshape``, ``Squeeze``, ``Unsqueeze`` -> ``Flatten`` | ``Reshape`` (read off
  the inferred shapes; the batch axis must stay first);
* ``Concat`` (axis 1) -> ``Concat``; ``Add``, ``Sum`` -> ``Add``; ``Mul`` -> ``Mul``;
* ``Resize``, ``Upsample`` (integer scale, nearest or bilinear) -> ``Upsample``;
  ``DepthToSpace`` (CRD) -> ``PixelShuffle``; ``Dropout`` -> ``Dropout``; ``Identity`` -> none.

Anything else is a one-line :class:`~spdnn.importers.graph.ModelImportError` naming the node,
its op type and the nearest supported alternative; control flow (``If``, ``Loop``, ``Scan``)
and custom-domain ops are refused the same way.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from spdnn.importers.graph import (
    ModelImportError,
    Node,
    SourceGraph,
    conv_fields,
    nearest,
    pool_fields,
)

__all__ = ["SUPPORTED", "read_onnx"]

_ACTS = {"Relu": "ReLU", "Sigmoid": "Sigmoid", "Tanh": "Tanh", "HardSwish": "Hardswish",
         "Softplus": "Softplus"}
"""Parameter-free ONNX activations -> the netspec op (fused into the layer before where it can
be, by :mod:`spdnn.importers.graph`)."""
SUPPORTED = sorted(["Conv", "ConvTranspose", "BatchNormalization", "InstanceNormalization",
                    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Softmax", "Elu", "Clip",
                    "HardSwish", "HardSigmoid", "Gelu", "Softplus", "MaxPool", "AveragePool",
                    "GlobalAveragePool", "ReduceMean", "Gemm", "MatMul", "Flatten", "Reshape",
                    "Squeeze", "Unsqueeze", "Concat", "Add", "Sum", "Mul", "Resize", "Upsample",
                    "DepthToSpace", "Dropout", "Identity"])
"""The ONNX op types the importer maps (see the module docstring)."""

_ALTERNATIVES = {
    "Pad": "Conv (pads)", "PRelu": "LeakyRelu", "Selu": "Elu", "Celu": "Elu",
    "ThresholdedRelu": "Relu", "LRN": "BatchNormalization", "ReduceMax": "MaxPool",
    "GlobalMaxPool": "MaxPool", "LpPool": "AveragePool", "Einsum": "MatMul",
    "Transpose": "Reshape", "Slice": "Concat (of whole tensors)", "Split": "Concat",
    "Sub": "Add", "Div": "Mul", "Erf": "Gelu (export with opset >= 20)", "Pow": "Mul",
    "If": "a graph without control flow (export the branch taken)",
    "Loop": "a graph without control flow (unroll the loop)",
    "Scan": "a graph without control flow (unroll the scan)",
    "LayerNormalization": "BatchNormalization", "GroupNormalization": "InstanceNormalization",
    "SpaceToDepth": "DepthToSpace", "MaxUnpool": "Resize", "Gather": "Reshape",
}


def _fail(node, message: str, file: str | None, hint: str | None = None) -> ModelImportError:
    return ModelImportError(f"node '{node.name}' ({node.op_type}): {message}", file=file,
                            hint=hint)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else str(text)


# --------------------------------------------------------------------------------------------
# loading, checking, shapes, constant folding
# --------------------------------------------------------------------------------------------
def _load(path: Path):
    """Check the file with ``onnx.checker`` (which parses it itself, so a truncated or foreign
    file is its message), then load it."""
    import onnx

    file = str(path)
    if not path.is_file():
        raise ModelImportError("file not found", file=file, hint="give an .onnx file")
    try:
        onnx.checker.check_model(file)
    except onnx.checker.ValidationError as exc:
        raise ModelImportError(f"onnx.checker: {_first_line(exc)}", file=file,
                               hint="the file is truncated or not a valid ONNX model; export "
                                    "it again") from None
    try:
        model = onnx.load(file)
    except Exception as exc:  # noqa: BLE001 - protobuf and external-data errors
        raise ModelImportError(f"not a readable ONNX model ({_first_line(exc)})", file=file,
                               hint="export it again") from None
    if not model.graph.node:
        raise ModelImportError("the ONNX graph has no nodes", file=file,
                               hint="export the model again")
    return model


def _fix_input_shapes(model, shapes: dict[str, tuple[int, ...]] | None, file: str) -> None:
    inits = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            raise ModelImportError(f"input '{vi.name}' has no tensor shape", file=file,
                                   hint="export with a fixed input shape")
        dims = tt.shape.dim
        given = (shapes or {}).get(vi.name)
        if given is not None:
            if len(given) != len(dims) - 1:
                raise ModelImportError(f"input '{vi.name}' has {len(dims) - 1} axes after the "
                                       f"batch axis, the given shape {given} has {len(given)}",
                                       file=file)
            for d, v in zip(list(dims)[1:], given):
                d.Clear()
                d.dim_value = int(v)
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
        for k, d in enumerate(list(dims)[1:], start=1):
            if not d.HasField("dim_value") or d.dim_value < 1:
                what = d.dim_param or "unknown"
                raise ModelImportError(
                    f"input '{vi.name}' has a dynamic axis {k} ('{what}'); a netspec holds "
                    "fixed sizes", file=file,
                    hint="give the size with --shape, or export with a fixed input shape")


def _prepare(model, file: str, input_shapes):
    import onnx
    import onnxscript.optimizer as opt

    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise _fail(node, f"custom-domain op ('{node.domain}') has no netspec equivalent",
                        file, hint="export with standard ONNX ops only")
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    # the file's own tensors: initializers and their Identity copies (the TorchScript exporter
    # shares equal initializers that way); constants computed later are the exporter's
    original = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in original:
            original.add(node.output[0])
    _fix_input_shapes(model, input_shapes, file)
    try:
        from onnxscript import ir

        # constant folding on onnx's IR (its own node-level shape inference included), then
        # onnx's strict shape inference of the whole graph
        model_ir = ir.serde.deserialize_model(model)
        big = 1 << 31
        opt.fold_constants(model_ir, input_size_limit=big, output_size_limit=big)
        opt.remove_unused_nodes(model_ir)
        model = onnx.shape_inference.infer_shapes(ir.serde.serialize_model(model_ir),
                                                  check_type=True, strict_mode=True,
                                                  data_prop=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types here
        raise ModelImportError(f"onnx shape inference: {_first_line(exc)}", file=file,
                               hint="the graph's shapes do not fit; check the model") from None
    return model, original


def _shape_table(model) -> dict[str, tuple[int, ...] | None]:
    out: dict[str, tuple[int, ...] | None] = {}
    g = model.graph
    for vi in (*g.input, *g.value_info, *g.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            out[vi.name] = None
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        out[vi.name] = None if None in dims else tuple(int(d) for d in dims)
    return out


def _constants(model) -> dict[str, np.ndarray]:
    from onnx import helper, numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute:
            value = helper.get_attribute_value(node.attribute[0])
            if hasattr(value, "dims"):  # a TensorProto
                value = numpy_helper.to_array(value)
            consts[node.output[0]] = np.asarray(value)
    return consts


# --------------------------------------------------------------------------------------------
# names
# --------------------------------------------------------------------------------------------
def _scope_path(parts: list[str]) -> str:
    """A module path from the exporters' scope names: full paths (``['layer1', 'layer1.0',
    'layer1.0.conv1']``) or the TorchScript exporter's parent-qualified ones (``['features',
    'features.1', 'conv', 'conv.0']``) -> ``layer1.0.conv1``, ``features.1.conv.0``."""
    path = ""
    for p in parts:
        if not p:
            continue
        head, _, tail = p.rpartition(".")
        if path and (p == path or p.startswith(path + ".")):
            path = p
        elif path and head and (path == head or path.endswith("." + head)):
            path = f"{path}.{tail}"
        else:
            path = f"{path}.{p}" if path else p
    return path


def _layer_name(node) -> str:
    """A layer name from the node: the module path the exporter recorded (the dynamo
    exporter's ``pkg.torch.onnx.name_scopes``, the TorchScript exporter's ``/a/a.b/Op``
    node names), else the node's name."""
    import ast

    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [str(s) for s in ast.literal_eval(prop.value)]
            except (ValueError, SyntaxError):
                break
            path = _scope_path(scopes[:-1])
            if path:
                return path
    if node.name.startswith("/"):
        parts = node.name.strip("/").split("/")
        return _scope_path(parts[:-1]) or parts[-1].lower()
    return node.name or node.op_type.lower()


# --------------------------------------------------------------------------------------------
# the op table
# --------------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, model, file: str, original: set[str]) -> None:
        from onnx import helper

        self.helper = helper
        self.model = model
        self.file = file
        self.consts = _constants(model)
        self.shapes = _shape_table(model)
        self.nodes: list[Node] = []
        self.alias: dict[str, str] = {}
        self.producer: dict[str, Node] = {}
        self.readers: dict[str, int] = {}
        g = model.graph
        for n in g.node:
            for v in n.input:
                self.readers[v] = self.readers.get(v, 0) + 1
        for o in g.output:
            self.readers[o.name] = self.readers.get(o.name, 0) + 1
        self.by_output = {o: n for n in g.node for o in n.output}
        self.original = original

    # -- helpers -----------------------------------------------------------------------------
    def attrs(self, node) -> dict[str, Any]:
        return {a.name: self.helper.get_attribute_value(a) for a in node.attribute}

    def v(self, name: str) -> str:
        while name in self.alias:
            name = self.alias[name]
        return name

    def const(self, node, k: int, what: str, required: bool = True) -> np.ndarray | None:
        if k >= len(node.input) or not node.input[k]:
            if required:
                raise _fail(node, f"has no {what}", self.file)
            return None
        name = node.input[k]
        if name not in self.consts:
            if required:
                raise _fail(node, f"its {what} ('{name}') is computed at run time; the netspec "
                            "holds constant weights", self.file,
                            hint="export with the weights as initializers (constant folding)")
            return None
        return self.consts[name]

    def shape(self, name: str, node) -> tuple[int, ...]:
        s = self.shapes.get(self.v(name)) or self.shapes.get(name)
        if s is None:
            raise _fail(node, f"the shape of '{name}' is unknown after shape inference",
                        self.file, hint="export with fixed input shapes")
        return s

    def add(self, node, op: str, fields: dict, inputs: list[str], params=None,
            keepdims: bool = False) -> Node:
        n = Node(_layer_name(node), op, fields, [self.v(i) for i in inputs], node.output[0],
                 params or {}, f"node '{node.name}' ({node.op_type})", keepdims)
        self.nodes.append(n)
        self.producer[n.output] = n
        return n

    def bias(self, node, k: int = 2) -> np.ndarray | None:
        """A convolution's bias; a zero bias that constant folding computed (the dynamo
        exporter's stand-in for ``bias=None``) is none."""
        b = self.const(node, k, "bias", required=False)
        if b is not None and node.input[k] not in self.original and not np.any(b):
            return None
        return b

    def tensor_inputs(self, node) -> list[str]:
        return [i for i in node.input if i and i not in self.consts]

    # -- the ops -----------------------------------------------------------------------------
    def read(self, node) -> None:
        t = node.op_type
        if t in _ACTS:  # parameter-free activations
            self._act(node, _ACTS[t])
            return
        handler = getattr(self, f"op_{t}", None)
        if handler is None:
            if t in ("Constant",):
                return
            raise _fail(node, "unsupported op", self.file,
                        hint=f"nearest supported: {nearest(t, SUPPORTED, _ALTERNATIVES)}")
        handler(node, self.attrs(node))

    def _pads2(self, node, a: dict, in_hw, k, s, d, what="pads") -> tuple[int, int]:
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto == "VALID":
            return (0, 0)
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            out = []
            for n, kk, ss, dd in zip(in_hw, k, s, d):
                total = max((math.ceil(n / ss) - 1) * ss + dd * (kk - 1) + 1 - n, 0)
                if total % 2:
                    raise _fail(node, f"auto_pad {auto} pads {total} on one axis, which "
                                "is not symmetric", self.file,
                                hint="the netspec pads both sides equally; use an odd kernel "
                                     "or explicit symmetric pads")
                out.append(total // 2)
            return (out[0], out[1])
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4:
            raise _fail(node, "only 2-D (N, C, H, W) ops are supported", self.file)
        if pads[0] != pads[2] or pads[1] != pads[3]:
            raise _fail(node, f"asymmetric {what} {pads}", self.file,
                        hint="the netspec pads both sides equally; pad symmetrically")
        return (pads[0], pads[1])

    def op_Conv(self, node, a) -> None:
        w = self.const(node, 1, "weight")
        if w.ndim != 4:
            raise _fail(node, f"a {w.ndim - 2}-D convolution; only 2-D ones are supported",
                        self.file, hint="nearest supported: Conv on (N, C, H, W)")
        b = self.bias(node)
        k = tuple(a.get("kernel_shape", w.shape[2:]))
        s = tuple(a.get("strides", (1, 1)))
        d = tuple(a.get("dilations", (1, 1)))
        hw = self.shape(node.input[0], node)[2:]
        pad = self._pads2(node, a, hw, k, s, d)
        fields = conv_fields(k, s, pad, d, int(a.get("group", 1)), w.shape[0], b is not None)
        params = {"weight": w} | ({"bias": b} if b is not None else {})
        self.add(node, "Conv2d", fields, [node.input[0]], params)

    def op_ConvTranspose(self, node, a) -> None:
        w = self.const(node, 1, "weight")
        if w.ndim != 4:
            raise _fail(node, f"a {w.ndim - 2}-D transposed convolution; only 2-D ones are "
                        "supported", self.file)
        b = self.bias(node)
        g = int(a.get("group", 1))
        k = tuple(a.get("kernel_shape", w.shape[2:]))
        s = tuple(a.get("strides", (1, 1)))
        d = tuple(a.get("dilations", (1, 1)))
        opad = tuple(a.get("output_padding", (0, 0)))
        auto = a.get("auto_pad", b"NOTSET")
        if (auto.decode() if isinstance(auto, bytes) else auto) != "NOTSET" or "output_shape" in a:
            # read the padding off the inferred output size (symmetric pads only)
            hw_in = self.shape(node.input[0], node)[2:]
            hw_out = self.shape(node.output[0], node)[2:]
            pads, opads = [], []
            for n, o, kk, ss, dd in zip(hw_in, hw_out, k, s, d):
                full = (n - 1) * ss + dd * (kk - 1) + 1
                extra = full - o
                p, op = (extra + 1) // 2, (2 * ((extra + 1) // 2)) - extra
                pads.append(p)
                opads.append(op)
            pad, opad = tuple(pads), tuple(opads)
        else:
            pad = self._pads2(node, a, (0, 0), k, s, d)
        fields = conv_fields(k, s, pad, d, g, w.shape[1] * g, b is not None, opad)
        params = {"weight": w} | ({"bias": b} if b is not None else {})
        self.add(node, "ConvTranspose2d", fields, [node.input[0]], params)

    def _computed_identity(self, node, scale, bias) -> bool:
        """Whether a norm's scale and shift are ones and zeros that the exporter computed
        (not initializers of the file): the stand-in of a norm without affine parameters."""
        return (node.input[1] not in self.original and node.input[2] not in self.original
                and np.all(scale == 1) and not np.any(bias))

    def op_BatchNormalization(self, node, a) -> None:
        if int(a.get("training_mode", 0)) or len([o for o in node.output if o]) > 1:
            raise _fail(node, "batch norm in training mode", self.file,
                        hint="export the model in eval mode")
        scale, bias = self.const(node, 1, "scale"), self.const(node, 2, "bias")
        mean, var = self.const(node, 3, "running mean"), self.const(node, 4, "running var")
        rank = len(self.shape(node.input[0], node))
        fields: dict[str, Any] = {"eps": float(a.get("epsilon", 1e-5)),
                                  "momentum": round(1.0 - float(a.get("momentum", 0.9)), 6)}
        params = {"running_mean": mean, "running_var": var}
        if self._computed_identity(node, scale, bias):
            fields["affine"] = False
        else:
            params |= {"weight": scale, "bias": bias}
        if rank == 2:
            self.add(node, "BatchNorm1d", fields, [node.input[0]], params)
            return
        if rank != 4:
            raise _fail(node, f"batch norm of a rank-{rank} tensor", self.file)
        if abs(fields["eps"] - 1e-5) < 1e-9:
            del fields["eps"]
        if abs(fields["momentum"] - 0.1) < 1e-6:
            del fields["momentum"]
        self.add(node, "BatchNorm2d", fields, [node.input[0]], params)

    def op_InstanceNormalization(self, node, a) -> None:
        scale, bias = self.const(node, 1, "scale"), self.const(node, 2, "bias")
        fields: dict[str, Any] = {}
        eps = float(a.get("epsilon", 1e-5))
        if abs(eps - 1e-5) > 1e-9:
            fields["eps"] = eps
        params = {}
        if not self._computed_identity(node, scale, bias):
            fields["affine"] = True
            params = {"weight": scale, "bias": bias}
        self.add(node, "InstanceNorm2d", fields, [node.input[0]], params)

    # activations
    def _act(self, node, op: str, fields: dict | None = None) -> None:
        from spdnn.ops import OPS

        if op not in OPS:
            raise _fail(node, f"this spdnn has no {op} op", self.file,
                        hint=f"nearest supported: {nearest(node.op_type, SUPPORTED)}")
        self.add(node, op, fields or {}, [node.input[0]])

    def op_HardSigmoid(self, node, a):
        if abs(a.get("alpha", 0.2) - 1 / 6) > 1e-6 or abs(a.get("beta", 0.5) - 0.5) > 1e-6:
            raise _fail(node, "HardSigmoid with alpha != 1/6 (torch's Hardsigmoid)", self.file,
                        hint="nearest supported: Sigmoid")
        self._act(node, "Hardsigmoid")

    def op_LeakyRelu(self, node, a):
        self._act(node, "LeakyReLU", {"negative_slope": round(float(a.get("alpha", 0.01)), 7)})

    def op_Elu(self, node, a):
        if abs(float(a.get("alpha", 1.0)) - 1.0) > 1e-7:
            raise _fail(node, f"ELU with alpha {a['alpha']} (the netspec's ELU has alpha 1)",
                        self.file, hint="nearest supported: Elu with alpha 1")
        self._act(node, "ELU")

    def op_Gelu(self, node, a):
        approx = a.get("approximate", b"none")
        approx = approx.decode() if isinstance(approx, bytes) else approx
        self._act(node, "GELU", {"approximate": "tanh"} if approx == "tanh" else {})

    def op_Softmax(self, node, a):
        shape = self.shape(node.input[0], node)
        rank = len(shape)
        axis = int(a.get("axis", -1 if self.opset >= 13 else 1))
        # before opset 13 the axes after `axis` are flattened into it
        flattened = self.opset < 13 and math.prod(shape[axis % rank + 1:]) != 1
        if axis % rank != 1 or flattened:
            what = f"axis {axis}" + (" and the axes after it (opset < 13)" if flattened else "")
            raise _fail(node, f"softmax over {what}; the netspec's Softmax is over the channel "
                        "axis (1) alone", self.file, hint="nearest supported: Softmax(axis=1), "
                        "opset >= 13")
        self._act(node, "Softmax")

    def op_Clip(self, node, a):
        lo = a.get("min")
        hi = a.get("max")
        if len(node.input) > 1:
            lo = self.const(node, 1, "min", required=False)
            hi = self.const(node, 2, "max", required=False)
        lo = None if lo is None else float(np.asarray(lo))
        hi = None if hi is None else float(np.asarray(hi))
        if lo == 0.0 and hi == 6.0:
            self._act(node, "ReLU6")
        elif lo == 0.0 and hi is None:
            self._act(node, "ReLU")
        else:
            raise _fail(node, f"Clip({lo}, {hi}); only Clip(0, 6) (ReLU6) and Clip(0) (ReLU) "
                        "have netspec equivalents", self.file, hint="nearest supported: Relu")

    # pools
    def _pool(self, node, a, op: str) -> None:
        k = tuple(a["kernel_shape"])
        if len(k) != 2:
            raise _fail(node, "only 2-D pools are supported", self.file)
        s = tuple(a.get("strides", (1, 1)))
        if tuple(a.get("dilations", (1, 1))) != (1, 1):
            raise _fail(node, "dilated pooling", self.file, hint=f"nearest supported: {op} "
                        "without dilations")
        if len([o for o in node.output if o]) > 1:
            raise _fail(node, "pool indices are used", self.file,
                        hint="nearest supported: MaxPool without indices (use Resize to unpool)")
        hw = self.shape(node.input[0], node)[2:]
        pad = self._pads2(node, a, hw, k, s, (1, 1))
        fields = pool_fields(k, s, pad, bool(int(a.get("ceil_mode", 0))),
                             op == "MaxPool2d" or bool(int(a.get("count_include_pad", 0))))
        self.add(node, op, fields, [node.input[0]])

    def op_MaxPool(self, node, a):
        self._pool(node, a, "MaxPool2d")

    def op_AveragePool(self, node, a):
        self._pool(node, a, "AvgPool2d")

    def op_GlobalAveragePool(self, node, a):
        self.add(node, "GlobalAvgPool2d", {}, [node.input[0]], keepdims=True)

    def op_ReduceMean(self, node, a):
        axes = a.get("axes")
        if axes is None and len(node.input) > 1:
            axes = self.const(node, 1, "axes")
        rank = len(self.shape(node.input[0], node))
        axes = sorted(int(x) % rank for x in np.asarray(axes).ravel()) if axes is not None else []
        if rank != 4 or axes != [2, 3]:
            raise _fail(node, f"a mean over axes {axes} of a rank-{rank} tensor; only the "
                        "spatial mean (axes 2, 3) is a netspec layer", self.file,
                        hint="nearest supported: GlobalAveragePool")
        self.add(node, "GlobalAvgPool2d", {}, [node.input[0]],
                 keepdims=bool(int(a.get("keepdims", 1))))

    # fully connected
    def op_Gemm(self, node, a):
        if int(a.get("transA", 0)):
            raise _fail(node, "Gemm with transA", self.file, hint="nearest supported: Gemm")
        w = self.const(node, 1, "weight")
        if not int(a.get("transB", 0)):
            w = w.T
        w = w * float(a.get("alpha", 1.0))
        c = self.const(node, 2, "bias", required=False)
        params = {"weight": w}
        if c is not None:
            params["bias"] = np.broadcast_to(c * float(a.get("beta", 1.0)), (w.shape[0],))
        self.add(node, "Linear", {"out_features": int(w.shape[0]), "bias": c is not None},
                 [node.input[0]], params)

    def op_MatMul(self, node, a):
        w = self.const(node, 1, "weight")
        if w.ndim != 2 or len(self.shape(node.input[0], node)) != 2:
            raise _fail(node, "MatMul of other than a (N, K) input and a (K, M) weight",
                        self.file, hint="nearest supported: Gemm")
        self.add(node, "Linear", {"out_features": int(w.shape[1]), "bias": False},
                 [node.input[0]], {"weight": w.T})

    def op_Add(self, node, a):
        ins = self.tensor_inputs(node)
        if len(ins) == 1:
            prev = self.producer.get(self.v(ins[0]))
            bias = next(self.consts[i] for i in node.input if i in self.consts)
            if (prev is not None and prev.op == "Linear" and "bias" not in prev.params
                    and self.readers.get(ins[0]) == 1 and bias.size == prev.fields["out_features"]):
                prev.params["bias"] = bias.reshape(-1)
                prev.fields["bias"] = True
                self.alias[node.output[0]] = prev.output
                return
            raise _fail(node, "adds a constant tensor; only a Linear layer's bias (MatMul + "
                        "Add) is a netspec equivalent", self.file,
                        hint="nearest supported: Gemm (MatMul + bias)")
        self.add(node, "Add", {}, ins)

    def op_Sum(self, node, a):
        self.op_Add(node, a)

    def op_Mul(self, node, a):
        ins = self.tensor_inputs(node)
        if len(ins) != len(node.input):
            raise _fail(node, "multiplies by a constant tensor (a learned scale); the netspec's "
                        "Mul multiplies layer outputs", self.file,
                        hint="nearest supported: BatchNormalization (a per-channel scale)")
        if len(ins) == 2:  # x * Sigmoid(x) is SiLU
            for x, s in (ins, ins[::-1]):
                prod = self.by_output.get(s)
                sig = self.producer.get(self.v(s))
                if (prod is not None and prod.op_type == "Sigmoid" and sig is not None
                        and self.v(prod.input[0]) == self.v(x) and self.readers.get(s) == 1):
                    self.nodes.remove(sig)
                    self.add(node, "SiLU", {}, [x])
                    return
        self.add(node, "Mul", {}, ins)

    # layout
    def _reshape(self, node, a=None) -> None:
        src, dst = self.shape(node.input[0], node), self.shape(node.output[0], node)
        if not dst or src[0] != dst[0]:
            raise _fail(node, f"reshapes {src} to {dst}, which moves the batch axis", self.file,
                        hint="keep the batch axis first")
        if dst == src:
            self.alias[node.output[0]] = self.v(node.input[0])
        elif len(dst) == 2:
            self.add(node, "Flatten", {}, [node.input[0]])
        elif len(dst) <= 4:
            self.add(node, "Reshape", {"shape": [int(x) for x in dst[1:]]}, [node.input[0]])
        else:
            raise _fail(node, f"a rank-{len(dst)} result; netspec tensors are (C, H, W) or "
                        "(features,)", self.file, hint="nearest supported: Reshape")

    op_Reshape = op_Flatten = op_Squeeze = op_Unsqueeze = _reshape

    def op_Identity(self, node, a):
        self.alias[node.output[0]] = self.v(node.input[0])

    def op_Dropout(self, node, a):
        ratio = self.const(node, 1, "ratio", required=False)
        p = float(a.get("ratio", 0.5)) if ratio is None else float(ratio)
        self.add(node, "Dropout", {} if p == 0.5 else {"p": round(p, 6)}, [node.input[0]])

    def op_Concat(self, node, a):
        rank = len(self.shape(node.input[0], node))
        if int(a["axis"]) % rank != 1:
            raise _fail(node, f"concatenation on axis {a['axis']}; the netspec concatenates "
                        "channels (axis 1)", self.file, hint="nearest supported: Concat(axis=1)")
        if any(i in self.consts for i in node.input):
            raise _fail(node, "concatenates a constant tensor", self.file,
                        hint="nearest supported: Concat of layer outputs")
        self.add(node, "Concat", {}, list(node.input))

    def _resize(self, node, a) -> None:
        """Resize / Upsample by an integer factor. Nearest matches torch's (``floor(i / s)``)
        with ``asymmetric`` coordinates and ``floor`` rounding, or half-pixel coordinates and
        round-half rounding (equal for integer factors); linear matches torch's bilinear
        (``align_corners=False``) with half-pixel coordinates. The old ``Upsample`` op uses
        asymmetric coordinates."""
        def text(key: str, default: str) -> str:
            v = a.get(key, default)
            return v.decode() if isinstance(v, bytes) else v

        mode = text("mode", "nearest")
        old = node.op_type == "Upsample"
        ctm = "asymmetric" if old else text("coordinate_transformation_mode", "half_pixel")
        rounding = "floor" if old else text("nearest_mode", "round_prefer_floor")
        src, dst = self.shape(node.input[0], node), self.shape(node.output[0], node)
        if src == dst:
            self.alias[node.output[0]] = self.v(node.input[0])
            return
        if len(src) != 4 or src[:2] != dst[:2] or dst[2] % src[2] or dst[3] % src[3] \
                or dst[2] // src[2] != dst[3] // src[3] or dst[2] == src[2]:
            raise _fail(node, f"resizes {src} to {dst}; the netspec upsamples H and W by one "
                        "integer factor", self.file, hint="nearest supported: Resize by an "
                        "integer scale")
        half = ctm in ("half_pixel", "pytorch_half_pixel")
        if mode == "nearest" and ((ctm == "asymmetric" and rounding == "floor") or (
                half and rounding.startswith("round_prefer"))):
            fields: dict[str, Any] = {}
        elif mode == "linear" and half:
            fields = {"mode": "bilinear"}
        else:
            how = f"{mode} interpolation with {ctm} coordinates" + (
                f" and {rounding} rounding" if mode == "nearest" else "")
            raise _fail(node, how, self.file, hint="nearest supported: Resize nearest "
                        "(asymmetric, floor), or linear with half_pixel coordinates")
        factor = dst[2] // src[2]
        if factor != 2:
            fields["scale_factor"] = factor
        self.add(node, "Upsample", fields, [node.input[0]])

    op_Resize = op_Upsample = _resize

    def op_DepthToSpace(self, node, a):
        mode = a.get("mode", b"DCR")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "CRD":
            raise _fail(node, "DepthToSpace in DCR mode", self.file,
                        hint="nearest supported: DepthToSpace mode CRD (PixelShuffle)")
        self.add(node, "PixelShuffle", {"upscale_factor": int(a["blocksize"])}, [node.input[0]])

    @property
    def opset(self) -> int:
        return next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")),
                    1)


def read_onnx(path: str | Path, input_shapes: dict[str, tuple[int, ...]] | None = None
              ) -> SourceGraph:
    """Read an ONNX file into a :class:`~spdnn.importers.graph.SourceGraph`.

    Args:
        path: the ``.onnx`` file.
        input_shapes: ``input name -> (C, H, W)`` for inputs with dynamic axes.

    Raises:
        ModelImportError: the file is missing, truncated or invalid (``onnx.checker``'s message
            in one line), has dynamic shapes, control flow or an unsupported op (naming the
            node, its op type and the nearest supported alternative).
    """
    path = Path(path)
    file = str(path)
    model, original = _prepare(_load(path), file, input_shapes)
    r = _Reader(model, file, original)
    for node in model.graph.node:
        r.read(node)
    inits = set(r.consts)
    ins = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        elem = vi.type.tensor_type.elem_type
        if elem not in (1, 10, 11):  # float, float16, double
            raise ModelImportError(f"input '{vi.name}' is not a float tensor (ONNX type "
                                   f"{elem}); the importer reads image and feature inputs",
                                   file=file)
        ins.append((vi.name, r.shapes[vi.name][1:]))
    outs = [(o.name, r.v(o.name)) for o in model.graph.output]
    shapes = {k: v[1:] for k, v in r.shapes.items() if v}
    name = model.graph.name or path.stem
    if name in ("main_graph", "torch_jit", "torch-jit-export"):
        name = path.stem
    return SourceGraph(name, ins, r.nodes, outs, shapes,
                       description=f"imported from {path.name} by spdnn import")
