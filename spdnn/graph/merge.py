"""SPDNN merge: several netspecs -> one semi-parallel netspec (thesis ch. 3.1; depth paper A.2).

This module orchestrates the stages and puts the parents in canonical order; the graph ->
netspec rebuild is :mod:`spdnn.graph.rebuild`, the channel budget :mod:`spdnn.graph.budget`.
Each parent is shape-inferred once (:class:`Parent`) and that result is passed along.

Steps (each a plain function over networkx graphs):

1. :func:`~spdnn.graph.convert.to_graph` turns each parent into its graph; forward labels.
2. The graphs are put in parallel with shared input and output nodes (:func:`parallel_graph`).
3. Forward contraction: merge equal ``(structure, distance from input)`` labels.
4. Backward labelling on the contracted graph, ``(structure, distance to output)``; contract again.
5. :class:`~spdnn.graph.rebuild.Rebuild` turns the graph back into a netspec: a node with several predecessors
   concatenates them on the channel axis; every edge recalls the parent's own non-compute layers
   (pooling quality included, A.2.1) and adds the resampling the sticky factors still imply
   (pool where the factor grows, value-repeating unpool where it shrinks); when several layers
   reach an output they feed one shared head (concat -> 1x1 conv or linear).
6. The channel budget (:func:`~spdnn.graph.budget.fit_budget`) chooses one width multiplier
   so the parameter count meets a target (App. A: "the number of channels ... such that the
   network had almost the same number of parameters as each of its parent networks") within a
   MAC bound and a floor; its objective and guarantees are stated in :mod:`spdnn.graph.budget`.
   Its variables (:func:`budget_widths`) are the merged nodes, the groups of nodes tied to one
   width (identity-residual blocks and their input) and the dense layers' fan-ins.

Parents are put in a canonical order first (by a Weisfeiler-Lehman hash of their labelled
graphs), so the result does not depend on the order the user lists them in.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field

import networkx as nx

from spdnn.errors import MergeError, ShapeError
from spdnn.graph.budget import (
    MIN_WIDTH,
    MacsTarget,
    ParamsTarget,
    Width,
    check_width_option,
    fit_budget,
    parse_macs,
    parse_params,
    target_macs,
    target_params,
)
from spdnn.graph.contract import SkippedMerge, contract, natural_key
from spdnn.graph.convert import to_graph
from spdnn.graph.label import (
    DEFAULT_RULE,
    DistanceRule,
    label_backward,
    label_forward,
    needs_cycle_check,
)
from spdnn.graph.rebuild import Rebuild
from spdnn.shapes import NetInfo, infer
from spdnn.spec import spec_hash
from spdnn.spec.models import Netspec


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
    macs_target: int | None = None
    binding: str = "params"
    """What decided the width multiplier (:attr:`spdnn.graph.budget.BudgetFit.binding`)."""
    widths: list[dict] = field(default_factory=list)
    """One row per budget width: ``{"node", "members": [(parent layer, width)], "base",
    "width"}`` (``node`` is a letter, several letters for a tied group, or ``"A>F fan-in"``)."""
    warnings: list[str] = field(default_factory=list)
    min_width: int = MIN_WIDTH
    width_multiple: int = 1

    @property
    def max_parent_macs(self) -> int:
        return max(p["macs"] for p in self.parents)

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
    """Everything a merge produced: the netspec, the intermediate graphs and the report.

    ``parents``, ``parent_infos`` and ``parent_graphs`` are in merge (canonical) order; ``info``
    is the merged netspec's shape inference."""

    spec: Netspec
    parents: list[Netspec]
    parent_graphs: list[nx.DiGraph]
    parallel: nx.DiGraph
    forward: nx.DiGraph
    backward: nx.DiGraph
    letters: dict
    report: MergeReport
    parent_infos: list[NetInfo] = field(default_factory=list)
    info: NetInfo | None = None
    rebuild: Rebuild | None = None
    """The graph -> netspec builder, for other widths (the weight-carrying merge)."""


@dataclass(frozen=True)
class Parent:
    """One parent network of a merge with its shape inference, computed once and passed to
    every stage that needs it (graph, canonical order, report, budget target)."""

    spec: Netspec
    info: NetInfo

    def graph(self, tag: int, rule: DistanceRule = DEFAULT_RULE) -> nx.DiGraph:
        """The parent's forward-labelled SPDNN graph with node keys ``(tag, layer)``."""
        return label_forward(to_graph(self.spec, tag, self.info), rule)


# --------------------------------------------------------------------------------------------
# graphs
# --------------------------------------------------------------------------------------------
def parent_graph(spec: Netspec, tag: int = 0, rule: DistanceRule = DEFAULT_RULE,
                 info: NetInfo | None = None) -> nx.DiGraph:
    """The forward-labelled SPDNN graph of one network (thesis Fig. 3.2, right); ``info`` is
    its shape inference when already known.

    Raises:
        ShapeError: from shape inference.
    """
    return label_forward(to_graph(spec, tag, info), rule)


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


def _canonical_order(parents: list[Parent], rule: DistanceRule) -> list[int]:
    """Parent indices sorted by a Weisfeiler-Lehman hash of their labelled graphs and their
    names (content hash on ties), so a merge does not depend on the order of its inputs."""
    specs = [p.spec for p in parents]
    pre = []
    for p, s in zip(parents, specs):
        g = p.graph(0, rule)
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
def merge_files(paths: list, params: ParamsTarget | str = "like-each",
                distance: DistanceRule = DEFAULT_RULE, head_kernel: int | None = None,
                name: str | None = None, macs: MacsTarget = None, min_width: int = MIN_WIDTH,
                width_multiple: int = 1) -> MergeResult:
    """Load netspec files and merge them: the one "load these files and merge them" of the
    command line, the recipes, the demo, the benchmarks and the committed generators. Each file
    is loaded and shape-inferred once (errors name the file and line); ``params`` may also be
    the text of ``--params`` (``"250k"``, see :func:`~spdnn.graph.budget.parse_params`).

    Raises:
        SpecError, MergeError: as :func:`spdnn.spec.load_checked` and :func:`merge`.
    """
    from spdnn.spec import load_inferred

    loaded = [load_inferred(p) for p in paths]
    if isinstance(params, str):
        params = parse_params(params)
    if isinstance(macs, str):
        macs = parse_macs(macs)
    return merge([s for s, _ in loaded], params=params, distance=distance,
                 head_kernel=head_kernel, name=name, infos=[i for _, i in loaded],
                 macs=macs, min_width=min_width, width_multiple=width_multiple,
                 files=[str(p) for p in paths])


def merge(specs: list[Netspec], params: ParamsTarget = "like-each",
          distance: DistanceRule = DEFAULT_RULE, head_kernel: int | None = None,
          name: str | None = None, infos: list[NetInfo] | None = None,
          files: list[str] | None = None, macs: MacsTarget = None,
          min_width: int = MIN_WIDTH, width_multiple: int = 1) -> MergeResult:
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
        infos: the parents' shape inference when already known (one per spec).
        files: the parents' file names, for error messages.
        macs: MAC bound per sample: ``"like-each"``, ``"largest"``, ``"sum"``, ``"none"`` or a
            number; default ``largest`` with ``params="like-each"``, else none
            (:func:`~spdnn.graph.budget.target_macs`).
        min_width: no budget width below ``min(parent width, min_width)`` channels.
        width_multiple: every budget width a multiple of this many channels.

    The channel budget's objective and guarantees: :mod:`spdnn.graph.budget`.

    Returns:
        A :class:`MergeResult`.

    Raises:
        MergeError: no parents, mismatched inputs/outputs, or a top-level layer whose op is not
            :attr:`~spdnn.ops.base.Op.mergeable` (``Add``).
        ShapeError: a parent does not infer.
        MergeError: the merged network does not infer (one line naming the parents' files,
            the merged layer and the parent layers it stands for); a ``min_width`` or
            ``width_multiple`` out of range; a block whose output follows its input width but
            that declares no ``widths`` when the budget must scale it.
        SpecError: the rebuilt network does not validate (should not happen; reported).
    """
    if not specs:
        raise MergeError("no networks to merge", hint="give at least one netspec")
    pool = _check_compatible(specs, infos)
    order = _canonical_order(pool, distance)
    chosen = [pool[i] for i in order]
    parents = [p.spec for p in chosen]
    names = _unique_names([p.name for p in parents])
    graphs = [p.graph(tag, distance) for tag, p in enumerate(chosen)]
    par = parallel_graph(graphs, names)
    label_forward(par, distance)
    check = needs_cycle_check(distance)
    fwd, skipped_f = contract(par, "forward", check_cycles=check)
    relabelled = label_backward(fwd.copy(), distance)  # keep `fwd` with its forward labels
    bwd, skipped_b = contract(relabelled, "backward", check_cycles=check)
    if not nx.is_directed_acyclic_graph(bwd):  # pragma: no cover - guaranteed by contract()
        raise MergeError("internal error: the contracted graph has a cycle")
    letters = _assign_letters(bwd)
    merged_name = name or "spdnn_merge_of_" + "_".join(sorted(re.sub(r"\W+", "_", n) for n in names))
    if len(merged_name) > 200:  # the netspec name limit
        digest = hashlib.sha256(merged_name.encode()).hexdigest()[:8]
        merged_name = f"spdnn_merge_of_{len(names)}_networks_{digest}"
    if head_kernel is None:
        head_kernel = _default_head_kernel(parents)
    infos = [p.info for p in chosen]
    builder = Rebuild(parents, names, bwd, letters, head_kernel, merged_name, infos)
    check_width_option(min_width, "--min-width")
    check_width_option(width_multiple, "--width-multiple")
    pparams = [i.params for i in infos]
    target = target_params(params, pparams)
    mac_target = target_macs(macs, [i.macs for i in infos], params)
    variables = budget_widths(builder)
    if target is not None or mac_target is not None:
        undeclared = builder.undeclared()
        if undeclared:
            raise MergeError(
                f"block {', '.join(undeclared)} adds its input to its output but declares no "
                "'widths:', so the channel budget cannot scale it",
                file=f"<merge of {', '.join(files or names)}>",
                hint="add 'widths: [<its width parameter>]' to the block definition, or merge "
                     "with --params keep")
    try:
        fit = fit_budget(builder.build, variables, target, macs=mac_target, min_width=min_width,
                         width_multiple=width_multiple,
                         widen=target is not None and target >= sum(pparams))
    except ShapeError as exc:
        raise _located(exc, bwd, letters, names, files) from None
    scale, spec, info, reachable = fit.scale, fit.spec, fit.info, fit.reachable
    builder.notes.extend(builder.projection_notes(spec))
    warnings_: list[str] = []
    if fit.binding == "floor":
        held = ", ".join(f"{lay} {p:,}" for lay, p in fit.fixed)
        warnings_.append(f"the parameter target {target:,} is out of reach: with every width at "
                         f"its floor (min(parent width, {min_width})) the merge has "
                         f"{info.params:,} parameters; the largest layers then are {held}")
    elif fit.binding == "macs":
        warnings_.append(f"the MAC bound {mac_target:,} decides the widths: the merge has "
                         f"{info.params:,} parameters"
                         + (f" for a target of {target:,}" if target else "")
                         + " (--macs none lifts the bound)")
    elif fit.binding == "cap":
        warnings_.append(f"the parameter target {target:,} is above the merge at its parents' "
                         f"widths ({info.params:,}): below --params sum no layer is widened "
                         "beyond its widest parent")
    elif fit.binding == "widest":
        warnings_.append(f"the parameter target {target:,} is out of reach: widths scaled by "
                         f"{scale:g} give {info.params:,}")
    if info.macs > max(i.macs for i in infos):
        warnings_.append(f"the merged network costs {info.macs:,} MACs per sample, more than its "
                         f"most expensive parent ({max(i.macs for i in infos):,}); --macs largest "
                         "bounds it")
    if mac_target is not None and info.macs > mac_target and fit.binding != "macs":
        warnings_.append(f"the MAC bound {mac_target:,} is out of reach: the narrowest merge "
                         f"costs {info.macs:,} MACs")
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
        labels=labels, skipped=skipped_f + skipped_b, notes=builder.notes,
        macs_target=mac_target, binding=fit.binding,
        widths=width_rows(builder, variables, fit.widths, par.graph["member_name"]),
        warnings=warnings_, min_width=min_width, width_multiple=width_multiple)
    return MergeResult(spec, parents, graphs, par, fwd, bwd, letters, report, infos, info, builder)


def budget_widths(builder: Rebuild) -> dict[str, Width]:
    """The budget variables of a rebuilt merge: one per scalable merged node (the letter),
    one per group of tied nodes (:meth:`Rebuild.ties`, named by its letters joined with
    ``=``), one per dense layer's fan-in (:meth:`Rebuild.fan_ins`, ``"A>F fan-in"``). Nodes
    whose width is fixed (a single last layer keeps its output width) are left out."""
    letters = builder.letters
    base = {n: w for n, w in builder.widths().items() if n not in builder.fixed_width}
    out: dict[str, Width] = {}
    tied: set = set()
    for group in builder.ties():
        if any(n not in base for n in group):
            tied |= group
            continue
        nodes = sorted(group, key=lambda n: natural_key(letters[n]))
        out["=".join(letters[n] for n in nodes)] = Width(max(base[n] for n in nodes),
                                                          tuple(nodes))
        tied |= group
    for n in sorted(base, key=lambda n: natural_key(letters[n])):
        if n not in tied:
            out[letters[n]] = Width(base[n], (n,))
    for (u, v), w in sorted(builder.fan_ins().items(),
                            key=lambda kv: (natural_key(letters[kv[0][0]]),
                                            natural_key(letters[kv[0][1]]))):
        if u in base:
            out[f"{letters[u]}>{letters[v]} fan-in"] = Width(w, (("fan-in", u, v),), min_width=1,
                                                              power=2, kept=base[u])
    return out


def width_rows(builder: Rebuild, variables: dict[str, Width], chosen: dict,
               member_name: dict) -> list[dict]:
    """The merge report's width table: per budget width, the parent layers it stands for with
    their widths, its base (the widest) and the chosen width."""
    rows = []
    for name, var in variables.items():
        members = []
        for key in var.keys:
            if isinstance(key, tuple) and key and key[0] == "fan-in":
                _, u, v = key
                for p in builder.g.edges[u, v]["paths"]:
                    m = (p.parent, p.src)
                    if m in builder.g.nodes[u]["members"]:
                        members.append((member_name[m] + " (fan-in)",
                                        builder._member_op(m).out_channels_of()))
                continue
            for m in builder.g.nodes[key]["members"]:
                members.append((member_name[m], builder._member_op(m).out_channels_of()))
        rows.append({"node": name, "members": sorted(set(members)), "base": var.base,
                     "width": int(chosen.get(name, var.base))})
    return rows


def _located(exc: ShapeError, g: nx.DiGraph, letters: dict, names: list[str],
             files: list[str] | None) -> MergeError:
    """A shape failure of the merged network as one line naming the parents' files and the
    merged layer with the parent layers it stands for."""
    where = ", ".join(files) if files else ", ".join(names)
    field_ = exc.field or ""
    by_letter = {v: k for k, v in letters.items()}
    m = re.search(r"\(([A-Z]+)\)", field_)
    layer = m.group(1) if m else None
    members = ""
    if layer in by_letter:
        members = " (merged from " + ", ".join(
            sorted(g.graph["member_name"][x] for x in g.nodes[by_letter[layer]]["members"])) + ")"
    what = f"merged layer {layer}{members}" if layer else (field_ or "the merged network")
    return MergeError(f"the merge does not fit together at {what}: {exc.message}",
                      file=f"<merge of {where}>",
                      hint="merge without one of these parents, or report it as a merge bug")


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


def _check_compatible(specs: list[Netspec], known: list[NetInfo] | None = None) -> list[Parent]:
    """Check that the parents can merge and infer each once (in the order the checks need it).

    Raises:
        MergeError: a top-level op that is not mergeable, or different inputs or outputs.
        ShapeError: a parent does not infer.
    """
    infos: dict[int, NetInfo] = dict(enumerate(known)) if known else {}

    def info(i: int) -> NetInfo:
        if i not in infos:
            infos[i] = infer(specs[i])
        return infos[i]

    first = specs[0]
    ins = [(i.name, i.shape) for i in first.inputs]
    outs0 = {o.name: info(0).shapes[o.from_] for o in first.outputs}
    for k, s in enumerate(specs):
        for lay in s.layers:
            if not lay.mergeable:
                raise MergeError(f"network '{s.name}' uses an {lay.op_name} layer ('{lay.name}') "
                                 "at top level; SPDNN merging joins branches by concatenation only",
                                 hint=f"replace the {lay.op_name} by a Concat, or merge without "
                                      "this network")
        mine = [(i.name, i.shape) for i in s.inputs]
        if mine != ins:
            raise MergeError(f"networks '{first.name}' and '{s.name}' have different inputs: "
                             f"{ins} vs {mine}", hint="parents must share input names and shapes")
        outs = {o.name: info(k).shapes[o.from_] for o in s.outputs}
        if outs != outs0:
            raise MergeError(f"networks '{first.name}' and '{s.name}' have different outputs: "
                             f"{outs0} vs {outs}", hint="parents must share output names and shapes")
    return [Parent(s, info(k)) for k, s in enumerate(specs)]


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


def check_embedding(result: MergeResult) -> list[str]:
    """Check that every parent embeds in the merged graph: the merged network holds each
    parent as a sub-network (thesis ch. 3.1: the SPDNN is the parents' graphs contracted).

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


__all__ = ["MergeReport", "MergeResult", "Parent", "check_embedding", "merge", "parallel_graph",
           "parent_graph", "parse_params"]  # parse_params: kept here for old imports (budget)
