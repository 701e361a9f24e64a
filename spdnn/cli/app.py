"""The ``spdnn`` application: the typer app, global options, explicit registration of every
command module, and :func:`main`, which turns errors into one line.

Every user error is printed as one line (``error: file:line: field: what is wrong (what to
do)``) on stderr with exit code 2 and no traceback; ``spdnn --debug ...`` shows the traceback.
Training stopped by Ctrl-C / SIGTERM exits with 130 / 143 after saving its checkpoint.
"""

from __future__ import annotations

import os

# OpenMP threads that busy-wait make torch and onnxruntime several times slower on small shared
# machines (measured: benchmarks/README.md); the CLI is an application, so it sets the default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import inspect
import sys
from pathlib import PurePath
from typing import Annotated, get_args

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from spdnn import __version__
from spdnn.cli import demo, deploy, imports, latent, netspec, train, zoo
from spdnn.cli.console import err, out
from spdnn.errors import SpdnnError

# --------------------------------------------------------------------------------------------
# help text: values named in words, paragraphs reflowed, examples kept line by line
# --------------------------------------------------------------------------------------------
_WORDS = {"set_": "KEY=VALUE"}
"""Metavars of options declared in modules that share one annotation (``--set``)."""


def _value_word(param: TyperOption) -> str:
    """How ``--help`` names an option's value: ``PATH``, ``N``, ``NUMBER``, ``TEXT``, the
    choices (``longest|shortest``), with ``...`` for a repeatable option; a metavar given
    with the option wins."""
    if param.metavar is not None:
        return param.metavar
    if param.name in _WORDS:
        return _WORDS[param.name]
    desc = param.type_descriptor
    ann = desc.annotation
    if desc.is_list and get_args(ann):
        ann = get_args(ann)[0]
    if desc.is_choice:
        word = "|".join(str(getattr(c, "value", c)) for c in desc.choices or ())
    elif isinstance(ann, type) and issubclass(ann, PurePath):
        word = "PATH"
    elif ann is int:
        word = "N"
    elif ann is float:
        word = "NUMBER"
    elif ann is str:
        word = "TEXT"
    else:
        word = getattr(ann, "__name__", str(ann)).upper()
    return word + ("..." if desc.is_list else "")


class _Argument(TyperArgument):
    """An argument named in capitals in help and usage (``PARENTS...``, ``FILE``), with no
    Python type column."""

    @property
    def display_name_raw(self) -> str:
        word = (self.metavar or self.name or "ARG").upper()
        return word if word.endswith("...") or self.nargs == 1 else word + "..."

    def display_type_rich(self, ctx) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        return self.display_name_raw if self.required else f"[{self.display_name_raw}]"


class _Option(TyperOption):
    """An option whose value is named in words (see :func:`_value_word`); flags show none."""

    def display_type_rich(self, ctx) -> str | None:
        if self.is_flag or self.count:
            return None
        return _value_word(self)


def _worded(params: list) -> list:
    for p in params:
        if type(p) is TyperArgument:
            p.__class__ = _Argument
            p.metavar = p.display_name_raw  # so rich adds no second "..."
        elif type(p) is TyperOption:
            p.__class__ = _Option
        else:
            continue
        if p.help and not getattr(p, "_spdnn_escaped", False):
            p.help, p._spdnn_escaped = escape(p.help), True
    return params


def _reflow(text: str | None) -> str | None:
    """Help text as the terminal should show it: each prose paragraph joined into one line
    (rich wraps it to the terminal's width), paragraphs whose lines are all indented (examples)
    kept line by line, and rich markup characters escaped (a ``[name]`` in a help text is
    text, not a style)."""
    if not text:
        return text
    paragraphs = []
    for par in inspect.cleandoc(text).split("\n\n"):
        lines = [line for line in par.splitlines() if line.strip()]
        if lines and all(line[0] in " \t" for line in lines):
            paragraphs.append("\n".join(lines))
        else:
            paragraphs.append(" ".join(line.strip() for line in lines))
    return escape("\n\n".join(paragraphs))


class _Command(TyperCommand):
    """Every ``spdnn`` command: reflowed help, values named in words; input paths named like
    the shipped zoo's files (``recipes/...``) that name nothing here are the zoo's."""

    def invoke(self, ctx):
        zoo.resolve_arguments(ctx, self)
        return super().invoke(ctx)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.help = _reflow(self.help)

    def get_params(self, ctx) -> list:
        return _worded(super().get_params(ctx))


class _Group(TyperGroup):
    """The ``spdnn`` application (global options and the command list), as :class:`_Command`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.help = _reflow(self.help)

    def get_params(self, ctx) -> list:
        return _worded(super().get_params(ctx))


app = typer.Typer(
    name="spdnn", cls=_Group,
    help="SPDNN network-architecture compiler: merge networks declared as YAML layer graphs into "
         "one semi-parallel network (Bazrafkan et al.), render, inspect and compile them to "
         "PyTorch, train, export to ONNX and benchmark.\n\n"
         "Start with: spdnn demo, or spdnn merge 'netspecs/iris/appendix_a/*.yaml' -o "
         "merged.yaml. Names under netspecs/ and recipes/ are the files shipped with spdnn "
         "wherever no such local file exists (spdnn zoo lists them and copies them out).",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]})


def _version(value: bool) -> None:
    if value:
        out.print(f"spdnn {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    limits: Annotated[str | None, typer.Option(
        "--limits", metavar="KEY=N,...",
        help="Size limits of a network, checked when it is validated: params (trainable "
             "parameters), activations (values of the inputs and layer outputs, one sample), "
             "macs (one sample), and pixels of an image read (checked from its header); "
             "e.g. --limits params=1e11,macs=1e14. Defaults: "
             "params=1e9,activations=1e10,macs=1e13,pixels=67108864; keys left out keep "
             "the SPDNN_LIMITS "
             "environment variable's value, or the default.")] = None,
) -> None:
    """Global options (before the command)."""
    # None: SPDNN_LIMITS or the defaults. main() may run several times in one process, so a
    # loaded shape stage is reset; one not loaded yet reads the defaults when it is (and
    # `spdnn --help` stays free of it).
    if limits is not None or "spdnn.shapes" in sys.modules:
        from spdnn.shapes import set_limits

        set_limits(limits)


for _module in (netspec, imports, deploy, train, latent, demo, zoo):  # the order of `spdnn --help`
    _module.register(app)
for _info in app.registered_commands:
    if _info.cls in (None, TyperCommand):
        _info.cls = _Command


def name_too_long(exc: OSError) -> SpdnnError | None:
    """The one-line error for ``OSError: File name too long`` (``ENAMETOOLONG``: a path
    component over the file system's 255 bytes, or a path over 4,096), whichever command and
    file it came from; ``None`` for any other ``OSError``. Long components are shown shortened
    (``aaaaaaaaaaaa...(300 characters)``)."""
    import errno

    if exc.errno != errno.ENAMETOOLONG:
        return None
    name = str(exc.filename) if exc.filename is not None else None
    if name is not None:
        name = "/".join(c if len(c) <= 40 else f"{c[:12]}...({len(c)} characters)"
                        for c in name.split("/"))
    return SpdnnError("a file or folder name in the path is too long for the file system "
                      "(File name too long: at most 255 bytes a name)", file=name,
                      hint="shorten the path")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning spdnn errors (and a too-long file name, see
    :func:`name_too_long`) into one line and exit code 2."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        try:
            # without standalone mode, click returns a typer.Exit's code instead of raising it
            code = app(args=argv, prog_name="spdnn", standalone_mode=False)
        except OSError as exc:
            if debug or (too_long := name_too_long(exc)) is None:
                raise
            raise too_long from None
    except SpdnnError as exc:
        if debug:
            raise
        err.print(f"error: {exc.one_line()}", markup=False, highlight=False, soft_wrap=True)
        signum = getattr(exc, "signum", None)
        return 128 + signum if signum else 2
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
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
    return code if isinstance(code, int) and not isinstance(code, bool) else 0
