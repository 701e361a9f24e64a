"""Dirty Pixels (Diamond et al., seed 003): the denoising unit, the joint deblurring and
denoising unit, and a small classifier to pair them with.

The paper gives the prox's layer facts (sec. 6: one unrolled HQS iteration; 3 conv layers of
24 channels with 1x1 kernels, sec. 5.3) but no parameter count; the filter size of C is lost in
the text (5x5 reconstructed, see ../netspecs/blocks/dirty_pixels.yaml). The expected counts
below are hand arithmetic from that layer table. The classifier is a stand-in for the paper's
Inception-v4 (not from the paper).
"""

from __future__ import annotations

import math

import pytest
import torch

from spdnn.codegen import build_module, runtime
from spdnn.shapes import infer
from spdnn.spec import load, loads
from tests.helpers import NETSPECS

DIR = NETSPECS / "dirty_pixels"
SIZE = 32
FILTERS, PROX_LAYERS, K = 24, 3, 5  # per colour group: 24 filters of C, 3 x 1x1 prox convs
GAIN, SIGMA = 0.12483, 0.31553      # public code: Nexus 6P rear at light level 3 / 2000


def hqs_params(colours_separate: bool) -> int:
    groups = 3 if colours_separate else 1
    width = FILTERS * groups                      # 72 or 24 channels in the prox
    cin = 3 // groups                             # colours per group
    analysis = width * cin * K * K                # no bias
    prox = PROX_LAYERS * (width * (width // groups) + width)
    synthesis = width * cin * K * K               # transposed conv back to 3 colours, no bias
    return analysis + prox + synthesis + 1        # + log rho


CLASSIFIER = [32, 32, 64, 64, 128]


def classifier_params() -> int:
    n, cin = 0, 3
    for w in CLASSIFIER:
        n += 9 * cin * w + 2 * w  # 3x3 conv without bias, BN scale + shift
        cin = w
    return n + cin * 10 + 10


def test_hand_arithmetic():
    assert hqs_params(True) == 5 * 1_800 + 1 == 9_001
    assert hqs_params(False) == 1_800 + 3 * (24 * 24 + 24) + 1_800 + 1 == 5_401
    assert classifier_params() == 141_034
    # the noise parameters are the public code's get_coeffs at light level 0.0015 ("3 lux")
    assert GAIN == round(1.8724e-4 / 0.0015, 5) and SIGMA == round(4.733e-4 / 0.0015, 5)


@pytest.mark.parametrize("stem,expected,out_shape", [
    ("denoise", hqs_params(True), (3, SIZE, SIZE)),
    ("deblur_denoise", hqs_params(False), (3, SIZE, SIZE)),
    ("classifier", classifier_params(), (10,)),
])
def test_parameters_and_forward(stem, expected, out_shape):
    spec = load(DIR / f"{stem}.yaml")
    info = infer(spec)
    assert info.params == expected
    model = build_module(spec).eval()
    assert sum(p.numel() for p in model.parameters()) == expected
    assert spec.inputs[0].shape == (3, SIZE, SIZE)
    with torch.no_grad():
        out = model(torch.rand(2, 3, SIZE, SIZE))
    assert out.shape == (2, *out_shape)
    assert torch.isfinite(out).all()


def test_denoise_structure():
    spec = load(DIR / "denoise.yaml")
    assert [lay.op for lay in spec.layers] == ["Anscombe", "HQSStage", "InverseAnscombe"]
    a, hqs, inv = spec.layers
    assert (a.gain, a.sigma) == (inv.gain, inv.sigma) == (GAIN, SIGMA)
    assert hqs.groups == 3 and hqs.filters == 3 * FILTERS and hqs.psf == {"sigma": 0.0}
    body, binfo = hqs.body([(3, SIZE, SIZE)])
    ops = {lay.name: lay for lay in body.layers}
    assert ops["analysis"].kernel_size == K and ops["analysis"].use_bias is False
    prox = [ops[f"prox{i}"] for i in range(1, 4)]
    assert all(p.kernel_size == 1 and p.out_channels == hqs.filters for p in prox)
    assert [p.activation for p in prox] == ["relu", "relu", None]
    assert ops["x"].op == "InverseFilter" and ops["x"].learn_rho and ops["x"].rho == 2.0
    assert binfo.shapes["analysis"] == (72, SIZE, SIZE)


def _zero_prox(model: torch.nn.Module) -> None:
    with torch.no_grad():
        model.hqs1.prox3.weight.zero_()
        model.hqs1.prox3.bias.zero_()


def test_denoise_with_identity_prox_is_the_anscombe_round_trip():
    """prox3 = 0 gives z = y, and the identity-PSF inverse filter returns y, so the unit is
    InverseAnscombe(Anscombe(x)); with the algebraic inverse that is x itself."""
    torch.manual_seed(0)
    path = DIR / "denoise.yaml"
    model = build_module(load(path)).eval()
    _zero_prox(model)
    x = torch.rand(2, 3, SIZE, SIZE) * 0.9 + 0.05
    with torch.no_grad():
        got = model(x)
        vst = runtime.Anscombe(gain=GAIN, sigma=SIGMA)
        want = runtime.InverseAnscombe(gain=GAIN, sigma=SIGMA)(vst(x))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)

    text = path.read_text().replace("op: InverseAnscombe,", "op: InverseAnscombe, "
                                    "method: algebraic,")
    algebraic = build_module(loads(text, file=str(path))).eval()
    _zero_prox(algebraic)
    with torch.no_grad():
        torch.testing.assert_close(algebraic(x), x, rtol=1e-4, atol=1e-4)


def test_denoise_keeps_colours_separate_and_deblur_merges_them():
    torch.manual_seed(1)
    x = torch.rand(1, 3, SIZE, SIZE)
    bumped = x.clone()
    bumped[:, 0, 10:14, 10:14] += 0.3  # change red only
    for stem, separate in (("denoise", True), ("deblur_denoise", False)):
        model = build_module(load(DIR / f"{stem}.yaml")).eval()
        with torch.no_grad():
            model.hqs1.prox3.bias.fill_(0.1)  # a non-trivial prox
            diff = (model(bumped) - model(x)).abs().amax(dim=(0, 2, 3))
        assert diff[0] > 1e-3
        if separate:
            assert diff[1:].max() < 1e-5, stem
        else:
            assert diff[1:].min() > 1e-5, stem


def _gaussian_otf(sigma: float, size: int, h: int, w: int) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = g[:, None] * g[None, :]
    k = k / k.sum()
    pad = torch.zeros(h, w, dtype=torch.float64)
    pad[:size, :size] = k
    pad = torch.roll(pad, shifts=(-(size // 2), -(size // 2)), dims=(0, 1))
    return torch.fft.fft2(pad)


def test_deblur_x_step_is_the_inverse_filter_formula():
    """With z = y (prox3 = 0) the x-step is F^-1[(conj(K) Y + rho Y) / (|K|^2 + rho)]."""
    spec = load(DIR / "deblur_denoise.yaml")
    hqs = spec.layers[0]
    assert hqs.psf == {"sigma": 1.0, "size": 5} and hqs.groups == 1 and hqs.filters == FILTERS
    model = build_module(spec).eval()
    _zero_prox(model)
    rho = math.exp(model.hqs1.x_.log_rho.item())
    assert abs(rho - 2.0) < 1e-5
    y = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        got = model(y)
    otf = _gaussian_otf(1.0, 5, SIZE, SIZE)
    yf = torch.fft.fft2(y.double())
    want = torch.fft.ifft2((otf.conj() * yf + rho * yf) / (otf.abs() ** 2 + rho)).real
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_classifier_shapes():
    spec = load(DIR / "classifier.yaml")
    info = infer(spec)
    assert [info.shapes[n] for n in ("conv2", "pool2", "pool4", "pool5", "gap", "fc")] == [
        (32, 32, 32), (32, 16, 16), (64, 8, 8), (128, 4, 4), (128,), (10,)]
    convs = [lay for lay in spec.layers if lay.op == "Conv2d"]
    assert [c.out_channels for c in convs] == CLASSIFIER
    assert all(c.batch_norm and c.activation == "relu" for c in convs)
