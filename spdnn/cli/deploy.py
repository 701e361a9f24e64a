"""``spdnn export`` and ``spdnn bench``: the deployment commands.

:func:`register` adds both commands to the main typer app (see :mod:`spdnn.cli`). Every user
error is a :class:`~spdnn.errors.SpdnnError`, which the main CLI prints as one line with exit
code 2.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from spdnn.cli.console import out, plural
from spdnn.errors import SpdnnError
from spdnn.io import BEST, LAST, check_outputs, write_atomic

__all__ = ["register"]


def _parse_ints(text: str, what: str) -> list[int]:
    try:
        vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise SpdnnError(f"{what} must be comma-separated integers, got '{text}'",
                         hint="e.g. --batch 1,8,32") from None
    if not vals or any(v < 1 or v > 65536 for v in vals):
        raise SpdnnError(f"{what} must be integers from 1 to 65536, got '{text}'",
                         hint="e.g. --batch 1,8,32")
    return vals


def _parse_words(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    vals = [v.strip() for v in text.split(",") if v.strip()]
    for v in vals:
        if v not in allowed:
            raise SpdnnError(f"unknown {what} '{v}'", hint=f"choose from {', '.join(allowed)}")
    if not vals:
        raise SpdnnError(f"no {what} given", hint=f"choose from {', '.join(allowed)}")
    return vals


def _load_spec(path: Path, model: str | None = None):
    """The netspec of a netspec file, checkpoint or run folder; ``model`` picks one network of
    a multi-network checkpoint (it is ignored for netspec files)."""
    from spdnn.export import load_source

    if Path(path).suffix.lower() in (".yaml", ".yml"):
        model = None
    return load_source(path, model=model)[0]


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------
def export(
    source: Annotated[Path, typer.Argument(
        help="A netspec (.yaml), a training checkpoint (best.pt/last.pt) or a run folder.",
        show_default=False)],
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", metavar="FILE",
        help="The ONNX file to write (default: SOURCE with .onnx).")] = None,
    opset: Annotated[int | None, typer.Option(
        "--opset", min=7, max=30, metavar="N", help="ONNX opset version (default 20). Below 18 the TorchScript "
        "exporter is used, as torch's newer exporter only writes opset 18 and up.")] = None,
    dynamic_batch: Annotated[bool, typer.Option(
        "--dynamic-batch", help="Make the batch axis symbolic ('N'); otherwise it is fixed "
        "to 1.")] = False,
    fp16: Annotated[bool, typer.Option(
        "--fp16", help="Export in half precision (float16 weights, inputs and outputs). Parity "
        "is checked against the float32 network with tolerance 1e-2.")] = False,
    atol: Annotated[float | None, typer.Option(
        "--atol", min=0.0, help="Parity tolerance: max |onnx - torch| <= atol * max(1, "
        "max|torch|) (default 1e-4, or 1e-2 with --fp16).")] = None,
    exporter: Annotated[str, typer.Option(
        "--exporter", metavar="dynamo|torchscript", help="'dynamo' (torch.export-based, the default) or 'torchscript' "
        "(deprecated in torch, much faster to export).")] = "dynamo",
    report: Annotated[Path | None, typer.Option(
        "--report", metavar="FILE",
        help="Also write the export report (errors, shapes, metadata) as JSON.")]
    = None,
    model: Annotated[str | None, typer.Option(
        "--model", metavar="NAME", help="Which network of a multi-network checkpoint to export: a recipe "
        "with several models (e.g. a GAN's 'generator' and 'discriminator') stores all of "
        "them in one checkpoint. Not needed when the checkpoint holds one network; the "
        "error lists the names when it is missing.", show_default=False)] = None,
) -> None:
    """Export a network to ONNX and check it against PyTorch.

    The network is built from the netspec (weights from the checkpoint when
    given, else random), exported with torch.onnx, validated with onnx.checker
    (full check), then run by onnxruntime on random inputs and on real photos
    (scikit-image's camera and astronaut, resized to the input) and compared
    with torch. The file carries metadata: netspec name and hash, spdnn
    version, input/output names and shapes.

    A failure is one line naming the layer and op: an op torch.onnx cannot
    export, a model onnxruntime cannot run, or outputs that differ (traced to
    the first layer that differs).

    Checkpoints are read safely (tensors and plain data only); a file that
    would run code when loaded is refused. No output may overwrite an input.

    Examples:

      spdnn export netspecs/iris/appendix_d/published.yaml -o iris.onnx

      spdnn export runs/iris/best.pt -o iris.onnx --dynamic-batch

      spdnn export merged.yaml -o merged_fp16.onnx --fp16

      spdnn export runs/dcgan_digits --model generator -o generator.onnx
    """
    from spdnn.extras import require

    require("export", "spdnn export")
    from spdnn.export import default_path, export_onnx

    if exporter not in ("dynamo", "torchscript"):
        raise SpdnnError(f"unknown exporter '{exporter}'", hint="choose dynamo or torchscript")
    path = output or default_path(source, model=model)
    check_outputs(_inputs_of(source), [path, report])
    t0 = time.perf_counter()
    rep = export_onnx(source, path, opset=opset, dynamic_batch=dynamic_batch, fp16=fp16,
                      atol=atol, exporter=exporter, model=model)  # type: ignore[arg-type]
    dt = time.perf_counter() - t0
    t = Table(title=f"onnxruntime vs torch ({rep.netspec})", title_justify="left")
    for col, just in (("input", "left"), ("batch", "right"), ("max abs err", "right"),
                      ("max rel err", "right"), ("ok", "center")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for c in rep.checks:
        t.add_row(c.input, str(c.batch), f"{c.max_abs_err:.2e}", f"{c.max_rel_err:.2e}",
                  "yes" if c.ok else "NO")
    out.print(t)
    io = Table(title="graph inputs and outputs", title_justify="left")
    io.add_column("")
    io.add_column("name")
    io.add_column("shape")
    io.add_column("dtype")
    for kind, items in (("input", rep.inputs), ("output", rep.outputs)):
        for ti in items:
            io.add_row(kind, ti.name, "x".join(map(str, ti.shape)), ti.dtype)
    out.print(io)
    for note in rep.notes:
        out.print(f"note: {note}")
    out.print(f"Wrote {path} ({rep.size_bytes / 1024:,.0f} KiB, opset {rep.opset}, "
               f"{rep.exporter} exporter, {dt:.1f} s); max abs error {rep.max_abs_err:.2e}, "
               f"max rel error {rep.max_rel_err:.2e} (tolerance {rep.atol:g}).")
    if report:
        write_atomic(report, json.dumps(rep.to_dict(), indent=1, default=str) + "\n",
                     what="export report")
        out.print(f"Wrote {report}")


def _inputs_of(source: Path) -> list[Path]:
    """The files a command reads from ``source``: the file, or a run folder's checkpoints."""
    if source.is_dir():
        return [source, *(p for p in (source / BEST, source / LAST) if p.is_file())]
    return [source]


# --------------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------------
def bench(
    models: Annotated[list[Path] | None, typer.Argument(
        help="Netspecs (or checkpoints) to time. With --spdnn: the parents to merge.",
        show_default=False)] = None,
    vs: Annotated[list[Path] | None, typer.Option(
        "--vs", metavar="FILE...", help="Networks to compare with the first of MODELS; ratios "
        "are reported against it. Repeat it, or let the shell expand a glob: files after it "
        "count too.")] = None,
    spdnn: Annotated[bool, typer.Option(
        "--spdnn", help="Treat the files as SPDNN parents: merge them and compare the merged "
        "network with each parent alone, all parents one after another, and all parents as "
        "one parallel module (the naive ensemble).")] = False,
    merged: Annotated[Path | None, typer.Option(
        "--merged", metavar="FILE",
        help="With --spdnn: use this merged netspec instead of merging again.")]
    = None,
    params: Annotated[str, typer.Option(
        "--params", "-p", help="With --spdnn: the merge's channel budget (like-each, largest, "
        "sum, keep or a number; see 'spdnn merge --help').")] = "like-each",
    batch: Annotated[str, typer.Option(
        "--batch", metavar="N,...", help="Batch sizes, comma-separated.")] = "1,8,32",
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, max=1024, help="Intra-op threads for torch and onnxruntime (default: all "
        "cores).")] = None,
    runtime: Annotated[str, typer.Option(
        "--runtime", metavar="NAME,...", help="Comma-separated: torch (eager, no_grad), torch-inference (eager, "
        "inference_mode), torch-cl (inference_mode, channels-last memory format), torch-compile "
        "(inductor; compiling takes ~20 s a model), ort (onnxruntime, all graph "
        "optimizations).")] = "torch,torch-inference,ort",
    device: Annotated[str, typer.Option(
        "--device", metavar="NAME,...", help="Comma-separated: cpu, cuda. On cuda, 'ort' uses onnxruntime's CUDA "
        "provider when it is installed.")] = "cpu",
    min_time: Annotated[float, typer.Option(
        "--min-time", min=0.0, max=3600.0, metavar="SECONDS", help="Seconds of timed runs per measurement (after warm-up).")]
    = 1.0,
    warmup: Annotated[int, typer.Option("--warmup", min=0, max=10000, help="Untimed runs first.")] = 3,
    out_dir: Annotated[str, typer.Option(
        "-o", "--out", metavar="FOLDER", help="Folder for bench.md, bench.json and bench.png ('' writes no "
        "files; none of them may be one of the input files).")] = "bench_results",
    ceiling: Annotated[bool, typer.Option(
        "--ceiling/--no-ceiling", help="Also measure the machine's dense matmul GFLOP/s, the "
        "ceiling for the achieved GMAC/s.")] = True,
    model: Annotated[str | None, typer.Option(
        "--model", metavar="NAME", help="For checkpoints of runs with several networks (a GAN's 'generator' "
        "and 'discriminator'): which network to time. Netspec files ignore it.")] = None,
) -> None:
    """Time networks on torch and onnxruntime: latency, throughput, GMAC/s.

    Each measurement warms up, then repeats timed runs for --min-time seconds
    and reports p50/p90/p99 latency, throughput (images/s at p50), peak extra
    memory, parameters, MACs per image and achieved GMAC/s, next to the
    machine's own matmul GFLOP/s. Ratios against the first model (or the
    merged network with --spdnn) are measured in the same run.

    Examples:

      spdnn bench merged.yaml --vs netspecs/iris/appendix_a/*.yaml

      spdnn bench --spdnn netspecs/iris/appendix_a/*.yaml --batch 1,8

      spdnn bench --spdnn netspecs/depth/parent_*.yaml --params keep

    The command sets OMP_WAIT_POLICY=PASSIVE unless it is set already (threads that
    busy-wait make timings on shared or virtual CPUs several times slower).
    """
    from spdnn.extras import require

    require("export", "spdnn bench")  # onnxruntime: the ort runtime and the machine report
    from spdnn import bench as B

    files = list(models or []) + list(vs or [])
    if not files:
        raise SpdnnError("no networks to time", hint="give netspec files, e.g. spdnn bench "
                         "merged.yaml --vs parent_1.yaml, or --spdnn PARENTS...")
    names = ("bench.md", "bench.json", "bench.png")
    written = [Path(out_dir) / n for n in names] if out_dir else []
    sources = [*files, *([merged] if merged else [])]
    check_outputs([p for f in sources for p in _inputs_of(f)], written)
    batches = _parse_ints(batch, "--batch")
    runtimes = _parse_words(runtime, B.RUNTIMES, "runtime")
    devices = _parse_words(device, ("cpu", "cuda"), "device")
    if spdnn:
        from spdnn.graph import merge as do_merge
        from spdnn.graph import parse_params

        parents = [_load_spec(f, model) for f in files]
        if merged is not None:
            m = _load_spec(merged, model)
        else:
            if len(parents) < 2:
                raise SpdnnError("--spdnn needs two or more parents",
                                 hint="e.g. spdnn bench --spdnn netspecs/iris/appendix_a/*.yaml")
            m = do_merge(parents, params=parse_params(params)).spec
        targets = B.spdnn_targets(parents, merged=m)
        reference = "merged"
    else:
        targets = {}
        for f in files:
            s = _load_spec(f, model)
            name = s.name if s.name not in targets else f"{s.name} ({f})"
            targets[name] = s
        reference = next(iter(targets))

    def show(r):
        if r.ok:
            out.print(f"  {r.model} | {r.runtime} {r.device} | batch {r.batch}: "
                       f"p50 {r.p50_ms:.2f} ms, {r.throughput:,.1f} img/s", highlight=False)
        else:
            out.print(f"  {r.model} | {r.runtime} {r.device} | batch {r.batch}: {r.status}",
                       highlight=False)

    out.print(f"Timing {plural(len(targets), 'model')} x {plural(len(runtimes), 'runtime')} x "
               f"{plural(len(devices), 'device')} x {plural(len(batches), 'batch size')}...")
    rows = B.bench(targets, batches=batches, runtimes=runtimes, threads=threads,
                   device=devices, warmup=warmup, min_time=min_time, progress=show)
    ceil = B.matmul_ceiling(threads=threads) if ceiling else None
    out.print(_rows_table(rows))
    rat = B.ratios(rows, reference)
    if rat:
        out.print(_ratio_table(rat, reference))
    if ceil:
        out.print(f"Ceiling: dense fp32 matmul {ceil['n']}x{ceil['n']}, {ceil['threads']} "
                   f"thread(s): {ceil['gflops']:.1f} GFLOP/s = {ceil['gmacs']:.1f} GMAC/s.")
    if written:
        md_path, json_path, png_path = written
        md = "# spdnn bench\n\n" + B.to_markdown(rows, ceil)
        if rat:
            md += f"\n## Ratios against {reference} (same run)\n\n" + B.ratios_markdown(rat)
        write_atomic(md_path, md, what="bench report")
        B.to_json(rows, json_path, ceiling=ceil, ratios=rat,
                  runtime_ratios=B.runtime_ratios(rows))
        png = B.plot(rows, png_path)
        out.print(f"Wrote {md_path}, {json_path}"
                  + (f", {png}" if png else " (no plot: matplotlib is not installed)"))


def _rows_table(rows) -> Table:
    t = Table(title="latency and throughput", title_justify="left")
    cols = ["model", "runtime", "device", "batch", "p50 ms", "p90 ms", "p99 ms", "img/s",
            "peak MB", "params", "MMAC/img", "GMAC/s"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("model", "runtime", "device") else "right")
    for r in rows:
        if not r.ok:
            t.add_row(r.model, r.runtime, r.device, str(r.batch), r.status, *[""] * 7)
            continue
        t.add_row(r.model, r.runtime, r.device, str(r.batch), f"{r.p50_ms:.2f}",
                  f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.throughput:,.1f}",
                  "-" if r.peak_mem_mb is None else f"{r.peak_mem_mb:.1f}", f"{r.params:,}",
                  f"{r.macs / 1e6:,.1f}", f"{r.gmacs:.1f}")
    return t


def _ratio_table(rat, reference: str) -> Table:
    t = Table(title=f"ratios against {reference} (same run; > 1 means {reference} is smaller "
              "or faster)", title_justify="left")
    for c in ("model", "runtime", "device", "batch", "latency", "params", "MACs"):
        t.add_column(c, justify="left" if c in ("model", "runtime", "device") else "right")
    for r in rat:
        t.add_row(r["model"], r["runtime"], r["device"], str(r["batch"]), f"{r['latency']:.2f}",
                  f"{r['params']:.2f}", f"{r['macs']:.2f}")
    return t


def register(app: typer.Typer) -> None:
    """Add the ``export`` and ``bench`` commands to ``app``."""
    app.command(name="export")(export)
    app.command(name="bench")(bench)
