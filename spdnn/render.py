"""Graphviz diagrams of netspecs and of every SPDNN merge stage (thesis ch. 3.1, Figs. 3.2-3.5;
depth paper App. A, Figs. 13-22).

Views (see :data:`VIEWS`, named in :mod:`spdnn.choices`):

* :func:`netspec_diagram` -- every layer of a network (pooling, concat, ... included), as the
  network drawings on the left of thesis Fig. 3.2;
* :func:`labelled_diagram` -- the SPDNN graph of one network: compute nodes with their
  ``(structure, distance from input)`` tuple, pooling/unpooling written on the edges (thesis
  Fig. 3.2 right, depth paper Figs. 13-20 bottom rows);
* :func:`parallel_diagram` -- all parents in parallel sharing one input and one output node
  (thesis Fig. 3.3 left, depth paper Fig. 21);
* :func:`forward_diagram` -- after the first contraction (Fig. 3.3 right);
* :func:`contracted_diagram` -- the final contracted graph with letters and backward labels
  (Figs. 3.4/3.5, depth paper Fig. 22);
* :func:`side_by_side` -- the parents next to the merged graph.

Every function returns a :class:`graphviz.Digraph`; :func:`save` writes it as SVG, PNG (150 dpi
by default, recorded in the file), PDF or DOT. :func:`build_view` chooses the layout direction
from the graph's shape when none is given (:func:`auto_rankdir`: the one whose drawing is closest
to the proportions of a page). Each caption carries a legend of what the colours and labels of
its view mean. Node identifiers are generated (``n0``, ``n1``, ...) and every user string (layer, input,
output and network names) goes through :func:`_text` into an HTML-like label, so no name can
break the DOT source.
"""

from __future__ import annotations

import html
import math
import shutil
import struct
import subprocess
import textwrap
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import graphviz
import networkx as nx

from spdnn.choices import DEFAULT_RULE, FORMATS, VIEWS, DistanceRule
from spdnn.errors import ShapeError, SpdnnError
from spdnn.graph.contract import natural_key
from spdnn.graph.label import format_label
from spdnn.graph.merge import MergeResult, parent_graph
from spdnn.io import write_atomic
from spdnn.ops.base import Op
from spdnn.shapes import NetInfo, infer
from spdnn.spec import Netspec
from spdnn.spec.blocks import BlockOp

__all__ = ["DEFAULT_DPI", "FORMATS", "PAGE_ASPECT", "VIEWS", "auto_rankdir", "build_view",
           "contracted_diagram", "forward_diagram", "labelled_diagram", "layout_size",
           "netspec_diagram", "op_summary", "parallel_diagram", "save", "side_by_side"]

FONT = "Helvetica"
_MAX_NAME = 48
_MAX_TITLE = 120

DEFAULT_DPI = 150
"""Resolution of PNG diagrams (dots per inch): 9-point node text is ~19 px high, readable in
print; Graphviz's own default of 72 dpi gives 9 px."""

PAGE_ASPECT = math.sqrt(2)
"""The proportions (long side / short side) :func:`auto_rankdir` aims at: an ISO 216 page,
portrait or landscape (A4), and close to a 3:2 figure."""

# fills by colour class (:meth:`spdnn.ops.base.Op.colour_class`: an op's ``draw_class`` or kind)
_FILL = {
    "conv": "#cfe2f3",
    "deconv": "#d9d2e9",
    "linear": "#fce5cd",
    "compute": "#dde7ee",
    "resample": "#d9ead3",
    "junction": "#fff2cc",
    "reshape": "#eeeeee",
    "rider": "#ffffff",
    "io": "#f4f4f4",
}
_BORDER = {
    "conv": "#3d85c6",
    "deconv": "#8e7cc3",
    "linear": "#e69138",
    "compute": "#607d8b",
    "resample": "#6aa84f",
    "junction": "#bf9000",
    "reshape": "#999999",
    "rider": "#b7b7b7",
    "io": "#666666",
}
_KIND_NAMES = {
    "conv": "convolution",
    "deconv": "transposed convolution",
    "linear": "fully connected",
    "compute": "block or other layer with weights",
    "resample": "pooling / unpooling",
    "junction": "Concat / Add / Mul",
    "reshape": "reshape / flatten / global pooling",
    "rider": "activation, dropout, noise",
}
"""Colour class -> what a legend calls it (in the order legends list them)."""
# colours of merged groups (one per letter), light enough for black text
_PALETTE = ["#a6cee3", "#b2df8a", "#fb9a99", "#fdbf6f", "#cab2d6", "#ffff99", "#8dd3c7",
            "#f4a6d7", "#d9d9d9", "#80b1d3", "#ccebc5", "#e5c494", "#bebada", "#ffed6f",
            "#b3de69", "#bc80bd", "#fb8072", "#fccde5"]
_GREY = "#555555"


# --------------------------------------------------------------------------------------------
# text helpers
# --------------------------------------------------------------------------------------------
def _text(value: Any, limit: int | None = _MAX_NAME) -> str:
    """A user string made safe for an HTML-like graphviz label.

    Control characters become visible escapes (``\\n``, ``\\x00``), over-long strings are cut
    with an ellipsis, and ``&``, ``<``, ``>`` are entity-escaped, so the label's ``<...>``
    delimiters stay balanced whatever the string holds.
    """
    s = str(value)
    out = []
    for ch in s:
        if unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") or ch in "\u2028\u2029":
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    s = "".join(out)
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "\u2026"
    return html.escape(s, quote=False)


def _html(*lines: str) -> str:
    """An HTML-like label from already escaped/marked-up lines."""
    return "<" + "<br/>".join(lines) + ">"


def _small(text: str, colour: str = _GREY, size: int = 8) -> str:
    return f'<font point-size="{size}" color="{colour}">{text}</font>'


def _bold(text: str, size: int | None = None) -> str:
    if size:
        return f'<font point-size="{size}"><b>{text}</b></font>'
    return f"<b>{text}</b>"


def _shape(shape: Any) -> str:
    return "x".join(str(d) for d in shape) if shape else "?"


def _many(n: int, word: str) -> str:
    """``1 layer``, ``2 layers``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def _count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.3g}M"
    if n >= 1_000:
        return f"{n / 1e3:.3g}k"
    return str(n)


def _swatch(fill: str, border: str) -> str:
    """A legend cell: a small box in a node's fill and border colour, at the top of its row."""
    return ('<td valign="top"><table border="0" cellspacing="0" cellpadding="0"><tr>'
            f'<td fixedsize="true" width="18" height="11" bgcolor="{fill}" border="1" '
            f'color="{border}"> </td></tr></table></td>')


def _caption(lines: Sequence[str], legend: Sequence[tuple[str, str]] = (),
             per_row: int = 3, wrap: int = 56) -> str:
    """A graph label: the (already escaped/marked-up) title ``lines``, then the legend, each
    entry a swatch cell (or ``""``) and its plain text (escaped here and wrapped at ``wrap``
    characters), ``per_row`` entries a row; an HTML-like table, left-aligned."""
    cols = 2 * max(1, min(per_row, len(legend)))
    rows = [f'<tr><td align="left" colspan="{cols}">{line}</td></tr>' for line in lines]
    for i in range(0, len(legend), per_row):
        cells = ""
        for swatch, text in legend[i:i + per_row]:
            body = '<br align="left"/>'.join(_text(t, None) for t in textwrap.wrap(text, wrap))
            cells += ((swatch or "<td></td>")
                      + f'<td align="left" valign="top">{_small(body, "#333333")}'
                      + '<br align="left"/></td>')
        rows.append(f"<tr>{cells}</tr>")
    return ('<<table border="0" cellborder="0" cellspacing="2" cellpadding="1">'
            + "".join(rows) + "</table>>")


def _kind_legend(keys: Sequence[str]) -> list[tuple[str, str]]:
    """Legend entries for the colour classes in ``keys`` (fill and border, in a fixed order)."""
    present = set(keys)
    return [(_swatch(_FILL[k], _BORDER[k]), name) for k, name in _KIND_NAMES.items()
            if k in present]


def _merge_legend(result: MergeResult, colours: dict[str, str],
                  keys: Sequence[str]) -> list[tuple[str, str]]:
    """Legend entries of the merge views: what a shared fill and a white fill mean, the
    op kinds of the node borders, and ``keys`` (how to read a node's text)."""
    kinds = [k for k in _KIND_NAMES if k in {
        _kind_key(d["op"]) for _, d in result.backward.nodes(data=True)
        if d.get("kind") == "compute" and d.get("op") is not None}]
    border = _BORDER[kinds[0]] if kinds else _BORDER["compute"]
    entries: list[tuple[str, str]] = []
    if colours:
        entries.append((_swatch(next(iter(colours.values())), border),
                        "filled: layers of several parents merged into one node (a colour "
                        "per merged node, the same in every view)"))
    entries.append((_swatch("#ffffff", border), "white: a layer of one parent only"))
    entries += [(_swatch("#ffffff", _BORDER[k]), f"border: {_KIND_NAMES[k]}") for k in kinds]
    entries += [("", key) for key in keys]
    return entries


def op_summary(op: Op) -> str:
    """A short plain-text description of a layer's op and parameters.

    ``Conv2d 3x3, 12 ch``, ``MaxPool2d 2``, ``Unpool x8``, ``Dropout 0.5``, ``Reshape 1x10x33``;
    padding, fused batch norm and activation follow (``Conv2d 3x3, 12 ch, pad same, BN, relu``).
    Unknown (extension) ops show their non-default fields. The text is not escaped.
    """
    main, extra = _op_parts(op)
    return ", ".join([main] + extra)


def _op_parts(op: Op) -> tuple[str, list[str]]:
    """(the op with its size, [secondary settings]) of a layer: the op's own
    :meth:`~spdnn.ops.base.Op.label_parts`."""
    return op.label_parts()


def _kind_key(op: Op) -> str:
    """The fill/border key of a layer: the op's colour class (``rider`` if unknown here)."""
    key = op.colour_class()
    return key if key in _FILL else "rider"


# --------------------------------------------------------------------------------------------
# graph scaffolding
# --------------------------------------------------------------------------------------------
def _per_row(rankdir: str, wide: int = 3) -> int:
    """Legend entries per row: fewer under a tall (top-to-bottom) diagram than a wide one."""
    return 2 if rankdir in ("TB", "BT") else wide


def _digraph(name: str, title: str | None, rankdir: str,
             legend: Sequence[tuple[str, str]] = (), per_row: int | None = None
             ) -> graphviz.Digraph:
    if rankdir not in ("LR", "TB", "RL", "BT"):
        raise SpdnnError(f"unknown layout direction {rankdir!r}", hint="use LR or TB")
    g = graphviz.Digraph(name=name)
    g.attr("graph", rankdir=rankdir, fontname=FONT, fontsize="11", nodesep="0.25",
           ranksep="0.35", bgcolor="white", pad="0.15")
    if title:
        g.attr("graph", label=_caption([_bold(_text(title, _MAX_TITLE))], legend,
                                       per_row or _per_row(rankdir)),
               labelloc="t", labeljust="l")
    g.attr("node", fontname=FONT, fontsize="9", shape="box", style="rounded,filled",
           fillcolor="white", color="#666666", penwidth="1.0", margin="0.08,0.04")
    g.attr("edge", fontname=FONT, fontsize="8", color="#444444", arrowsize="0.6",
           fontcolor="#38761d")
    return g


class _Ids:
    """Generated DOT node ids for arbitrary (hashable) keys."""

    def __init__(self, prefix: str = "n") -> None:
        self.prefix = prefix
        self.ids: dict[Any, str] = {}

    def __call__(self, key: Any) -> str:
        if key not in self.ids:
            self.ids[key] = f"{self.prefix}{len(self.ids)}"
        return self.ids[key]


def _io_node(g: graphviz.Digraph, nid: str, data: dict, compact: bool = False) -> None:
    kind = data["kind"]
    head = "input" if kind == "input" else "output"
    lines = [_bold(head), _text(data.get("name", ""))]
    if not compact and data.get("shape") is not None:
        lines.append(_small(_shape(data["shape"])))
    g.node(nid, _html(*lines), shape="oval", style="filled", fillcolor=_FILL["io"],
           color=_BORDER["io"])


def _edge_ops_label(paths: list) -> str | None:
    """The non-compute ops an SPDNN edge carries, one line per distinct path (deduplicated)."""
    seen: list[str] = []
    for p in paths:
        ops = [o for o in p.ops if o.shown_on_edges]
        if not ops:
            continue
        text = ", ".join(op_summary(o) for o in ops)
        if text not in seen:
            seen.append(text)
    if not seen:
        return None
    return _html(*(_text(s, 60) for s in seen))


def _letter_of_members(result: MergeResult) -> dict:
    """Parent layer key ``(tag, layer)`` -> letter of the merged node that holds it."""
    out = {}
    for n, letter in result.letters.items():
        for m in result.backward.nodes[n]["members"]:
            out[m] = letter
    return out


def _group_colours(result: MergeResult) -> dict[str, str]:
    """Letter -> fill colour, for the letters that stand for more than one parent layer."""
    colours = {}
    i = 0
    for n, letter in sorted(result.letters.items(), key=lambda kv: (len(kv[1]), kv[1])):
        if len(result.backward.nodes[n]["members"]) > 1:
            colours[letter] = _PALETTE[i % len(_PALETTE)]
            i += 1
    return colours


def _parent_names(result: MergeResult) -> list[str]:
    return [p["name"] for p in result.report.parents]


def _sorted_nodes(g: nx.DiGraph) -> list:
    """Nodes in a deterministic topological order (inputs first, then by position)."""
    def key(n):
        d = g.nodes[n]
        if d["kind"] == "input":
            return (0, 0, str(d.get("name")))
        if d["kind"] == "output":
            return (2, 0, str(d.get("name")))
        order = g.graph.get("order", {})
        members = d.get("members") or [n]
        pos = min(order.get(m, (d.get("parent", 0), d.get("order", 0))) for m in members)
        return (1, pos, "")
    return list(nx.lexicographical_topological_sort(g, key=key))


# --------------------------------------------------------------------------------------------
# views
# --------------------------------------------------------------------------------------------
def netspec_diagram(spec: Netspec, info: NetInfo | None = None, rankdir: str = "LR",
                    title: str | None = None, expand_blocks: bool = False) -> graphviz.Digraph:
    """Every layer of a netspec, as the network drawings of thesis ch. 3.1 Fig. 3.2 (left).

    Each node shows the layer name, its op and parameters (kernel size, channels or features,
    stride, pooling size, fused BN/activation), the output shape and the parameter count from
    :func:`spdnn.shapes.infer`. Fills tell op kinds apart: Conv2d blue, ConvTranspose2d violet,
    Linear orange, pooling/unpooling green, Concat/Add yellow, reshapes grey, activations and
    dropout white. If shape inference fails the diagram is still drawn, without shapes, and the
    error is written under the title.

    Args:
        spec: the network.
        info: its inferred shapes (computed if not given).
        rankdir: ``"LR"`` (left to right, like the thesis figures) or ``"TB"``.
        title: the caption (default: the network's name).
        expand_blocks: draw each block instance as a dashed box holding its body's layers
            (nested blocks as nested boxes) instead of one node (needs shape inference to
            succeed; collapsed otherwise).
    """
    error = None
    if info is None:
        try:
            info = infer(spec)
        except ShapeError as exc:
            error = exc.one_line()
    cap = title if title is not None else spec.name
    g = _digraph("netspec", None, rankdir)
    head = [_bold(_text(cap, 120))]
    if info is not None:
        head.append(_small(f"{_many(len(spec.layers), 'layer')}, {_count(info.params)} "
                           f"parameters, {_count(info.macs)} MACs", size=9))
    if error:
        head.append(_small(_text(error, 200), colour="#cc0000", size=9))
    ids = _Ids("n")
    for i in spec.inputs:
        _io_node(g, ids(("in", i.name)), {"kind": "input", "name": i.name, "shape": i.shape})
    keys: set[str] = set()
    made = _draw_layers(g, spec, info, ids, (), {i.name: ids(("in", i.name)) for i in spec.inputs},
                        expand_blocks and info is not None, keys)
    legend = _kind_legend(sorted(keys))
    if "block" in keys:
        legend.append(("", "dashed box: a block instance with its layers"))
    g.attr("graph", label=_caption(head, legend, per_row=_per_row(rankdir, 4)), labelloc="t",
           labeljust="l")
    for o in spec.outputs:
        shape = info.shapes.get(o.from_) if info is not None else None
        _io_node(g, ids(("out", o.name)), {"kind": "output", "name": o.name, "shape": shape})
        g.edge(made[o.from_], ids(("out", o.name)))
    return g


def _draw_layers(g: graphviz.Digraph, spec: Netspec, info: NetInfo | None, ids: _Ids,
                 scope: tuple, made: dict[str, str], expand: bool,
                 keys: set[str] | None = None,
                 root: graphviz.Digraph | None = None) -> dict[str, str]:
    """Draw the layers of ``spec`` (a network or a block body) into ``g``; ``made`` maps the
    names already drawn (inputs) to node ids. Returns it with every layer added; the colour
    classes drawn are added to ``keys``. Edges go into ``root`` (the whole diagram): an edge
    written inside a block's box would pull the layer it comes from into that box."""
    keys = set() if keys is None else keys
    root = g if root is None else root
    made = dict(made)
    for idx, lay in enumerate(spec.layers):
        srcs = spec.input_names(idx)
        if expand and isinstance(lay, BlockOp) and info is not None and lay.name in info.shapes:
            li = info[lay.name]
            body, body_info = lay.body(list(li.in_shapes))
            name = f"cluster_{ids((*scope, 'block', lay.name))}"
            keys.add("block")
            with g.subgraph(name=name) as c:
                label = _html(_bold(_text(lay.name)), _text(lay.structure(), 80),
                              _small(f"{_shape(li.out_shape)}  \u00b7  {_count(li.params)} params"))
                c.attr(label=label, style="rounded,dashed", color=_BORDER["compute"],
                       labeljust="l")
                inner = _draw_layers(c, body, body_info, ids, (*scope, lay.name),
                                     {bi.name: made[s] for bi, s in zip(body.inputs, srcs)},
                                     expand, keys, root)
            made[lay.name] = inner[body.outputs[0].from_]
            continue
        key = _kind_key(lay)
        keys.add(key)
        main, extra = _op_parts(lay)
        lines = [_bold(_text(lay.name)), _text(main, 80)]
        if extra:
            lines.append(_small(_text(", ".join(extra), 80), colour="#333333"))
        if info is not None and lay.name in info.shapes:
            lay_info = info[lay.name]
            stats = _shape(lay_info.out_shape)
            if lay_info.params:
                stats += f"  \u00b7  {_count(lay_info.params)} params"
            lines.append(_small(stats))
        nid = ids((*scope, "layer", lay.name))
        g.node(nid, _html(*lines), fillcolor=_FILL[key], color=_BORDER[key],
               penwidth="1.3" if lay.kind == "compute" else "1.0")
        for src in srcs:
            root.edge(made[src], nid)
        made[lay.name] = nid
    return made


def _compute_node(g: graphviz.Digraph, nid: str, d: dict, lines: list[str],
                  fill: str | None = None) -> None:
    op = d.get("op")
    key = _kind_key(op) if op is not None else "compute"
    g.node(nid, _html(*lines), fillcolor=fill or _FILL[key], color=_BORDER[key], penwidth="1.3")


def _add_edges(g: graphviz.Digraph, graph: nx.DiGraph, ids: _Ids, annotate: bool = True) -> None:
    for u, v, d in graph.edges(data=True):
        label = _edge_ops_label(d.get("paths", [])) if annotate else None
        if label:
            g.edge(ids(u), ids(v), label=label)
        else:
            g.edge(ids(u), ids(v))


def labelled_diagram(graph: nx.DiGraph, title: str | None = None, rankdir: str = "LR"
                     ) -> graphviz.Digraph:
    """The SPDNN graph of one network (thesis ch. 3.1 Fig. 3.2 right; depth paper Figs. 13-20).

    ``graph`` is :func:`spdnn.graph.parent_graph` of a netspec: one node per compute layer with
    its ``(structure, distance from input)`` tuple (e.g. ``(3C2P, 4)``) and layer name, plus the
    input and output nodes. Pooling, unpooling, dropout, reshapes and other non-compute layers
    are not nodes (ch. 3.1 (d)); they are written on the edges that carry them. The caption's
    legend reads the labels and names the fills.

    Args:
        graph: a forward-labelled SPDNN graph.
        title: the caption (default: the graph's ``name``, i.e. the network's name).
        rankdir: ``"LR"`` or ``"TB"``.
    """
    cap = title if title is not None else graph.graph.get("name")
    kinds = [_kind_key(d["op"]) for _, d in graph.nodes(data=True)
             if d["kind"] == "compute" and d.get("op") is not None]
    legend = _kind_legend(kinds) + [
        ("", "(structure, distance from the input): the SPDNN forward label (thesis ch. 3.1); "
             "kC a k x k convolution, kD transposed, nF fully connected, mP on data pooled by m")]
    if any(_edge_ops_label(d.get("paths", [])) for _, _, d in graph.edges(data=True)):
        legend.append(("", "edge text: the pooling, unpooling and other layers between two "
                           "nodes"))
    g = _digraph("labels", cap, rankdir, legend, per_row=_per_row(rankdir, 4))
    ids = _Ids("n")
    for n in _sorted_nodes(graph):
        d = graph.nodes[n]
        if d["kind"] != "compute":
            _io_node(g, ids(n), d)
            continue
        label = d.get("label") or (d["structure"], d.get("fwd", 0))
        lines = [_bold(_text(format_label(label), None), 10), _small(_text(d.get("layer", "")))]
        _compute_node(g, ids(n), d, lines)
    _add_edges(g, graph, ids)
    return g


def _display_order(result: MergeResult, order: Sequence[str] | None = None) -> list[int]:
    """The parents' tags (merge order) in the order to draw them: ``order`` (parent names as
    the user gave them; names a merge made unique with ``#k`` match their plain name in turn),
    else the names' natural order (``parent_2`` before ``parent_10``). The merge itself puts
    its parents in a canonical order that does not depend on the order given."""
    names = _parent_names(result)
    tags = list(range(len(result.parent_graphs)))
    if order is None:
        return sorted(tags, key=lambda t: natural_key(names[t] if t < len(names) else ""))
    left = list(tags)
    out = []
    for want in order:
        for t in left:
            if t < len(names) and names[t].split("#")[0] == want:
                out.append(t)
                left.remove(t)
                break
    return out + left


def parallel_diagram(result: MergeResult, rankdir: str = "LR",
                     order: Sequence[str] | None = None) -> graphviz.Digraph:
    """The parents in parallel with one shared input and output node (thesis ch. 3.1 Fig. 3.3
    left; depth paper App. A.2.1 Fig. 21).

    Each parent is a cluster named after it, in ``order`` (parent names; default: their natural
    order); nodes show the forward label ``(structure, distance from input)``, the layer name
    and the letter of the merged node the layer ends up in (as Fig. 21 letters equal labels).
    Layers that merge share a fill colour (the caption's legend says so).
    """
    par = result.parallel
    names = _parent_names(result)
    letter_of = _letter_of_members(result)
    colours = _group_colours(result)
    legend = _merge_legend(result, colours, [
        "(structure, distance from the input): the forward label",
        "layer \u2192 X: the layer goes to merged node X"])
    g = _digraph("parallel", "SPDNN: parents in parallel (forward labels)", rankdir, legend)
    ids = _Ids("n")
    by_parent: dict[int, list] = {}
    for n in _sorted_nodes(par):
        d = par.nodes[n]
        if d["kind"] == "compute":
            by_parent.setdefault(d["parent"], []).append(n)
        else:
            _io_node(g, ids(n), d)
    for tag in _display_order(result, order):
        if tag not in by_parent:
            continue
        name = names[tag] if tag < len(names) else f"parent {tag}"
        with g.subgraph(name=f"cluster_p{tag}") as c:
            c.attr(label=_html(_bold(_text(name, _MAX_TITLE))), style="rounded,dashed",
                   color="#999999", fontsize="10", labeljust="l")
            for n in by_parent[tag]:
                d = par.nodes[n]
                letter = letter_of.get(n, "")
                lines = [_bold(_text(format_label((d["structure"], d["fwd"])), None), 10),
                         _small(_text(d["layer"]) + (f"  \u2192 <b>{letter}</b>" if letter else ""))]
                _compute_node(c, ids(n), d, lines, fill=colours.get(letter, "#ffffff"))
    _add_edges(g, par, ids)
    return g


def forward_diagram(result: MergeResult, rankdir: str = "LR") -> graphviz.Digraph:
    """The graph after the first contraction (thesis ch. 3.1 Fig. 3.3 right): nodes with equal
    forward labels ``(structure, distance from input)`` merged, parallel edges removed.

    Each node shows its forward label, the number of parent layers it stands for, and the
    letter of the final merged node it belongs to.
    """
    fwd = result.forward
    letter_of = _letter_of_members(result)
    colours = _group_colours(result)
    legend = _merge_legend(result, colours, [
        "(structure, distance from the input): the forward label",
        "n layers \u2192 X: the parent layers it stands for, and the final merged node"])
    g = _digraph("forward", "SPDNN: after forward contraction (structure, distance from input)",
                 rankdir, legend)
    ids = _Ids("n")
    for n in _sorted_nodes(fwd):
        d = fwd.nodes[n]
        if d["kind"] != "compute":
            _io_node(g, ids(n), d)
            continue
        letter = letter_of.get(d["members"][0], "")
        k = len(d["members"])
        lines = [_bold(_text(format_label((d["structure"], d["fwd"])), None), 10),
                 _small(_many(k, "layer")
                        + (f"  \u2192 <b>{letter}</b>" if letter else ""))]
        _compute_node(g, ids(n), d, lines, fill=colours.get(letter, "#ffffff"))
    _add_edges(g, fwd, ids)
    return g


_CONTRACTED_KEY = ["letter (A, B, ... as thesis Fig. 3.5) and (structure, distance to the "
                   "output): the backward label", "n layers: the parent layers merged into it"]


def contracted_diagram(result: MergeResult, rankdir: str = "LR",
                       title: str | None = None) -> graphviz.Digraph:
    """The final contracted graph (thesis ch. 3.1 Figs. 3.4-3.5; depth paper Fig. 22).

    One node per merged layer: its letter (A, B, C, ... as in Fig. 22), the backward label
    ``(structure, distance to output)`` and how many parent layers were merged into it; edges
    carry the pooling/unpooling recalled from the parents (App. A.2.1). The caption's legend
    explains the fills (a colour per node merged from several parents, white for a layer of
    one parent), the borders (op kind) and the node text.
    """
    bwd = result.backward
    colours = _group_colours(result)
    cap = title if title is not None else (
        f"SPDNN: merged graph ({_many(len(result.letters), 'node')} from "
        f"{_many(sum(p['nodes'] for p in result.report.parents), 'parent layer')})")
    legend = _merge_legend(result, colours, _CONTRACTED_KEY)
    if any(_edge_ops_label(d.get("paths", [])) for _, _, d in bwd.edges(data=True)):
        legend.append(("", "edge text: pooling and unpooling recalled from the parents"))
    g = _digraph("contracted", cap, rankdir, legend)
    ids = _Ids("n")
    _contracted_nodes(g, result, ids, colours)
    _add_edges(g, bwd, ids)
    return g


def _contracted_nodes(g: graphviz.Digraph, result: MergeResult, ids: _Ids,
                      colours: dict[str, str], compact: bool = False) -> None:
    bwd = result.backward
    for n in _sorted_nodes(bwd):
        d = bwd.nodes[n]
        if d["kind"] != "compute":
            _io_node(g, ids(n), d, compact=compact)
            continue
        letter = result.letters.get(n, "?")
        k = len(d["members"])
        lines = [_bold(_text(letter, None), 12),
                 _text(format_label((d["structure"], d["bwd"])), None)]
        if not compact or k > 1:
            lines.append(_small(_many(k, "layer")))
        _compute_node(g, ids(n), d, lines, fill=colours.get(letter, "#ffffff"))


def side_by_side(result: MergeResult, rankdir: str = "LR",
                 order: Sequence[str] | None = None) -> graphviz.Digraph:
    """The parents (compact, each a cluster) beside the merged graph (thesis ch. 3.1: Fig. 3.2
    right next to Fig. 3.5; depth paper Figs. 13-20 next to Fig. 22).

    Parents are drawn in ``order`` (their names as given; default: natural order of the names,
    ``parent_1, parent_2, ...``), one under the other (``LR``) or side by side (``TB``). Parent
    nodes show their forward label and the letter of the merged node they go to; the merged
    cluster, under the merged network's full name, shows letters and backward labels. Merged
    groups share colours across both, and the caption's legend says how to read each.
    """
    names = _parent_names(result)
    letter_of = _letter_of_members(result)
    colours = _group_colours(result)
    legend = _merge_legend(result, colours, [
        "parents (dashed boxes): (structure, distance from the input), the forward label; "
        "\u2192 X: the layer goes to merged node X",
        "merged network (solid box): letter and (structure, distance to the output), the "
        "backward label"])
    g = _digraph("side_by_side", "SPDNN: parents and merged network", rankdir, legend)
    g.attr("graph", newrank="true", ranksep="0.3")
    parent_outs, parent_ins = [], []
    for tag in _display_order(result, order):
        pg = result.parent_graphs[tag]
        ids = _Ids(f"p{tag}_")
        name = names[tag] if tag < len(names) else f"parent {tag}"
        with g.subgraph(name=f"cluster_p{tag}") as c:
            c.attr(label=_html(_bold(_text(name, _MAX_TITLE))), style="rounded,dashed",
                   color="#999999", fontsize="10", labeljust="l")
            for n in _sorted_nodes(pg):
                d = pg.nodes[n]
                if d["kind"] != "compute":
                    _io_node(c, ids(n), d, compact=True)
                    (parent_outs if d["kind"] == "output" else parent_ins).append(ids(n))
                    continue
                letter = letter_of.get(n, "")
                lines = [_bold(_text(format_label((d["structure"], d["fwd"])), None)),
                         _small(f"\u2192 <b>{letter}</b>" if letter else _text(d["layer"]))]
                _compute_node(c, ids(n), d, lines, fill=colours.get(letter, "#ffffff"))
            _add_edges(c, pg, ids, annotate=False)
    ids = _Ids("m_")
    with g.subgraph(name="cluster_merged") as c:
        c.attr(label=_html(_bold(_text(result.spec.name, _MAX_TITLE))), style="rounded",
               color="#3d85c6", penwidth="1.5", fontsize="10", labeljust="l")
        _contracted_nodes(c, result, ids, colours, compact=True)
        _add_edges(c, result.backward, ids, annotate=False)
    merged_inputs = [ids(n) for n in result.backward if result.backward.nodes[n]["kind"] == "input"]
    g.node("merge_arrow", _html(_bold("SPDNN"), _small("merge")), shape="rarrow",
           style="filled", fillcolor="#eeeeee", color="#999999")
    # parents start at one rank (left); the arrow and the merged graph go right of them all
    with g.subgraph() as same:
        same.attr(rank="same")
        for i in parent_ins:
            same.node(i)
    for o in parent_outs:
        g.edge(o, "merge_arrow", style="invis", weight="0")
    for i in merged_inputs:
        g.edge("merge_arrow", i, style="invis")
    return g


# --------------------------------------------------------------------------------------------
# layout direction
# --------------------------------------------------------------------------------------------
def layout_size(dot: graphviz.Digraph) -> tuple[float, float] | None:
    """``(width, height)`` in inches of the diagram as Graphviz lays it out (caption
    included), or ``None`` when the ``dot`` program is missing or fails."""
    if shutil.which("dot") is None:
        return None
    try:
        plain = dot.pipe(format="plain", quiet=True).decode("utf-8", "replace")
    except (graphviz.ExecutableNotFound, graphviz.CalledProcessError,
            subprocess.CalledProcessError):
        return None
    head = plain.split("\n", 1)[0].split()
    if len(head) < 4 or head[0] != "graph":
        return None
    w, h = float(head[2]), float(head[3])
    return (w, h) if w > 0 and h > 0 else None


def auto_rankdir(draw: Callable[[str], graphviz.Digraph]
                 ) -> tuple[str, graphviz.Digraph]:
    """The layout direction for a diagram from its shape: ``draw("LR")`` and ``draw("TB")``
    are laid out and the one whose proportions (long side / short side, portrait or
    landscape) are closest to a page's, :data:`PAGE_ASPECT` (compared on a log scale), wins;
    ``LR`` (the thesis figures' direction) on a tie. A long chain thus goes top to bottom and
    a short, wide graph left to right. Without the ``dot`` program: ``LR``.

    Returns:
        ``(rankdir, diagram)``.
    """
    best: tuple[float, str, graphviz.Digraph] | None = None
    for rankdir in ("LR", "TB"):
        dot = draw(rankdir)
        size = layout_size(dot)
        if size is None:
            return "LR", dot if rankdir == "LR" else draw("LR")
        aspect = max(size) / min(size)
        score = abs(math.log(aspect) - math.log(PAGE_ASPECT))
        if best is None or score < best[0] - 1e-9:
            best = (score, rankdir, dot)
    assert best is not None
    return best[1], best[2]


def build_view(view: str, obj: Netspec | MergeResult, rankdir: str | None = None,
               expand_blocks: bool = False, distance: DistanceRule = DEFAULT_RULE,
               order: Sequence[str] | None = None) -> graphviz.Digraph:
    """The diagram named ``view`` (a key of :data:`VIEWS`) of a netspec or a merge result.

    ``netspec`` and ``labels`` take a :class:`Netspec` (a :class:`MergeResult` gives its merged
    netspec); the other views need a :class:`MergeResult`. ``rankdir`` is ``"LR"``, ``"TB"``
    or ``None``: chosen from the graph's shape (:func:`auto_rankdir`). ``expand_blocks`` draws
    block instances open in the ``netspec`` view; ``distance`` is the labelling rule of
    ``labels`` (a merge result was labelled with its own); ``order`` lists the parents' names
    in the order the ``parallel`` and ``side-by-side`` views draw them (default: natural
    order of the names).

    Raises:
        SpdnnError: unknown view or layout direction, or a merge view asked of a single
            netspec.
    """
    if view not in VIEWS:
        raise SpdnnError(f"unknown view {view!r}", hint="use one of " + ", ".join(VIEWS))
    draw: Callable[[str], graphviz.Digraph]
    if view in ("netspec", "labels"):
        spec = obj.spec if isinstance(obj, MergeResult) else obj
        if view == "netspec":
            info = None
            try:
                info = infer(spec)
            except ShapeError:
                pass  # netspec_diagram draws it without shapes and says why

            def draw(rd: str) -> graphviz.Digraph:
                return netspec_diagram(spec, info=info, rankdir=rd, expand_blocks=expand_blocks)
        else:
            graph = parent_graph(spec, rule=distance)

            def draw(rd: str) -> graphviz.Digraph:
                return labelled_diagram(graph, title=spec.name, rankdir=rd)
    else:
        if not isinstance(obj, MergeResult):
            raise SpdnnError(f"the {view!r} view shows a merge",
                             hint="give several netspecs to merge, or use --view netspec or labels")
        result = obj

        def draw(rd: str) -> graphviz.Digraph:
            if view == "parallel":
                return parallel_diagram(result, rankdir=rd, order=order)
            if view == "side-by-side":
                return side_by_side(result, rankdir=rd, order=order)
            fn = {"forward": forward_diagram, "contracted": contracted_diagram}[view]
            return fn(result, rankdir=rd)
    if rankdir is not None:
        return draw(rankdir)
    return auto_rankdir(draw)[1]


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def _png_dpi(data: bytes, dpi: int) -> bytes:
    """A PNG with its resolution recorded (a ``pHYs`` chunk, pixels per metre, right after
    ``IHDR``, replacing any there was), so viewers and word processors size it at ``dpi``."""
    ppm = math.ceil(dpi / 0.0254)
    body = b"pHYs" + struct.pack(">IIB", ppm, ppm, 1)
    chunk = struct.pack(">I", 9) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    out, pos = [data[:8]], 8
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, end = data[pos + 4:pos + 8], pos + 12 + n
        if kind != b"pHYs":
            out.append(data[pos:end])
        if kind == b"IHDR":
            out.append(chunk)
        pos = end
    return b"".join(out)


def save(dot: graphviz.Digraph, path: str | Path, dpi: int = DEFAULT_DPI) -> Path:
    """Write a diagram; the format follows the suffix (``.svg``, ``.png``, ``.pdf``, ``.dot``,
    ``.gv``). DOT source needs no Graphviz install; the others run the ``dot`` program. A PNG
    is rendered at ``dpi`` dots per inch (default :data:`DEFAULT_DPI`) and records it; SVG and
    PDF are vector formats and ignore it.

    The file is written through a temporary file in the same folder and renamed into place, so
    a failed render leaves neither a partial file nor stray files next to it. Missing parent
    folders are created.

    Returns:
        The path written.

    Raises:
        SpdnnError: unknown suffix, ``dpi`` outside 10..1200, the ``dot`` program is missing or
            fails, or the file cannot be written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise SpdnnError(f"cannot tell the diagram format from {str(path)!r}",
                         hint="end the file name in " + ", ".join(FORMATS))
    if not isinstance(dpi, int) or not 10 <= dpi <= 1200:
        raise SpdnnError(f"the resolution must be 10 to 1200 dpi, got {dpi!r}", field="dpi",
                         hint="e.g. --dpi 150 (screen) or 300 (print)")
    fmt = FORMATS[suffix]
    if fmt is None:
        data = dot.source.encode("utf-8")
    else:
        if shutil.which("dot") is None:
            raise SpdnnError("the Graphviz 'dot' program is not installed",
                             hint="install it: apt-get install graphviz (or write .dot)")
        if fmt == "png":
            dot = dot.copy()
            dot.attr("graph", dpi=str(dpi))
        try:
            data = dot.pipe(format=fmt, quiet=True)
        except graphviz.ExecutableNotFound:
            raise SpdnnError("the Graphviz 'dot' program is not installed",
                             hint="install it: apt-get install graphviz (or write .dot)") from None
        except (graphviz.CalledProcessError, subprocess.CalledProcessError) as exc:
            err = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else exc.stderr
            raise SpdnnError(f"Graphviz could not render the diagram: {(err or '').strip()}",
                             file=str(path), hint="write .dot to inspect the source") from None
        if fmt == "png":
            data = _png_dpi(data, dpi)
    write_atomic(path, data, what="diagram")
    return path
