"""The torch helpers of the registered ops: which exist, and their source text for emitted files.

Every op that needs a module beyond ``torch.nn`` points at it with
:attr:`spdnn.ops.base.Op.helpers` (a :class:`~spdnn.ops.base.Helper`, ``"module:Name"``), so no
list of helpers is kept here. :func:`helper_table` collects them from the registry;
:func:`helpers_source` reads their source straight from the defining file (with :mod:`ast`, no
import), so emitting code needs no torch. Only module-level classes and functions can be
helpers.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from functools import cache
from pathlib import Path

from spdnn.ops import OPS, Helper

__all__ = ["helper_names", "helper_table", "helpers_source"]


def helper_table() -> dict[str, Helper]:
    """Helper name -> :class:`~spdnn.ops.base.Helper`, over every registered op.

    Raises:
        ValueError: two ops name one helper but point at different objects.
    """
    table: dict[str, Helper] = {}
    for cls in OPS.values():
        for h in cls.helpers:
            if h.name in table and table[h.name].path != h.path:
                raise ValueError(f"helper {h.name!r} is both {table[h.name].path} and {h.path}")
            table.setdefault(h.name, h)
    return table


def helper_names() -> set[str]:
    """The names emitted files may define for helpers (helper classes and what they need)."""
    return {n for h in helper_table().values() for n in (h.name, *h.needs)}


@cache
def _definitions(module: str, file: str) -> dict[str, str]:
    """Source text of every top-level class and function of ``file`` (``module``'s file)."""
    text = Path(file).read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    out: dict[str, str] = {}
    for node in ast.parse(text, filename=file).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            out[node.name] = "".join(lines[start - 1:node.end_lineno])
    return out


def _source(module: str, name: str) -> str:
    mod = sys.modules.get(module)
    file = getattr(mod, "__file__", None)
    if file is None:
        spec = importlib.util.find_spec(module)
        file = spec.origin if spec is not None else None
    if file is None:
        raise ValueError(f"cannot find the source of helper module {module!r}")
    defs = _definitions(module, file)
    if name not in defs:
        raise ValueError(f"helper {name!r} is not a top-level class or function of {module}")
    return defs[name]


def helpers_source(names: set[str]) -> str:
    """The source of the helpers ``names`` (the targets of a network's calls) for an emitted
    file: first the functions they need (sorted), then the helpers (sorted), each preceded by
    two blank lines.

    Raises:
        KeyError: a name is no registered op's helper.
        ValueError: its source cannot be found.
    """
    table = helper_table()
    needs: dict[str, str] = {}  # needed name -> module that defines it
    for n in names:
        for d in table[n].needs:
            needs.setdefault(d, table[n].module)
    parts = [(needs[d], d) for d in sorted(needs)] + [(table[n].module, n) for n in sorted(names)]
    return "".join("\n\n" + _source(m, n).rstrip() + "\n" for m, n in parts)
