"""The netspec commands: ``merge``, ``validate``, ``inspect``, ``compile``, ``render``, ``ops``.

None of them imports torch (they run the compiler stages only), so they start in a fraction of
the time of a command that runs networks.
"""

from __future__ import annotations

import re
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from spdnn import __version__
from spdnn.choices import BUDGET_MODES, DEFAULT_RULE, DISTANCE_RULES, VIEWS
from spdnn.cli.console import out
from spdnn.errors import SpdnnError
from spdnn.io import check_outputs, write_atomic


def _choices(name: str, names) -> type[Enum]:
    """A ``str`` enum of option values (``side-by-side`` -> member ``side_by_side``)."""
    return Enum(name, {n.replace("-", "_"): n for n in names}, type=str)


Distance = _choices("Distance", DISTANCE_RULES)
View = _choices("View", VIEWS)


def _load(path: Path):
    from spdnn import spec as S

    return S.load_checked(path)


def _merge(parents: list[Path], params: str, distance: Distance, head_kernel: int | None,
           name: str | None):
    from spdnn.graph import merge_files

    return merge_files(parents, params=params, distance=distance.value, head_kernel=head_kernel,
                       name=name)


ParamsOpt = Annotated[str, typer.Option(
    "--params", "-p",
    help="Channel budget for the merged network: "
         + "; ".join(f"'{k}': {v}" for k, v in BUDGET_MODES.items())
         + "; or a parameter count such as 250k or 1.1M.")]
DistanceOpt = Annotated[Distance, typer.Option(
    "--distance",
    help="Labelling distance rule: " + "; ".join(f"'{k}': {v}" for k, v in DISTANCE_RULES.items())
         + ".")]
HeadOpt = Annotated[int | None, typer.Option(
    "--head-kernel", min=1,
    help="Kernel size of the shared output head used when several layers reach the output "
         "(default: the smallest kernel of the parents' output layers).")]


def merge(
    parents: Annotated[list[Path], typer.Argument(help="Parent netspecs (YAML), two or more.")],
    output: Annotated[Path | None, typer.Option("-o", "--output",
                                                   help="Write the merged netspec here.")] = None,
    params: ParamsOpt = "like-each",
    distance: DistanceOpt = Distance(DEFAULT_RULE),
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

    check_outputs(parents, [output, report])
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


def inspect(
    file: Annotated[Path, typer.Argument(help="A netspec (YAML).")],
) -> None:
    """Print every layer with its output shape, parameters and MACs, and the totals."""
    from spdnn.report import layer_table
    from spdnn.shapes import infer

    s = _load(file)
    out.print(layer_table(infer(s), title=f"{s.name} ({file})"))


def compile_(
    file: Annotated[Path, typer.Argument(help="A netspec (YAML).")],
    output: Annotated[Path | None, typer.Option("-o", "--output",
                                                   help="Write the module here (default: stdout).")] = None,
) -> None:
    """Emit a standalone PyTorch module (imports only torch) for a netspec."""
    from spdnn.codegen import emit_module

    check_outputs([file], [output])
    src = emit_module(_load(file))
    if output:
        write_atomic(output, src)
        out.print(f"Wrote {output}")
    else:
        sys.stdout.write(src)


class RankDir(str, Enum):
    LR = "LR"
    TB = "TB"


def render(
    files: Annotated[list[Path], typer.Argument(help="One netspec, or several parents to merge.")],
    output: Annotated[Path, typer.Option("-o", "--output",
                                         help="Diagram file: .svg, .png, .pdf or .dot.")],
    view: Annotated[View | None, typer.Option(
        help="; ".join(f"{k}: {v}" for k, v in VIEWS.items())
             + ". Default: netspec for one file, contracted for several.")] = None,
    params: ParamsOpt = "like-each",
    distance: DistanceOpt = Distance(DEFAULT_RULE),
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
    check_outputs(files, [output])
    from spdnn import render as R

    view = view or (View.netspec if len(files) == 1 else View.contracted)
    if view in (View.netspec, View.labels):
        if len(files) != 1:
            raise SpdnnError(f"--view {view.value} draws one netspec, got {len(files)} files",
                             hint="use --view parallel/contracted/side-by-side for several")
        obj = _load(files[0])
    else:
        obj = _merge(files, params, distance, head_kernel, None)
    dot = R.build_view(view.value, obj, rankdir=rankdir.value, expand_blocks=expand_blocks,
                       distance=distance.value)
    path = R.save(dot, output)
    out.print(f"Wrote {path}")


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


def register(app: typer.Typer) -> None:
    """Add the netspec commands to the application."""
    app.command()(merge)
    app.command()(validate)
    app.command()(inspect)
    app.command(name="compile")(compile_)
    app.command()(render)
    app.command()(ops)
