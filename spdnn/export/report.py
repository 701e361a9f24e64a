"""What an export produced: :class:`ExportReport` (with :class:`TensorInfo` and
:class:`ParityCheck`), and the one error type of the export stage, :class:`ExportError`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spdnn.errors import SpdnnError

__all__ = ["ExportError", "ExportReport", "ParityCheck", "TensorInfo"]


class ExportError(SpdnnError):
    """Export, ONNX check or onnxruntime parity failed, or the source holds no network to
    export; the message names the layer and op (or the file)."""


@dataclass(frozen=True)
class TensorInfo:
    """An ONNX graph input or output: name, shape (batch axis ``"N"`` when dynamic), dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str


@dataclass(frozen=True)
class ParityCheck:
    """One onnxruntime-vs-torch comparison."""

    input: str  # "random", "camera", "astronaut", "user[0]", ...
    batch: int
    max_abs_err: float
    max_rel_err: float
    ok: bool


@dataclass
class ExportReport:
    """What :func:`~spdnn.export.export_onnx` wrote and how well onnxruntime matched torch."""

    path: Path
    netspec: str
    netspec_hash: str
    opset: int
    exporter: str
    dynamic_batch: bool
    fp16: bool
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    atol: float
    checks: list[ParityCheck] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    export_seconds: float = 0.0
    size_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def max_abs_err(self) -> float:
        return max((c.max_abs_err for c in self.checks), default=0.0)

    @property
    def max_rel_err(self) -> float:
        return max((c.max_rel_err for c in self.checks), default=0.0)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d.update(max_abs_err=self.max_abs_err, max_rel_err=self.max_rel_err, ok=self.ok)
        return d
