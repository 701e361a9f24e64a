"""Safe Python identifiers from user-given names (no user string reaches generated code raw).

Imports no torch: the attribute names of ``torch.nn.Module`` that a layer attribute must not
shadow are listed in :data:`MODULE_ATTRS` (a test checks the list against the installed torch).
"""

from __future__ import annotations

import builtins
import keyword
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spdnn.spec.models import Netspec

MODULE_ATTRS = frozenset({
    "T_destination", "_apply", "_call_impl", "_compiled_call_impl", "_get_backward_hooks",
    "_get_backward_pre_hooks", "_get_name", "_load_from_state_dict",
    "_maybe_warn_non_full_backward_hook", "_named_members", "_register_load_state_dict_pre_hook",
    "_register_state_dict_hook", "_replicate_for_data_parallel", "_save_to_state_dict",
    "_slow_forward", "_version", "_wrapped_call_impl", "add_module", "apply", "bfloat16",
    "buffers", "call_super_init", "children", "compile", "cpu", "cuda", "double", "dump_patches",
    "eval", "extra_repr", "float", "forward", "get_buffer", "get_extra_state", "get_parameter",
    "get_submodule", "half", "ipu", "load_state_dict", "modules", "mtia", "named_buffers",
    "named_children", "named_modules", "named_parameters", "parameters", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook",
    "register_full_backward_hook", "register_full_backward_pre_hook",
    "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook", "register_module",
    "register_parameter", "register_state_dict_post_hook", "register_state_dict_pre_hook",
    "requires_grad_", "set_extra_state", "set_submodule", "share_memory", "state_dict", "to",
    "to_empty", "train", "type", "xpu", "zero_grad",
})
"""The non-dunder attributes of ``torch.nn.Module`` (torch 2.13); dunder names are always
suffixed anyway."""

_RESERVED = (set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins))
             | MODULE_ATTRS | {"torch", "nn", "self", "F", "x", "spec"})


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
    from spdnn.codegen.helpers import helper_names

    if keyword.iskeyword(ident) or ident in dir(builtins) or ident in helper_names() \
            or ident in ("Tensor", "Module"):
        ident += "Net"
    return ident[:80]


def layer_identifiers(spec: Netspec) -> tuple[dict[str, str], dict[str, str]]:
    """``(input name -> argument identifier, layer name -> attribute/variable identifier)`` of a
    netspec, all unique (inputs first, then layers in declaration order)."""
    taken: set[str] = set()
    ins = {i.name: identifier(i.name, taken) for i in spec.inputs}
    lays = {lay.name: identifier(lay.name, taken) for lay in spec.layers}
    return ins, lays


def comment(text: str) -> str:
    """Text made safe for one ``#`` comment line: ``repr`` escapes newlines and control chars."""
    return repr(text)[1:-1]


def docstring_text(text: str) -> str:
    """Text made safe for one line of a triple-quoted docstring (quotes escaped too)."""
    return comment(text).replace('"', '\\"')
