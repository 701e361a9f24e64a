"""Export stage: netspec -> ONNX file, checked by ``onnx.checker`` and by onnxruntime parity.

:func:`export_onnx` builds the network with :func:`spdnn.codegen.build_module` (eval mode),
exports it with ``torch.onnx``, runs the full ONNX checker, then runs onnxruntime (CPU) on
random inputs and on real photographs (scikit-image's ``camera`` and ``astronaut``, resized to
the input size and scaled to [0, 1], for image inputs with 1 or 3 channels) and compares every
output with torch. The ONNX file carries metadata: the netspec's name and hash, the spdnn
version, and the input/output names and shapes.

Exporter choice (measured on this project's 18 netspecs, 2-core CPU, torch 2.13):

* ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter, torch's default and
  the non-deprecated one) exports every netspec; about 1 s per network (2.7 s for the first,
  which warms up the exporter), ~19 s for all 18, with static or dynamic batch. Its graph is
  optimized (batch norm folded into the convolutions) and every ONNX node records the module
  it came from, which is how a failure is traced back to a netspec layer.
* ``dynamo=False`` (TorchScript-based, deprecated) takes ~0.03 s per network, but is deprecated.

So ``exporter="dynamo"`` is the default. ``exporter="torchscript"`` is kept for speed and for
old opsets: the dynamo exporter only emits opset >= 18 (asked for less, it silently writes 18),
so an ``opset`` below 18 switches to the TorchScript exporter automatically.

Tolerance: a check passes when ``max|onnx - torch| <= atol * max(1, max|torch|)`` (absolute for
outputs in [0, 1], relative for large outputs). The default ``atol`` is 1e-4 in fp32 and 1e-2
with ``fp16=True``; the reference is always the float32 torch network (with fp16 the inputs are
rounded to half precision first).

Errors are :class:`ExportError` (a :class:`~spdnn.errors.SpdnnError`): one line naming the
netspec layer and op that failed (export, ONNX check, onnxruntime, or a parity mismatch, which
is traced to the first layer whose onnxruntime output differs from torch's).

The pieces live in sibling modules: :mod:`spdnn.export.source` (what to export),
:mod:`spdnn.export.inputs` (what to compare on), :mod:`spdnn.export.trace` (layer scopes),
:mod:`spdnn.export.ort` (sessions) and :mod:`spdnn.export.diagnose` (one-line failures).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from spdnn import __version__
from spdnn.export.diagnose import (
    export_failure,
    first_line,
    locate_mismatch,
    name_op,
    ort_failure,
)
from spdnn.export.inputs import check_sets
from spdnn.export.ort import ort_session
from spdnn.export.report import ExportError, ExportReport, ParityCheck, TensorInfo
from spdnn.export.source import default_path, load_source
from spdnn.export.trace import Traceable
from spdnn.io import check_outputs, write_atomic
from spdnn.spec import Netspec, example_inputs, spec_hash

__all__ = ["DEFAULT_OPSET", "DYNAMO_MIN_OPSET", "Exporter", "export_module", "export_onnx",
           "temp_onnx"]

Exporter = Literal["dynamo", "torchscript"]
DYNAMO_MIN_OPSET = 18
DEFAULT_OPSET = 20


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' progress prints, warnings and log lines."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            logger.setLevel(level)


def _torch_export(module: nn.Module, args: tuple, input_names: list[str],
                  output_names: list[str], opset: int, dynamic_batch: bool,
                  exporter: Exporter):
    """Run ``torch.onnx.export``; returns the ``onnx.ModelProto``."""
    import onnx

    with _quiet():
        if exporter == "dynamo":
            kw: dict[str, Any] = {}
            if dynamic_batch:
                n = torch.export.Dim("N", min=1, max=1 << 16)
                kw["dynamic_shapes"] = {"inputs": tuple({0: n} for _ in args)}
            prog = torch.onnx.export(module, args, None, dynamo=True, opset_version=opset,
                                     input_names=input_names, output_names=output_names,
                                     optimize=True, verbose=False, **kw)
            return prog.model_proto
        buf = io.BytesIO()
        axes = ({n: {0: "N"} for n in input_names + output_names} if dynamic_batch else None)
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=opset,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=axes, do_constant_folding=True)
        return onnx.load_from_string(buf.getvalue())


def _value_names(graph) -> set[str]:
    """Every value name ``graph`` uses (its subgraphs included)."""
    import onnx

    names = {v.name for v in (*graph.input, *graph.output, *graph.value_info)}
    names |= {t.name for t in graph.initializer}
    for node in graph.node:
        names |= set(node.input) | set(node.output)
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                names |= _value_names(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    names |= _value_names(g)
    names.discard("")
    return names


def _rename_values(graph, mapping: dict[str, str]) -> None:
    """Rename values of ``graph`` (and of its subgraphs) in place."""
    import onnx

    for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        v.name = mapping.get(v.name, v.name)
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _rename_values(a.g, mapping)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    _rename_values(g, mapping)


def _io_placeholders(n_in: int, n_out: int) -> tuple[list[str], list[str]]:
    return ([f"spdnn_io_input_{k}" for k in range(n_in)],
            [f"spdnn_io_output_{k}" for k in range(n_out)])


def _give_io_names(model, placeholders: list[str], names: list[str]) -> None:
    """Name the graph's inputs and outputs (exported as ``placeholders``) ``names``, after
    renaming any other value that already has one of ``names`` (an exporter names values after
    their ops: an output called ``conv2d`` or named like an input would clash otherwise)."""
    used = _value_names(model.graph)
    clash = (set(names) & used) - set(placeholders)
    mapping: dict[str, str] = {}
    taken = used | set(names)
    for n in sorted(clash):
        k = 1
        while f"{n}__{k}" in taken:
            k += 1
        mapping[n] = f"{n}__{k}"
        taken.add(mapping[n])
    mapping.update(zip(placeholders, names))
    _rename_values(model.graph, mapping)


def export_module(module: nn.Module, example: tuple[torch.Tensor, ...], path: str | Path | None,
                  input_names: list[str], output_names: list[str], opset: int | None = None,
                  dynamic_batch: bool = False, exporter: Exporter = "dynamo",
                  metadata: dict[str, str] | None = None, scopes: dict[str, str] | None = None):
    """Export any module (e.g. a parallel ensemble of parents) to ONNX; returns the ModelProto
    (written to ``path`` when given) and the exporter actually used.

    Raises:
        ExportError: the export or the ONNX checker failed (one line naming the op).
    """
    import onnx

    opset = opset or DEFAULT_OPSET
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        exporter = "torchscript"
    module = module.eval()
    # export under names no exporter generates, then give the graph the caller's names: those
    # may be anything (an output called 'conv2d' clashes with the exporter's own value names)
    ph_in, ph_out = _io_placeholders(len(input_names), len(output_names))
    try:
        model = _torch_export(module, example, ph_in, ph_out, opset, dynamic_batch, exporter)
        _give_io_names(model, ph_in + ph_out, list(input_names) + list(output_names))
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - translate any exporter failure into one line
        raise export_failure(exc, scopes or {}) from None
    got = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if got != opset:
        raise ExportError(f"the {exporter} exporter wrote opset {got}, not the requested {opset}",
                          hint="try another --opset")
    if dynamic_batch:
        for vi in list(model.graph.input) + list(model.graph.output):
            dims = vi.type.tensor_type.shape.dim
            if dims and dims[0].dim_param:
                dims[0].dim_param = "N"
    for k, v in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError("the ONNX checker rejected the exported model: "
                          + first_line(str(exc)), hint="a bug in the exporter; try --opset or "
                          "report it") from None
    if path is not None:
        write_atomic(path, model.SerializeToString(), what="ONNX file")
    return model, exporter


def export_onnx(spec: Netspec | str | Path, path: str | Path, opset: int | None = None,
                dynamic_batch: bool = False, fp16: bool = False,
                check_inputs: list | None = None, atol: float | None = None,
                exporter: Exporter = "dynamo", seed: int = 0,
                state_dict: dict | None = None, model: str | None = None) -> ExportReport:
    """Export a netspec (or a netspec file / checkpoint) to ONNX and check it.

    Args:
        spec: a :class:`~spdnn.spec.Netspec`, a netspec YAML path, or a checkpoint path (a
            ``.pt`` file or a run folder; see :func:`~spdnn.export.load_source`).
        path: the ``.onnx`` file to write (never the source file itself).
        opset: ONNX opset (default 20; below 18 uses the TorchScript exporter).
        dynamic_batch: make the batch axis symbolic (``N``); otherwise the batch is fixed to 1.
        fp16: export the network in half precision (inputs and outputs float16).
        check_inputs: extra inputs to compare on: a list of arrays/tensors (one network input)
            or of lists of them (several inputs), each with the batch axis.
        atol: tolerance (default 1e-4, or 1e-2 with ``fp16``); see the module docstring.
        exporter: ``"dynamo"`` (default) or ``"torchscript"``.
        seed: seed of the random weights (when the netspec has no trained weights) and inputs.
        state_dict: weights to load (a checkpoint's are used automatically).
        model: the network of a multi-network checkpoint to export (e.g. ``"generator"``);
            optional when the checkpoint holds one network.

    Returns:
        An :class:`ExportReport`. The file is written even when parity fails (so it can be
        inspected), then :class:`ExportError` is raised.

    Raises:
        ExportError: export, checker, onnxruntime or parity failed (one line naming the
            layer), or the checkpoint holds no such network.
        CheckpointError: the checkpoint is missing, corrupt, unsafe or not spdnn's.
        SpdnnError: ``path`` is the source file.
        SpecError, ShapeError: the netspec is invalid.
        SpdnnError: the ``export`` extra (onnx, onnxruntime, onnxscript) is not installed.
    """
    from spdnn.codegen import build_module
    from spdnn.extras import require
    from spdnn.shapes import infer

    require("export", "spdnn.export.export_onnx")
    spec, states, file = load_source(spec, model)
    check_outputs([file] if file else [], [path])
    if state_dict is not None:
        states = [state_dict]
    atol = atol if atol is not None else (1e-2 if fp16 else 1e-4)
    info = infer(spec)
    torch.manual_seed(seed)
    module = build_module(spec).eval()
    problem = None
    for st in states:
        try:
            module.load_state_dict(st)
            problem = None
            break
        except RuntimeError as exc:
            problem = problem or first_line(str(exc))
    if problem:
        raise ExportError(f"the checkpoint's weights do not fit its netspec: {problem}",
                          file=file)
    layer_ops = {lay.name: lay.op_name for lay in spec.layers}
    chosen = "torchscript" if (opset or DEFAULT_OPSET) < DYNAMO_MIN_OPSET else exporter
    for lay in info.layers:  # what an op knows the exporter cannot do, before trying
        why = lay.op.onnx_unsupported(list(lay.in_shapes), lay.out_shape, chosen)
        if why:
            raise ExportError(f"layer '{lay.name}' ({lay.op.op_name}): {why}", file=file)
    dtype = torch.float16 if fp16 else torch.float32
    # the reference is always the fp32 network (torch's fp16 convolutions on CPU are very slow,
    # and what matters is how far the fp16 file is from the float network)
    exported = copy.deepcopy(module).half() if fp16 else module
    in_names = [i.name for i in spec.inputs]
    out_names = [o.name for o in spec.outputs]
    traced = Traceable(exported)
    scopes = traced.scopes
    batch = 2 if dynamic_batch else 1
    example = tuple(x if x.dtype == torch.int64 else x.to(dtype)
                    for x in example_inputs(spec, batch))
    out_shapes = info.output_shapes()
    bdim: int | str = "N" if dynamic_batch else 1
    dt = "float16" if fp16 else "float32"
    ins = [TensorInfo(i.name, (bdim, *i.shape), "int64" if i.dtype == "int64" else dt)
           for i in spec.inputs]
    outs = [TensorInfo(o, (bdim, *out_shapes[o]), dt) for o in out_names]
    meta = {
        "spdnn.version": __version__,
        "spdnn.netspec": spec.name,
        "spdnn.netspec_hash": spec_hash(spec),
        "spdnn.inputs": json.dumps({t.name: list(t.shape) for t in ins}),
        "spdnn.outputs": json.dumps({t.name: list(t.shape) for t in outs}),
        "spdnn.params": str(info.params),
        "spdnn.macs_per_sample": str(info.macs),
        "spdnn.dtype": dt,
    }
    t0 = time.perf_counter()
    try:
        proto, used = export_module(traced, example, path, in_names, out_names, opset,
                                    dynamic_batch, exporter, meta, scopes)
    except ExportError as exc:
        exc.file = exc.file or file
        name_op(exc, layer_ops)
        raise
    seconds = time.perf_counter() - t0
    report = ExportReport(path=Path(path), netspec=spec.name, netspec_hash=spec_hash(spec),
                          opset=next(o.version for o in proto.opset_import
                                     if o.domain in ("", "ai.onnx")),
                          exporter=used, dynamic_batch=dynamic_batch, fp16=fp16, inputs=ins,
                          outputs=outs, atol=atol, metadata=meta, export_seconds=seconds,
                          size_bytes=Path(path).stat().st_size)
    if used != exporter:
        report.notes.append(f"opset {report.opset} < {DYNAMO_MIN_OPSET}: used the TorchScript "
                            "exporter")
    _check_parity(report, module, proto, spec, scopes, layer_ops, file, check_inputs, seed)
    return report


def _check_parity(report: ExportReport, module: nn.Module, proto, spec: Netspec,
                  scopes: dict[str, str], layer_ops: dict[str, str], file: str | None,
                  check_inputs: list | None, seed: int) -> None:
    """Run the exported model on onnxruntime and compare it with the float32 torch ``module``
    on every check set, appending to ``report.checks``; the first mismatch raises."""
    in_names = [i.name for i in spec.inputs]
    out_names = [o.name for o in spec.outputs]
    try:
        sess = ort_session(proto.SerializeToString())
    except Exception as exc:  # noqa: BLE001
        raise ort_failure(exc, proto, scopes, layer_ops, file, "load") from None
    for label, arrs in check_sets(spec, None if report.dynamic_batch else 1, check_inputs, seed):
        if not report.dynamic_batch and any(a.shape[0] != 1 for a in arrs):
            arrs = [a[:1] for a in arrs]
        ftype = np.float16 if report.fp16 else np.float32
        feeds = {n: a if a.dtype == np.int64 else a.astype(ftype) for n, a in zip(in_names, arrs)}
        with torch.inference_mode():
            ref = module(*(torch.from_numpy(a if a.dtype == np.int64 else a.astype(np.float32))
                           for a in (feeds[n] for n in in_names)))
        refs = [ref[o] for o in out_names] if isinstance(ref, dict) else [ref]
        try:
            got = sess.run(out_names, feeds)
        except Exception as exc:  # noqa: BLE001
            raise ort_failure(exc, proto, scopes, layer_ops, file, "run") from None
        abs_err, rel_err = 0.0, 0.0
        for r, g in zip(refs, got):
            r64 = r.double().numpy()
            diff = float(np.max(np.abs(r64 - g.astype(np.float64)))) if r64.size else 0.0
            scale = max(1.0, float(np.max(np.abs(r64)))) if r64.size else 1.0
            abs_err = max(abs_err, diff)
            rel_err = max(rel_err, diff / scale)
        check = ParityCheck(label, int(arrs[0].shape[0]), abs_err, rel_err,
                            rel_err <= report.atol)
        report.checks.append(check)
        if not check.ok:
            where = locate_mismatch(module, proto, feeds, in_names, report.atol)
            raise ExportError(
                f"onnxruntime differs from torch on {label} input: max abs error {abs_err:.3g} "
                f"> {report.atol:g}" + (f"; first differing layer: {where}" if where else ""),
                file=file, hint=f"the ONNX file was written to {report.path} for inspection")


def temp_onnx(spec: Netspec, dynamic_batch: bool = True, **kw) -> tuple[Path, ExportReport]:
    """Export to a temporary file (for benchmarks); returns its path and the report."""
    d = Path(tempfile.mkdtemp(prefix="spdnn_onnx_"))
    p = d / default_path(spec)
    return p, export_onnx(spec, p, dynamic_batch=dynamic_batch, **kw)
