"""The export view of a built network: one module scope per netspec layer.

The exporters record the module each ONNX node comes from; giving every netspec layer its own
module (Concat and Flatten included) is what lets :mod:`spdnn.export.diagnose` trace an export
failure or a parity mismatch back to a layer of the netspec.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LayerCall", "Traceable"]


class LayerCall(nn.Module):
    """One netspec layer as a module, so that every layer (Concat and Flatten included) gets a
    module scope in the exported graph; failures and mismatches are traced back through it."""

    def __init__(self, layer: str, op, mod: nn.Module | None) -> None:
        super().__init__()
        self.layer = layer
        self.op = op
        self.m = mod

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.op.apply(self.m, list(xs))


class Traceable(nn.Module):
    """The export view of a :class:`~spdnn.codegen.SpdnnModule`: the same submodules (shared,
    not copied), one :class:`LayerCall` scope per layer, outputs as a tuple in netspec order.

    Attributes:
        scopes: module path -> netspec layer name.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        spec = module.spec
        self._inputs = [i.name for i in spec.inputs]
        self._outputs = [(o.name, o.from_) for o in spec.outputs]
        self._steps: list[tuple[str, str, list[str]]] = []
        self.scopes: dict[str, str] = {}
        ops = {lay.name: lay for lay in spec.layers}
        for name, attr, srcs in module._plan:
            ident = module._idents[name]
            mod = getattr(module, attr) if attr is not None else None
            key = ident
            while hasattr(self, key) and key not in self._modules:
                key = key + "_"
            self.add_module(key, LayerCall(name, ops[name], mod))
            self._steps.append((key, name, srcs))
            self.scopes[key] = name

    def forward(self, *inputs: torch.Tensor):
        env = dict(zip(self._inputs, inputs))
        for key, name, srcs in self._steps:
            env[name] = self._modules[key](*[env[s] for s in srcs])
        outs = tuple(env[src] for _, src in self._outputs)
        return outs[0] if len(outs) == 1 else outs
