"""Normalization layers: ``BatchNorm2d``, ``InstanceNorm2d`` and ``SPADE``.

Batch norm that belongs to a convolution is the conv's ``batch_norm: true`` option (thesis
ch. 3.1: it is not a separate SPDNN node); these stand-alone layers are for networks that
normalize elsewhere, e.g. the parameter-free norms inside SPADE blocks (SPADE-SR, sec. 3.2).
They are ``rider`` ops: in SPDNN labelling they ride along the edge they sit on.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from spdnn.ops.base import Call, Helper, Op, Shape, register_op
from spdnn.ops.types import PosInt


class _Norm2d(Op):
    eps: float = Field(default=1e-5, gt=0.0)
    momentum: float = Field(default=0.1, ge=0.0, le=1.0)

    kind = "rider"
    onnx_exportable: ClassVar[bool] = True
    default_affine: ClassVar[bool] = True
    torch_class: ClassVar[str] = ""

    def infer_shape(self, ins: list[Shape]) -> Shape:
        return self.need_spatial(ins[0])

    def num_params(self, ins: list[Shape], out: Shape) -> int:
        return 2 * ins[0][0] if self.affine else 0  # type: ignore[attr-defined]

    def macs(self, ins: list[Shape], out: Shape) -> int:
        # one multiply-add per element to normalize ((x - mean) * inv_std), one more for the
        # affine scale and shift
        return math.prod(out) * (2 if self.affine else 1)  # type: ignore[attr-defined]

    def module(self, ins: list[Shape], out: Shape) -> Call:
        kw: dict = {}
        if self.eps != 1e-5:
            kw["eps"] = float(self.eps)
        if self.momentum != 0.1:
            kw["momentum"] = float(self.momentum)
        if self.affine != self.default_affine:  # type: ignore[attr-defined]
            kw["affine"] = bool(self.affine)  # type: ignore[attr-defined]
        return Call.of(self.torch_class, ins[0][0], **kw)


@register_op
class BatchNorm2d(_Norm2d):
    """Batch normalization per channel over (N, H, W) (``torch.nn.BatchNorm2d``), with or
    without a learned scale and shift.

    Source: Ioffe & Szegedy, ICML 2015, Algorithm 1.

    Shapes: ``(C, H, W) -> (C, H, W)``. Params: ``affine`` (default true: learned scale and
    shift, ``2*C`` parameters; ``affine: false`` is the parameter-free norm of SPADE, as in
    SPADE-SR and NVlabs/SPADE ``normalization.py``), ``eps`` (> 0, default 1e-5),
    ``momentum`` ([0, 1], default 0.1) of the running statistics (buffers, used in eval mode).
    """

    op: Literal["BatchNorm2d"]
    affine: bool = True

    default_affine = True
    torch_class = "nn.BatchNorm2d"


@register_op
class InstanceNorm2d(_Norm2d):
    """Instance normalization per sample and channel over (H, W) (``torch.nn.InstanceNorm2d``).

    Source: Ulyanov, Vedaldi & Lempitsky 2016 ("Instance normalization"), eq. 2.

    Shapes: ``(C, H, W) -> (C, H, W)`` with ``H * W > 1``. Params: ``affine`` (default false,
    as torch; true adds ``2*C`` parameters), ``eps`` (> 0, default 1e-5), ``momentum`` (unused
    without running statistics, which are off as in torch's default).
    """

    op: Literal["InstanceNorm2d"]
    affine: bool = False

    default_affine = False
    torch_class = "nn.InstanceNorm2d"

    def infer_shape(self, ins: list[Shape]) -> Shape:
        c, h, w = self.need_spatial(ins[0])
        if h * w < 2:
            raise self.fail(f"instance norm needs more than one spatial element, got {h}x{w}",
                            hint="use BatchNorm2d, or normalize before the map shrinks to 1x1")
        return (c, h, w)


@register_op
class SPADE(Op):
    """Spatially-adaptive denormalization of x by a label or heat map s:
    ``norm(x) * (1 + gamma(s)) + beta(s)``.

    Sources: Park et al., CVPR 2019, sec. 3.1, eq. 1; NVlabs/SPADE ``normalization.py``; the
    building block of SPADE-SR's ResBlocks (Low-Resolution Thermal Sensor-Guided Image
    Synthesis, sec. 3.2, Fig. 3).

    Inputs ``[x, segmap]`` (exactly two): ``x`` ``(C, H, W)`` is normalized without parameters
    (``norm: batch`` or ``instance``); ``segmap`` ``(L, h, w)`` (a label map, or SPADE-SR's
    heat-map features) is resized to ``H x W`` with nearest interpolation (the identity when
    SPADE-SR's semantic branch already delivers ``H x W``), passed through a shared
    ``kernel_size`` conv ``L -> hidden`` + ReLU, then two separate ``kernel_size`` convs
    ``hidden -> C`` give gamma and beta. Output ``(C, H, W)``.

    Params: ``norm`` (``batch`` default, as SPADE's ``spadesyncbatch3x3``; ``instance``),
    ``kernel_size`` (odd, default 3; padding ``k // 2``), ``hidden`` (default 128).
    Parameters: ``k^2 L hidden + hidden + 2 (k^2 hidden C + C)``. Emitted as the runtime
    helper :class:`spdnn.codegen.runtime.SPADE`.

    SPDNN: a ``rider`` op whose inputs play different parts (:meth:`input_roles`), so it is a
    graph node with structure code ``SPADE<k>``; a merge keeps its two inputs apart.
    """

    op: Literal["SPADE"]
    norm: Literal["batch", "instance"] = "batch"
    kernel_size: PosInt = 3
    hidden: PosInt = 128

    helpers = (Helper("spdnn.codegen.runtime:SPADE"),)

    kind = "rider"
    min_inputs = 2
    max_inputs = 2
    onnx_exportable: ClassVar[bool] = True

    @field_validator("kernel_size")
    @classmethod
    def _odd_kernel(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("kernel_size must be odd (padding k // 2 keeps the size)")
        return v

    def input_roles(self) -> tuple[str, ...]:
        return ("x", "segmap")

    def structure(self) -> str:
        return f"SPADE{self.kernel_size}"

    def infer_shape(self, ins: list[Shape]) -> Shape:
        c, h, w = self.need_spatial(ins[0], "first input (x)")
        self.need_spatial(ins[1], "second input (segmap)")
        if self.norm == "instance" and h * w < 2:
            raise self.fail(f"instance norm needs more than one spatial element, got {h}x{w}",
                            hint="use norm: batch")
        return (c, h, w)

    def num_params(self, ins: list[Shape], out: Shape) -> int:
        c, lab, k2 = ins[0][0], ins[1][0], self.kernel_size ** 2
        return (k2 * lab * self.hidden + self.hidden) + 2 * (k2 * self.hidden * c + c)

    def macs(self, ins: list[Shape], out: Shape) -> int:
        c, h, w = out
        lab, k2 = ins[1][0], self.kernel_size ** 2
        convs = h * w * k2 * self.hidden * (lab + 2 * c)
        return convs + 2 * c * h * w  # + normalize and modulate

    def module(self, ins: list[Shape], out: Shape) -> Call:
        kw: dict = {}
        if self.hidden != 128:
            kw["hidden"] = self.hidden
        if self.kernel_size != 3:
            kw["kernel_size"] = self.kernel_size
        if self.norm != "batch":
            kw["norm"] = self.norm
        return Call.of("SPADE", ins[0][0], ins[1][0], **kw)

    def apply(self, mod, xs):
        return mod(xs[0], xs[1])

    def forward_expr(self, attr, args):
        return f"self.{attr}({args[0]}, {args[1]})"
