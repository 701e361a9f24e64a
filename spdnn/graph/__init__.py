"""Graph stage: SPDNN labelling, forward/backward contraction, merge, and back to a netspec.

Plain functions over ``networkx.DiGraph`` (networkx style): :func:`to_graph`,
:func:`label_forward`, :func:`label_backward`, :func:`contract`, :func:`merge`,
:func:`check_embedding`. Modules: :mod:`~spdnn.graph.convert` (netspec -> graph),
:mod:`~spdnn.graph.label` (labels and the distance rules), :mod:`~spdnn.graph.contract`,
:mod:`~spdnn.graph.merge` (orchestration, canonical order), :mod:`~spdnn.graph.rebuild`
(graph -> netspec), :mod:`~spdnn.graph.budget` (channel budget). Source: thesis ch. 3.1 and
App. B (depth paper) A.2.
"""

from spdnn.graph.budget import BUDGET_MODES, ParamsTarget, parse_params
from spdnn.graph.contract import SkippedMerge, contract
from spdnn.graph.convert import EdgePath, factor_suffix, to_graph
from spdnn.graph.label import (
    DEFAULT_RULE,
    DISTANCE_RULES,
    DistanceRule,
    backward_distances,
    format_label,
    forward_distances,
    label_backward,
    label_forward,
)
from spdnn.graph.merge import (
    MergeReport,
    MergeResult,
    Parent,
    check_embedding,
    merge,
    merge_files,
    parallel_graph,
    parent_graph,
)
from spdnn.graph.rebuild import Rebuild

__all__ = ["BUDGET_MODES", "DEFAULT_RULE", "DISTANCE_RULES", "DistanceRule", "EdgePath",
           "MergeReport", "MergeResult", "ParamsTarget", "Parent", "Rebuild", "SkippedMerge",
           "backward_distances", "check_embedding", "contract", "factor_suffix", "format_label",
           "forward_distances", "label_backward", "label_forward", "merge", "merge_files", "parallel_graph",
           "parent_graph", "parse_params", "to_graph"]
