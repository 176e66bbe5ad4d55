"""Hypothesis strategies for constraint_sched's own classes, shared by the property tests.

Every strategy here draws *valid* objects: specs whose parameters pass
validation, phases with legal settings, squeeze schedules that suit the side
and the specs they will schedule, and whole `ConstraintScheduler`
configurations (as keyword arguments, so that a test can build an identical
clone). Numbers stay in sensible finite ranges (magnitudes up to about 1e6, a
box at least a thousandth of its magnitude wide) unless a strategy is asked
for open sides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from constraint_sched import (
    Backoff,
    ConstraintKind,
    ConstraintSpec,
    DiscoveryPhase,
    HoldPhase,
    SqueezeSchedule,
)

MIN_SOFT_SCALE = 5e-4
"""The smallest scale ``MINIMIZE_SOFT`` accepts (documented on `ConstraintSpec`)."""

SIDES = ("upper", "lower")

KINDS_WITH_BOUND: dict[str, tuple[ConstraintKind, ...]] = {
    "upper": (
        ConstraintKind.UPPER,
        ConstraintKind.BOX,
        ConstraintKind.BOX_ASYMMETRIC,
        ConstraintKind.MINIMIZE_SOFT,
        ConstraintKind.MINIMIZE_HARD,
    ),
    "lower": (ConstraintKind.LOWER, ConstraintKind.BOX, ConstraintKind.BOX_ASYMMETRIC),
}
"""The kinds that have a bound a scheduler can move, per side."""

BOX_KINDS = (ConstraintKind.BOX, ConstraintKind.BOX_ASYMMETRIC)

# Relative distance that targets and table entries keep from the edge of the
# range of valid bounds (the scheduler itself insists on 1e-6).
_EDGE_GAP = 1e-3


# -- numbers ------------------------------------------------------------------


def log_uniform(low: float, high: float) -> st.SearchStrategy[float]:
    """Positive floats in ``[low, high]``, spread evenly over the orders of magnitude."""
    exponents = st.floats(math.log10(low), math.log10(high))
    return st.one_of(
        st.sampled_from([low, high]),
        exponents.map(lambda e: min(max(10.0**e, low), high)),
    )


def magnitudes(limit: float = 1e6) -> st.SearchStrategy[float]:
    """Finite floats in ``[-limit, limit]``, including 0 and round values."""
    return st.one_of(
        st.sampled_from([0.0, 1.0, -1.0, 100.0]),
        st.floats(-limit, limit),
        log_uniform(1e-3, limit).flatmap(lambda v: st.sampled_from([v, -v])),
    )


def steepnesses() -> st.SearchStrategy[float]:
    """A box's steepness ``k``: the default 20, round values, or any float in ``[0.5, 200]``."""
    return st.one_of(st.just(20.0), st.sampled_from([1.0, 5.0, 50.0]), st.floats(0.5, 200.0))


def names() -> st.SearchStrategy[str]:
    """Short metric names such as ``kl_core``."""
    return st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)


# -- specs --------------------------------------------------------------------


@st.composite
def upper_specs(draw: st.DrawFn, name: str | None = None) -> ConstraintSpec:
    """An ``UPPER`` spec: a positive margin between 1e-3 and 1e6."""
    return ConstraintSpec(
        name or draw(names()),
        ConstraintKind.UPPER,
        margin=draw(log_uniform(1e-3, 1e6)),
        steepness=draw(steepnesses()),
    )


@st.composite
def lower_specs(draw: st.DrawFn, name: str | None = None) -> ConstraintSpec:
    """A ``LOWER`` spec: a positive margin between 1e-3 and 1e6."""
    return ConstraintSpec(
        name or draw(names()),
        ConstraintKind.LOWER,
        margin=draw(log_uniform(1e-3, 1e6)),
        steepness=draw(steepnesses()),
    )


@st.composite
def box_specs(draw: st.DrawFn, name: str | None = None) -> ConstraintSpec:
    """A ``BOX`` spec: a finite floor, and a width of 1e-3 to 1e3 times the floor's magnitude."""
    lower = draw(magnitudes())
    width = max(abs(lower), 1.0) * draw(log_uniform(1e-3, 1e3))
    return ConstraintSpec(
        name or draw(names()),
        ConstraintKind.BOX,
        lower=lower,
        upper=lower + width,
        steepness=draw(steepnesses()),
    )


@st.composite
def box_asymmetric_specs(
    draw: st.DrawFn, name: str | None = None, open_sides: bool = False
) -> ConstraintSpec:
    """A ``BOX_ASYMMETRIC`` spec around a healthy point, each side 1e-3 to 1e3 of its magnitude.

    With ``open_sides`` either side may be infinite (no floor, or no ceiling);
    otherwise both are finite.
    """
    healthy = draw(magnitudes())
    unit = max(abs(healthy), 1.0)
    lower = healthy - unit * draw(log_uniform(1e-3, 1e3))
    upper = healthy + unit * draw(log_uniform(1e-3, 1e3))
    if open_sides:
        lower = draw(st.sampled_from([lower, -math.inf]))
        upper = draw(st.sampled_from([upper, math.inf]))
    return ConstraintSpec(
        name or draw(names()),
        ConstraintKind.BOX_ASYMMETRIC,
        lower=lower,
        healthy=healthy,
        upper=upper,
        steepness=draw(steepnesses()),
    )


@st.composite
def minimize_soft_specs(
    draw: st.DrawFn, name: str | None = None, allow_auto: bool = False
) -> ConstraintSpec:
    """A ``MINIMIZE_SOFT`` spec: a scale from 5e-4 to 1e6, or ``"auto"`` if allowed."""
    scales: st.SearchStrategy[Any] = log_uniform(MIN_SOFT_SCALE, 1e6)
    if allow_auto:
        scales = st.one_of(scales, st.just("auto"))
    return ConstraintSpec(
        name or draw(names()),
        ConstraintKind.MINIMIZE_SOFT,
        scale=draw(scales),
        steepness=draw(steepnesses()),
    )


@st.composite
def minimize_hard_specs(
    draw: st.DrawFn, name: str | None = None, allow_auto: bool = False
) -> ConstraintSpec:
    """A ``MINIMIZE_HARD`` spec: a scale from 1e-4 to 1e6, or ``"auto"`` if allowed."""
    scales: st.SearchStrategy[Any] = log_uniform(1e-4, 1e6)
    if allow_auto:
        scales = st.one_of(scales, st.just("auto"))
    return ConstraintSpec(
        name or draw(names()),
        ConstraintKind.MINIMIZE_HARD,
        scale=draw(scales),
        steepness=draw(steepnesses()),
    )


def constraint_specs(
    kinds: Sequence[ConstraintKind] | None = None,
    *,
    name: str | None = None,
    open_sides: bool = False,
    allow_auto: bool = False,
) -> st.SearchStrategy[ConstraintSpec]:
    """A valid spec of one of ``kinds`` (every kind by default).

    Args:
        kinds: The kinds to draw from.
        name: The spec's name; drawn when None.
        open_sides: Let a ``BOX_ASYMMETRIC`` spec have an infinite side.
        allow_auto: Let a ``MINIMIZE`` spec have ``scale="auto"``.
    """
    per_kind = {
        ConstraintKind.UPPER: upper_specs(name),
        ConstraintKind.LOWER: lower_specs(name),
        ConstraintKind.BOX: box_specs(name),
        ConstraintKind.BOX_ASYMMETRIC: box_asymmetric_specs(name, open_sides),
        ConstraintKind.MINIMIZE_SOFT: minimize_soft_specs(name, allow_auto),
        ConstraintKind.MINIMIZE_HARD: minimize_hard_specs(name, allow_auto),
    }
    chosen = list(ConstraintKind) if kinds is None else list(kinds)
    return st.one_of(*(per_kind[k] for k in chosen))


# -- the range of bounds that keep a spec valid ---------------------------------


def bound_limits(spec: ConstraintSpec, side: str) -> tuple[float, float]:
    """The interval of bounds on ``side`` that leave ``spec`` valid, as its documentation says.

    The interval is open, except that a ``MINIMIZE_SOFT`` scale may equal its
    lower end (5e-4): a ceiling must stay above a box's floor, a floor below
    its ceiling, a margin or scale must be positive.
    """
    kind = spec.kind
    if kind in (ConstraintKind.UPPER, ConstraintKind.LOWER, ConstraintKind.MINIMIZE_HARD):
        return 0.0, math.inf
    if kind is ConstraintKind.MINIMIZE_SOFT:
        return MIN_SOFT_SCALE, math.inf
    assert spec.lower is not None
    assert spec.upper is not None
    return (spec.lower, math.inf) if side == "upper" else (-math.inf, spec.upper)


def shared_limits(specs: Sequence[ConstraintSpec], side: str) -> tuple[float, float]:
    """The intersection of `bound_limits` over several specs sharing one bound."""
    low, high = -math.inf, math.inf
    for spec in specs:
        a, b = bound_limits(spec, side)
        low, high = max(low, a), min(high, b)
    return low, high


def target_window(specs: Sequence[ConstraintSpec], side: str) -> tuple[float, float] | None:
    """A finite interval of bounds comfortably inside `shared_limits`, or None if there is none.

    Targets and table entries are drawn from it: it keeps a relative 1e-3 away
    from the edges of the valid range and spans three orders of magnitude
    where the range is open.
    """
    low, high = shared_limits(specs, side)
    a = low + _EDGE_GAP * max(abs(low), 1.0) if math.isfinite(low) else None
    b = high - _EDGE_GAP * max(abs(high), 1.0) if math.isfinite(high) else None
    if a is None and b is None:
        a, b = -1e3, 1e3
    elif b is None:
        assert a is not None
        b = a + 1e3 * max(abs(a), 1.0)
    elif a is None:
        a = b - 1e3 * max(abs(b), 1.0)
    return (a, b) if a < b else None


def bounds_keep_one_sign(specs: Sequence[ConstraintSpec], side: str) -> bool:
    """Whether every valid shared bound has one sign (what a geometric squeeze needs)."""
    low, high = shared_limits(specs, side)
    return low >= 0.0 or high <= 0.0


# -- phases -------------------------------------------------------------------


@st.composite
def discovery_phases(draw: st.DrawFn, side: str | None = None) -> DiscoveryPhase:
    """A `DiscoveryPhase` whose statistic suits ``side`` (no ``"min"`` for a ceiling).

    One to three epochs, sometimes headroom, sometimes a plateau rule, and
    sometimes a reservoir small enough for a median or quantile to be sampled.
    """
    extreme = {"upper": ["max"], "lower": ["min"], None: ["max", "min"]}[side]
    statistic = draw(st.sampled_from([*extreme, "median", "quantile"]))
    quantile = draw(st.floats(0.05, 0.95)) if statistic == "quantile" else None
    epochs = draw(st.integers(1, 3))
    headroom = draw(st.one_of(st.just(0.0), st.floats(0.0, 0.5)))
    plateau = max_epochs = None
    if draw(st.booleans()):
        plateau = draw(st.one_of(st.just(0.0), st.floats(0.0, 0.5)))
        max_epochs = epochs + draw(st.integers(0, 3))
    reservoir = draw(st.one_of(st.just(1024), st.integers(1, 8)))
    return DiscoveryPhase(
        epochs=epochs,
        statistic=statistic,
        headroom=headroom,
        quantile=quantile,
        plateau=plateau,
        max_epochs=max_epochs,
        reservoir=reservoir,
    )


def hold_phases() -> st.SearchStrategy[HoldPhase]:
    """A `HoldPhase` of 0 to 3 epochs."""
    return st.builds(HoldPhase, epochs=st.integers(0, 3))


def backoffs() -> st.SearchStrategy[Backoff]:
    """A `Backoff` with either metric, a factor that is often exactly 1.0, a short cooldown."""
    return st.builds(
        Backoff,
        max_reject_rate=st.one_of(
            st.sampled_from([0.15, 0.5, 1.0]), st.floats(0.0, 1.0, exclude_min=True)
        ),
        metric=st.sampled_from(["reject_rate", "violation_rate"]),
        factor=st.one_of(st.sampled_from([1.0, 0.5]), st.floats(0.05, 1.0)),
        cooldown=st.integers(0, 2),
    )


# -- squeeze schedules --------------------------------------------------------


def _spread(target: float) -> float:
    return max(abs(target), 1.0)


@st.composite
def squeeze_schedules(
    draw: st.DrawFn,
    side: str,
    specs: Sequence[ConstraintSpec],
    first_epoch: int = 1,
    kinds: Sequence[str] = ("table", "geometric", "linear", "adaptive"),
) -> SqueezeSchedule:
    """A squeeze schedule valid for ``side`` and every one of ``specs``.

    Its target and every table entry lie inside `target_window`. A table
    starts at ``first_epoch`` or later (the first squeeze epoch of the
    scheduler) and moves down for a ceiling, up for a floor. A geometric
    schedule is only drawn when every valid bound has one sign, so that the
    discovered bound and the target always share it.

    Args:
        side: ``"upper"`` or ``"lower"``.
        specs: The specs that share the bound.
        first_epoch: The first epoch a table may name.
        kinds: The schedule kinds to draw from.
    """
    window = target_window(specs, side)
    assume(window is not None)
    assert window is not None
    a, b = window
    allowed = [k for k in kinds if k != "geometric" or bounds_keep_one_sign(specs, side)]
    assume(allowed)
    kind = draw(st.sampled_from(allowed))
    target = draw(st.one_of(st.floats(a, b), st.sampled_from([a, b])))
    if kind == "geometric":
        assume(target != 0.0)
        return SqueezeSchedule.geometric(target=target, epochs=draw(st.integers(1, 5)))
    if kind == "linear":
        return SqueezeSchedule.linear(target=target, epochs=draw(st.integers(1, 5)))
    if kind == "adaptive":
        return SqueezeSchedule.adaptive(
            target=target,
            factor=draw(st.one_of(st.just(0.5), st.floats(0.05, 0.95))),
            max_reject_rate=draw(st.one_of(st.sampled_from([0.0, 0.05, 1.0]), st.floats(0, 1))),
        )
    # A table: entries between the target and a loose end, sorted the tight way.
    loose = (
        min(b, target + 20 * _spread(target))
        if side == "upper"
        else max(a, target - 20 * _spread(target))
    )
    low, high = min(target, loose), max(target, loose)
    others = draw(st.lists(st.floats(low, high), max_size=4))
    values = [*sorted(others, reverse=side == "upper"), target]
    start = first_epoch + draw(st.integers(0, 2))
    gaps = draw(st.lists(st.integers(1, 3), min_size=len(values) - 1, max_size=len(values) - 1))
    keys = [start]
    for gap in gaps:
        keys.append(keys[-1] + gap)
    return SqueezeSchedule.table(dict(zip(keys, values, strict=True)))


# -- whole scheduler configurations -------------------------------------------


@st.composite
def scheduler_configs(
    draw: st.DrawFn,
    side: str | None = None,
    *,
    prefix: str = "",
    open_sides: bool = False,
    nonfinite: str | None = None,
    max_specs: int = 2,
) -> dict[str, Any]:
    """Keyword arguments of a valid `ConstraintScheduler`: ``ConstraintScheduler(**config)``.

    One or two specs (up to ``max_specs``) sharing one bound on ``side``
    (drawn when None), a discovery phase, a hold, sometimes a squeeze and then
    sometimes a backoff, a non-finite policy and sometimes a name. A single
    spec is sometimes passed bare rather than in a list. Calling the strategy
    twice with different ``prefix`` values gives specs and schedulers with
    distinct names, as a `SchedulerCollection` needs.

    Args:
        side: ``"upper"`` or ``"lower"``; drawn when None.
        prefix: Put before every spec name and the scheduler's own name.
        open_sides: Let ``BOX_ASYMMETRIC`` specs have an infinite side.
        nonfinite: ``"skip"`` or ``"raise"``; drawn when None.
        max_specs: The most specs sharing the bound.
    """
    side = side or draw(st.sampled_from(SIDES))
    count = draw(st.integers(1, max_specs))
    spec_names = [
        f"{prefix}{n}" for n in draw(st.lists(names(), min_size=count, max_size=count, unique=True))
    ]
    specs = [
        draw(
            constraint_specs(
                KINDS_WITH_BOUND[side], name=n, open_sides=open_sides, allow_auto=side == "upper"
            )
        )
        for n in spec_names
    ]
    assume(target_window(specs, side) is not None)
    discovery = draw(discovery_phases(side))
    hold = draw(hold_phases())
    first_squeeze = discovery.epochs + hold.epochs + 1
    squeeze = (
        draw(squeeze_schedules(side, specs, first_squeeze))
        if draw(st.sampled_from([True, True, True, False]))
        else None
    )
    backoff = draw(st.one_of(st.none(), backoffs())) if squeeze is not None else None
    return {
        "specs": specs[0] if count == 1 and draw(st.booleans()) else specs,
        "discovery": discovery,
        "hold": hold,
        "squeeze": squeeze,
        "backoff": backoff,
        "side": side,
        "nonfinite": nonfinite or draw(st.sampled_from(["skip", "raise"])),
        "name": draw(st.sampled_from([None, f"{prefix}sched"])),
    }


def config_specs(config: dict[str, Any]) -> list[ConstraintSpec]:
    """The specs of a configuration from `scheduler_configs`, always as a list."""
    specs = config["specs"]
    return [specs] if isinstance(specs, ConstraintSpec) else list(specs)


def reference_interval(config: dict[str, Any]) -> tuple[float, float]:
    """Where a configuration's metric typically lies: mostly on the loose side of its target.

    For a ceiling, from a little below the target to twenty spreads above it
    (so that discovery finds something to squeeze); a floor mirrors it.
    Without a squeeze, the `target_window` of its specs.
    """
    side = config["side"]
    squeeze = config["squeeze"]
    if squeeze is None:
        window = target_window(config_specs(config), side)
        assert window is not None
        return window
    t, s = squeeze.target, _spread(squeeze.target)
    return (t - s, t + 20 * s) if side == "upper" else (t - 20 * s, t + s)


def observation_values(
    config: dict[str, Any], bound: float | None = None, *, finite: bool = False
) -> st.SearchStrategy[float]:
    """Metric values for a scheduler built from ``config``.

    Mostly finite values in its `reference_interval`, sometimes the current
    ``bound`` or values just beside it (to cause violations), sometimes NaN
    or an infinity (unless ``finite``), sometimes values very far above or below.
    """
    lo, hi = reference_interval(config)
    far = 1e9 * max(abs(lo), abs(hi), 1.0)
    choices = [
        st.floats(lo, hi),
        st.floats(lo, hi),
        st.sampled_from([far, -far, 0.0]),
    ]
    if not finite:
        choices.append(st.sampled_from([math.nan, math.inf, -math.inf]))
    if bound is not None and math.isfinite(bound):
        step = 1e-3 * max(abs(bound), 1.0)
        choices.append(st.sampled_from([bound, bound + step, bound - step]))
    return st.one_of(*choices)
