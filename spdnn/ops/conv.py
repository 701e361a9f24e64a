"""Convolution layers: ``Conv2d`` and ``ConvTranspose2d`` with fused batch norm and activation.

Batch norm and activation belong to their convolution (thesis ch. 3.1 step 1: they are not
separate SPDNN nodes), applied in the order conv -> BN -> activation as in the authors' code
(their public code drops the conv bias when BN follows).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import ClassVar, Literal

from pydantic import model_validator

from spdnn.ops.base import (
    ActivationName,
    Call,
    Op,
    Shape,
    activation_call,
    dims_text,
    fused_text,
    one_text,
    pair,
    register_op,
    sequential,
)
from spdnn.ops.types import Pad2, PosInt, Size2


def _kernel_code(k: tuple[int, int]) -> str:
    return str(k[0]) if k[0] == k[1] else f"{k[0]}x{k[1]}"


def _short(v: tuple[int, int]) -> int | tuple[int, int]:
    return v[0] if v[0] == v[1] else v


class _ConvBase(Op):
    kernel_size: Size2
    out_channels: PosInt
    stride: Size2 = 1
    dilation: Size2 = 1
    groups: PosInt = 1
    bias: bool | None = None
    batch_norm: bool = False
    activation: ActivationName | None = None
    negative_slope: float = 0.01
    spectral_norm: bool = False

    kind = "compute"
    short_name: ClassVar[str] = "Conv2d"
    """The op's name in diagram labels (``ConvT`` for transposed convolutions)."""

    @property
    def use_bias(self) -> bool:
        return (not self.batch_norm) if self.bias is None else self.bias

    def out_channels_of(self) -> int | None:
        return self.out_channels

    def with_width(self, width: int) -> Op:
        """A copy with ``out_channels = width``. A depthwise convolution (``groups`` equal to
        ``out_channels``, above 1) stays depthwise: ``groups = width`` too (its input must then
        have ``width`` channels, as a merge that widens every layer alike gives it). Another
        grouped convolution keeps ``groups`` and rounds ``width`` to the nearest multiple of
        it (at least ``groups``)."""
        g, width = self.groups, int(width)
        if g > 1 and g == self.out_channels:
            return self.model_copy(update={"out_channels": width, "groups": width})
        width = max(g, g * round(width / g))
        return self.model_copy(update={"out_channels": width})

    def _suffix(self) -> str:
        """Stride, dilation and groups in the structure code (``3C(s2)``, ``3C(g4)``, and
        ``3C(dw)`` for a depthwise conv, ``groups == out_channels``): convolutions that differ
        in them compute different things and do not merge."""
        s, d = pair(self.stride), pair(self.dilation)
        out = ""
        if s != (1, 1):
            out += f"(s{_kernel_code(s)})"
        if d != (1, 1):
            out += f"(d{_kernel_code(d)})"
        if self.groups != 1:  # a depthwise conv is one whatever its width
            out += "(dw)" if self.groups == self.out_channels else f"(g{self.groups})"
        return out

    def label_parts(self) -> tuple[str, list[str]]:
        """``Conv2d 3x3, 12 ch`` (``ConvT`` for transposed ones), then stride, dilation, groups,
        padding, fused BN and activation where given."""
        d = self.model_dump(exclude_defaults=True, exclude={"name", "op", "inputs", "merged_from"})
        main = f"{self.short_name} {dims_text(self.kernel_size)}, {self.out_channels} ch"
        extra = []
        if "stride" in d and one_text(self.stride) != "1":
            extra.append(f"stride {one_text(self.stride)}")
        if "dilation" in d and one_text(self.dilation) != "1":
            extra.append(f"dilation {one_text(self.dilation)}")
        if self.groups != 1:
            extra.append(f"groups {self.groups}")
        if "padding" in d:
            pad = self.padding  # type: ignore[attr-defined]
            extra.append(f"pad {pad if isinstance(pad, str) else one_text(pad)}")
        return main, extra + fused_text(self)

    def _check_groups(self, cin: int) -> None:
        if cin % self.groups or self.out_channels % self.groups:
            raise self.fail(f"groups={self.groups} must divide input channels {cin} and "
                            f"out_channels {self.out_channels}")

    def _wrap(self, conv: Call) -> Call:
        """Spectral normalization of the weight (Miyato et al., ICLR 2018, sec. 2.1; as in
        the ``spectral*`` norm options of NVlabs/SPADE) when asked."""
        if self.spectral_norm:
            return Call("nn.utils.parametrizations.spectral_norm", (conv,))
        return conv

    def _tail(self, cout: int) -> list[Call]:
        calls = []
        if self.batch_norm:
            calls.append(Call.of("nn.BatchNorm2d", cout))
        act = activation_call(self.activation, self.negative_slope)
        if act is not None:
            calls.append(act)
        return calls

    def num_params(self, ins: list[Shape], out: Shape) -> int:
        cin = ins[0][0]
        kh, kw = pair(self.kernel_size)
        n = kh * kw * (cin // self.groups) * self.out_channels
        n += self.out_channels * (int(self.use_bias) + 2 * int(self.batch_norm))
        return n

    def macs(self, ins: list[Shape], out: Shape) -> int:
        kh, kw = pair(self.kernel_size)
        per_out = kh * kw * (ins[0][0] // self.groups)
        # a transposed conv does the same work as its forward conv on the *input* grid
        grid = out[1] * out[2] if isinstance(self, Conv2d) else ins[0][1] * ins[0][2]
        return per_out * self.out_channels * grid


@register_op
class Conv2d(_ConvBase):
    """2-D convolution (``torch.nn.Conv2d``), optionally followed by BatchNorm2d and an activation.

    Shapes: ``(C_in, H, W) -> (out_channels, H', W')`` with
    ``H' = floor((H + 2*padding - dilation*(kernel_size-1) - 1) / stride) + 1``.
    ``padding: same`` pads ``dilation*(kernel_size-1)/2`` on each side (odd effective kernels
    only), which keeps ``H' = ceil(H / stride)``. SPDNN structure code: ``kC`` (thesis ch. 3.1),
    with ``(sS)``, ``(dD)``, ``(gG)`` suffixes for a stride, dilation or ``groups`` other than 1
    (``(dw)`` for a depthwise convolution, ``groups == out_channels``, whatever its width).
    ``groups`` (default 1) splits input and output channels into that many groups, each
    convolved separately (both counts must be divisible by it; ``groups = C_in = out_channels``
    is MobileNet's depthwise convolution, Howard et al. 2017, sec. 3.1): parameters
    ``k_h k_w (C_in / groups) out_channels (+ out_channels bias)``, MACs
    ``k_h k_w (C_in / groups) out_channels H' W'``.
    ``spectral_norm: true`` divides the weight by its largest singular value
    (``torch.nn.utils.parametrizations.spectral_norm``; Miyato et al., ICLR 2018, sec. 2.1), as
    in SPADE's generator and discriminator (NVlabs/SPADE): same parameter
    count, plus the power-iteration buffers ``u``, ``v`` (eval mode reuses the stored ones).
    ONNX: exports with the default (dynamo) exporter; the TorchScript one (opset < 18) has no
    ``aten::vdot``.
    """

    op: Literal["Conv2d"]
    padding: Pad2 | Literal["same", "valid"] = 0

    draw_class = "conv"

    @model_validator(mode="after")
    def _same_needs_odd(self) -> Conv2d:
        if self.padding == "same":
            for k, d in zip(pair(self.kernel_size), pair(self.dilation)):
                if (d * (k - 1)) % 2:
                    raise ValueError(f"padding 'same' needs an odd kernel_size (got {k}); "
                                     "give an explicit padding instead")
        return self

    def pad(self) -> tuple[int, int]:
        if self.padding == "same":
            return tuple(d * (k - 1) // 2 for k, d in zip(pair(self.kernel_size),
                                                          pair(self.dilation)))  # type: ignore
        if self.padding == "valid":
            return (0, 0)
        return pair(self.padding)

    def infer_shape(self, ins: list[Shape]) -> Shape:
        c, h, w = self.need_spatial(ins[0])
        self._check_groups(c)
        dims = []
        for n, k, s, p, d in zip((h, w), pair(self.kernel_size), pair(self.stride), self.pad(),
                                 pair(self.dilation)):
            o = (n + 2 * p - d * (k - 1) - 1) // s + 1
            if o < 1:
                raise self.fail(f"kernel_size {k} (dilation {d}, padding {p}) does not fit an "
                                f"input of size {n}", hint="use padding: same or a smaller kernel")
            dims.append(o)
        return (self.out_channels, dims[0], dims[1])

    def module(self, ins: list[Shape], out: Shape) -> Call:
        kw: dict = {"kernel_size": _short(pair(self.kernel_size))}
        if pair(self.stride) != (1, 1):
            kw["stride"] = _short(pair(self.stride))
        if self.pad() != (0, 0):
            kw["padding"] = _short(self.pad())
        if pair(self.dilation) != (1, 1):
            kw["dilation"] = _short(pair(self.dilation))
        if self.groups != 1:
            kw["groups"] = self.groups
        if not self.use_bias:
            kw["bias"] = False
        conv = self._wrap(Call.of("nn.Conv2d", ins[0][0], self.out_channels, **kw))
        return sequential([conv] + self._tail(self.out_channels))

    def structure(self) -> str:
        return f"{_kernel_code(pair(self.kernel_size))}C{self._suffix()}"

    def resample_factor(self) -> Fraction:
        return Fraction(pair(self.stride)[0])


@register_op
class ConvTranspose2d(_ConvBase):
    """Transposed 2-D convolution (``torch.nn.ConvTranspose2d``) with optional BN and activation.

    Shapes: ``(C_in, H, W) -> (out_channels, H', W')`` with
    ``H' = (H-1)*stride - 2*padding + dilation*(kernel_size-1) + output_padding + 1``.
    ``padding: same`` chooses padding/output_padding so that ``H' = H * stride``.
    SPDNN structure code: ``kD``. ``spectral_norm: true``: see :class:`Conv2d`.
    """

    op: Literal["ConvTranspose2d"]
    padding: Pad2 | Literal["same"] = 0
    output_padding: Pad2 = 0

    draw_class = "deconv"
    short_name = "ConvT"

    def pads(self) -> tuple[tuple[int, int], tuple[int, int]]:
        if self.padding != "same":
            return pair(self.padding), pair(self.output_padding)
        p, op = [], []
        for k, s, d in zip(pair(self.kernel_size), pair(self.stride), pair(self.dilation)):
            x = d * (k - 1) + 1 - s
            pi = max(0, math.ceil(x / 2))
            p.append(pi)
            op.append(2 * pi - x)
        return (p[0], p[1]), (op[0], op[1])

    def infer_shape(self, ins: list[Shape]) -> Shape:
        c, h, w = self.need_spatial(ins[0])
        self._check_groups(c)
        (ph, pw), (oph, opw) = self.pads()
        for o, s, d in zip((oph, opw), pair(self.stride), pair(self.dilation)):
            if o >= max(s, d):
                raise self.fail(f"output_padding {o} must be smaller than stride or dilation",
                                hint="use padding: same or change kernel_size/stride")
        dims = []
        for n, k, s, p, o, d in zip((h, w), pair(self.kernel_size), pair(self.stride), (ph, pw),
                                    (oph, opw), pair(self.dilation)):
            v = (n - 1) * s - 2 * p + d * (k - 1) + o + 1
            if v < 1:
                raise self.fail(f"padding {p} is too large for kernel_size {k}")
            dims.append(v)
        return (self.out_channels, dims[0], dims[1])

    def module(self, ins: list[Shape], out: Shape) -> Call:
        (ph, pw), (oph, opw) = self.pads()
        kw: dict = {"kernel_size": _short(pair(self.kernel_size))}
        if pair(self.stride) != (1, 1):
            kw["stride"] = _short(pair(self.stride))
        if (ph, pw) != (0, 0):
            kw["padding"] = _short((ph, pw))
        if (oph, opw) != (0, 0):
            kw["output_padding"] = _short((oph, opw))
        if pair(self.dilation) != (1, 1):
            kw["dilation"] = _short(pair(self.dilation))
        if self.groups != 1:
            kw["groups"] = self.groups
        if not self.use_bias:
            kw["bias"] = False
        conv = self._wrap(Call.of("nn.ConvTranspose2d", ins[0][0], self.out_channels, **kw))
        return sequential([conv] + self._tail(self.out_channels))

    def structure(self) -> str:
        return f"{_kernel_code(pair(self.kernel_size))}D{self._suffix()}"

    def resample_factor(self) -> Fraction:
        return Fraction(1, pair(self.stride)[0])
