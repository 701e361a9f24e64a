"""Helper modules of the built-in ops that generated code may need beyond ``torch.nn``.

The source of each helper a network uses is copied verbatim into its emitted file, so emitted
files import only ``torch``: every class here is self-contained and uses nothing but the names
``torch`` and ``nn`` (``from torch import nn``) and the module-level functions its op lists in
``Helper.needs`` (``psf_kernel``) -- no ``math``, no imports. An op points at its class with
:attr:`spdnn.ops.base.Op.helpers` (``Helper("spdnn.codegen.runtime:SPADE")``), so this module
keeps no registry; the in-process builder and the code generator both use the class named
there, so they cannot drift.
"""

import torch
from torch import nn

__all__: list[str] = ["Anscombe", "FixedConv2d", "InverseAnscombe", "InverseFilter", "SPADE",
                      "GaussianNoise", "MinibatchDiscrimination"]


def psf_kernel(kernel, sigma, size) -> torch.Tensor:
    """A 2-D kernel (float64): ``kernel`` as given (rows of numbers), or a normalised Gaussian
    of standard deviation ``sigma`` on an odd ``size`` x ``size`` grid (``sigma = 0``: identity)."""
    if kernel is not None:
        return torch.tensor(kernel, dtype=torch.float64)
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    if sigma > 0:
        g = torch.exp(-(t ** 2) / (2.0 * sigma ** 2))
    else:
        g = (t == 0).to(torch.float64)
    k = g[:, None] * g[None, :]
    return k / k.sum()


class SPADE(nn.Module):
    """Spatially-adaptive denormalization (Park et al., CVPR 2019, sec. 3.1; NVlabs/SPADE
    ``normalization.py``): ``norm(x) * (1 + gamma(s)) + beta(s)``.

    ``norm`` is a parameter-free batch or instance norm of ``x`` (N, channels, H, W); ``s`` is
    the segmentation/heat map (N, label_channels, h, w) resized to H x W by nearest
    interpolation, passed through a shared ``kernel_size`` conv (label_channels -> hidden) +
    ReLU, then two separate ``kernel_size`` convs (hidden -> channels) giving gamma and beta.
    Attribute names follow NVlabs' code (``param_free_norm``, ``mlp_shared``, ``mlp_gamma``,
    ``mlp_beta``), so its checkpoints load.
    """

    def __init__(self, channels: int, label_channels: int, hidden: int = 128,
                 kernel_size: int = 3, norm: str = "batch") -> None:
        super().__init__()
        if norm == "batch":
            self.param_free_norm = nn.BatchNorm2d(channels, affine=False)
        elif norm == "instance":
            self.param_free_norm = nn.InstanceNorm2d(channels, affine=False)
        else:
            raise ValueError(f"norm must be 'batch' or 'instance', got {norm!r}")
        pad = kernel_size // 2
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(label_channels, hidden, kernel_size, padding=pad), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, kernel_size, padding=pad)
        self.mlp_beta = nn.Conv2d(hidden, channels, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        segmap = nn.functional.interpolate(segmap, size=x.shape[-2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class FixedConv2d(nn.Module):
    """A fixed (non-trainable) depthwise convolution with one 2-D kernel, e.g. a lens PSF or a
    Gaussian blur, applied to every channel with "same" padding.

    The kernel is applied as a true convolution (``y = k * x``, kernel centre at index
    ``(kh // 2, kw // 2)``), the image-formation convention of a PSF. It is stored flipped, as
    the cross-correlation weight of ``F.conv2d``, in the buffer ``weight``
    ``(channels, 1, kh, kw)``; there are no parameters.

    Give ``kernel`` (rows of numbers) or ``sigma`` and odd ``size`` (a normalised Gaussian;
    ``sigma = 0`` is the identity). ``padding``: ``zeros``, ``reflect``, ``replicate`` or
    ``circular``.
    """

    def __init__(self, channels: int, kernel=None, sigma: float | None = None,
                 size: int | None = None, padding: str = "reflect") -> None:
        super().__init__()
        k = psf_kernel(kernel, sigma, size)
        kh, kw = k.shape
        self.channels = channels
        self.padding = padding
        # (left, right, top, bottom): the centre (kh // 2, kw // 2) lands on the output pixel
        self.pads = (kw - 1 - kw // 2, kw // 2, kh - 1 - kh // 2, kh // 2)
        weight = k.flip(0, 1).to(torch.float32).expand(channels, 1, kh, kw).clone()
        self.register_buffer("weight", weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "zeros":
            x = nn.functional.pad(x, self.pads)
        else:
            x = nn.functional.pad(x, self.pads, mode=self.padding)
        return nn.functional.conv2d(x, self.weight, groups=self.channels)


class Anscombe(nn.Module):
    """Generalized Anscombe transform for Poisson-Gaussian data ``z = gain * p + n``,
    ``p ~ Poisson``, ``n ~ N(mu, sigma^2)`` (Makitalo & Foi, IEEE TIP 22(1), 2013):

    ``f(z) = (2 / gain) * sqrt(gain * z + 3/8 gain^2 + sigma^2 - gain * mu)`` where the
    argument is positive, else 0. The output has (approximately) unit noise variance.
    """

    def __init__(self, gain: float = 1.0, sigma: float = 0.0, mu: float = 0.0) -> None:
        super().__init__()
        self.gain = gain
        self.sigma = sigma
        self.mu = mu

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        v = (z - self.mu) / self.gain + 0.375 + (self.sigma / self.gain) ** 2
        pos = v > 0
        # double where: exact 0 below the threshold and a finite (zero) gradient there
        return torch.where(pos, 2.0 * torch.sqrt(torch.where(pos, v, torch.ones_like(v))),
                           torch.zeros_like(v))


class InverseAnscombe(nn.Module):
    """Inverse of :class:`Anscombe` (Makitalo & Foi, IEEE TIP 22(1), 2013).

    ``method="exact_unbiased"``: the closed-form approximation of the exact unbiased inverse
    (Poisson terms: Makitalo & Foi, IEEE TIP 20(9), 2011), with ``s = sigma / gain``:
    ``I(D) = D^2/4 + sqrt(3/2)/4 D^-1 - 11/8 D^-2 + 5/8 sqrt(3/2) D^-3 - 1/8 - s^2``,
    ``z = gain * max(I(D), 0) + mu``; D is first clamped to ``>= 2 sqrt(3/8)`` (the transform
    of a zero count, below which ``I`` is negative anyway), which keeps the D^-k terms finite.
    ``method="algebraic"``: the exact inverse of the formula,
    ``z = gain * (D^2/4 - 3/8 - s^2) + mu`` (biased for low counts).
    """

    def __init__(self, gain: float = 1.0, sigma: float = 0.0, mu: float = 0.0,
                 method: str = "exact_unbiased") -> None:
        super().__init__()
        if method not in ("exact_unbiased", "algebraic"):
            raise ValueError(f"method must be 'exact_unbiased' or 'algebraic', got {method!r}")
        self.gain = gain
        self.sigma = sigma
        self.mu = mu
        self.method = method

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        s2 = (self.sigma / self.gain) ** 2
        if self.method == "algebraic":
            return self.gain * (0.25 * d * d - 0.375 - s2) + self.mu
        r = 1.5 ** 0.5
        d = torch.clamp(d, min=2.0 * 0.375 ** 0.5)
        inv = (0.25 * d * d + 0.25 * r / d - 1.375 / (d * d) + 0.625 * r / (d * d * d)
               - 0.125 - s2)
        return self.gain * torch.clamp(inv, min=0.0) + self.mu


class InverseFilter(nn.Module):
    """The least-squares step of half-quadratic splitting with a convolution (Dirty Pixels,
    Diamond et al. 2017, sec. 5.2; Geman & Yang 1995), solved by inverse filtering:

    ``x = argmin ||k * x - y||^2 + rho ||x - z||^2
        = F^-1[(conj(K) F(y) + rho F(z)) / (|K|^2 + rho)]``,

    with ``K`` the optical transfer function of the PSF ``k`` (zero-padded to H x W, centre
    ``(kh // 2, kw // 2)`` rolled to the origin). The convolution is circular (periodic image
    boundary). ``forward(z, y)``; ``forward(z)`` uses ``y = z``. ``rho > 0`` is stored as
    ``log_rho`` (a parameter if ``learn_rho``, else a buffer). The PSF is the buffer ``psf``;
    give ``kernel`` (rows of numbers) or ``sigma`` and odd ``size`` (normalised Gaussian).
    """

    def __init__(self, kernel=None, sigma: float | None = None, size: int | None = None,
                 rho: float = 0.01, learn_rho: bool = False) -> None:
        super().__init__()
        k = psf_kernel(kernel, sigma, size)
        self.register_buffer("psf", k.to(torch.float32))
        log_rho = torch.tensor(float(rho), dtype=torch.float64).log().to(torch.float32)
        if learn_rho:
            self.log_rho = nn.Parameter(log_rho)
        else:
            self.register_buffer("log_rho", log_rho)

    def otf(self, height: int, width: int) -> torch.Tensor:
        """The PSF's transfer function on an ``height x width`` grid (``rfft2`` half plane)."""
        kh, kw = self.psf.shape
        k = nn.functional.pad(self.psf, (0, width - kw, 0, height - kh))
        k = torch.roll(k, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
        return torch.fft.rfft2(k)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h, w = z.shape[-2], z.shape[-1]
        otf = self.otf(h, w)
        rho = self.log_rho.exp()
        fz = torch.fft.rfft2(z)
        fy = fz if y is None else torch.fft.rfft2(y)
        num = torch.conj(otf) * fy + rho * fz
        den = otf.real ** 2 + otf.imag ** 2 + rho
        return torch.fft.irfft2(num / den, s=(h, w))


class GaussianNoise(nn.Module):
    """Additive Gaussian noise ``x + sigma * N(0, 1)`` in training mode, the identity in eval
    mode (Lasagne's ``GaussianNoiseLayer``; VAC+GAN CIFAR-10 discriminator, thesis App. H)."""

    def __init__(self, sigma: float = 0.05) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.sigma > 0:
            return x + self.sigma * torch.randn_like(x)
        return x


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al., NeurIPS 2016, sec. 3.2).

    ``x`` (N, A) (a feature map is flattened), ``M = x @ weight`` viewed (N, B, C),
    ``o[i, b] = sum_j exp(-||M[i, b] - M[j, b]||_1)``; returns ``cat([x, o], 1)``, (N, A + B).
    ``exclude_self`` drops the ``j = i`` term (exactly 1); ``bias`` adds a learned per-kernel
    bias to ``o``; ``weight_norm`` uses ``weight * exp(log_weight_scale) / ||weight||`` (column
    norms over A), as the authors' Lasagne layer (OpenAI improved-GAN ``MinibatchLayer``).
    """

    def __init__(self, in_features: int, num_kernels: int, kernel_dim: int, bias: bool = False,
                 weight_norm: bool = False, exclude_self: bool = False) -> None:
        super().__init__()
        self.num_kernels = num_kernels
        self.kernel_dim = kernel_dim
        self.exclude_self = exclude_self
        self.weight = nn.Parameter(torch.randn(in_features, num_kernels * kernel_dim) * 0.05)
        if weight_norm:
            self.log_weight_scale = nn.Parameter(torch.zeros(num_kernels * kernel_dim))
        else:
            self.log_weight_scale = None
        self.bias = nn.Parameter(torch.zeros(num_kernels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        w = self.weight
        if self.log_weight_scale is not None:
            w = w * (torch.exp(self.log_weight_scale) / torch.sqrt((w * w).sum(0)))
        m = (x @ w).reshape(x.shape[0], self.num_kernels, self.kernel_dim)
        dist = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(3)  # (N, N, B)
        o = torch.exp(-dist).sum(1)
        if self.exclude_self:
            o = o - 1.0
        if self.bias is not None:
            o = o + self.bias
        return torch.cat([x, o], 1)
