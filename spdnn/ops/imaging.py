"""Image-formation and reconstruction layers: ``FixedConv2d`` (a known PSF or Gaussian blur),
``Anscombe`` / ``InverseAnscombe`` (variance stabilization of Poisson-Gaussian noise) and
``InverseFilter`` (the FFT least-squares step of half-quadratic splitting).

They serve Dirty Pixels (Diamond et al.: Poisson-Gaussian image formation with a
PSF, generalized Anscombe transform, unrolled HQS) and Generative Sensing (Karam et
al.: Gaussian blur levels). All are ``rider`` ops: in SPDNN labelling they ride along the
edge they sit on (FixedConv2d is a spatial convolution, but a fixed one: no SPDNN node); their
torch modules are the runtime helpers of :mod:`spdnn.codegen.runtime` (:attr:`Op.helpers`).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spdnn.ops.base import Call, Helper, Op, Shape, register_op
from spdnn.ops.types import PosInt


def gaussian_size(sigma: float) -> int:
    """Kernel size for a Gaussian of standard deviation ``sigma``, after Generative Sensing
    (Karam et al., sec. 4: "the size of the blur kernel is set to 4 times the blur standard
    deviation sigma_b"). A centred kernel needs an odd size, so spdnn takes the radius
    ``2 sigma`` rounded to the nearest integer: ``size = 2 * round(2 sigma) + 1``, i.e.
    ``4 sigma + 1`` for the paper's integer levels sigma_b in {0, .., 6} (1, 5, 9, .., 25;
    sigma_b = 0 gives the 1x1 identity)."""
    return 2 * math.floor(2.0 * sigma + 0.5) + 1


class Gaussian(BaseModel):
    """A normalized 2-D Gaussian kernel: ``sigma`` (>= 0; 0 is the identity) and an odd
    ``size`` (default :func:`gaussian_size`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    sigma: float = Field(ge=0.0)
    size: PosInt | None = None

    @field_validator("size")
    @classmethod
    def _odd(cls, v: int | None) -> int | None:
        if v is not None and v % 2 == 0:
            raise ValueError("size must be odd (the kernel is centred on a pixel)")
        return v

    @property
    def kernel_size(self) -> int:
        return self.size if self.size is not None else gaussian_size(self.sigma)


class _PsfOp(Op):
    """An op holding one fixed 2-D kernel: ``kernel`` (rows) or ``gaussian`` ({sigma, size})."""

    kernel: list[list[float]] | None = None
    gaussian: Gaussian | None = None

    kind = "rider"

    @field_validator("kernel")
    @classmethod
    def _square(cls, v: list[list[float]] | None) -> list[list[float]] | None:
        if v is None:
            return v
        if not v or any(len(row) != len(v) for row in v):
            lengths = ", ".join(str(len(row)) for row in v) or "none"
            raise ValueError(f"kernel must be a square 2-D list (k rows of k numbers); got "
                             f"{len(v)} row(s) of length {lengths}")
        return v

    @model_validator(mode="after")
    def _one_kernel(self) -> _PsfOp:
        if (self.kernel is None) == (self.gaussian is None):
            raise ValueError("give exactly one of 'kernel' (rows of numbers) or 'gaussian' "
                             "({sigma: .., size: ..})")
        return self

    def psf_size(self) -> tuple[int, int]:
        if self.kernel is not None:
            return (len(self.kernel), len(self.kernel[0]))
        k = self.gaussian.kernel_size  # type: ignore[union-attr]
        return (k, k)

    def psf_kwargs(self) -> dict:
        if self.kernel is not None:
            return {"kernel": tuple(tuple(float(v) for v in row) for row in self.kernel)}
        g = self.gaussian
        return {"sigma": float(g.sigma), "size": g.kernel_size}  # type: ignore[union-attr]


@register_op
class FixedConv2d(_PsfOp):
    """A fixed, non-trainable depthwise convolution: one 2-D kernel (a lens PSF or a Gaussian
    blur) applied to every channel, output the same size.

    Sources: the PSF of Dirty Pixels (Diamond et al., sec. 3.1: ``y = k * x`` before noise); the
    Gaussian blur levels of Generative Sensing (Karam et al., sec. 4: sigma_b in {0..6}, kernel
    size 4 sigma_b; see :func:`gaussian_size` for the odd-size rule).

    Params: ``kernel`` (a square 2-D list, used as given) or ``gaussian: {sigma, size}``
    (normalized to sum 1; ``size`` odd, default ``2 round(2 sigma) + 1``); ``padding``
    (``reflect`` default, ``zeros``, ``replicate``, ``circular``). The kernel is applied as a
    true convolution with its centre at ``(k // 2, k // 2)`` ("same" output size; even kernels
    pad one more pixel at the bottom/right). It is a registered buffer: 0 trainable
    parameters. Shapes: ``(C, H, W) -> (C, H, W)``; MACs ``C H W k^2``. ``circular`` padding
    matches the periodic boundary of :class:`InverseFilter`.
    """

    op: Literal["FixedConv2d"]
    padding: Literal["reflect", "zeros", "replicate", "circular"] = "reflect"

    helpers = (Helper("spdnn.codegen.runtime:FixedConv2d", needs=("psf_kernel",)),)

    onnx_exportable: ClassVar[bool] = True

    def infer_shape(self, ins: list[Shape]) -> Shape:
        c, h, w = self.need_spatial(ins[0])
        kh, kw = self.psf_size()
        for n, k in ((h, kh), (w, kw)):
            pad = k // 2
            if self.padding == "reflect" and pad >= n:
                raise self.fail(f"reflect padding of {pad} needs an input larger than {pad}, "
                                f"got {n}", hint="use padding: zeros or a smaller kernel")
            if self.padding == "circular" and pad > n:
                raise self.fail(f"circular padding of {pad} is larger than the input size {n}",
                                hint="use padding: zeros or a smaller kernel")
        return (c, h, w)

    def macs(self, ins: list[Shape], out: Shape) -> int:
        kh, kw = self.psf_size()
        return math.prod(out) * kh * kw

    def module(self, ins: list[Shape], out: Shape) -> Call:
        kw = self.psf_kwargs()
        if self.padding != "reflect":
            kw["padding"] = self.padding
        return Call.of("FixedConv2d", ins[0][0], **kw)


class _AnscombeBase(Op):
    gain: float = Field(default=1.0, gt=0.0)
    sigma: float = Field(default=0.0, ge=0.0)
    mu: float = 0.0

    kind = "rider"
    onnx_exportable: ClassVar[bool] = True

    def macs(self, ins: list[Shape], out: Shape) -> int:
        return 2 * math.prod(out)  # scale-and-shift plus square root / polynomial

    def _kw(self) -> dict:
        kw: dict = {}
        if self.gain != 1.0:
            kw["gain"] = float(self.gain)
        if self.sigma != 0.0:
            kw["sigma"] = float(self.sigma)
        if self.mu != 0.0:
            kw["mu"] = float(self.mu)
        return kw


@register_op
class Anscombe(_AnscombeBase):
    """Generalized Anscombe transform: Poisson-Gaussian noise becomes roughly unit-variance
    Gaussian noise.

    For data ``z = gain * p + n``, ``p ~ Poisson(x / gain)``, ``n ~ N(mu, sigma^2)``
    (Makitalo & Foi, "Optimal inversion of the generalized Anscombe transformation for
    Poisson-Gaussian noise", IEEE TIP 22(1), 2013), as used by Dirty Pixels (Diamond et al.,
    sec. 5.4: "we apply the generalized Anscombe transform to the measured image to convert
    the Poisson-Gaussian noise into IID Gaussian noise"; the paper cites the same reference):

    ``f(z) = (2 / gain) sqrt(gain z + 3/8 gain^2 + sigma^2 - gain mu)`` where the argument is
    positive, else 0. The output noise has about unit variance.

    Params: ``gain`` (alpha > 0, default 1), ``sigma`` (>= 0, default 0), ``mu`` (default 0).
    Shapes unchanged; no parameters. Invert with :class:`InverseAnscombe`.
    """

    op: Literal["Anscombe"]

    helpers = (Helper("spdnn.codegen.runtime:Anscombe"),)

    def module(self, ins: list[Shape], out: Shape) -> Call:
        return Call.of("Anscombe", **self._kw())


@register_op
class InverseAnscombe(_AnscombeBase):
    """Inverse generalized Anscombe transform, exact unbiased (closed form) or algebraic.

    Source: Makitalo & Foi, IEEE TIP 22(1) 2013; the last step of Dirty Pixels' denoising unit
    (Diamond et al., sec. 5.4).

    ``method: exact_unbiased`` (default): the closed-form approximation of the exact unbiased
    inverse (Makitalo & Foi 2013; the Poisson terms are from Makitalo & Foi, "A closed-form
    approximation of the exact unbiased inverse of the Anscombe variance-stabilizing
    transformation", IEEE TIP 20(9), 2011), with ``s = sigma / gain``:
    ``I(D) = D^2/4 + sqrt(3/2)/4 D^-1 - 11/8 D^-2 + 5/8 sqrt(3/2) D^-3 - 1/8 - s^2`` and
    ``z = gain * max(I(D), 0) + mu``; it maps ``E[f(z)]`` back to ``E[z]`` (what a denoiser
    estimates in the transformed domain), so it undoes the transform's bias at low counts.
    D is clamped to ``>= 2 sqrt(3/8)`` (the transform of a zero count) first.
    ``method: algebraic``: ``z = gain (D^2/4 - 3/8 - s^2) + mu``, the exact inverse of the
    formula (biased as an estimator).

    Params: ``gain``, ``sigma``, ``mu`` as in :class:`Anscombe`, ``method``. Shapes unchanged.
    """

    op: Literal["InverseAnscombe"]
    method: Literal["exact_unbiased", "algebraic"] = "exact_unbiased"

    helpers = (Helper("spdnn.codegen.runtime:InverseAnscombe"),)

    def module(self, ins: list[Shape], out: Shape) -> Call:
        kw = self._kw()
        if self.method != "exact_unbiased":
            kw["method"] = self.method
        return Call.of("InverseAnscombe", **kw)


@register_op
class InverseFilter(_PsfOp):
    """The least-squares step of half-quadratic splitting (HQS) with a known PSF, solved by
    inverse filtering in the Fourier domain.

    Source: Dirty Pixels (Diamond et al.), sec. 5.2 and Algorithm 1 ("Minimizing over x is a
    least-squares problem ... When A is a convolution, [it] can be computed efficiently
    through inverse filtering"; Geman & Yang 1995). The x-update:

    ``x = argmin_x ||k * x - y||^2 + rho ||x - z||^2
        = F^-1[(conj(K) F(y) + rho F(z)) / (|K|^2 + rho)]``

    with ``K = F(k)`` the PSF's transfer function. Dirty Pixels writes the data weight
    ``lambda`` and the splitting weight ``beta`` separately; here ``rho = beta / lambda``.
    (Their public code's denoising update ``(lambda y + beta z) / (lambda + beta)`` is the
    special case ``k = identity``.)

    Inputs: ``[z, y]`` (the prox output and the measured image, both ``(C, H, W)``) or one
    input ``[y]``, which uses ``z = y`` (a Tikhonov-regularized deconvolution of y).
    Output ``(C, H, W)``. Boundary: circular (the image is treated as periodic), the
    convolution that FFT diagonalizes; :class:`FixedConv2d` with ``padding: circular`` is the
    matching forward operator. The PSF is applied depthwise (one kernel for every channel).

    Params: ``kernel`` or ``gaussian`` (as :class:`FixedConv2d`; a buffer), ``rho`` (> 0),
    ``learn_rho`` (default false; true makes ``log rho`` one trainable parameter, so rho stays
    positive). MACs (estimate): ``C (n_fft H W ceil(log2 HW) + 4 H W)`` with ``n_fft`` = 3 real
    FFTs for two inputs, 2 for one.

    ONNX: exports with the default (dynamo) exporter, whose DFT support covers
    ``torch.fft.rfft2``/``irfft2`` (opset >= 18); not with the TorchScript exporter
    (``--opset`` below 18), which has no complex/FFT support.
    """

    op: Literal["InverseFilter"]
    rho: float = Field(gt=0.0)
    learn_rho: bool = False

    helpers = (Helper("spdnn.codegen.runtime:InverseFilter", needs=("psf_kernel",)),)

    min_inputs = 1
    max_inputs = 2
    onnx_exportable: ClassVar[bool] = True

    def input_roles(self) -> tuple[str, ...] | None:
        return ("z", "y") if self.inputs is not None and len(self.inputs) == 2 else None

    def structure(self) -> str:
        return "IF"

    def infer_shape(self, ins: list[Shape]) -> Shape:
        c, h, w = self.need_spatial(ins[0], "first input (z)")
        if len(ins) == 2 and tuple(ins[1]) != (c, h, w):
            raise self.fail(f"inputs z and y must have the same shape, got {ins[0]} and "
                            f"{ins[1]}")
        kh, kw = self.psf_size()
        if kh > h or kw > w:
            raise self.fail(f"the {kh}x{kw} kernel is larger than the {h}x{w} input",
                            hint="use a smaller kernel")
        return (c, h, w)

    def num_params(self, ins: list[Shape], out: Shape) -> int:
        return int(self.learn_rho)

    def macs(self, ins: list[Shape], out: Shape) -> int:
        c, h, w = out
        n = h * w
        log = max(1, math.ceil(math.log2(n))) if n > 1 else 1
        return c * ((len(ins) + 1) * n * log + 4 * n)

    def module(self, ins: list[Shape], out: Shape) -> Call:
        kw = self.psf_kwargs()
        kw["rho"] = float(self.rho)
        if self.learn_rho:
            kw["learn_rho"] = True
        return Call.of("InverseFilter", **kw)

    def apply(self, mod, xs):
        return mod(*xs)

    def forward_expr(self, attr, args):
        return f"self.{attr}({', '.join(args)})"
