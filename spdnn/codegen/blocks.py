"""Block code generation: a block instance's submodules, ``forward`` code and emitted class.

:meth:`spdnn.spec.blocks.BlockOp.module` returns a :class:`~spdnn.spec.blocks.BlockInstance`
(the instance and its input shapes); :func:`resolve` turns it into a :class:`BlockCall`: one
submodule per stateful body layer (attribute names as the emitted class has them), the body's
``forward`` lines and the interpreter plan. The emitted file holds one ``nn.Module`` class per
block type (:meth:`BlockCall.class_source`) whose ``__init__`` takes the submodules as keyword
arguments, so one class serves every argument value; the in-process builder runs the plan in
:class:`spdnn.codegen.build.BlockModule`. Imports no torch.
"""

from __future__ import annotations

from typing import Any

from spdnn.codegen.names import layer_identifiers
from spdnn.ops.base import Call
from spdnn.spec.blocks import BlockInstance, BlockOp

__all__ = ["BlockCall", "block_calls", "resolve"]


class BlockCall(Call):
    """The constructor call of a block instance: ``Fire(squeeze=..., e1=..., e3=...)``.

    ``kwargs`` are the submodules (attribute -> :class:`Call`); ``in_args``, ``forward`` and
    ``out_var`` are the emitted ``forward`` (argument names, lines, returned variable); ``plan``
    is what the in-process module runs: ``(op, attribute or None, argument names, variable)``
    per body layer.
    """

    def __init__(self, target: str, args: tuple, kwargs: tuple, *, block: str,
                 in_args: tuple[str, ...], forward: tuple[str, ...], out_var: str,
                 plan: tuple, params: tuple[str, ...] = ()) -> None:
        super().__init__(target, args, kwargs)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "block", block)
        object.__setattr__(self, "in_args", in_args)
        object.__setattr__(self, "forward", forward)
        object.__setattr__(self, "out_var", out_var)
        object.__setattr__(self, "plan", plan)

    @property
    def key(self) -> tuple:
        """Instances with equal keys share one emitted class."""
        return (self.block, self.in_args, self.forward, self.out_var,
                tuple(k for k, _ in self.kwargs))

    def build(self, namespace: dict[str, Any]) -> Any:
        """The in-process module: ``namespace["BlockModule"]`` over the built submodules."""
        subs = {k: v.build(namespace) for k, v in self.kwargs}
        return namespace["BlockModule"](self.plan, self.in_args, self.out_var, **subs)

    def source(self, names: dict | None = None) -> str:
        cls = (names or {}).get(self.key, self.block)
        return Call(cls, (), self.kwargs).source(names)

    def helpers(self) -> set[str]:
        out: set[str] = set()
        for c in self.children():
            out |= c.helpers()
        return out

    def class_source(self, cls: str) -> str:
        """Python source of the block class (``cls``: its name in the emitted file)."""
        params = ", ".join(self.params) or "none"
        sig = "".join(f", {k}: nn.Module" for k, _ in self.kwargs)
        lines = [f"class {cls}(nn.Module):",
                 f'    """Block {self.block} (params: {params}); the parent passes the '
                 'submodules."""',
                 "",
                 f"    def __init__(self{sig}) -> None:",
                 "        super().__init__()"]
        lines += [f"        self.{k} = {k}" for k, _ in self.kwargs]
        ins = ", ".join(f"{a}: torch.Tensor" for a in self.in_args)
        lines += ["", f"    def forward(self, {ins}) -> torch.Tensor:"]
        lines += [f"        {line}" for line in self.forward]
        lines += [f"        return {self.out_var}"]
        return "\n".join(lines) + "\n"


def _block_call(op: BlockOp, ins: list) -> BlockCall:
    """The :class:`BlockCall` of block instance ``op`` on input shapes ``ins``."""
    spec, info = op.shaped_body(ins)
    in_names, idents = layer_identifiers(spec)
    var = dict(in_names)
    subs, plan, fwd = [], [], []
    for lay in info.layers:
        call = lay.op.module(list(lay.in_shapes), lay.out_shape)
        attr = None
        if call is not None:
            attr = idents[lay.name]
            subs.append((attr, resolve(call)))
        args = [var[s] for s in lay.inputs]
        var[lay.name] = idents[lay.name]
        plan.append((lay.op, attr, tuple(args), idents[lay.name]))
        fwd.append(f"{idents[lay.name]} = {lay.op.forward_expr(attr, args)}")
    out_var = var[spec.outputs[0].from_]
    return BlockCall(op.block_name, (), tuple(subs), block=op.block_name,
                     in_args=tuple(in_names[i.name] for i in spec.inputs),
                     forward=tuple(fwd), out_var=out_var, plan=tuple(plan),
                     params=tuple(op.block.params))


def resolve(call: Call) -> Call:
    """``call`` with every :class:`~spdnn.spec.blocks.BlockInstance` in it (nested ones too)
    replaced by its :class:`BlockCall`; ``call`` itself when it holds none.

    Raises:
        ShapeError: a block body does not fit its input shapes.
    """
    if isinstance(call, BlockInstance):
        return _block_call(call.op, list(call.ins))
    if isinstance(call, BlockCall) or not call.children():
        return call
    args = tuple(resolve(a) if isinstance(a, Call) else a for a in call.args)
    kwargs = tuple((k, resolve(v) if isinstance(v, Call) else v) for k, v in call.kwargs)
    if args == call.args and kwargs == call.kwargs:
        return call
    return Call(call.target, args, kwargs)


def block_calls(call: Call) -> list[BlockCall]:
    """The block calls inside a resolved ``call`` (nested ones first), ``call`` included."""
    out: list[BlockCall] = []
    for c in call.children():
        out += block_calls(c)
    if isinstance(call, BlockCall):
        out.append(call)
    return out
