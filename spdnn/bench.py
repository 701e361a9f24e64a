"""Bench stage: latency, throughput and memory of netspecs on torch and onnxruntime.

:func:`bench` times each model with each runtime, device and batch size: a warm-up, then timed
runs for ``min_time`` seconds (and at least ``min_runs`` runs) per model, split into rounds that
visit the models in turn, so that a slow spell of a shared machine hits all models alike and
ratios from the same run stay fair. Every row reports p50/p90/p99
latency, throughput (images/s at the p50 latency), peak memory, parameters, MACs and the
achieved GMAC/s. :func:`matmul_ceiling` measures the machine's own dense fp32 matmul rate in the
same run, the ceiling those GMAC/s are to be read against.

Runtimes:

* ``torch``: eager PyTorch under ``torch.no_grad()``.
* ``torch-inference``: eager PyTorch under ``torch.inference_mode()``.
* ``torch-cl``: as ``torch-inference`` with the model and 4-D inputs in channels-last memory
  format (the trainer's default; much faster for the thin convolutions of merged networks).
* ``torch-compile``: ``torch.compile`` (inductor); compilation happens during the warm-up and is
  not timed. When it fails on this machine (no C++ compiler, ...) the row is marked
  ``unavailable`` with the reason.
* ``ort``: onnxruntime with all graph optimizations on; the CPU execution provider on
  ``device="cpu"``, the CUDA one on ``device="cuda"`` (unavailable when onnxruntime has no CUDA
  provider). The model is exported with :func:`spdnn.export.export_onnx` (dynamic batch, parity
  checked against torch first).

Peak memory (``peak_mem_mb``): on CPU, the process's peak resident set size (Linux ``VmHWM``,
reset through ``/proc/self/clear_refs`` before each measurement) during the warm-up and the
timed runs, minus the resident size just before them: the extra memory inference needs
(activations, workspaces, allocator growth) beyond the weights already loaded. Memory that the
allocator kept from an earlier measurement is reused and not counted again, so read it as a
lower bound. Where ``VmHWM`` cannot be reset the ``getrusage`` maximum RSS delta is used (zero
unless the process peak grows). On CUDA: ``torch.cuda.max_memory_allocated`` minus the memory
allocated before (torch runtimes only; onnxruntime's CUDA arena is not visible to torch).

Threads that busy-wait: on shared or virtual CPUs (such as this project's 2-core machines) an
idle thread that spins steals the core the working thread needs. Measured here: torch with 2
threads took ~260 ms instead of ~11 ms per iris image with OpenMP's default/active wait policy,
and onnxruntime with spinning on was 2x slower (4x for several sessions run one after
another). So onnxruntime sessions are created with spinning off (``ort_spinning=False``), and
the benchmark scripts set ``OMP_WAIT_POLICY=PASSIVE`` before torch is imported (OpenMP reads it
only then; :func:`machine_info` records it).

The SPDNN comparison (:func:`spdnn_targets`): the merged network against (a) each parent alone,
(b) all parents run one after another (``sequential``), and (c) all parents as one module that
runs every parent on the same input and concatenates their outputs (``parallel``,
:class:`ParallelParents`, the naive ensemble SPDNN replaces). :func:`ratios` divides every
target's numbers by the reference's, measured in the same run.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from spdnn.errors import SpdnnError
from spdnn.io import save_figure, write_atomic
from spdnn.spec import Netspec, example_inputs

__all__ = ["RUNTIMES", "BenchError", "BenchRow", "ParallelParents", "SequentialParents",
           "Target", "bench", "machine_info", "matmul_ceiling", "plot", "ratios",
           "ratios_markdown", "spdnn_targets", "to_json", "to_markdown"]

RUNTIMES = ("torch", "torch-inference", "torch-cl", "torch-compile", "ort")
Kind = Literal["single", "sequential", "parallel"]


class BenchError(SpdnnError):
    """A benchmark cannot run as asked (unknown runtime or device, bad batch list...)."""


# --------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------
@dataclass
class Target:
    """What to time: one network, or several networks as a sequence or as one parallel module."""

    name: str
    specs: list[Netspec]
    kind: Kind = "single"

    @property
    def params(self) -> int:
        from spdnn.shapes import infer
        return sum(infer(s).params for s in self.specs)

    @property
    def macs(self) -> int:
        from spdnn.shapes import infer
        return sum(infer(s).macs for s in self.specs)


class ParallelParents(nn.Module):
    """The naive ensemble: every parent runs on the same input(s); their outputs are
    concatenated on the channel axis (per output name when the parents have several)."""

    def __init__(self, parents: Sequence[nn.Module], output_names: Sequence[str] | None = None):
        super().__init__()
        self.parents = nn.ModuleList(parents)
        self.output_names = list(output_names or [])

    def forward(self, *inputs: torch.Tensor):
        outs = [p(*inputs) for p in self.parents]
        if isinstance(outs[0], dict):
            cat = {k: torch.cat([o[k] for o in outs], dim=1) for k in outs[0]}
            names = self.output_names or list(cat)
            return tuple(cat[k] for k in names)
        return torch.cat(outs, dim=1)


class SequentialParents(nn.Module):
    """All parents one after another on the same input(s); returns the list of their outputs."""

    def __init__(self, parents: Sequence[nn.Module]):
        super().__init__()
        self.parents = nn.ModuleList(parents)

    def forward(self, *inputs: torch.Tensor) -> list:
        return [p(*inputs) for p in self.parents]


def spdnn_targets(parents: Sequence[Netspec], merged: Netspec | None = None,
                  params: Any = "like-each", merged_name: str = "merged") -> dict[str, Target]:
    """The SPDNN comparison: the merged network (merged here unless given), each parent,
    the parents in sequence and the parents as one parallel module."""
    parents = list(parents)
    if merged is None:
        from spdnn.graph.merge import merge
        merged = merge(parents, params=params).spec
    out = {merged_name: Target(merged_name, [merged])}
    for p in parents:
        out[p.name] = Target(p.name, [p])
    out["parents-sequential"] = Target("parents-sequential", parents, "sequential")
    out["parents-parallel"] = Target("parents-parallel", parents, "parallel")
    return out


def _as_target(name: str, value: Netspec | Target | Sequence[Netspec]) -> Target:
    if isinstance(value, Target):
        return value
    if isinstance(value, Netspec):
        return Target(name, [value])
    return Target(name, list(value), "parallel")


# --------------------------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------------------------
@dataclass
class BenchRow:
    """One (model, runtime, device, batch) measurement."""

    model: str
    kind: str
    runtime: str
    device: str
    batch: int
    threads: int
    params: int
    macs: int  # per image
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    mean_ms: float = math.nan
    runs: int = 0
    throughput: float = math.nan  # images/s at the p50 latency
    gmacs: float = math.nan  # achieved GMAC/s at the p50 latency
    peak_mem_mb: float | None = None
    status: str = "ok"
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------
def _vm(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class _PeakMemory:
    """Peak extra memory over a block; see the module docstring for what is measured."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.mb: float | None = None

    def __enter__(self) -> _PeakMemory:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.hwm = False
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.hwm = _vm("VmHWM") is not None
        except OSError:
            pass
        self.base = _vm("VmRSS") if self.hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.hwm:
            peak = _vm("VmHWM") or 0
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.mb = max(0, peak - (self.base or 0)) / 2**20


# --------------------------------------------------------------------------------------------
# runners
# --------------------------------------------------------------------------------------------
class _Unavailable(Exception):
    pass


def _torch_module(target: Target, seed: int) -> nn.Module:
    from spdnn.codegen import build_module

    torch.manual_seed(seed)
    mods = [build_module(s).eval() for s in target.specs]
    if target.kind == "single":
        return mods[0]
    if target.kind == "sequential":
        return SequentialParents(mods).eval()
    return ParallelParents(mods, [o.name for o in target.specs[0].outputs]).eval()


def _ort_runner(target: Target, device: str, threads: int, seed: int, workdir: Path,
                spinning: bool = False):
    """A function ``feeds -> outputs`` running the target on onnxruntime."""
    import onnxruntime as ort

    from spdnn.export import export_module, export_onnx, ort_session

    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise _Unavailable("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    workdir.mkdir(parents=True, exist_ok=True)
    sessions = []
    if target.kind == "parallel":
        mod = _torch_module(target, seed)
        spec = target.specs[0]
        example = tuple(example_inputs(spec, 2))
        path = workdir / f"{_slug(target.name)}.onnx"
        export_module(mod, example, path, [i.name for i in spec.inputs],
                      [o.name for o in spec.outputs], dynamic_batch=True)
        with torch.inference_mode():
            want = mod(*example)
        sess = ort_session(path, threads, providers, spinning)
        got = sess.run(None, {i.name: e.numpy() for i, e in zip(spec.inputs, example)})
        want = want if isinstance(want, tuple) else (want,)
        err = max(float(np.max(np.abs(w.numpy() - g))) for w, g in zip(want, got))
        if err > 1e-3:
            raise BenchError(f"the parallel parents' ONNX export differs from torch by {err:.3g}")
        sessions.append(sess)
    else:
        for k, spec in enumerate(target.specs):
            torch.manual_seed(seed)
            path = workdir / f"{_slug(target.name)}_{k}.onnx"
            export_onnx(spec, path, dynamic_batch=True, seed=seed)
            sessions.append(ort_session(path, threads, providers, spinning))
    if len(sessions) == 1:
        sess = sessions[0]
        return lambda feeds: sess.run(None, feeds)
    return lambda feeds: [s.run(None, feeds) for s in sessions]


def _timeit(fn: Callable[[], Any], warmup: int, min_time: float, min_runs: int,
            max_runs: int, sync: Callable[[], None]) -> np.ndarray:
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs
                                     or time.perf_counter() - start < min_time):
        t0 = time.perf_counter_ns()
        fn()
        sync()
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return np.asarray(times)


def _fill(row: BenchRow, times: np.ndarray, mem: float | None) -> None:
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    row.p50_ms, row.p90_ms, row.p99_ms = float(p50), float(p90), float(p99)
    row.mean_ms = float(times.mean())
    row.runs = int(times.size)
    row.throughput = row.batch / (row.p50_ms / 1e3)
    row.gmacs = row.macs * row.batch / (row.p50_ms / 1e3) / 1e9
    row.peak_mem_mb = mem


def _parse_list(value: str | Iterable, kind=str) -> list:
    if isinstance(value, str):
        return [kind(v.strip()) for v in value.split(",") if v.strip()]
    if isinstance(value, (int, float)):
        return [kind(value)]
    return [kind(v) for v in value]


def bench(specs: dict[str, Netspec | Target | Sequence[Netspec]],
          batches: Sequence[int] | str = (1, 8, 32),
          runtimes: Sequence[str] | str = ("torch", "torch-inference", "ort"),
          threads: int | None = None, device: str | Sequence[str] = "cpu", warmup: int = 3,
          min_time: float = 1.0, min_runs: int = 5, max_runs: int = 10_000, seed: int = 0,
          workdir: str | Path | None = None, ort_spinning: bool = False, rounds: int = 5,
          progress: Callable[[BenchRow], None] | None = None) -> list[BenchRow]:
    """Time every model with every runtime, device and batch size.

    Args:
        specs: name -> a netspec, a :class:`Target`, or a list of netspecs (timed as one
            parallel module).
        batches: batch sizes (or ``"1,8,32"``).
        runtimes: any of :data:`RUNTIMES` (or a comma-separated string).
        threads: intra-op threads for torch and onnxruntime (default: torch's current setting).
        device: ``"cpu"``, ``"cuda"`` or both.
        warmup: untimed runs first (torch.compile compiles here).
        min_time, min_runs, max_runs: timed runs go on until both ``min_time`` seconds and
            ``min_runs`` runs have passed, at most ``max_runs``.
        seed: seed of the random weights and inputs.
        workdir: where the ONNX files go (default: a temporary folder).
        rounds: the timed runs of one runtime and batch are split into this many rounds that
            visit every model in turn (interleaved), so that ratios measured in the same run
            are not skewed by a slow spell of a shared machine.
        ort_spinning: let onnxruntime's idle threads busy-wait (its default). Off by default:
            on shared or virtual CPUs spinning threads steal the cores doing the work.
        progress: called with every finished row.

    Returns:
        One :class:`BenchRow` per model x runtime x device x batch; rows that could not run
        have ``status = "unavailable: <reason>"``.

    Raises:
        BenchError: an unknown runtime or device, or an empty/invalid batch list.
    """
    import tempfile

    batches = _parse_list(batches, int)
    runtimes = _parse_list(runtimes, str)
    devices = _parse_list(device, str)
    if not batches or any(b < 1 for b in batches):
        raise BenchError(f"batch sizes must be positive integers, got {batches}",
                         hint="e.g. --batch 1,8,32")
    for r in runtimes:
        if r not in RUNTIMES:
            raise BenchError(f"unknown runtime '{r}'", hint=f"choose from {', '.join(RUNTIMES)}")
    for d in devices:
        if d not in ("cpu", "cuda"):
            raise BenchError(f"unknown device '{d}'", hint="choose cpu or cuda")
    targets = [_as_target(n, v) for n, v in specs.items()]
    old_threads = torch.get_num_threads()
    threads = threads or old_threads
    torch.set_num_threads(threads)
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="spdnn_bench_"))
    rows: list[BenchRow] = []
    try:
        for dev in devices:
            for rt in runtimes:
                rows += _bench_runtime(targets, rt, dev, batches, threads, seed, work,
                                       ort_spinning, warmup, min_time, min_runs, max_runs,
                                       rounds, progress)
    finally:
        torch.set_num_threads(old_threads)
    order = {t.name: i for i, t in enumerate(targets)}
    pos = {(d, r): i for i, (d, r) in enumerate((d, r) for d in devices for r in runtimes)}
    rows.sort(key=lambda r: (order[r.model], pos[(r.device, r.runtime)], batches.index(r.batch)))
    return rows


def _bench_runtime(targets: list[Target], rt: str, dev: str, batches: list[int], threads: int,
                   seed: int, work: Path, ort_spinning: bool, warmup: int, min_time: float,
                   min_runs: int, max_runs: int, rounds: int,
                   progress: Callable[[BenchRow], None] | None) -> list[BenchRow]:
    """One runtime on one device: every target and batch, the targets interleaved."""
    from spdnn.export import ExportError

    def row(t: Target, b: int, status: str = "ok") -> BenchRow:
        return BenchRow(t.name, t.kind, rt, dev, b, threads, params=t.params, macs=t.macs,
                        status=status)

    out: list[BenchRow] = []
    runners: dict[str, Any] = {}
    for t in targets:
        if dev == "cuda" and not torch.cuda.is_available() and rt != "ort":
            runners[t.name] = "unavailable: no CUDA device"
            continue
        try:
            runners[t.name] = _runner(t, rt, dev, threads, seed, work, ort_spinning)
        except _Unavailable as exc:
            runners[t.name] = f"unavailable: {exc}"
        except ExportError:
            raise
    for b in batches:
        live: dict[str, tuple[Callable[[], Any], Callable[[], None]]] = {}
        done: dict[str, BenchRow] = {}
        for t in targets:
            r = runners[t.name]
            if isinstance(r, str):
                done[t.name] = row(t, b, r)
                continue
            make, sync = r
            gen = torch.Generator().manual_seed(seed)
            xs = example_inputs(t.specs[0], b, generator=gen)
            live[t.name] = (make([i.name for i in t.specs[0].inputs], xs), sync)
        # warm-up (torch.compile compiles here), then rounds that visit every target in turn,
        # so that a slow spell of a shared machine hits all targets alike
        samples: dict[str, list[np.ndarray]] = {n: [] for n in live}
        mem: dict[str, float | None] = {n: None for n in live}
        for name in list(live):
            fn, sync = live[name]
            try:
                with _PeakMemory(dev) as pm:
                    _timeit(fn, warmup, 0.0, 0, 0, sync)
                mem[name] = pm.mb
            except Exception as exc:  # noqa: BLE001 - torch.compile & co.
                if rt != "torch-compile":
                    raise
                t = next(x for x in targets if x.name == name)
                done[name] = row(t, b, f"unavailable: {_one_line(exc)}")
                del live[name]
        names = list(live)
        per_round = max(1, math.ceil(min_runs / rounds))
        for k in range(rounds):
            for name in names[k % max(1, len(names)):] + names[:k % max(1, len(names))]:
                fn, sync = live[name]
                with _PeakMemory(dev) as pm:
                    samples[name].append(_timeit(fn, 0, min_time / rounds, per_round,
                                                 max(1, max_runs // rounds), sync))
                mem[name] = max(mem[name] or 0.0, pm.mb or 0.0)
        for t in targets:
            if t.name in live:
                r = row(t, b)
                _fill(r, np.concatenate(samples[t.name]), mem[t.name])
                done[t.name] = r
            out.append(done[t.name])
            if progress:
                progress(done[t.name])
        del live
    del runners  # free sessions and compiled graphs before the next runtime
    gc.collect()
    return out


def _runner(target: Target, rt: str, dev: str, threads: int, seed: int, work: Path,
            ort_spinning: bool = False):
    """``(make, sync)``: ``make(input_names, tensors)`` returns a zero-argument timed call."""
    sync = torch.cuda.synchronize if dev == "cuda" and torch.cuda.is_available() else _noop
    if rt == "ort":
        run = _ort_runner(target, dev, threads, seed, work, ort_spinning)

        def make(names, xs):
            feeds = {n: x.numpy() for n, x in zip(names, xs)}
            return lambda: run(feeds)
        return make, _noop
    mod = _torch_module(target, seed).to(dev)
    fmt = torch.channels_last if rt == "torch-cl" else torch.contiguous_format
    if rt == "torch-cl":
        mod = mod.to(memory_format=fmt)
    if rt == "torch-compile":
        try:
            mod = torch.compile(mod)
        except Exception as exc:  # noqa: BLE001
            raise _Unavailable(_one_line(exc)) from None
    ctx = torch.no_grad if rt == "torch" else torch.inference_mode

    def make(names, xs):
        xs = [x.to(dev).contiguous(memory_format=fmt) if x.dim() == 4 else x.to(dev) for x in xs]

        def call():
            with ctx():
                return mod(*xs)
        return call
    return make, sync


def _noop() -> None:
    return None


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit] + ("..." if len(text) > limit else "")


def _slug(name: str) -> str:
    import re
    return re.sub(r"\W+", "_", name)[:80]


# --------------------------------------------------------------------------------------------
# the ceiling
# --------------------------------------------------------------------------------------------
def matmul_ceiling(n: int = 1024, threads: int | None = None, device: str = "cpu",
                   min_time: float = 0.5, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The machine's dense matmul rate (``n x n @ n x n``, best run) in GFLOP/s and GMAC/s."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.rand(n, n, generator=gen, dtype=dtype).to(device)
        b = torch.rand(n, n, generator=gen, dtype=dtype).to(device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        times = _timeit(lambda: torch.mm(a, b), 2, min_time, 5, 10_000, sync)
    finally:
        torch.set_num_threads(old)
    best = float(times.min()) / 1e3
    gflops = 2 * n**3 / best / 1e9
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "device": device,
            "threads": threads or old, "best_ms": best * 1e3, "gflops": gflops,
            "gmacs": gflops / 2}


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import onnxruntime

    from spdnn import __version__
    info = {"spdnn": __version__, "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpu": _cpu_name(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --------------------------------------------------------------------------------------------
# ratios and writers
# --------------------------------------------------------------------------------------------
def ratios(rows: Sequence[BenchRow], reference: str) -> list[dict[str, Any]]:
    """Every model's p50 latency, parameters and MACs divided by the reference model's, for
    each (runtime, device, batch) measured in the same run; plus onnxruntime/torch ratios."""
    ref = {(r.runtime, r.device, r.batch): r for r in rows if r.model == reference and r.ok}
    out = []
    for r in rows:
        base = ref.get((r.runtime, r.device, r.batch))
        if base is None or not r.ok or r.model == reference:
            continue
        out.append({"model": r.model, "vs": reference, "runtime": r.runtime, "device": r.device,
                    "batch": r.batch, "latency": r.p50_ms / base.p50_ms,
                    "params": r.params / max(1, base.params), "macs": r.macs / max(1, base.macs)})
    return out


def runtime_ratios(rows: Sequence[BenchRow], baseline: str = "torch") -> list[dict[str, Any]]:
    """p50 latency of every runtime divided by ``baseline``'s (same model, device, batch)."""
    base = {(r.model, r.device, r.batch): r for r in rows if r.runtime == baseline and r.ok}
    out = []
    for r in rows:
        b = base.get((r.model, r.device, r.batch))
        if b is None or not r.ok or r.runtime == baseline:
            continue
        out.append({"model": r.model, "runtime": r.runtime, "vs": baseline, "device": r.device,
                    "batch": r.batch, "latency": r.p50_ms / b.p50_ms})
    return out


COLUMNS = ["model", "kind", "runtime", "device", "batch", "threads", "p50 ms", "p90 ms",
           "p99 ms", "img/s", "peak MB", "params", "MMAC/img", "GMAC/s", "status"]


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def to_markdown(rows: Sequence[BenchRow], ceiling: dict | None = None) -> str:
    """The rows as a markdown table (plus the matmul ceiling line when given)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in rows:
        cells = [r.model, r.kind, r.runtime, r.device, str(r.batch), str(r.threads),
                 _fmt(r.p50_ms), _fmt(r.p90_ms), _fmt(r.p99_ms), _fmt(r.throughput),
                 _fmt(r.peak_mem_mb), f"{r.params:,}", _fmt(r.macs / 1e6), _fmt(r.gmacs),
                 r.status.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if ceiling:
        text += (f"\nReference ceiling: dense fp32 matmul {ceiling['n']}x{ceiling['n']} on "
                 f"{ceiling['device']} with {ceiling['threads']} thread(s): "
                 f"{ceiling['gflops']:.1f} GFLOP/s = {ceiling['gmacs']:.1f} GMAC/s.\n")
    return text


def ratios_markdown(rat: Sequence[dict[str, Any]]) -> str:
    """A ratio table (from :func:`ratios`) as markdown."""
    lines = ["| model | vs | runtime | device | batch | latency ratio | params ratio | "
             "MACs ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in rat:
        lines.append(f"| {r['model']} | {r['vs']} | {r['runtime']} | {r['device']} | "
                     f"{r['batch']} | {r['latency']:.2f} | {r['params']:.2f} | "
                     f"{r['macs']:.2f} |")
    return "\n".join(lines) + "\n"


def to_json(rows: Sequence[BenchRow], path: str | Path | None = None,
            **extra: Any) -> dict[str, Any]:
    """The rows (and any extra sections, e.g. ``ceiling=...``) as a JSON-ready dict; written to
    ``path`` when given."""
    data = {"machine": machine_info(), "rows": [_clean(asdict(r)) for r in rows], **extra}
    if path is not None:
        write_atomic(path, json.dumps(data, indent=1) + "\n", what="bench results")
    return data


def _clean(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def plot(rows: Sequence[BenchRow], path: str | Path, title: str = "spdnn bench") -> Path | None:
    """Throughput against batch size, one panel per runtime/device, one line per model.

    Each point is the throughput at the p50 latency; its whisker reaches down to the
    throughput at the p90 latency (the slowest 10% of the timed runs are slower still), so a
    noisy measurement shows as a long whisker. The reference (the first model; the merged
    network in SPDNN comparisons) is black and thicker; every other model has its own colour
    (matplotlib's ``tab10``, ten unpaired hues, then again with another line style) and marker,
    so unrelated models never look like a light/dark pair. Points of one batch size are
    spread slightly sideways so that whiskers do not hide each other.

    Returns the path, or ``None`` when matplotlib is not installed.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - optional dependency
        return None
    ok = [r for r in rows if r.ok]
    panels = sorted({(r.runtime, r.device) for r in ok})
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.2), squeeze=False,
                             sharey=True)
    models = list(dict.fromkeys(r.model for r in ok))
    colors = plt.get_cmap("tab10").colors
    markers = "osD^vP*Xh<>"
    styles = ["-", "--", ":", "-."]
    spread = 0.04  # log2 units between neighbouring models at one batch size
    for ax, (rt, dev) in zip(axes[0], panels):
        for k, m in enumerate(models):
            pts = sorted((r.batch, r.throughput, r.batch / (r.p90_ms / 1e3)) for r in ok
                         if r.model == m and r.runtime == rt and r.device == dev)
            if not pts:
                continue
            first = k == 0  # the reference (the merged network in SPDNN comparisons)
            j = k - 1
            shift = 2 ** (spread * (k - (len(models) - 1) / 2))
            xs = [p[0] * shift for p in pts]
            ys = [p[1] for p in pts]
            low = [max(0.0, p[1] - p[2]) if math.isfinite(p[2]) else 0.0 for p in pts]
            ax.errorbar(xs, ys, yerr=[low, [0.0] * len(pts)], label=m[:40],
                        color="black" if first else colors[j % len(colors)],
                        marker="o" if first else markers[j % len(markers)],
                        linestyle="-" if first else styles[(j // len(colors)) % len(styles)],
                        linewidth=2.4 if first else 1.3, markersize=6 if first else 5,
                        capsize=2.5, elinewidth=1.0, zorder=3 if first else 2)
        ax.set_xscale("log", base=2)
        bs = sorted({r.batch for r in ok})
        ax.set_xticks(bs)
        ax.set_xticklabels([str(b) for b in bs])
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_title(f"{rt} ({dev})")
        ax.set_xlabel("batch size")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("images / s at p50 latency\n(whisker: down to p90 latency)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                       borderaxespad=0.0)  # beside the panels, never over a line
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=150, what="bench plot")
