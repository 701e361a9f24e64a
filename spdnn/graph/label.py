"""SPDNN labelling (thesis ch. 3.1 step 3 and "labelling from output to input").

A label is ``(structure, distance)``. Forward: distance from the input, counted in compute
nodes (the first layer has distance 1). Backward: distance to the output (the last layer has
distance 1). With several inputs (outputs) the nearest one counts. Nodes with equal labels are merged by :mod:`spdnn.graph.contract`.

The distance rule is a choice (``"longest"`` or ``"shortest"`` path): ch. 3.1 literally says
"smallest distance from output node", but on the iris App. D parents that rule gives two nodes
of one parent the same label and merging them would close a cycle; the longest-path rule
reproduces the authors' published network (thesis App. A) and keeps every contraction acyclic,
because each edge strictly increases the forward (decreases the backward) distance. It is the
default. The rules are named in :mod:`spdnn.choices` (:data:`DISTANCE_RULES`).
"""

from __future__ import annotations

import networkx as nx

from spdnn.choices import DEFAULT_RULE, DISTANCE_RULES, DistanceRule  # noqa: F401


def needs_cycle_check(rule: DistanceRule) -> bool:
    """Whether contraction must test for cycles under ``rule``: not for ``longest``, whose
    labels make every contraction acyclic (each edge changes the distance strictly)."""
    return rule != "longest"


def _distances(g: nx.DiGraph, order: list, preds, rule: DistanceRule, start_kind: str) -> dict:
    """Distances from the nearest start node (input or output): the path rule (``longest``
    or ``shortest``) applies to the paths from one start node, and the nearest start node
    wins, so a generator with inputs ``z`` and ``h`` labels a layer by how far it sits from
    whichever input is closer (one input: the plain path rule)."""
    agg = max if rule == "longest" else min
    starts = [n for n in order if g.nodes[n]["kind"] == start_kind]
    best: dict = {}
    for s in starts:
        dist: dict = {s: 0}
        for n in order:
            if n in dist:
                continue
            before = [dist[p] for p in preds(n) if p in dist]
            if not before:
                continue  # unreachable from this start node
            step = 1 if g.nodes[n]["kind"] == "compute" else 0
            dist[n] = agg(before) + step
        for n, d in dist.items():  # start nodes have no predecessors: only s is 0 here
            best[n] = min(best.get(n, d), d)
    return best


def forward_distances(g: nx.DiGraph, rule: DistanceRule = DEFAULT_RULE) -> dict:
    """Distance of every node from the input(s), in compute nodes (inputs: 0).

    Raises:
        networkx.NetworkXUnfeasible: the graph has a cycle.
    """
    order = list(nx.topological_sort(g))
    return _distances(g, order, g.predecessors, rule, "input")


def backward_distances(g: nx.DiGraph, rule: DistanceRule = DEFAULT_RULE) -> dict:
    """Distance of every node to the output(s), in compute nodes (outputs: 0)."""
    order = list(reversed(list(nx.topological_sort(g))))
    return _distances(g, order, g.successors, rule, "output")


def label_forward(g: nx.DiGraph, rule: DistanceRule = DEFAULT_RULE) -> nx.DiGraph:
    """Set ``g.nodes[n]["label"] = (structure, distance from input)`` on compute nodes; returns g."""
    dist = forward_distances(g, rule)
    for n, data in g.nodes(data=True):
        if data["kind"] == "compute":
            data["fwd"] = dist.get(n, 0)
            data["label"] = (data["structure"], data["fwd"])
    return g


def label_backward(g: nx.DiGraph, rule: DistanceRule = DEFAULT_RULE) -> nx.DiGraph:
    """Set ``label = (structure, distance to output)`` on compute nodes; returns g."""
    dist = backward_distances(g, rule)
    for n, data in g.nodes(data=True):
        if data["kind"] == "compute":
            data["bwd"] = dist.get(n, 0)
            data["label"] = (data["structure"], data["bwd"])
    return g


def format_label(label: tuple[str, int]) -> str:
    """``("3C2P", 4)`` -> ``"(3C2P, 4)"``, the thesis notation."""
    return f"({label[0]}, {label[1]})"
