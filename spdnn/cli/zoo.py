"""``spdnn zoo``: the netspecs, block libraries and recipes shipped with spdnn (listed, or
copied out to edit), and :func:`resolve_arguments`, which lets every command take their names
(``netspecs/...``, ``recipes/...``) from any folder.

No torch: listing and copying read YAML text only.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from spdnn.cli.console import err, out, plural
from spdnn.errors import SpdnnError

__all__ = ["register", "resolve_arguments"]


def resolve_arguments(ctx: Any, command: Any) -> None:
    """Resolve the command's positional path arguments (and ``--vs``) in place:

    * a zoo name that names nothing here (``recipes/iris_a_merged.yaml``, or
      ``netspecs/iris/appendix_a/*.yaml`` left unexpanded by the shell) becomes the zoo's file
      or files (:func:`spdnn.zoo.expand`), with one note on stderr;
    * a quoted glob pattern given to an argument that takes several files is expanded here (as
      a shell would; so a pattern works the same in every shell, Windows' included).

    Outputs (``-o``, ``--report``...) are never touched, nor are arguments that are plain text
    (``spdnn zoo copy``'s)."""
    import glob

    from typer.core import TyperArgument

    from spdnn import zoo

    names = {p.name for p in command.params if isinstance(p, TyperArgument)} | {"vs"}
    for key in names & set(ctx.params):
        value = ctx.params[key]
        many = isinstance(value, (list, tuple))
        items = list(value) if many else [value]
        if not items or not all(isinstance(v, Path) for v in items):
            continue
        new: list[Path] = []
        for v in items:
            if many and glob.has_magic(str(v)) and not v.exists():
                here = sorted(glob.glob(str(v), recursive=True))
                if here:
                    new += [Path(h) for h in here]
                    continue
            hits = zoo.expand(v)
            if hits is None or (not many and len(hits) != 1):
                new.append(v)
                continue
            new += hits
            shown = hits[0] if len(hits) == 1 else hits[0].parent
            what = "the copy" if len(hits) == 1 else f"the {len(hits)} files"
            err.print(f"note: {v} is not here; using {what} shipped with spdnn ({shown})",
                      markup=False, highlight=False, soft_wrap=True, style="dim")
        ctx.params[key] = new if many else new[0]


class Action(str, Enum):
    list = "list"
    copy = "copy"
    path = "path"


def _listing(words: list[str]) -> None:
    from rich.table import Table

    from spdnn import zoo

    base = zoo.root()
    every = zoo.entries()
    wanted = [w.lower() for w in words]
    shown = [e for e in every
             if all(w in f"{e.name} {e.kind} {e.description}".lower() for w in wanted)]
    if not shown:
        raise SpdnnError(f"nothing in the zoo matches {' '.join(words)!r}",
                         hint="spdnn zoo lists everything; words match names and descriptions")
    counts = {}
    for e in every:
        counts[e.kind] = counts.get(e.kind, 0) + 1
    kinds = [("netspec", "netspecs"), ("block library", "block libraries"),
             ("recipe", "recipes"), ("base recipe", "base recipes")]
    summary = ", ".join(plural(counts.get(k, 0), k, many) for k, many in kinds)
    out.print(f"spdnn's zoo: {summary}, in {base}", highlight=False, markup=False)
    for kind, many in kinds:
        rows = [e for e in shown if e.kind == kind]
        if not rows:
            continue
        t = Table(title=f"{many} ({len(rows)})", title_justify="left")
        t.add_column("name", no_wrap=True)
        t.add_column("what it is")
        for e in rows:
            t.add_row(e.name, e.description)
        out.print(t)
    out.print("Give these names to any command, from any folder (a local file of the same name "
              "wins): spdnn train recipes/iris_a_merged.yaml. Copy them out to edit them: spdnn "
              "zoo copy recipes/iris_a_merged.yaml my_zoo (the netspecs and base recipe it "
              "uses come along).", highlight=False, markup=False)


def _copy(args: list[str], overwrite: bool) -> None:
    from spdnn import zoo

    if len(args) < 2:
        raise SpdnnError("zoo copy needs what to copy and where: NAME... DEST", field="ARGS",
                         hint="e.g. spdnn zoo copy recipes/iris_a_merged.yaml my_zoo, or "
                              "spdnn zoo copy all my_zoo")
    *names, dest = args
    done = zoo.copy(names, dest, overwrite=overwrite)
    counts = {s: sum(1 for d in done if d.status == s) for s in ("copied", "replaced",
                                                                  "unchanged")}
    for d in done:
        if d.status != "unchanged":
            out.print(f"  {d.status:8} {d.dest}", highlight=False, markup=False)
    parts = [plural(n, "file") + " " + s for s, n in counts.items() if n]
    out.print(f"{', '.join(parts)} in {dest}.", highlight=False, markup=False)
    recipes = [d.dest for d in done if d.name.startswith("recipes/")
               and "/base/" not in d.name]
    if len(recipes) == 1:
        out.print(f"Train it: spdnn train {recipes[0]}", highlight=False, markup=False)


def zoo(
    action: Annotated[Action, typer.Argument(
        help="list: the files with one line each (words after it filter); copy: NAME... DEST, "
             "copy files out; path: print the folder the zoo is installed in.")] = Action.list,
    args: Annotated[list[str] | None, typer.Argument(
        metavar="ARGS", help="list: words a name or description must contain. copy: the names "
        "(a file as listed, .yaml optional; a folder such as netspecs/iris; a quoted glob; or "
        "all), then the destination folder.", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="copy: replace files in DEST that differ from the zoo's (without "
        "it nothing is written when one differs).")] = False,
) -> None:
    """The netspecs, block libraries and recipes shipped with spdnn.

    Every command takes their names (netspecs/..., recipes/...) from any folder: where no
    local path of that name exists, the shipped file is used (a note on stderr says so).
    Copies keep the zoo's layout (DEST/recipes, DEST/netspecs), so the relative paths inside
    them still hold; copying a recipe brings its base recipe and netspecs, copying a netspec
    its block libraries. Existing files are never replaced without --overwrite.

    Examples:

      spdnn zoo

      spdnn zoo list squeezenet

      spdnn zoo copy recipes/iris_a_merged.yaml my_zoo

      spdnn zoo copy netspecs/iris all_iris --overwrite

      spdnn zoo copy all my_zoo
    """
    words = list(args or [])
    if action is Action.list:
        _listing(words)
    elif action is Action.copy:
        _copy(words, overwrite)
    else:
        from spdnn import zoo as Z

        if words:
            raise SpdnnError("zoo path takes no arguments", field="ARGS",
                             hint="spdnn zoo path prints the zoo's folder")
        out.print(str(Z.root()), highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add the ``zoo`` command to the application."""
    app.command()(zoo)
