"""GAN discriminator layers: ``GaussianNoise`` (input noise, training only) and
``MinibatchDiscrimination`` (Salimans et al. 2016).

Both serve the CIFAR-10 discriminator of VAC+GAN (thesis App. H, Table 5: "Gaussian Noise
sigma = 0.05" after the input and "MBDisc [14]" before the output; the authors' public code:
Lasagne ``GaussianNoiseLayer(sigma=0.05)`` and a ``MinibatchLayer(50, 30)``). Their torch
modules are the runtime helpers of :mod:`spdnn.codegen.runtime`.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from spdnn.ops.base import Call, Helper, Op, Shape, register_op
from spdnn.ops.types import PosInt


@register_op
class GaussianNoise(Op):
    """Additive Gaussian noise on the input during training, the identity in eval mode.

    Training: ``y = x + sigma * n``, ``n ~ N(0, 1)`` drawn anew for every element and call;
    eval (``module.eval()``, inference, ONNX export): ``y = x``. This is Lasagne's
    ``GaussianNoiseLayer`` (deterministic pass = identity), used as the first layer of the
    VAC+GAN CIFAR-10 discriminator with ``sigma = 0.05`` (thesis App. H, Table 5;
    the authors' public code), a common GAN regulariser (instance noise).

    Params: ``sigma`` (>= 0, default 0.05; 0 is the identity). Shapes unchanged; no parameters,
    no MACs counted (one multiply-add per element while training).
    """

    op: Literal["GaussianNoise"]
    sigma: float = Field(default=0.05, ge=0.0)

    helpers = (Helper("spdnn.codegen.runtime:GaussianNoise"),)

    kind = "rider"
    onnx_exportable: ClassVar[bool] = True

    def module(self, ins: list[Shape], out: Shape) -> Call:
        return Call.of("GaussianNoise", float(self.sigma))


@register_op
class MinibatchDiscrimination(Op):
    """Minibatch discrimination (Salimans et al., "Improved techniques for training GANs",
    NeurIPS 2016, sec. 3.2): features that compare each sample with the rest of its minibatch.

    With ``x_i`` the input of sample ``i`` flattened to ``A`` features (a ``(C, H, W)`` map is
    flattened C-major, as ``torch.flatten(x, 1)``), ``T`` the learned tensor of shape
    ``(A, B*C)`` (``weight``; ``B = num_kernels``, ``C = kernel_dim``):

    * ``M_i = x_i T`` reshaped to ``(B, C)``;
    * ``c_b(x_i, x_j) = exp(-||M_i,b - M_j,b||_L1)``;
    * ``o(x_i)_b = sum_j c_b(x_i, x_j)`` over the minibatch (``j = i`` included, as in the
      paper; it adds exactly 1);
    * output ``concat(x_i, o(x_i))``.

    Options matching the authors' Lasagne layer (VAC+GAN CIFAR-10 code, itself OpenAI's
    improved-GAN ``MinibatchLayer``): ``exclude_self`` sums over
    ``j != i`` only (that code adds 1e6 to the diagonal distance; here the exact 1 is
    subtracted); ``bias`` adds a learned per-kernel bias ``b`` (B values) to ``o``;
    ``weight_norm`` reparameterises ``T = V * exp(s) / ||V||`` with the norm taken per column
    over the A inputs and ``s`` (``log_weight_scale``, B*C values) learned.

    Shapes: ``(A,)`` or ``(C, H, W)`` with ``A = C*H*W`` -> ``(A + B,)``. Parameters:
    ``A*B*C`` (+ ``B*C`` with ``weight_norm``, + ``B`` with ``bias``). MACs per sample:
    ``A*B*C`` for the projection (the pairwise term, ``N*B*C`` per sample, depends on the batch
    size N and is left out). The output of one sample depends on the whole batch: a batch of
    one gives ``o = 1`` (``0`` with ``exclude_self``) plus the bias.
    """

    op: Literal["MinibatchDiscrimination"]
    num_kernels: PosInt
    kernel_dim: PosInt
    bias: bool = False
    weight_norm: bool = False
    exclude_self: bool = False

    helpers = (Helper("spdnn.codegen.runtime:MinibatchDiscrimination"),)

    kind = "compute"
    onnx_exportable: ClassVar[bool] = True

    def infer_shape(self, ins: list[Shape]) -> Shape:
        return (math.prod(ins[0]) + self.num_kernels,)

    def num_params(self, ins: list[Shape], out: Shape) -> int:
        bc = self.num_kernels * self.kernel_dim
        return (math.prod(ins[0]) * bc + bc * int(self.weight_norm)
                + self.num_kernels * int(self.bias))

    def macs(self, ins: list[Shape], out: Shape) -> int:
        return math.prod(ins[0]) * self.num_kernels * self.kernel_dim

    def module(self, ins: list[Shape], out: Shape) -> Call:
        kw: dict = {}
        if self.bias:
            kw["bias"] = True
        if self.weight_norm:
            kw["weight_norm"] = True
        if self.exclude_self:
            kw["exclude_self"] = True
        return Call.of("MinibatchDiscrimination", math.prod(ins[0]), self.num_kernels,
                       self.kernel_dim, **kw)

    def structure(self) -> str:
        return f"{self.num_kernels}x{self.kernel_dim}MBD"
