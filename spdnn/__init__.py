"""spdnn: a network-architecture compiler built around Semi Parallel Deep Neural Networks.

Pipeline (one module per stage): :mod:`spdnn.spec` (netspec YAML -> pydantic IR) ->
:mod:`spdnn.shapes` (shapes, params, MACs) -> :mod:`spdnn.graph` (labelling, forward/backward
contraction, merge, back to a netspec) -> :mod:`spdnn.codegen` (``nn.Module`` in process or as
a standalone file) -> :mod:`spdnn.render` (graphviz diagrams) -> :mod:`spdnn.cli`.
"""

__version__ = "0.1.0"
