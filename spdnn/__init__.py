"""spdnn: a network-architecture compiler built around Semi Parallel Deep Neural Networks.

Pipeline (one module per stage): :mod:`spdnn.spec` (netspec YAML -> pydantic IR) ->
:mod:`spdnn.shapes` (shapes, params, MACs) -> :mod:`spdnn.graph` (labelling, forward/backward
contraction, merge, back to a netspec) -> :mod:`spdnn.codegen` (``nn.Module`` in process or as
a standalone file) -> :mod:`spdnn.render` (graphviz diagrams) -> :mod:`spdnn.cli`.
"""

__version__ = "0.1.0"


def from_module(module, example_input, weights: bool = True, name: str | None = None):
    """Import a ``torch.nn.Module`` as a netspec with its weights (torch.fx trace); see
    :func:`spdnn.importers.from_module` (imported on first use, so ``import spdnn`` stays
    light)."""
    from spdnn.importers import from_module as _from_module

    return _from_module(module, example_input, weights=weights, name=name)
