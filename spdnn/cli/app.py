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
import sys
from typing import Annotated

import typer

from spdnn import __version__
from spdnn.cli import demo, deploy, netspec, train
from spdnn.cli.console import err, out
from spdnn.errors import SpdnnError

app = typer.Typer(
    name="spdnn",
    help="SPDNN network-architecture compiler: merge networks declared as YAML layer graphs into "
         "one semi-parallel network (Bazrafkan et al.), render, inspect and compile them to "
         "PyTorch, train, export to ONNX and benchmark.\n\n"
         "Start with: spdnn merge netspecs/iris/appendix_a/*.yaml -o merged.yaml",
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
             "macs (one sample); e.g. --limits params=1e11,macs=1e14. Defaults: "
             "params=1e10,activations=1e10,macs=1e13; keys left out keep the SPDNN_LIMITS "
             "environment variable's value, or the default.")] = None,
) -> None:
    """Global options (before the command)."""
    # None: SPDNN_LIMITS or the defaults. main() may run several times in one process, so a
    # loaded shape stage is reset; one not loaded yet reads the defaults when it is (and
    # `spdnn --help` stays free of it).
    if limits is not None or "spdnn.shapes" in sys.modules:
        from spdnn.shapes import set_limits

        set_limits(limits)


for _module in (netspec, deploy, train, demo):  # the order of `spdnn --help`
    _module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning spdnn errors into one line and exit code 2."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=False)
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
    return 0
