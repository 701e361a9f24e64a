"""Export stage: netspec or trained checkpoint -> ONNX file, checked by ``onnx.checker`` and by
onnxruntime parity against torch.

One module per concern:

* :mod:`spdnn.export.source`: what to export (:func:`load_source`: a netspec, a netspec file,
  or one network of a training checkpoint, read safely through
  :func:`spdnn.io.load_checkpoint`) and the default output name (:func:`default_path`).
* :mod:`spdnn.export.onnx`: the export and the parity check (:func:`export_onnx`,
  :func:`export_module`, :func:`temp_onnx`); its docstring explains the exporter choice and
  the tolerance.
* :mod:`spdnn.export.inputs`: the inputs compared on (:func:`real_inputs`: photographs).
* :mod:`spdnn.export.trace`: the export view of a network, one module scope per layer
  (:class:`Traceable`).
* :mod:`spdnn.export.ort`: onnxruntime sessions (:func:`ort_session`).
* :mod:`spdnn.export.diagnose`: failures as one line naming the netspec layer and op.
* :mod:`spdnn.export.report`: :class:`ExportReport`, :class:`ExportError`.
"""

from __future__ import annotations

from spdnn.export.inputs import real_inputs
from spdnn.export.onnx import (
    DEFAULT_OPSET,
    DYNAMO_MIN_OPSET,
    Exporter,
    export_module,
    export_onnx,
    temp_onnx,
)
from spdnn.export.ort import ort_session
from spdnn.export.report import ExportError, ExportReport, ParityCheck, TensorInfo
from spdnn.export.source import default_path, load_source
from spdnn.export.trace import Traceable

__all__ = ["DEFAULT_OPSET", "DYNAMO_MIN_OPSET", "ExportError", "ExportReport", "Exporter",
           "ParityCheck", "TensorInfo", "Traceable", "default_path", "export_module",
           "export_onnx", "load_source", "ort_session", "real_inputs", "temp_onnx"]
