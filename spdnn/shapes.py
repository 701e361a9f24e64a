"""Shape inference and cost model: every layer's output shape, parameters and MACs.

Shapes exclude the batch axis: ``(C, H, W)`` for feature maps, ``(F,)`` for vectors. MACs are
multiply-accumulates for one sample; parameters are trainable scalars (batch-norm running
statistics are buffers and not counted).

Size limits: :func:`infer` refuses a network whose parameters, activations (the values of its
inputs and of every layer's output, for one sample) or MACs (per sample) pass a limit, naming
the layer that crosses it, so that a netspec too big to build is refused when it is checked,
not when a module is built. The defaults (:data:`DEFAULT_LIMITS`: 10^9 parameters, 10^10
activations, 10^13 MACs) are what a workstation holds: 10^9 float32 parameters are 4 GB of
weights (training needs three to four times that, with gradients and optimizer state); they
are far above every shipped netspec (VGG-11: 1.3e8
parameters; the largest activations, ThermalNet: 1.8e7; the most MACs, IRIS appendix D:
1.4e10). Whatever the limits, :func:`check_memory` refuses to build a network whose weights
do not fit in the memory available (``spdnn export``, ``bench``, ``train`` build one). They are set,
in this order of precedence, by :func:`set_limits` (the ``spdnn --limits`` option), the
``SPDNN_LIMITS`` environment variable (``params=1e11,activations=2e10,macs=1e14``; keys left out
keep their defaults) or an explicit ``infer(..., limits=Limits(...))``.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

from spdnn.errors import ShapeError, SpdnnError, SpecError
from spdnn.ops import OPS
from spdnn.ops.base import Op, Shape

if TYPE_CHECKING:
    from spdnn.spec.models import Netspec


# --------------------------------------------------------------------------------------------
# size limits
# --------------------------------------------------------------------------------------------
LIMITS_ENV = "SPDNN_LIMITS"


@dataclass(frozen=True)
class Limits:
    """The most a network may have; see the module docstring.

    Attributes:
        params: trainable parameters of the whole network.
        activations: values of the inputs and of every layer's output, for one sample.
        macs: multiply-accumulates of the whole network, for one sample.
        pixels: pixels (width x height) of an image spdnn reads (``predict``, image folders):
            the header is checked before the image is decoded (see
            :func:`spdnn.io.read_image`). The default, 2^26 = 67,108,864 (8192 x 8192), is
            below Pillow's own warning threshold and 800 MB as float32 RGB.
    """

    params: int = 10**9
    activations: int = 10**10
    macs: int = 10**13
    pixels: int = 1 << 26

    def text(self) -> str:
        """``params=1e+09,activations=1e+10,macs=1e+13,pixels=67108864`` (what
        :func:`parse_limits` reads back to the same limits)."""
        def short(n: int) -> str:
            return f"{n:.3g}" if int(float(f"{n:.3g}")) == n else str(n)

        return ",".join(f"{f.name}={short(getattr(self, f.name))}" for f in fields(self))


DEFAULT_LIMITS = Limits()
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


class LimitError(ShapeError):
    """A network passes a size limit (:class:`Limits`)."""


def parse_limits(text: str, base: Limits = DEFAULT_LIMITS, what: str = "--limits") -> Limits:
    """``"params=1e11,activations=2e10,macs=1e14"`` (also ``250k``, ``3M``, ``2G``, ``1T``,
    ``1_000_000``) on top of ``base``; keys left out keep ``base``'s value.

    Raises:
        SpdnnError: an unknown key or a value that is not a positive number.
    """
    names = [f.name for f in fields(Limits)]
    out = base
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, eq, value = (x.strip() for x in part.partition("="))
        if not eq or key.lower() not in names:
            raise SpdnnError(f"bad {what} entry {part[:60]!r}",
                             hint=f"use KEY=NUMBER with KEY one of {', '.join(names)}, "
                                  "e.g. params=1e11,macs=1e14")
        m = re.fullmatch(r"([0-9_.eE+]+)\s*([kKmMgGtT]?)", value)
        try:
            n = Decimal(m.group(1).replace("_", "")) * _UNITS[m.group(2).lower()] if m else None
        except InvalidOperation:
            n = None
        if n is None or not n.is_finite() or n < 1 or n.adjusted() > 100:
            raise SpdnnError(f"bad {what} value {value[:60]!r} for '{key}'",
                             hint="give a positive number such as 1e11, 250k or 3G")
        out = replace(out, **{key.lower(): int(n)})
    return out


_override: Limits | None = None


def set_limits(limits: Limits | str | None) -> None:
    """Set the limits of every later :func:`infer` in this process (a :class:`Limits`, or text
    for :func:`parse_limits` on top of the environment's); ``None`` goes back to
    ``SPDNN_LIMITS`` / the defaults.

    Raises:
        SpdnnError: bad text.
    """
    global _override
    if isinstance(limits, str):
        limits = parse_limits(limits, base=_from_env())
    _override = limits


def _from_env() -> Limits:
    text = os.environ.get(LIMITS_ENV, "")
    return parse_limits(text, what=LIMITS_ENV) if text.strip() else DEFAULT_LIMITS


def get_limits() -> Limits:
    """The limits :func:`infer` applies when given none.

    Raises:
        SpdnnError: ``SPDNN_LIMITS`` is malformed.
    """
    return _override if _override is not None else _from_env()


@contextlib.contextmanager
def limits_set(limits: Limits | str) -> Iterator[Limits]:
    """``with limits_set("params=1e12"): ...``: :func:`set_limits` for a block of code."""
    global _override
    before = _override
    set_limits(limits)
    try:
        yield get_limits()
    finally:
        _override = before


def available_memory() -> int | None:
    """Bytes of memory this process can still take: ``MemAvailable`` of ``/proc/meminfo``,
    lowered to what the cgroup's ``memory.max`` leaves (a container's limit); ``None`` where
    neither can be read (not Linux)."""
    found: list[int] = []
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    with contextlib.suppress(OSError, ValueError):
        cg = Path("/sys/fs/cgroup")
        limit = (cg / "memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int((cg / "memory.current").read_text()))
    return min(found) if found else None


def check_memory(nbytes: int, what: str, file: str | None = None) -> None:
    """Refuse to allocate ``nbytes`` for ``what`` when the memory available
    (:func:`available_memory`) is smaller, before anything is allocated; nothing is checked
    where the available memory is unknown.

    Raises:
        LimitError: naming what needs how much, and how much is available.
    """
    free = available_memory()
    if free is not None and nbytes > free:
        raise LimitError(f"{what} need {nbytes / 1e9:,.1f} GB of memory, {free / 1e9:,.1f} GB "
                         "are available; refused before allocating", file=file,
                         hint="make the network smaller, or run it on a machine with more "
                              "memory")


def _raise_to(n: int) -> str:
    """A round figure above ``n`` to suggest as the new limit (``2e12``)."""
    e = max(0, len(str(n)) - 1)
    m = -(-n // 10**e)
    return f"{m}e{e}" if m < 10 else f"1e{e + 1}"


def _check(what: str, total: int, own: int, limit: int, who: str, field_: str | None,
           file: str | None) -> None:
    if total <= limit:
        return
    unit = {"params": "parameters", "activations": "activation values per sample",
            "macs": "MACs per sample"}[what]
    if own > limit:
        msg = f"{who} alone has {own:,} {unit}, over the limit of {limit:,}"
    else:
        msg = (f"{who} ({own:,} {unit}) brings the network to {total:,}, over the limit of "
               f"{limit:,}")
    raise LimitError(msg, file=file, field=field_,
                     hint=f"make it smaller, or raise the limit with spdnn --limits "
                          f"{what}={_raise_to(total)} or {LIMITS_ENV}={what}={_raise_to(total)}")


@dataclass(frozen=True)
class LayerInfo:
    """Inferred facts about one layer."""

    name: str
    op: Op
    inputs: tuple[str, ...]
    in_shapes: tuple[Shape, ...]
    out_shape: Shape
    params: int
    macs: int


@dataclass
class NetInfo:
    """Inferred facts about a whole netspec, layers in execution (topological) order."""

    spec: Netspec
    layers: list[LayerInfo]
    shapes: dict[str, Shape] = field(default_factory=dict)

    @property
    def params(self) -> int:
        return sum(lay.params for lay in self.layers)

    @property
    def macs(self) -> int:
        return sum(lay.macs for lay in self.layers)

    def __getitem__(self, name: str) -> LayerInfo:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(name)

    def output_shapes(self) -> dict[str, Shape]:
        return {o.name: self.shapes[o.from_] for o in self.spec.outputs}


def execution_order(spec: Netspec) -> list[int]:
    """Layer indices in a deterministic topological order: of the layers whose inputs are all
    computed, the one declared first comes next (Kahn's algorithm with a heap; the order of
    ``networkx.lexicographical_topological_sort``, which a test checks, without importing
    networkx on the validation path)."""
    index = {lay.name: i for i, lay in enumerate(spec.layers)}
    succ: list[set[int]] = [set() for _ in spec.layers]
    indeg = [0] * len(spec.layers)
    for src, dst in spec.edges():
        if src in index and index[dst] not in succ[index[src]]:
            succ[index[src]].add(index[dst])
            indeg[index[dst]] += 1
    ready = [i for i, d in enumerate(indeg) if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(ready, j)
    return order


def infer(spec: Netspec, file: str | None = None, limits: Limits | None = None) -> NetInfo:
    """Infer shapes, parameters and MACs of every layer, within ``limits`` (default:
    :func:`get_limits`).

    Raises:
        ShapeError: a layer cannot take its inputs; the message names the layer, its op, the
            producing layer(s) and their shapes.
        LimitError: the network passes a size limit; the message names the layer that crosses
            it and the figures.
    """
    lim = limits or get_limits()
    shapes: dict[str, Shape] = {i.name: i.shape for i in spec.inputs}
    total = {"params": 0, "activations": 0, "macs": 0}
    for k, i in enumerate(spec.inputs):
        own = math.prod(i.shape)
        total["activations"] += own
        _check("activations", total["activations"], own, lim.activations,
               f"input '{i.name}' of shape {i.shape}", f"inputs[{k}]", file)
    int_inputs = {i.name for i in spec.inputs if i.dtype == "int64"}
    infos: list[LayerInfo] = []
    for idx in execution_order(spec):
        lay = spec.layers[idx]
        srcs = spec.input_names(idx)
        ins = [shapes[s] for s in srcs]
        for s in srcs:
            if s in int_inputs and not lay.reads_class_indices:
                readers = " or ".join(sorted(n for n, c in OPS.items() if c.reads_class_indices))
                raise ShapeError(f"int64 input '{s}' holds class indices and can only feed an "
                                 f"{readers} layer, not {lay.op_name}", file=file,
                                 field=f"layers[{idx}]({lay.name})",
                                 hint="embed the label first: {op: Embedding, num_embeddings: "
                                      "..., embedding_dim: ...}")
        try:
            out = tuple(int(v) for v in lay.infer_shape(ins))
        except ShapeError as exc:
            feeds = ", ".join(f"'{s}' gives {shapes[s]}" for s in srcs)
            raise ShapeError(f"{exc.message}; input {feeds}", file=file,
                             field=f"layers[{idx}]({lay.name})", hint=exc.hint) from None
        except SpecError:
            raise
        shapes[lay.name] = out
        figures = {"params": lay.num_params(ins, out), "activations": math.prod(out),
                   "macs": lay.macs(ins, out)}
        for what, own in figures.items():
            total[what] += own
            who = f"{lay.op_name} layer '{lay.name}'"
            _check(what, total[what], own, getattr(lim, what),
                   f"{who} with output {out}" if what == "activations" else who,
                   f"layers[{idx}]({lay.name})", file)
        infos.append(LayerInfo(lay.name, lay, tuple(srcs), tuple(ins), out,
                               figures["params"], figures["macs"]))
    return NetInfo(spec, infos, shapes)
