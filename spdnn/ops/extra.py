"""More layers: ``PixelShuffle``, ``Embedding``, ``Mul`` and ``Softplus``."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import ClassVar, Literal

from pydantic import Field

from spdnn.ops.base import Call, Op, Shape, register_op
from spdnn.ops.types import PosInt


@register_op
class PixelShuffle(Op):
    """Sub-pixel upsampling (``torch.nn.PixelShuffle``): every ``r^2`` channels become one
    channel of ``r x r`` blocks.

    Source: Shi et al., CVPR 2016, sec. 2.2 (the periodic shuffling operator PS).

    Shapes: ``(C * r^2, H, W) -> (C, H * r, W * r)`` with ``r = upscale_factor``; the input
    channels must be divisible by ``r^2``. No parameters, no MACs (a reshape). In SPDNN
    labelling it is a resampling op that divides the sticky pooling factor by ``r``.
    """

    op: Literal["PixelShuffle"]
    upscale_factor: PosInt = 2

    kind = "resample"
    onnx_exportable: ClassVar[bool] = True

    def infer_shape(self, ins: list[Shape]) -> Shape:
        c, h, w = self.need_spatial(ins[0])
        r2 = self.upscale_factor ** 2
        if c % r2:
            raise self.fail(f"input channels {c} must be divisible by upscale_factor^2 = {r2}",
                            hint=f"give the layer before it a multiple of {r2} channels")
        return (c // r2, h * self.upscale_factor, w * self.upscale_factor)

    def module(self, ins: list[Shape], out: Shape) -> Call:
        return Call.of("nn.PixelShuffle", self.upscale_factor)

    def resample_factor(self) -> Fraction:
        return Fraction(1, self.upscale_factor)


@register_op
class Embedding(Op):
    """A learned lookup table from a class index to a vector (``torch.nn.Embedding``), the
    label embedding of conditional GANs.

    Used as ``nn.Embedding(n_classes, dim)`` by common ACGAN/CGAN generators (the label input
    of G; Mirza & Osindero 2014, sec. 4.1; Odena et al. 2017, sec. 3).

    Shapes: ``(1,) -> (embedding_dim,)``: the input holds one class index per sample, shape
    ``(N, 1)``; the output is ``(N, embedding_dim)``. Index range ``0 .. num_embeddings - 1``
    (torch raises ``IndexError`` outside). The index is cast with ``.long()`` in ``forward``,
    so an integer tensor and an integer-valued float tensor both work (a float is truncated).

    Declaring the input: ``input: {name: label, features: 1}`` (a vector input of one
    feature, fed as ``(N, 1)`` integers or integer-valued floats).

    Params: ``num_embeddings`` (number of classes), ``embedding_dim``; parameters
    ``num_embeddings * embedding_dim``; MACs 0 (a gather).
    """

    op: Literal["Embedding"]
    num_embeddings: PosInt
    embedding_dim: PosInt

    kind = "rider"
    reads_class_indices = True
    onnx_exportable: ClassVar[bool] = True

    def infer_shape(self, ins: list[Shape]) -> Shape:
        if tuple(ins[0]) != (1,):
            raise self.fail(f"expects one class index per sample, shape (1,), got {ins[0]}",
                            hint="declare the input as 'features: 1'")
        return (self.embedding_dim,)

    def num_params(self, ins: list[Shape], out: Shape) -> int:
        return self.num_embeddings * self.embedding_dim

    def module(self, ins: list[Shape], out: Shape) -> Call:
        return Call.of("nn.Embedding", self.num_embeddings, self.embedding_dim)

    def apply(self, mod, xs):
        return mod(xs[0][:, 0].long())

    def forward_expr(self, attr, args):
        return f"self.{attr}({args[0]}[:, 0].long())"


@register_op
class Mul(Op):
    """Element-wise product of two or more inputs (gating, attention, FiLM-style scaling).

    Shapes: all inputs have the same rank; along every axis the sizes are equal or 1 (torch
    broadcasting without adding axes), e.g. ``(C, H, W) * (C, 1, 1) -> (C, H, W)`` or
    ``(C, H, W) * (1, H, W)``. Output: the broadcast shape. MACs: one multiply per output
    element and extra input. A junction op, like ``Add``.
    """

    op: Literal["Mul"]

    kind = "junction"
    min_inputs = 2
    max_inputs = None
    onnx_exportable: ClassVar[bool] = True

    def infer_shape(self, ins: list[Shape]) -> Shape:
        shown = ", ".join(str(s) for s in ins)
        if len({len(s) for s in ins}) != 1:
            raise self.fail(f"inputs must have the same rank; got {shown}",
                            hint="reshape e.g. a (C,) vector to (C, 1, 1) first")
        out = []
        for sizes in zip(*ins):
            big = {d for d in sizes if d != 1}
            if len(big) > 1:
                raise self.fail(f"inputs must have identical or broadcastable (size 1) axes; "
                                f"got {shown}")
            out.append(big.pop() if big else 1)
        return tuple(out)

    def macs(self, ins: list[Shape], out: Shape) -> int:
        return math.prod(out) * (len(ins) - 1)

    def apply(self, mod, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out

    def forward_expr(self, attr, args):
        return " * ".join(args)


@register_op
class Softplus(Op):
    """Softplus ``log(1 + exp(beta * x)) / beta`` (``torch.nn.Softplus``), a smooth ReLU with
    positive output; linear (``x``) where ``beta * x > threshold`` for numerical stability.

    Shapes: unchanged. Params: ``beta`` (> 0, default 1.0), ``threshold`` (> 0, default 20.0).
    """

    op: Literal["Softplus"]
    beta: float = Field(default=1.0, gt=0.0)
    threshold: float = Field(default=20.0, gt=0.0)

    kind = "rider"
    onnx_exportable: ClassVar[bool] = True

    def module(self, ins: list[Shape], out: Shape) -> Call:
        kw: dict = {}
        if self.beta != 1.0:
            kw["beta"] = float(self.beta)
        if self.threshold != 20.0:
            kw["threshold"] = float(self.threshold)
        return Call.of("nn.Softplus", **kw)

