"""Layers for selective feature regeneration: ``ChannelSlice`` (a contiguous channel range).

Serves Generative Sensing (Karam et al., sec. 3: generative units are "applied only
to features ... corresponding to significant" differences, "while leaving all other features
... unchanged"), built like DeepCorrect (Borkar & Karam, arXiv 1705.02406, and its public
code): the corrected channels are split off a feature map, corrected, and concatenated back
with the rest.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from spdnn.ops.base import Op, Shape, register_op
from spdnn.ops.types import NonNegInt, PosInt


@register_op
class ChannelSlice(Op):
    """A contiguous range of channels, ``x[:, start:stop]`` (a view; no parameters, no MACs).

    Source: Generative Sensing (Karam et al., sec. 3) and DeepCorrect (its public code):
    a generative (correction) unit reads only the top-ranked channels of a layer's output and
    the rest pass unchanged; DeepCorrect's code splits the ranked feature map with
    ``x[:, :n]`` / ``x[:, n:]`` Lambda layers. Ranking is data dependent, so a netspec fixes
    the convention "the first n channels are the corrected ones" and the trainer permutes the
    producing layer's filters (and the consuming layer's input channels) to match.

    Shapes: ``(C, H, W) -> (stop - start, H, W)``, or ``(F,) -> (stop - start,)`` for a vector
    (the slice is always along axis 1 of the batched tensor). Params: ``start`` (>= 0, default
    0), ``stop`` (> start, <= C; omitted: up to the last channel). In SPDNN labelling it is a
    ``reshape`` (it changes the channel count without computing anything).
    """

    op: Literal["ChannelSlice"]
    start: NonNegInt = 0
    stop: PosInt | None = None

    kind = "reshape"
    onnx_exportable: ClassVar[bool] = True

    @model_validator(mode="after")
    def _ordered(self) -> ChannelSlice:
        if self.stop is not None and self.stop <= self.start:
            raise ValueError(f"stop ({self.stop}) must be larger than start ({self.start})")
        return self

    def bounds(self, channels: int) -> tuple[int, int]:
        return self.start, (channels if self.stop is None else self.stop)

    def infer_shape(self, ins: list[Shape]) -> Shape:
        shape = tuple(ins[0])
        c = shape[0]
        start, stop = self.bounds(c)
        if stop > c or start >= c:
            raise self.fail(f"channels {start}:{stop} are out of range for an input with {c} "
                            f"channels", hint=f"use start < stop <= {c}")
        return (stop - start, *shape[1:])

    def _index(self) -> str:
        return f"{self.start or ''}:{'' if self.stop is None else self.stop}"

    def apply(self, mod, xs):
        return xs[0][:, self.start:self.stop]

    def forward_expr(self, attr, args):
        return f"{args[0]}[:, {self._index()}]"
