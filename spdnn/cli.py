"""The ``spdnn`` command line.

Every user error is printed as one line (``error: file:line: field: what (what to do)``) on
stderr with exit code 2 and no traceback; ``spdnn --debug ...`` shows the traceback.
"""

from __future__ import annotations

import os

# OpenMP threads that busy-wait make torch and onnxruntime several times slower on small shared
# machines (measured: benchmarks/README.md); the CLI is an application, so it sets the default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import re
import sys
import tempfile
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from spdnn import __version__
from spdnn.errors import SpdnnError

app = typer.Typer(
    name="spdnn",
    help="SPDNN network-architecture compiler: merge networks declared as YAML layer graphs into "
         "one semi-parallel network (Bazrafkan et al.), render, inspect and compile them to "
         "PyTorch.\n\nStart with: spdnn merge netspecs/iris/appendix_a/*.yaml -o merged.yaml",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]})
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, soft_wrap=True)
_STATE = {"debug": False}


class Distance(str, Enum):
    longest = "longest"
    shortest = "shortest"


def _version(value: bool) -> None:
    if value:
        out.print(f"spdnn {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    _STATE["debug"] = debug


def _load(path: Path):
    from spdnn import spec as S

    return S.load_checked(path)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file via a temporary file in the same folder and a rename (no torn files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _merge(parents: list[Path], params: str, distance: Distance, head_kernel: int | None,
           name: str | None):
    from spdnn.graph import merge, parse_params

    specs = [_load(p) for p in parents]
    return merge(specs, params=parse_params(params), distance=distance.value,
                 head_kernel=head_kernel, name=name)


ParamsOpt = Annotated[str, typer.Option(
    "--params", "-p",
    help="Channel budget for the merged network: 'like-each' (mean of the parents' parameter "
         "counts, the paper's choice), 'largest', 'sum', 'keep' (widest parent width of every "
         "merged layer, no scaling) or a number such as 250k or 1.1M.")]
DistanceOpt = Annotated[Distance, typer.Option(
    "--distance",
    help="Labelling distance rule. 'longest' (default) reproduces the authors' published iris "
         "network and can never close a cycle; 'shortest' is ch. 3.1's literal wording and "
         "skips (and reports) merges that would.")]
HeadOpt = Annotated[int | None, typer.Option(
    "--head-kernel", min=1,
    help="Kernel size of the shared output head used when several layers reach the output "
         "(default: the smallest kernel of the parents' output layers).")]


@app.command()
def merge(
    parents: Annotated[list[Path], typer.Argument(help="Parent netspecs (YAML), two or more.")],
    output: Annotated[Path | None, typer.Option("-o", "--output",
                                                   help="Write the merged netspec here.")] = None,
    params: ParamsOpt = "like-each",
    distance: DistanceOpt = Distance.longest,
    head_kernel: HeadOpt = None,
    name: Annotated[str | None, typer.Option(help="Name of the merged network.")] = None,
    report: Annotated[Path | None, typer.Option(help="Also write the report as markdown.")] = None,
) -> None:
    """Merge networks into one SPDNN network and print the merge report.

    Forward labelling and contraction, backward labelling and contraction (thesis ch. 3.1),
    then back to a network with concatenations, recalled pooling and a channel budget.

    Example: spdnn merge netspecs/iris/appendix_a/*.yaml -o merged.yaml --report merged.md
    """
    from spdnn import spec as S
    from spdnn.report import merge_markdown, merge_summary, merge_tables

    t0 = time.perf_counter()
    result = _merge(parents, params, distance, head_kernel, name)
    dt = time.perf_counter() - t0
    for table in merge_tables(result.report):
        out.print(table)
    for line in merge_summary(result.report):
        out.print(line)
    out.print(f"Merged in {dt:.2f} s.")
    if output:
        header = (f"SPDNN merge of {len(parents)} networks, written by spdnn {__version__}:\n"
                  f"  spdnn merge {' '.join(str(p) for p in parents)} --params {params} "
                  f"--distance {distance.value}\n"
                  f"Parameters: {result.report.merged_params:,} "
                  f"({result.report.reduction_vs_sum:.1%} fewer than the parents together).")
        write_atomic(output, S.dump(result.spec, header=header))
        out.print(f"Wrote {output}")
    if report:
        write_atomic(report, merge_markdown(result.report))
        out.print(f"Wrote {report}")


@app.command()
def validate(files: Annotated[list[Path], typer.Argument(help="Netspec files to check.")]) -> None:
    """Check netspecs: YAML, fields, layer graph and shapes. Exit code 2 on the first error."""
    from spdnn.shapes import infer
    from spdnn.spec.blocks import is_block_library, parse_blocks, resolve_imports
    from spdnn.spec.yaml_io import read_yaml

    for f in files:
        if is_block_library(f):  # a file of `blocks:` only, meant to be imported
            data, lines = read_yaml(f)
            blocks = parse_blocks(resolve_imports(data, str(f), lines), str(f), lines)
            out.print(f"ok  {f}: block library ({', '.join(sorted(blocks))})")
            continue
        s = _load(f)
        info = infer(s)
        out.print(f"ok  {f}: {s.name}, {len(s.layers)} layers, {info.params:,} parameters")


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="A netspec (YAML).")],
) -> None:
    """Print every layer with its output shape, parameters and MACs, and the totals."""
    from spdnn.report import layer_table
    from spdnn.shapes import infer

    s = _load(file)
    out.print(layer_table(infer(s), title=f"{s.name} ({file})"))


@app.command(name="compile")
def compile_(
    file: Annotated[Path, typer.Argument(help="A netspec (YAML).")],
    output: Annotated[Path | None, typer.Option("-o", "--output",
                                                   help="Write the module here (default: stdout).")] = None,
) -> None:
    """Emit a standalone PyTorch module (imports only torch) for a netspec."""
    from spdnn.codegen import emit_module

    src = emit_module(_load(file))
    if output:
        write_atomic(output, src)
        out.print(f"Wrote {output}")
    else:
        sys.stdout.write(src)


class View(str, Enum):
    netspec = "netspec"
    labels = "labels"
    parallel = "parallel"
    forward = "forward"
    contracted = "contracted"
    side_by_side = "side-by-side"


class RankDir(str, Enum):
    LR = "LR"
    TB = "TB"


@app.command()
def render(
    files: Annotated[list[Path], typer.Argument(help="One netspec, or several parents to merge.")],
    output: Annotated[Path, typer.Option("-o", "--output",
                                         help="Diagram file: .svg, .png, .pdf or .dot.")],
    view: Annotated[View | None, typer.Option(
        help="netspec: every layer; labels: the SPDNN graph with (structure, distance) labels; "
             "parallel: parents side by side sharing input and output; forward: after the "
             "forward contraction; contracted: the final graph with letters A, B, C...; "
             "side-by-side: parents and the merged network. Default: netspec for one file, "
             "contracted for several.")] = None,
    params: ParamsOpt = "like-each",
    distance: DistanceOpt = Distance.longest,
    head_kernel: HeadOpt = None,
    expand_blocks: Annotated[bool, typer.Option(
        "--expand-blocks/--collapse-blocks",
        help="netspec view: draw each block instance (Fire, a ResBlock...) as a dashed box "
             "holding its layers, instead of one node.")] = False,
    rankdir: Annotated[RankDir, typer.Option(
        help="Layout direction: LR (left to right, like the thesis figures) or TB (top to "
             "bottom, better for deep networks).")] = RankDir.LR,
) -> None:
    """Draw a netspec or an SPDNN merge with Graphviz.

    Examples: spdnn render netspecs/squeezenet/squeezenet_1_0.yaml -o sq.svg --expand-blocks;
    spdnn render netspecs/iris/appendix_a/*.yaml -o merge.svg --view side-by-side
    """
    from spdnn import render as R
    from spdnn.graph import parent_graph

    view = view or (View.netspec if len(files) == 1 else View.contracted)
    if view in (View.netspec, View.labels):
        if len(files) != 1:
            raise SpdnnError(f"--view {view.value} draws one netspec, got {len(files)} files",
                             hint="use --view parallel/contracted/side-by-side for several")
        s = _load(files[0])
        if view == View.netspec:
            dot = R.netspec_diagram(s, expand_blocks=expand_blocks, rankdir=rankdir.value)
        else:
            dot = R.labelled_diagram(parent_graph(s, rule=distance.value), title=s.name,
                                     rankdir=rankdir.value)
    else:
        result = _merge(files, params, distance, head_kernel, None)
        dot = {View.parallel: R.parallel_diagram, View.forward: R.forward_diagram,
               View.contracted: R.contracted_diagram,
               View.side_by_side: R.side_by_side}[view](result, rankdir=rankdir.value)
    path = R.save(dot, output)
    out.print(f"Wrote {path}")


@app.command()
def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")] = Path("out/demo"),
    root: Annotated[Path, typer.Option(help="Repository root holding netspecs/.")] = Path("."),
    train: Annotated[bool, typer.Option(help="Also train the merged network briefly (~2 min).")] = True,
) -> None:
    """Merge the thesis' three iris parents, render, compile and run the merged network.

    Writes the merged netspec, the merge report, SVG diagrams, the emitted PyTorch module and
    its output on a real grayscale photograph into the output folder, then trains the merged
    network for 200 steps on synthetic degraded eyes and prints its segmentation metrics.
    """
    from spdnn.demo import IRIS_A, run_demo

    if not (root / IRIS_A).is_dir():
        raise SpdnnError(f"{root / IRIS_A} not found",
                         hint="run from the repository root or pass --root")
    run_demo(output, root, out, train=train)


@app.command()
def ops() -> None:
    """List the layer ops a netspec may use, with their parameters."""
    from rich.table import Table

    from spdnn.ops import OPS

    t = Table(title="Ops (use as 'op: NAME' in a layer)", title_justify="left")
    t.add_column("op")
    t.add_column("kind")
    t.add_column("parameters (default)")
    t.add_column("what it is")
    skip = {"name", "op", "inputs", "merged_from"}
    for name in sorted(OPS):
        cls = OPS[name]
        fields = []
        for fname, f in cls.model_fields.items():
            if fname in skip:
                continue
            fields.append(fname if f.is_required() else f"{fname}={f.default!r}")
        doc = (cls.__doc__ or "").strip().split(". ")[0].splitlines()
        doc = re.sub(r":\w+:`([^`]*)`", r"\1", " ".join(d.strip() for d in doc)).replace("``", "")
        t.add_row(name, cls.kind, ", ".join(fields), doc)
    out.print(t)


def _register_extensions() -> None:
    """Commands contributed by other stages (export/bench, train) when present."""
    import importlib

    for mod in ("spdnn.cli_ops", "spdnn.train.cli"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name and mod.startswith(exc.name):
                continue
            raise
        m.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning spdnn errors into one line and exit code 2."""
    _register_extensions()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=False)
    except SpdnnError as exc:
        if debug:
            raise
        err.print(f"error: {exc.one_line()}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err.print("aborted", markup=False)
        return 130
    except Exception as exc:  # click usage errors and the like
        if type(exc).__name__ == "NoArgsIsHelpError":
            out.print(exc.ctx.get_help(), markup=False, highlight=False)
            return 0
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            msg = " ".join(exc.format_message().split())
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                msg += f" (see '{ctx.command_path} --help')"
            err.print(f"error: {msg}", markup=False, highlight=False, soft_wrap=True)
            return exc.exit_code
        if debug:
            raise
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())
        err.print(f"internal error: {msg} (rerun with --debug for the traceback; please report it)",
                  markup=False, highlight=False, soft_wrap=True)
        return 1
    return 0
