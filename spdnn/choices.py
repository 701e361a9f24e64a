"""The choices a user makes, named once: the labelling distance rules and the channel-budget
modes of a merge, and the diagram views and formats of ``spdnn render``. Names and one-line
descriptions only (no imports), so the command line offers them without loading the stages.

Distance rule (thesis ch. 3.1 step 3; see :mod:`spdnn.graph.label`): ch. 3.1 literally says
"smallest distance from output node", but on the iris App. D parents that rule gives two nodes
of one parent the same label and merging them would close a cycle; the longest-path rule
reproduces the authors' published network (thesis App. A) and keeps every contraction acyclic.

Channel budget (thesis App. A; see :mod:`spdnn.graph.budget`).
"""

from __future__ import annotations

from typing import Literal

DistanceRule = Literal["longest", "shortest"]
"""A labelling distance rule (see :data:`DISTANCE_RULES`)."""

DISTANCE_RULES: dict[str, str] = {
    "longest": "longest path from the input (to the output); reproduces the authors' published "
               "iris network and keeps every contraction acyclic (the default)",
    "shortest": "shortest path, as thesis ch. 3.1 literally says; a contraction may be skipped "
                "where it would close a cycle",
}
"""Distance rule -> one-line description (the choices of ``spdnn merge --distance``)."""

DEFAULT_RULE: DistanceRule = "longest"
"""The default distance rule."""

ParamsTarget = Literal["like-each", "largest", "sum", "keep"] | int
"""A channel budget: a mode (``like-each``, ``largest``, ``sum``, ``keep``) or a parameter count."""

BUDGET_MODES: dict[str, str] = {
    "like-each": "the mean of the parents' parameter counts (the thesis's choice, App. A)",
    "largest": "the largest parent's parameter count",
    "sum": "the parents' parameter counts together",
    "keep": "no scaling: every merged layer keeps its widest parent width",
}
"""Budget mode -> one-line description (a positive integer is a target count too)."""

VIEWS: dict[str, str] = {
    "netspec": "every layer of the network (pooling, concat, ... included) with op, kernel, "
               "channels, output shape and parameters",
    "labels": "the SPDNN graph of the network: compute nodes with their (structure, distance "
              "from input) label, pooling/unpooling on the edges (thesis Fig. 3.2)",
    "parallel": "the parents in parallel sharing one input and one output node, forward "
                "labels; nodes that merge share a colour (thesis Fig. 3.3 left, depth Fig. 21)",
    "forward": "the graph after the first contraction (equal forward labels merged; "
               "thesis Fig. 3.3 right)",
    "contracted": "the final contracted graph: one node per merged layer with its letter, "
                  "(structure, distance to output) and number of parent layers (depth Fig. 22)",
    "side-by-side": "the parents (compact) next to the merged graph",
}
"""View name -> one-line description (the ``--view`` choices; drawn by :func:`spdnn.render.build_view`)."""

FORMATS: dict[str, str | None] = {".svg": "svg", ".png": "png", ".pdf": "pdf",
                                  ".dot": None, ".gv": None}
"""File suffix -> graphviz output format (``None``: the DOT source itself)."""
