"""Failures -> one line naming the netspec layer and op.

* :func:`export_failure`: an exception of ``torch.onnx.export`` becomes an
  :class:`~spdnn.export.ExportError` with the exporter's own summary, the layer being exported
  (found in the traceback: a :class:`~spdnn.export.trace.LayerCall` frame, or the ``torch.fx``
  node being translated and its module stack) and the aten op; :func:`name_op` prefixes them.
* :func:`ort_failure`: onnxruntime refusing to load or run the model; the ONNX node named in its
  message is mapped back to a layer through the node's name scopes (:func:`node_layer`).
* :func:`locate_mismatch`: a parity failure is traced to the first layer (in execution order)
  whose onnxruntime output differs from torch's.
"""

from __future__ import annotations

import ast
import re

import numpy as np
import torch
from torch import nn

from spdnn.export.ort import ort_session
from spdnn.export.report import ExportError
from spdnn.export.trace import LayerCall, Traceable

__all__ = ["export_failure", "first_line", "locate_mismatch", "name_op", "node_layer",
           "ort_failure"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLASS = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>")
_ATEN = re.compile(r"\b(?:aten|torch\.ops\.aten|prims|torchvision)(?:::|\.)([A-Za-z_][\w]*)")


def first_line(text: str, limit: int = 240) -> str:
    text = _CLASS.sub(r"\1", _ANSI.sub("", text))
    for line in text.splitlines():
        line = line.strip().strip("#").strip()
        if line:
            return line[:limit] + ("..." if len(line) > limit else "")
    return ""


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        out.append(exc)
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return out


def _summary(exc: BaseException) -> str:
    """The most specific one-line reason in an exporter exception chain."""
    for e in reversed(_chain(exc)):
        text = _ANSI.sub("", str(e))
        m = re.search(r"## Exception summary\s*\n+(.+)", text)
        if m:
            return first_line(m.group(1))
    deepest = _chain(exc)[-1]
    return f"{type(deepest).__name__}: {first_line(str(deepest))}"


def layer_from_traceback(exc: BaseException, scopes: dict[str, str]) -> str | None:
    """The netspec layer the exporter was working on when it failed.

    torch.export failures (step 1) happen inside :class:`LayerCall` ``forward``; ONNX
    translation failures (step 3) happen while a ``torch.fx.Node`` is being translated, and
    its ``nn_module_stack`` names the layer's module scope.
    """
    fwd = LayerCall.forward.__code__
    found = None
    for e in _chain(exc):
        tb = e.__traceback__
        while tb is not None:
            loc = tb.tb_frame.f_locals
            if tb.tb_frame.f_code is fwd and isinstance(loc.get("self"), LayerCall):
                found = loc["self"].layer
            else:
                for value in (loc.get("node"), loc.get("fx_node")):
                    if isinstance(value, torch.fx.Node):
                        stack = value.meta.get("nn_module_stack") or {}
                        for path, _ in stack.values():
                            if path in scopes:
                                found = scopes[path]
                                break
            tb = tb.tb_next
        if found:
            return found
    return None


def export_failure(exc: BaseException, scopes: dict[str, str]) -> ExportError:
    layer = layer_from_traceback(exc, scopes)
    text = "\n".join(_ANSI.sub("", str(e)) for e in _chain(exc))
    aten = _ATEN.findall(text)
    err = ExportError(f"torch.onnx export failed: {_summary(exc)}",
                      hint="replace that layer, or try another --opset or the torchscript "
                      "exporter")
    err._layer = layer  # type: ignore[attr-defined]
    err._aten = aten[0] if aten else None  # type: ignore[attr-defined]
    return err


def name_op(err: ExportError, layer_ops: dict[str, str]) -> None:
    """Prefix the message with the layer and op (``layer 'conv3' (Conv2d): ...``)."""
    layer = getattr(err, "_layer", None)
    aten = getattr(err, "_aten", None)
    parts = []
    if layer is not None:
        parts.append(f"layer '{layer}' ({layer_ops.get(layer, '?')})")
    if aten:
        parts.append(f"torch op '{aten}'")
    if parts:
        err.message = f"{', '.join(parts)}: {err.message}"


def node_layer(node, scopes: dict[str, str]) -> str | None:
    """The netspec layer an ONNX node was exported from (from the exporter's name scopes;
    ``scopes`` maps module paths to layer names)."""
    for entry in node.metadata_props:
        if entry.key == "pkg.torch.onnx.name_scopes":
            try:
                names = [s for s in ast.literal_eval(entry.value) if isinstance(s, str) and s]
            except (ValueError, SyntaxError):
                return None
            for s in names:
                if s in scopes:
                    return scopes[s]
    return None


def ort_failure(exc: BaseException, model, scopes: dict[str, str],
                 layer_ops: dict[str, str], file: str | None, stage: str) -> ExportError:
    text = _ANSI.sub("", str(exc))
    node = None
    m = re.search(r"node with name '([^']+)'|Node \(([^)]+)\)|node ([\w.:/-]+)", text)
    if m:
        wanted = next(g for g in m.groups() if g)
        node = next((n for n in model.graph.node if n.name == wanted), None)
    if node is None:  # "domain:OpType(version)" or "OpType(version)" in the message
        for dom, op in re.findall(r"(?:([\w.]+):)?([A-Z]\w*)\(-?\d+\)", text):
            node = next((n for n in model.graph.node if n.op_type == op
                         and (not dom or n.domain == dom)), None)
            if node is not None:
                break
    where = ""
    if node is not None:
        layer = node_layer(node, scopes)
        where = f"ONNX op {node.op_type} (node '{node.name}'"
        where += f", layer '{layer}' ({layer_ops.get(layer, '?')}))" if layer else ")"
        where += ": "
    verb = "cannot load" if stage == "load" else "failed to run"
    return ExportError(f"{where}onnxruntime {verb} the exported model: {first_line(text)}",
                       file=file, hint="try another --opset, or check that onnxruntime supports "
                       "this op")


def locate_mismatch(module: nn.Module, model, feeds: dict[str, np.ndarray],
                     in_names: list[str], atol: float) -> str | None:
    """The first layer (in execution order) whose onnxruntime output differs from torch's.

    Torch side: forward hooks on every layer of the float32 network's :class:`Traceable` view.
    ONNX side: the last value the nodes of each layer's scope produce, added as extra graph
    outputs. Best effort: ``None`` when nothing can be pinned down.
    """
    import onnx

    view = Traceable(module)
    seen: dict[str, np.ndarray] = {}
    hooks = []
    for key, name in view.scopes.items():
        hooks.append(view._modules[key].register_forward_hook(
            lambda _m, _i, out, name=name: seen.__setitem__(name, out.detach().double().numpy())))
    try:
        with torch.inference_mode():
            view(*(torch.from_numpy(feeds[n].astype(np.float32)) for n in in_names))
    finally:
        for h in hooks:
            h.remove()
    last: dict[str, str] = {}
    ops: dict[str, str] = {}
    for node in model.graph.node:
        layer = node_layer(node, view.scopes)
        if layer is not None and node.output:
            last[layer] = node.output[0]
            ops[layer] = node.op_type
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    names = [(layer, value) for layer, value in last.items() if layer in seen]
    for _, value in names:
        if value not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(value))
            existing.add(value)
    try:
        sess = ort_session(probe.SerializeToString())
        vals = dict(zip([v for _, v in names], sess.run([v for _, v in names], feeds)))
    except Exception:  # noqa: BLE001 - best effort only
        return None
    order = [name for _, name, _ in view._steps]
    for layer, value in sorted(names, key=lambda lv: order.index(lv[0])):
        ref, got = seen[layer], vals[value].astype(np.float64)
        if ref.shape != got.shape or not ref.size:
            continue
        diff = float(np.max(np.abs(ref - got)))
        if diff > atol * max(1.0, float(np.max(np.abs(ref)))):
            op_name = view._modules[_key(view, layer)].op.op_name
            return f"'{layer}' ({op_name}, ONNX {ops[layer]}, max abs error {diff:.3g})"
    return None


def _key(view: Traceable, layer: str) -> str:
    return next(k for k, n in view.scopes.items() if n == layer)

