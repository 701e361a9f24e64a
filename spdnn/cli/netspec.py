"""The netspec commands: ``merge``, ``validate``, ``inspect``, ``compile``, ``render``, ``ops``.

None of them imports torch (they run the compiler stages only), so they start in a fraction of
the time of a command that runs networks.
"""

from __future__ import annotations

import json
import re
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from spdnn import __version__
from spdnn.choices import BUDGET_MODES, DEFAULT_RULE, DISTANCE_RULES, VIEWS
from spdnn.cli.console import err, out, plural
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
           name: str | None, macs: str | None = None, min_width: int | None = None,
           width_multiple: int = 1):
    from spdnn.graph import merge_files
    from spdnn.graph.budget import MIN_WIDTH

    return merge_files(parents, params=params, distance=distance.value, head_kernel=head_kernel,
                       name=name, macs=macs, width_multiple=width_multiple,
                       min_width=MIN_WIDTH if min_width is None else min_width)


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
    parents: Annotated[list[Path], typer.Argument(metavar="FILE",
                                                  help="Parent netspecs (YAML), two or more.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", metavar="FILE",
                                                   help="Write the merged netspec here.")] = None,
    params: ParamsOpt = "like-each",
    distance: DistanceOpt = Distance(DEFAULT_RULE),
    head_kernel: HeadOpt = None,
    name: Annotated[str | None, typer.Option(help="Name of the merged network.")] = None,
    report: Annotated[Path | None, typer.Option(metavar="FILE",
                                                help="Also write the report as markdown.")] = None,
    weights: Annotated[list[Path] | None, typer.Option(
        "--weights", metavar="FILE...",
        help="The parents' trained weights (state dicts of the compiled modules, or spdnn "
             "train checkpoints), one per netspec in the same order: the merged network "
             "starts as the parents' exact logit-averaged ensemble (needs --params sum and "
             "--out-weights).")] = None,
    out_weights: Annotated[Path | None, typer.Option(
        "--out-weights", metavar="FILE",
        help="Write the merged network's weights here (a state dict, with --weights).")] = None,
    macs: Annotated[str | None, typer.Option(
        "--macs", metavar="TARGET",
        help="MAC bound per sample: like-each, largest, sum, none, or a number such as 300M. "
             "Default: largest with --params like-each (no more than the most expensive "
             "parent), none otherwise.")] = None,
    min_width: Annotated[int | None, typer.Option(
        "--min-width", metavar="N",
        help="Floor of the budget: no layer narrower than min(its parent width, N) "
             "channels (default 4).")] = None,
    width_multiple: Annotated[int, typer.Option(
        "--width-multiple", metavar="K",
        help="Round every scaled width to a multiple of K channels (8 suits SIMD kernels; "
             "default 1 keeps the thesis' results).")] = 1,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the merge report (widths, parameters, MACs) and write "
                          "nothing.")] = False,
) -> None:
    """Merge networks into one SPDNN network and print the merge report.

    Forward labelling and contraction, backward labelling and contraction (thesis ch. 3.1),
    then back to a network with concatenations, recalled pooling and a channel budget.

    Example: spdnn merge netspecs/iris/appendix_a/*.yaml -o merged.yaml --report merged.md

    With trained weights: spdnn merge a.yaml b.yaml --weights a.pt b.pt --params sum
    -o m.yaml --out-weights m.pt

    The channel budget uses one width multiplier for every merged layer, chosen so the
    parameter count comes closest to --params without exceeding --macs, no layer below
    --min-width (or its parents' width) and, below --params sum, none wider than its widest
    parent. See what it did first: spdnn merge A.yaml B.yaml --dry-run
    """
    from spdnn import spec as S
    from spdnn.report import merge_markdown, merge_summary, merge_tables

    weights, parents = _split_weights(weights, parents)
    if len(parents) < 2:
        raise SpdnnError(f"merge needs two or more parent netspecs, got {len(parents)}",
                         hint="e.g. spdnn merge netspecs/iris/appendix_a/*.yaml -o merged.yaml; "
                              "check one netspec with spdnn validate or spdnn inspect")
    check_outputs(list(parents) + list(weights or []), [output, report, out_weights])
    carried = None
    t0 = time.perf_counter()
    if weights:
        if params.strip().lower() != "sum" or output is None or out_weights is None:
            raise SpdnnError("--weights needs --params sum, -o and --out-weights",
                             field="--weights", hint="the merged network is the exact ensemble "
                             "at the 'sum' budget; shrink it afterwards (see the README)")
        from spdnn.graph.weights import merge_with_weights

        result, carried = merge_with_weights(parents, weights, distance=distance.value,
                                             head_kernel=head_kernel, name=name)
    elif out_weights is not None:
        raise SpdnnError("--out-weights needs --weights", field="--out-weights",
                         hint="give the parents' weights with --weights a.pt b.pt")
    else:
        result = _merge(parents, params, distance, head_kernel, name, macs, min_width,
                        width_multiple)
    dt = time.perf_counter() - t0
    for table in merge_tables(result.report):
        out.print(table)
    for line in merge_summary(result.report):
        out.print(line)
    out.print(f"Merged in {dt:.2f} s.")
    if dry_run:
        out.print("Dry run: nothing written.")
        return
    if output:
        header = (f"SPDNN merge of {plural(len(parents), 'network')}, written by spdnn "
                  f"{__version__}:\n"
                  f"  spdnn merge {' '.join(str(p) for p in parents)} --params {params} "
                  f"--distance {distance.value}"
                  + (f" --macs {macs}" if macs else "")
                  + (f" --min-width {min_width}" if min_width is not None else "")
                  + (f" --width-multiple {width_multiple}" if width_multiple != 1 else "")
                  + (f" --weights {' '.join(str(w) for w in weights)}" if weights else "")
                  + "\n"
                  f"Parameters: {result.report.merged_params:,} "
                  f"({result.report.reduction_vs_sum:.1%} fewer than the parents together).")
        write_atomic(output, S.dump(carried.spec if carried else result.spec, header=header))
        out.print(f"Wrote {output}")
    if carried is not None and out_weights is not None:
        from spdnn.io import save_torch_atomic

        save_torch_atomic(carried.state_dict, out_weights, what="weights file")
        out.print(f"Wrote {out_weights}")
    if report:
        write_atomic(report, merge_markdown(result.report))
        out.print(f"Wrote {report}")


def _split_weights(weights: list[Path] | None, files: list[Path]
                   ) -> tuple[list[Path] | None, list[Path]]:
    """``--weights a.pt b.pt``: the option takes one value, the shell leaves ``b.pt`` among
    the netspecs; ``.pt``/``.pth`` files there join the weights, in the order given.

    Raises:
        SpdnnError: a weights file among the netspecs without ``--weights``.
    """
    extra = [f for f in files if f.suffix.lower() in (".pt", ".pth")]
    if extra and not weights:
        raise SpdnnError("a weights file among the netspecs", file=str(extra[0]),
                         hint="give the parents' weights with --weights a.pt b.pt")
    if not extra:
        return weights, files
    return list(weights or []) + extra, [f for f in files if f not in extra]


def _netspec_files(paths: list[Path]) -> tuple[list[Path], list[SpdnnError]]:
    """The files ``validate`` checks: each file given, and every ``*.yaml``/``*.yml`` under
    each folder given (recursively, hidden folders left out, sorted), each once; a path that
    does not exist or a folder without YAML files is an error of its own."""
    files: list[Path] = []
    problems: list[SpdnnError] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.suffix.lower() in (".yaml", ".yml")
                           and f.is_file() and not any(part.startswith(".") for part in
                                                       f.relative_to(path).parts[:-1]))
            if not found:
                problems.append(SpdnnError("the folder holds no .yaml files", file=str(path),
                                           hint="give netspec files or a folder of them"))
        elif path.exists():
            found = [path]
        else:
            problems.append(SpdnnError("no such file or folder", file=str(path)))
            found = []
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files, problems


def _check_one(f: Path) -> str:
    """Validate one file; returns what it is (a netspec's size, a block library's blocks).

    Raises:
        SpdnnError: the first problem of the file, located.
    """
    from spdnn import spec as S
    from spdnn.spec.blocks import is_block_library, parse_blocks, resolve_imports
    from spdnn.spec.yaml_io import read_yaml

    if is_block_library(f):  # a file of `blocks:` only, meant to be imported
        data, lines = read_yaml(f)
        blocks = parse_blocks(resolve_imports(data, str(f), lines), str(f), lines)
        return f"block library ({', '.join(sorted(blocks))})"
    s, info = S.load_inferred(f)
    return (f"{s.name}, {plural(len(s.layers), 'layer')}, "
            f"{plural(info.params, 'parameter')}")


def validate(
    paths: Annotated[list[Path], typer.Argument(
        metavar="PATH", help="Netspec files, or folders: every .yaml file under a folder is "
        "checked (block libraries as libraries).")],
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Print only the errors and the summary.")] = False,
) -> None:
    """Check netspecs: YAML, fields, layer graph and shapes.

    Every file is checked, also after one fails: one line per bad file
    (file:line: field: what is wrong) on stderr, then a summary; exit code 2 if any
    failed. Folders are searched recursively, so no shell glob is needed.

    Examples:

      spdnn validate netspecs

      spdnn validate my_net.yaml netspecs/iris -q
    """
    files, problems = _netspec_files(paths)
    for problem in problems:
        err.print(f"error: {problem.one_line()}", markup=False, highlight=False, soft_wrap=True)
    bad = len(problems)
    for f in files:
        try:
            what = _check_one(f)
        except SpdnnError as exc:
            if exc.file is None:  # not about the file (a bad SPDNN_LIMITS, ...): stop here
                raise
            bad += 1
            err.print(f"error: {exc.one_line()}", markup=False, highlight=False, soft_wrap=True)
            continue
        if not quiet:
            out.print(f"ok  {f}: {what}", markup=False, highlight=False)
    total = len(files) + len(problems)
    out.print(f"{plural(total, 'file')}: {total - bad} valid, {bad} with errors",
              markup=False, highlight=False)
    if bad:
        raise typer.Exit(2)


def inspect(
    file: Annotated[Path, typer.Argument(help="A netspec (YAML).")],
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the table as JSON (layers with op, inputs, output shape, "
        "parameters and MACs; totals), for scripts.")] = False,
    batch: Annotated[int | None, typer.Option(
        "--batch", min=1, max=2**20, help="Count for a batch of N samples: output shapes get "
        "the batch axis, MACs and activations are N times those of one sample (parameters do "
        "not change). Default: one sample, without the batch axis.")] = None,
) -> None:
    """Print every layer with its output shape, parameters and MACs, and the totals.

    MACs are multiply-accumulates of the compute layers (convolutions, transposed
    convolutions, fully connected layers, ...); activations are the values of the inputs and
    of every layer's output. Both are for one sample unless --batch is given.

    Examples:

      spdnn inspect netspecs/squeezenet/squeezenet_1_1.yaml --batch 32

      spdnn inspect merged.yaml --json > merged_layers.json
    """
    from spdnn.report import layer_json, layer_table
    from spdnn.shapes import infer

    s = _load(file)
    info = infer(s)
    if as_json:
        sys.stdout.write(json.dumps(layer_json(info, batch=batch or 1, file=str(file)),
                                    indent=1) + "\n")
        return
    title = f"{s.name} ({file})" + (f", batch {batch}" if batch else "")
    out.print(layer_table(info, title=title, batch=batch))


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
    auto = "auto"
    LR = "LR"
    TB = "TB"


def _names_of(files: list[Path]) -> list[str]:
    """The ``name:`` of each netspec file, in the order given (for the parents' order)."""
    from spdnn.spec.yaml_io import read_yaml

    names = []
    for f in files:
        data, _ = read_yaml(f)
        names.append(str(data.get("name", "")) if isinstance(data, dict) else "")
    return names


def render(
    files: Annotated[list[Path], typer.Argument(
        metavar="FILE", help="One netspec, or several parents to merge.")],
    output: Annotated[Path, typer.Option("-o", "--output", metavar="FILE",
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
        help="Layout direction: LR (left to right, like the thesis figures), TB (top to "
             "bottom) or auto: the one whose drawing is closest to a page's proportions "
             "(a long chain top to bottom, a wide graph left to right).")] = RankDir.auto,
    dpi: Annotated[int, typer.Option(
        "--dpi", min=10, max=1200, help="Resolution of a PNG, in dots per inch (SVG and PDF "
        "are vector formats).")] = 150,
) -> None:
    """Draw a netspec or an SPDNN merge with Graphviz.

    Each diagram's caption has a legend of its colours and labels; parents are drawn in the
    order given.

    Examples:

      spdnn render netspecs/squeezenet/squeezenet_1_0.yaml -o sq.png --expand-blocks

      spdnn render netspecs/iris/appendix_a/*.yaml -o merge.svg --view side-by-side

      spdnn render merged.yaml -o merged.png --rankdir LR --dpi 300
    """
    check_outputs(files, [output])
    from spdnn import render as R

    view = view or (View.netspec if len(files) == 1 else View.contracted)
    order = None
    if view in (View.netspec, View.labels):
        if len(files) != 1:
            raise SpdnnError(f"--view {view.value} draws one netspec, got {len(files)} files",
                             hint="use --view parallel/contracted/side-by-side for several")
        obj = _load(files[0])
    else:
        obj = _merge(files, params, distance, head_kernel, None)
        order = _names_of(files)
    dot = R.build_view(view.value, obj, rankdir=None if rankdir is RankDir.auto else rankdir.value,
                       expand_blocks=expand_blocks, distance=distance.value, order=order)
    path = R.save(dot, output, dpi=dpi)
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
        doc = _description(cls.__doc__)
        t.add_row(name, cls.kind, ", ".join(fields), doc)
    out.print(t)


def _description(doc: str | None) -> str:
    """An op's description for ``spdnn ops``: the first paragraph of its docstring, whole
    (sentences with "sec." or "e.g." in them are not cut), reST roles and literals as plain
    text."""
    first = (doc or "").strip().split("\n\n")[0]
    text = " ".join(line.strip() for line in first.splitlines())
    return re.sub(r":\w+:`~?([^`]*)`", r"\1", text).replace("``", "")


def register(app: typer.Typer) -> None:
    """Add the netspec commands to the application."""
    app.command()(merge)
    app.command()(validate)
    app.command()(inspect)
    app.command(name="compile")(compile_)
    app.command()(render)
    app.command()(ops)
