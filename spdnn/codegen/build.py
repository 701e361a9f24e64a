"""In-process build: netspec -> ``torch.nn.Module`` (:class:`SpdnnModule`, an interpreter).

It reads the same :class:`~spdnn.ops.base.Call` from every op as the code generator
(:mod:`spdnn.codegen.emit`), so both have identical attributes and ``state_dict`` keys. This is
the one module of the build stage that imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from spdnn.codegen.blocks import resolve
from spdnn.codegen.helpers import helper_table
from spdnn.codegen.names import layer_identifiers
from spdnn.shapes import NetInfo, check_memory, infer

if TYPE_CHECKING:
    from spdnn.spec.models import Netspec

__all__ = ["BlockModule", "SpdnnModule", "build_module", "namespace"]


class BlockModule(nn.Module):
    """In-process module of one block instance: the submodules as attributes (the same names
    as the emitted block class), ``forward`` interprets the body."""

    def __init__(self, plan: tuple, in_args: tuple[str, ...], out_var: str,
                 **submodules: nn.Module) -> None:
        super().__init__()
        for attr, mod in submodules.items():
            setattr(self, attr, mod)
        self._plan = plan
        self._in_args = in_args
        self._out_var = out_var

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        env = dict(zip(self._in_args, xs))
        for op, attr, args, var in self._plan:
            mod = getattr(self, attr) if attr is not None else None
            env[var] = op.apply(mod, [env[a] for a in args])
        return env[self._out_var]


def namespace() -> dict[str, Any]:
    """What :meth:`~spdnn.ops.base.Call.build` resolves call targets in: ``nn``, the helpers of
    every registered op (:attr:`~spdnn.ops.base.Op.helpers`, imported here) and
    :class:`BlockModule`."""
    return {"nn": nn, "BlockModule": BlockModule,
            **{name: h.load() for name, h in helper_table().items()}}


class SpdnnModule(nn.Module):
    """A netspec run by an interpreter: one attribute per stateful layer, layers executed in
    topological order.

    ``forward(*inputs)`` takes tensors ``(N, *input.shape)`` in the order of ``spec.inputs`` and
    returns one tensor for a single output, else a dict ``{output name: tensor}``.
    """

    def __init__(self, spec: Netspec, info: NetInfo | None = None) -> None:
        super().__init__()
        info = info or infer(spec)
        # a built network's weights are copied at least twice more by what follows: gradients
        # and optimizer state (train), the ONNX file and ONNX Runtime's session (export, bench)
        check_memory(3 * 4 * info.params, f"'{spec.name}' ({info.params:,} float32 parameters) "
                                          "and two copies of its weights")
        self.spec = spec
        self._in_names, self._idents = layer_identifiers(spec)
        self._plan: list[tuple[str, str | None, list[str]]] = []
        ns = namespace()
        for lay in info.layers:
            call = lay.op.module(list(lay.in_shapes), lay.out_shape)
            attr = None
            if call is not None:
                attr = self._idents[lay.name]
                setattr(self, attr, resolve(call).build(ns))
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


def build_module(spec: Netspec, info: NetInfo | None = None) -> SpdnnModule:
    """Build the netspec as an in-process ``nn.Module`` (see :class:`SpdnnModule`); ``info`` is
    its shape inference when already known.

    Raises:
        ShapeError: shapes do not fit (from shape inference), the network passes a size limit,
            or its weights would not fit in the memory available
            (:func:`spdnn.shapes.check_memory`).
    """
    return SpdnnModule(spec, info)
