"""Graph -> netspec: rebuild the contracted SPDNN graph as a network (thesis ch. 3.1 step 5,
"turn back the graph into a network"; depth paper App. A.2.1).

A node with several predecessors concatenates them on the channel axis; every edge recalls the
parent's own non-compute layers (pooling quality included, A.2.1) and adds the resampling the
sticky factors still imply (a pool where the factor grows, a value-repeating unpool where it
shrinks; the op classes say how, :func:`spdnn.ops.resampling_layer`); when several layers reach
an output they feed one shared head (concat -> conv for maps, linear for vectors).
"""

from __future__ import annotations

import re
from fractions import Fraction

import networkx as nx

from spdnn.errors import MergeError, SpecError
from spdnn.graph.convert import EdgePath
from spdnn.ops import Op, resampling_layer
from spdnn.ops.conv import Conv2d
from spdnn.ops.layers import Concat, Flatten, Linear, Reshape
from spdnn.ops.sensing import ChannelSlice
from spdnn.shapes import NetInfo, infer
from spdnn.spec import from_data
from spdnn.spec.blocks import merge_blocks
from spdnn.spec.models import Netspec

__all__ = ["Rebuild"]

_HIDDEN_ACTIVATIONS = {"relu", "leaky_relu", "elu"}


class Rebuild:
    """Turns the contracted graph back into a netspec (thesis ch. 3.1 step 5; A.2.1).

    Args:
        parents: the parent netspecs, in merge (canonical) order; node keys ``(tag, layer)``
            index them.
        names: their unique display names (for ``merged_from`` and the description).
        g: the contracted graph (compute nodes with ``members``, ``op``, ``in_factor``,
            ``role_factors``; edges with ``paths``).
        letters: compute node -> letter (the merged layer's name).
        head_kernel: kernel size of a shared output head's convolution.
        name: the merged network's name.

    :meth:`widths` gives the parents' width of every scalable node, :meth:`build` the netspec
    for chosen widths; :attr:`notes` collects remarks for the merge report.
    """

    def __init__(self, parents: list[Netspec], names: list[str], g: nx.DiGraph, letters: dict,
                 head_kernel: int, name: str, infos: list[NetInfo] | None = None) -> None:
        self.parents, self.names, self.g, self.letters = parents, names, g, letters
        self.infos = infos if infos is not None else [infer(p) for p in parents]
        self.head_kernel, self.name = head_kernel, name
        self.notes: list[str] = []
        self.topo = [n for n in nx.lexicographical_topological_sort(
            g, key=lambda n: (self.letters.get(n, ""), str(n)))]
        self.position = {x: i for i, x in enumerate(self.topo)}
        # nodes feeding each output, and whether a shared head is needed there
        out_order = [o.name for o in parents[0].outputs]  # the parents' order, not topology's
        self.outputs = sorted((n for n in self.topo if g.nodes[n]["kind"] == "output"),
                              key=lambda n: out_order.index(g.nodes[n]["name"]))
        self.freed: set = set()  # last layers that lose their output role to a shared head
        for o in self.outputs:
            preds = list(g.predecessors(o))
            if len(preds) > 1:
                self.freed |= {p for p in preds if g.nodes[p]["kind"] == "compute"}
        self.fixed_width: dict = {}  # single last layers keep the parents' output width
        for o in self.outputs:
            preds = list(g.predecessors(o))
            if len(preds) == 1 and g.nodes[preds[0]]["kind"] == "compute":
                self.fixed_width[preds[0]] = g.nodes[preds[0]]["op"].out_channels_of()
        self._notes_done = False
        self._carry = False
        self._widths: dict = {}
        self._proj_notes: dict[str, str] = {}  # projection layer -> its note (see _project)
        self._layers = [{lay.name: lay for lay in p.layers} for p in parents]
        self._blocks = merge_blocks(parents)  # block instances need their definitions

    def _rep(self, n) -> Op:
        """The op of node ``n`` (its representative member's)."""
        return self.g.nodes[n]["op"]

    def widths(self) -> dict:
        """Base width of every scalable node: the widest of its members' widths."""
        base = {}
        for n in self.letters:
            d = self.g.nodes[n]
            ws = [self._member_op(m).out_channels_of() for m in d["members"]]
            if any(w is None for w in ws):
                continue
            w = max(ws)
            if n in self.freed:
                w = max([w] + self._hidden_widths(d["members"]))
            base[n] = w
        return base

    def _member_op(self, m) -> Op:
        tag, layer = m
        return self._layers[tag][layer]

    def _hidden_widths(self, members) -> list[int]:
        out = []
        for tag, layer in members:
            spec = self.parents[tag]
            for lay in spec.layers:
                w = lay.out_channels_of()
                if lay.name != layer and w is not None and lay.kind == "compute":
                    out.append(w)
        return out[-1:] if out else []

    def fan_ins(self) -> dict:
        """The edges ``u -> v`` from a feature map into a layer that reads vectors (a
        ``Flatten -> Linear`` in a parent) where ``u``'s merged width exceeds the width its
        parents gave the dense layer's fan-in: ``(u, v) -> that width`` (the widest of the
        members of ``u`` whose parent reads them on this edge). The rebuilt edge can then begin
        with a ``ChannelSlice`` (:meth:`build` with a ``("fan-in", u, v)`` width), so the dense
        layer's fan-in gets its own budget width while ``u`` keeps the width its other
        successors need (depth App. B: a 36-channel layer of a fully convolutional parent and
        the 6-channel layer that feeds a dense layer merge into one node)."""
        base = self.widths()
        out: dict = {}
        for u, v, d in self.g.edges(data=True):
            if u not in base or self.g.nodes[v]["kind"] != "compute":
                continue
            if self.g.nodes[u].get("out_factor") is None:
                continue  # u writes vectors: no feature map to slice
            if not self._rep(v).clears_factor:
                continue  # v reads u as a map (only a dense layer flattens it)
            if self.g.out_degree(u) < 2:
                continue  # nothing else reads u: the channels past a slice would be wasted
            ws = [self._member_op((p.parent, p.src)).out_channels_of()
                  for p in d["paths"] if (p.parent, p.src) in self._members_of(u)]
            ws = [w for w in ws if w is not None]
            if ws and max(ws) < base[u]:
                out[(u, v)] = max(ws)
        return out

    def _members_of(self, n) -> set:
        return set(self.g.nodes[n].get("members", ()))

    def ties(self) -> list[set]:
        """Groups of nodes that must share one width: a node whose output width follows its
        input width (an identity-residual block, :meth:`~spdnn.ops.base.Op.width_follows_input`)
        and the single node that feeds it through layers that keep the channel count (a
        ResNet stage: the stem or the downsampling block and the basic blocks after it).
        Such a node with several predecessors, or one the budget cannot scale, is not tied:
        :meth:`build` projects its input to its width (a 1x1 conv + BN)."""
        base = self.widths()
        parent = {n: n for n in base}

        def find(n):
            while parent[n] != n:
                parent[n] = parent[parent[n]]
                n = parent[n]
            return n

        for v in self.topo:
            if v not in base or not self._rep(v).width_follows_input():
                continue
            preds = list(self.g.predecessors(v))
            if len(preds) != 1 or preds[0] not in base:
                continue
            u = preds[0]
            paths = self.g.edges[u, v]["paths"]
            if all(self._keeps_width(p) for p in paths):
                parent[find(v)] = find(u)
        groups: dict = {}
        for n in base:
            groups.setdefault(find(n), set()).add(n)
        return [g for g in groups.values() if len(g) > 1]

    def _keeps_width(self, path: EdgePath) -> bool:
        w = 7  # a probe width: pooling, dropout and the like keep it, a slice would not
        for op in path.ops:
            if op.kind == "junction":
                return False
            w = self._path_width(path.parent, op, w)
            if w != 7:
                return False
        return True

    def undeclared(self) -> list[str]:
        """The merged nodes whose block follows its input width but declares no ``widths``
        (:meth:`spdnn.spec.blocks.BlockOp.undeclared_widths`): the budget cannot scale them."""
        out = []
        for n in self.letters:
            op = self._rep(n)
            if getattr(op, "undeclared_widths", lambda: False)():
                out.append(f"{self.letters[n]} ({op.op_name})")
        return out

    def build(self, widths: dict, carry: bool = False) -> Netspec:
        """The netspec with the given width for every scalable node.

        ``carry``: the widths hold every parent's channels side by side (the weight-carrying
        merge, :mod:`spdnn.graph.weights`; ``widths`` may then also hold ``Linear`` nodes,
        whose width the budget never scales since their structure code names it), so a
        parent's vector -> map ``Reshape`` on an edge keeps its map size and takes as many
        channels as the wider vector holds (``[1, 10, 33]`` becomes ``[-1, 10, 33]``), and the
        last layers that feed a shared head take their hidden style without batch norm (they
        carry the parents' signed outputs, which a batch norm in training mode would
        renormalise)."""
        self._carry = carry
        self._widths = widths
        g, letters = self.g, self.letters
        layers: list[dict] = []
        ends: dict = {}  # node -> layer name producing its output
        self._in_ok: dict = {}  # node -> its input has its parents' width
        self._name_width: dict[str, int | None] = {}  # layer name -> output channels
        for n in self.topo:
            d = g.nodes[n]
            if d["kind"] == "input":
                ends[n] = d["name"]
                self._name_width[d["name"]] = d["shape"][0] if len(d["shape"]) == 3 else None
                continue
            if d["kind"] == "output":
                continue
            srcs = [e for u in self._preds(n) for e in self._edge(u, n, ends, layers)]
            letter = letters[n]
            op = self._rep(n)
            roles = op.input_roles()
            if roles is None:
                ins = [self._join(letter, [(nm, f) for nm, f, _ in srcs], layers)]
                ins = [self._project(n, ins[0], srcs, layers, widths)]
            else:  # one argument per role, each joined on its own (SPADE: x and segmap)
                ins = []
                for k, role in enumerate(roles):
                    group = [(nm, f) for nm, f, r in srcs if r == k]
                    if not group:  # pragma: no cover - every member had every role
                        raise MergeError(f"{letter}: no input for its '{role}' argument")
                    ins.append(self._join(f"{letter}_{role}", group, layers))
            upd: dict = {"name": letter, "inputs": ins,
                         "merged_from": sorted(self.g.graph["member_name"][m] for m in d["members"])}
            if n in widths and n not in self.fixed_width:
                op = (op.with_width(widths[n]) if op.out_channels_of() is not None
                      else op.model_copy(update={"out_features": int(widths[n])}))
            elif n in self.fixed_width and self.fixed_width[n] is not None:
                op = op.with_width(self.fixed_width[n])
            data = op.model_dump(mode="json", exclude_defaults=True)
            data.update(upd)
            if n in self.freed:  # only the style fields the op has (not a block's or SPADE's)
                style = self._hidden_style(d["members"])
                if carry:  # the parents' signed outputs, not renormalised in training mode
                    style["batch_norm"] = False
                data.update({k: v for k, v in style.items() if k in type(op).model_fields})
            layers.append(data)
            ends[n] = letter
            self._name_width[letter] = self._width_of(n, op)
        outputs = []
        for o in self.outputs:
            oname = g.nodes[o]["name"]
            srcs = [e for u in self._preds(o) for e in self._edge(u, o, ends, layers)]
            if len(srcs) == 1:
                outputs.append({"name": oname, "from": srcs[0][0]})
                continue
            head = self._head(o, [name for name, *_ in srcs], layers)
            outputs.append({"name": oname, "from": head})
        data = {"name": self.name,
                "description": "SPDNN merge of " + ", ".join(self.names) + " (spdnn merge).",
                "inputs": [p.model_dump() for p in self.parents[0].inputs],
                "layers": layers, "outputs": outputs}
        if self._blocks:
            data["blocks"] = {k: b.to_data() for k, b in self._blocks.items()}
        try:
            return from_data(data, file=f"<merge of {', '.join(self.names)}>")
        except SpecError as exc:  # pragma: no cover - a compiler bug if it happens
            raise MergeError(f"the merged network does not validate: {exc.one_line()}") from None

    def _preds(self, n) -> list:
        return sorted(self.g.predecessors(n), key=self.position.__getitem__)

    def _edge(self, u, v, ends: dict, layers: list[dict]
              ) -> list[tuple[str, Fraction | None, int | None]]:
        """Recall the parent's non-compute layers on edge u -> v; fix the pooling factor.

        Parallel edges from different parents collapse into one (contraction step "remove the
        parallel edges"); several paths of one parent between the same two layers (e.g. a direct
        and a pooled skip into one Concat) are all kept, so that ``merge(a) == a``.

        Returns, per kept path, the name of the layer that ends it, the pooling factor there
        (``None`` for vectors) and the role it feeds (:attr:`EdgePath.role`).
        """
        g = self.g
        paths: list[EdgePath] = g.edges[u, v]["paths"]
        counts: dict[int, int] = {}
        for p in paths:
            counts[p.parent] = counts.get(p.parent, 0) + 1
        parent = max(counts, key=lambda t: (counts[t], t == paths[0].parent))
        kept = [p for p in paths if p.parent == parent]
        base = self._tag(u, v)
        return [self._path(u, v, p, base if j == 0 else f"{base}_{j}", ends, layers, paths)
                for j, p in enumerate(kept)]

    def _path(self, u, v, path: EdgePath, tag: str, ends: dict, layers: list[dict],
              paths: list[EdgePath]) -> tuple[str, Fraction | None, int | None]:
        g = self.g
        src = ends[u]
        cut = None if self._carry else self._widths.get(("fan-in", u, v))
        have_w = self._name_width.get(src)
        if cut is not None and have_w is not None and cut < have_w:
            nm = f"{tag}_fanin"
            layers.append(ChannelSlice.layer_data(nm, start=0, stop=int(cut), inputs=[src]))
            self._name_width[nm] = int(cut)
            src = nm
        for i, op in enumerate(path.ops):
            if op.kind == "junction":
                continue
            nm = f"{tag}_{op.op_name.lower()}{i}"
            data = op.model_dump(mode="json", exclude_defaults=True)
            data.update({"name": nm, "inputs": [src]})
            data.pop("merged_from", None)
            if self._carry and isinstance(op, Reshape) and len(op.shape) == 3:
                data["shape"] = [-1, *op.shape[1:]]
            layers.append(data)
            self._name_width[nm] = self._path_width(path.parent, op, self._name_width.get(src))
            src = nm
        # sticky factor: where does v expect its data, and where does this path leave it?
        want = path.out_factor
        if g.nodes[v]["kind"] == "compute":
            rf = g.nodes[v].get("role_factors")
            want = rf[path.role] if rf is not None and path.role is not None else g.nodes[v]["in_factor"]
        have = path.out_factor
        if want is not None and have is not None and want != have:
            ratio = want / have
            if ratio.denominator != 1 and (1 / ratio).denominator != 1:
                raise MergeError(f"cannot resample by {ratio} between {self._show(u)} and {self._show(v)}")
            data = resampling_layer(ratio, self._recalled_ops(v, paths))
            nm = f"{tag}_{data['op'].lower()}"
            layers.append({"name": nm, **data, "inputs": [src]})
            self._name_width[nm] = self._name_width.get(src)
            src = nm
            have = want
        return src, have, path.role

    def _tag(self, u, v) -> str:
        a = self.letters.get(u, "in" if self.g.nodes[u]["kind"] == "input" else "x")
        b = self.letters.get(v, "out")
        if self.g.nodes[u]["kind"] == "input":
            a = "in_" + re.sub(r"\W+", "_", self.g.nodes[u]["name"])
        if self.g.nodes[v]["kind"] == "output":
            b = "out_" + re.sub(r"\W+", "_", self.g.nodes[v]["name"])
        return f"{a}_{b}"

    def _show(self, n) -> str:
        return self.letters.get(n, str(n))

    def _recalled_ops(self, v, paths: list[EdgePath]):
        """The ops whose kind of resampling an edge into ``v`` recalls (A.2.1: "the pooling
        quality will be recalled from the original network"): the ops on the edge's paths, then
        the layers of ``v``'s parents, then those of every parent."""
        for p in paths:
            yield from p.ops
        members = self.g.nodes[v].get("members", [])
        for tag in sorted({m[0] for m in members}) + list(range(len(self.parents))):
            yield from self.parents[tag].layers

    def _join(self, letter: str, srcs: list[tuple[str, Fraction | None]],
              layers: list[dict]) -> str:
        """Several inputs are concatenated on the channel axis; where maps meet vectors (a
        Linear node), the maps are flattened first."""
        if len(srcs) == 1:
            return srcs[0][0]
        names = [name for name, _ in srcs]
        if len({f is None for _, f in srcs}) > 1:
            names = []
            for name, f in srcs:
                if f is not None:
                    layers.append(Flatten.layer_data(f"{name}_flat", inputs=[name]))
                    name = f"{name}_flat"
                names.append(name)
        nm = f"{letter}_cat"
        layers.append(Concat.layer_data(nm, inputs=names))
        return nm

    def _member_info(self, n):
        """The parent's shape inference of node ``n``'s first member (its representative)."""
        tag, layer = self.g.nodes[n]["members"][0]
        return self.infos[tag][layer]

    def _project(self, n, src: str, srcs: list, layers: list[dict], widths: dict) -> str:
        """Where a node whose output width follows its input width (an identity-residual
        block: its body adds its input to its output) would read another width than its own
        (several predecessors concatenated, or a predecessor scaled to another width), a 1x1
        conv + BN projects the input to the node's width, as ResNet's downsample shortcut does
        (He et al., CVPR 2016, sec. 3.3, option B): the node's scaled width when its block
        declares its ``widths`` (:meth:`ties` makes that rare), else its parents' width. Nodes
        that accept the width they get are left as they are.

        Returns the name of the layer the node reads."""
        op = self._rep(n)
        self._in_ok[n] = False
        declared = op.out_channels_of() is not None
        if declared and not op.width_follows_input():
            return src
        want = self._member_info(n).in_shapes[0]
        got = [self._name_width.get(nm) for nm, *_ in srcs]
        if len(want) != 3 or any(w is None for w in got):
            return src
        width = sum(got)  # type: ignore[arg-type]
        target = int(widths.get(n, op.out_channels_of())) if declared else want[0]
        if width == target:
            self._in_ok[n] = True
            return src
        if not declared:
            try:
                op.infer_shape([(width, *want[1:])])
                return src  # it takes the wider input as it is
            except SpecError:
                pass
        letter = self.letters[n]
        nm = f"{letter}_proj"
        layers.append(Conv2d.layer_data(nm, kernel_size=1, out_channels=target, batch_norm=True,
                                        inputs=[src]))
        whose = "its own (scaled) width" if declared else "the channels of its parents"
        self._proj_notes[nm] = (
            f"{letter} ({self.g.nodes[n]['structure']}) adds its input to its output, so its "
            f"input is projected to {whose} by a 1x1 conv + BN (as ResNet's downsample "
            "shortcut) where it gets another width (predecessors concatenated, or a "
            "predecessor of another width).")
        self._in_ok[n] = True
        return nm

    def _path_width(self, tag: int, op: Op, width: int | None) -> int | None:
        """Channels after a parent's non-compute layer ``op`` that reads ``width`` channels
        (its own shape rule on the parent's resolution; ``None`` for vectors or unknown)."""
        shape = self.infos[tag][op.name].in_shapes[0]
        if width is None or len(shape) != 3 or len(op.inputs or ()) > 1:
            return None
        try:
            out = op.infer_shape([(width, *shape[1:])])
        except SpecError:
            return None
        return out[0] if len(out) == 3 else None

    def _width_of(self, n, op: Op) -> int | None:
        """Output channels of node ``n`` as built (``None`` where not known here)."""
        w = op.out_channels_of()
        if w is not None:
            return w
        if self._in_ok.get(n):
            shape = self._member_info(n).out_shape
            return shape[0] if len(shape) == 3 else None
        return None

    def projection_notes(self, spec: Netspec) -> list[str]:
        """Report lines for the input projections that ``spec`` (built here) holds."""
        names = {lay.name for lay in spec.layers}
        return [text for nm, text in self._proj_notes.items() if nm in names]

    def _hidden_style(self, members) -> dict:
        """A last layer that now feeds the shared head takes its parent's hidden-layer style
        (activation and batch norm of the nearest earlier compute layer; ReLU if none)."""
        for tag, layer in members:
            for lay in reversed(self.parents[tag].layers):
                act = getattr(lay, "activation", None)
                if lay.name != layer and lay.kind == "compute" and act in _HIDDEN_ACTIVATIONS:
                    return {"activation": act, "batch_norm": bool(getattr(lay, "batch_norm", False))}
        return {"activation": "relu"}

    def _head(self, o, srcs: list[str], layers: list[dict]) -> str:
        """Shared output head: concat -> 1x1 conv (maps) or linear (vectors)."""
        oname = re.sub(r"\W+", "_", self.g.nodes[o]["name"])
        shape = self.g.nodes[o]["shape"]
        last = self._parent_output_layer(o)
        act = getattr(last, "activation", None)
        cat = f"head_{oname}_cat"
        layers.append(Concat.layer_data(cat, inputs=srcs))
        nm = f"head_{oname}"
        if len(shape) == 3:
            head = Conv2d.layer_data(nm, kernel_size=self.head_kernel, out_channels=shape[0],
                                     padding="same", inputs=[cat])
        else:
            head = Linear.layer_data(nm, out_features=shape[0], inputs=[cat])
        if act:
            head["activation"] = act
        if not self._notes_done:
            self.notes.append(f"{len(srcs)} layers reach output '{self.g.nodes[o]['name']}': they "
                              f"are concatenated and feed a shared head ({head['op']}"
                              f"{' ' + str(self.head_kernel) + 'x' + str(self.head_kernel) if len(shape) == 3 else ''}"
                              f" -> {shape[0]}{', ' + act if act else ''}).")
            self._notes_done = True
        layers.append(head)
        return nm

    def _parent_output_layer(self, o) -> Op:
        name = self.g.nodes[o]["name"]
        spec = self.parents[0]
        out = next(x for x in spec.outputs if x.name == name)
        return spec.layer(out.from_)
