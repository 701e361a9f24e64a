"""Exact SPDNN forward labels of the papers' parent networks (thesis ch. 3.1, depth paper A.2.1).

Expected labels are written out from the papers' rules, not read from the program.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

import spdnn.spec as S
from spdnn.graph import factor_suffix, format_label, parent_graph
from tests.helpers import ROOT


def chain_labels(path: str) -> list[str]:
    g = parent_graph(S.load(ROOT / path))
    nodes = sorted((d["order"], d["label"]) for _, d in g.nodes(data=True) if d["kind"] == "compute")
    return [format_label(lab) for _, lab in nodes]


def test_iris_a_parent_3_labels_match_thesis_example():
    # App. A: "(9C,4) is the label of the node with a 9x9 convolution ... distance 4 from the input"
    assert chain_labels("netspecs/iris/appendix_a/parent_3_3to11.yaml") == [
        "(3C, 1)", "(5C, 2)", "(7C, 3)", "(9C, 4)", "(11C, 5)"]


def test_iris_a_parents_1_and_2():
    assert chain_labels("netspecs/iris/appendix_a/parent_1_8x7x7.yaml") == [
        f"(7C, {i})" for i in range(1, 9)]
    assert chain_labels("netspecs/iris/appendix_a/parent_2_6x3x3.yaml") == [
        f"(3C, {i})" for i in range(1, 7)]


def test_iris_d_hourglass_parent_4():
    assert chain_labels("netspecs/iris/appendix_d/parent_4.yaml") == [
        "(3C, 1)", "(5C, 2)", "(7C, 3)", "(9C, 4)", "(7C, 5)", "(5C, 6)", "(3C, 7)"]


@pytest.mark.parametrize("n, pool", [(1, ""), (2, "2P"), (3, "4P"), (4, "8P")])
def test_depth_fully_convolutional_parents(n, pool):
    # the first conv sees the raw input; the pooling sticks to the next three convs; the
    # unpooling removes it again (thesis ch. 3.1 (d))
    assert chain_labels(f"netspecs/depth/parent_{n}.yaml") == (
        ["(3C, 1)"] + [f"(3C{pool}, {d})" for d in (2, 3, 4)] + [f"(3C, {d})" for d in range(5, 9)])


@pytest.mark.parametrize("n, pool", [(5, ""), (6, "2P"), (7, "4P"), (8, "8P")])
def test_depth_parents_with_fully_connected_layers(n, pool):
    # a fully connected layer clears the pooling property; the value-repeating unpool after the
    # reshape brings the data back to full resolution, so the 7x7 conv carries no P
    assert chain_labels(f"netspecs/depth/parent_{n}.yaml") == (
        ["(3C, 1)"] + [f"(3C{pool}, {d})" for d in (2, 3, 4)] + ["(30F, 5)", "(330F, 6)", "(7C, 7)"])


def test_conv_after_two_pools_is_4p():
    spec = S.loads("""
name: two_pools
input: {channels: 1, height: 32, width: 32}
layers:
  - {name: c1, op: Conv2d, kernel_size: 3, out_channels: 4, padding: same}
  - {name: p1, op: MaxPool2d, kernel_size: 2}
  - {name: c2, op: Conv2d, kernel_size: 3, out_channels: 4, padding: same}
  - {name: p2, op: AvgPool2d, kernel_size: 2}
  - {name: c3, op: Conv2d, kernel_size: 3, out_channels: 4, padding: same}
  - {name: up, op: Unpool, scale_factor: 2}
  - {name: c4, op: Conv2d, kernel_size: 5, out_channels: 4, padding: same}
  - {name: fc, op: Linear, out_features: 10}
""")
    g = parent_graph(spec)
    labels = {d["layer"]: format_label(d["label"]) for _, d in g.nodes(data=True) if d["kind"] == "compute"}
    assert labels == {"c1": "(3C, 1)", "c2": "(3C2P, 2)", "c3": "(3C4P, 3)", "c4": "(5C2P, 4)",
                      "fc": "(10F, 5)"}


def test_strided_and_transposed_convs():
    spec = S.loads("""
name: strided
input: {channels: 1, height: 32, width: 32}
layers:
  - {name: down, op: Conv2d, kernel_size: 3, out_channels: 4, stride: 2, padding: same}
  - {name: mid, op: Conv2d, kernel_size: 3, out_channels: 4, padding: same}
  - {name: up, op: ConvTranspose2d, kernel_size: 4, out_channels: 4, stride: 2, padding: same}
  - {name: last, op: Conv2d, kernel_size: 1, out_channels: 1}
""")
    g = parent_graph(spec)
    labels = {d["layer"]: d["label"][0] for _, d in g.nodes(data=True) if d["kind"] == "compute"}
    assert labels == {"down": "3C(s2)", "mid": "3C2P", "up": "4D(s2)2P", "last": "1C"}


def test_factor_suffix():
    assert factor_suffix(None) == ""
    assert factor_suffix(Fraction(1)) == ""
    assert factor_suffix(Fraction(8)) == "8P"
    assert factor_suffix(Fraction(1, 2)) == "2U"
    assert factor_suffix(Fraction(3, 2)) == "(3/2)P"


def test_longest_and_shortest_distance_differ_on_skip_connections():
    spec = S.loads("""
name: skip
input: {channels: 1, height: 8, width: 8}
layers:
  - {name: a, op: Conv2d, kernel_size: 3, out_channels: 2, padding: same}
  - {name: b, op: Conv2d, kernel_size: 3, out_channels: 2, padding: same}
  - {name: cat, op: Concat, inputs: [a, b]}
  - {name: c, op: Conv2d, kernel_size: 3, out_channels: 1, padding: same}
""")
    longest = {d["layer"]: d["label"] for _, d in parent_graph(spec, rule="longest").nodes(data=True)
               if d["kind"] == "compute"}
    shortest = {d["layer"]: d["label"] for _, d in parent_graph(spec, rule="shortest").nodes(data=True)
                if d["kind"] == "compute"}
    assert longest["c"] == ("3C", 3)
    assert shortest["c"] == ("3C", 2)
