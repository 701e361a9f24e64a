"""Build stage: netspec -> ``torch.nn.Module``, in process or as a standalone Python file.

Both paths read the same :class:`~spdnn.ops.base.Call` from every op, so the emitted module and
the in-process module have identical attributes and ``state_dict`` keys; the test suite checks
that they also compute identical outputs.

Public surface: :func:`build_module`, :func:`emit_module`, :class:`SpdnnModule`. Modules:
:mod:`~spdnn.codegen.emit` (source text; no torch), :mod:`~spdnn.codegen.build` (the in-process
module; the only one that imports torch, loaded on first use of :func:`build_module` or
:class:`SpdnnModule`), :mod:`~spdnn.codegen.blocks` (block instances), :mod:`~spdnn.codegen.helpers`
(the ops' torch helpers), :mod:`~spdnn.codegen.names` (identifiers), :mod:`~spdnn.codegen.runtime`
(the built-in helper modules).
"""

from __future__ import annotations

from typing import Any

from spdnn.codegen.emit import emit_module

__all__ = ["SpdnnModule", "build_module", "emit_module"]

_LAZY = {"SpdnnModule", "build_module"}


def __getattr__(name: str) -> Any:
    """``build_module`` and ``SpdnnModule`` import torch, so they load on first use."""
    if name in _LAZY:
        from spdnn.codegen import build

        return getattr(build, name)
    raise AttributeError(f"module 'spdnn.codegen' has no attribute {name!r}")
