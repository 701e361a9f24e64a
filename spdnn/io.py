"""Files that spdnn writes and reads back: atomic writes, run-folder checkpoints, output paths.

One mechanism for each concept, used by every command:

* :func:`write_atomic` (text or bytes) and :func:`save_torch_atomic` write to a temporary file in
  the destination folder and rename it over the destination, so a reader never sees a torn file.
  The file gets the mode a plain ``open(path, "w")`` would give (``0o666`` less the umask, not
  the ``0o600`` of a temporary file), and the temporary file is removed on any failure.
  Temporary names are ``.<name>.<random>.tmp``; :func:`remove_stale_temps` deletes those a killed
  process left behind (the trainer calls it when it opens a run folder).
* :func:`save_checkpoint` / :func:`load_checkpoint`: the checkpoint format of ``spdnn train``
  (``last.pt``, ``best.pt``). A checkpoint holds only tensors and plain containers (dicts,
  lists, tuples, strings, numbers), so it is read with ``torch.load(weights_only=True)`` and no
  fallback: loading a crafted file can never run code. :func:`find_checkpoint` turns a run
  folder into its checkpoint file.
* :func:`check_outputs`: a command never writes over one of its inputs, nor twice to one file.

Every failure a user can cause is a :class:`~spdnn.errors.SpdnnError` naming the file. This
module imports torch only inside the checkpoint functions.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from spdnn.errors import SpdnnError

LAST = "last.pt"
"""The checkpoint written every ``checkpoint_every`` steps and at the end (resume point)."""
BEST = "best.pt"
"""The checkpoint of the best validation value of the recipe's ``best_metric``."""
FORMAT = 2
"""Checkpoint format version (key ``spdnn_checkpoint``). Version 1 pickled NumPy RNG states
and can only be read unsafely: it is refused with a message saying so."""

_TMP_SUFFIX = ".tmp"


class CheckpointError(SpdnnError):
    """A checkpoint is missing, unreadable, truncated, not written by spdnn, or holds objects
    that loading would have to execute."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: Path, write: Callable[[IO[bytes]], None], what: str) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise SpdnnError(f"cannot write the {what}: {exc.strerror or exc}", file=str(path),
                         hint="check that the destination is a file in a writable folder") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise SpdnnError(f"cannot write the {what}: {exc.strerror or exc}", file=str(path),
                             hint="check free space and permissions") from None
        raise
    return path


def write_atomic(path: str | Path, data: str | bytes, what: str = "file") -> Path:
    """Write ``data`` (``str`` is UTF-8 encoded) to ``path`` atomically; returns ``path``.

    Raises:
        SpdnnError: the destination cannot be written (naming it); nothing is left behind.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    return _atomic(Path(path), lambda fh: fh.write(payload), what)



def save_figure(fig, path: str | Path, dpi: int = 90, what: str = "plot") -> Path:
    """Render a matplotlib figure (as laid out by the caller) to ``path`` atomically, in the
    format of its suffix (PNG by default), and close it; returns ``path``.

    Raises:
        SpdnnError: the folder cannot be written (as :func:`write_atomic`).
    """
    import io as _io

    import matplotlib.pyplot as plt

    buf = _io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi)
    plt.close(fig)
    return write_atomic(path, buf.getvalue(), what=what)

def save_torch_atomic(obj: Any, path: str | Path, what: str = "checkpoint") -> Path:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`write_atomic`)."""
    import torch

    return _atomic(Path(path), lambda fh: torch.save(obj, fh), what)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.<name>.*.tmp``) that an interrupted atomic write left in
    ``folder``; returns the removed paths. Only files older than a minute are removed, so a
    write in progress in another process is left alone."""
    import time

    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for p in folder.glob(f".*{_TMP_SUFFIX}"):
        try:
            if p.is_file() and now - p.stat().st_mtime > 60:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
def find_checkpoint(path: str | Path, prefer: str = BEST) -> Path:
    """The checkpoint file of ``path``: the file itself, or in a run folder ``prefer``
    (``best.pt`` by default) if present, else the other one.

    Raises:
        CheckpointError: no such file, or a folder holding neither checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        order = [prefer] + [n for n in (BEST, LAST) if n != prefer]
        for name in order:
            if (path / name).is_file():
                return path / name
        raise CheckpointError("no checkpoint in this folder", file=str(path),
                              hint=f"give a run folder holding {BEST} or {LAST}, or a .pt file")
    if not path.is_file():
        raise CheckpointError("checkpoint not found", file=str(path),
                              hint="give a run folder of 'spdnn train' or a .pt file")
    return path


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint (a dict of tensors and plain containers) atomically.

    The format version is stored under ``spdnn_checkpoint``. The state must be loadable with
    ``weights_only=True``: NumPy arrays, Python RNG tuples and other objects must already be
    converted to tensors/plain values (see :func:`spdnn.train.state.rng_state`).
    """
    return save_torch_atomic({**state, "spdnn_checkpoint": FORMAT}, path)


def load_torch_file(file: str | Path, map_location: Any = "cpu", what: str = "checkpoint",
                    hint: str = "use another checkpoint",
                    unsafe_hint: str = "only checkpoints written by this version of spdnn can "
                                       "be loaded") -> Any:
    """``torch.load(file, weights_only=True)``, no fallback, with every failure one line naming
    the file: the one safe way spdnn reads a torch file (checkpoints, weights files).

    Args:
        file: the file to read.
        map_location: passed to ``torch.load``.
        what: what the file should be, in the messages (``"checkpoint"``, ``"weights file"``).
        hint: what to do when the file is empty or corrupt.
        unsafe_hint: what to do when the file holds objects that need code to unpickle.

    Raises:
        CheckpointError: an empty, truncated or corrupt file, or one holding objects other
            than tensors and plain containers (refused: unpickling them could run code).
    """
    import pickle

    import torch

    file = Path(file)
    if file.stat().st_size == 0:
        raise CheckpointError(f"the {what} is empty", file=str(file),
                              hint=f"it was not written completely; {hint}")
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        low = text.lower()  # torch: "Unsupported global: GLOBAL os.system was not an allowed
        # global" or "Trying to load unsupported GLOBAL posix.system whose module is blocked"
        if "unsupported global" in low or "unsupported class" in low:
            raise CheckpointError(
                "refusing to load: the file holds objects other than tensors and plain "
                "containers, and unpickling them could run code", file=str(file),
                hint=unsafe_hint) from None
        raise CheckpointError(f"not a readable {what} (corrupt pickle data)",
                              file=str(file), hint=hint) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError,
            AttributeError, TypeError, MemoryError) as exc:
        raise CheckpointError(f"not a readable {what} ({type(exc).__name__}: "
                              f"{_short(str(exc))})", file=str(file),
                              hint=f"the file is truncated or not a torch {what}") from None


def load_checkpoint(path: str | Path, map_location: Any = "cpu", prefer: str = BEST) -> dict:
    """Read a checkpoint of ``spdnn train`` safely (``torch.load(weights_only=True)``, no
    fallback): a file that would need code to run while loading is refused.

    Args:
        path: a ``.pt`` file or a run folder (see :func:`find_checkpoint`).
        map_location: passed to ``torch.load`` (``"cpu"`` by default).
        prefer: which checkpoint of a run folder to read first.

    Returns:
        The checkpoint dict; its ``"path"`` key is set to the file read.

    Raises:
        CheckpointError: missing, empty, truncated or corrupt files, files holding executable
            objects, and files not written by spdnn (each a one-line message naming the file).
    """
    file = find_checkpoint(path, prefer)
    state = load_torch_file(file, map_location)
    if not isinstance(state, dict) or "spdnn_checkpoint" not in state:
        raise CheckpointError("not a checkpoint written by 'spdnn train'", file=str(file),
                              hint="give last.pt or best.pt of a run folder")
    if state["spdnn_checkpoint"] != FORMAT:
        raise CheckpointError(f"checkpoint format {state['spdnn_checkpoint']!r} is not "
                              f"supported (this spdnn reads format {FORMAT})", file=str(file),
                              hint="retrain with this version of spdnn")
    state["path"] = str(file)
    return state


def averaged_weights(checkpoint: dict, name: str) -> dict | None:
    """The EMA weights of model ``name`` in a checkpoint of ``spdnn train`` as a plain state
    dict (the trainer stores ``AveragedModel`` state dicts under ``"ema"``: keys prefixed
    ``module.``, plus ``n_averaged``, both dropped here); ``None`` when the model has no EMA."""
    ema = (checkpoint.get("ema") or {}).get(name)
    if not isinstance(ema, dict) or not ema:
        return None
    return {k.removeprefix("module."): v for k, v in ema.items() if k != "n_averaged"}


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# output paths
# --------------------------------------------------------------------------------------------
def check_outputs(inputs: Iterable[str | Path], outputs: Iterable[str | Path | None]) -> None:
    """Refuse output paths that resolve to an input file, or to another output of the same
    command (symbolic links and ``..`` are resolved first).

    Raises:
        SpdnnError: naming the output and the file it would destroy.
    """
    ins = {Path(p).resolve(): Path(p) for p in inputs}
    seen: dict[Path, Path] = {}
    for out in outputs:
        if out is None:
            continue
        if str(out) == "":
            raise SpdnnError("empty output path", hint="give a file name")
        real = Path(out).resolve()
        if real in ins:
            raise SpdnnError(f"the output would overwrite the input {ins[real]}", file=str(out),
                             hint="choose another output path")
        if real in seen:
            raise SpdnnError(f"two outputs name the same file ({seen[real]} and {out})",
                             file=str(out), hint="give each output its own path")
        seen[real] = Path(out)
