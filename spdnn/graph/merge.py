"""SPDNN merge: several netspecs -> one semi-parallel netspec (thesis ch. 3.1; depth paper A.2).

Steps (each a plain function over networkx graphs):

1. :func:`~spdnn.graph.convert.to_graph` turns each parent into its graph; forward labels.
2. The graphs are put in parallel with shared input and output nodes (:func:`parallel_graph`).
3. Forward contraction: merge equal ``(structure, distance from input)`` labels.
4. Backward labelling on the contracted graph, ``(structure, distance to output)``; contract again.
5. :func:`rebuild` turns the graph back into a netspec: a node with several predecessors
   concatenates them on the channel axis; every edge recalls the parent's own non-compute layers
   (pooling quality included, A.2.1) and adds the resampling the sticky factors still imply
   (pool where the factor grows, value-repeating unpool where it shrinks); when several layers
   reach an output they feed one shared head (concat -> 1x1 conv or linear).
6. The channel budget scales the widths so the parameter count meets a target (App. A: "the
   number of channels ... such that the network had almost the same number of parameters as
   each of its parent networks").

Parents are put in a canonical order first (by a Weisfeiler-Lehman hash of their labelled
graphs), so the result does not depend on the order the user lists them in.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import networkx as nx

from spdnn.errors import MergeError, ShapeError, SpecError
from spdnn.graph.contract import SkippedMerge, contract, natural_key
from spdnn.graph.convert import EdgePath, to_graph
from spdnn.graph.label import DistanceRule, label_backward, label_forward
from spdnn.ops import Op
from spdnn.shapes import infer
from spdnn.spec import Netspec, from_data, spec_hash
from spdnn.spec.blocks import merge_blocks

ParamsTarget = Literal["like-each", "largest", "sum", "keep"] | int

_HIDDEN_ACTIVATIONS = {"relu", "leaky_relu", "elu"}


@dataclass
class MergeReport:
    """What a merge did, for people: sizes, labels, skipped merges, the channel budget."""

    parents: list[dict]
    merged_params: int
    merged_macs: int
    merged_nodes: int
    rule: str
    target_mode: str
    target_params: int | None
    width_scale: float
    labels: list[dict]
    skipped: list[SkippedMerge]
    notes: list[str] = field(default_factory=list)

    @property
    def parents_params(self) -> int:
        return sum(p["params"] for p in self.parents)

    @property
    def reduction_vs_sum(self) -> float:
        """Fraction of the parents' summed parameters that the merged network saves."""
        return 1.0 - self.merged_params / max(1, self.parents_params)

    @property
    def budget_error(self) -> float | None:
        if not self.target_params:
            return None
        return self.merged_params / self.target_params - 1.0


@dataclass
class MergeResult:
    """Everything a merge produced: the netspec, the intermediate graphs and the report."""

    spec: Netspec
    parents: list[Netspec]
    parent_graphs: list[nx.DiGraph]
    parallel: nx.DiGraph
    forward: nx.DiGraph
    backward: nx.DiGraph
    letters: dict
    report: MergeReport


# --------------------------------------------------------------------------------------------
# graphs
# --------------------------------------------------------------------------------------------
def parent_graph(spec: Netspec, tag: int = 0, rule: DistanceRule = "longest") -> nx.DiGraph:
    """The forward-labelled SPDNN graph of one network (thesis Fig. 3.2, right)."""
    g = to_graph(spec, tag)
    return label_forward(g, rule)


def parallel_graph(graphs: list[nx.DiGraph], names: list[str]) -> nx.DiGraph:
    """Put parent graphs in parallel, sharing input and output nodes (thesis Fig. 3.3 left)."""
    p = nx.DiGraph(order={}, member_name={})
    for g, name in zip(graphs, names):
        for n, d in g.nodes(data=True):
            if d["kind"] == "compute":
                p.add_node(n, **d, members=[n], parents=frozenset({d["parent"]}))
                p.graph["order"][n] = (d["parent"], d["order"])
                p.graph["member_name"][n] = f"{name}:{d['layer']}"
            elif n not in p:
                p.add_node(n, **d)
        for u, v, d in g.edges(data=True):
            if p.has_edge(u, v):
                p.edges[u, v]["paths"].extend(d["paths"])
            else:
                p.add_edge(u, v, paths=list(d["paths"]))
    return p


def _canonical_order(specs: list[Netspec], rule: DistanceRule) -> list[int]:
    pre = []
    for s in specs:
        g = parent_graph(s, 0, rule)
        for _, d in g.nodes(data=True):
            d["wl"] = f"{d['kind']}:{d.get('label', d.get('name'))}"
        with warnings.catch_warnings():  # networkx notes that directed hashes changed in 3.5
            warnings.simplefilter("ignore", UserWarning)
            pre.append((nx.weisfeiler_lehman_graph_hash(g, node_attr="wl", iterations=4), s.name))
    counts = Counter(pre)
    # the full content hash only breaks ties (it costs a YAML dump per parent)
    keys = [(h, n, spec_hash(s) if counts[(h, n)] > 1 else "", i)
            for i, ((h, n), s) in enumerate(zip(pre, specs))]
    return [k[-1] for k in sorted(keys)]


def _letters(n: int) -> str:
    out = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        out = chr(65 + r) + out
    return out


# --------------------------------------------------------------------------------------------
# the merge
# --------------------------------------------------------------------------------------------
def merge(specs: list[Netspec], params: ParamsTarget = "like-each",
          distance: DistanceRule = "longest", head_kernel: int | None = None,
          name: str | None = None) -> MergeResult:
    """Merge networks into one SPDNN network.

    Args:
        specs: the parent netspecs (one or more). They must share input and output names and
            shapes.
        params: channel budget: ``"like-each"`` (mean of the parents' parameter counts, the
            paper's choice), ``"largest"``, ``"sum"``, an integer, or ``"keep"`` (keep the widest
            parent width of every merged layer, no scaling).
        distance: labelling distance rule, ``"longest"`` (default; reproduces the published
            iris network) or ``"shortest"`` (ch. 3.1 literally).
        head_kernel: kernel size of the shared output head's convolution (used only when
            several layers reach an output). Default: the smallest kernel among the parents'
            output convolutions (3 for the depth parents, as the authors' final model).
        name: the merged network's name (default ``spdnn_merge_of_<parents>``).

    Returns:
        A :class:`MergeResult`.

    Raises:
        MergeError: no parents, mismatched inputs/outputs, or a top-level ``Add`` layer.
        SpecError: the rebuilt network does not validate (should not happen; reported).
    """
    if not specs:
        raise MergeError("no networks to merge", hint="give at least one netspec")
    _check_compatible(specs)
    order = _canonical_order(specs, distance)
    parents = [specs[i] for i in order]
    names = _unique_names([p.name for p in parents])
    graphs = [parent_graph(p, tag, distance) for tag, p in enumerate(parents)]
    par = parallel_graph(graphs, names)
    label_forward(par, distance)
    fwd, skipped_f = contract(par, "forward", check_cycles=distance != "longest")
    relabelled = label_backward(fwd.copy(), distance)  # keep `fwd` with its forward labels
    bwd, skipped_b = contract(relabelled, "backward", check_cycles=distance != "longest")
    if not nx.is_directed_acyclic_graph(bwd):  # pragma: no cover - guaranteed by contract()
        raise MergeError("internal error: the contracted graph has a cycle")
    letters = _assign_letters(bwd)
    merged_name = name or "spdnn_merge_of_" + "_".join(sorted(re.sub(r"\W+", "_", n) for n in names))
    if len(merged_name) > 200:  # the netspec name limit
        digest = hashlib.sha256(merged_name.encode()).hexdigest()[:8]
        merged_name = f"spdnn_merge_of_{len(names)}_networks_{digest}"
    if head_kernel is None:
        head_kernel = _default_head_kernel(parents)
    builder = _Rebuild(parents, names, bwd, letters, head_kernel, merged_name)
    base = builder.widths()
    infos = [infer(p) for p in parents]
    pparams = [i.params for i in infos]
    target = _target(params, pparams)
    scale, spec, reachable = _fit_budget(builder, base, target)
    info = infer(spec)
    if target and not reachable:
        side = "smallest" if info.params > target else "largest"
        builder.notes.append(f"the parameter target {target:,} is out of reach: layers without a "
                             "scalable width (such as Linear) alone exceed it, so the parents' "
                             f"widths are kept ({info.params:,} parameters)" if side == "smallest" else
                             f"the parameter target {target:,} is out of reach: widths scaled "
                             f"by 256 give {info.params:,}")
    labels = []
    for n in sorted(letters, key=lambda x: natural_key(letters[x])):
        d = bwd.nodes[n]
        fwd_labels = sorted({graphs[m[0]].nodes[m]["label"] for m in d["members"]},
                            key=lambda lab: lab[1])
        labels.append({"letter": letters[n], "structure": d["structure"],
                       "forward": fwd_labels, "backward": (d["structure"], d["bwd"]),
                       "members": sorted(par.graph["member_name"][m] for m in d["members"])})
    report = MergeReport(
        parents=[{"name": n, "params": pp, "macs": i.macs,
                  "nodes": sum(1 for _, d in g.nodes(data=True) if d["kind"] == "compute")}
                 for n, pp, i, g in zip(names, pparams, infos, graphs)],
        merged_params=info.params, merged_macs=info.macs, merged_nodes=len(letters),
        rule=distance, target_mode=str(params), target_params=target, width_scale=scale,
        labels=labels, skipped=skipped_f + skipped_b, notes=builder.notes)
    return MergeResult(spec, parents, graphs, par, fwd, bwd, letters, report)


def _default_head_kernel(parents: list[Netspec]) -> int:
    ks = []
    for p in parents:
        for o in p.outputs:
            k = getattr(p.layer(o.from_), "kernel_size", None)
            if k is not None:
                ks.append(k if isinstance(k, int) else min(k))
    return min(ks) if ks else 1


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 and names.count(n) == 1 else f"{n}#{seen[n]}")
    return out


def _check_compatible(specs: list[Netspec]) -> None:
    first = specs[0]
    ins = [(i.name, i.shape) for i in first.inputs]
    outs0 = {o.name: infer(first).shapes[o.from_] for o in first.outputs}
    for s in specs:
        for lay in s.layers:
            if lay.op_name == "Add":
                raise MergeError(f"network '{s.name}' uses an Add layer ('{lay.name}') at top level;"
                                 " SPDNN merging joins branches by concatenation only",
                                 hint="replace the Add by a Concat, or merge without this network")
        mine = [(i.name, i.shape) for i in s.inputs]
        if mine != ins:
            raise MergeError(f"networks '{first.name}' and '{s.name}' have different inputs: "
                             f"{ins} vs {mine}", hint="parents must share input names and shapes")
        outs = {o.name: infer(s).shapes[o.from_] for o in s.outputs}
        if outs != outs0:
            raise MergeError(f"networks '{first.name}' and '{s.name}' have different outputs: "
                             f"{outs0} vs {outs}", hint="parents must share output names and shapes")


def _assign_letters(g: nx.DiGraph) -> dict:
    def key(n):
        d = g.nodes[n]
        if d["kind"] == "input":
            return (0, 0, (), d["name"])
        if d["kind"] == "output":
            return (2, 0, (), d["name"])
        return (1, d.get("fwd", 0), natural_key(d["structure"]), min(g.graph["order"][m] for m in d["members"]))
    order = list(nx.lexicographical_topological_sort(g, key=key))
    compute = [n for n in order if g.nodes[n]["kind"] == "compute"]
    return {n: _letters(i) for i, n in enumerate(compute)}


def _target(params: ParamsTarget, pparams: list[int]) -> int | None:
    if params == "keep":
        return None
    if params == "like-each":
        return round(sum(pparams) / len(pparams))
    if params == "largest":
        return max(pparams)
    if params == "sum":
        return sum(pparams)
    if isinstance(params, int) and params > 0:
        return params
    raise MergeError(f"unknown parameter target {params!r}",
                     hint="use like-each, largest, sum, keep or a positive number")


def parse_params(text: str) -> ParamsTarget:
    """``"like-each"``, ``"largest"``, ``"sum"``, ``"keep"``, ``"250000"``, ``"250k"``, ``"1.1M"``.

    Raises:
        MergeError: anything else.
    """
    t = text.strip().lower()
    if t in ("like-each", "largest", "sum", "keep"):
        return t  # type: ignore[return-value]
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([km]?)", t)
    if not m:
        raise MergeError(f"bad --params value {text!r}",
                         hint="use like-each, largest, sum, keep, or a number such as 250k or 1.1M")
    n = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2)]
    if n < 1:
        raise MergeError(f"bad --params value {text!r}", hint="the target must be positive")
    return int(round(n))


def _scaled(base: dict, s: float) -> dict:
    return {n: max(1, int(round(w * s))) for n, w in base.items()}


def _fit_budget(builder: _Rebuild, base: dict, target: int | None
                ) -> tuple[float, Netspec, bool]:
    """Choose widths whose network's parameter count is closest to ``target``.

    A width multiplier is found by bisection (parameters grow with it), then single layers are
    widened or narrowed by one channel while that brings the count closer (rounding to whole
    channels leaves gaps of several percent on narrow networks otherwise).

    Returns:
        ``(multiplier, netspec, reachable)``; ``reachable`` is False when even the narrowest
        (or widest) network misses the target.
    """
    if target is None:
        return 1.0, builder.build(base), True

    def count(widths: dict) -> float:
        try:
            return infer(builder.build(widths)).params
        except ShapeError:  # too narrow for a fixed-size part (a channel slice, a block)
            return math.inf

    lo, hi = 1 / 256, 256.0
    narrowest = count(_scaled(base, lo))
    if narrowest == math.inf and count(base) < math.inf:
        # the narrowest network that still fits together bounds the search from below
        bad, good, narrowest = lo, 1.0, count(base)
        while good / bad > 1.0005:
            mid = math.sqrt(bad * good)
            n = count(_scaled(base, mid))
            if n < math.inf:
                good, narrowest = mid, n
            else:
                bad = mid
        lo = good
    if narrowest >= target:
        # even 1-channel layers miss the target (fixed-size layers dominate): a degenerate
        # network helps nobody, so keep the parents' widths and say so in the report
        return 1.0, builder.build(base), False
    if count(_scaled(base, hi)) <= target:
        return hi, builder.build(_scaled(base, hi)), False
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if count(_scaled(base, mid)) < target:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.0005:
            break
    scale = min((lo, hi), key=lambda sc: abs(count(_scaled(base, sc)) - target))
    widths = _scaled(base, scale)
    best = count(widths)
    for _ in range(4 * len(widths)):
        step = -1 if best > target else 1
        trials = []
        for n in sorted(widths, key=str):
            if widths[n] + step < 1:
                continue
            w = dict(widths)
            w[n] += step
            trials.append((abs(count(w) - target), str(n), w))
        if not trials:
            break
        err, _, w = min(trials, key=lambda t: (t[0], t[1]))
        if err >= abs(best - target):
            break
        widths, best = w, count(w)
    return scale, builder.build(widths), True


# --------------------------------------------------------------------------------------------
# graph -> netspec
# --------------------------------------------------------------------------------------------
class _Rebuild:
    """Turns the contracted graph back into a netspec (thesis ch. 3.1 step 5; A.2.1)."""

    def __init__(self, parents: list[Netspec], names: list[str], g: nx.DiGraph, letters: dict,
                 head_kernel: int, name: str) -> None:
        self.parents, self.names, self.g, self.letters = parents, names, g, letters
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

    def _rep(self, n) -> Op:
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
        return self.parents[tag].layer(layer)

    def _hidden_widths(self, members) -> list[int]:
        out = []
        for tag, layer in members:
            spec = self.parents[tag]
            for lay in spec.layers:
                w = lay.out_channels_of()
                if lay.name != layer and w is not None and lay.kind == "compute":
                    out.append(w)
        return out[-1:] if out else []

    def build(self, widths: dict) -> Netspec:
        """The netspec with the given width for every scalable node."""
        g, letters = self.g, self.letters
        layers: list[dict] = []
        ends: dict = {}  # node -> layer name producing its output
        for n in self.topo:
            d = g.nodes[n]
            if d["kind"] == "input":
                ends[n] = d["name"]
                continue
            if d["kind"] == "output":
                continue
            srcs = [e for u in self._preds(n) for e in self._edge(u, n, ends, layers)]
            letter = letters[n]
            op = self._rep(n)
            roles = op.input_roles()
            if roles is None:
                ins = [self._join(letter, [(nm, f) for nm, f, _ in srcs], layers)]
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
                op = op.with_width(widths[n])
            elif n in self.fixed_width and self.fixed_width[n] is not None:
                op = op.with_width(self.fixed_width[n])
            data = op.model_dump(mode="json", exclude_defaults=True)
            data.update(upd)
            if n in self.freed:  # only the style fields the op has (not a block's or SPADE's)
                data.update({k: v for k, v in self._hidden_style(d["members"]).items()
                             if k in type(op).model_fields})
            layers.append(data)
            ends[n] = letter
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
        blocks = merge_blocks(self.parents)  # block instances need their definitions
        if blocks:
            data["blocks"] = {k: b.to_data() for k, b in blocks.items()}
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
        for i, op in enumerate(path.ops):
            if op.kind == "junction":
                continue
            nm = f"{tag}_{op.op_name.lower()}{i}"
            data = op.model_dump(mode="json", exclude_defaults=True)
            data.update({"name": nm, "inputs": [src]})
            data.pop("merged_from", None)
            layers.append(data)
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
            if ratio > 1:
                pool = self._pool_type(v, paths)
                nm = f"{tag}_{pool.lower()}"
                layers.append({"name": nm, "op": pool, "kernel_size": int(ratio), "inputs": [src]})
            else:
                nm = f"{tag}_unpool"
                layers.append({"name": nm, "op": "Unpool", "scale_factor": int(1 / ratio),
                               "inputs": [src]})
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

    def _pool_type(self, v, paths: list[EdgePath]) -> str:
        """Recall the pooling quality from the original networks (A.2.1)."""
        for p in paths:
            for op in p.ops:
                if op.op_name in ("MaxPool2d", "AvgPool2d"):
                    return op.op_name
        members = self.g.nodes[v].get("members", [])
        for tag in sorted({m[0] for m in members}) + list(range(len(self.parents))):
            for lay in self.parents[tag].layers:
                if lay.op_name in ("MaxPool2d", "AvgPool2d"):
                    return lay.op_name
        return "MaxPool2d"

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
                    layers.append({"name": f"{name}_flat", "op": "Flatten", "inputs": [name]})
                    name = f"{name}_flat"
                names.append(name)
        nm = f"{letter}_cat"
        layers.append({"name": nm, "op": "Concat", "inputs": names})
        return nm

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
        layers.append({"name": cat, "op": "Concat", "inputs": srcs})
        nm = f"head_{oname}"
        if len(shape) == 3:
            head = {"name": nm, "op": "Conv2d", "kernel_size": self.head_kernel,
                    "out_channels": shape[0], "padding": "same", "inputs": [cat]}
        else:
            head = {"name": nm, "op": "Linear", "out_features": shape[0], "inputs": [cat]}
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


def check_embedding(result: MergeResult) -> list[str]:
    """Check that every parent embeds in the merged graph (MISSION step 7).

    Every parent node must map to a merged node with the same structure, and every parent edge
    to a path in the merged graph. Returns a list of problems (empty when all parents embed).
    """
    g = result.backward
    where = {}
    for n, d in g.nodes(data=True):
        for m in d.get("members", []):
            where[m] = n
        if d["kind"] in ("input", "output"):
            where[n] = n
    problems = []
    for pg in result.parent_graphs:
        for n, d in pg.nodes(data=True):
            if n not in where:
                problems.append(f"{n} is missing")
            elif d["kind"] == "compute" and g.nodes[where[n]]["structure"] != d["structure"]:
                problems.append(f"{n} maps to a node of structure {g.nodes[where[n]]['structure']}")
        for u, v in pg.edges():
            if u in where and v in where and not nx.has_path(g, where[u], where[v]):
                problems.append(f"edge {u} -> {v} has no path")
    return problems


__all__ = ["MergeReport", "MergeResult", "check_embedding", "merge", "parallel_graph",
           "parent_graph", "parse_params"]
