"""torch.fx front end: a ``torch.nn.Module`` -> :class:`~spdnn.importers.graph.SourceGraph`.

The module is traced symbolically (``torch.fx.symbolic_trace``: ``torch.nn`` layers stay one
call each, user modules are traced through) and run once on the example input by
``torch.fx.passes.shape_prop.ShapeProp``, so every value has its shape (which is how
``x.view(x.size(0), -1)`` becomes a ``Flatten`` without evaluating ``size``). The same op
coverage as the ONNX importer, from torch's side:

* modules: ``Conv2d`` (``groups``, ``dilation``, ``padding`` numbers or ``'same'``/``'valid'``,
  zero padding mode), ``ConvTranspose2d``, ``BatchNorm2d``/``BatchNorm1d`` (fused into the
  layer before), ``InstanceNorm2d``, ``Linear``, ``ReLU``, ``ReLU6``, ``LeakyReLU``, ``ELU``
  (alpha 1), ``Sigmoid``, ``Tanh``, ``Softmax`` (dim 1), ``SiLU``, ``GELU``, ``Hardswish``,
  ``Hardsigmoid``, ``Softplus``, ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``,
  ``Flatten``, ``Dropout``/``Dropout2d``, ``Upsample``, ``PixelShuffle``, ``Identity``;
* functions and methods: ``+`` / ``torch.add``, ``*`` / ``torch.mul``, ``torch.cat`` (dim 1),
  ``torch.flatten``, ``view``/``reshape``/``flatten``/``squeeze``/``unsqueeze``,
  ``mean`` over H, W, ``F.max_pool2d``, ``F.avg_pool2d``, ``F.adaptive_avg_pool2d``,
  ``F.interpolate``, ``F.dropout`` and the functional activations (``F.relu``,
  ``torch.sigmoid``, ``x.relu()``, ...);
* ``contiguous``/``clone``/``detach`` are the identity; ``size``/``shape`` reads are not layers.

Anything else (a ``get_attr`` of a parameter used directly, ``F.conv2d``, data-dependent
control flow that fx cannot trace) is a one-line
:class:`~spdnn.importers.graph.ModelImportError` naming the fx node and the nearest
supported alternative.
"""

from __future__ import annotations

import importlib.util
import operator
import sys
from pathlib import Path
from typing import Any

from spdnn.importers.graph import (
    ModelImportError,
    Node,
    SourceGraph,
    conv_fields,
    nearest,
    pool_fields,
)

__all__ = ["load_factory", "read_module"]

_MODULE_ACTS = {"ReLU": "ReLU", "ReLU6": "ReLU6", "SiLU": "SiLU", "Sigmoid": "Sigmoid",
                "Tanh": "Tanh", "Hardswish": "Hardswish", "Hardsigmoid": "Hardsigmoid"}
SUPPORTED_MODULES = sorted(["Conv2d", "ConvTranspose2d", "BatchNorm2d", "BatchNorm1d",
                            "InstanceNorm2d", "Linear", "LeakyReLU", "ELU", "Softmax", "GELU",
                            "Softplus", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
                            "Flatten", "Dropout", "Dropout2d", "Upsample", "PixelShuffle",
                            "Identity", *_MODULE_ACTS])
_ALTERNATIVES = {"PReLU": "LeakyReLU", "SELU": "ELU", "CELU": "ELU", "LayerNorm": "BatchNorm2d",
                 "GroupNorm": "InstanceNorm2d", "AdaptiveMaxPool2d": "MaxPool2d",
                 "MaxUnpool2d": "Upsample", "ZeroPad2d": "Conv2d (padding)",
                 "Conv1d": "Conv2d", "Conv3d": "Conv2d", "Hardtanh": "ReLU6",
                 "UpsamplingNearest2d": "Upsample", "UpsamplingBilinear2d": "Upsample"}


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else text


class _Reader:
    def __init__(self, gm) -> None:
        import torch
        import torch.nn.functional as F
        from torch import nn

        self.torch, self.F, self.nn = torch, F, nn
        self.gm = gm
        self.nodes: list[Node] = []
        self.alias: dict[str, str] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.acts = {F.relu: "ReLU", torch.relu: "ReLU", F.relu6: "ReLU6", F.silu: "SiLU",
                     torch.sigmoid: "Sigmoid", F.sigmoid: "Sigmoid", torch.tanh: "Tanh",
                     F.tanh: "Tanh", F.hardswish: "Hardswish", F.hardsigmoid: "Hardsigmoid",
                     F.gelu: "GELU", F.leaky_relu: "LeakyReLU", F.elu: "ELU",
                     F.softmax: "Softmax", torch.softmax: "Softmax"}
        self.method_acts = {"relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "Tanh",
                            "softmax": "Softmax"}

    # -- helpers -----------------------------------------------------------------------------
    def shape(self, node) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta")
        return tuple(int(d) for d in meta.shape) if hasattr(meta, "shape") else None

    def v(self, node) -> str:
        name = node.name
        while name in self.alias:
            name = self.alias[name]
        return name

    def origin(self, node) -> str:
        if node.op == "call_module":
            mod = self.gm.get_submodule(node.target)
            return f"module '{node.target}' ({type(mod).__name__})"
        tgt = node.target if isinstance(node.target, str) else getattr(
            node.target, "__name__", str(node.target))
        return f"fx node '{node.name}' ({node.op} {tgt})"

    def fail(self, node, message: str, hint: str | None = None) -> ModelImportError:
        return ModelImportError(f"{self.origin(node)}: {message}", hint=hint)

    def tensors(self, node) -> list:
        out = []

        def visit(a):
            if hasattr(a, "meta") and hasattr(a.meta.get("tensor_meta"), "shape"):
                out.append(a)
            elif isinstance(a, (list, tuple)):
                for b in a:
                    visit(b)

        for a in (*node.args, *node.kwargs.values()):
            visit(a)
        return out

    def add(self, node, op: str, fields: dict, inputs: list, params=None,
            keepdims: bool = False) -> None:
        name = node.target if node.op == "call_module" else node.name
        self.nodes.append(Node(str(name), op, fields, [self.v(i) for i in inputs], node.name,
                               params or {}, self.origin(node), keepdims))

    def arg(self, node, k: int, key: str, default: Any = None) -> Any:
        if key in node.kwargs:
            return node.kwargs[key]
        return node.args[k] if len(node.args) > k else default

    # -- dispatch ----------------------------------------------------------------------------
    def read(self, node) -> None:
        s = self.shape(node)
        if s is not None:
            self.shapes[node.name] = s[1:]
        if node.op == "call_module":
            self.module(node, self.gm.get_submodule(node.target))
        elif node.op in ("call_function", "call_method"):
            if s is None:  # x.size(0), x.shape: arguments of a reshape, not layers
                return
            self.function(node)
        elif node.op == "get_attr":
            raise self.fail(node, "a parameter or buffer used directly in forward; the netspec "
                            "holds weights only inside layers",
                            hint="nearest supported: an nn.Conv2d / nn.Linear module")

    def _act(self, node, op: str, fields: dict | None = None) -> None:
        from spdnn.ops import OPS

        if op not in OPS:
            raise self.fail(node, f"this spdnn has no {op} op",
                            hint=f"nearest supported: {nearest(op, sorted(OPS))}")
        x = self.tensors(node)[0]
        self.add(node, op, fields or {}, [x])

    def _softmax(self, node, dim) -> None:
        rank = len(self.shape(node))
        if dim is None or int(dim) % rank != 1:
            raise self.fail(node, f"softmax over dim {dim}; the netspec's Softmax is over the "
                            "channel axis (1)", hint="nearest supported: Softmax(dim=1)")
        self._act(node, "Softmax")

    def _reshape(self, node) -> None:
        x = self.tensors(node)[0]
        src, dst = self.shape(x), self.shape(node)
        if not dst or src[0] != dst[0]:
            raise self.fail(node, f"reshapes {src} to {dst}, which moves the batch axis",
                            hint="keep the batch axis first")
        if dst == src:
            self.alias[node.name] = self.v(x)
        elif len(dst) == 2:
            self.add(node, "Flatten", {}, [x])
        elif len(dst) <= 4:
            self.add(node, "Reshape", {"shape": list(dst[1:])}, [x])
        else:
            raise self.fail(node, f"a rank-{len(dst)} result; netspec tensors are (C, H, W) or "
                            "(features,)", hint="nearest supported: view to (N, C, H, W)")

    def _upsample(self, node, mode: str, align_corners) -> None:
        x = self.tensors(node)[0]
        src, dst = self.shape(x), self.shape(node)
        if len(src) != 4 or dst[2] % src[2] or dst[3] % src[3] or \
                dst[2] // src[2] != dst[3] // src[3] or dst[2] == src[2]:
            raise self.fail(node, f"resizes {src} to {dst}; the netspec upsamples H and W by one "
                            "integer factor", hint="nearest supported: Upsample(scale_factor=2)")
        if mode == "nearest":
            fields: dict[str, Any] = {}
        elif mode == "bilinear" and not align_corners:
            fields = {"mode": "bilinear"}
        else:
            raise self.fail(node, f"{mode} interpolation (align_corners={align_corners})",
                            hint="nearest supported: nearest, or bilinear without align_corners")
        if dst[2] // src[2] != 2:
            fields["scale_factor"] = dst[2] // src[2]
        self.add(node, "Upsample", fields, [x])

    def _global_pool(self, node, keepdims: bool) -> None:
        self.add(node, "GlobalAvgPool2d", {}, [self.tensors(node)[0]], keepdims=keepdims)

    def _adaptive(self, node, size) -> None:
        from spdnn.ops import OPS

        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        if size == (1, 1):
            self._global_pool(node, keepdims=True)
        elif "AdaptiveAvgPool2d" in OPS and None not in size:
            out = int(size[0]) if size[0] == size[1] else [int(size[0]), int(size[1])]
            self.add(node, "AdaptiveAvgPool2d", {"output_size": out}, [self.tensors(node)[0]])
        else:
            raise self.fail(node, f"adaptive average pool to {size}",
                            hint="nearest supported: AdaptiveAvgPool2d(1)")

    def module(self, node, mod) -> None:
        nn = self.nn
        kind = type(mod).__name__
        x = self.tensors(node)
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            if mod.padding_mode != "zeros":
                raise self.fail(node, f"padding_mode '{mod.padding_mode}'",
                                hint="nearest supported: zero padding")
            k, s, d = tuple(mod.kernel_size), tuple(mod.stride), tuple(mod.dilation)
            pad = mod.padding
            if pad == "valid":
                pad = (0, 0)
            elif pad == "same":
                if any((dd * (kk - 1)) % 2 for kk, dd in zip(k, d)):
                    raise self.fail(node, "padding 'same' with an even kernel pads one side "
                                    "more", hint="nearest supported: an odd kernel_size")
                pad = tuple(dd * (kk - 1) // 2 for kk, dd in zip(k, d))
            opad = mod.output_padding if isinstance(mod, nn.ConvTranspose2d) else None
            fields = conv_fields(k, s, pad, d, mod.groups, mod.out_channels,
                                 mod.bias is not None, opad)
            params = {"weight": mod.weight} | ({"bias": mod.bias} if mod.bias is not None else {})
            self.add(node, "Conv2d" if isinstance(mod, nn.Conv2d) else "ConvTranspose2d",
                     fields, x, params)
        elif isinstance(mod, nn.Linear):
            params = {"weight": mod.weight} | ({"bias": mod.bias} if mod.bias is not None else {})
            self.add(node, "Linear", {"out_features": mod.out_features,
                                      "bias": mod.bias is not None}, x, params)
        elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not mod.track_running_stats or mod.running_mean is None:
                raise self.fail(node, "batch norm without running statistics",
                                hint="nearest supported: BatchNorm2d(track_running_stats=True)")
            params = {"running_mean": mod.running_mean, "running_var": mod.running_var}
            fields = {}
            if abs(mod.eps - 1e-5) > 1e-12:
                fields["eps"] = float(mod.eps)
            if mod.momentum is not None and abs(mod.momentum - 0.1) > 1e-12:
                fields["momentum"] = float(mod.momentum)
            if mod.affine:
                params |= {"weight": mod.weight, "bias": mod.bias}
            else:
                fields["affine"] = False
            self.add(node, "BatchNorm2d" if isinstance(mod, nn.BatchNorm2d) else "BatchNorm1d",
                     fields, x, params)
        elif isinstance(mod, nn.InstanceNorm2d):
            if mod.track_running_stats:
                raise self.fail(node, "instance norm with running statistics",
                                hint="nearest supported: InstanceNorm2d()")
            fields = {"affine": True} if mod.affine else {}
            if abs(mod.eps - 1e-5) > 1e-12:
                fields["eps"] = float(mod.eps)
            params = {"weight": mod.weight, "bias": mod.bias} if mod.affine else {}
            self.add(node, "InstanceNorm2d", fields, x, params)
        elif kind in _MODULE_ACTS and type(mod) is getattr(nn, kind):
            self._act(node, _MODULE_ACTS[kind])
        elif isinstance(mod, nn.LeakyReLU):
            self._act(node, "LeakyReLU", {"negative_slope": float(mod.negative_slope)})
        elif isinstance(mod, nn.ELU):
            if mod.alpha != 1.0:
                raise self.fail(node, f"ELU with alpha {mod.alpha} (the netspec's has alpha 1)",
                                hint="nearest supported: ELU()")
            self._act(node, "ELU")
        elif isinstance(mod, nn.GELU):
            self._act(node, "GELU", {"approximate": "tanh"} if mod.approximate == "tanh" else {})
        elif isinstance(mod, nn.Softplus):
            fields = {}
            if mod.beta != 1.0:
                fields["beta"] = float(mod.beta)
            if mod.threshold != 20.0:
                fields["threshold"] = float(mod.threshold)
            self._act(node, "Softplus", fields)
        elif isinstance(mod, nn.Softmax):
            self._softmax(node, mod.dim)
        elif isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
            if isinstance(mod, nn.MaxPool2d) and (mod.return_indices or mod.dilation not in (1, (1, 1))):
                raise self.fail(node, "max pool with indices or dilation",
                                hint="nearest supported: MaxPool2d(kernel_size, stride)")
            if isinstance(mod, nn.AvgPool2d) and mod.divisor_override is not None:
                raise self.fail(node, "average pool with divisor_override",
                                hint="nearest supported: AvgPool2d(kernel_size, stride)")
            k = _pair(mod.kernel_size)
            s = _pair(mod.stride if mod.stride is not None else mod.kernel_size)
            fields = pool_fields(k, s, _pair(mod.padding), mod.ceil_mode,
                                 getattr(mod, "count_include_pad", True))
            self.add(node, type(mod).__name__, fields, x)
        elif isinstance(mod, nn.AdaptiveAvgPool2d):
            self._adaptive(node, mod.output_size)
        elif isinstance(mod, nn.Flatten):
            self._reshape(node)
        elif isinstance(mod, (nn.Dropout, nn.Dropout2d)):
            self.add(node, "Dropout", {} if mod.p == 0.5 else {"p": float(mod.p)}, x)
        elif isinstance(mod, nn.Identity):
            self.alias[node.name] = self.v(x[0])
        elif isinstance(mod, nn.Upsample):
            self._upsample(node, mod.mode, mod.align_corners)
        elif isinstance(mod, nn.PixelShuffle):
            self.add(node, "PixelShuffle", {"upscale_factor": mod.upscale_factor}, x)
        else:
            raise self.fail(node, "unsupported module", hint="nearest supported: nn."
                            + nearest(kind, SUPPORTED_MODULES, _ALTERNATIVES))

    def function(self, node) -> None:
        torch, F = self.torch, self.F
        t = node.target
        xs = self.tensors(node)
        is_method = node.op == "call_method"
        if t in (operator.add, operator.iadd, torch.add) or (is_method and t in ("add", "add_")):
            if len(xs) != 2 or self.arg(node, 2, "alpha", 1) != 1:
                raise self.fail(node, "adds a constant or scales a term; the netspec's Add sums "
                                "layer outputs", hint="nearest supported: x + y of two layers")
            self.add(node, "Add", {}, xs)
        elif t in (operator.mul, operator.imul, torch.mul) or (is_method and t in ("mul", "mul_")):
            if len(xs) != 2:
                raise self.fail(node, "multiplies by a constant; the netspec's Mul multiplies "
                                "layer outputs", hint="nearest supported: x * y of two layers")
            self.add(node, "Mul", {}, xs)
        elif t in (torch.cat, torch.concat):
            dim = self.arg(node, 1, "dim", 0)
            if int(dim) % len(self.shape(node)) != 1:
                raise self.fail(node, f"concatenation on dim {dim}; the netspec concatenates "
                                "channels (dim 1)", hint="nearest supported: torch.cat(xs, 1)")
            self.add(node, "Concat", {}, xs)
        elif t is torch.flatten or (is_method and t in ("view", "reshape", "flatten", "squeeze",
                                                         "unsqueeze")) or t in (
                torch.reshape, torch.squeeze, torch.unsqueeze):
            self._reshape(node)
        elif is_method and t in ("contiguous", "clone", "detach") or t in (torch.clone,):
            self.alias[node.name] = self.v(xs[0])
        elif (t is torch.mean or (is_method and t == "mean")) and len(xs) == 1:
            dim = self.arg(node, 1, "dim")
            rank = len(self.shape(xs[0]))
            dims = sorted(int(d) % rank for d in (dim if isinstance(dim, (tuple, list)) else
                                                 [dim])) if dim is not None else []
            if rank != 4 or dims != [2, 3]:
                raise self.fail(node, f"a mean over dims {dim}; only the spatial mean (2, 3) is "
                                "a netspec layer", hint="nearest supported: x.mean((2, 3))")
            self._global_pool(node, keepdims=bool(self.arg(node, 2, "keepdim", False)))
        elif t is F.adaptive_avg_pool2d:
            self._adaptive(node, self.arg(node, 1, "output_size"))
        elif t in (F.max_pool2d, F.avg_pool2d):
            k = _pair(self.arg(node, 1, "kernel_size"))
            stride = self.arg(node, 2, "stride")
            s = _pair(stride) if stride not in (None, []) else k
            is_max = t is F.max_pool2d
            ceil = self.arg(node, 5 if is_max else 4, "ceil_mode", False)
            if is_max and (_pair(self.arg(node, 4, "dilation", 1)) != (1, 1)
                           or self.arg(node, 6, "return_indices", False)):
                raise self.fail(node, "max pool with indices or dilation",
                                hint="nearest supported: F.max_pool2d(x, kernel_size, stride)")
            if not is_max and self.arg(node, 6, "divisor_override") is not None:
                raise self.fail(node, "average pool with divisor_override",
                                hint="nearest supported: F.avg_pool2d(x, kernel_size, stride)")
            include = True if is_max else self.arg(node, 5, "count_include_pad", True)
            fields = pool_fields(k, s, _pair(self.arg(node, 3, "padding", 0)), bool(ceil),
                                 bool(include))
            self.add(node, "MaxPool2d" if is_max else "AvgPool2d", fields, xs[:1])
        elif t is F.interpolate:
            self._upsample(node, self.arg(node, 3, "mode", "nearest"),
                           self.arg(node, 4, "align_corners"))
        elif t is F.dropout:
            p = float(self.arg(node, 1, "p", 0.5))
            self.add(node, "Dropout", {} if p == 0.5 else {"p": p}, xs[:1])
        elif t in self.acts or (is_method and t in self.method_acts):
            op = self.acts[t] if not is_method else self.method_acts[t]
            if op == "Softmax":
                self._softmax(node, self.arg(node, 1, "dim"))
            elif op == "LeakyReLU":
                self._act(node, op, {"negative_slope": float(self.arg(node, 1,
                                                                      "negative_slope", 0.01))})
            elif op == "ELU" and float(self.arg(node, 1, "alpha", 1.0)) != 1.0:
                raise self.fail(node, "ELU with alpha != 1", hint="nearest supported: F.elu(x)")
            elif op == "GELU" and self.arg(node, 1, "approximate", "none") == "tanh":
                self._act(node, op, {"approximate": "tanh"})
            else:
                self._act(node, op)
        else:
            name = t if isinstance(t, str) else getattr(t, "__name__", str(t))
            raise self.fail(node, "unsupported call", hint="nearest supported: " + nearest(
                str(name), ["add", "mul", "cat", "flatten", "view", "mean", "relu", "sigmoid",
                            "tanh", "softmax", "interpolate", "dropout",
                            "adaptive_avg_pool2d"], {"conv2d": "an nn.Conv2d module",
                                                     "linear": "an nn.Linear module",
                                                     "sub": "add", "div": "mul",
                                                     "matmul": "an nn.Linear module"}))


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def read_module(module: Any, example_input: Any, name: str | None = None) -> SourceGraph:
    """Trace ``module`` with ``torch.fx`` on ``example_input`` into a
    :class:`~spdnn.importers.graph.SourceGraph` (see the module docstring for what maps).

    Raises:
        ModelImportError: not an ``nn.Module``, fx cannot trace it, the example input does not
            run, or a node has no netspec equivalent.
    """
    import torch
    import torch.fx
    from torch.fx.passes.shape_prop import ShapeProp

    if not isinstance(module, torch.nn.Module):
        raise ModelImportError(f"expected a torch.nn.Module, got {type(module).__name__}")
    cls = type(module).__name__
    examples = tuple(example_input) if isinstance(example_input, (tuple, list)) else (
        example_input,)
    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as exc:  # noqa: BLE001 - fx raises many types on untraceable code
        raise ModelImportError(f"torch.fx cannot trace {cls}: {_first_line(exc)}",
                               hint="forward must not branch on tensor values; the netspec is a "
                                    "static layer graph") from None
    training = module.training
    module.eval()
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*examples)
    except Exception as exc:  # noqa: BLE001
        raise ModelImportError(f"{cls} does not run on the example input "
                               f"{[tuple(e.shape) for e in examples if hasattr(e, 'shape')]}: "
                               f"{_first_line(exc)}", hint="give an input of the shape the "
                               "model expects") from None
    finally:
        module.train(training)
    r = _Reader(gm)
    ins: list[tuple[str, tuple[int, ...]]] = []
    outs: list[tuple[str, str]] = []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            shape = r.shape(node)
            if shape is None:
                raise ModelImportError(f"forward argument '{node.target}' is not a tensor",
                                       hint="import a module whose forward takes tensors")
            ins.append((str(node.target), shape[1:]))
            r.shapes[node.name] = shape[1:]
        elif node.op == "output":
            res = node.args[0]
            if isinstance(res, dict):
                items = list(res.items())
            elif isinstance(res, (tuple, list)):
                items = [(f"out_{k}", v) for k, v in enumerate(res)]
            else:
                items = [("out", res)]
            for oname, v in items:
                if not hasattr(v, "name"):
                    raise ModelImportError(f"output '{oname}' of {cls} is not a tensor computed "
                                           "by forward")
                outs.append((str(oname), r.v(v)))
        else:
            r.read(node)
    # an input read directly under its placeholder name
    renamed = {node.name: str(node.target) for node in gm.graph.nodes if node.op == "placeholder"}
    for n in r.nodes:
        n.inputs = [renamed.get(i, i) for i in n.inputs]
    shapes = {renamed.get(k, k): v for k, v in r.shapes.items()}
    return SourceGraph(name or cls, ins, r.nodes, outs, shapes,
                       description=f"imported from the torch module {cls} by spdnn.from_module")


# --------------------------------------------------------------------------------------------
# file.py:Factory
# --------------------------------------------------------------------------------------------
def load_factory(spec: str, example_shape: tuple[int, ...] | None = None):
    """``path/to/file.py:Factory`` -> ``(module, example_input)``; see
    :func:`spdnn.importers.load_factory`."""
    import torch

    path_text, sep, attr = str(spec).rpartition(":")
    if not sep or not path_text or not attr.isidentifier():
        raise ModelImportError(f"'{spec}' is not FILE.py:Factory",
                               hint="e.g. spdnn import models.py:resnet18 -o net.yaml")
    path = Path(path_text)
    if path.suffix != ".py":
        raise ModelImportError("not a Python file (.py)", file=path_text,
                               hint="give FILE.py:Factory, or an .onnx file")
    if not path.is_file():
        raise ModelImportError("file not found", file=path_text)
    mod_name = f"_spdnn_factory_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(mod_name, path)
    pymod = importlib.util.module_from_spec(loader_spec)
    sys.modules[mod_name] = pymod
    try:
        loader_spec.loader.exec_module(pymod)
    except Exception as exc:  # noqa: BLE001 - the user's file may raise anything
        raise ModelImportError(f"running the file raised {type(exc).__name__}: "
                               f"{_first_line(exc)}", file=path_text) from None
    finally:
        sys.modules.pop(mod_name, None)
    factory = getattr(pymod, attr, None)
    if factory is None:
        names = sorted(n for n in vars(pymod) if not n.startswith("_") and callable(vars(pymod)[n]))
        raise ModelImportError(f"the file has no '{attr}'", file=path_text,
                               hint="it defines: " + ", ".join(names[:8]) if names else None)
    try:
        module = factory() if callable(factory) else factory
    except Exception as exc:  # noqa: BLE001
        raise ModelImportError(f"{attr}() raised {type(exc).__name__}: {_first_line(exc)}",
                               file=path_text) from None
    if not isinstance(module, torch.nn.Module):
        raise ModelImportError(f"{attr}() returned a {type(module).__name__}, not a "
                               "torch.nn.Module", file=path_text)
    example = getattr(factory, "example_input", None)
    if example is None:
        example = getattr(module, "example_input", None)
    if callable(example):
        example = example()
    if example is None:
        if example_shape is None:
            raise ModelImportError(f"no example input for {attr}", file=path_text,
                                   hint="give --shape C,H,W, or an example_input attribute")
        example = torch.rand(1, *example_shape)
    return module, example
