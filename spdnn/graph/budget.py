"""The SPDNN channel budget: scale the merged network's widths to a parameter target.

Thesis App. A ("Pushing the AI envelope"): "the number of channels ... such that the network had
almost the same number of parameters as each of its parent networks". :func:`target_params`
turns a budget mode into a parameter count; :func:`fit_budget` searches the widths of the
rebuilt network (:class:`~spdnn.graph.rebuild.Rebuild`) that come closest to it.
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


def scaled(base: dict, s: float) -> dict:
    """Every width of ``base`` times ``s``, rounded, at least 1."""
    return {n: max(1, int(round(w * s))) for n, w in base.items()}


@dataclass(frozen=True)
class BudgetFit:
    """The outcome of :func:`fit_budget`: the width multiplier, the netspec with the chosen
    widths and its shape info, and whether the target was reachable."""

    scale: float
    spec: Netspec
    info: NetInfo
    reachable: bool
    widths: dict = field(default_factory=dict)


class _Networks:
    """The network of each width assignment, built and inferred once (the search revisits
    widths: the bisection's ends, the one-channel steps, the final choice)."""

    def __init__(self, build: Callable[[dict], Netspec]) -> None:
        self.build = build
        self.seen: dict[tuple, tuple[Netspec, NetInfo | None, ShapeError | None]] = {}

    def get(self, widths: dict) -> tuple[Netspec, NetInfo | None, ShapeError | None]:
        key = tuple(sorted(widths.items(), key=lambda kv: str(kv[0])))
        if key not in self.seen:
            spec = self.build(widths)
            try:
                self.seen[key] = (spec, infer(spec), None)
            except ShapeError as exc:  # too narrow for a fixed-size part (a slice, a block),
                self.seen[key] = (spec, None, exc)  # or too wide for the size limits
        return self.seen[key]

    def count(self, widths: dict) -> float:
        info = self.get(widths)[1]
        return math.inf if info is None else info.params

    def fit(self, scale: float, widths: dict, reachable: bool) -> BudgetFit:
        spec, info, error = self.get(widths)
        if error is not None:
            raise error
        return BudgetFit(scale, spec, info, reachable, dict(widths))  # type: ignore[arg-type]


def fc_feeders(spec: Netspec, names: Mapping) -> set:
    """The nodes of ``names`` (node -> layer name in ``spec``) whose layer's output reaches a
    ``Linear`` layer's input through layers without a width of their own (pooling, dropout,
    concatenation, reshapes): the channels that set the fully connected layer's fan-in."""
    by_name = {lay.name: (i, lay) for i, lay in enumerate(spec.layers)}
    node_of = {v: k for k, v in names.items()}
    found: set = set()
    for i, lay in enumerate(spec.layers):
        if lay.op_name != "Linear":
            continue
        todo = list(spec.input_names(i))
        while todo:
            nm = todo.pop()
            if nm not in by_name:
                continue  # a network input
            j, src = by_name[nm]
            if src.out_channels_of() is not None or src.op_name == "Linear":
                if nm in node_of and src.op_name != "Linear":
                    found.add(node_of[nm])
                continue
            todo.extend(spec.input_names(j))
    return found


def _degenerate(widths: dict, base: dict) -> bool:
    """Some layer the parents give 4 or more channels is down to 1 or 2."""
    return any(widths[n] <= 2 and base[n] >= 4 for n in widths)


def fit_budget(build: Callable[[dict], Netspec], base: dict, target: int | None,
               names: Mapping | None = None) -> BudgetFit:
    """Choose widths whose network's parameter count is closest to ``target``.

    ``build(widths)`` is the rebuilt netspec for a width per scalable node
    (:meth:`~spdnn.graph.rebuild.Rebuild.build`); ``base`` holds the parents' widths. A width
    multiplier is found by bisection (parameters grow with it), then single layers are widened
    or narrowed by one channel while that brings the count closer (rounding to whole channels
    leaves gaps of several percent on narrow networks otherwise). ``target=None`` keeps
    ``base``.

    **Fully connected layers.** A merged ``Linear`` layer's fan-in is the sum of the channels
    of the convolutions concatenated in front of it (:func:`fc_feeders`; ``names`` maps each
    node to its layer name), while its neuron count is a labelled property (the paper's
    "30F", App. B A.2.1) that the budget never changes. When one multiplier for all widths
    misses the target or narrows a layer of 4+ channels to 1 or 2 (the fan-in alone eats the
    budget: eight depth parents, App. B), the feeders get their own, smaller width: each
    feeder width from the uniform one down to 1 channel is tried (16 at most), the other
    layers are fitted to the target by bisection for each, and the fit with the largest
    product of widths (the most even network) among those closest to the target (within 1%)
    wins; the one-channel steps then refine it. Without ``names``, or without a ``Linear``
    layer, one multiplier scales everything, as before.

    Returns:
        A :class:`BudgetFit`; ``reachable`` is False when even the narrowest (or widest)
        network misses the target.

    Raises:
        ShapeError: the chosen network does not infer (the parents' widths do not fit).
    """
    nets = _Networks(build)
    if target is None:
        return nets.fit(1.0, base, True)
    uniform = _fit(nets, base, target, {}, refine=False)  # the one-channel steps come last
    feeders = fc_feeders(nets.get(base)[0], names) & set(base) if names is not None else set()
    if not feeders or (uniform.reachable and not _degenerate(uniform.widths, base)):
        return _fit(nets, base, target, {})
    top = max(base[n] for n in feeders)
    best_key = None
    if uniform.reachable:
        best_key = _fit_key(nets, uniform.widths, target)
    k_uniform = max(uniform.widths[n] for n in feeders) if uniform.reachable else top
    best_fixed = None
    for k in sorted({max(1, round(k_uniform ** (i / 15))) for i in range(16)}):
        fixed = {n: max(1, round(base[n] * k / top)) for n in feeders}
        fit = _fit(nets, base, target, fixed, refine=False)
        if not fit.reachable:
            continue
        key = _fit_key(nets, fit.widths, target)
        if best_key is None or key < best_key:
            best_key, best_fixed = key, fixed
    return _fit(nets, base, target, best_fixed or {})  # the chosen feeder widths, refined


def _fit_key(nets: _Networks, widths: dict, target: int) -> tuple:
    """Order of fits: closer to the target first (within 1%), then the larger product of
    widths."""
    err = abs(nets.count(widths) - target) / target
    return (round(max(err, 0.01), 2), -sum(math.log(w) for w in widths.values()))


def _fit(nets: _Networks, base: dict, target: int, fixed: dict,
         refine: bool = True) -> BudgetFit:
    """The uniform-multiplier fit of the widths of ``base`` not in ``fixed`` (those keep the
    widths ``fixed`` gives them)."""
    free = {n: w for n, w in base.items() if n not in fixed}
    if not free:
        return nets.fit(1.0, {**base, **fixed}, nets.count({**base, **fixed}) <= target)

    def count(widths: dict) -> float:
        return nets.count({**widths, **fixed})

    return _fit_free(nets, free, target, count, fixed, refine)


def _fit_free(nets: _Networks, base: dict, target: int, count: Callable[[dict], float],
              fixed: dict, refine: bool = True) -> BudgetFit:
    """Bisection of one multiplier for the widths of ``base``, then (``refine``) one-channel
    steps."""

    def done(scale: float, widths: dict, reachable: bool) -> BudgetFit:
        return nets.fit(scale, {**widths, **fixed}, reachable)

    lo, hi = 1 / _BIG, _BIG
    narrowest = count(scaled(base, lo))
    if narrowest == math.inf and count(base) < math.inf:
        # the narrowest network that still fits together bounds the search from below
        bad, good, narrowest = lo, 1.0, count(base)
        while good / bad > 1.0005:
            mid = math.sqrt(bad * good)
            n = count(scaled(base, mid))
            if n < math.inf:
                good, narrowest = mid, n
            else:
                bad = mid
        lo = good
    if narrowest >= target:
        # even 1-channel layers miss the target (fixed-size layers dominate): a degenerate
        # network helps nobody, so keep the parents' widths and say so in the report
        return done(1.0, base, False)
    if count(scaled(base, hi)) <= target:
        return done(hi, scaled(base, hi), False)
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if count(scaled(base, mid)) < target:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.0005:
            break
    scale = min((lo, hi), key=lambda sc: abs(count(scaled(base, sc)) - target))
    widths = scaled(base, scale)
    best = count(widths)
    for _ in range(4 * len(widths) if refine else 0):
        step = -1 if best > target else 1
        trials = []
        for n in sorted(widths, key=str):
            if widths[n] + step < 1:
                continue
            w = dict(widths)
            w[n] += step
            trials.append((abs(count(w) - target), str(n), w))
        if not trials:
            break
        err, _, w = min(trials, key=lambda t: (t[0], t[1]))
        if err >= abs(best - target):
            break
        widths, best = w, count(w)
    return done(scale, widths, True)
