"""Build stage: netspec -> ``torch.nn.Module``, in process or as a standalone Python file.

Both paths read the same :class:`~spdnn.ops.base.Call` from every op, so the emitted module and
the in-process module have identical attributes and ``state_dict`` keys; the test suite checks
that they also compute identical outputs.

Public surface: :func:`build_module`, :func:`emit_module`, :class:`SpdnnModule`.
"""

from __future__ import annotations

import inspect as _inspect
import re

import torch
from torch import nn

from spdnn import __version__
from spdnn.codegen import runtime
from spdnn.codegen.names import class_name, comment, docstring_text, identifier
from spdnn.shapes import NetInfo, infer
from spdnn.spec import Netspec, spec_hash

__all__ = ["SpdnnModule", "build_module", "emit_module"]

_NAMESPACE = {"nn": nn, **{n: getattr(runtime, n) for n in runtime.__all__}}


def _names(spec: Netspec) -> tuple[dict[str, str], dict[str, str]]:
    """(input name -> arg identifier, layer name -> attribute/variable identifier)."""
    taken: set[str] = set()
    ins = {i.name: identifier(i.name, taken) for i in spec.inputs}
    lays = {lay.name: identifier(lay.name, taken) for lay in spec.layers}
    return ins, lays


class SpdnnModule(nn.Module):
    """A netspec run by an interpreter: one attribute per stateful layer, layers executed in
    topological order.

    ``forward(*inputs)`` takes tensors ``(N, *input.shape)`` in the order of ``spec.inputs`` and
    returns one tensor for a single output, else a dict ``{output name: tensor}``.
    """

    def __init__(self, spec: Netspec, info: NetInfo | None = None) -> None:
        super().__init__()
        info = info or infer(spec)
        self.spec = spec
        self._in_names, self._idents = _names(spec)
        self._plan: list[tuple[str, str | None, list[str]]] = []
        for lay in info.layers:
            call = lay.op.module(list(lay.in_shapes), lay.out_shape)
            attr = None
            if call is not None:
                attr = self._idents[lay.name]
                setattr(self, attr, call.build(_NAMESPACE))
            self._plan.append((lay.name, attr, list(lay.inputs)))
        self._ops = {lay.name: lay for lay in spec.layers}

    def forward(self, *inputs: torch.Tensor):  # noqa: D401
        if len(inputs) != len(self.spec.inputs):
            raise TypeError(f"{self.spec.name} takes {len(self.spec.inputs)} input(s), "
                            f"got {len(inputs)}")
        env = {spec_in.name: t for spec_in, t in zip(self.spec.inputs, inputs)}
        for name, attr, srcs in self._plan:
            mod = getattr(self, attr) if attr is not None else None
            env[name] = self._ops[name].apply(mod, [env[s] for s in srcs])
        outs = {o.name: env[o.from_] for o in self.spec.outputs}
        return next(iter(outs.values())) if len(outs) == 1 else outs


def build_module(spec: Netspec) -> SpdnnModule:
    """Build the netspec as an in-process ``nn.Module`` (see :class:`SpdnnModule`).

    Raises:
        ShapeError: shapes do not fit (from shape inference).
    """
    return SpdnnModule(spec)


def _format_call(src: str, indent: int) -> str:
    """Break long ``nn.Sequential(...)`` and block calls one module per line."""
    head = re.match(r"^(nn\.Sequential|[A-Z][A-Za-z0-9_]*)\(", src)
    if len(src) + indent <= 100 or head is None:
        return src
    inner = src[len(head.group(0)):-1]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        depth += ch in "([{"
        depth -= ch in ")]}"
        cur += ch
    parts.append(cur.strip())
    pad = " " * (indent + 4)
    return (head.group(0) + "\n" + "".join(f"{pad}{_format_call(p, indent + 4)},\n" for p in parts)
            + " " * indent + ")")


def emit_module(spec: Netspec, info: NetInfo | None = None) -> str:
    """Standalone, readable Python source of the netspec as an ``nn.Module`` subclass.

    The file imports only ``torch``; it holds one attribute per layer and a plain ``forward``.
    User-given names appear only as sanitized identifiers or ``repr``-escaped comments.

    Raises:
        ShapeError: shapes do not fit (from shape inference).
    """
    info = info or infer(spec)
    in_names, idents = _names(spec)
    cls = class_name(spec.name)
    helpers: set[str] = set()
    init_lines, fwd_lines = [], []
    var = dict(in_names)
    calls = {lay.name: lay.op.module(list(lay.in_shapes), lay.out_shape) for lay in info.layers}
    block_names, block_src = _block_classes([c for c in calls.values() if c is not None], cls)
    for lay in info.layers:
        call = calls[lay.name]
        attr = None
        if call is not None:
            attr = idents[lay.name]
            helpers |= call.helpers()
            init_lines.append(f"        self.{attr} = {_format_call(call.source(block_names), 8)}")
        args = [var[s] for s in lay.inputs]
        var[lay.name] = idents[lay.name]
        expr = lay.op.forward_expr(attr, args)
        fwd_lines.append(f"        {idents[lay.name]} = {expr}  # {_shape_comment(lay.out_shape)}")
    outs = [(o.name, var[o.from_]) for o in spec.outputs]
    if len(outs) == 1:
        ret = f"        return {outs[0][1]}"
        ret_ann = "torch.Tensor"
    else:
        items = ", ".join(f"{o!r}: {v}" for o, v in outs)
        ret = f"        return {{{items}}}"
        ret_ann = "dict[str, torch.Tensor]"
    sig = ", ".join(f"{in_names[i.name]}: torch.Tensor" for i in spec.inputs)
    io_doc = []
    for i in spec.inputs:
        kind = (f" int64 class indices in [0, {i.num_classes})" if i.dtype == "int64" else "")
        io_doc.append(f"        {in_names[i.name]}: (N, {', '.join(map(str, i.shape))}){kind}")
    out_doc = [f"        {docstring_text(o)}: (N, {', '.join(map(str, info.shapes[v]))})"
               for o, v in ((o.name, o.from_) for o in spec.outputs)]
    deps = sorted({d for h in helpers for d in runtime.DEPENDS.get(h, [])})
    helper_src = "".join("\n\n" + _inspect.getsource(getattr(runtime, h)).rstrip() + "\n"
                         for h in deps + sorted(helpers))
    lines = [
        f'"""{cls}: generated by spdnn {__version__}; do not edit by hand.',
        "",
        "Regenerate with `spdnn compile NETSPEC -o FILE`.",
        '"""',
        f"# netspec: {comment(spec.name)}",
        f"# netspec sha256: {spec_hash(spec)}",
    ]
    for dline in spec.description.strip().splitlines():
        lines.append(f"# {comment(dline)}")
    lines += [
        "",
        "import torch",
        "from torch import nn",
        helper_src.rstrip("\n") if helper_src else "",
        *block_src,
        "",
        "",
        f"class {cls}(nn.Module):",
        f'    """Parameters: {info.params:,}; MACs per sample: {info.macs:,}.',
        "",
        "    Inputs:",
        *io_doc,
        "    Outputs:",
        *out_doc,
        '    """',
        "",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        *init_lines,
        "",
        f"    def forward(self, {sig}) -> {ret_ann}:",
        *fwd_lines,
        ret,
        "",
    ]
    text = "\n".join(lines)
    while "\n\n\n\n" in text:
        text = text.replace("\n\n\n\n", "\n\n\n")
    return text


def _block_classes(calls: list, net_cls: str) -> tuple[dict, list[str]]:
    """One class per block type used (nested blocks first): ``({key: class name}, [source
    lines])``. Instances whose bodies differ in code (not only in sizes) get numbered classes."""
    from spdnn.spec.blocks import block_calls

    names: dict = {}
    src: list[str] = []
    taken = {net_cls, "Tensor", "Module", *runtime.__all__, *runtime.DEPENDS}
    for call in calls:
        for bc in block_calls(call):
            if bc.key in names:
                continue
            base = class_name(bc.block)
            name, n = base, 2
            while name in taken:
                name = f"{base}{n}" if name != net_cls else f"{base}Block"
                n += 1
            taken.add(name)
            names[bc.key] = name
            src += ["", "", bc.class_source(name).rstrip("\n")]
    return names, src


def _shape_comment(shape: tuple[int, ...]) -> str:
    return "(N, " + ", ".join(map(str, shape)) + ")"
