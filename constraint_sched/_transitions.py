"""The scheduler's state and its one transition function, applied at each epoch boundary.

Everything a bound does between epochs is decided in `transition`: a pure
function of the configuration, the state and what the epoch saw, returning the
next state and the events. The mutable `ConstraintScheduler` only accumulates
observations and commits what `transition` returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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


def transition(cfg: Config, st: State, seen: EpochSummary) -> tuple[State, list[Event]]:
    """The state for the next epoch, and the events that lead to it.

    Args:
        cfg: The scheduler's configuration.
        st: The state during the epoch that just ended.
        seen: What that epoch saw.

    Returns:
        The next state (its ``epoch`` is one more) and the events, each
        carrying the epoch in which its new bound applies.
    """
    nxt = st.epoch + 1
    base: dict[str, Any] = {"constraint": cfg.name, "epoch": nxt, "side": cfg.side}
    events: list[Event] = []
    if st.settle_to is not None:
        events.append(Settled(**base, old=st.bound, new=st.settle_to))
        st = attrs.evolve(st, bound=st.settle_to, settle_to=None)

    if st.phase is Phase.DISCOVERY and cfg.discovery.statistic == "given":
        # The specs' own bound, kept: discovery only counts its epochs.
        if st.data_epochs + 1 < cfg.discovery.epochs:
            return attrs.evolve(st, epoch=nxt, data_epochs=st.data_epochs + 1), events
        seen = attrs.evolve(seen, statistic=st.bound, per_spec={})

    if st.phase is Phase.DISCOVERY:
        d = cfg.discovery
        if seen.stats.observations == 0 and d.statistic != "given":
            events.append(
                DiscoveryExtended(
                    **base,
                    old=st.bound,
                    new=st.bound,
                    reason=f"no valid observation in epoch {st.epoch}",
                )
            )
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
                        **base,
                        old=st.bound,
                        new=st.bound,
                        reason=f"waiting for a plateau: {why}",
                    )
                )
            return (
                attrs.evolve(
                    st, epoch=nxt, data_epochs=data_epochs, previous_statistic=seen.statistic
                ),
                events,
            )
        found = cfg.nearest_valid(cfg.widen(seen.statistic))
        target = cfg.squeeze.target if cfg.squeeze is not None else None
        early = target is not None and cfg.at_or_past(found, target)
        new = target if early and target is not None else found
        events.append(
            Discovered(
                **base,
                old=st.bound,
                new=new,
                statistic=d.statistic,
                value=seen.statistic,
                per_spec=dict(seen.per_spec),
                observations=seen.window_observations,
            )
        )
        st = attrs.evolve(
            st,
            epoch=nxt,
            bound=new,
            discovered=found,
            data_epochs=data_epochs,
            previous_statistic=seen.statistic,
        )
        if early:
            events.append(Converged(**base, old=new, new=new, reason="early", discovered=found))
            return attrs.evolve(st, phase=Phase.CONVERGED), events
        if cfg.hold.epochs > 0:
            events.append(Held(**base, old=new, new=new, epochs=cfg.hold.epochs))
            return attrs.evolve(st, phase=Phase.HOLD, hold_left=cfg.hold.epochs), events
        return _squeeze(cfg, attrs.evolve(st, phase=Phase.SQUEEZE), seen, events, base)

    if st.phase is Phase.HOLD:
        if st.hold_left > 1:
            return attrs.evolve(st, epoch=nxt, hold_left=st.hold_left - 1), events
        return _squeeze(
            cfg, attrs.evolve(st, epoch=nxt, phase=Phase.SQUEEZE, hold_left=0), seen, events, base
        )

    if st.phase is Phase.SQUEEZE:
        st = attrs.evolve(st, epoch=nxt)
        b = cfg.backoff
        if b is not None and st.fresh_squeeze and st.before_squeeze is not None:
            rate = (
                seen.stats.reject_rate if b.metric == "reject_rate" else seen.stats.violation_rate
            )
            if rate > b.max_reject_rate:
                relaxed = _relax(cfg, st.bound, st.before_squeeze, b.factor)
                events.append(
                    BackedOff(
                        **base,
                        old=st.bound,
                        new=relaxed,
                        metric=b.metric,
                        rate=rate,
                        limit=b.max_reject_rate,
                    )
                )
                return (
                    attrs.evolve(
                        st, bound=relaxed, step=st.step - 1, wait=b.cooldown, fresh_squeeze=False
                    ),
                    events,
                )
        if st.wait > 0:
            return attrs.evolve(st, wait=st.wait - 1, fresh_squeeze=False), events
        return _squeeze(cfg, st, seen, events, base)

    return attrs.evolve(st, epoch=nxt, fresh_squeeze=False), events


def end_window(cfg: Config, st: State, seen: EpochSummary) -> tuple[State, list[Event]]:
    """End a ``steps`` discovery inside its epoch (`DiscoveryPhase.steps`).

    The bound found applies at once, widened by the provisional headroom until
    the epoch's boundary, where `transition` settles it and the hold starts.
    A bound found at or past the target converges at once, at the target.

    Args:
        cfg: The scheduler's configuration.
        st: The state, in discovery.
        seen: What the window saw (its ``statistic`` is not None).

    Returns:
        The state for the rest of the epoch (same ``epoch``) and the events.
    """
    assert seen.statistic is not None
    base: dict[str, Any] = {"constraint": cfg.name, "epoch": st.epoch, "side": cfg.side}
    found = cfg.nearest_valid(cfg.widen(seen.statistic))
    target = cfg.squeeze.target if cfg.squeeze is not None else None
    early = target is not None and cfg.at_or_past(found, target)
    room = cfg.discovery.provisional_headroom * abs(found)
    provisional = cfg.nearest_valid(found + room if cfg.side != "lower" else found - room)
    new = target if early and target is not None else provisional
    events: list[Event] = [
        Discovered(
            **base,
            old=st.bound,
            new=new,
            statistic=cfg.discovery.statistic,
            value=seen.statistic,
            per_spec=dict(seen.per_spec),
            observations=seen.window_observations,
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
        return attrs.evolve(st, phase=Phase.CONVERGED), events
    if cfg.hold.epochs > 0:
        following = {**base, "epoch": st.epoch + 1}
        events.append(Held(**following, old=found, new=found, epochs=cfg.hold.epochs))
    # The rest of this epoch is held too; the hold's epochs count from the next.
    settle = None if new == found else found
    return attrs.evolve(st, phase=Phase.HOLD, hold_left=cfg.hold.epochs + 1, settle_to=settle), (
        events
    )


def _squeeze(
    cfg: Config, st: State, seen: EpochSummary, events: list[Event], base: Mapping[str, Any]
) -> tuple[State, list[Event]]:
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
    new = cfg.tighter(st.bound, proposed)
    if cfg.at_or_past(new, schedule.target):
        new = schedule.target
    if new == st.bound:
        return attrs.evolve(st, step=step, fresh_squeeze=False), events
    note = ""
    if step == 1 and no_factor(schedule, st.discovered):
        note = (
            f"the discovered {_bound_word(cfg)} {st.discovered:g} and the target "
            f"{schedule.target:g} differ in sign (or the bound is 0), so no factor leads from one "
            f"to the other: this geometric squeeze moves in {schedule.epochs} equal steps instead"
        )
    events.append(Squeezed(**base, old=st.bound, new=new, proposed=proposed, note=note))
    st = attrs.evolve(st, bound=new, step=step, before_squeeze=st.bound, fresh_squeeze=True)
    if new == schedule.target:
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
    new = cfg.tighter(st.bound, proposed)
    return schedule.target if cfg.at_or_past(new, schedule.target) else new


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
