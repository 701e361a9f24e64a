"""Safe Python identifiers from user-given names (no user string reaches generated code raw)."""

from __future__ import annotations

import builtins
import keyword
import re

import torch

_RESERVED = (set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins))
             | set(dir(torch.nn.Module)) | {"torch", "nn", "self", "F", "x", "spec"})


def identifier(name: str, taken: set[str] | None = None) -> str:
    """A lower-case ASCII identifier derived from ``name``, unique within ``taken`` (updated).

    ``"Conv 1"`` -> ``conv_1``; ``"3x3"`` -> ``layer_3x3``; ``"forward"`` -> ``forward_``;
    ``"import os; os.system('x')"`` -> ``import_os_os_system_x``.
    """
    ident = re.sub(r"[^0-9a-zA-Z_]+", "_", name).strip("_").lower() or "layer"
    if ident[0].isdigit():
        ident = "layer_" + ident
    if ident in _RESERVED or ident.startswith("__"):
        ident += "_"
    ident = ident[:60]
    if taken is not None:
        base, n = ident, 2
        while ident in taken:
            ident = f"{base}_{n}"
            n += 1
        taken.add(ident)
    return ident


def class_name(name: str) -> str:
    """A CamelCase class name from a netspec name: ``iris_a parent-1`` -> ``IrisAParent1``."""
    parts = re.split(r"[^0-9a-zA-Z]+", name)
    ident = "".join(p[:1].upper() + p[1:] for p in parts if p) or "Net"
    if ident[0].isdigit():
        ident = "Net" + ident
    from spdnn.codegen import runtime

    if keyword.iskeyword(ident) or ident in dir(builtins) or ident in runtime.__all__ \
            or ident in ("Tensor", "Module"):
        ident += "Net"
    return ident[:80]


def comment(text: str) -> str:
    """Text made safe for one ``#`` comment line: ``repr`` escapes newlines and control chars."""
    return repr(text)[1:-1]


def docstring_text(text: str) -> str:
    """Text made safe for one line of a triple-quoted docstring (quotes escaped too)."""
    return comment(text).replace('"', '\\"')
