"""Import networks users already have: ONNX files and ``torch.nn.Module`` objects -> netspec +
the compiled module's state dict (``spdnn import``, :func:`spdnn.from_module`).

Two front ends read their graph into the same netspec terms
(:class:`~spdnn.importers.graph.Node`), and one builder (:func:`spdnn.importers.graph.build`)
fuses batch norms and activations into their layers (thesis ch. 3.1 step 1), writes the
netspec, checks every layer's shape against the source's and copies the weights into a module
compiled from the netspec:

* :func:`import_onnx` -- an ``.onnx`` file (:mod:`spdnn.importers.onnx`: onnx's checker and
  shape inference, onnxscript's constant folding; nothing in the file is executed);
* :func:`from_module` -- a module traced with ``torch.fx`` (:mod:`spdnn.importers.fx`);
* :func:`load_factory` -- ``file.py:Factory``, the module a named Python file builds (only
  that file runs).

The weights format (``--weights net.pt``): the plain ``state_dict`` of
``spdnn.codegen.build_module(netspec)`` (tensor values only, so ``torch.load(...,
weights_only=True)`` reads it), which ``load_state_dict(..., strict=True)`` accepts; see
:func:`save` and :func:`load_weights`.

Importing this package imports neither torch nor onnx; each function imports what it needs.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from spdnn.importers.graph import ImportResult, ModelImportError

__all__ = ["ImportResult", "ModelImportError", "from_module", "import_onnx", "load_factory",
           "parity", "save"]


def import_onnx(path: str | Path, weights: bool = True,
                input_shapes: dict[str, tuple[int, ...]] | None = None) -> ImportResult:
    """Import an ONNX file as a netspec (and, with ``weights``, its state dict).

    Args:
        path: the ``.onnx`` file.
        weights: also return the state dict of the compiled netspec holding the file's weights.
        input_shapes: ``input name -> (C, H, W)`` or ``(features,)`` for inputs whose axes
            (other than the batch axis) are dynamic.

    Raises:
        ModelImportError: one line naming the file and, where it is one node's fault, the
            node, its op type and the nearest supported alternative.
    """
    from spdnn.importers.graph import build
    from spdnn.importers.onnx import read_onnx

    graph = read_onnx(path, input_shapes)
    return build(graph, weights=weights, file=str(path))


def from_module(module: Any, example_input: Any, weights: bool = True,
                name: str | None = None) -> ImportResult:
    """Import a ``torch.nn.Module`` traced with ``torch.fx`` on ``example_input``.

    Args:
        module: the module (put in eval mode for the trace; its mode is restored).
        example_input: a tensor ``(N, C, H, W)`` / ``(N, F)``, or a tuple of them (one per
            ``forward`` argument); only its shape matters. Tensors on the ``meta`` device work
            with ``weights=False`` (count the parameters of a model too large to build).
        weights: also return the compiled netspec's state dict holding the module's weights.
        name: the netspec's name (default: the module's class name).

    Raises:
        ModelImportError: the module cannot be traced, or holds an op, a call or a shape the
            netspec cannot express (naming the fx node and the nearest supported op).
    """
    from spdnn.importers.fx import read_module
    from spdnn.importers.graph import build

    graph = read_module(module, example_input, name=name)
    return build(graph, weights=weights)


def load_factory(spec: str, example_shape: tuple[int, ...] | None = None):
    """``path/to/file.py:Factory`` -> ``(module, example_input)``: run that one file (as a
    module of its own, nothing else is imported from its folder unless it does so itself),
    call ``Factory()`` and return the module with an example input.

    The example input is ``Factory.example_input`` / an ``example_input`` attribute of the
    module when given, else ``example_shape`` (``(N, C, H, W)``).

    Raises:
        ModelImportError: the file does not exist, is not Python, raises while it runs, has no
            attribute ``Factory``, ``Factory()`` raises or returns no ``nn.Module``, or there is
            no example input.
    """
    from spdnn.importers.fx import load_factory as _load

    return _load(spec, example_shape)


def save(result: ImportResult, netspec_path: str | Path,
         weights_path: str | Path | None = None, header: str | None = None) -> None:
    """Write the netspec YAML (and the state dict, with ``torch.save``) atomically."""
    from spdnn.io import save_torch_atomic, write_atomic
    from spdnn.spec import dump

    write_atomic(netspec_path, dump(result.spec, header=header), what="netspec")
    if weights_path is not None:
        if result.state_dict is None:
            raise ModelImportError("no weights were imported", file=str(weights_path))
        save_torch_atomic(result.state_dict, weights_path, what="weights")


def parity(result: ImportResult, reference: Any, seed: int = 0) -> dict[str, float]:
    """Max |imported - reference| of every output, on a random input (uniform [0, 1), batch
    2) and on real photographs (scikit-image's ``camera`` and ``astronaut`` resized to the
    input, as :func:`spdnn.export.inputs.real_inputs`, for 1- or 3-channel image inputs).

    Args:
        result: an import with weights.
        reference: the source: a ``torch.nn.Module`` (run in eval mode) or an ONNX file path
            (run with onnxruntime).

    Returns:
        ``{input set name: max abs error over all outputs}``, e.g. ``{"random": 0.0,
        "camera": 1.2e-7, "astronaut": 9e-8}``.
    """
    from pathlib import Path as _P

    import numpy as np
    import torch

    from spdnn.codegen import build_module

    spec = result.spec
    module = result.module
    if module is None:
        module = build_module(spec)
        module.load_state_dict(result.state_dict, strict=True)
    module.eval()
    g = torch.Generator().manual_seed(seed)
    sets = {"random": [torch.rand(2, *i.shape, generator=g) for i in spec.inputs]}
    if len(spec.inputs) == 1:
        for name, arr in _photos(tuple(spec.inputs[0].shape)).items():
            sets[name] = [torch.from_numpy(arr)]
    session = None
    if isinstance(reference, (str, _P)):
        from spdnn.export.ort import ort_session

        session = ort_session(_P(reference), threads=1, spinning=False)
    else:
        training = reference.training
        reference.eval()
    errors = {}
    try:
        for name, xs in sets.items():
            with torch.no_grad():
                got = module(*xs)
                got = list(got.values()) if isinstance(got, dict) else [got]
                if session is not None:
                    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), xs)}
                    if xs[0].shape[0] != 1 and session.get_inputs()[0].shape[0] == 1:
                        want = [np.concatenate(o) for o in zip(*[
                            session.run(None, {k: v[b:b + 1] for k, v in feeds.items()})
                            for b in range(xs[0].shape[0])])]
                    else:
                        want = session.run(None, feeds)
                    want = [torch.from_numpy(np.asarray(w)) for w in want]
                else:
                    ref = reference(*xs)
                    want = (list(ref.values()) if isinstance(ref, dict) else
                            list(ref) if isinstance(ref, (tuple, list)) else [ref])
            errors[name] = max(float((a - b.to(a.dtype)).abs().max()) for a, b in zip(got, want))
    finally:
        if session is None:
            reference.train(training)
    return errors


@functools.lru_cache(maxsize=8)
def _photos(shape: tuple[int, ...]) -> dict[str, Any]:
    """:func:`spdnn.export.inputs.real_inputs` of ``shape``, computed once per shape (the
    anti-aliased resize of the two photographs costs about 0.3 s)."""
    from spdnn.export.inputs import real_inputs

    return real_inputs(shape)
