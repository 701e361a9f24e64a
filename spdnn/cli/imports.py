"""``spdnn import``: an ONNX file or a torch module -> netspec YAML (+ weights).

:func:`register` adds the command to the main typer app. The work is
:mod:`spdnn.importers`; this module parses the arguments, writes the files (atomically, never
over an input) and prints what was imported and the parity check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spdnn.cli.console import out, plural
from spdnn.errors import SpdnnError
from spdnn.io import check_outputs

__all__ = ["register"]

PARITY_ATOL = 1e-4
"""The parity check passes when max |imported - source| <= atol * max(1, max |source|) (the
tolerance of ``spdnn export``); the measured error is printed either way."""


def _shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    parts = [v.strip() for v in text.replace("x", ",").split(",")]
    vals = tuple(int(v) for v in parts) if all(v.isdigit() for v in parts) else ()
    if not vals or len(vals) not in (1, 3) or any(v < 1 for v in vals):
        raise SpdnnError(f"--shape must be C,H,W or FEATURES (positive integers), got '{text}'",
                         hint="e.g. --shape 3,224,224")
    return vals


def import_model(
    source: Annotated[str, typer.Argument(
        metavar="MODEL", help="An ONNX file (.onnx), or FILE.py:NAME (a Python file and the "
        "name of a function or class in it that returns a torch.nn.Module). Only that file "
        "runs; nothing in an ONNX file is executed.", show_default=False)],
    output: Annotated[Path, typer.Option(
        "-o", "--output", metavar="FILE", help="The netspec YAML to write.",
        show_default=False)],
    weights: Annotated[Path | None, typer.Option(
        "--weights", metavar="FILE", help="Also write the weights: the state dict of the "
        "compiled netspec (torch.save; loads with weights_only=True and strict=True).")] = None,
    shape: Annotated[str | None, typer.Option(
        "--shape", metavar="C,H,W", help="The input shape (batch axis excluded): the example "
        "input of a FILE.py:NAME module that has no example_input attribute, or the sizes of an "
        "ONNX input with dynamic axes.")] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="The netspec's name (default: the ONNX graph's or the module's).")] = None,
    check: Annotated[bool, typer.Option(
        "--check/--no-check", help="Compare the compiled netspec with the source (onnxruntime "
        "or the torch module) on a random input and two real photographs.")] = True,
) -> None:
    """Import a network you already have as a netspec, with its weights.

    The graph's batch norms and activations are folded into their layers, shapes are checked
    layer by layer against the source's, and with --weights the trained weights are written
    as a state dict that loads into the compiled netspec. An op the netspec cannot express is
    one error line naming the node, its op type and the nearest supported op.

    Examples:

      spdnn import resnet18.onnx -o resnet18.yaml --weights resnet18.pt

      spdnn import models.py:make_unet --shape 1,64,64 -o unet.yaml --weights unet.pt
    """
    from spdnn import importers

    shp = _shape(shape)
    onnx_file = source.lower().endswith(".onnx") and Path(source).suffix.lower() == ".onnx"
    src_file = source if onnx_file else source.rpartition(":")[0] or source
    check_outputs([src_file], [output, weights])
    if output.suffix.lower() not in (".yaml", ".yml"):
        raise SpdnnError("the netspec output must be a .yaml file", file=str(output))
    if onnx_file:
        shapes = None
        if shp is not None:
            shapes = {_single_input(source): shp}
        result = importers.import_onnx(source, weights=weights is not None or check,
                                       input_shapes=shapes)
        reference: object = source
        against = "onnxruntime"
    else:
        module, example = importers.load_factory(source, shp)
        result = importers.from_module(module, example, weights=weights is not None or check)
        reference, against = module, "the torch module"
    if name:
        result.spec = result.spec.model_copy(update={"name": name})
    errors = importers.parity(result, reference) if check else {}
    layers = len(result.spec.layers)
    out.print(f"Imported {source}: {plural(layers, 'layer')}, "
              f"{plural(result.params, 'parameter')}")
    for note in result.notes[:5]:
        out.print(f"  {note}", markup=False, highlight=False)
    if len(result.notes) > 5:
        out.print(f"  ... and {len(result.notes) - 5} more folded batch norms")
    if errors:
        shown = ", ".join(f"{k} {v:.2g}" for k, v in errors.items())
        out.print(f"Parity with {against}: max |difference| {shown}")
        if max(errors.values()) > PARITY_ATOL * max(1.0, _scale(result, reference)):
            raise SpdnnError(f"the imported network differs from the source by up to "
                             f"{max(errors.values()):.3g} (tolerance {PARITY_ATOL:g})",
                             file=src_file, hint="please report it with the model; "
                             "--no-check writes the netspec anyway")
    header = f"Imported by spdnn import from {Path(src_file).name}"
    importers.save(result, output, weights, header=header)
    out.print(f"Wrote {output}" + (f" and {weights}" if weights is not None else ""))


def _scale(result, reference) -> float:
    """max |source output| on the random input (for the relative tolerance)."""
    import torch

    module = result.module
    xs = [torch.rand(1, *i.shape, generator=torch.Generator().manual_seed(0))
          for i in result.spec.inputs]
    with torch.no_grad():
        y = module(*xs)
    ys = list(y.values()) if isinstance(y, dict) else [y]
    return max(float(t.abs().max()) for t in ys)


def _single_input(path: str) -> str:
    import onnx

    from spdnn.importers import ModelImportError

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 - the import reports an unreadable file in one line
        return ""
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    if len(names) != 1:
        raise ModelImportError(f"--shape gives one input's shape, the model has {len(names)} "
                               "inputs", file=path)
    return names[0]


def register(app: typer.Typer) -> None:
    """Add the ``import`` command to ``app``."""
    app.command(name="import")(import_model)
