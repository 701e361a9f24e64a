"""Diagrams (spdnn.render): the DOT source of every view holds the thesis labels, saving works
with and without Graphviz's ``dot`` program, and hostile names cannot break the DOT."""

from __future__ import annotations

import re
import shutil
import warnings

import graphviz
import pytest

import spdnn.spec as S
from spdnn import render as R
from spdnn.errors import SpdnnError
from spdnn.graph import format_label, merge, parent_graph
from tests.helpers import NETSPECS, load_glob

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed")

NODE = re.compile(r"^\s*(\w+) \[label=(.*)$", re.M)
EDGE = re.compile(r"^\s*(\w+) -> (\w+)", re.M)


def _merge(pattern: str, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return merge(load_glob(pattern), **kw)


@pytest.fixture(scope="module")
def iris_a():
    return _merge("netspecs/iris/appendix_a/*.yaml")


@pytest.fixture(scope="module")
def depth():
    return _merge("netspecs/depth/parent_*.yaml", params="keep")


def nodes(dot: graphviz.Digraph) -> dict[str, str]:
    """DOT node id -> the rest of its line (label and attributes)."""
    return {k: v for k, v in NODE.findall(dot.source) if k not in ("graph", "node", "edge")}


def edges(dot: graphviz.Digraph) -> list[tuple[str, str]]:
    return [(u, v) for u, v in EDGE.findall(dot.source)]


def fill(attrs: str) -> str:
    m = re.search(r'fillcolor="(#[0-9a-f]{6})"', attrs)
    assert m, attrs
    return m.group(1)


def assert_html_label_then_attrs(attrs: str) -> None:
    assert attrs.startswith("<"), attrs
    depth, end = 0, None
    for i, ch in enumerate(attrs):
        depth += {"<": 1, ">": -1}.get(ch, 0)
        if depth == 0:
            end = i
            break
    assert end is not None, attrs
    rest = attrs[end + 1:]
    assert re.fullmatch(r'( [\w]+=("[^"]*"|[^ \]"]+))*\]', rest), rest


def hostile_spec(bad: str) -> S.Netspec:
    return S.from_data({
        "name": bad + "net",
        "input": {"name": bad + "in", "channels": 1, "height": 8, "width": 8},
        "layers": [
            {"name": bad, "op": "Conv2d", "kernel_size": 3, "out_channels": 2, "padding": "same"},
            {"name": "pool ]>\x01", "op": "MaxPool2d", "kernel_size": 2},
            {"name": "c2", "op": "Conv2d", "kernel_size": 3, "out_channels": 1, "padding": "same"},
        ],
        "output": {"name": bad + "out", "from": "c2"},
    })


# --------------------------------------------------------------------------------------------
# labelled graphs of single networks (thesis Fig. 3.2 right, depth paper Figs. 13-20)
# --------------------------------------------------------------------------------------------
def test_labels_iris_a_parent_3_has_the_thesis_tuples():
    spec = S.load(NETSPECS / "iris/appendix_a/parent_3_3to11.yaml")
    dot = R.labelled_diagram(parent_graph(spec))
    src = dot.source
    for label in ["(3C, 1)", "(5C, 2)", "(7C, 3)", "(9C, 4)", "(11C, 5)"]:
        assert src.count(label) == 1, label
    for name in ["conv1", "conv5", "image", "mask", spec.name]:
        assert name in src
    assert len(nodes(dot)) == 5 + 2
    assert len(edges(dot)) == 6


def test_labels_depth_parent_2_sticky_pooling_and_edge_ops():
    spec = S.load(NETSPECS / "depth/parent_2.yaml")
    g = parent_graph(spec)
    dot = R.labelled_diagram(g, title="network 2")
    src = dot.source
    for label in ["(3C, 1)", "(3C2P, 2)", "(3C2P, 3)", "(3C2P, 4)", "(3C, 5)", "(3C, 8)"]:
        assert label in src, label
    assert "network 2" in src
    # pooling and unpooling are not nodes but edge annotations
    assert "MaxPool2d 2" in src and "Unpool x2" in src
    assert len(nodes(dot)) == g.number_of_nodes() == 8 + 2
    assert len(edges(dot)) == g.number_of_edges()


def test_labels_depth_parent_6_fully_connected_edges():
    spec = S.load(NETSPECS / "depth/parent_6.yaml")
    src = R.labelled_diagram(parent_graph(spec)).source
    for label in ["(30F, 5)", "(330F, 6)", "(7C, 7)", "(3C2P, 4)"]:
        assert label in src, label
    assert "MaxPool2d 4, Dropout 0.5" in src
    assert "Reshape 1x10x33, Unpool x8" in src


# --------------------------------------------------------------------------------------------
# netspec view
# --------------------------------------------------------------------------------------------
def test_netspec_diagram_shows_every_layer_with_shapes_and_kinds():
    spec = S.load(NETSPECS / "depth/parent_6.yaml")
    dot = R.netspec_diagram(spec)
    src = dot.source
    ns = nodes(dot)
    assert len(ns) == len(spec.layers) + len(spec.inputs) + len(spec.outputs)
    assert len(edges(dot)) == len(spec.edges()) + len(spec.outputs)
    for lay in spec.layers:
        assert f"<b>{lay.name}</b>" in src
    for text in ["Conv2d 3x3, 6 ch", "MaxPool2d 4", "Dropout 0.5", "Linear 330", "Unpool x8",
                 "Reshape 1x10x33", "6x40x132", "1x80x264", "330", "params"]:
        assert text in src, text
    by_name = {re.search(r"<b>([^<]*)</b>", a).group(1): fill(a) for a in ns.values()}
    conv, fc, pool, drop, reshape = (by_name[n] for n in ["conv1", "fc1", "pool1", "drop1", "reshape"])
    assert len({conv, fc, pool, drop, reshape}) == 5  # compute ops and kinds told apart
    assert by_name["conv2"] == conv and by_name["pool2"] == pool


def test_netspec_diagram_of_a_merged_network_shows_concat(iris_a):
    src = R.netspec_diagram(iris_a.spec).source
    assert "Concat" in src
    assert "junction" not in src  # kinds are colours, not words
    assert f"{len(iris_a.spec.layers)} layers" in src


def test_netspec_diagram_survives_a_shape_error():
    spec = S.Netspec.model_validate({
        "name": "broken", "input": {"channels": 1, "height": 4, "width": 4},
        "layers": [{"name": "big", "op": "Conv2d", "kernel_size": 9, "out_channels": 2}]})
    src = R.netspec_diagram(spec).source
    assert "<b>big</b>" in src and "does not fit" in src


# --------------------------------------------------------------------------------------------
# merge views
# --------------------------------------------------------------------------------------------
def test_contracted_iris_a_one_node_per_letter(iris_a):
    r = iris_a
    dot = R.contracted_diagram(r)
    ns = nodes(dot)
    compute = [n for n in r.backward if r.backward.nodes[n]["kind"] == "compute"]
    assert len(ns) == len(r.letters) + 2 == len(compute) + 2
    assert len(edges(dot)) == r.backward.number_of_edges()
    src = dot.source
    for n, letter in r.letters.items():
        d = r.backward.nodes[n]
        assert src.count(f"<b>{letter}</b>") == 1, letter
        assert format_label((d["structure"], d["bwd"])) in src
    merged = sum(1 for n in compute if len(r.backward.nodes[n]["members"]) > 1)
    assert merged >= 1
    assert src.count(" layers</font>") == merged
    assert "(3C, 8)" in src  # both 3x3 first layers end up 8 layers from the output


def test_contracted_depth_edges_carry_the_resampling(depth):
    src = R.contracted_diagram(depth).source
    assert len(depth.letters) == 20
    for text in ["MaxPool2d 2", "MaxPool2d 8", "Unpool x4", "Reshape 1x10x33, Unpool x8",
                 "(3C, 8)", "8 layers"]:
        assert text in src, text


def test_parallel_diagram_clusters_and_merge_colours(iris_a):
    r = iris_a
    dot = R.parallel_diagram(r)
    src = dot.source
    assert src.count("subgraph cluster_") == len(r.parents)
    for p in r.report.parents:
        assert f"<b>{p['name']}</b>" in src
    ns = nodes(dot)
    assert len(ns) == r.parallel.number_of_nodes()
    assert len(edges(dot)) == r.parallel.number_of_edges()
    for label in ["(3C, 1)", "(5C, 2)", "(11C, 5)", "(7C, 8)", "(3C, 6)"]:
        assert label in src
    # layers that merge into one letter share a colour; others stay white
    by_letter: dict[str, set[str]] = {}
    for attrs in ns.values():
        m = re.search(r"\u2192 <b>(\w+)</b>", attrs)
        if m:
            by_letter.setdefault(m.group(1), set()).add(fill(attrs))
    assert set(by_letter) == set(r.letters.values())
    shared = {n: len(r.backward.nodes[n]["members"]) > 1 for n in r.letters}
    colours = []
    for n, letter in r.letters.items():
        assert len(by_letter[letter]) == 1
        colour = next(iter(by_letter[letter]))
        if shared[n]:
            colours.append(colour)
            assert colour != "#ffffff"
    assert len(set(colours)) == len(colours)


def test_forward_diagram_uses_forward_labels(iris_a):
    r = iris_a
    dot = R.forward_diagram(r)
    assert len(nodes(dot)) == r.forward.number_of_nodes()
    assert len(edges(dot)) == r.forward.number_of_edges()
    for _, d in r.forward.nodes(data=True):
        if d["kind"] == "compute":
            assert format_label((d["structure"], d["fwd"])) in dot.source


def test_side_by_side_has_parents_and_merged(depth):
    r = depth
    dot = R.side_by_side(r)
    src = dot.source
    assert src.count("subgraph cluster_") == len(r.parents) + 1
    assert "cluster_merged" in src
    expected = sum(g.number_of_nodes() for g in r.parent_graphs) + r.backward.number_of_nodes()
    assert len(nodes(dot)) == expected + 1  # + the "SPDNN merge" arrow
    visible = [ln for ln in src.splitlines() if "->" in ln and "invis" not in ln]
    assert len(visible) == sum(g.number_of_edges() for g in r.parent_graphs) + \
        r.backward.number_of_edges()


def test_build_view_covers_every_view(iris_a):
    spec = iris_a.parents[0]
    for view in R.VIEWS:
        obj = spec if view in ("netspec", "labels") else iris_a
        assert isinstance(R.build_view(view, obj), graphviz.Digraph)
    assert "(3C, 1)" in R.build_view("labels", iris_a).source  # the merged network's own graph
    with pytest.raises(SpdnnError, match="unknown view"):
        R.build_view("nope", spec)
    with pytest.raises(SpdnnError, match="shows a merge"):
        R.build_view("contracted", spec)
    with pytest.raises(SpdnnError, match="layout"):
        R.netspec_diagram(spec, rankdir="XY")
    assert set(R.VIEWS) == {"netspec", "labels", "parallel", "forward", "contracted",
                            "side-by-side"}
    assert all(isinstance(v, str) and v for v in R.VIEWS.values())


def test_op_summary():
    spec = S.load(NETSPECS / "depth/parent_6.yaml")
    got = {lay.name: R.op_summary(lay) for lay in spec.layers}
    assert got["conv1"] == "Conv2d 3x3, 6 ch, pad same, BN, relu"
    assert got["pool2"] == "MaxPool2d 4"
    assert got["unpool1"] == "Unpool x8"
    assert got["fc1"] == "Linear 30, relu"
    assert got["reshape"] == "Reshape 1x10x33"


# --------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------
def test_save_dot_without_the_binary(tmp_path, monkeypatch, iris_a):
    dot = R.contracted_diagram(iris_a)
    monkeypatch.setattr(R.shutil, "which", lambda name: None)

    def no_pipe(*a, **k):
        raise AssertionError("pipe must not run for .dot")

    monkeypatch.setattr(graphviz.Digraph, "pipe", no_pipe)
    for name in ["m.dot", "m.gv", "sub/dir/M.DOT"]:
        out = R.save(dot, tmp_path / name)
        assert out == tmp_path / name
        assert out.read_text(encoding="utf-8") == dot.source
    with pytest.raises(SpdnnError) as exc:
        R.save(dot, tmp_path / "m.svg")
    assert "'dot' program is not installed" in str(exc.value)
    assert "apt-get install graphviz" in exc.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.dot", "m.gv", "sub"]


def test_save_unknown_suffix(tmp_path, iris_a):
    with pytest.raises(SpdnnError) as exc:
        R.save(R.contracted_diagram(iris_a), tmp_path / "m.jpeg")
    assert ".svg" in exc.value.hint and ".dot" in exc.value.hint
    assert list(tmp_path.iterdir()) == []


@needs_dot
def test_save_svg_png_pdf(tmp_path, iris_a):
    dot = R.side_by_side(iris_a)
    svg = R.save(dot, tmp_path / "m.svg").read_text(encoding="utf-8")
    assert "<svg" in svg and "(3C, 1)" in svg
    assert R.save(dot, tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert R.save(dot, tmp_path / "m.pdf").read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pdf", "m.png", "m.svg"]


@needs_dot
def test_save_render_failure_leaves_no_file(tmp_path):
    g = graphviz.Digraph()
    g.node("a", label="<<b>unclosed>")
    with pytest.raises(SpdnnError, match="could not render"):
        R.save(g, tmp_path / "x.svg")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# escaping
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ['<b>"x"\n{y}', '<b>"x"\\n{y}\\', "a&amp;b</b>]; }<<",
                                 "x\" -> y [color=red]"])
def test_hostile_names_cannot_break_the_dot(tmp_path, bad):
    spec = hostile_spec(bad)
    views = [R.netspec_diagram(spec), R.labelled_diagram(parent_graph(spec))]
    other = spec.model_copy(update={"name": bad + "other"})
    r = merge([spec, other])
    views += [R.build_view(v, r) for v in ("parallel", "forward", "contracted", "side-by-side")]
    escaped = R._text(bad)
    assert "<" not in escaped and ">" not in escaped and "\n" not in escaped
    for dot in views:
        src = dot.source
        assert escaped in src
        # every node line is one balanced <...> label followed by plain attributes
        for attrs in nodes(dot).values():
            assert_html_label_then_attrs(attrs)
        # structure untouched: the ids are generated and no red edge was injected
        assert "color=red" not in src.replace(escaped, "")
    if HAS_DOT:
        for i, dot in enumerate(views):
            out = R.save(dot, tmp_path / f"v{i}.svg").read_text(encoding="utf-8")
            assert "<svg" in out
        text = (tmp_path / "v0.svg").read_text(encoding="utf-8")
        assert "&lt;" in text or "&lt;" not in R._text(bad)


def test_text_escaping_rules():
    assert R._text('<b>"x"\n{y}') == '&lt;b&gt;"x"\\n{y}'
    assert R._text("a&b") == "a&amp;b"
    assert R._text("bell\x07") == "bell\\x07"
    long = R._text("n" * 500)
    assert len(long) == 48 and long.endswith("\u2026")


def test_netspec_diagram_expands_blocks():
    spec = S.load(NETSPECS / "squeezenet/squeezenet_1_1.yaml")
    fires = [lay for lay in spec.layers if lay.op_name == "Fire"]
    collapsed = R.netspec_diagram(spec)
    assert "subgraph cluster" not in collapsed.source
    dot = R.netspec_diagram(spec, expand_blocks=True)
    src = dot.source
    assert src.count("subgraph cluster") == len(fires) == 8
    body = len(spec.blocks["Fire"].layers)
    io = len(spec.inputs) + len(spec.outputs)
    assert len(nodes(dot)) == len(spec.layers) - len(fires) + body * len(fires) + io
    for lay in fires:  # each box is captioned by its instance and its structure code
        assert f"<b>{lay.name}</b>" in src and R._text(lay.structure()) in src
    # the expand 3x3 conv of fire2 reads fire2's squeeze conv; fire3's squeeze reads fire2's cat
    ids = {re.search(r"<b>([^<]*)</b>", a).group(1): k for k, a in nodes(dot).items()
           if "<b>" in a}
    es = set(edges(dot))
    order = [k for k, a in nodes(dot).items() if "<b>squeeze</b>" in a]
    cats = [k for k, a in nodes(dot).items() if "<b>cat</b>" in a]
    assert len(order) == len(cats) == 8
    assert (cats[0], order[1]) in es
    assert (ids["maxpool1"], order[0]) in es


def test_render_cli_expand_blocks(tmp_path):
    from spdnn.cli import main

    out = tmp_path / "sq.dot"
    assert main(["render", str(NETSPECS / "squeezenet/squeezenet_1_0.yaml"), "-o", str(out),
                 "--expand-blocks"]) == 0
    assert out.read_text().count("subgraph cluster") == 8


def test_render_cli_rankdir(tmp_path):
    from spdnn.cli import main

    for view in ("netspec", "labels"):
        out = tmp_path / f"{view}.dot"
        assert main(["render", str(NETSPECS / "squeezenet/squeezenet_1_1.yaml"), "-o", str(out),
                     "--view", view, "--rankdir", "TB"]) == 0
        assert "rankdir=TB" in out.read_text()
