"""GAN-family netspecs of the thesis (BEGAN, VAC+GAN, VAR+GAN, GAN_Aspect; netspecs/gan/) and the
ops they added (``GaussianNoise``, ``MinibatchDiscrimination``).

The thesis gives no parameter counts for these networks, so every expected count below is
worked out by hand from the layer tables (thesis App. F Table II, App. H Tables 1-6, App. I
Table 1; architectures.md sec. 2-4 where the thesis is vague), independently of spdnn's cost
model, and must equal both ``infer(spec).params`` and torch's count. Output shapes come from a
batch-2 forward pass; spatial sizes at key layers from ``infer``.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from spdnn.codegen import build_module, emit_module, runtime
from spdnn.ops import OPS
from spdnn.shapes import infer
from spdnn.spec import Netspec, load, loads
from tests.helpers import exec_class

ROOT = Path(__file__).resolve().parents[1]
GAN = ROOT / "netspecs" / "gan"


# --------------------------------------------------------------------------------------------
# hand arithmetic
# --------------------------------------------------------------------------------------------
def conv(cin: int, cout: int, k: int = 3, bn: bool = False) -> int:
    """A k x k conv (bias unless BN follows; Lasagne's batch_norm() drops it) + BN (gamma, beta)."""
    return cin * cout * k * k + (2 * cout if bn else cout)


def dense(fin: int, fout: int, bn: bool = False) -> int:
    return fin * fout + (2 * fout if bn else fout)


NN = 64


def began_decoder(code: int, start: int | tuple[int, int], ups: int, out_ch: int,
                  nn: int = NN) -> int:
    """dense code -> start*start*nn (start: a side, or (height, width)), (2 convs + unpool) x
    ups, 2 convs, 3x3 conv to out_ch; all convs at width nn."""
    h, w = (start, start) if isinstance(start, int) else start
    return dense(code, h * w * nn) + (2 * ups + 2) * conv(nn, nn) + conv(nn, out_ch)


def began_encoder(in_ch: int, pools: int, res: int, code: int) -> int:
    """conv in->NN, then per pool: 2 convs at k*NN, 1x1 conv to (k+1)*NN; 2 convs at the last
    width; dense to the code."""
    n = conv(in_ch, NN)
    for k in range(1, pools + 1):
        n += 2 * conv(k * NN, k * NN) + conv(k * NN, (k + 1) * NN, k=1)
    top = (pools + 1) * NN
    return n + 2 * conv(top, top) + dense(top * res * res, code)


def eres_down(cin: int, cout: int) -> int:
    """SPADE-SR encoder ResBlock down (EResBlockDown / EResBlockDownIn): 1x1 skip conv and two
    3x3 convs, all without bias, and a BN (gamma, beta) before each 3x3 conv (on cin, cout)."""
    return cin * cout + 2 * cin + cin * cout * 9 + 2 * cout + cout * cout * 9


EXPECTED = {
    # BEGAN (architectures.md sec. 2.1/2.2); 128: CONTROLDIM 64, 48: 128, 28 gray: 64
    "began/generator_128.yaml": began_decoder(64, 8, 4, 3),
    "began/discriminator_128.yaml": began_encoder(3, 4, 8, 64) + began_decoder(64, 8, 4, 3),
    "began/generator_48.yaml": began_decoder(128, 6, 3, 3),
    "began/discriminator_48.yaml": began_encoder(3, 3, 6, 128) + began_decoder(128, 6, 3, 3),
    "began/generator_28_gray.yaml": began_decoder(64, 7, 2, 1),
    "began/discriminator_28_gray.yaml": began_encoder(1, 2, 7, 64) + began_decoder(64, 7, 2, 1),
    # VAC+GAN MNIST (thesis App. H Tables 1-3)
    "dcgan/mnist_generator.yaml": (dense(10, 1024, bn=True) + dense(1024, 128 * 7 * 7, bn=True)
                                   + conv(128, 64, 5, bn=True) + conv(64, 1, 5)),
    "dcgan/mnist_discriminator.yaml": (conv(1, 64, 5, bn=True) + conv(64, 128, 5, bn=True)
                                       + dense(128 * 7 * 7, 1024) + dense(1024, 1)),
    "dcgan/mnist_classifier.yaml": (conv(1, 16) + conv(16, 8) + dense(8 * 5 * 5, 1024)
                                    + dense(1024, 10)),
    # VAC+GAN CIFAR-10 (thesis App. H Tables 4-6)
    "dcgan/cifar10_generator.yaml": (dense(10, 384 * 4 * 4) + conv(384, 192, 5, bn=True)
                                     + conv(192, 96, 5, bn=True) + conv(96, 3, 5)),
    "dcgan/cifar10_discriminator.yaml": (
        conv(3, 16) + conv(16, 32, bn=True) + conv(32, 64, bn=True) + conv(64, 128, bn=True)
        + conv(128, 256, bn=True) + conv(256, 512, bn=True)
        + 512 * 4 * 4 * 50 * 30 + 50 * 30 + 50      # minibatch disc.: T, log-scales, bias
        + dense(512 * 4 * 4 + 50, 1)),
    "dcgan/cifar10_classifier.yaml": (conv(3, 128, 5, bn=True) + conv(128, 256, 5, bn=True)
                                      + conv(256, 512, 5, bn=True) + dense(512, 512)
                                      + dense(512, 10)),
    # VAC+GAN binary CelebA classifiers (architectures.md sec. 3.1; thesis App. H Table 1)
    "vac/celeba_classifier_128.yaml": (conv(3, 16) + conv(16, 8) + dense(8 * 13 * 13, 1024)
                                       + dense(1024, 1)),
    "vac/celeba_classifier_48.yaml": (conv(3, 16) + conv(16, 8) + dense(8 * 10 * 10, 1024)
                                      + dense(1024, 1)),
    # VAR+GAN regressor (thesis App. I Table 1; the code's three-conv version)
    "var/regressor.yaml": conv(3, 64) + conv(64, 64) + dense(64 * 10 * 10, 1024) + dense(1024, 98),
    "var/regressor_code.yaml": (conv(3, 64) + 2 * conv(64, 64) + dense(64 * 8 * 8, 1024)
                                + dense(1024, 98)),
    # the attribute comparison (App. I at 28x28, A = 2): Table 1 layout at 16 channels; the
    # cBiGAN encoder and joint discriminator on the NN-16 BEGAN encoder
    "var/attr2_regressor_28_gray.yaml": (conv(1, 16) + conv(16, 16) + dense(16 * 5 * 5, 128)
                                         + dense(128, 2)),
    "cbigan/attr2_encoder_28_gray.yaml": (
        conv(1, 16) + 2 * conv(16, 16) + conv(16, 32, 1) + 2 * conv(32, 32) + conv(32, 48, 1)
        + 2 * conv(48, 48) + dense(48 * 7 * 7, 2)),
    "cbigan/attr2_discriminator_28_gray.yaml": (
        conv(1, 16) + 2 * conv(16, 16) + conv(16, 32, 1) + 2 * conv(32, 32) + conv(32, 48, 1)
        + 2 * conv(48, 48) + dense(48 * 7 * 7, 64) + dense(64 + 2, 64) + dense(64, 1)),
    # the trainer's two-network example: DCGAN layout at 8x8 (App. H Tables 1-2, scaled down)
    "dcgan/digits_generator.yaml": (32 * 256 + 2 * 256 + 64 * 32 * 4 * 4 + 2 * 32
                                    + 32 * 1 * 4 * 4 + 1),
    "dcgan/digits_discriminator.yaml": (1 * 32 * 9 + 32 + 32 * 64 * 9 + 2 * 64 + 64 * 2 * 2 + 1),
    # the CI-sized BEGAN: the authors' BEGAN pattern at 8x8 with NN 16 (width-reduced)
    "began/digits_generator.yaml": dense(16, 256) + 4 * conv(16, 16) + conv(16, 1),
    "began/digits_discriminator.yaml": (conv(1, 16) + 2 * conv(16, 16) + conv(16, 32, 1)
                                        + 2 * conv(32, 32) + dense(32 * 4 * 4, 16)
                                        + dense(16, 256) + 4 * conv(16, 16) + conv(16, 1)),
    # GAN_Aspect landmark generator (thesis App. F Table II)
    "aspect/landmark_generator.yaml": (dense(64, 128) + 2 * dense(128, 128) + dense(128, 98)),
    # the MNIST comparison (App. H Tables 1-2 at half width; CGAN label map, ACGAN class head)
    "dcgan/mnist_generator_reduced.yaml": (dense(32, 512, bn=True) + dense(512, 64 * 7 * 7, bn=True)
                                           + conv(64, 32, 5, bn=True) + conv(32, 1, 5)),
    "dcgan/mnist_discriminator_reduced.yaml": (conv(1, 32, 5, bn=True) + conv(32, 64, 5, bn=True)
                                               + dense(64 * 7 * 7, 512) + dense(512, 1)),
    "cgan/mnist_discriminator_reduced.yaml": (10 * 28 * 28 + conv(2, 32, 5, bn=True)
                                              + conv(32, 64, 5, bn=True)
                                              + dense(64 * 7 * 7, 512) + dense(512, 1)),
    "acgan/mnist_discriminator_reduced.yaml": (conv(1, 32, 5, bn=True) + conv(32, 64, 5, bn=True)
                                               + dense(64 * 7 * 7, 512) + dense(512, 1)
                                               + dense(512, 10)),
    # the faces comparison (BEGAN 28x28 gray at NN 16; App. G Table 1 classifier at 1x28x28)
    "began/generator_28_gray_reduced.yaml": dense(64, 7 * 7 * 16) + 6 * conv(16, 16) + conv(16, 1),
    "began/discriminator_28_gray_reduced.yaml": (
        conv(1, 16) + 2 * conv(16, 16) + conv(16, 32, 1) + 2 * conv(32, 32) + conv(32, 48, 1)
        + 2 * conv(48, 48) + dense(48 * 7 * 7, 64)
        + dense(64, 7 * 7 * 16) + 6 * conv(16, 16) + conv(16, 1)),
    "vac/faces_classifier_28_gray.yaml": (conv(1, 16) + conv(16, 8) + dense(8 * 5 * 5, 1024)
                                          + dense(1024, 1)),
    # the GAN+aspect iris experiment (App. F sec. 3.2 at 24x32, NN 16): BEGAN G and D (encoder
    # widths 16, 32, 48, 48 down to 3x4), the aspect mask generator (G's layer table), and the
    # SPADE-SR-style inversion encoder (32, 64, 128 channels down to 3x4, BN, Linear no bias)
    "began/iris_generator_24x32.yaml": began_decoder(64, (3, 4), 3, 1, nn=16),
    "began/iris_discriminator_24x32.yaml": (
        conv(1, 16) + 2 * conv(16, 16) + conv(16, 32, 1) + 2 * conv(32, 32) + conv(32, 48, 1)
        + 2 * conv(48, 48) + conv(48, 48, 1) + 2 * conv(48, 48) + dense(48 * 3 * 4, 64)
        + began_decoder(64, (3, 4), 3, 1, nn=16)),
    "aspect/iris_mask_generator_24x32.yaml": began_decoder(64, (3, 4), 3, 1, nn=16),
    "aspect/iris_encoder_24x32.yaml": (eres_down(1, 32) + eres_down(32, 64) + eres_down(64, 128)
                                       + 2 * 128 + 128 * 3 * 4 * 64),
    # App. F Table II with 68 points (136 coordinates)
    "aspect/landmark_generator_68.yaml": (dense(64, 128) + 2 * dense(128, 128)
                                          + dense(128, 136)),
}

# the same sums, written out as numbers (also in the netspec headers)
STATED = {
    "began/generator_128.yaml": 637_251, "began/discriminator_128.yaml": 6_171_523,
    "began/generator_48.yaml": 594_371, "began/discriminator_48.yaml": 4_071_555,
    "began/generator_28_gray.yaml": 425_985, "began/discriminator_28_gray.yaml": 2_094_849,
    "dcgan/mnist_generator.yaml": 6_653_889, "dcgan/mnist_discriminator.yaml": 6_631_361,
    "dcgan/mnist_classifier.yaml": 217_394, "dcgan/cifar10_generator.yaml": 2_379_363,
    "dcgan/cifar10_discriminator.yaml": 13_871_553, "dcgan/cifar10_classifier.yaml": 4_375_178,
    "vac/celeba_classifier_128.yaml": 1_388_105, "vac/celeba_classifier_48.yaml": 822_857,
    "var/regressor.yaml": 6_693_794, "var/regressor_code.yaml": 4_371_426,
    "var/attr2_regressor_28_gray.yaml": 54_066, "cbigan/attr2_encoder_28_gray.yaml": 71_698,
    "cbigan/attr2_discriminator_28_gray.yaml": 221_937,
    "aspect/landmark_generator.yaml": 53_986,
    "dcgan/digits_generator.yaml": 42_049, "dcgan/digits_discriminator.yaml": 19_137,
    "began/digits_generator.yaml": 13_777, "began/digits_discriminator.yaml": 45_825,
    "dcgan/mnist_generator_reduced.yaml": 1_681_377,
    "dcgan/mnist_discriminator_reduced.yaml": 1_658_849,
    "cgan/mnist_discriminator_reduced.yaml": 1_667_489,
    "acgan/mnist_discriminator_reduced.yaml": 1_663_979,
    "began/generator_28_gray_reduced.yaml": 65_025,
    "began/discriminator_28_gray_reduced.yaml": 282_609,
    "vac/faces_classifier_28_gray.yaml": 208_169,
    "began/iris_generator_24x32.yaml": 31_185,
    "began/iris_discriminator_24x32.yaml": 179_025,
    "aspect/iris_mask_generator_24x32.yaml": 31_185,
    "aspect/iris_encoder_24x32.yaml": 395_458,
    "aspect/landmark_generator_68.yaml": 58_888,
}

# output shape (batch axis excluded) of each network's single output
OUT_SHAPES = {
    "began/generator_128.yaml": ("image", (3, 128, 128)),
    "began/discriminator_128.yaml": ("reconstruction", (3, 128, 128)),
    "began/generator_48.yaml": ("image", (3, 48, 48)),
    "began/discriminator_48.yaml": ("reconstruction", (3, 48, 48)),
    "began/generator_28_gray.yaml": ("image", (1, 28, 28)),
    "began/discriminator_28_gray.yaml": ("reconstruction", (1, 28, 28)),
    "dcgan/mnist_generator.yaml": ("image", (1, 28, 28)),
    "dcgan/mnist_discriminator.yaml": ("prob", (1,)),
    "dcgan/mnist_classifier.yaml": ("probs", (10,)),
    "dcgan/cifar10_generator.yaml": ("image", (3, 32, 32)),
    "dcgan/cifar10_discriminator.yaml": ("prob", (1,)),
    "dcgan/cifar10_classifier.yaml": ("probs", (10,)),
    "vac/celeba_classifier_128.yaml": ("prob", (1,)),
    "vac/celeba_classifier_48.yaml": ("prob", (1,)),
    "var/regressor.yaml": ("landmarks", (98,)),
    "var/regressor_code.yaml": ("landmarks", (98,)),
    "var/attr2_regressor_28_gray.yaml": ("attributes", (2,)),
    "cbigan/attr2_encoder_28_gray.yaml": ("attributes", (2,)),
    "cbigan/attr2_discriminator_28_gray.yaml": ("prob", (1,)),
    "aspect/landmark_generator.yaml": ("landmarks", (98,)),
    "dcgan/digits_generator.yaml": ("image", (1, 8, 8)),
    "dcgan/digits_discriminator.yaml": ("logit", (1,)),
    "began/digits_generator.yaml": ("image", (1, 8, 8)),
    "began/digits_discriminator.yaml": ("reconstruction", (1, 8, 8)),
    "dcgan/mnist_generator_reduced.yaml": ("image", (1, 28, 28)),
    "dcgan/mnist_discriminator_reduced.yaml": ("prob", (1,)),
    "cgan/mnist_discriminator_reduced.yaml": ("prob", (1,)),
    # two outputs: a list of (name, shape)
    "acgan/mnist_discriminator_reduced.yaml": [("prob", (1,)), ("class_probs", (10,))],
    "began/generator_28_gray_reduced.yaml": ("image", (1, 28, 28)),
    "began/discriminator_28_gray_reduced.yaml": ("reconstruction", (1, 28, 28)),
    "vac/faces_classifier_28_gray.yaml": ("prob", (1,)),
    "began/iris_generator_24x32.yaml": ("image", (1, 24, 32)),
    "began/iris_discriminator_24x32.yaml": ("reconstruction", (1, 24, 32)),
    "aspect/iris_mask_generator_24x32.yaml": ("mask", (1, 24, 32)),
    "aspect/iris_encoder_24x32.yaml": ("z", (64,)),
    "aspect/landmark_generator_68.yaml": ("landmarks", (136,)),
}


def spec_of(rel: str) -> Netspec:
    return load(GAN / rel)


def test_every_gan_netspec_is_covered():
    files = sorted(p.relative_to(GAN).as_posix() for p in GAN.rglob("*.yaml"))
    assert files == sorted(EXPECTED) == sorted(STATED) == sorted(OUT_SHAPES)


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_param_count_hand_arithmetic(rel):
    spec = spec_of(rel)
    assert EXPECTED[rel] == STATED[rel]
    assert infer(spec).params == EXPECTED[rel]
    module = build_module(spec)
    assert sum(p.numel() for p in module.parameters()) == EXPECTED[rel]
    header = (GAN / rel).read_text()
    assert f"{STATED[rel]:,}" in header  # the header states the count


@pytest.mark.parametrize("rel", sorted(OUT_SHAPES))
def test_forward_output_shape(rel):
    spec = spec_of(rel)
    torch.manual_seed(0)
    module = build_module(spec).eval()
    # image/vector inputs in [-1, 1); a class-index input (CGAN's label) gets indices
    xs = [torch.randint(i.num_classes, (2, *i.shape)) if i.dtype == "int64"
          else torch.rand(2, *i.shape) * 2 - 1 for i in spec.inputs]
    x = xs[0]
    with torch.no_grad():
        y = module(*xs)
    outs = OUT_SHAPES[rel] if isinstance(OUT_SHAPES[rel], list) else [OUT_SHAPES[rel]]
    assert [o.name for o in spec.outputs] == [name for name, _ in outs]
    ys = y if len(outs) > 1 else {outs[0][0]: y}
    for name, shape in outs:
        assert tuple(ys[name].shape) == (2, *shape)
        assert torch.isfinite(ys[name]).all()
        if name in ("probs", "class_probs"):
            torch.testing.assert_close(ys[name].sum(1), torch.ones(2))
    if rel.startswith("began/discriminator"):  # auto-encoder: reconstruction of the input
        assert y.shape == x.shape


# --------------------------------------------------------------------------------------------
# structure
# --------------------------------------------------------------------------------------------
def shapes_of(rel: str) -> dict:
    return infer(spec_of(rel)).shapes


def test_began_inputs_and_resolutions():
    for rel, code in [("began/generator_128.yaml", 64), ("began/generator_48.yaml", 128),
                      ("began/generator_28_gray.yaml", 64)]:
        spec = spec_of(rel)
        assert [(i.name, i.shape) for i in spec.inputs] == [("z", (code,))]
    s = shapes_of("began/discriminator_128.yaml")
    assert [s[f"down{k}"] for k in range(1, 5)] == [(128, 64, 64), (192, 32, 32), (256, 16, 16),
                                                    (320, 8, 8)]
    assert s["h"] == (64,) and s["reshape"] == (64, 8, 8) and s["up4"] == (64, 128, 128)
    s = shapes_of("began/discriminator_48.yaml")
    assert [s[f"down{k}"] for k in range(1, 4)] == [(128, 24, 24), (192, 12, 12), (256, 6, 6)]
    assert s["h"] == (128,) and s["reshape"] == (64, 6, 6) and s["up3"] == (64, 48, 48)
    s = shapes_of("began/discriminator_28_gray.yaml")
    assert s["down2"] == (192, 7, 7) and s["h"] == (64,) and s["up2"] == (64, 28, 28)
    s = shapes_of("began/generator_128.yaml")
    assert [s[f"up{k}"][1] for k in range(1, 5)] == [16, 32, 64, 128]
    for rel in ("began/generator_128.yaml", "began/discriminator_128.yaml"):
        spec = spec_of(rel)
        info = infer(spec)
        # no batch norm anywhere, ELU inside the blocks, linear output and bottleneck
        assert not any(getattr(lay, "batch_norm", False) for lay in spec.layers)
        assert spec.layer("out").activation is None
        m = build_module(spec)
        assert not any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())
        assert sum(isinstance(x, nn.ELU) for x in m.modules()) == sum(
            isinstance(x, nn.Conv2d) and x.kernel_size == (3, 3) for x in m.modules()) - 1
        assert info["fc"].params == dense(64, 8 * 8 * NN)


def test_began_discriminator_decoder_is_the_generator_table():
    for d, g in [("discriminator_128", "generator_128"), ("discriminator_48", "generator_48"),
                 ("discriminator_28_gray", "generator_28_gray")]:
        dspec, gspec = spec_of(f"began/{d}.yaml"), spec_of(f"began/{g}.yaml")
        dinfo, ginfo = infer(dspec), infer(gspec)
        dec = [lay.name for lay in dspec.layers]
        dec = dec[dec.index("fc"):]
        assert dec == [lay.name for lay in gspec.layers]
        for name in dec:
            assert dinfo.shapes[name] == ginfo.shapes[name]
            assert dinfo[name].params == ginfo[name].params


def test_began_transition_convs_are_linear_and_pools_average():
    spec = spec_of("began/discriminator_128.yaml")
    m = build_module(spec)
    pools = [x for x in m.modules() if isinstance(x, nn.AvgPool2d)]
    assert len(pools) == 4 and all(p.kernel_size == 2 for p in pools)
    one_by_one = [x for x in m.modules() if isinstance(x, nn.Conv2d) and x.kernel_size == (1, 1)]
    assert [c.out_channels for c in one_by_one] == [128, 192, 256, 320]
    ups = [x for x in m.modules() if isinstance(x, nn.Upsample)]
    assert len(ups) == 4 and all(u.mode == "nearest" for u in ups)


def test_iris_24x32_sizes():
    s = shapes_of("began/iris_discriminator_24x32.yaml")
    assert [s[f"down{k}"] for k in range(1, 4)] == [(32, 12, 16), (48, 6, 8), (48, 3, 4)]
    assert s["h"] == (64,) and s["reshape"] == (16, 3, 4) and s["up3"] == (16, 24, 32)
    for rel in ("began/iris_generator_24x32.yaml", "aspect/iris_mask_generator_24x32.yaml"):
        s = shapes_of(rel)
        assert [s[f"up{k}"] for k in range(1, 4)] == [(16, 6, 8), (16, 12, 16), (16, 24, 32)]
    s = shapes_of("aspect/iris_encoder_24x32.yaml")
    assert [s[f"res{k}"] for k in range(1, 4)] == [(32, 12, 16), (64, 6, 8), (128, 3, 4)]
    assert s["flat"] == (128 * 3 * 4,)


def test_dcgan_sizes():
    s = shapes_of("dcgan/mnist_generator.yaml")
    assert s["reshape"] == (128, 7, 7) and s["deconv1"] == (64, 14, 14)
    assert s["deconv2"] == (1, 28, 28)
    s = shapes_of("dcgan/mnist_discriminator.yaml")
    assert s["conv1"] == (64, 14, 14) and s["conv2"] == (128, 7, 7)
    s = shapes_of("dcgan/mnist_classifier.yaml")
    assert s["conv1"] == (16, 26, 26) and s["pool2"] == (8, 5, 5)
    s = shapes_of("dcgan/cifar10_generator.yaml")
    assert [s[k] for k in ("reshape", "deconv1", "deconv2", "deconv3")] == [
        (384, 4, 4), (192, 8, 8), (96, 16, 16), (3, 32, 32)]
    s = shapes_of("dcgan/cifar10_discriminator.yaml")
    assert [s[f"conv{k}"][1] for k in range(1, 7)] == [16, 16, 8, 8, 4, 4]
    assert s["conv6"] == (512, 4, 4) and s["mbd"] == (512 * 16 + 50,)
    s = shapes_of("dcgan/cifar10_classifier.yaml")
    assert [s[k] for k in ("conv1", "pool1", "conv2", "pool2", "conv3")] == [
        (128, 28, 28), (128, 14, 14), (256, 10, 10), (256, 5, 5), (512, 1, 1)]


def test_thesis_table_choices():
    """Where thesis App. H/I tables and the authors' code disagree, the tables win."""
    # Table 2: no batch norm after the discriminator's dense 1024 (the code has one)
    fc1 = spec_of("dcgan/mnist_discriminator.yaml").layer("fc1")
    assert not fc1.batch_norm and fc1.use_bias and fc1.negative_slope == 0.2
    # Table 6: batch norm after the 512 conv (the code has none); no third max pool (1x1 map)
    spec = spec_of("dcgan/cifar10_classifier.yaml")
    assert spec.layer("conv3").batch_norm
    assert [lay.op_name for lay in spec.layers].count("MaxPool2d") == 2
    # App. I Table 1: two convs in the regressor; the code's version has three
    assert [lay.op_name for lay in spec_of("var/regressor.yaml").layers].count("Conv2d") == 2
    assert [lay.op_name for lay in spec_of("var/regressor_code.yaml").layers].count("Conv2d") == 3
    # App. H Table 1 (48x48, 2x2 pools) vs the code's 128x128 classifier (3x3 pools)
    assert spec_of("vac/celeba_classifier_48.yaml").layer("pool1").kernel_size == 2
    assert spec_of("vac/celeba_classifier_128.yaml").layer("pool1").kernel_size == 3
    assert shapes_of("vac/celeba_classifier_128.yaml")["pool2"] == (8, 13, 13)
    assert shapes_of("var/regressor.yaml")["pool2"] == (64, 10, 10)
    assert shapes_of("var/regressor_code.yaml")["conv3"] == (64, 8, 8)
    # output nonlinearities: sigmoid (MNIST G, binary classifier, aspect), tanh (CIFAR G, VAR)
    acts = {rel: spec_of(rel).layers[-1].activation for rel in EXPECTED
            if not rel.startswith("began/")}
    assert acts == {
        "dcgan/mnist_generator.yaml": "sigmoid", "dcgan/mnist_discriminator.yaml": "sigmoid",
        "dcgan/mnist_classifier.yaml": "softmax", "dcgan/cifar10_generator.yaml": "tanh",
        "dcgan/cifar10_discriminator.yaml": "sigmoid", "dcgan/cifar10_classifier.yaml": "softmax",
        "vac/celeba_classifier_128.yaml": "sigmoid", "vac/celeba_classifier_48.yaml": "sigmoid",
        "var/regressor.yaml": "tanh", "var/regressor_code.yaml": "tanh",
        # attributes in (0, 1): sigmoid heads (the thesis' tanh was for landmarks in [-1, 1])
        "var/attr2_regressor_28_gray.yaml": "sigmoid", "cbigan/attr2_encoder_28_gray.yaml": "sigmoid",
        "cbigan/attr2_discriminator_28_gray.yaml": "sigmoid",
        "aspect/landmark_generator.yaml": "sigmoid",
        # the trainer's 8x8 example: a sigmoid image, and a logit for BCE-with-logits
        "dcgan/digits_generator.yaml": "sigmoid", "dcgan/digits_discriminator.yaml": None,
        # the MNIST and faces comparisons (ACGAN's last layer is its softmax class head)
        "dcgan/mnist_generator_reduced.yaml": "sigmoid",
        "dcgan/mnist_discriminator_reduced.yaml": "sigmoid",
        "cgan/mnist_discriminator_reduced.yaml": "sigmoid",
        "acgan/mnist_discriminator_reduced.yaml": "softmax",
        "vac/faces_classifier_28_gray.yaml": "sigmoid",
        # GAN+aspect iris: a linear mask map (the BEGAN generator's layout), a tanh latent in
        # (-1, 1) from the inversion encoder; 68-point landmarks in (0, 1)
        "aspect/iris_mask_generator_24x32.yaml": None,
        "aspect/iris_encoder_24x32.yaml": "tanh",
        "aspect/landmark_generator_68.yaml": "sigmoid"}


def test_cifar_discriminator_noise_and_minibatch_layer():
    spec = spec_of("dcgan/cifar10_discriminator.yaml")
    assert spec.layers[0].op_name == "GaussianNoise" and spec.layers[0].sigma == 0.05
    mbd = spec.layer("mbd")
    assert (mbd.num_kernels, mbd.kernel_dim, mbd.bias, mbd.weight_norm, mbd.exclude_self) == (
        50, 30, True, True, True)
    m = build_module(spec)
    drops = [x for x in m.modules() if isinstance(x, nn.Dropout)]
    assert len(drops) == 6 and all(d.p == 0.5 for d in drops)
    bns = [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]
    assert [b.num_features for b in bns] == [32, 64, 128, 256, 512]


# --------------------------------------------------------------------------------------------
# the new ops
# --------------------------------------------------------------------------------------------
OPS_SPEC = """
name: t_gan_ops
input: {name: x, channels: 3, height: 4, width: 4}
layers:
  - {name: noise, op: GaussianNoise, sigma: 0.1}
  - {name: conv, op: Conv2d, kernel_size: 3, padding: same, out_channels: 2}
  - {name: mbd, op: MinibatchDiscrimination, num_kernels: 5, kernel_dim: 3}
  - {name: mbd2, op: MinibatchDiscrimination, num_kernels: 4, kernel_dim: 2, bias: true,
     weight_norm: true, exclude_self: true}
  - {name: fc, op: Linear, out_features: 2}
"""


def ops_spec() -> Netspec:
    return loads(OPS_SPEC, file="<gan ops>")


def test_new_ops_registered_and_listed(capsys):
    from spdnn.cli import main

    assert main(["ops"]) == 0
    text = capsys.readouterr().out
    for name in ("GaussianNoise", "MinibatchDiscrimination"):
        assert name in OPS and name in text
        assert len(OPS[name].__doc__ or "") > 200
        assert OPS[name].onnx_exportable is True


def test_new_ops_shapes_and_params():
    spec = ops_spec()
    info = infer(spec)
    assert info.shapes["noise"] == (3, 4, 4)
    assert info.shapes["mbd"] == (2 * 4 * 4 + 5,)
    assert info.shapes["mbd2"] == (37 + 4,)
    assert info["noise"].params == 0
    assert info["mbd"].params == 32 * 5 * 3
    assert info["mbd2"].params == 37 * 4 * 2 + 4 * 2 + 4
    m = build_module(spec)
    for name in ("noise", "mbd", "mbd2"):
        mod = getattr(m, name)
        assert sum(p.numel() for p in mod.parameters()) == info[name].params
    assert info.params == sum(p.numel() for p in m.parameters())
    assert info["mbd"].macs == 32 * 5 * 3


def test_new_ops_emitted_matches_in_process():
    spec = ops_spec()
    torch.manual_seed(0)
    ref = build_module(spec)
    with torch.no_grad():
        ref.mbd2.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        ref.mbd2.log_weight_scale.copy_(torch.linspace(-0.5, 0.5, 8))
    src = emit_module(spec)
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            assert [a.name for a in node.names] in (["torch"], ["nn"])
    gen = exec_class(src, spec)()
    assert list(gen.state_dict()) == list(ref.state_dict())
    gen.load_state_dict(ref.state_dict())
    x = torch.randn(5, 3, 4, 4)
    for training in (False, True):
        ref.train(training)
        gen.train(training)
        torch.manual_seed(1)
        want = ref(x)
        torch.manual_seed(1)
        got = gen(x)
        assert torch.equal(got, want)
    assert tuple(want.shape) == (5, 2)


def test_new_ops_onnx_parity(tmp_path):
    from spdnn.export import export_onnx

    spec = ops_spec()
    g = torch.Generator().manual_seed(3)
    checks = [torch.randn(4, 3, 4, 4, generator=g).numpy(), torch.rand(7, 3, 4, 4, generator=g)
              .numpy()]
    report = export_onnx(spec, tmp_path / "gan_ops.onnx", dynamic_batch=True, check_inputs=checks)
    assert report.ok and report.max_abs_err < 1e-4, report.checks


def test_gaussian_noise_train_and_eval():
    mod = runtime.GaussianNoise(0.05)
    x = torch.randn(8, 3, 16, 16)
    mod.eval()
    assert torch.equal(mod(x), x)
    mod.train()
    torch.manual_seed(7)
    got = mod(x)
    torch.manual_seed(7)
    want = x + 0.05 * torch.randn_like(x)
    assert torch.equal(got, want)
    noise = got - x
    assert abs(noise.std().item() - 0.05) < 0.005 and abs(noise.mean().item()) < 0.005
    assert not torch.equal(mod(x), got)  # fresh noise every call
    assert torch.equal(runtime.GaussianNoise(0.0).train()(x), x)


def _mbd_reference(x, weight, num_kernels, kernel_dim, log_scale=None, bias=None,
                   exclude_self=False):
    """Salimans et al. 2016 sec. 3.2 written out with loops."""
    x = x.flatten(1).double()
    w = weight.double()
    if log_scale is not None:
        w = w * torch.exp(log_scale.double()) / w.pow(2).sum(0).sqrt()
    m = (x @ w).reshape(len(x), num_kernels, kernel_dim)
    n = len(x)
    o = torch.zeros(n, num_kernels, dtype=torch.float64)
    for i in range(n):
        for b in range(num_kernels):
            for j in range(n):
                if exclude_self and j == i:
                    continue
                o[i, b] += math.exp(-(m[i, b] - m[j, b]).abs().sum().item())
    if bias is not None:
        o = o + bias.double()
    return torch.cat([x, o], 1)


@pytest.mark.parametrize("options", [{}, {"bias": True, "weight_norm": True,
                                          "exclude_self": True}])
def test_minibatch_discrimination_matches_formula(options):
    torch.manual_seed(0)
    mod = runtime.MinibatchDiscrimination(12, 4, 3, **options)
    with torch.no_grad():
        mod.weight.mul_(4.0)  # distances of order 1, so exp(-d) is not 0 or 1
        if mod.bias is not None:
            mod.bias.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
            mod.log_weight_scale.copy_(torch.randn(12) * 0.3)
    x = torch.randn(6, 3, 2, 2)
    got = mod(x)
    want = _mbd_reference(x, mod.weight.detach(), 4, 3, mod.log_weight_scale, mod.bias,
                          options.get("exclude_self", False))
    assert got.shape == (6, 12 + 4)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    o = got[:, 12:]
    assert ((o > 0.5) & (o < 6.5)).all() if not options else torch.isfinite(o).all()
    # a batch of one sees only itself: o = 1 (0 without the self term) plus the bias
    single = mod(x[:1])[:, 12:]
    base = torch.zeros(4) if options.get("exclude_self") else torch.ones(4)
    torch.testing.assert_close(single[0], base + (mod.bias.detach() if mod.bias is not None
                                                  else 0))
