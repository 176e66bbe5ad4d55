"""The scheduler's state and its transitions: the one place where phases change.

Everything a bound does is decided here, by pure functions of the
configuration, the state and what the epoch saw, returning the next state and
the events: `TRANSITIONS` holds one step per `Phase` for an epoch boundary
(`transition` applies it), and `within_epoch` ends a ``steps`` discovery
inside its epoch. The mutable `ConstraintScheduler` only accumulates
observations and commits what these return.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from constraint_sched._events import (
    BackedOff,
    Converged,
    Discovered,
    DiscoveryExtended,
    EpochStats,
    Event,
    Held,
    Idle,
    Settled,
    Squeezed,
)
from constraint_sched._phases import Backoff, DiscoveryPhase, HoldPhase, Phase
from constraint_sched._schedules import SqueezeSchedule, no_factor
from constraint_sched._spec import Bound


@attrs.frozen
class Config:
    """What a scheduler was built with, as the transition needs it."""

    name: str
    side: Bound
    """``"upper"``, ``"lower"``, or ``"width"`` (a half-width: it moves like a ceiling)."""
    discovery: DiscoveryPhase
    hold: HoldPhase
    squeeze: SqueezeSchedule | None
    backoff: Backoff | None
    valid_range: tuple[float, float]
    """The closed interval of bounds that give every spec a valid spec."""
    start: float = math.inf
    """The bound in force during discovery: the specs' own (the loosest of them)."""

    @property
    def first_squeeze_epoch(self) -> int:
        """The nominal epoch of the first squeeze: after discovery and hold."""
        return self.discovery.epochs + self.hold.epochs + 1

    def tighter(self, a: float, b: float) -> float:
        """The tighter of two bounds: the lower ceiling, the higher floor."""
        return min(a, b) if self.side != "lower" else max(a, b)

    def at_or_past(self, bound: float, target: float) -> bool:
        """Whether ``bound`` is at ``target`` or tighter than it."""
        return bound <= target if self.side != "lower" else bound >= target

    def widen(self, value: float) -> float:
        """Apply discovery headroom (a fraction of the magnitude) away from the data."""
        room = self.discovery.headroom * abs(value)
        return value + room if self.side != "lower" else value - room

    def nearest_valid(self, value: float) -> float:
        """``value`` moved into the range of bounds that give valid specs."""
        low, high = self.valid_range
        return min(max(value, low), high)

    def target(self, discovered: float | None) -> float | None:
        """The squeeze's target as a valid bound (a `Relative` one resolved), or None.

        None without a squeeze, and for a relative target before discovery.
        """
        squeeze = self.squeeze
        if squeeze is None:
            return None
        if not squeeze.relative:
            return squeeze.target_for(0.0)
        if discovered is None:
            return None
        return self.nearest_valid(squeeze.target_for(discovered))


@attrs.frozen
class State:
    """Everything about a bound that outlives an epoch (see `transition`)."""

    epoch: int = 1
    phase: Phase = Phase.DISCOVERY
    bound: float = math.inf
    discovered: float | None = None
    data_epochs: int = 0
    previous_statistic: float | None = None
    hold_left: int = 0
    step: int = 0
    wait: int = 0
    before_squeeze: float | None = None
    fresh_squeeze: bool = False
    settle_to: float | None = None
    """The bound at the next epoch boundary, after a discovery that ended inside the epoch."""


@attrs.frozen
class EpochSummary:
    """What the epoch that just ended saw, as the transition needs it."""

    stats: EpochStats
    statistic: float | None
    """The window's statistic over the specs (max of ceilings, min of floors), or None."""
    per_spec: Mapping[str, float]
    window_observations: int
    tighten: bool = True
    """Whether the caller lets a squeeze step be taken this epoch (it waits if not)."""


Step = Callable[[Config, State, EpochSummary, "Base"], "Outcome"]
"""One phase's transition at an epoch boundary: ``(cfg, st, seen, base) -> (state, events)``."""
Base = Mapping[str, Any]
"""The fields every event of one boundary shares: constraint, epoch (the next), side."""
Outcome = tuple[State, list[Event]]


def transition(cfg: Config, st: State, seen: EpochSummary) -> Outcome:
    """The state for the next epoch, and the events that lead to it.

    A provisional bound settles first (`Settled`); then the phase's own step
    in `TRANSITIONS` decides.

    Args:
        cfg: The scheduler's configuration.
        st: The state during the epoch that just ended.
        seen: What that epoch saw.

    Returns:
        The next state (its ``epoch`` is one more) and the events, each
        carrying the epoch in which its new bound applies.
    """
    base: Base = {"constraint": cfg.name, "epoch": st.epoch + 1, "side": cfg.side}
    settled: list[Event] = []
    if st.settle_to is not None:
        settled.append(Settled(**base, old=st.bound, new=st.settle_to))
        st = attrs.evolve(st, bound=st.settle_to, settle_to=None)
    stats = seen.stats
    if st.phase in (Phase.HOLD, Phase.SQUEEZE) and stats.steps + stats.rejects == 0:
        # No data: no hold epoch counted, no squeeze step, no convergence, nothing judged.
        return attrs.evolve(st, epoch=st.epoch + 1), [
            *settled,
            Idle(**base, old=st.bound, new=st.bound),
        ]
    new, events = TRANSITIONS[st.phase](cfg, st, seen, base)
    return new, settled + events


def within_epoch(cfg: Config, st: State, seen: EpochSummary) -> Outcome | None:
    """What changes inside an epoch, after an observation: None if nothing does.

    Only a ``steps`` discovery (`DiscoveryPhase.steps`) changes inside an
    epoch: once its window holds that many steps (observed plus rejected)
    and a valid value, discovery ends at once. The bound found applies
    straight away, widened by the provisional headroom until the epoch's
    boundary, where `transition` settles it and the hold starts.

    Args:
        cfg: The scheduler's configuration.
        st: The state during the epoch.
        seen: What the epoch saw so far (its statistic None while nothing is valid).

    Returns:
        The state for the rest of the epoch (same ``epoch``) and the events,
        or None while the window is open.
    """
    if seen.statistic is None or not window_full(cfg, st, seen.stats.steps + seen.stats.rejects):
        return None
    base: Base = {"constraint": cfg.name, "epoch": st.epoch, "side": cfg.side}
    found, events, st = _discovered(cfg, st, seen, base, provisional=True)
    if st.phase is Phase.CONVERGED:
        return st, events
    if cfg.hold.epochs > 0:
        following = {**base, "epoch": st.epoch + 1}
        events.append(Held(**following, old=found, new=found, epochs=cfg.hold.epochs))
    # The rest of this epoch is held too; the hold's epochs count from the next.
    settle = None if st.bound == found else found
    return attrs.evolve(st, phase=Phase.HOLD, hold_left=cfg.hold.epochs + 1, settle_to=settle), (
        events
    )


def window_open(cfg: Config, st: State) -> bool:
    """Whether observations can end the phase inside the epoch (a ``steps`` discovery)."""
    return st.phase is Phase.DISCOVERY and cfg.discovery.steps is not None


def window_full(cfg: Config, st: State, steps: int) -> bool:
    """Whether ``steps`` steps (observed plus rejected) end a ``steps`` discovery now."""
    limit = cfg.discovery.steps
    return window_open(cfg, st) and limit is not None and steps >= limit


def window_statistic(cfg: Config, st: State) -> str | None:
    """The statistic the phase accumulates: ``"max"``, ``"min"``, a sampled one, or None.

    Only discovery accumulates one. ``"given"`` keeps the specs' own bound,
    so it needs none; it accumulates the cheapest (the bound's own extreme),
    which nothing reads.
    """
    if st.phase is not Phase.DISCOVERY:
        return None
    statistic = cfg.discovery.statistic
    if statistic == "given":
        return "min" if cfg.side == "lower" else "max"
    return statistic


# -- one step per phase ----------------------------------------------------------------


def _discovery(cfg: Config, st: State, seen: EpochSummary, base: Base) -> Outcome:
    """Discovery: extend it, or end it with the bound found (hold, squeeze or converge)."""
    d, nxt = cfg.discovery, st.epoch + 1
    events: list[Event] = []
    if d.statistic == "given" and seen.stats.steps + seen.stats.rejects == 0:
        reason = f"no step in epoch {st.epoch}"
        events.append(DiscoveryExtended(**base, old=st.bound, new=st.bound, reason=reason))
        return attrs.evolve(st, epoch=nxt), events
    if d.statistic == "given":
        # The specs' own bound, kept: discovery only counts its epochs (with steps).
        if st.data_epochs + 1 < d.epochs:
            return attrs.evolve(st, epoch=nxt, data_epochs=st.data_epochs + 1), events
        seen = attrs.evolve(seen, statistic=st.bound, per_spec={})
    elif seen.stats.observations == 0:
        reason = f"no valid observation in epoch {st.epoch}"
        events.append(DiscoveryExtended(**base, old=st.bound, new=st.bound, reason=reason))
        return attrs.evolve(st, epoch=nxt), events
    assert seen.statistic is not None
    data_epochs = st.data_epochs + 1
    growth = (
        None
        if st.previous_statistic is None
        else _growth(cfg, st.previous_statistic, seen.statistic)
    )
    still_rising = d.plateau is not None and (growth is None or growth > d.plateau)
    max_epochs = d.max_epochs if d.max_epochs is not None else d.epochs
    if data_epochs < d.epochs or (still_rising and data_epochs < max_epochs):
        if data_epochs >= d.epochs:
            why = (
                "no earlier epoch to compare with"
                if growth is None
                else f"{d.statistic} grew {growth:.1%} > plateau {d.plateau:.1%}"
            )
            events.append(
                DiscoveryExtended(
                    **base, old=st.bound, new=st.bound, reason=f"waiting for a plateau: {why}"
                )
            )
        return (
            attrs.evolve(st, epoch=nxt, data_epochs=data_epochs, previous_statistic=seen.statistic),
            events,
        )
    _, found_events, st = _discovered(cfg, attrs.evolve(st, epoch=nxt), seen, base)
    events += found_events
    if st.phase is Phase.CONVERGED:
        return st, events
    if cfg.hold.epochs > 0:
        events.append(Held(**base, old=st.bound, new=st.bound, epochs=cfg.hold.epochs))
        return attrs.evolve(st, phase=Phase.HOLD, hold_left=cfg.hold.epochs), events
    return _squeeze(cfg, attrs.evolve(st, phase=Phase.SQUEEZE), seen, events, base)


def _hold(cfg: Config, st: State, seen: EpochSummary, base: Base) -> Outcome:
    """Hold: count the held epochs down, then take the first squeeze step."""
    nxt = st.epoch + 1
    if st.hold_left > 1:
        return attrs.evolve(st, epoch=nxt, hold_left=st.hold_left - 1), []
    squeezing = attrs.evolve(st, epoch=nxt, phase=Phase.SQUEEZE, hold_left=0)
    return _squeeze(cfg, squeezing, seen, [], base)


def _squeezing(cfg: Config, st: State, seen: EpochSummary, base: Base) -> Outcome:
    """Squeeze: back off if the last step hurt, wait out a cooldown, or take the next step."""
    st = attrs.evolve(st, epoch=st.epoch + 1)
    b = cfg.backoff
    if b is not None and st.fresh_squeeze and st.before_squeeze is not None:
        rate = seen.stats.reject_rate if b.metric == "reject_rate" else seen.stats.violation_rate
        if rate > b.max_reject_rate:
            relaxed = _relax(cfg, st.bound, st.before_squeeze, b.factor)
            event = BackedOff(
                **base,
                old=st.bound,
                new=relaxed,
                metric=b.metric,
                rate=rate,
                limit=b.max_reject_rate,
            )
            backed = attrs.evolve(
                st, bound=relaxed, step=st.step - 1, wait=b.cooldown, fresh_squeeze=False
            )
            return backed, [event]
    if st.wait > 0:
        return attrs.evolve(st, wait=st.wait - 1, fresh_squeeze=False), []
    return _squeeze(cfg, st, seen, [], base)


def _converged(cfg: Config, st: State, seen: EpochSummary, base: Base) -> Outcome:
    """Converged: the bound is final; only the epoch moves on."""
    return attrs.evolve(st, epoch=st.epoch + 1, fresh_squeeze=False), []


TRANSITIONS: Mapping[Phase, Step] = {
    Phase.DISCOVERY: _discovery,
    Phase.HOLD: _hold,
    Phase.SQUEEZE: _squeezing,
    Phase.CONVERGED: _converged,
}
"""Every phase's step at an epoch boundary: the one place where phases change."""


def _discovered(
    cfg: Config, st: State, seen: EpochSummary, base: Base, *, provisional: bool = False
) -> tuple[float, list[Event], State]:
    """End discovery with ``seen``'s statistic: the bound found, its events, the state.

    The state is CONVERGED (at the target) when the bound found is already at
    or past the target; otherwise it carries the new bound and the caller
    picks the next phase. ``provisional`` widens the bound in force by the
    provisional headroom (a discovery ending inside its epoch).
    """
    assert seen.statistic is not None
    widened = cfg.widen(seen.statistic)
    found = cfg.nearest_valid(widened)
    target = cfg.target(found)
    early = target is not None and cfg.at_or_past(found, target)
    applied = found
    if provisional:
        room = cfg.discovery.provisional_headroom * abs(found)
        applied = cfg.nearest_valid(found + room if cfg.side != "lower" else found - room)
    new = target if early and target is not None else applied
    events: list[Event] = [
        Discovered(
            **base,
            old=st.bound,
            new=new,
            statistic=cfg.discovery.statistic,
            value=seen.statistic,
            per_spec=dict(seen.per_spec),
            observations=seen.window_observations,
            clamped=found != widened and cfg.discovery.statistic != "given",
        )
    ]
    st = attrs.evolve(
        st,
        bound=new,
        discovered=found,
        data_epochs=st.data_epochs + 1,
        previous_statistic=seen.statistic,
    )
    if early:
        events.append(Converged(**base, old=new, new=new, reason="early", discovered=found))
        st = attrs.evolve(st, phase=Phase.CONVERGED)
    return found, events, st


def _squeeze(
    cfg: Config, st: State, seen: EpochSummary, events: list[Event], base: Base
) -> Outcome:
    """Take the next squeeze step from ``st`` (already in SQUEEZE, epoch already advanced)."""
    schedule = cfg.squeeze
    if schedule is None:
        events.append(Converged(**base, old=st.bound, new=st.bound, reason="no_squeeze"))
        return attrs.evolve(st, phase=Phase.CONVERGED, fresh_squeeze=False), events
    assert st.discovered is not None
    if not seen.tighten:  # the caller holds the squeeze back this epoch: no step taken
        return attrs.evolve(st, fresh_squeeze=False), events
    step = st.step + 1
    proposed = schedule.propose(
        step,
        start=st.discovered,
        current=st.bound,
        reject_rate=seen.stats.reject_rate,
        first_epoch=cfg.first_squeeze_epoch,
    )
    target = cfg.target(st.discovered)
    assert target is not None
    new = cfg.tighter(st.bound, proposed)
    if cfg.at_or_past(new, target):
        new = target
    if new == st.bound:
        return attrs.evolve(st, step=step, fresh_squeeze=False), events
    note = ""
    if step == 1 and no_factor(schedule, st.discovered):
        note = (
            f"the discovered {_bound_word(cfg)} {st.discovered:g} and the target "
            f"{target:g} differ in sign (or the bound is 0), so no factor leads from one "
            f"to the other: this geometric squeeze moves in {schedule.epochs} equal steps instead"
        )
    events.append(Squeezed(**base, old=st.bound, new=new, proposed=proposed, note=note))
    st = attrs.evolve(st, bound=new, step=step, before_squeeze=st.bound, fresh_squeeze=True)
    if new == target:
        events.append(Converged(**base, old=new, new=new))
        st = attrs.evolve(st, phase=Phase.CONVERGED, fresh_squeeze=False)
    return st, events


def upcoming(cfg: Config, st: State) -> float:
    """The bound the next epoch boundary sets if it neither backs off nor is held back.

    A pure preview of `transition` for a controller that moves towards the
    next bound during the epoch: the bound in force while discovering (the
    next one is not known yet), held or waiting, and the schedule's next step
    otherwise (an adaptive schedule's as if no step were rejected).

    Args:
        cfg: The scheduler's configuration.
        st: The state during the current epoch.

    Returns:
        The bound expected from the next epoch on.
    """
    squeezing = st.phase is Phase.SQUEEZE and st.wait == 0
    last_hold = st.phase is Phase.HOLD and st.hold_left <= 1 and st.settle_to is None
    schedule = cfg.squeeze
    if not (squeezing or last_hold) or schedule is None or st.discovered is None:
        return st.bound if st.settle_to is None else st.settle_to
    proposed = schedule.propose(
        st.step + 1, start=st.discovered, current=st.bound, first_epoch=cfg.first_squeeze_epoch
    )
    target = cfg.target(st.discovered)
    assert target is not None
    new = cfg.tighter(st.bound, proposed)
    return target if cfg.at_or_past(new, target) else new


def _bound_word(cfg: Config) -> str:
    return {"upper": "ceiling", "lower": "floor"}.get(cfg.side, "half-width")


def _relax(cfg: Config, bound: float, before: float, factor: float) -> float:
    """Move ``bound`` back towards ``before`` by ``factor`` of the gap, never past it."""
    if factor == 1.0:
        return before
    relaxed = bound + factor * (before - bound)
    # Rounding must neither overshoot ``before`` nor leave the valid range.
    relaxed = min(max(relaxed, min(bound, before)), max(bound, before))
    return cfg.nearest_valid(relaxed)


def _growth(cfg: Config, previous: float, current: float) -> float:
    """Relative growth of the statistic in the bound's direction (up for a ceiling)."""
    change = current - previous if cfg.side != "lower" else previous - current
    if previous == 0.0:
        return 0.0 if change <= 0 else math.inf
    return change / abs(previous)


def aggregate(side: Bound, values: Sequence[float]) -> float:
    """The shared statistic of several specs: the loosest, so the bound fits all of them."""
    return max(values) if side != "lower" else min(values)
