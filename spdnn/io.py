"""Files that spdnn writes and reads back: atomic writes, run-folder checkpoints, output paths.

One mechanism for each concept, used by every command:

* :func:`write_atomic` (text or bytes) and :func:`save_torch_atomic` write to a temporary file in
  the destination folder and rename it over the destination, so a reader never sees a torn file.
  A new file gets the mode a plain ``open(path, "w")`` would give (``0o666`` less the umask,
  not the ``0o600`` of a temporary file); a file it replaces keeps its mode. Only regular files
  are replaced: an existing directory, FIFO, socket or device is refused (a rename would turn a
  device into a plain file). The temporary file is removed on any failure. Temporary names are
  ``.<name>.spdnn-<8 random characters>.tmp``; :func:`remove_stale_temps` deletes those a killed
  process left behind (the trainer calls it when it opens a run folder) and no other file.
* :func:`save_checkpoint` / :func:`load_checkpoint`: the checkpoint format of ``spdnn train``
  (``last.pt``, ``best.pt``). A checkpoint holds only tensors and plain containers (dicts,
  lists, tuples, strings, numbers), so it is read with ``torch.load(weights_only=True)`` and no
  fallback: loading a crafted file can never run code. :func:`find_checkpoint` turns a run
  folder into its checkpoint file.
* :func:`check_outputs`: the output policy of every command, checked before anything is
  written: an output is never one of the command's inputs, a file an input netspec imports, or
  a symbolic link to either; two outputs never name one file; an existing output must be a
  regular file; a folder the command fills (a run folder) never holds one of its inputs.

Every failure a user can cause is a :class:`~spdnn.errors.SpdnnError` naming the file. This
module imports torch only inside the checkpoint functions.
"""

from __future__ import annotations

import os
import re
import stat
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
_TMP_MARK = ".spdnn-"
_TMP_NAME = re.compile(r"^\..+\.spdnn-[a-z0-9_]{8}\.tmp$")
"""The names :func:`tempfile.mkstemp` gives with ``prefix=.<name>.spdnn-`` and ``suffix=.tmp``:
the only files :func:`remove_stale_temps` removes."""


class CheckpointError(SpdnnError):
    """A checkpoint is missing, unreadable, truncated, not written by spdnn, or holds objects
    that loading would have to execute."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    """What a non-regular file of ``st_mode`` is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def existing_mode(path: str | Path, what: str = "output") -> int | None:
    """The permission bits of the regular file at ``path`` (links followed), ``None`` when
    nothing is there: what an overwrite must keep.

    Raises:
        SpdnnError: something other than a regular file is there (a directory, FIFO, socket or
            device: spdnn never replaces one), or it cannot be examined.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if isinstance(exc, NotADirectoryError):
            return None  # mkdir / open report it as one line
        raise SpdnnError(f"cannot examine the {what}: {exc.strerror or exc}", file=str(path),
                         hint="check the path") from None
    except ValueError:  # a NUL character
        raise SpdnnError("the path holds a NUL character", file=repr(str(path)),
                         hint="check the path") from None
    if not stat.S_ISREG(st.st_mode):
        raise SpdnnError(f"the {what} exists and is {_kind(st.st_mode)}, not a regular file; "
                         "spdnn replaces only regular files", file=str(path),
                         hint="choose another path")
    return stat.S_IMODE(st.st_mode)


def check_regular_input(path: str | Path, what: str = "input",
                        error: type[SpdnnError] = SpdnnError) -> None:
    """Refuse, before it is opened, an input that exists and is not a regular file (links
    followed): reading a FIFO blocks until a writer comes, a device may never end. A missing
    file passes (opening it reports it).

    Raises:
        SpdnnError: (of class ``error``) naming the file and what it is.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # missing, too long, a NUL character: opening it says so
        return
    if not stat.S_ISREG(mode):
        raise error(f"the {what} is {_kind(mode)}, not a regular file; spdnn reads only "
                    "regular files", file=str(path), hint="give a regular file")


def _atomic(path: Path, write: Callable[[IO[bytes]], None], what: str) -> Path:
    path = Path(path)
    mode = existing_mode(path, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{_TMP_MARK}", suffix=_TMP_SUFFIX,
                                   dir=path.parent)
    except OSError as exc:
        raise SpdnnError(f"cannot write the {what}: {exc.strerror or exc}", file=str(path),
                         hint="check that the destination is a file in a writable folder") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode if mode is not None else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise SpdnnError(f"cannot write the {what}: {exc.strerror or exc}", file=str(path),
                             hint="check free space and permissions") from None
        raise
    return path


def write_atomic(path: str | Path, data: str | bytes, what: str = "file") -> Path:
    """Write ``data`` (``str`` is UTF-8 encoded) to ``path`` atomically; returns ``path``. A
    file it replaces keeps its permission bits.

    Raises:
        SpdnnError: the destination cannot be written, or exists and is not a regular file
            (naming it); nothing is left behind.
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
    """Delete the temporary files that an interrupted atomic write of spdnn left in ``folder``
    (named ``.<name>.spdnn-<8 characters>.tmp``; a user's own ``.notes.tmp`` never matches);
    returns the removed paths. Only files older than a minute are removed, so a write in
    progress in another process is left alone."""
    import time

    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for p in folder.glob(f".*{_TMP_MARK}*{_TMP_SUFFIX}"):
        if not _TMP_NAME.match(p.name):
            continue
        try:
            if p.is_file() and now - p.stat().st_mtime > 60:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------
MAX_IMAGE_SIDE = 65_535
"""Pixels along one side of an image spdnn reads (the most JPEG and WebP can hold): a 1 x
2,000,000 strip is refused before it is decoded, not resized for a minute."""


def read_image(path: str | Path, what: str = "image", field: str | None = None,
               hint: str = "give a smaller image, or raise the limit with spdnn --limits "
                           "pixels=N") -> Any:
    """Read an image as a NumPy array (``skimage.io.imread``) after checking, from its header
    and before it is decoded, that it is a regular file, that Pillow can tell its size, and
    that it holds at most :attr:`spdnn.shapes.Limits.pixels` pixels (``spdnn --limits
    pixels=N``) and at most :data:`MAX_IMAGE_SIDE` along a side. While ``imread`` decodes,
    Pillow's ``Image.MAX_IMAGE_PIXELS`` is set to the same limit and its
    ``DecompressionBombWarning`` is an error, so no reader behind ``imread`` decodes a larger
    image either (Pillow's own setting is restored afterwards).

    Args:
        path: the image file.
        what: what the file is, in the messages (``"image"``, ``"heatmap"``).
        field: the recipe field the error is about, if any (``"data.root"``).
        hint: what to do about too large an image.

    Raises:
        SpdnnError: (naming the file) not a regular file, too many pixels or too long a side.
        Exception: what the decoder raises for a file it cannot read (``OSError``,
            ``ValueError``, ...), unchanged: each caller words that in its own terms.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError
    from skimage.io import imread

    from spdnn.shapes import get_limits

    limit = get_limits().pixels
    check_regular_input(path, what)

    def too_large(size: tuple[int, int] | None, how: str = "") -> SpdnnError:
        shown = f" is {size[0]:,} x {size[1]:,} pixels" if size else how
        return SpdnnError(f"the {what}{shown}, over the limit of {limit:,} pixels and "
                          f"{MAX_IMAGE_SIDE:,} a side; it is refused before it is decoded",
                          file=str(path), field=field, hint=hint)

    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            Image.MAX_IMAGE_PIXELS = None  # the size is checked here, with a clearer message
            try:
                with Image.open(path) as im:  # reads the header only
                    size = im.size
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
                size = None  # not a format Pillow reads: imread's other readers may
            if size is not None and (size[0] * size[1] > limit or max(size) > MAX_IMAGE_SIDE):
                raise too_large(size)
            Image.MAX_IMAGE_PIXELS = limit
            return imread(str(path))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise too_large(None, " declares more pixels than allowed") from None
        finally:
            Image.MAX_IMAGE_PIXELS = before  # other readers (plots, renders) keep Pillow's


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
        obj = torch.load(file, map_location=map_location, weights_only=True)
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
    check_tensors(obj, file, what)
    return obj


COUNTERS = ("num_batches_tracked", "n_averaged")
"""Names of the integer tensors a state dict may hold (batch-norm's and ``AveragedModel``'s
counters); every other tensor of a state dict is a weight and must be floating point."""


def check_tensors(obj: Any, file: str | Path, what: str = "checkpoint") -> None:
    """Check every tensor in what ``torch.load(weights_only=True)`` returned (dicts, lists and
    tuples walked without recursion): dense (strided layout: not sparse, not a meta tensor
    without values, not quantized), real (not complex), and finite where floating point. In
    a state dict (a mapping whose values are all tensors: a weights file, a checkpoint's
    ``models`` or ``ema``) every tensor but the :data:`COUNTERS` is floating point.

    Raises:
        CheckpointError: naming the file, the tensor (its path of keys) and what is wrong.
    """
    import torch

    def refuse(where: str, problem: str, hint: str) -> CheckpointError:
        return CheckpointError(f"the tensor '{where}' {problem}", file=str(file),
                               hint=hint)

    other = f"the {what} was not written by spdnn or torch.save(module.state_dict())"
    stack: list[tuple[str, Any, bool]] = [("", obj, False)]
    while stack:
        where, value, weight = stack.pop()
        if isinstance(value, torch.Tensor):
            t = value
            if t.layout != torch.strided:
                raise refuse(where, f"has layout {t.layout} (sparse); spdnn reads dense "
                                    "tensors only", other)
            if t.is_meta:
                raise refuse(where, "is a meta tensor (it holds no values)", other)
            if t.is_quantized or t.is_complex():
                raise refuse(where, f"is {t.dtype}; spdnn reads real tensors only", other)
            if weight and not t.is_floating_point() and where.rsplit(".", 1)[-1] not in COUNTERS:
                raise refuse(where, f"is {t.dtype}; a weight is floating point", other)
            if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
                raise refuse(where, "holds NaN or infinite values",
                             "the run diverged or the file is damaged; use an earlier "
                             "checkpoint, or retrain with a lower learning rate")
        elif isinstance(value, dict):
            state_dict = bool(value) and all(isinstance(v, torch.Tensor)
                                             for v in value.values())
            stack.extend((f"{where}.{k}" if where else str(k), v, state_dict)
                         for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{where}[{i}]", v, False) for i, v in enumerate(value))


def load_checkpoint(path: str | Path, map_location: Any = "cpu", prefer: str = BEST,
                    run: bool = True, networks_only: bool = False) -> dict:
    """Read a checkpoint of ``spdnn train`` safely (``torch.load(weights_only=True)``, no
    fallback): a file that would need code to run while loading is refused, and what it holds
    is validated (:func:`check_tensors`; with ``run``, :func:`validate_run_checkpoint`) before
    anything uses it.

    Args:
        path: a ``.pt`` file or a run folder (see :func:`find_checkpoint`).
        map_location: passed to ``torch.load`` (``"cpu"`` by default).
        prefer: which checkpoint of a run folder to read first.
        run: the file is a run's checkpoint (``last.pt``, ``best.pt``); ``False`` for other
            files written by :func:`save_checkpoint` (latents, caches), whose readers check
            their own keys.
        networks_only: only the networks are read (``spdnn export``): ``models`` and
            ``netspecs`` are checked, the training state only where present.

    Returns:
        The checkpoint dict; its ``"path"`` key is set to the file read.

    Raises:
        CheckpointError: missing, empty, truncated or corrupt files, files holding executable
            objects, sparse, meta, complex or non-finite tensors, files not written by spdnn,
            and (``run``) a run checkpoint of the wrong structure (each a one-line message
            naming the file and what is wrong).
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
    if run:
        validate_run_checkpoint(state, file, networks_only=networks_only)
    state["path"] = str(file)
    return state


def _run_checkpoint_schema() -> tuple:
    """The pydantic models of a run checkpoint, for reading its networks and for evaluating or
    resuming
    (what :meth:`spdnn.train.Trainer.state` writes), built once on first use (torch)."""
    global _RUN_SCHEMA
    if _RUN_SCHEMA is not None:
        return _RUN_SCHEMA
    from typing import Annotated

    import torch
    from pydantic import (
        AfterValidator,
        BaseModel,
        ConfigDict,
        Field,
        InstanceOf,
        StrictFloat,
        StrictInt,
        StrictStr,
    )

    def shaped(length: int | None, dtype: torch.dtype) -> Any:
        """A 1-D tensor of ``dtype`` (and ``length``, unless ``None``)."""
        def check(t: torch.Tensor) -> torch.Tensor:
            if t.dim() != 1 or length not in (None, len(t)) or t.dtype != dtype:
                raise ValueError(f"must be a 1-D {dtype} tensor" + (
                    f" of {length} values" if length else "") + f", not {tuple(t.shape)} "
                    f"{t.dtype}")
            return t
        return Annotated[InstanceOf[torch.Tensor], AfterValidator(check)]

    Tensor = InstanceOf[torch.Tensor]
    StateDict = dict[StrictStr, Tensor]
    Plain = dict[StrictStr, Any]

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    class PythonRng(Strict):
        version: StrictInt
        state: shaped(625, torch.int64)
        gauss: StrictFloat | None

    class NumpyRng(Strict):
        keys: shaped(624, torch.int64)
        pos: StrictInt = Field(ge=0, le=624)
        has_gauss: StrictInt
        cached_gaussian: StrictFloat

    class Rng(Strict):
        python: PythonRng
        numpy: NumpyRng
        torch: shaped(None, torch.uint8)
        cuda: list[Tensor] = []

    class ModelCheckpoint(BaseModel):
        """What every reader needs (export, evaluate, predict): the networks; the rest is
        checked where present."""
        model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)
        models: dict[StrictStr, StateDict]
        netspecs: dict[StrictStr, StrictStr]
        step: StrictInt | None = Field(None, ge=0)
        optimizers: dict[StrictStr, Plain] | None = None
        schedulers: dict[StrictStr, Plain] | None = None
        ema: dict[StrictStr, StateDict] | None = None
        scaler: Plain | None = None
        rng: Rng | None = None
        history: list[Plain] | None = None
        best: StrictFloat | StrictInt | None = None
        task: Plain = {}
        recipe: Plain | None = None

    class RunCheckpoint(ModelCheckpoint):
        """What evaluating and resuming need: everything :meth:`spdnn.train.Trainer.state`
        writes."""
        models: dict[StrictStr, StateDict] = Field(min_length=1)
        netspecs: dict[StrictStr, StrictStr] = Field(min_length=1)
        step: StrictInt = Field(ge=0)
        optimizers: dict[StrictStr, Plain]
        schedulers: dict[StrictStr, Plain]
        ema: dict[StrictStr, StateDict]
        scaler: Plain
        rng: Rng
        history: list[Plain]
        best: StrictFloat | StrictInt | None
        recipe: Plain

    _RUN_SCHEMA = (ModelCheckpoint, RunCheckpoint)
    return _RUN_SCHEMA


_RUN_SCHEMA: tuple | None = None


def validate_run_checkpoint(state: dict, file: str | Path, networks_only: bool = False) -> None:
    """Check that a loaded run checkpoint has the keys and types that
    :meth:`spdnn.train.Trainer.state` writes (a pydantic model: ``step`` a non-negative
    integer, ``models`` and ``ema`` mappings of names to state dicts, the RNG states of the
    right shapes, ``recipe`` a mapping, ``netspecs`` YAML texts, ...).

    Raises:
        CheckpointError: one line naming the file and the first wrong field.
    """
    from spdnn.errors import validated

    try:
        validated(_run_checkpoint_schema()[0 if networks_only else 1], state, "checkpoint",
                  error=CheckpointError)
    except CheckpointError as exc:
        exc.file = str(file)
        exc.hint = ("the file was not written by 'spdnn train' or is damaged; use another "
                    "checkpoint")
        raise


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
def check_outputs(inputs: Iterable[str | Path], outputs: Iterable[str | Path | None],
                  folders: Iterable[str | Path] = ()) -> None:
    """The output policy of every command, checked before anything is written.

    Refused: an output that resolves (symbolic links and ``..`` followed) to an input, or to a
    file that an input netspec imports (``imports:``, followed through the imported files); two
    outputs naming one file; an existing output that is not a regular file (a directory, FIFO,
    socket or device); a folder of ``folders`` (one the command fills with files of its own
    naming, e.g. a run folder) that is an input or holds one.

    Args:
        inputs: the files (or folders) the command reads.
        outputs: the files it writes (``None`` entries are skipped).
        folders: the folders it writes into; they may exist, as folders.

    Raises:
        SpdnnError: naming the output and the file it would destroy.
    """
    ins: dict[Path, str] = {}
    for p in inputs:
        ins.setdefault(Path(p).resolve(), str(p))
        for imp in _imports_of(Path(p)):
            ins.setdefault(imp, f"{imp} (imported by {p})")
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
        existing_mode(out)
    for folder in folders:
        real = Path(folder).resolve()
        for p, shown in ins.items():
            if p == real or real in p.parents:
                what = "would overwrite" if p == real else "folder holds"
                raise SpdnnError(f"the output {what} the input {shown}", file=str(folder),
                                 hint="write into a folder of its own")
        if real.exists() and not real.is_dir():
            raise SpdnnError("the output folder exists and is not a folder", file=str(folder),
                             hint="give a folder")


_DEPENDENCIES: list[Callable[[Path], list[Path]]] = []
"""Functions that name the files an input file reads too (a netspec's ``imports:``), which no
output may overwrite. The spec stage registers its own (:func:`spdnn.spec.blocks.imported_files`)
so this low-level module does not import the spec stage."""


def register_dependencies(find: Callable[[Path], list[Path]]) -> None:
    """Add ``find(path) -> files that path reads too`` to what :func:`check_outputs` protects."""
    if find not in _DEPENDENCIES:
        _DEPENDENCIES.append(find)


def _imports_of(path: Path) -> list[Path]:
    """The files an input reads too (:data:`_DEPENDENCIES`: a netspec's imports); nothing for
    other files, or ones that cannot be read (the command reports those itself)."""
    if path.suffix.lower() not in (".yaml", ".yml"):
        return []
    return [f for find in _DEPENDENCIES for f in find(path)]
