"""Smart Augmentation networks A and B (thesis App. E = Lemley, Bazrafkan & Corcoran 2017).

The paper's text fixes: network A is fully convolutional, takes k same-class images stacked as
channels (k x 3 for RGB) and returns one image of the same size (1 channel for the grayscale
faces, one colour image for Places); network B has two conv layers each followed by batch norm
and max-pooling, then a 1024-unit and a 2-unit dense layer, each with dropout, softmax output.
The layer widths/kernels are in figures 7-8, which the text does not contain: the netspecs
reconstruct them (headers; architectures.md sec. 8 and 3.1 as hints). The expected parameter
counts below are computed by hand from those reconstructed tables, not copied from the compiler.
"""

from __future__ import annotations

import pytest
import torch

from spdnn.codegen import build_module
from spdnn.shapes import infer
from spdnn.spec import load
from tests.helpers import NETSPECS

DIR = NETSPECS / "smart_augmentation"

# network A: (out channels, kernel) per conv; the last width is the image's channel count
A_TABLE = [(16, 3), (16, 5), (32, 7), (32, 5)]
# file -> (k images, channels per image, image size)
A_NETS = {
    "network_a_gender_k2": (2, 1, 96),
    "network_a_gender_k3": (3, 1, 96),
    "network_a_places_k2": (2, 3, 256),
}
# file -> (channels, image size, spatial size after pool2)
B_NETS = {
    "network_b_gender_96": (1, 96, 9),      # 96 -> 94 -> 31 -> 29 -> 9
    "network_b_gender_100": (1, 100, 10),   # 100 -> 98 -> 32 -> 30 -> 10
    "network_b_places_256": (3, 256, 27),   # 256 -> 254 -> 84 -> 82 -> 27
}


def a_count(k: int, c: int) -> int:
    """Network A: "same" convs with bias, no BN; k*c channels in, c channels out."""
    n, cin = 0, k * c
    for cout, kk in [*A_TABLE, (c, 3)]:
        n += kk * kk * cin * cout + cout
        cin = cout
    return n


def b_count(c: int, size: int) -> tuple[int, int]:
    """Network B: (parameters, flattened width). Valid 3x3 convs without bias + BN (gamma, beta),
    3x3 max-pool stride 3, dense 1024 and 2 with bias."""
    h = size
    n = 3 * 3 * c * 16 + 2 * 16
    h = (h - 2 - 3) // 3 + 1
    n += 3 * 3 * 16 * 8 + 2 * 8
    h = (h - 2 - 3) // 3 + 1
    flat = 8 * h * h
    n += flat * 1024 + 1024 + 1024 * 2 + 2
    return n, flat


def test_hand_arithmetic_spelled_out():
    # network A, k = 2 grayscale: 2->16 3x3, 16->16 5x5, 16->32 7x7, 32->32 5x5, 32->1 3x3
    assert (9 * 2 * 16 + 16) + (25 * 16 * 16 + 16) + (49 * 16 * 32 + 32) + (25 * 32 * 32 + 32) \
        + (9 * 32 * 1 + 1) == a_count(2, 1) == 57_761
    assert a_count(3, 1) == 57_905
    assert a_count(2, 3) == 58_915
    # network B on 96 x 96: flatten 8*9*9 = 648
    assert (9 * 16 + 32) + (9 * 16 * 8 + 16) + (648 * 1024 + 1024) + (1024 * 2 + 2) == 667_970
    assert b_count(1, 96) == (667_970, 648)
    assert b_count(1, 100) == (823_618, 800)
    assert b_count(3, 256) == (5_976_674, 5832)


@pytest.mark.parametrize("stem", sorted(A_NETS))
def test_network_a(stem: str):
    k, c, size = A_NETS[stem]
    spec = load(DIR / f"{stem}.yaml")
    info = infer(spec)
    assert info.params == a_count(k, c)
    model = build_module(spec).eval()
    assert sum(p.numel() for p in model.parameters()) == a_count(k, c)
    # k same-class images, each an input, stacked on the channel axis
    assert [i.shape for i in spec.inputs] == [(c, size, size)] * k
    assert spec.layers[0].op == "Concat"
    assert info["stack"].out_shape == (k * c, size, size)
    convs = [lay for lay in spec.layers if lay.op == "Conv2d"]
    assert [(cv.out_channels, cv.kernel_size) for cv in convs] == [*A_TABLE, (c, 3)]
    # fully convolutional, same size everywhere, no BN, ReLU inside, linear output
    assert {lay.op for lay in spec.layers} == {"Concat", "Conv2d"}
    assert all(info[cv.name].out_shape[1:] == (size, size) for cv in convs)
    assert not any(cv.batch_norm for cv in convs)
    assert [cv.activation for cv in convs] == ["relu"] * 4 + [None]
    assert info.output_shapes() == {"image": (c, size, size)}
    with torch.no_grad():
        out = model(*[torch.rand(2, c, size, size) for _ in range(k)])
    assert out.shape == (2, c, size, size)


@pytest.mark.parametrize("stem", sorted(B_NETS))
def test_network_b(stem: str):
    c, size, pooled = B_NETS[stem]
    spec = load(DIR / f"{stem}.yaml")
    info = infer(spec)
    expected, flat = b_count(c, size)
    assert info.params == expected
    model = build_module(spec).eval()
    assert sum(p.numel() for p in model.parameters()) == expected
    assert info["pool2"].out_shape == (8, pooled, pooled)
    assert info["flatten"].out_shape == (flat,) == (8 * pooled * pooled,)
    # two convs, each followed by BN (conv bias dropped) and a max-pool
    ops = [lay.op for lay in spec.layers]
    assert ops == ["Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d", "Flatten",
                   "Dropout", "Linear", "Dropout", "Linear"]
    convs = [lay for lay in spec.layers if lay.op == "Conv2d"]
    assert all(cv.batch_norm and not cv.use_bias for cv in convs)
    # dense 1024 and 2 (one unit per class), each reading a dropout; logits out
    linears = [lay for lay in spec.layers if lay.op == "Linear"]
    assert [(lin.out_features, lin.activation) for lin in linears] == [(1024, "relu"), (2, None)]
    assert info.output_shapes() == {"logits": (2,)}
    with torch.no_grad():
        out = model(torch.rand(2, c, size, size))
    assert out.shape == (2, 2)


@pytest.mark.parametrize("a_stem, b_stem", [("network_a_gender_k2", "network_b_gender_96"),
                                            ("network_a_gender_k3", "network_b_gender_96"),
                                            ("network_a_places_k2", "network_b_places_256")])
def test_a_feeds_b(a_stem: str, b_stem: str):
    """Network A's output is an input of network B (sec. V.A): the shapes must chain."""
    a, b = load(DIR / f"{a_stem}.yaml"), load(DIR / f"{b_stem}.yaml")
    assert infer(a).output_shapes()["image"] == b.inputs[0].shape
    net_a, net_b = build_module(a).eval(), build_module(b).eval()
    k, c, size = A_NETS[a_stem]
    with torch.no_grad():
        out = net_b(net_a(*[torch.rand(2, c, size, size) for _ in range(k)]))
    assert out.shape == (2, 2)


# -- the 28 x 28 adaptations of this project's reproduction (headers: half-width A, B1 at 28) --
A28_TABLE = [(8, 3), (8, 5), (16, 7), (16, 5)]


def a28_count(k: int) -> int:
    n, cin = 0, k
    for cout, kk in [*A28_TABLE, (1, 3)]:
        n += kk * kk * cin * cout + cout
        cin = cout
    return n


@pytest.mark.parametrize("k", [2, 3, 4])
def test_network_a_28(k: int):
    spec = load(DIR / f"network_a_28_k{k}.yaml")
    assert [tuple(i.shape) for i in spec.inputs] == [(1, 28, 28)] * k
    assert a28_count(2) == (9 * 2 * 8 + 8) + (25 * 8 * 8 + 8) + (49 * 8 * 16 + 16) \
        + (25 * 16 * 16 + 16) + (9 * 16 + 1) == 14_609
    net = build_module(spec)
    assert sum(p.numel() for p in net.parameters()) == a28_count(k)
    xs = [torch.rand(3, 1, 28, 28) for _ in range(k)]
    assert net(*xs).shape == (3, 1, 28, 28)
    # the inputs are stacked in order: swapping two inputs changes the output
    assert not torch.allclose(net(*xs), net(*xs[::-1]))


@pytest.mark.parametrize("classes", [2, 10])
def test_network_b_28(classes: int):
    spec = load(DIR / f"network_b_28_{classes}class.yaml")
    # 28 -> 26 -> 8 -> 6 -> 2: flatten 8*2*2 = 32
    want = (9 * 16 + 32) + (9 * 16 * 8 + 16) + (32 * 1024 + 1024) + (1024 * classes + classes)
    net = build_module(spec)
    assert sum(p.numel() for p in net.parameters()) == want
    assert list(infer(spec).output_shapes().values())[0] == (classes,)
    net.eval()
    assert net(torch.rand(4, 1, 28, 28)).shape == (4, classes)
