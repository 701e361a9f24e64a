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
"""

from __future__ import annotations

import ast
import contextlib
import copy
import io
import json
import logging
import re
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from spdnn import __version__
from spdnn.errors import SpdnnError
from spdnn.spec import Netspec, example_inputs, spec_hash

__all__ = ["ExportError", "ExportReport", "ParityCheck", "TensorInfo", "export_module",
           "export_onnx", "load_source", "ort_session", "real_inputs"]

Exporter = Literal["dynamo", "torchscript"]
DYNAMO_MIN_OPSET = 18
DEFAULT_OPSET = 20


class ExportError(SpdnnError):
    """Export, ONNX check or onnxruntime parity failed; the message names the layer and op."""


@dataclass(frozen=True)
class TensorInfo:
    """An ONNX graph input or output: name, shape (batch axis ``"N"`` when dynamic), dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str


@dataclass(frozen=True)
class ParityCheck:
    """One onnxruntime-vs-torch comparison."""

    input: str  # "random", "camera", "astronaut", "user[0]", ...
    batch: int
    max_abs_err: float
    max_rel_err: float
    ok: bool


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how well onnxruntime matched torch."""

    path: Path
    netspec: str
    netspec_hash: str
    opset: int
    exporter: str
    dynamic_batch: bool
    fp16: bool
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    atol: float
    checks: list[ParityCheck] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    export_seconds: float = 0.0
    size_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def max_abs_err(self) -> float:
        return max((c.max_abs_err for c in self.checks), default=0.0)

    @property
    def max_rel_err(self) -> float:
        return max((c.max_rel_err for c in self.checks), default=0.0)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d.update(max_abs_err=self.max_abs_err, max_rel_err=self.max_rel_err, ok=self.ok)
        return d


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------
def load_source(source: str | Path | Netspec) -> tuple[Netspec, list[dict], str | None]:
    """``(netspec, candidate state dicts, file)`` of a Netspec, a netspec YAML file, a training
    checkpoint (``spdnn train``'s ``best.pt``/``last.pt``) or a run folder holding one.

    A checkpoint holds the netspec as YAML text (``"netspec"``) and the weights (``"models"``:
    name -> state dict; ``"ema"``: the EMA averages, used first, as evaluation does; or a plain
    ``"state_dict"``). The candidates are tried in order by :func:`export_onnx`.

    Raises:
        SpecError: the netspec does not load.
        ExportError: the file is neither a netspec nor a checkpoint.
    """
    from spdnn.spec import from_data, load_checked, loads

    if isinstance(source, Netspec):
        return source, [], None
    path = Path(source)
    if path.is_dir():
        found = [path / n for n in ("best.pt", "last.pt") if (path / n).is_file()]
        if not found:
            raise ExportError("no checkpoint in this folder", file=str(path),
                              hint="give a netspec (.yaml), a checkpoint, or a run folder with "
                              "best.pt/last.pt")
        path = found[0]
    if not path.exists():
        raise ExportError("file not found", file=str(path),
                          hint="give a netspec (.yaml) or a checkpoint file")
    if path.suffix.lower() in (".yaml", ".yml"):
        return load_checked(path), [], str(path)
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - spdnn checkpoints also hold RNG states
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error
        raise ExportError(f"not a netspec or a checkpoint ({type(exc).__name__})", file=str(path),
                          hint="give a netspec (.yaml) or a checkpoint written by spdnn") from None
    if not isinstance(ckpt, dict) or "netspec" not in ckpt:
        raise ExportError("this checkpoint holds no netspec", file=str(path),
                          hint="export a checkpoint written by 'spdnn train'")
    raw = ckpt["netspec"]
    where = f"{path}:netspec"
    spec = loads(raw, file=where) if isinstance(raw, str) else from_data(raw, file=where)
    states: list[dict] = []
    for ema in (ckpt.get("ema") or {}).values():
        states.append({k.removeprefix("module."): v for k, v in ema.items()
                       if k != "n_averaged"})
    states += list((ckpt.get("models") or {}).values())
    for key in ("state_dict", "model"):
        if isinstance(ckpt.get(key), dict):
            states.append(ckpt[key])
    return spec, states, str(path)


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def real_inputs(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Real photographs shaped ``(1, C, H, W)`` for an image input with 1 or 3 channels
    (scikit-image's ``camera`` and ``astronaut``, resized, in [0, 1]); ``{}`` otherwise."""
    if len(shape) != 3 or shape[0] not in (1, 3):
        return {}
    from skimage import color, data, transform

    c, h, w = shape
    imgs = {"camera": data.camera().astype(np.float64) / 255.0,
            "astronaut": data.astronaut().astype(np.float64) / 255.0}
    out = {}
    for name, img in imgs.items():
        if c == 1 and img.ndim == 3:
            img = color.rgb2gray(img)
        elif c == 3 and img.ndim == 2:
            img = color.gray2rgb(img)
        img = transform.resize(img, (h, w), anti_aliasing=True)
        img = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
        out[name] = np.clip(img, 0.0, 1.0).astype(np.float32)[None]
    return out


def _check_sets(spec: Netspec, batch: int | None, user: list | None,
                seed: int = 0) -> list[tuple[str, list[np.ndarray]]]:
    """Named lists of input arrays (one per network input) to compare on."""
    rng = np.random.default_rng(seed)
    shapes = [i.shape for i in spec.inputs]
    sets: list[tuple[str, list[np.ndarray]]] = []
    rb = batch or 3

    def rand(inp: Any, n: int) -> np.ndarray:
        if inp.dtype == "int64":
            return rng.integers(0, inp.num_classes, (n, *inp.shape), dtype=np.int64)
        return rng.random((n, *inp.shape), dtype=np.float32)

    sets.append(("random", [rand(i, rb) for i in spec.inputs]))
    reals = [real_inputs(s) for s in shapes]
    for name in ("camera", "astronaut"):
        if any(name in r for r in reals):
            arrs = []
            for i, r in zip(spec.inputs, reals):
                arrs.append(r[name] if name in r else rand(i, 1))
            if batch and batch != 1:
                arrs = [np.repeat(a, batch, axis=0) for a in arrs]
            sets.append((name, arrs))
    for k, item in enumerate(user or []):
        items = item if isinstance(item, (list, tuple)) else [item]
        arrs = [np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t,
                           dtype=np.int64 if i.dtype == "int64" else np.float32)
                for t, i in zip(items, spec.inputs)]
        if len(arrs) != len(shapes):
            raise ExportError(f"check input {k} has {len(arrs)} tensor(s); the network takes "
                              f"{len(shapes)}")
        sets.append((f"user[{k}]", arrs))
    return sets


# --------------------------------------------------------------------------------------------
# the export
# --------------------------------------------------------------------------------------------
class _LayerCall(nn.Module):
    """One netspec layer as a module, so that every layer (Concat and Flatten included) gets a
    module scope in the exported graph; failures and mismatches are traced back through it."""

    def __init__(self, layer: str, op, mod: nn.Module | None) -> None:
        super().__init__()
        self.layer = layer
        self.op = op
        self.m = mod

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.op.apply(self.m, list(xs))


class Traceable(nn.Module):
    """The export view of a :class:`~spdnn.codegen.SpdnnModule`: the same submodules (shared,
    not copied), one :class:`_LayerCall` scope per layer, outputs as a tuple in netspec order.

    Attributes:
        scopes: module path -> netspec layer name.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        spec = module.spec
        self._inputs = [i.name for i in spec.inputs]
        self._outputs = [(o.name, o.from_) for o in spec.outputs]
        self._steps: list[tuple[str, str, list[str]]] = []
        self.scopes: dict[str, str] = {}
        ops = {lay.name: lay for lay in spec.layers}
        for name, attr, srcs in module._plan:
            ident = module._idents[name]
            mod = getattr(module, attr) if attr is not None else None
            key = ident
            while hasattr(self, key) and key not in self._modules:
                key = key + "_"
            self.add_module(key, _LayerCall(name, ops[name], mod))
            self._steps.append((key, name, srcs))
            self.scopes[key] = name

    def forward(self, *inputs: torch.Tensor):
        env = dict(zip(self._inputs, inputs))
        for key, name, srcs in self._steps:
            env[name] = self._modules[key](*[env[s] for s in srcs])
        outs = tuple(env[src] for _, src in self._outputs)
        return outs[0] if len(outs) == 1 else outs


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
    try:
        model = _torch_export(module, example, input_names, output_names, opset, dynamic_batch,
                              exporter)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - translate any exporter failure into one line
        raise _export_failure(exc, scopes or {}) from None
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
                          + _first_line(str(exc)), hint="a bug in the exporter; try --opset or "
                          "report it") from None
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
    return model, exporter


def export_onnx(spec: Netspec | str | Path, path: str | Path, opset: int | None = None,
                dynamic_batch: bool = False, fp16: bool = False,
                check_inputs: list | None = None, atol: float | None = None,
                exporter: Exporter = "dynamo", seed: int = 0,
                state_dict: dict | None = None) -> ExportReport:
    """Export a netspec (or a netspec file / checkpoint) to ONNX and check it.

    Args:
        spec: a :class:`~spdnn.spec.Netspec`, a netspec YAML path, or a checkpoint path.
        path: the ``.onnx`` file to write.
        opset: ONNX opset (default 20; below 18 uses the TorchScript exporter).
        dynamic_batch: make the batch axis symbolic (``N``); otherwise the batch is fixed to 1.
        fp16: export the network in half precision (inputs and outputs float16).
        check_inputs: extra inputs to compare on: a list of arrays/tensors (one network input)
            or of lists of them (several inputs), each with the batch axis.
        atol: tolerance (default 1e-4, or 1e-2 with ``fp16``); see the module docstring.
        exporter: ``"dynamo"`` (default) or ``"torchscript"``.
        seed: seed of the random weights (when the netspec has no trained weights) and inputs.
        state_dict: weights to load (a checkpoint's are used automatically).

    Returns:
        An :class:`ExportReport`. The file is written even when parity fails (so it can be
        inspected), then :class:`ExportError` is raised.

    Raises:
        ExportError: export, checker, onnxruntime or parity failed (one line naming the layer).
        SpecError, ShapeError: the netspec is invalid.
    """
    from spdnn.codegen import build_module
    from spdnn.shapes import infer

    spec, states, file = load_source(spec)
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
            problem = problem or _first_line(str(exc))
    if problem:
        raise ExportError(f"the checkpoint's weights do not fit its netspec: {problem}",
                          file=file)
    layer_ops = {lay.name: lay.op_name for lay in spec.layers}
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
        model, used = export_module(traced, example, path, in_names, out_names, opset,
                                    dynamic_batch, exporter, meta, scopes)
    except ExportError as exc:
        exc.file = exc.file or file
        _name_op(exc, layer_ops)
        raise
    seconds = time.perf_counter() - t0
    report = ExportReport(path=Path(path), netspec=spec.name, netspec_hash=spec_hash(spec),
                          opset=next(o.version for o in model.opset_import
                                     if o.domain in ("", "ai.onnx")),
                          exporter=used, dynamic_batch=dynamic_batch, fp16=fp16, inputs=ins,
                          outputs=outs, atol=atol, metadata=meta, export_seconds=seconds,
                          size_bytes=Path(path).stat().st_size)
    if used != exporter:
        report.notes.append(f"opset {report.opset} < {DYNAMO_MIN_OPSET}: used the TorchScript "
                            "exporter")
    try:
        sess = ort_session(model.SerializeToString())
    except Exception as exc:  # noqa: BLE001
        raise _ort_failure(exc, model, scopes, layer_ops, file, "load") from None
    for label, arrs in _check_sets(spec, None if dynamic_batch else 1, check_inputs, seed):
        if not dynamic_batch and any(a.shape[0] != 1 for a in arrs):
            arrs = [a[:1] for a in arrs]
        feeds = {n: a if a.dtype == np.int64 else a.astype(np.float16 if fp16 else np.float32)
                 for n, a in zip(in_names, arrs)}
        with torch.inference_mode():
            ref = module(*(torch.from_numpy(a if a.dtype == np.int64 else a.astype(np.float32))
                           for a in (feeds[n] for n in in_names)))
        refs = [ref[o] for o in out_names] if isinstance(ref, dict) else [ref]
        try:
            got = sess.run(out_names, feeds)
        except Exception as exc:  # noqa: BLE001
            raise _ort_failure(exc, model, scopes, layer_ops, file, "run") from None
        abs_err, rel_err = 0.0, 0.0
        for r, g in zip(refs, got):
            r64 = r.double().numpy()
            diff = float(np.max(np.abs(r64 - g.astype(np.float64)))) if r64.size else 0.0
            scale = max(1.0, float(np.max(np.abs(r64)))) if r64.size else 1.0
            abs_err = max(abs_err, diff)
            rel_err = max(rel_err, diff / scale)
        check = ParityCheck(label, int(arrs[0].shape[0]), abs_err, rel_err, rel_err <= atol)
        report.checks.append(check)
        if not check.ok:
            where = _locate_mismatch(module, model, feeds, in_names, atol)
            raise ExportError(
                f"onnxruntime differs from torch on {label} input: max abs error {abs_err:.3g} "
                f"> {atol:g}" + (f"; first differing layer: {where}" if where else ""),
                file=file, hint=f"the ONNX file was written to {path} for inspection")
    return report


def ort_session(model: bytes | str | Path, threads: int | None = None,
                providers: list[str] | None = None, spinning: bool = True):
    """An onnxruntime session with all graph optimizations on (CPU unless ``providers``).

    ``spinning=False`` makes idle intra-op threads sleep instead of busy-waiting
    (``session.intra_op.allow_spinning = 0``), which is much faster on shared or virtual CPUs.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    src = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(src, opts, providers=providers or ["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------------
# failures -> one line naming the op
# --------------------------------------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLASS = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>")
_ATEN = re.compile(r"\b(?:aten|torch\.ops\.aten|prims|torchvision)(?:::|\.)([A-Za-z_][\w]*)")


def _first_line(text: str, limit: int = 240) -> str:
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
            return _first_line(m.group(1))
    deepest = _chain(exc)[-1]
    return f"{type(deepest).__name__}: {_first_line(str(deepest))}"


def _layer_from_traceback(exc: BaseException, scopes: dict[str, str]) -> str | None:
    """The netspec layer the exporter was working on when it failed.

    torch.export failures (step 1) happen inside :class:`_LayerCall` ``forward``; ONNX
    translation failures (step 3) happen while a ``torch.fx.Node`` is being translated, and
    its ``nn_module_stack`` names the layer's module scope.
    """
    fwd = _LayerCall.forward.__code__
    found = None
    for e in _chain(exc):
        tb = e.__traceback__
        while tb is not None:
            loc = tb.tb_frame.f_locals
            if tb.tb_frame.f_code is fwd and isinstance(loc.get("self"), _LayerCall):
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


def _export_failure(exc: BaseException, scopes: dict[str, str]) -> ExportError:
    layer = _layer_from_traceback(exc, scopes)
    text = "\n".join(_ANSI.sub("", str(e)) for e in _chain(exc))
    aten = _ATEN.findall(text)
    err = ExportError(f"torch.onnx export failed: {_summary(exc)}",
                      hint="replace that layer, or try another --opset or the torchscript "
                      "exporter")
    err._layer = layer  # type: ignore[attr-defined]
    err._aten = aten[0] if aten else None  # type: ignore[attr-defined]
    return err


def _name_op(err: ExportError, layer_ops: dict[str, str]) -> None:
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


def _node_layer(node, scopes: dict[str, str]) -> str | None:
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


def _ort_failure(exc: BaseException, model, scopes: dict[str, str],
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
        layer = _node_layer(node, scopes)
        where = f"ONNX op {node.op_type} (node '{node.name}'"
        where += f", layer '{layer}' ({layer_ops.get(layer, '?')}))" if layer else ")"
        where += ": "
    verb = "cannot load" if stage == "load" else "failed to run"
    return ExportError(f"{where}onnxruntime {verb} the exported model: {_first_line(text)}",
                       file=file, hint="try another --opset, or check that onnxruntime supports "
                       "this op")


def _locate_mismatch(module: nn.Module, model, feeds: dict[str, np.ndarray],
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
        layer = _node_layer(node, view.scopes)
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


def default_path(source: str | Path | Netspec, suffix: str = ".onnx") -> Path:
    """``model.yaml`` -> ``model.onnx`` (a Netspec -> ``<name>.onnx`` in the current folder)."""
    if isinstance(source, Netspec):
        return Path(re.sub(r"\W+", "_", source.name) + suffix)
    return Path(source).with_suffix(suffix)


def temp_onnx(spec: Netspec, dynamic_batch: bool = True, **kw) -> tuple[Path, ExportReport]:
    """Export to a temporary file (for benchmarks); returns its path and the report."""
    d = Path(tempfile.mkdtemp(prefix="spdnn_onnx_"))
    p = d / (re.sub(r"\W+", "_", spec.name) + ".onnx")
    return p, export_onnx(spec, p, dynamic_batch=dynamic_batch, **kw)
