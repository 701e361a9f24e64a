"""Graph stage: SPDNN labelling, forward/backward contraction, merge, and back to a netspec.

Plain functions over ``networkx.DiGraph`` (networkx style): :func:`to_graph`,
:func:`label_forward`, :func:`label_backward`, :func:`contract`, :func:`merge`,
:func:`check_embedding`. Source: thesis ch. 3.1 and App. B (depth paper) A.2.
"""

from spdnn.graph.contract import SkippedMerge, contract
from spdnn.graph.convert import EdgePath, factor_suffix, to_graph
from spdnn.graph.label import (
                               backward_distances,
                               format_label,
                               forward_distances,
                               label_backward,
                               label_forward,
)
from spdnn.graph.merge import (
                               MergeReport,
                               MergeResult,
                               check_embedding,
                               merge,
                               parallel_graph,
                               parent_graph,
                               parse_params,
)

__all__ = ["EdgePath", "MergeReport", "MergeResult", "SkippedMerge", "backward_distances",
           "check_embedding", "contract", "factor_suffix", "format_label", "forward_distances",
           "label_backward", "label_forward", "merge", "parallel_graph", "parent_graph",
           "parse_params", "to_graph"]
