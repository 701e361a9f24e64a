"""The SPDNN channel budget: the merged network's widths for a parameter and a MAC target.

Thesis App. A ("Pushing the AI envelope"): "the number of channels ... such that the network had
almost the same number of parameters as each of its parent networks". :func:`target_params`
and :func:`target_macs` turn a budget mode into a count; :func:`fit_budget` chooses the widths
of the rebuilt network (:class:`~spdnn.graph.rebuild.Rebuild`).

**Objective.** One width multiplier ``s`` for the whole merged network, as the width
multiplier ``alpha`` of MobileNets (Howard et al., arXiv:1704.04861, sec. 3.3): every budget
width ``w_i`` (a merged layer, a group of layers tied to one width, a dense layer's fan-in)
is ``max(floor_i, round_K(s * b_i))``, where ``b_i`` is the widest parent width of the layers
it stands for, ``floor_i = min(b_i, min_width)`` and ``round_K`` rounds to a multiple of
``K = width_multiple`` (a dense layer's fan-in, a slice of the feature map in front of it,
has floor 1, since it narrows no layer, and scales with ``s ** 2``, since a dense layer's
parameters are linear in its fan-in while a convolution's are quadratic in its width) with a rounding threshold staggered over the layers (:func:`width_at`),
so that the parameter count moves in steps of about one layer's channel. ``s`` is the multiplier whose parameter count is closest to the
target, subject to the network's MACs not exceeding the MAC target and to ``s <= 1`` while
the parameter target is below the parents' sum (the merge shares structure, it does not widen
it).

**Guarantees** (each a property test in ``tests/test_budget.py``): widths are non-decreasing
in ``s``, and ``s`` is non-decreasing in the parameter target, so a larger target never
narrows a layer (*monotonic*); no width exceeds ``b_i`` below ``sum`` when ``K = 1``
(*no widening*); no width is below ``min(b_i, min_width)`` (*floor*); the MACs never exceed
the MAC target unless the narrowest network does (then the bound is dropped and the report
says so). When the floor makes a
target unreachable, :attr:`BudgetFit.fixed` names the layers that hold the parameters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from spdnn.choices import BUDGET_MODES, ParamsTarget  # noqa: F401
from spdnn.errors import MergeError, ShapeError
from spdnn.shapes import NetInfo, get_limits, infer
from spdnn.spec.models import Netspec

_BIG = 256.0  # widths are searched between 1/256 and 256 times the parents'
_STEPS = 48  # bisection steps of log(s): a fixed count, so the result is monotone in the target
MIN_WIDTH = 4
"""The default floor: no budget width below ``min(parent width, MIN_WIDTH)``."""
MAX_WIDTH_OPTION = 4096
"""The largest ``--min-width`` / ``--width-multiple`` accepted."""
MacsTarget = str | int | None
"""A MAC budget: ``like-each``, ``largest``, ``sum``, ``none`` or a number of MACs per sample."""
MAC_MODES = {"like-each": "the mean of the parents' MACs per sample",
             "largest": "the most expensive parent's MACs (the default with --params like-each)",
             "sum": "the parents' MACs together",
             "none": "no MAC bound (the default with other --params)"}


def target_params(params: ParamsTarget, parent_params: list[int]) -> int | None:
    """The parameter target of a budget, given the parents' parameter counts (``None`` for
    ``keep``).

    Raises:
        MergeError: an unknown mode or a non-positive number.
    """
    if params == "keep":
        return None
    if params == "like-each":
        return round(sum(parent_params) / len(parent_params))
    if params == "largest":
        return max(parent_params)
    if params == "sum":
        return sum(parent_params)
    if isinstance(params, int) and params > 0:
        return params
    raise MergeError(f"unknown parameter target {params!r}",
                     hint="use like-each, largest, sum, keep or a positive number")


def target_macs(macs: MacsTarget, parent_macs: list[int], params: ParamsTarget) -> int | None:
    """The MAC bound of a budget, given the parents' MACs per sample (``None``: no bound).
    ``macs=None`` is the default: ``largest`` when ``params`` is ``like-each`` (a merge the
    size of one parent should cost no more than the most expensive parent), else no bound.

    Raises:
        MergeError: an unknown mode or a non-positive number.
    """
    if macs is None:
        macs = "largest" if params == "like-each" else "none"
    if macs == "none":
        return None
    if macs == "like-each":
        return round(sum(parent_macs) / len(parent_macs))
    if macs == "largest":
        return max(parent_macs)
    if macs == "sum":
        return sum(parent_macs)
    if isinstance(macs, int) and not isinstance(macs, bool) and macs > 0:
        return macs
    raise MergeError(f"unknown MAC target {macs!r}", field="--macs",
                     hint="use like-each, largest, sum, none or a positive number such as 300M")


def parse_macs(text: str) -> MacsTarget:
    """``"like-each"``, ``"largest"``, ``"sum"``, ``"none"``, ``"5000000"``, ``"300M"``,
    ``"1.5G"``.

    Raises:
        MergeError: anything else, naming ``--macs``.
    """
    t = text.strip().lower()
    if t in MAC_MODES:
        return t
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)", t)
    if not m:
        raise MergeError(f"bad --macs value {text[:60]!r}", field="--macs",
                         hint="use like-each, largest, sum, none, or a number such as 300M")
    n = Decimal(m.group(1)) * {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[m.group(2)]
    if n < 1:
        raise MergeError(f"bad --macs value {text!r}", field="--macs",
                         hint="the MAC target must be positive")
    return int(n.to_integral_value(ROUND_HALF_EVEN))


def check_width_option(value: int, option: str) -> int:
    """``--min-width`` / ``--width-multiple``: an integer from 1 to :data:`MAX_WIDTH_OPTION`.

    Raises:
        MergeError: naming the option.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WIDTH_OPTION:
        raise MergeError(f"{option} {value!r} is out of range", field=option,
                         hint=f"give a whole number of channels from 1 to {MAX_WIDTH_OPTION}")
    return value


def parse_params(text: str) -> ParamsTarget:
    """``"like-each"``, ``"largest"``, ``"sum"``, ``"keep"``, ``"250000"``, ``"250k"``, ``"1.1M"``.

    Raises:
        MergeError: anything else, or a target above the parameter limit
            (:func:`spdnn.shapes.get_limits`).
    """
    t = text.strip().lower()
    if t in BUDGET_MODES:
        return t  # type: ignore[return-value]
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([km]?)", t)
    if not m:
        raise MergeError(f"bad --params value {text[:60]!r}",
                         hint="use like-each, largest, sum, keep, or a number such as 250k or 1.1M")
    n = Decimal(m.group(1)) * {"": 1, "k": 10**3, "m": 10**6}[m.group(2)]  # exact, any size
    if n < 1:
        raise MergeError(f"bad --params value {text!r}", hint="the target must be positive")
    limit = get_limits().params
    if n > limit:
        shown = t if len(t) <= 40 else f"{t[:12]}...({len(t)} characters)"
        raise MergeError(f"--params {shown} is above the parameter limit of {limit:,}",
                         hint="give a smaller target, or raise the limit with spdnn --limits "
                              "params=N")
    return int(n.to_integral_value(ROUND_HALF_EVEN))


@dataclass(frozen=True)
class Width:
    """One width the budget chooses: ``base`` is the widest parent width of the layers it
    stands for (channels, >= 1); ``keys`` are the :meth:`~spdnn.graph.rebuild.Rebuild.build`
    keys that take it (a merged node, the nodes tied to it, or a ``("fan-in", u, v)`` slice)."""

    base: int
    keys: tuple
    min_width: int | None = None
    """This width's own floor (``None``: the budget's ``min_width``). A dense layer's fan-in
    takes 1: it selects features for the dense layer and narrows no layer of a lineage."""
    power: int = 1
    """The width scales with ``s ** power``. A dense layer's fan-in takes 2: a dense layer's
    parameters are linear in its fan-in while a convolution's are quadratic in its width, so
    a fan-in scaled by ``s ** 2`` shrinks the dense layer's parameters by ``s ** 2``, as a
    convolution's shrink (one multiplier: every layer keeps its share of the parameters)."""
    kept: int | None = None
    """The width without a budget (``--params keep``; ``None``: ``base``). A dense layer's
    fan-in then reads all channels of the layer in front of it, as the thesis' rebuild does."""


def width_at(base: int, s: float, min_width: int = MIN_WIDTH, multiple: int = 1,
             phase: float = 0.5) -> int:
    """The budget width of a layer of parent width ``base`` at multiplier ``s``:
    ``max(floor, K * floor(s * base / K + phase))``, at least ``K``, with ``K = multiple`` and
    ``floor = min(base, min_width)`` rounded up to a multiple of ``K``. ``phase`` in [0, 1)
    is the rounding threshold (0.5: round half up); :func:`fit_budget` staggers it over the
    layers so that, as ``s`` grows, widths step up one layer at a time instead of all at once
    (the parameter count then moves in small steps). Non-decreasing in ``s``; within ``K``
    channels of ``s * base`` above the floor."""
    k = multiple
    floor = k * math.ceil(min(base, min_width) / k)
    return max(floor, k, k * int(math.floor(s * base / k + phase)))


def phases(names: list) -> dict:
    """Staggered rounding thresholds ``(i + 0.5) / n`` for the ``n`` budget widths in their
    given order (fixed: letters), see :func:`width_at`."""
    n = max(1, len(names))
    return {v: (i + 0.5) / n for i, v in enumerate(names)}


@dataclass(frozen=True)
class BudgetFit:
    """The outcome of :func:`fit_budget`.

    Attributes:
        scale: the width multiplier ``s``.
        spec, info: the netspec with the chosen widths and its shape inference.
        reachable: the parameter target was met within the search (False: the floor or the
            MAC bound holds the network above or below it, or no widening is allowed).
        widths: budget variable -> chosen width.
        binding: what decided ``s``: ``"params"``, ``"macs"`` (the MAC bound), ``"floor"`` (the
            narrowest network is above the target), ``"cap"`` (``s = 1``: no widening below
            ``sum``), ``"widest"`` (``s`` at its upper search limit) or ``"keep"``.
        macs_target: the MAC bound used (``None``: none).
        fixed: when the floor binds, ``(layer, parameters)`` of the narrowest network, largest
            first: where the parameters that cannot shrink sit.
    """

    scale: float
    spec: Netspec
    info: NetInfo
    reachable: bool
    widths: dict = field(default_factory=dict)
    binding: str = "params"
    macs_target: int | None = None
    fixed: tuple = ()


class _Networks:
    """The network of each width assignment, built and inferred once (the bisection revisits
    its ends)."""

    def __init__(self, build: Callable[[dict], Netspec], variables: Mapping[str, Width]) -> None:
        self.build, self.variables = build, variables
        self.seen: dict[tuple, tuple[Netspec, NetInfo | None, ShapeError | None]] = {}

    def expand(self, widths: Mapping) -> dict:
        return {k: widths[v] for v, var in self.variables.items() for k in var.keys}

    def get(self, widths: Mapping) -> tuple[Netspec, NetInfo | None, ShapeError | None]:
        key = tuple(sorted(widths.items(), key=lambda kv: str(kv[0])))
        if key not in self.seen:
            spec = self.build(self.expand(widths))
            try:
                self.seen[key] = (spec, infer(spec), None)
            except ShapeError as exc:  # too narrow for a fixed-size part (a slice, a block),
                self.seen[key] = (spec, None, exc)  # or too wide for the size limits
        return self.seen[key]

    def counts(self, widths: Mapping) -> tuple[float, float]:
        info = self.get(widths)[1]
        return (math.inf, math.inf) if info is None else (info.params, info.macs)


def fit_budget(build: Callable[[dict], Netspec], variables: Mapping[str, Width],
               target: int | None, macs: int | None = None, min_width: int = MIN_WIDTH,
               width_multiple: int = 1, widen: bool = False) -> BudgetFit:
    """Choose the merged network's widths: the width multiplier ``s`` whose parameter count is
    closest to ``target`` with MACs at most ``macs`` (see the module docstring for the
    objective and its guarantees).

    Args:
        build: ``build(widths)`` -> the netspec for a width per build key
            (:meth:`~spdnn.graph.rebuild.Rebuild.build`).
        variables: budget variable name -> :class:`Width`.
        target: parameters (``None``: keep every base width, ``s = 1``).
        macs: MAC bound per sample (``None``: none).
        min_width: the floor, channels (>= 1).
        width_multiple: round every width to a multiple of this (>= 1).
        widen: allow ``s > 1`` (targets at or above the parents' sum).

    Returns:
        A :class:`BudgetFit`.

    Raises:
        ShapeError: the chosen network does not infer (the parents' widths do not fit).
    """
    nets = _Networks(build, variables)

    phase = phases(list(variables))

    def at(s: float) -> dict:
        return {v: width_at(var.base, s ** var.power,
                            min_width if var.min_width is None else var.min_width,
                            width_multiple, phase[v])
                for v, var in variables.items()}

    def done(s: float, reachable: bool, binding: str, fixed: tuple = ()) -> BudgetFit:
        widths = at(s) if binding != "keep" else {
            v: var.base if var.kept is None else var.kept for v, var in variables.items()}
        spec, info, error = nets.get(widths)
        if error is not None:
            raise error
        return BudgetFit(s, spec, info, reachable, widths, binding, macs, fixed)  # type: ignore[arg-type]

    if target is None and macs is None:
        return done(1.0, True, "keep")
    lo, hi = 1 / _BIG, (_BIG if widen else 1.0)
    # the narrowest network that infers (a fixed-size part may need some width)
    if nets.counts(at(lo))[0] == math.inf:
        bad, good = lo, hi
        for _ in range(_STEPS):
            mid = math.sqrt(bad * good)
            if nets.counts(at(mid))[0] < math.inf:
                good = mid
            else:
                bad = mid
        lo = good

    def largest_below(limit: float, index: int) -> float:
        """The largest ``s`` in [lo, hi] whose count (params: 0, MACs: 1) is at most
        ``limit``, by a fixed number of bisection steps (``lo`` when none is)."""
        if nets.counts(at(hi))[index] <= limit:
            return hi
        a, b = lo, hi
        for _ in range(_STEPS):
            mid = math.sqrt(a * b)
            if nets.counts(at(mid))[index] <= limit:
                a = mid
            else:
                b = mid
        return a

    s_macs = hi if macs is None else largest_below(macs, 1)
    if macs is not None and nets.counts(at(lo))[1] > macs:
        s_macs = hi  # out of reach even at the floor: the bound is dropped, the report says so
    if target is None:
        return done(min(1.0, s_macs), True, "macs" if s_macs < 1.0 else "keep")
    narrowest = nets.counts(at(lo))[0]
    if narrowest > target:
        return done(lo, False, "floor", _fixed_layers(nets.get(at(lo))[1]))
    s_low = largest_below(target, 0)  # params <= target
    p_low = nets.counts(at(s_low))[0]
    s = s_low
    if s_low < hi:  # the next step up may come closer: the smallest s with params > target
        a, b = s_low, hi
        for _ in range(_STEPS):
            mid = math.sqrt(a * b)
            if nets.counts(at(mid))[0] <= target:
                a = mid
            else:
                b = mid
        if abs(nets.counts(at(b))[0] - target) < abs(p_low - target):
            s = b
    if s > s_macs:
        return done(s_macs, False, "macs")
    if s >= hi and nets.counts(at(hi))[0] < target:
        return done(hi, False, "widest" if widen else "cap")
    return done(s, True, "params")


def _fixed_layers(info: NetInfo | None, top: int = 5) -> tuple:
    """The layers holding the most parameters of the narrowest network, largest first."""
    if info is None:
        return ()
    rows = sorted(((lay.name, lay.params) for lay in info.layers if lay.params),
                  key=lambda r: -r[1])
    return tuple(rows[:top])
