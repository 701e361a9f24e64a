"""The two consoles of the command line: ``out`` (results, stdout) and ``err`` (errors and
progress, stderr), defined once (every command module imports them from here), and
:func:`plural` for counts in messages."""

from __future__ import annotations

import os
import sys

from rich.console import Console


def _pipe_width() -> int:
    """The width of tables written to a file or pipe (no terminal): ``COLUMNS`` when set, else
    200, wide enough that a comparison table keeps its names and numbers whole."""
    try:
        return max(40, int(os.environ.get("COLUMNS", "")))
    except ValueError:
        return 200


out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else _pipe_width())
err = Console(stderr=True, soft_wrap=True)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``n`` and ``word`` in the number it needs: ``1 step``, ``2 steps``, ``0 steps``,
    ``1,024 parameters`` (thousands separated); ``many`` is the plural when it is not
    ``word + "s"`` (``plural(2, "batch", "batches")``)."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"
