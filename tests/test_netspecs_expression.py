"""Facial-expression classifiers of thesis App. C (Bazrafkan et al., ICCE 2017, Tables 2-4).

The paper gives each network's layer table (conv widths, 3x3 kernels, 2x2 max-pools, dense
widths, dropout probabilities, 7 classes) but no parameter count and no input size. The netspecs
reconstruct the rest (see their headers): a 1 x 96 x 96 grayscale input, "valid" convs with bias
and ReLU (Lasagne defaults), dropout on each dense layer's input, logits out. The expected
parameter counts below are computed by hand from the tables under those choices; they are not
copied from the compiler.
"""

from __future__ import annotations

import pytest
import torch

from spdnn.codegen import build_module
from spdnn.shapes import infer
from spdnn.spec import load
from tests.helpers import NETSPECS

DIR = NETSPECS / "expression"
SIZE = 96  # reconstructed input size (the paper gives none)
CLASSES = 7

# file -> (conv widths of Table 2/3/4, [(dense width, dropout p on its input), ...])
TABLES: dict[str, tuple[list[int], list[tuple[int, float]]]] = {
    "network1_rafd": ([16, 8, 8], [(15, 0.8), (7, 0.5)]),     # Table 2
    "network2_ckplus": ([8, 8, 8], [(7, 0.5)]),               # Table 3
    "network3_mixed": ([16, 13, 10], [(7, 0.5)]),             # Table 4
}


def hand_count(convs: list[int], dense: list[tuple[int, float]]) -> tuple[int, int]:
    """(parameters, flattened width) from the layer table: 3x3 valid convs with bias, 2x2 pools."""
    n, cin, h = 0, 1, SIZE
    for cout in convs:
        n += 3 * 3 * cin * cout + cout
        h = (h - 2) // 2          # valid 3x3 conv, then 2x2 max-pool stride 2 (floor)
        cin = cout
    flat = cin * h * h
    fin = flat
    for width, _ in dense:
        n += fin * width + width
        fin = width
    return n, flat


def test_hand_arithmetic_spelled_out():
    # Network 1 written out once: 96 -> 94 -> 47 -> 45 -> 22 -> 20 -> 10, flatten 8*10*10.
    n1 = (9 * 1 * 16 + 16) + (9 * 16 * 8 + 8) + (9 * 8 * 8 + 8) + (800 * 15 + 15) + (15 * 7 + 7)
    assert n1 == 14_031
    assert hand_count(*TABLES["network1_rafd"]) == (14_031, 800)
    assert hand_count(*TABLES["network2_ckplus"]) == (6_855, 800)
    assert hand_count(*TABLES["network3_mixed"]) == (10_232, 1000)


@pytest.mark.parametrize("stem", sorted(TABLES))
def test_layer_table_and_parameters(stem: str):
    spec = load(DIR / f"{stem}.yaml")
    info = infer(spec)
    convs, dense = TABLES[stem]
    expected, flat = hand_count(convs, dense)
    assert info.params == expected
    model = build_module(spec)
    assert sum(p.numel() for p in model.parameters()) == expected

    conv_layers = [lay for lay in spec.layers if lay.op == "Conv2d"]
    assert [c.out_channels for c in conv_layers] == convs
    assert all(c.kernel_size == 3 and c.activation == "relu" and not c.batch_norm
               for c in conv_layers)
    pools = [lay for lay in spec.layers if lay.op == "MaxPool2d"]
    assert len(pools) == 3 and all(p.kernel_size == 2 for p in pools)
    # every dense layer reads a dropout of the table's probability
    names = [lay.name for lay in spec.layers]
    linears = [lay for lay in spec.layers if lay.op == "Linear"]
    assert [(lin.out_features, spec.layers[names.index(lin.name) - 1].p) for lin in linears] \
        == dense
    assert all(spec.layers[names.index(lin.name) - 1].op == "Dropout" for lin in linears)
    # hidden dense layers use ReLU, the last one gives logits (no softmax)
    assert [lin.activation for lin in linears] == ["relu"] * (len(dense) - 1) + [None]
    assert not any(lay.op == "Softmax" for lay in spec.layers)

    assert info["pool3"].out_shape == (convs[-1], 10, 10)
    assert info["flatten"].out_shape == (flat,)
    assert info.output_shapes() == {"logits": (CLASSES,)}


@pytest.mark.parametrize("stem", sorted(TABLES))
def test_forward_shape(stem: str):
    spec = load(DIR / f"{stem}.yaml")
    assert [i.shape for i in spec.inputs] == [(1, SIZE, SIZE)]
    model = build_module(spec).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, SIZE, SIZE))
    assert out.shape == (2, CLASSES)
    assert torch.isfinite(out).all()


# -- the digit adaptations (32 x 32 gray, 10 classes; headers) for the inter-dataset table ---
DIGITS = {"digits_network1_32": "network1_rafd", "digits_network2_32": "network2_ckplus",
          "digits_network3_mixed_32": "network3_mixed"}


@pytest.mark.parametrize("stem", sorted(DIGITS))
def test_digit_adaptations_keep_the_tables(stem: str):
    convs, dense = TABLES[DIGITS[stem]]
    dense = [*dense[:-1], (10, dense[-1][1])]  # 10 digit classes instead of 7 expressions
    n, cin, h = 0, 1, 32
    for cout in convs:
        n += 3 * 3 * cin * cout + cout
        h = (h - 2) // 2  # 32 -> 30 -> 15 -> 13 -> 6 -> 4 -> 2
        cin = cout
    fin = cin * h * h
    assert h == 2
    for width, _ in dense:
        n += fin * width + width
        fin = width
    spec = load(DIR / f"{stem}.yaml")
    assert tuple(spec.inputs[0].shape) == (1, 32, 32)
    drops = [lay.p for lay in spec.layers if type(lay).__name__ == "Dropout"]
    assert drops == [p for _, p in dense]
    net = build_module(spec)
    assert sum(p.numel() for p in net.parameters()) == n
    net.eval()
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 10)
