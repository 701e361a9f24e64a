"""Linear, pooling/unpooling, reshaping, junction, dropout and activation layers."""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from spdnn.ops.base import (
    ActivationName,
    Call,
    Op,
    Shape,
    activation_call,
    fused_text,
    one_text,
    pair,
    register_op,
    sequential,
)
from spdnn.ops.types import Pad2, PosInt, Probability, Size2


# --------------------------------------------------------------------------------------------
# Fully connected
# --------------------------------------------------------------------------------------------
@register_op
class Linear(Op):
    """Fully connected layer (``torch.nn.Linear``), optional BatchNorm1d and activation.

    Shapes: ``(F,) -> (out_features,)``; a ``(C, H, W)`` input is flattened first (C-major, as
    ``torch.flatten(x, 1)``). SPDNN structure code ``nF`` with ``n = out_features`` (thesis
    ch. 3.1 (c)); a fully connected layer clears the sticky pooling factor.
    ``spectral_norm: true`` wraps the layer in ``torch.nn.utils.parametrizations.spectral_norm``
    (Miyato et al., ICLR 2018; same parameter count, buffers ``u``, ``v``).
    """

    op: Literal["Linear"]
    out_features: PosInt
    bias: bool | None = None
    batch_norm: bool = False
    activation: ActivationName | None = None
    negative_slope: float = 0.01
    spectral_norm: bool = False

    kind = "compute"
    clears_factor = True
    draw_class = "linear"

    @property
    def use_bias(self) -> bool:
        return (not self.batch_norm) if self.bias is None else self.bias

    def label_parts(self) -> tuple[str, list[str]]:
        return f"Linear {self.out_features}", fused_text(self)

    def infer_shape(self, ins: list[Shape]) -> Shape:
        return (self.out_features,)

    def num_params(self, ins: list[Shape], out: Shape) -> int:
        fin = math.prod(ins[0])
        return fin * self.out_features + self.out_features * (
            int(self.use_bias) + 2 * int(self.batch_norm))

    def macs(self, ins: list[Shape], out: Shape) -> int:
        return math.prod(ins[0]) * self.out_features

    def module(self, ins: list[Shape], out: Shape) -> Call:
        calls = []
        if len(ins[0]) != 1:
            calls.append(Call.of("nn.Flatten"))
        kw = {} if self.use_bias else {"bias": False}
        linear = Call.of("nn.Linear", math.prod(ins[0]), self.out_features, **kw)
        if self.spectral_norm:
            linear = Call("nn.utils.parametrizations.spectral_norm", (linear,))
        calls.append(linear)
        if self.batch_norm:
            calls.append(Call.of("nn.BatchNorm1d", self.out_features))
        act = activation_call(self.activation, self.negative_slope)
        if act is not None:
            calls.append(act)
        return sequential(calls)

    def structure(self) -> str:
        return f"{self.out_features}F"


# --------------------------------------------------------------------------------------------
# Pooling and unpooling (sticky SPDNN properties, never graph nodes)
# --------------------------------------------------------------------------------------------
class _Pool(Op):
    kernel_size: Size2
    stride: Size2 | None = None
    padding: Pad2 = 0
    ceil_mode: bool = False

    kind = "resample"

    def _stride(self) -> tuple[int, int]:
        return pair(self.stride if self.stride is not None else self.kernel_size)

    def infer_shape(self, ins: list[Shape]) -> Shape:
        c, h, w = self.need_spatial(ins[0])
        dims = []
        rnd = math.ceil if self.ceil_mode else math.floor
        for n, k, s, p in zip((h, w), pair(self.kernel_size), self._stride(), pair(self.padding)):
            if 2 * p > k:
                raise self.fail(f"padding {p} must be at most half of kernel_size {k}")
            o = rnd((n + 2 * p - k) / s) + 1
            if self.ceil_mode and (o - 1) * s >= n + p:
                o -= 1
            if o < 1:
                raise self.fail(f"kernel_size {k} is larger than the input size {n}")
            dims.append(o)
        return (c, dims[0], dims[1])

    def macs(self, ins: list[Shape], out: Shape) -> int:
        kh, kw = pair(self.kernel_size)
        return math.prod(out) * kh * kw

    def _kw(self) -> dict:
        kw: dict = {"kernel_size": self.kernel_size if isinstance(self.kernel_size, int)
                    else tuple(self.kernel_size)}
        if self.stride is not None and pair(self.stride) != pair(self.kernel_size):
            kw["stride"] = self.stride if isinstance(self.stride, int) else tuple(self.stride)
        if pair(self.padding) != (0, 0):
            kw["padding"] = self.padding if isinstance(self.padding, int) else tuple(self.padding)
        if self.ceil_mode:
            kw["ceil_mode"] = True
        return kw

    def resample_factor(self) -> Fraction:
        return Fraction(self._stride()[0])

    @classmethod
    def resampling_layer(cls, factor: Fraction) -> dict[str, Any] | None:
        """A ``factor x factor`` pool of this class (integer factors above 1)."""
        if factor <= 1 or factor.denominator != 1:
            return None
        return {"op": cls.__name__, "kernel_size": int(factor)}

    def label_parts(self) -> tuple[str, list[str]]:
        extra = []
        if self.stride is not None and one_text(self.stride) != one_text(self.kernel_size):
            extra.append(f"stride {one_text(self.stride)}")
        return f"{self.op_name} {one_text(self.kernel_size)}", extra


@register_op
class MaxPool2d(_Pool):
    """Max pooling (``torch.nn.MaxPool2d``); ``stride`` defaults to ``kernel_size``.

    Shapes: ``(C, H, W) -> (C, H', W')``, ``H' = floor((H + 2p - k) / s) + 1``. In SPDNN
    labelling it is not a node; it multiplies the sticky pooling factor by ``stride``.
    """

    op: Literal["MaxPool2d"]

    def module(self, ins: list[Shape], out: Shape) -> Call:
        return Call.of("nn.MaxPool2d", **self._kw())


@register_op
class AvgPool2d(_Pool):
    """Average pooling (``torch.nn.AvgPool2d``); see :class:`MaxPool2d`."""

    op: Literal["AvgPool2d"]
    count_include_pad: bool = True

    def module(self, ins: list[Shape], out: Shape) -> Call:
        kw = self._kw()
        if not self.count_include_pad:
            kw["count_include_pad"] = False
        return Call.of("nn.AvgPool2d", **kw)


@register_op
class Unpool(Op):
    """Value-repeating unpooling (thesis App. B sec. 2.1.1, Fig. 3): every value is repeated
    ``scale_factor x scale_factor`` times, i.e. nearest-neighbour upsampling.

    Shapes: ``(C, H, W) -> (C, H*s, W*s)``. Divides the sticky pooling factor by ``s``.
    """

    op: Literal["Unpool"]
    scale_factor: PosInt = 2

    kind = "resample"

    def infer_shape(self, ins: list[Shape]) -> Shape:
        c, h, w = self.need_spatial(ins[0])
        return (c, h * self.scale_factor, w * self.scale_factor)

    def module(self, ins: list[Shape], out: Shape) -> Call:
        return Call.of("nn.Upsample", scale_factor=float(self.scale_factor), mode="nearest")

    def resample_factor(self) -> Fraction:
        return Fraction(1, self.scale_factor)

    @classmethod
    def resampling_layer(cls, factor: Fraction) -> dict[str, Any] | None:
        """A value-repeating unpool by ``k`` for ``factor = 1/k``."""
        if factor >= 1 or factor.numerator != 1:
            return None
        return {"op": cls.__name__, "scale_factor": int(1 / factor)}

    def label_parts(self) -> tuple[str, list[str]]:
        return f"Unpool x{self.scale_factor}", []


@register_op
class Upsample(Op):
    """Upsampling by an integer factor (``torch.nn.Upsample``), nearest or bilinear.

    Shapes: ``(C, H, W) -> (C, H*s, W*s)``. Divides the sticky pooling factor by ``s``.
    """

    op: Literal["Upsample"]
    scale_factor: PosInt = 2
    mode: Literal["nearest", "bilinear"] = "nearest"

    kind = "resample"

    def infer_shape(self, ins: list[Shape]) -> Shape:
        c, h, w = self.need_spatial(ins[0])
        return (c, h * self.scale_factor, w * self.scale_factor)

    def macs(self, ins: list[Shape], out: Shape) -> int:
        return math.prod(out) * (4 if self.mode == "bilinear" else 0)

    def module(self, ins: list[Shape], out: Shape) -> Call:
        kw: dict = {"scale_factor": float(self.scale_factor), "mode": self.mode}
        if self.mode == "bilinear":
            kw["align_corners"] = False
        return Call.of("nn.Upsample", **kw)

    def resample_factor(self) -> Fraction:
        return Fraction(1, self.scale_factor)

    def label_parts(self) -> tuple[str, list[str]]:
        return f"Upsample x{self.scale_factor}", (["bilinear"] if self.mode == "bilinear" else [])


def resampling_layer(factor: Fraction, like: Iterable[Op] = ()) -> dict[str, Any]:
    """Netspec data (no name or inputs) of the layer that multiplies the sticky pooling factor
    by ``factor`` where a merged edge must be resampled (thesis ch. 3.1 (d); depth paper
    App. A.2.1: "the pooling quality will be recalled from the original network").

    The first op of ``like`` (the layers on the edge, then the parents' layers) whose class
    answers :meth:`~spdnn.ops.base.Op.resampling_layer` gives it; otherwise a
    :class:`MaxPool2d` for ``factor > 1`` and a value-repeating :class:`Unpool` for ``1/k``.

    Raises:
        ValueError: ``factor`` is neither an integer above 1 nor ``1/k``.
    """
    for op in like:
        data = type(op).resampling_layer(factor)
        if data is not None:
            return data
    for cls in (MaxPool2d, Unpool):
        data = cls.resampling_layer(factor)
        if data is not None:
            return data
    raise ValueError(f"cannot resample by {factor}")


# --------------------------------------------------------------------------------------------
# Shape changes, regularisation, junctions
# --------------------------------------------------------------------------------------------
@register_op
class Flatten(Op):
    """Flatten a feature map to a vector: ``(C, H, W) -> (C*H*W,)`` (``torch.flatten(x, 1)``)."""

    op: Literal["Flatten"]

    kind = "reshape"

    def infer_shape(self, ins: list[Shape]) -> Shape:
        return (math.prod(ins[0]),)

    def apply(self, mod, xs):
        import torch

        return torch.flatten(xs[0], 1)

    def forward_expr(self, attr, args):
        return f"torch.flatten({args[0]}, 1)"


@register_op
class GlobalAvgPool2d(Op):
    """Global average pooling to a vector: ``(C, H, W) -> (C,)`` (the mean over H and W, as
    ``nn.AdaptiveAvgPool2d(1)`` followed by a flatten; SqueezeNet's classifier head). It ends
    spatial data, so for SPDNN it is a reshape (it clears the sticky pooling factor)."""

    op: Literal["GlobalAvgPool2d"]

    kind = "reshape"

    def infer_shape(self, ins: list[Shape]) -> Shape:
        c, _, _ = self.need_spatial(ins[0])
        return (c,)

    def macs(self, ins: list[Shape], out: Shape) -> int:
        return math.prod(ins[0])

    def apply(self, mod, xs):
        return xs[0].mean(dim=(2, 3))

    def forward_expr(self, attr, args):
        return f"{args[0]}.mean(dim=(2, 3))"


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """The pooling windows ``[start, end)`` of adaptive pooling along one axis of ``size``
    values pooled to ``out`` values: ``start = floor(i * size / out)``,
    ``end = ceil((i + 1) * size / out)`` (torch's ``adaptive_avg_pool2d``; windows overlap by
    one value where ``out`` does not divide ``size``)."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


@register_op
class AdaptiveAvgPool2d(Op):
    """Average pooling to a fixed output size, whatever the input size
    (``torch.nn.AdaptiveAvgPool2d``).

    Shapes: ``(C, H, W) -> (C, h, w)``; ``output_size`` is ``h`` (square) or a pair ``h, w``
    (YAML ``[h, w]``). Output value ``(i, j)`` is the mean of the input window that
    :func:`adaptive_windows` gives. VGG's 7x7 pool before its classifier (Simonyan & Zisserman,
    ICLR 2015, Table 1, as in torchvision's ``vgg.py``); ``output_size: 1`` is a global pool
    that keeps a 1x1 map.

    MACs: one add per input value read, ``C * sum(window heights) * sum(window widths)``
    (``C*H*W`` when ``h`` divides ``H`` and ``w`` divides ``W``).
    SPDNN: a ``reshape`` op, the sticky pooling factor is read off the new resolution.
    ONNX: the default (dynamo) exporter handles every size; the TorchScript exporter
    (``opset`` < 18) only sizes that divide the input, and fails otherwise with a one-line error
    naming the layer.
    """

    op: Literal["AdaptiveAvgPool2d"]
    output_size: Size2

    kind = "reshape"

    def infer_shape(self, ins: list[Shape]) -> Shape:
        c, _, _ = self.need_spatial(ins[0])
        h, w = pair(self.output_size)
        return (c, h, w)

    def macs(self, ins: list[Shape], out: Shape) -> int:
        c, h, w = ins[0]
        rows = sum(b - a for a, b in adaptive_windows(h, out[1]))
        cols = sum(b - a for a, b in adaptive_windows(w, out[2]))
        return c * rows * cols

    def module(self, ins: list[Shape], out: Shape) -> Call:
        h, w = pair(self.output_size)
        return Call.of("nn.AdaptiveAvgPool2d", h if h == w else (h, w))

    def label_parts(self) -> tuple[str, list[str]]:
        h, w = pair(self.output_size)
        return f"AdaptiveAvgPool2d {h}x{w}", []

    def onnx_unsupported(self, ins: list[Shape], out: Shape, exporter: str) -> str | None:
        """The TorchScript exporter exports adaptive pooling only as a fixed pool, i.e. when
        the output size divides the input size (torch raises "output size that are not factor
        of input size" otherwise); the dynamo exporter handles every size."""
        _, h, w = ins[0]
        if exporter == "torchscript" and (h % out[1] or w % out[2]):
            return (f"the TorchScript exporter (opset < 18) cannot export adaptive pooling "
                    f"from {h}x{w} to {out[1]}x{out[2]} (the output size must divide the "
                    "input size); use opset 18 or more (the default exporter) or an output "
                    "size that divides the input")
        return None


@register_op
class Reshape(Op):
    """Reshape each sample to ``shape`` (batch axis kept), e.g. ``[1, 10, 33]`` turns a
    330-vector into a 1x10x33 map (thesis App. B, global head). One entry may be ``-1``.

    Shapes: ``S -> shape`` with ``prod(S) == prod(shape)``.
    """

    op: Literal["Reshape"]
    shape: list[int] = Field(min_length=1, max_length=3)

    kind = "reshape"

    @model_validator(mode="after")
    def _check(self) -> Reshape:
        if sum(1 for d in self.shape if d == -1) > 1 or any(d == 0 or d < -1 for d in self.shape):
            raise ValueError("shape entries must be positive, with at most one -1")
        return self

    def label_parts(self) -> tuple[str, list[str]]:
        return f"Reshape {'x'.join(str(v) for v in self.shape)}", []

    def infer_shape(self, ins: list[Shape]) -> Shape:
        n = math.prod(ins[0])
        known = math.prod(d for d in self.shape if d != -1)
        if -1 in self.shape:
            if n % known:
                raise self.fail(f"cannot reshape {n} values into {self.shape}")
            return tuple(n // known if d == -1 else d for d in self.shape)
        if known != n:
            raise self.fail(f"cannot reshape input of shape {ins[0]} ({n} values) into "
                            f"{tuple(self.shape)} ({known} values)")
        return tuple(self.shape)

    def apply(self, mod, xs):
        return xs[0].reshape(xs[0].shape[0], *self.shape)

    def forward_expr(self, attr, args):
        dims = ", ".join(str(d) for d in self.shape)
        return f"{args[0]}.reshape({args[0]}.shape[0], {dims})"


@register_op
class Dropout(Op):
    """Dropout with probability ``p`` (``torch.nn.Dropout``); identity at inference."""

    op: Literal["Dropout"]
    p: Probability = 0.5

    def label_parts(self) -> tuple[str, list[str]]:
        return f"Dropout {self.p:g}", []

    def module(self, ins: list[Shape], out: Shape) -> Call:
        return Call.of("nn.Dropout", p=float(self.p))


@register_op
class Concat(Op):
    """Concatenate on the channel axis (``torch.cat(xs, dim=1)``).

    Shapes: ``(C_i, H, W) -> (sum C_i, H, W)``, or ``(F_i,) -> (sum F_i,)``. All inputs must
    agree on H and W. This is how SPDNN joins branches (thesis ch. 3.1, "turn back the graph").
    """

    op: Literal["Concat"]

    kind = "junction"
    min_inputs = 2
    max_inputs = None
    shown_on_edges = False

    def infer_shape(self, ins: list[Shape]) -> Shape:
        ranks = {len(s) for s in ins}
        if ranks == {1}:
            return (sum(s[0] for s in ins),)
        if ranks == {3} and len({s[1:] for s in ins}) == 1:
            return (sum(s[0] for s in ins),) + ins[0][1:]
        raise self.fail("inputs must all be vectors, or feature maps of the same height and "
                        f"width; got {', '.join(str(s) for s in ins)}",
                        hint="resample the inputs to one resolution first")

    def apply(self, mod, xs):
        import torch

        return torch.cat(xs, dim=1)

    def forward_expr(self, attr, args):
        return f"torch.cat([{', '.join(args)}], dim=1)"


@register_op
class Add(Op):
    """Element-wise sum of inputs of identical shape (residual connections).

    SPDNN merging refuses networks with an Add at top level (a merge joins branches by
    concatenation only); inside a block instance it is fine."""

    op: Literal["Add"]

    kind = "junction"
    min_inputs = 2
    max_inputs = None
    mergeable = False

    def infer_shape(self, ins: list[Shape]) -> Shape:
        if len(set(ins)) != 1:
            raise self.fail(f"inputs must have identical shapes; got "
                            f"{', '.join(str(s) for s in ins)}")
        return ins[0]

    def macs(self, ins: list[Shape], out: Shape) -> int:
        return 0

    def apply(self, mod, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out

    def forward_expr(self, attr, args):
        return " + ".join(args)


# --------------------------------------------------------------------------------------------
# Stand-alone activations
# --------------------------------------------------------------------------------------------
class _Activation(Op):
    kind = "rider"
    act_fn: ClassVar[str] = "none"
    """The op's entry of :data:`~spdnn.ops.base.ACTIVATIONS`."""

    def activation_name(self) -> str:
        """The :data:`~spdnn.ops.base.ACTIVATIONS` entry this layer computes."""
        return self.act_fn

    def module(self, ins: list[Shape], out: Shape) -> Call:
        call = activation_call(self.activation_name(), getattr(self, "negative_slope", 0.01))
        assert call is not None
        return call


@register_op
class ReLU(_Activation):
    """Rectified linear unit, ``max(0, x)``; shape unchanged."""

    op: Literal["ReLU"]
    act_fn = "relu"


@register_op
class LeakyReLU(_Activation):
    """Leaky ReLU, ``x if x > 0 else negative_slope * x``; shape unchanged."""

    op: Literal["LeakyReLU"]
    negative_slope: float = 0.01
    act_fn = "leaky_relu"

    def label_parts(self) -> tuple[str, list[str]]:
        return f"LeakyReLU {self.negative_slope:g}", []


@register_op
class ELU(_Activation):
    """Exponential linear unit (BEGAN's activation, thesis 3.3); shape unchanged."""

    op: Literal["ELU"]
    act_fn = "elu"


@register_op
class Sigmoid(_Activation):
    """Logistic sigmoid, output in (0, 1); shape unchanged."""

    op: Literal["Sigmoid"]
    act_fn = "sigmoid"


@register_op
class Tanh(_Activation):
    """Hyperbolic tangent, output in (-1, 1); shape unchanged."""

    op: Literal["Tanh"]
    act_fn = "tanh"


@register_op
class Softmax(_Activation):
    """Softmax over the channel axis (dim 1); shape unchanged."""

    op: Literal["Softmax"]
    act_fn = "softmax"


@register_op
class ReLU6(_Activation):
    """ReLU capped at 6, ``min(max(0, x), 6)`` (``torch.nn.ReLU6``), MobileNetV2's activation
    ("ReLU6 because of its robustness when used with low-precision computation", Sandler et al.,
    CVPR 2018, sec. 3.2, Table 1). Shape unchanged; ONNX ``Clip(0, 6)``."""

    op: Literal["ReLU6"]
    act_fn = "relu6"


@register_op
class SiLU(_Activation):
    """Sigmoid-weighted linear unit ``x * sigmoid(x)`` (``torch.nn.SiLU``; Elfwing et al.,
    Neural Networks 2018, eq. 4; "Swish-1", Ramachandran et al. 2017). Shape unchanged."""

    op: Literal["SiLU"]
    act_fn = "silu"


@register_op
class GELU(_Activation):
    """Gaussian error linear unit ``x * Phi(x)`` (``torch.nn.GELU``; Hendrycks & Gimpel 2016,
    sec. 2). ``approximate: tanh`` uses their approximation
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``; ``none`` (default) the exact erf form.
    Shape unchanged; ONNX ``Gelu`` (opset 20)."""

    op: Literal["GELU"]
    approximate: Literal["none", "tanh"] = "none"

    def activation_name(self) -> str:
        return "gelu_tanh" if self.approximate == "tanh" else "gelu"

    def label_parts(self) -> tuple[str, list[str]]:
        return "GELU", (["tanh"] if self.approximate == "tanh" else [])


@register_op
class Hardswish(_Activation):
    """Hard swish ``x * ReLU6(x + 3) / 6`` (``torch.nn.Hardswish``; MobileNetV3, Howard et al.,
    ICCV 2019, sec. 5.2, eq. 2). Shape unchanged; ONNX ``HardSwish``."""

    op: Literal["Hardswish"]
    act_fn = "hardswish"


@register_op
class Hardsigmoid(_Activation):
    """Hard sigmoid ``ReLU6(x + 3) / 6`` (``torch.nn.Hardsigmoid``; MobileNetV3, Howard et al.,
    ICCV 2019, sec. 5.2). Shape unchanged, output in [0, 1]; ONNX ``HardSigmoid``."""

    op: Literal["Hardsigmoid"]
    act_fn = "hardsigmoid"
