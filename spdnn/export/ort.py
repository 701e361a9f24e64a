"""onnxruntime sessions, as the export parity check and ``spdnn bench`` create them."""

from __future__ import annotations

from pathlib import Path

__all__ = ["ort_session"]


def ort_session(model: bytes | str | Path, threads: int | None = None,
                providers: list[str] | None = None, spinning: bool = True):
    """An onnxruntime session with all graph optimizations on (CPU unless ``providers``).

    ``spinning=False`` makes idle intra-op threads sleep instead of busy-waiting
    (``session.intra_op.allow_spinning = 0``), which is much faster on shared or virtual CPUs.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    src = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(src, opts, providers=providers or ["CPUExecutionProvider"])
