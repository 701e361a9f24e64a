"""Sensor degradations (spdnn.data.degrade): Generative Sensing's blur levels against
scikit-image, Dirty Pixels' Poisson-Gaussian formation (moments, clipping, seeding), the
Anscombe round trip, and one-line errors for bad levels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.filters import gaussian

from spdnn.codegen.runtime import Anscombe, InverseAnscombe
from spdnn.data.degrade import (
    BLUR_LEVELS,
    NOISE_LEVELS,
    anscombe_pair,
    blur_kernel_size,
    blur_mixed,
    gaussian_blur,
    light_level,
    noise_level,
    poisson_gaussian,
    psf_blur,
)
from spdnn.errors import SpdnnError


@pytest.mark.parametrize("sigma_b", BLUR_LEVELS)
def test_blur_matches_skimage(sigma_b):
    """kornia's gaussian_blur2d with the 4 sigma_b + 1 kernel and reflect borders is
    scipy/skimage's Gaussian truncated at 2 sigma with mirror borders."""
    x = torch.rand(2, 3, 40, 36, generator=torch.Generator().manual_seed(sigma_b),
                   dtype=torch.float64)
    got = gaussian_blur(x, sigma_b).numpy()
    want = np.stack([np.stack([
        gaussian(x[i, c].numpy(), sigma=sigma_b, mode="mirror", truncate=2.0,
                 preserve_range=True) if sigma_b else x[i, c].numpy()
        for c in range(3)]) for i in range(2)])
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert blur_kernel_size(sigma_b) == 4 * sigma_b + 1


def test_blur_keeps_the_mean_and_smooths():
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    stds = [float(gaussian_blur(x, s).std()) for s in BLUR_LEVELS]
    assert all(a > b for a, b in zip(stds, stds[1:]))  # every level smooths more
    assert abs(float(gaussian_blur(x, 3).mean()) - float(x.mean())) < 5e-3


def test_mixed_levels_blur_each_image_at_its_own_level():
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    out = blur_mixed(x, torch.tensor([0, 4, 2]))
    assert torch.equal(out[0], x[0])
    torch.testing.assert_close(out[1:2], gaussian_blur(x[1:2], 4))
    torch.testing.assert_close(out[2:3], gaussian_blur(x[2:3], 2))


@pytest.mark.parametrize("level", [7, -1, 1.5, True, "3"])
def test_blur_level_outside_0_to_6_is_one_line(level):
    with pytest.raises(SpdnnError, match="not one of Generative Sensing's levels 0..6") as e:
        gaussian_blur(torch.rand(1, 1, 32, 32), level)
    assert "\n" not in str(e.value) and e.value.field == "sigma_b"


def test_kernel_that_does_not_fit_is_one_line():
    with pytest.raises(SpdnnError, match="25x25 .* does not fit a 8x8 image"):
        gaussian_blur(torch.rand(1, 1, 8, 8), 6)
    gaussian_blur(torch.rand(1, 1, 13, 13), 6)  # radius 12 < 13 fits


@pytest.mark.parametrize("bad,field", [({"a": 0, "b": 0.1}, "options.noise.a"),
                                       ({"a": -0.5, "b": 0.1}, "options.noise.a"),
                                       ({"a": 0.1, "b": -1}, "options.noise.b"),
                                       ("2lux", "options.noise")])
def test_bad_noise_levels(bad, field):
    with pytest.raises(SpdnnError) as e:
        noise_level(bad)
    assert e.value.field == field and "\n" not in str(e.value)


def test_light_levels_are_the_public_codes_curve():
    assert light_level(3) == (0.12483, 0.31553)   # netspecs/dirty_pixels/denoise.yaml
    assert NOISE_LEVELS["6lux"].a == pytest.approx(0.12483 / 2, abs=1e-5)
    assert NOISE_LEVELS["6lux_psf"].psf_sigma == 1.0


def test_poisson_gaussian_moments_seeding_and_clipping():
    x = torch.full((1, 1, 400, 500), 0.4)
    level = {"a": 0.01, "b": 0.02}
    y = poisson_gaussian(x, level, torch.Generator().manual_seed(0))
    # E[y] = x, Var[y] = a x + b^2 (clipping is negligible this far from 0 and 1)
    assert abs(float(y.mean()) - 0.4) < 1e-3
    assert abs(float(y.var()) - (0.01 * 0.4 + 0.02 ** 2)) < 1e-4
    same = poisson_gaussian(x, level, torch.Generator().manual_seed(0))
    other = poisson_gaussian(x, level, torch.Generator().manual_seed(1))
    assert torch.equal(y, same) and not torch.equal(y, other)
    dark = poisson_gaussian(torch.full((1, 1, 64, 64), 0.02), "3lux",
                            torch.Generator().manual_seed(0))
    assert float(dark.min()) == 0.0 and float(dark.max()) <= 1.0  # clipped at 0
    assert float((dark == 0).float().mean()) > 0.3


def test_psf_blur_is_the_circular_convolution():
    x = torch.rand(1, 2, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = psf_blur(x.float(), 1.0, 5).double()
    t = torch.arange(5, dtype=torch.float64) - 2
    g = torch.exp(-t ** 2 / 2)
    k = g[:, None] * g[None, :]
    k /= k.sum()
    pad = torch.zeros(16, 16, dtype=torch.float64)
    pad[:5, :5] = k
    otf = torch.fft.fft2(torch.roll(pad, (-2, -2), (0, 1)))
    want = torch.fft.ifft2(torch.fft.fft2(x) * otf).real
    torch.testing.assert_close(y, want, atol=1e-5, rtol=0)
    assert torch.equal(psf_blur(x, 0.0, 5), x)


def test_anscombe_round_trip_and_unbiased_inverse():
    """Algebraic inverse undoes the transform exactly; the exact unbiased inverse maps the mean
    of the transformed data back to the mean of the data, the algebraic one does not (Makitalo &
    Foi 2013), at a low count."""
    fwd, inv = anscombe_pair({"a": 0.1, "b": 0.05})
    z = torch.rand(1000, dtype=torch.float64) + 0.2
    alg = InverseAnscombe(gain=0.1, sigma=0.05, method="algebraic")
    torch.testing.assert_close(alg(fwd(z)), z)
    a, b, x = 0.1, 0.05, 0.3  # 3 photo-electrons on average
    g = torch.Generator().manual_seed(0)
    z = a * torch.poisson(torch.full((400_000,), x / a, dtype=torch.float64), generator=g) \
        + b * torch.randn(400_000, generator=g, dtype=torch.float64)
    d = Anscombe(gain=a, sigma=b)(z).mean().reshape(1)
    unbiased = float(inv(d))
    biased = float(alg(d))
    assert abs(unbiased - x) < 0.01 * x
    assert abs(biased - x) > 3 * abs(unbiased - x)
