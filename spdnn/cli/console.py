"""The two consoles of the command line: ``out`` (results, stdout) and ``err`` (errors and
progress, stderr). Defined once; every command module imports them from here."""

from __future__ import annotations

import sys

from rich.console import Console

out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, soft_wrap=True)
