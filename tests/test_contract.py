"""SPDNN forward/backward contraction on the papers' networks (thesis ch. 3.1, App. A, App. B, App. D).

The expected graphs are written out by hand from the thesis rules.
"""

from __future__ import annotations

import networkx as nx
import pytest
import torch

import spdnn.spec as S
from spdnn.codegen import build_module
from spdnn.graph import check_embedding, merge, parent_graph, to_graph
from spdnn.graph.label import format_label
from spdnn.shapes import infer
from tests.helpers import ROOT, load_glob


def _edges_by_label(result) -> set[tuple[str, str]]:
    """Edges of the contracted graph, each node named by its forward label(s)."""
    g = result.backward

    def name(n):
        d = g.nodes[n]
        if d["kind"] != "compute":
            return d["kind"]
        labels = sorted({result.parent_graphs[m[0]].nodes[m]["label"] for m in d["members"]},
                        key=lambda lab: lab[1])
        return "+".join(format_label(lab) for lab in labels)

    return {(name(u), name(v)) for u, v in g.edges()}


def test_iris_appendix_a_contracted_graph():
    result = merge(load_glob("netspecs/iris/appendix_a/*.yaml"))
    # Parents (App. A): P1 = 7C x8, P2 = 3C x6, P3 = 3C,5C,7C,9C,11C.
    # Forward contraction merges (3C,1) of P2/P3 and (7C,3) of P1/P3; nothing else shares a label.
    # Backward labels (longest distance to the output) are all distinct afterwards.
    expected = {
        ("input", "(3C, 1)"), ("input", "(7C, 1)"),
        ("(3C, 1)", "(3C, 2)"), ("(3C, 1)", "(5C, 2)"), ("(7C, 1)", "(7C, 2)"),
        ("(3C, 2)", "(3C, 3)"), ("(5C, 2)", "(7C, 3)"), ("(7C, 2)", "(7C, 3)"),
        ("(3C, 3)", "(3C, 4)"), ("(7C, 3)", "(7C, 4)"), ("(7C, 3)", "(9C, 4)"),
        ("(3C, 4)", "(3C, 5)"), ("(7C, 4)", "(7C, 5)"), ("(9C, 4)", "(11C, 5)"),
        ("(3C, 5)", "(3C, 6)"), ("(7C, 5)", "(7C, 6)"),
        ("(7C, 6)", "(7C, 7)"), ("(7C, 7)", "(7C, 8)"),
        ("(3C, 6)", "output"), ("(11C, 5)", "output"), ("(7C, 8)", "output"),
    }
    assert _edges_by_label(result) == expected
    assert result.report.merged_nodes == 17  # 8 + 6 + 5 parent layers, two merges
    assert result.report.skipped == []
    members = {lab["letter"]: sorted(lab["members"]) for lab in result.report.labels}
    assert members["A"] == ["iris_a_parent_2:conv1", "iris_a_parent_3:conv1"]
    assert members["G"] == ["iris_a_parent_1:conv3", "iris_a_parent_3:conv3"]
    assert check_embedding(result) == []


def test_iris_appendix_a_rebuilt_network():
    result = merge(load_glob("netspecs/iris/appendix_a/*.yaml"))
    spec = result.spec
    # G (7C,3) reads the concatenation of P3's 5x5 and P1's second 7x7 layer
    cat = spec.layer(spec.layer("G").inputs[0])
    assert cat.op_name == "Concat" and cat.inputs == ["D", "E"]
    # three last layers (11C, 3C, 7C) reach the output: concat -> shared 3x3 head -> sigmoid
    head = spec.layer(spec.outputs[0].from_)
    assert head.op_name == "Conv2d" and head.out_channels == 1 and head.activation == "sigmoid"
    assert sorted(spec.layer(head.inputs[0]).inputs) == ["M", "N", "Q"]
    # budget like-each: within 1% of the parents' mean parameter count
    assert abs(result.report.budget_error) < 0.01
    out = build_module(spec).eval()(torch.rand(2, 1, 96, 128))
    assert out.shape == (2, 1, 96, 128) and bool(((out > 0) & (out < 1)).all())


def test_shortest_rule_skips_cycle_closing_merges_on_iris_a():
    result = merge(load_glob("netspecs/iris/appendix_a/*.yaml"), distance="shortest")
    assert nx.is_directed_acyclic_graph(result.backward)
    assert result.report.skipped, "the literal shortest-distance rule must report skipped merges"
    assert check_embedding(result) == []


def _published_mapping(merged: S.Netspec, published: S.Netspec) -> dict[str, str]:
    """Isomorphism between the SPDNN graphs matching structure and width."""
    gm, gp = to_graph(merged), to_graph(published)

    def same(a, b):
        if a["kind"] != b["kind"]:
            return False
        if a["kind"] != "compute":
            return True
        return (a["structure"] == b["structure"]
                and a["op"].out_channels_of() == b["op"].out_channels_of())

    matcher = nx.algorithms.isomorphism.DiGraphMatcher(gm, gp, node_match=same)
    assert matcher.is_isomorphic(), "merged graph is not the published graph"
    return {u[1]: v[1] for u, v in matcher.mapping.items() if u[0] not in ("in", "out")}


def test_iris_appendix_d_merge_is_the_published_network():
    """The strongest check: four hourglass parents -> exactly IrisSegDNN's published network."""
    result = merge(load_glob("netspecs/iris/appendix_d/parent_*.yaml"), params="keep")
    published = S.load(ROOT / "netspecs/iris/appendix_d/published.yaml")
    merged = result.spec
    assert infer(merged).params == infer(published).params == 1_102_121
    mapping = _published_mapping(merged, published)
    assert len(mapping) == 13
    # concatenations: same inputs in the same order (encoder feature first)
    for name, pub_name in mapping.items():
        m_in = merged.layer(name).inputs[0]
        if m_in == "image":
            continue
        p_in = published.input_names([lay.name for lay in published.layers].index(pub_name))[0]
        if merged.layer(m_in).op_name == "Concat":
            assert published.layer(p_in).op_name == "Concat"
            assert [mapping[x] for x in merged.layer(m_in).inputs] == published.layer(p_in).inputs
    # numerically the same network: copy the published weights layer by layer
    torch.manual_seed(0)
    pm, mm = build_module(published).eval(), build_module(merged).eval()
    for name, pub_name in mapping.items():
        getattr(mm, name.lower()).load_state_dict(getattr(pm, pub_name.lower()).state_dict())
    x = torch.rand(2, 1, 96, 128)
    assert torch.equal(mm(x), pm(x))


def test_depth_merge_structure():
    """Eight depth parents -> the structure of the authors' final model (App. B Fig. 2)."""
    result = merge(load_glob("netspecs/depth/parent_*.yaml"), params="keep")
    spec = result.spec
    labels = {lab["letter"]: lab for lab in result.report.labels}
    # one shared first conv "A" (3C,1) for all eight parents, as the paper's Fig. 22 labels it
    assert labels["A"]["forward"] == [("3C", 1)] and len(labels["A"]["members"]) == 8
    # four branches of three convs at pooling factors 1, 2, 4, 8
    structures = [lab["structure"] for lab in result.report.labels]
    for s in ("3C", "3C2P", "3C4P", "3C8P"):
        assert structures.count(s) >= 3
    assert result.report.merged_nodes == 20
    # local merge (N): concat of the four branch ends, unpooled to full resolution
    n_cat = spec.layer(spec.layer("N").inputs[0])
    assert n_cat.op_name == "Concat" and len(n_cat.inputs) == 4
    ups = [spec.layer(i) for i in n_cat.inputs]
    assert [u.op_name for u in ups] == ["Conv2d", "Unpool", "Unpool", "Unpool"]
    assert [u.scale_factor for u in ups[1:]] == [2, 4, 8]
    # global merge (O = 30F): the branch ends pooled to 10x33 with the parents' max-pooling
    o_cat = spec.layer(spec.layer("O").inputs[0])
    assert o_cat.op_name == "Concat" and len(o_cat.inputs) == 4
    info = infer(spec)
    # keep: every merged branch end is as wide as its widest member (36, networks 1-4)
    assert all(info.shapes[i] == (36, 10, 33) for i in o_cat.inputs)
    pools = [op for op in spec.layers if op.op_name == "MaxPool2d" and op.name.endswith("_O_maxpool2d0")]
    assert sorted(p.kernel_size for p in pools) == [2, 4, 8]
    # output: the FCN branch and the autoencoder branch meet in a shared 3x3 sigmoid head
    head = spec.layer(spec.outputs[0].from_)
    assert head.kernel_size == 3 and head.activation == "sigmoid"
    assert info.output_shapes() == {"depth": (1, 80, 264)}
    assert check_embedding(result) == []


def test_merge_of_one_network_is_the_network():
    a = S.load(ROOT / "netspecs/iris/appendix_a/parent_3_3to11.yaml")
    r = merge([a], params="keep")
    assert infer(r.spec).params == infer(a).params
    gm, ga = to_graph(r.spec), parent_graph(a)
    assert nx.is_isomorphic(gm, ga, node_match=lambda x, y: x.get("structure") == y.get("structure"))


def test_merge_of_a_network_with_itself_is_the_network():
    a = S.load(ROOT / "netspecs/depth/parent_6.yaml")
    r = merge([a, a], params="keep")
    assert infer(r.spec).params == infer(a).params
    assert r.report.merged_nodes == sum(1 for _, d in parent_graph(a).nodes(data=True)
                                        if d["kind"] == "compute")


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_order_of_parents_does_not_matter(order):
    specs = load_glob("netspecs/iris/appendix_a/*.yaml")
    ref = merge(specs)
    r = merge([specs[i] for i in order])
    assert S.dump(r.spec) == S.dump(ref.spec)
