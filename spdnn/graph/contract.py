"""Graph contraction (thesis ch. 3.1: "merge the nodes with the same label; remove the parallel
edges"; depth paper A.2.1).

Compute nodes carry ``members`` (the parent layers they stand for) and ``parents`` (the set of
parent indices among them). Two nodes with the same label are merged unless

* they share a parent: SPDNN merges layers *across* networks; merging two layers of one parent
  would change that parent (and break ``merge(a) == a``), or
* the merge would close a cycle (one node reaches the other): the result must stay a DAG.

Each refusal is returned as a :class:`SkippedMerge` for the merge report. Edges are kept as sets
(parallel edges collapse into one edge whose ``paths`` list every parent edge it stands for).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import networkx as nx


@dataclass(frozen=True)
class SkippedMerge:
    """Two same-label nodes that were not merged, and why."""

    stage: str
    label: tuple[str, int]
    kept: tuple[str, ...]
    other: tuple[str, ...]
    reason: str


def natural_key(text: str) -> tuple:
    """Sort key that orders ``3C`` before ``11C`` (numbers compared as numbers)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.findall(r"\d+|\D+", text))


def label_key(label: tuple[str, int]) -> tuple:
    return (label[1], natural_key(label[0]))


def node_key(g: nx.DiGraph, n) -> tuple:
    """Canonical order of nodes: by their first member's (parent index, layer position)."""
    d = g.nodes[n]
    return min((g.graph["order"][m]) for m in d["members"])


def member_names(g: nx.DiGraph, n) -> tuple[str, ...]:
    return tuple(g.graph["member_name"][m] for m in g.nodes[n]["members"])


def contract(g: nx.DiGraph, stage: str, check_cycles: bool = True
             ) -> tuple[nx.DiGraph, list[SkippedMerge]]:
    """Merge compute nodes with equal ``label`` attributes.

    Args:
        g: a DAG whose compute nodes have ``label``, ``members`` and ``parents``; ``g.graph``
            holds ``order`` (member -> sort key) and ``member_name`` (member -> display name).
        stage: ``"forward"`` or ``"backward"``, recorded in skipped merges.
        check_cycles: test reachability before each merge. Safe to turn off only when labels
            come from longest-path distances, which make every contraction acyclic.

    Returns:
        The contracted graph (a new graph; ``g`` is untouched) and the skipped merges.
    """
    h = nx.DiGraph(**g.graph)
    for n, d in g.nodes(data=True):
        h.add_node(n, **{**d, "members": list(d.get("members", [])),
                         "parents": frozenset(d.get("parents", ()))})
    for u, v, d in g.edges(data=True):
        h.add_edge(u, v, paths=list(d["paths"]))
    groups: dict[tuple, list] = defaultdict(list)
    for n, d in h.nodes(data=True):
        if d["kind"] == "compute":
            groups[d["label"]].append(n)
    skipped: list[SkippedMerge] = []
    for label in sorted(groups, key=label_key):
        clusters: list = []
        for n in sorted(groups[label], key=lambda x: node_key(h, x)):
            placed = False
            reasons = []
            for rep in clusters:
                shared = h.nodes[rep]["parents"] & h.nodes[n]["parents"]
                if shared:
                    reasons.append((rep, "both hold layers of the same parent network"))
                    continue
                if check_cycles and (nx.has_path(h, rep, n) or nx.has_path(h, n, rep)):
                    reasons.append((rep, "one reaches the other, so merging them would close a cycle"))
                    continue
                _merge_into(h, rep, n)
                placed = True
                break
            if not placed:
                clusters.append(n)
                for rep, why in reasons:
                    skipped.append(SkippedMerge(stage, label, member_names(h, rep),
                                                member_names(h, n), why))
    return h, skipped


def _merge_into(h: nx.DiGraph, keep, drop) -> None:
    kd, dd = h.nodes[keep], h.nodes[drop]
    kd["members"].extend(dd["members"])  # lists are this graph's own copies
    kd["parents"] = kd["parents"] | dd["parents"]
    for p, _, d in list(h.in_edges(drop, data=True)):
        _union_edge(h, p, keep, d["paths"])
    for _, s, d in list(h.out_edges(drop, data=True)):
        _union_edge(h, keep, s, d["paths"])
    h.remove_node(drop)


def _union_edge(h: nx.DiGraph, u, v, paths: list) -> None:
    if u == v:  # pragma: no cover - prevented by the cycle/parent checks
        raise AssertionError("contraction produced a self-loop")
    if h.has_edge(u, v):
        h.edges[u, v]["paths"].extend(paths)  # parallel edges collapse into one
    else:
        h.add_edge(u, v, paths=list(paths))
