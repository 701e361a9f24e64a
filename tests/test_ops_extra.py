"""The "more ops" of issue #3: BatchNorm2d, InstanceNorm2d, SPADE, PixelShuffle, Embedding, Mul,
Softplus, spectral_norm on Conv2d/ConvTranspose2d/Linear, FixedConv2d, Anscombe,
InverseAnscombe and InverseFilter.

Every op is checked for (a) shapes via ``spdnn.shapes.infer`` on a small netspec, (b) its
parameter count against the built torch module, (c) emitted-vs-in-process parity, (d) ONNX
parity through ``spdnn.export.export_onnx`` (all of them export with the default exporter),
then numerically against a direct reference where it matters, and for clear errors on bad
params.
"""

from __future__ import annotations

import ast
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from spdnn.codegen import build_module, emit_module, runtime
from spdnn.errors import SpecError
from spdnn.ops import OPS
from spdnn.ops.imaging import gaussian_size
from spdnn.shapes import infer
from spdnn.spec import Netspec, load_checked, loads
from tests.helpers import exec_class

NEW_OPS = ["BatchNorm2d", "InstanceNorm2d", "SPADE", "PixelShuffle", "Embedding", "Mul",
           "Softplus", "FixedConv2d", "Anscombe", "InverseAnscombe", "InverseFilter"]

IMG = "input: {name: x, channels: 3, height: 8, width: 8}\n"

# name -> (netspec body, {layer: out shape}, expected trainable parameters)
CASES: dict[str, tuple[str, dict[str, tuple], int]] = {
    "batchnorm": (IMG + """layers:
  - {name: bn, op: BatchNorm2d}
  - {name: bn_free, op: BatchNorm2d, affine: false, eps: 0.001, momentum: 0.2}
""", {"bn": (3, 8, 8), "bn_free": (3, 8, 8)}, 6),
    "instancenorm": (IMG + """layers:
  - {name: inorm, op: InstanceNorm2d, affine: true}
  - {name: inorm_free, op: InstanceNorm2d}
""", {"inorm": (3, 8, 8), "inorm_free": (3, 8, 8)}, 6),
    "spade_batch": ("""inputs:
  - {name: x, channels: 4, height: 8, width: 8}
  - {name: seg, channels: 3, height: 3, width: 3}
layers:
  - {name: spade, op: SPADE, hidden: 8, inputs: [x, seg]}
""", {"spade": (4, 8, 8)}, (9 * 3 * 8 + 8) + 2 * (9 * 8 * 4 + 4)),
    "spade_instance": ("""inputs:
  - {name: x, channels: 4, height: 8, width: 8}
  - {name: heat, channels: 2, height: 8, width: 8}
layers:
  - {name: spade, op: SPADE, norm: instance, kernel_size: 5, hidden: 6, inputs: [x, heat]}
""", {"spade": (4, 8, 8)}, (25 * 2 * 6 + 6) + 2 * (25 * 6 * 4 + 4)),
    "pixelshuffle": ("""input: {name: x, channels: 18, height: 4, width: 5}
layers:
  - {name: ps3, op: PixelShuffle, upscale_factor: 3}
  - {name: conv, op: Conv2d, kernel_size: 1, out_channels: 4}
  - {name: ps2, op: PixelShuffle}
""", {"ps3": (2, 12, 15), "conv": (4, 12, 15), "ps2": (1, 24, 30)}, 2 * 4 + 4),
    "embedding": ("""input: {name: label, features: 1}
layers:
  - {name: emb, op: Embedding, num_embeddings: 5, embedding_dim: 7}
  - {name: fc, op: Linear, out_features: 3}
""", {"emb": (7,), "fc": (3,)}, 5 * 7 + 7 * 3 + 3),
    "mul": ("""inputs:
  - {name: x, channels: 4, height: 6, width: 6}
  - {name: g, channels: 4, height: 1, width: 1}
  - {name: m, channels: 1, height: 6, width: 6}
layers:
  - {name: gate, op: Sigmoid, inputs: [g]}
  - {name: prod, op: Mul, inputs: [x, gate]}
  - {name: prod3, op: Mul, inputs: [prod, m, gate]}
""", {"prod": (4, 6, 6), "prod3": (4, 6, 6)}, 0),
    "softplus": (IMG + """layers:
  - {name: sp, op: Softplus}
  - {name: sp2, op: Softplus, beta: 2.0, threshold: 5.0}
""", {"sp": (3, 8, 8), "sp2": (3, 8, 8)}, 0),
    "spectral_norm": (IMG + """layers:
  - {name: conv, op: Conv2d, kernel_size: 3, out_channels: 4, padding: same,
     spectral_norm: true, batch_norm: true, activation: leaky_relu, negative_slope: 0.2}
  - {name: up, op: ConvTranspose2d, kernel_size: 2, stride: 2, out_channels: 2,
     spectral_norm: true}
  - {name: fc, op: Linear, out_features: 5, spectral_norm: true}
""", {"conv": (4, 8, 8), "up": (2, 16, 16), "fc": (5,)},
        (27 * 4 + 2 * 4) + (4 * 2 * 4 + 2) + (2 * 16 * 16 * 5 + 5)),
    "fixedconv": (IMG + """layers:
  - {name: psf, op: FixedConv2d, kernel: [[0.0, 0.1, 0.0], [0.2, 0.3, 0.1], [0.0, 0.25, 0.05]]}
  - {name: blur, op: FixedConv2d, gaussian: {sigma: 1.0}, padding: zeros}
  - {name: wrap, op: FixedConv2d, gaussian: {sigma: 0.5, size: 3}, padding: circular}
  - {name: even, op: FixedConv2d, kernel: [[1, 2], [3, 4]], padding: replicate}
""", {"psf": (3, 8, 8), "blur": (3, 8, 8), "wrap": (3, 8, 8), "even": (3, 8, 8)}, 0),
    "anscombe": (IMG + """layers:
  - {name: vst, op: Anscombe, gain: 0.3, sigma: 0.2, mu: 0.1}
  - {name: inv, op: InverseAnscombe, gain: 0.3, sigma: 0.2, mu: 0.1}
  - {name: alg, op: InverseAnscombe, method: algebraic, inputs: [vst]}
  - {name: both, op: Add, inputs: [inv, alg]}
""", {"vst": (3, 8, 8), "inv": (3, 8, 8), "alg": (3, 8, 8)}, 0),
    "inverse_filter": ("""inputs:
  - {name: z, channels: 3, height: 8, width: 10}
  - {name: y, channels: 3, height: 8, width: 10}
layers:
  - {name: hqs, op: InverseFilter, gaussian: {sigma: 1.0}, rho: 0.1, learn_rho: true,
     inputs: [z, y]}
  - {name: deconv, op: InverseFilter, kernel: [[0.1, 0.2], [0.3, 0.4]], rho: 0.05,
     inputs: [y]}
  - {name: sum, op: Add, inputs: [hqs, deconv]}
""", {"hqs": (3, 8, 10), "deconv": (3, 8, 10)}, 1),
}

# cases whose inputs are not plain images: explicit inputs (batch of 3)
SPECIAL_INPUTS = {"embedding": lambda: [torch.tensor([[0.0], [4.0], [2.0]])]}


def spec_of(case: str) -> Netspec:
    return loads(f"name: t_{case}\n" + CASES[case][0], file=f"<{case}>")


def inputs_of(case: str, spec: Netspec, seed: int = 0) -> list[torch.Tensor]:
    if case in SPECIAL_INPUTS:
        return SPECIAL_INPUTS[case]()
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, *i.shape, generator=g) * 2 for i in spec.inputs]


def randomize(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial norm statistics, so that eval-mode parity means something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def emitted_class(spec: Netspec) -> tuple[str, type[nn.Module]]:
    src = emit_module(spec)
    return src, exec_class(src, spec)


# --------------------------------------------------------------------------------------------
# (a)-(d) for every op
# --------------------------------------------------------------------------------------------
def test_new_ops_are_registered_and_listed(capsys):
    from spdnn.cli import main

    assert main(["ops"]) == 0
    text = capsys.readouterr().out
    for name in NEW_OPS:
        assert name in OPS
        assert len(OPS[name].__doc__ or "") > 200  # shapes, params, ranges, source
        assert isinstance(OPS[name].onnx_exportable, bool)
        assert name in text
    for name in ("Conv2d", "ConvTranspose2d", "Linear"):
        assert "spectral_norm" in OPS[name].model_fields


@pytest.mark.parametrize("case", list(CASES))
def test_shapes(case):
    info = infer(spec_of(case))
    for layer, shape in CASES[case][1].items():
        assert info.shapes[layer] == shape, layer


@pytest.mark.parametrize("case", list(CASES))
def test_param_count_matches_torch(case):
    spec = spec_of(case)
    module = build_module(spec)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert infer(spec).params == trainable == CASES[case][2]


@pytest.mark.parametrize("case", list(CASES))
def test_emitted_matches_in_process(case):
    spec = spec_of(case)
    torch.manual_seed(0)
    ref = build_module(spec)
    randomize(ref)
    src, cls = emitted_class(spec)
    for node in ast.walk(ast.parse(src)):  # emitted files import only torch
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names]
            assert names in (["torch"], ["nn"]), ast.unparse(node)
    gen = cls()
    assert list(gen.state_dict()) == list(ref.state_dict())
    gen.load_state_dict(ref.state_dict(), strict=True)
    ref.eval()
    gen.eval()
    xs = inputs_of(case, spec)
    with torch.no_grad():
        want, got = ref(*xs), gen(*xs)
    shapes = infer(spec).output_shapes()
    assert tuple(want.shape) == (xs[0].shape[0], *shapes["out"])
    assert torch.isfinite(want).all()
    assert torch.equal(got, want)


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_parity(case, tmp_path):
    from spdnn.export import export_onnx

    spec = spec_of(case)
    if not all(getattr(type(lay), "onnx_exportable", True) for lay in spec.layers):
        pytest.skip("an op of this netspec has no ONNX equivalent")
    checks = None
    if case in SPECIAL_INPUTS:
        checks = [x[k:k + 1].numpy() for x in SPECIAL_INPUTS[case]() for k in range(3)]
    report = export_onnx(spec, tmp_path / f"{case}.onnx", check_inputs=checks)
    assert report.ok and report.max_abs_err < 1e-4, report.checks


# --------------------------------------------------------------------------------------------
# numerical references
# --------------------------------------------------------------------------------------------
def test_norms_match_formulas():
    spec = spec_of("batchnorm")
    m = build_module(spec)
    x = torch.randn(4, 3, 8, 8) * 3 + 1
    m.train()
    out = m(x)
    mean, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), unbiased=False, keepdim=True)
    bn = (x - mean) / torch.sqrt(var + 1e-5)  # affine weights start at 1, 0
    bn_mean, bn_var = bn.mean((0, 2, 3), keepdim=True), bn.var((0, 2, 3), unbiased=False,
                                                               keepdim=True)
    torch.testing.assert_close(out, (bn - bn_mean) / torch.sqrt(bn_var + 1e-3))
    free = m.bn_free
    assert free.weight is None and free.momentum == 0.2 and free.eps == 1e-3
    spec = spec_of("instancenorm")
    m = build_module(spec)
    with torch.no_grad():
        m.inorm.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        m.inorm.bias.copy_(torch.tensor([0.5, 0.0, -1.0]))
    mean, var = x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True)
    inorm = (x - mean) / torch.sqrt(var + 1e-5) * torch.tensor([1.0, 2.0, 3.0])[:, None, None]
    inorm = inorm + torch.tensor([0.5, 0.0, -1.0])[:, None, None]
    torch.testing.assert_close(m.inorm(x), inorm, rtol=1e-5, atol=1e-5)
    assert not list(m.inorm_free.parameters())


def _spade_reference(mod: nn.Module, x: torch.Tensor, seg: torch.Tensor, norm: str,
                     training: bool) -> torch.Tensor:
    """SPADE by hand (architectures.md sec. 6.1): param-free norm, nearest resize, shared
    conv + ReLU, gamma and beta heads, norm(x) * (1 + gamma) + beta."""
    eps = 1e-5
    if norm == "instance":
        mean, var = x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True)
    elif training:
        mean, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), unbiased=False,
                                                           keepdim=True)
    else:
        bn = mod.param_free_norm
        mean, var = bn.running_mean[None, :, None, None], bn.running_var[None, :, None, None]
    normalized = (x - mean) / torch.sqrt(var + eps)
    H, W = x.shape[-2:]
    h, w = seg.shape[-2:]
    rows = torch.tensor([i * h // H for i in range(H)])
    cols = torch.tensor([j * w // W for j in range(W)])
    resized = seg[:, :, rows][:, :, :, cols]
    conv, head_g, head_b = mod.mlp_shared[0], mod.mlp_gamma, mod.mlp_beta
    k = conv.kernel_size[0]
    actv = F.relu(F.conv2d(resized, conv.weight, conv.bias, padding=k // 2))
    gamma = F.conv2d(actv, head_g.weight, head_g.bias, padding=k // 2)
    beta = F.conv2d(actv, head_b.weight, head_b.bias, padding=k // 2)
    return normalized * (1 + gamma) + beta


@pytest.mark.parametrize("case,norm", [("spade_batch", "batch"),
                                       ("spade_instance", "instance")])
def test_spade_matches_hand_written_formula(case, norm):
    spec = spec_of(case)
    torch.manual_seed(1)
    m = build_module(spec)
    randomize(m)
    mod = m.spade
    assert isinstance(mod, runtime.SPADE)
    assert not list(mod.param_free_norm.parameters())  # the norm is parameter-free
    x, seg = inputs_of(case, spec, seed=3)
    for training in (False, True):
        m.train(training)
        with torch.no_grad():
            want = _spade_reference(mod, x, seg, norm, training)
            got = m(x, seg)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_pixelshuffle_embedding_mul_softplus_match_formulas():
    m = build_module(spec_of("pixelshuffle"))
    x = torch.randn(2, 18, 4, 5)
    got = m.ps3(x)
    # out[n, c, h*r + i, w*r + j] = x[n, c*r*r + i*r + j, h, w]
    want = x.reshape(2, 2, 3, 3, 4, 5).permute(0, 1, 4, 2, 5, 3).reshape(2, 2, 12, 15)
    assert torch.equal(got, want)

    spec = spec_of("embedding")
    m = build_module(spec)
    idx = torch.tensor([[4], [0], [3]])
    want = m.emb.weight[idx[:, 0]]
    assert torch.equal(m.emb(idx[:, 0]), want)
    out_long = m(idx)
    out_float = m(idx.float())  # an integer-valued float index works too
    assert torch.equal(out_long, out_float)
    assert torch.equal(out_long, m.fc(want))

    m = build_module(spec_of("mul"))
    x, g, mm = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 1, 1), torch.randn(2, 1, 6, 6)
    sig = torch.sigmoid(g)
    assert torch.equal(m(x, g, mm), x * sig * mm * sig)

    m = build_module(spec_of("softplus"))
    x = torch.linspace(-5, 5, 101).reshape(1, 1, 1, 101).expand(1, 3, 8, 101)
    torch.testing.assert_close(m.sp(x), torch.log1p(torch.exp(x)))
    beta = 2.0
    ref = torch.where(beta * x > 5.0, x, torch.log1p(torch.exp(beta * x)) / beta)
    torch.testing.assert_close(m.sp2(x), ref)


def test_spectral_norm_option():
    spec = spec_of("spectral_norm")
    info = infer(spec)
    call = info["conv"].op.module(list(info["conv"].in_shapes), info["conv"].out_shape)
    src = call.source()
    assert src.startswith("nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Conv2d(3, 4")
    assert call.helpers() == set()  # a torch.nn path, no helper class
    m = build_module(spec)  # Call.build resolves the dotted target
    emitted, _ = emitted_class(spec)
    assert "nn.utils.parametrizations.spectral_norm(nn.ConvTranspose2d(4, 2" in emitted
    assert "nn.utils.parametrizations.spectral_norm(nn.Linear(512, 5))" in emitted
    convs = [m.conv[0], m.up, m.fc[1]]
    for mod in convs:
        assert nn.utils.parametrize.is_parametrized(mod, "weight")
        assert {"parametrizations.weight.original", "parametrizations.weight.0._u",
                "parametrizations.weight.0._v"} <= set(mod.state_dict())
    # train-mode power iterations converge to sigma(W) = 1; eval reuses the stored u, v
    m.train()
    x = torch.randn(2, 3, 8, 8)
    for _ in range(30):
        m(x)
    m.eval()
    for mod in convs:
        w = mod.weight
        w = w.transpose(0, 1) if isinstance(mod, nn.ConvTranspose2d) else w
        sigma = torch.linalg.matrix_norm(w.detach().flatten(1), ord=2)
        assert abs(sigma.item() - 1.0) < 1e-3
    # off by default: the plain layer, unchanged (generators/ stay in sync)
    plain = loads("name: p\n" + IMG + "layers:\n  - {name: c, op: Conv2d, kernel_size: 3, "
                  "out_channels: 4}\n")
    assert "spectral" not in emit_module(plain)
    assert "spectral_norm" not in plain.to_data()["layers"][0]


def test_gaussian_size_follows_generative_sensing():
    # seed 000 sec. 4: kernel size 4 * sigma_b for sigma_b in {0..6}, made odd: 4 sigma + 1
    assert [gaussian_size(s) for s in range(7)] == [1, 5, 9, 13, 17, 21, 25]
    assert gaussian_size(0.2) == 1 and gaussian_size(1.3) == 7 and gaussian_size(0.75) == 5


def test_fixedconv_is_a_true_convolution_with_a_buffer():
    from scipy import ndimage

    spec = spec_of("fixedconv")
    m = build_module(spec).double()
    assert not list(m.parameters())
    assert {k for k, _ in m.named_buffers()} == {"psf.weight", "blur.weight", "wrap.weight",
                                                  "even.weight"}
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    for layer, mode in (("psf", "mirror"), ("blur", "constant"), ("wrap", "wrap"),
                        ("even", "nearest")):
        mod = getattr(m, layer)
        kernel = mod.weight[0, 0].flip(0, 1).numpy()  # the PSF as given
        got = mod(x).numpy()
        want = np.stack([[ndimage.convolve(x[n, c].numpy(), kernel, mode=mode)
                          for c in range(3)] for n in range(2)])
        np.testing.assert_allclose(got, want, atol=1e-12, err_msg=layer)
    given = [[0.0, 0.1, 0.0], [0.2, 0.3, 0.1], [0.0, 0.25, 0.05]]
    assert np.allclose(m.psf.weight[0, 0].flip(0, 1).numpy(), given)
    g = m.blur.weight[0, 0]
    assert g.shape == (5, 5) and abs(g.sum().item() - 1) < 1e-6  # a float32 buffer
    t = torch.arange(5, dtype=torch.float64) - 2
    want = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / 2)
    torch.testing.assert_close(g, want / want.sum(), rtol=1e-6, atol=1e-7)
    ident = loads("name: i\n" + IMG + "layers:\n  - {name: b, op: FixedConv2d, gaussian: "
                  "{sigma: 0}}\n")
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(build_module(ident)(x), x)


def _gat(z, a, s, mu):
    arg = a * z + 3 / 8 * a ** 2 + s ** 2 - a * mu
    return np.where(arg > 0, 2 / a * np.sqrt(np.maximum(arg, 0)), 0.0)


def test_anscombe_formula_and_algebraic_inverse():
    m = build_module(spec_of("anscombe")).double()
    a, s, mu = 0.3, 0.2, 0.1
    z = torch.linspace(-1, 20, 2101, dtype=torch.float64).reshape(1, 1, 1, -1)
    z = z.expand(1, 3, 8, -1).contiguous()
    d = m.vst(z)
    np.testing.assert_allclose(d.numpy(), _gat(z.numpy(), a, s, mu), rtol=1e-12, atol=1e-12)
    # forward then the algebraic inverse: the identity where the transform is invertible
    alg = runtime.InverseAnscombe(a, s, mu, method="algebraic")
    keep = a * z + 3 / 8 * a ** 2 + s ** 2 - a * mu > 0
    torch.testing.assert_close(alg(d)[keep], z[keep], rtol=1e-10, atol=1e-10)
    # a finite gradient everywhere, zero below the threshold
    zz = z.clone().requires_grad_(True)
    m.vst(zz).sum().backward()
    assert torch.isfinite(zz.grad).all() and (zz.grad[~keep] == 0).all()
    # the closed-form exact unbiased inverse, by formula
    dd = torch.linspace(0, 12, 1201, dtype=torch.float64)
    r = math.sqrt(1.5)
    dc = dd.clamp(min=2 * math.sqrt(3 / 8))
    closed = (dc ** 2 / 4 + r / 4 / dc - 11 / 8 / dc ** 2 + 5 / 8 * r / dc ** 3 - 1 / 8
              - (s / a) ** 2)
    want = a * closed.clamp(min=0) + mu
    torch.testing.assert_close(runtime.InverseAnscombe(a, s, mu)(dd), want)
    assert (torch.diff(want) >= 0).all()  # monotone, finite at D = 0


@pytest.mark.parametrize("gain,sigma,mu", [(1.0, 0.0, 0.0), (2.0, 1.0, 0.5)])
def test_exact_unbiased_inverse_on_poisson_gaussian_data(gain, sigma, mu):
    """E[f(z)] mapped back by the exact unbiased inverse is ~ E[z] = gain * lam + mu (loosely:
    the closed form is an approximation); the algebraic inverse is visibly biased at low
    counts (Makitalo & Foi 2013)."""
    g = torch.Generator().manual_seed(0)
    fwd = runtime.Anscombe(gain, sigma, mu)
    exact = runtime.InverseAnscombe(gain, sigma, mu)
    alg = runtime.InverseAnscombe(gain, sigma, mu, method="algebraic")
    for lam in (1.0, 2.0, 5.0, 20.0):
        counts = torch.poisson(torch.full((200_000,), lam, dtype=torch.float64), generator=g)
        z = gain * counts + mu + sigma * torch.randn(200_000, generator=g, dtype=torch.float64)
        mean_d = fwd(z).mean().reshape(1)
        true = gain * lam + mu
        err_exact = abs(exact(mean_d).item() - true)
        err_alg = abs(alg(mean_d).item() - true)
        assert err_exact <= 0.03 * true + 0.05 * gain, (lam, err_exact)
        if lam <= 5:
            assert err_exact < 0.5 * err_alg, (lam, err_exact, err_alg)


def _circulant(psf: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The (h*w, h*w) matrix of circular convolution with ``psf`` (centre at k // 2)."""
    kh, kw = psf.shape
    a = torch.zeros(h * w, h * w, dtype=torch.float64)
    for r in range(h):
        for c in range(w):
            for i in range(kh):
                for j in range(kw):
                    src = ((r - (i - kh // 2)) % h) * w + (c - (j - kw // 2)) % w
                    a[r * w + c, src] += psf[i, j]
    return a


def test_inverse_filter_solves_the_least_squares_problem():
    spec = spec_of("inverse_filter")
    m = build_module(spec).double()
    with torch.no_grad():
        m.hqs.log_rho.fill_(math.log(0.3))
    h, w = 8, 10
    g = torch.Generator().manual_seed(0)
    z = torch.rand(2, 3, h, w, generator=g, dtype=torch.float64)
    y = torch.rand(2, 3, h, w, generator=g, dtype=torch.float64)
    for layer, args in (("hqs", (z, y)), ("deconv", (y,))):
        mod = getattr(m, layer)
        rho = mod.log_rho.exp().item()
        assert abs(rho - {"hqs": 0.3, "deconv": 0.05}[layer]) < 1e-8
        a = _circulant(mod.psf, h, w)
        lhs = a.T @ a + rho * torch.eye(h * w, dtype=torch.float64)
        zz = args[0].reshape(6, h * w).T
        yy = args[-1].reshape(6, h * w).T
        want = torch.linalg.solve(lhs, a.T @ yy + rho * zz).T.reshape(2, 3, h, w)
        torch.testing.assert_close(mod(*args), want, rtol=1e-9, atol=1e-9)
    # FixedConv2d with circular padding is the matching forward operator k * x
    fwd = runtime.FixedConv2d(3, sigma=1.0, size=5, padding="circular").double()
    a = _circulant(m.hqs.psf, h, w)
    torch.testing.assert_close(fwd(z), (a @ z.reshape(6, h * w).T).T.reshape(2, 3, h, w))
    # rho is learnable through log rho (stays positive); a fixed rho is a buffer
    assert [n for n, _ in m.named_parameters()] == ["hqs.log_rho"]
    assert "deconv.log_rho" in dict(m.named_buffers())
    m.hqs(z, y).pow(2).sum().backward()
    assert m.hqs.log_rho.grad is not None and torch.isfinite(m.hqs.log_rho.grad)


def test_inverse_filter_with_identity_psf_is_the_denoising_update():
    # Dirty Pixels' public code: x = (lambda y + beta z) / (lambda + beta); k = delta, rho = beta
    mod = runtime.InverseFilter(kernel=((0.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 0.0)),
                                rho=2.0).double()
    z, y = torch.rand(1, 2, 6, 7, dtype=torch.float64), torch.rand(1, 2, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(mod(z, y), (y + 2.0 * z) / 3.0)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
BAD = {
    "kernel not square": (IMG + "layers:\n  - {name: f, op: FixedConv2d, kernel: [[1, 2, 3], "
                          "[4, 5, 6]]}\n", "kernel must be a square"),
    "ragged kernel": (IMG + "layers:\n  - {name: f, op: FixedConv2d, kernel: [[1, 2], [3]]}\n",
                      "kernel must be a square"),
    "negative sigma": (IMG + "layers:\n  - {name: f, op: FixedConv2d, gaussian: {sigma: -1}}\n",
                       "greater than or equal to 0"),
    "even gaussian size": (IMG + "layers:\n  - {name: f, op: FixedConv2d, gaussian: {sigma: 1, "
                           "size: 4}}\n", "size must be odd"),
    "two kernels": (IMG + "layers:\n  - {name: f, op: FixedConv2d, kernel: [[1]], gaussian: "
                    "{sigma: 1}}\n", "exactly one of 'kernel'"),
    "no kernel": (IMG + "layers:\n  - {name: f, op: InverseFilter, rho: 0.1}\n",
                  "exactly one of 'kernel'"),
    "nan kernel": (IMG + "layers:\n  - {name: f, op: FixedConv2d, kernel: [[.nan]]}\n",
                   "finite"),
    "rho not positive": (IMG + "layers:\n  - {name: f, op: InverseFilter, kernel: [[1]], rho: 0}"
                         "\n", "greater than 0"),
    "kernel larger than input": (IMG + "layers:\n  - {name: f, op: InverseFilter, gaussian: "
                                 "{sigma: 3}, rho: 1}\n", "larger than the 8x8 input"),
    "reflect pad too large": (IMG + "layers:\n  - {name: f, op: FixedConv2d, gaussian: "
                              "{sigma: 4}}\n", "reflect padding"),
    "z and y differ": ("inputs:\n  - {name: z, channels: 3, height: 8, width: 8}\n  - {name: y, "
                       "channels: 1, height: 8, width: 8}\nlayers:\n  - {name: f, op: "
                       "InverseFilter, kernel: [[1]], rho: 1, inputs: [z, y]}\n",
                       "must have the same shape"),
    "spade one input": (IMG + "layers:\n  - {name: s, op: SPADE}\n",
                        "takes exactly 2 input(s), got 1"),
    "spade even kernel": ("inputs:\n  - {name: x, channels: 3, height: 8, width: 8}\n  - {name: "
                          "s, channels: 1, height: 8, width: 8}\nlayers:\n  - {name: sp, op: "
                          "SPADE, kernel_size: 4, inputs: [x, s]}\n", "kernel_size must be odd"),
    "spade bad norm": ("inputs:\n  - {name: x, channels: 3, height: 8, width: 8}\n  - {name: "
                       "s, channels: 1, height: 8, width: 8}\nlayers:\n  - {name: sp, op: "
                       "SPADE, norm: group, inputs: [x, s]}\n", "'batch' or 'instance'"),
    "spade vector segmap": ("inputs:\n  - {name: x, channels: 3, height: 8, width: 8}\n  - "
                            "{name: s, features: 4}\nlayers:\n  - {name: sp, op: SPADE, inputs: "
                            "[x, s]}\n", "second input (segmap)"),
    "pixelshuffle channels": (IMG + "layers:\n  - {name: p, op: PixelShuffle}\n",
                              "divisible by upscale_factor^2 = 4"),
    "mul shapes": ("inputs:\n  - {name: a, channels: 3, height: 8, width: 8}\n  - {name: b, "
                   "channels: 2, height: 1, width: 1}\nlayers:\n  - {name: m, op: Mul, inputs: "
                   "[a, b]}\n", "broadcastable"),
    "mul ranks": ("inputs:\n  - {name: a, channels: 3, height: 8, width: 8}\n  - {name: b, "
                  "features: 3}\nlayers:\n  - {name: m, op: Mul, inputs: [a, b]}\n",
                  "same rank"),
    "mul one input": (IMG + "layers:\n  - {name: m, op: Mul}\n", "at least 2 input(s)"),
    "embedding input": ("input: {name: x, features: 2}\nlayers:\n  - {name: e, op: Embedding, "
                        "num_embeddings: 3, embedding_dim: 2}\n", "shape (1,)"),
    "softplus beta": (IMG + "layers:\n  - {name: s, op: Softplus, beta: 0}\n", "greater than 0"),
    "instancenorm 1x1": ("input: {channels: 3, height: 1, width: 1}\nlayers:\n  - {name: n, op: "
                         "InstanceNorm2d}\n", "more than one spatial element"),
    "anscombe gain": (IMG + "layers:\n  - {name: a, op: Anscombe, gain: 0}\n", "greater than 0"),
    "inverse anscombe method": (IMG + "layers:\n  - {name: a, op: InverseAnscombe, method: "
                                "asymptotic}\n", "'exact_unbiased' or 'algebraic'"),
    "spectral_norm not bool": (IMG + "layers:\n  - {name: c, op: Conv2d, kernel_size: 3, "
                               "out_channels: 2, spectral_norm: maybe}\n", "spectral_norm"),
}


@pytest.mark.parametrize("what", list(BAD))
def test_bad_params_give_one_clear_spec_error(what, tmp_path):
    body, needle = BAD[what]
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\n" + body)
    with pytest.raises(SpecError) as exc:
        load_checked(path)  # validation, graph checks and shape inference, as the CLI does
    line = exc.value.one_line()
    assert needle in line, line
    assert "\n" not in line and line.startswith(f"{path}:"), line
