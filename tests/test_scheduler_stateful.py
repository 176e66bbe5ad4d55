"""Stateful properties of ConstraintScheduler and SchedulerCollection under random use.

A hypothesis state machine drives a scheduler built from a random valid
configuration with observations (finite, NaN, infinite, far off), rejects and
epoch boundaries, checks every event against what the documentation promises,
and keeps clones restored from JSON state dicts in lock step with it.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from typing import Any

import attrs
import hypothesis
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import Phase as Stage
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from strategies import (
    KINDS_WITH_BOUND,
    MIN_SOFT_SCALE,
    config_specs,
    constraint_specs,
    observation_values,
    scheduler_configs,
    shared_limits,
    target_window,
)

from constraint_sched import (
    BackedOff,
    Backoff,
    ConstraintScheduler,
    ConstraintSpec,
    Converged,
    Discovered,
    DiscoveryExtended,
    DiscoveryPhase,
    Event,
    Held,
    HoldPhase,
    Idle,
    Phase,
    SchedulerCollection,
    Squeezed,
    SqueezeSchedule,
)

MACHINE_SETTINGS = settings(
    max_examples=150,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    # No explain phase: on a long failing run it costs minutes and adds little.
    phases=[Stage.explicit, Stage.reuse, Stage.generate, Stage.target, Stage.shrink],
)


def looser(side: str, a: float, b: float) -> bool:
    """Whether bound ``a`` is strictly looser than ``b`` (a higher ceiling, a lower floor)."""
    return a > b if side == "upper" else a < b


def at_or_looser(side: str, a: float, b: float) -> bool:
    """Whether bound ``a`` is ``b`` or looser."""
    return a >= b if side == "upper" else a <= b


def beyond(side: str, value: float, bound: float) -> bool:
    """Whether an observation violates a bound."""
    return value > bound if side == "upper" else value < bound


def loosest(side: str, values: list[float]) -> float:
    """The bound shared by several specs: the max of ceilings, the min of floors."""
    return max(values) if side == "upper" else min(values)


def as_given(value: float, form: int) -> Any:
    """The value as a Python float, a numpy scalar or a 0-d array."""
    return [value, np.float64(value), np.asarray(value)][form]


def state_json(obj: ConstraintScheduler | SchedulerCollection) -> str:
    """A state dict as canonical strict JSON."""
    return json.dumps(obj.state_dict(), allow_nan=False, sort_keys=True)


@attrs.frozen
class IdleBoundary:
    """The last epoch boundary, when the epoch saw no step in a hold or a squeeze."""

    before: dict[str, Any]
    """The scheduler's ``state_dict()["state"]`` just before `advance_epoch`."""
    after: dict[str, Any]
    """The same just after."""
    events: list[Event]


class SchedulerMachine(RuleBasedStateMachine):
    """Random use of one scheduler, with JSON-restored clones that must never diverge from it."""

    @initialize(config=scheduler_configs(open_sides=True))
    def build(self, config: dict[str, Any]) -> None:
        self.config = config
        self.side: str = config["side"]
        self.original_specs = config_specs(config)
        self.names = [s.name for s in self.original_specs]
        self.scheduler = ConstraintScheduler(**config)
        self.clones: list[ConstraintScheduler] = []
        # What the test itself has seen, to check the scheduler's events against.
        self.discovery_values: dict[str, list[float]] = {n: [] for n in self.names}
        self.data_epochs = 0
        self.discovered = False
        self.hold_boundaries = 0
        self.last_squeeze: Squeezed | None = None
        self.fresh_squeeze = False
        self.undone: Squeezed | None = None
        self.last_backoff: BackedOff | None = None
        self.retried = True
        self.expected_rate = 0.0
        self.last_boundary: IdleBoundary | None = None
        self._new_epoch()

    def _new_epoch(self) -> None:
        self.counts = dict.fromkeys(self.names, 0)
        self.valid = 0
        self.nonfinite = 0
        self.violations = 0
        self.rejects = 0

    @property
    def all_schedulers(self) -> list[ConstraintScheduler]:
        return [self.scheduler, *self.clones]

    def _values(self, data: st.DataObject, finite: bool = False) -> float:
        values = observation_values(self.config, self.scheduler.bound, finite=finite)
        return data.draw(values, label="value")

    def _record(self, name: str, value: float) -> None:
        self.counts[name] += 1
        if not math.isfinite(value):
            self.nonfinite += 1
            return
        self.valid += 1
        if beyond(self.side, value, self.scheduler.bound):
            self.violations += 1
        if self.scheduler.phase is Phase.DISCOVERY:
            self.discovery_values[name].append(value)

    # -- rules ----------------------------------------------------------------

    @rule(data=st.data())
    def observe_one_value(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.names), label="name")
        value = self._values(data)
        form = data.draw(st.integers(0, 2), label="form")
        bare = len(self.names) == 1 and data.draw(st.booleans(), label="bare")
        given_value = as_given(value, form)
        raises = not math.isfinite(value) and self.config["nonfinite"] == "raise"
        for scheduler in self.all_schedulers:
            before = scheduler.current_epoch
            with pytest.raises(ValueError, match="non-finite") if raises else nullcontext():
                if bare:
                    scheduler.observe(given_value)
                else:
                    scheduler.observe(name, given_value)
            if raises:
                assert scheduler.current_epoch == before
        if not raises:
            self._record(name, value)

    @rule(data=st.data())
    def observe_a_mapping(self, data: st.DataObject) -> None:
        chosen = data.draw(
            st.lists(st.sampled_from(self.names), unique=True, min_size=1), label="names"
        )
        finite = self.config["nonfinite"] == "raise"
        values = {n: self._values(data, finite) for n in chosen}
        for scheduler in self.all_schedulers:
            scheduler.observe(dict(values))
        for name, value in values.items():
            self._record(name, value)

    @rule(count=st.integers(0, 3))
    def reject(self, count: int) -> None:
        for scheduler in self.all_schedulers:
            scheduler.reject(count)
        self.rejects += count

    @rule(data=st.data())
    def run_a_whole_epoch(self, data: st.DataObject) -> None:
        """A few steps, each accepted (observed) or rejected, then the epoch boundary."""
        for accepted in data.draw(st.lists(st.booleans(), max_size=6), label="steps"):
            if accepted:
                self.observe_a_mapping(data)
            else:
                self.reject(1)
        self.advance_epoch()

    @rule()
    def restore_a_clone_from_json(self) -> None:
        saved = json.loads(json.dumps(self.scheduler.state_dict(), allow_nan=False))
        clone = ConstraintScheduler(**self.config)
        clone.load_state_dict(saved)
        assert state_json(clone) == state_json(self.scheduler)
        self.clones = [*self.clones, clone][-2:]

    @rule()
    def advance_epoch(self) -> None:
        s = self.scheduler
        phase, bound, epoch = s.phase, s.bound, s.epoch
        # An epoch without a step (no observation, valid or not, no rejection) in a hold or
        # a squeeze moves nothing but the epoch: no held epoch counted, no step, no backoff.
        idle = phase in (Phase.HOLD, Phase.SQUEEZE) and max(self.counts.values()) == 0
        idle = idle and self.rejects == 0
        before = s.state_dict()["state"]
        backoff_due = None if idle else self._backoff_due()
        events = s.advance_epoch()
        for e in events:
            hypothesis.event(e.kind)  # shown by --hypothesis-show-statistics
        for clone in self.clones:
            clone_events = clone.advance_epoch()
            assert [attrs.asdict(e) for e in clone_events] == [attrs.asdict(e) for e in events]
            assert [type(e) for e in clone_events] == [type(e) for e in events]

        assert s.epoch == epoch + 1
        assert s.phase.value >= phase.value, "phases only move forward"
        self._check_epoch_record(phase, bound, epoch)
        self._check_chain(events, bound)
        kinds = [type(e) for e in events]
        if idle:
            # The model stays as it was (held epochs, a fresh squeeze to judge, a cooldown):
            # the invariant below checks the scheduler did the same.
            self.last_boundary = IdleBoundary(before, s.state_dict()["state"], events)
            self._new_epoch()
            return
        self.last_boundary = None
        assert Idle not in kinds, "only an epoch without a step in a hold or squeeze is idle"
        if phase is Phase.DISCOVERY:
            self._check_discovery(events, bound)
        else:
            assert Discovered not in kinds
            assert DiscoveryExtended not in kinds
        if phase is Phase.HOLD:
            self.hold_boundaries += 1
            still_holding = self.hold_boundaries < self.config["hold"].epochs
            assert (s.phase is Phase.HOLD) == still_holding
        if phase is Phase.CONVERGED:
            assert events == []
            assert s.bound == bound, "a converged bound is final"
        if self.config["squeeze"] is None:
            assert s.phase is not Phase.SQUEEZE
            assert Squeezed not in kinds
        self._check_backoff(events, backoff_due)
        for i, event in enumerate(events):
            if isinstance(event, Squeezed):
                self._check_squeezed(event)
            if isinstance(event, Converged):
                self._check_converged(event, events[i - 1] if i else None)
        self._new_epoch()

    # -- checks of one epoch boundary ---------------------------------------------

    def _check_epoch_record(self, phase: Phase, bound: float, epoch: int) -> None:
        last = self.scheduler.last_epoch
        assert last is not None
        assert (last.epoch, last.phase, last.bound) == (epoch, phase, bound)
        assert last.steps == max(self.counts.values())
        assert last.rejects == self.rejects
        assert last.observations == self.valid
        assert last.nonfinite == self.nonfinite
        assert last.violations == self.violations

    def _check_chain(self, events: list[Event], bound: float) -> None:
        s = self.scheduler
        running = bound
        for event in events:
            assert event.epoch == s.epoch, "an event names the epoch its bound applies in"
            assert event.constraint == s.name
            assert event.side == self.side
            assert event.old == running
            if isinstance(event, (Held, Converged, DiscoveryExtended, Idle)):
                assert event.new == event.old
            if looser(self.side, event.new, event.old):
                assert isinstance(event, (Discovered, BackedOff)), (
                    "past discovery, only a backoff loosens the bound"
                )
            running = event.new
        assert running == s.bound

    def _check_discovery(self, events: list[Event], bound: float) -> None:
        s, discovery = self.scheduler, self.config["discovery"]
        kinds = [type(e) for e in events]
        if self.valid == 0:
            assert kinds == [DiscoveryExtended], "an epoch without data only extends discovery"
            assert s.phase is Phase.DISCOVERY
            return
        self.data_epochs += 1
        found = [e for e in events if isinstance(e, Discovered)]
        too_early = self.data_epochs < discovery.epochs
        patience = discovery.max_epochs if discovery.plateau is not None else discovery.epochs
        if too_early:
            assert not found
        if self.data_epochs >= patience:
            assert found, f"discovery must end after {patience} epochs with data"
        if not found:
            assert s.phase is Phase.DISCOVERY
            assert s.bound == bound
            return
        assert not self.discovered, "discovery happens once"
        self.discovered = True
        (event,) = found
        assert events[0] is event
        early = any(isinstance(e, Converged) and e.early for e in events)
        self._check_discovered(event, early)

    def _check_discovered(self, event: Discovered, early: bool) -> None:
        discovery = self.config["discovery"]
        seen = {n: v for n, v in self.discovery_values.items() if v}
        assert event.statistic == discovery.statistic
        assert set(event.per_spec) == set(seen)
        assert event.observations == sum(len(v) for v in seen.values())
        assert event.value == loosest(self.side, list(event.per_spec.values()))
        for name, values in seen.items():
            got = event.per_spec[name]
            if discovery.statistic in ("max", "min"):
                extreme = max(values) if discovery.statistic == "max" else min(values)
                assert got == extreme, (name, values)
            else:
                assert min(values) <= got <= max(values)
                if len(values) <= discovery.reservoir:  # exact up to the reservoir's size
                    exact = float(np.quantile(values, discovery.quantile_level))
                    # Interpolation formulas differ by rounding only.
                    rounding = 1e-12 * max(abs(v) for v in values) + 1e-300
                    assert math.isclose(got, exact, rel_tol=1e-9, abs_tol=rounding)
        if discovery.statistic in ("max", "min"):
            every = [v for values in seen.values() for v in values]
            assert all(at_or_looser(self.side, event.value, v) for v in every)
        assert math.isfinite(event.new)
        if early:
            assert event.new == self.config["squeeze"].target
            return
        low, high = shared_limits(self.original_specs, self.side)
        if low < event.value < high:
            # The statistic itself gives valid specs: the bound contains it.
            assert at_or_looser(self.side, event.new, event.value)
        room = discovery.headroom * abs(event.value)
        widened = event.value + room if self.side == "upper" else event.value - room
        gap = 1e-5 * max(abs(widened), 1.0)
        if low + gap < widened < high - gap:
            assert event.new == widened
        else:
            # Moved to (about) the nearest bound that gives valid specs.
            edge = low if abs(widened - low) <= abs(widened - high) else high
            assert low < event.new < high or event.new == edge == MIN_SOFT_SCALE
            assert abs(event.new - edge) <= 1e-5 * max(abs(edge), 1.0)

    def _backoff_due(self) -> bool | None:
        """Whether the epoch now ending must back off (None: no backoff can happen)."""
        backoff = self.config["backoff"]
        if backoff is None or not self.fresh_squeeze:
            return None
        if backoff.metric == "reject_rate":
            steps = max(self.counts.values())
            total = steps + self.rejects
            rate = self.rejects / total if total else 0.0
        else:
            rate = self.violations / self.valid if self.valid else 0.0
        self.expected_rate = rate
        return rate > backoff.max_reject_rate

    def _check_backoff(self, events: list[Event], due: bool | None) -> None:
        backoffs = [e for e in events if isinstance(e, BackedOff)]
        if not due:
            assert not backoffs, "only an epoch on a fresh squeeze that hurt backs off"
        else:
            assert [type(e) for e in events] == [BackedOff]
            (event,) = backoffs
            config = self.config["backoff"]
            assert self.last_squeeze is not None
            before = self.last_squeeze.old
            assert event.metric == config.metric
            assert event.limit == config.max_reject_rate
            assert event.rate == self.expected_rate
            assert at_or_looser(self.side, event.new, event.old)
            assert at_or_looser(self.side, before, event.new), (
                f"backed off to {event.new!r}, past {before!r}, the bound before the squeeze"
            )
            self.undone = self.last_squeeze
            self.last_backoff = event
            self.retried = False
        squeezes = [e for e in events if isinstance(e, Squeezed)]
        self.fresh_squeeze = bool(squeezes) and self.scheduler.phase is Phase.SQUEEZE
        if squeezes:
            self.last_squeeze = squeezes[-1]

    def _check_squeezed(self, event: Squeezed) -> None:
        squeeze = self.config["squeeze"]
        assert squeeze is not None
        target = squeeze.target
        assert looser(self.side, event.old, event.new), "a squeeze always tightens"
        assert at_or_looser(self.side, event.new, target), "a squeeze stops at the target"
        # min(current, proposed) for a ceiling, clamped at the target.
        tightest = event.proposed if at_or_looser(self.side, event.proposed, target) else target
        assert event.new == tightest
        if self.last_backoff is not None and not self.retried:
            cooldown = self.config["backoff"].cooldown
            assert event.epoch >= self.last_backoff.epoch + cooldown + 1, "cooldown respected"
            if squeeze.kind != "adaptive":
                assert self.undone is not None
                assert event.proposed == self.undone.proposed, "the same step is retried"
            self.retried = True

    def _check_converged(self, event: Converged, previous: Event | None) -> None:
        s, squeeze = self.scheduler, self.config["squeeze"]
        assert s.phase is Phase.CONVERGED
        if squeeze is not None:
            assert event.new == squeeze.target
        early = squeeze is not None and isinstance(previous, Discovered)
        reason = "no_squeeze" if squeeze is None else "early" if early else "target"
        assert event.reason == reason

    # -- invariants -----------------------------------------------------------------

    @precondition(lambda self: self.last_boundary is not None)
    @invariant()
    def an_epoch_without_a_step_moves_only_the_epoch(self) -> None:
        """After an idle boundary: one `Idle` event, and the state moved only its epoch on."""
        boundary = self.last_boundary
        assert boundary is not None
        before, after = boundary.before, boundary.after
        (event,) = boundary.events
        assert isinstance(event, Idle)
        assert (event.kind, event.level) == ("idle", "warning")
        assert event.old == event.new == before["bound"]
        assert event.epoch == after["epoch"] == before["epoch"] + 1
        assert "saw no step" in event.message
        moved = {"epoch", "last_epoch"}
        assert {k: v for k, v in after.items() if k not in moved} == {
            k: v for k, v in before.items() if k not in moved
        }, "an epoch without a step changes nothing but the epoch"

    @invariant()
    def clones_match_the_original(self) -> None:
        s = self.scheduler
        for clone in self.clones:
            assert (clone.epoch, clone.phase, clone.bound) == (s.epoch, s.phase, s.bound)
            assert clone.discovered == s.discovered
            assert clone.current_epoch == s.current_epoch
            assert clone.last_epoch == s.last_epoch
            assert clone.specs == s.specs

    @invariant()
    def bound_and_specs_are_valid(self) -> None:
        s = self.scheduler
        assert s.specs == tuple(s.spec(n) for n in self.names)
        if s.phase is Phase.DISCOVERY:
            assert s.specs == tuple(self.original_specs)
            assert s.bound == loosest(self.side, [x.bound(self.side) for x in self.original_specs])
            return
        assert math.isfinite(s.bound), "a bound is finite after discovery"
        unit = max(abs(s.bound), 1.0)
        for spec, original in zip(s.specs, self.original_specs, strict=True):
            assert spec.bound(self.side) == s.bound
            for field in ("name", "kind", "steepness"):
                assert getattr(spec, field) == getattr(original, field)
            for x in (s.bound, s.bound + unit, s.bound - unit, 0.0):
                assert 0.0 <= spec.score(x) <= 1.0
        if s.phase is Phase.CONVERGED and self.config["squeeze"] is not None:
            assert s.bound == self.config["squeeze"].target

    @precondition(lambda self: self.scheduler.phase is not Phase.DISCOVERY)
    @invariant()
    def other_spec_fields_are_unchanged(self) -> None:
        field_moved = {"upper": {"upper", "margin", "scale"}, "lower": {"lower", "margin"}}
        for spec, original in zip(self.scheduler.specs, self.original_specs, strict=True):
            for field in ("lower", "upper", "margin", "scale"):
                if field not in field_moved[self.side]:
                    assert getattr(spec, field) == getattr(original, field)


SchedulerMachine.TestCase.settings = MACHINE_SETTINGS
test_scheduler_state_machine = SchedulerMachine.TestCase


# -- a backoff, directly ----------------------------------------------------------------


@st.composite
def squeeze_and_backoff_cases(draw: st.DrawFn) -> dict[str, Any]:
    """A one-spec scheduler configuration with a linear squeeze and a backoff, and a value.

    The spec is any kind; the value lies on the loose side of the target (for
    a floor sometimes outside the valid range, which moves the discovered
    bound to the nearest valid one); the backoff's factor is often exactly 1.0.
    """
    side = draw(st.sampled_from(["upper", "lower"]))
    spec = draw(constraint_specs(KINDS_WITH_BOUND[side]))
    window = target_window([spec], side)
    assume(window is not None)
    assert window is not None
    target = draw(st.floats(*window))
    reach = 1e3 * max(abs(target), 1.0)
    value = draw(
        st.floats(target, target + reach) if side == "upper" else st.floats(target - reach, target)
    )
    return {
        "spec": spec,
        "side": side,
        "target": target,
        "squeeze_epochs": draw(st.integers(2, 4)),
        "hold_epochs": draw(st.integers(0, 1)),
        "factor": draw(st.one_of(st.just(1.0), st.floats(0.05, 1.0))),
        "value": value,
    }


@given(squeeze_and_backoff_cases())
def test_a_backoff_relaxes_towards_the_bound_before_the_squeeze_never_past_it(
    case: dict[str, Any],
) -> None:
    side, value = case["side"], case["value"]
    scheduler = ConstraintScheduler(
        case["spec"],
        side=side,
        hold=HoldPhase(epochs=case["hold_epochs"]),
        squeeze=SqueezeSchedule.linear(target=case["target"], epochs=case["squeeze_epochs"]),
        backoff=Backoff(factor=case["factor"], cooldown=0),
    )
    for _ in range(3):  # discovery, then the hold if any, then the first squeeze
        scheduler.observe(value)
        if any(isinstance(e, Squeezed) for e in scheduler.advance_epoch()):
            break
    assume(scheduler.phase is Phase.SQUEEZE)
    squeezed = scheduler.bound
    before = scheduler.discovered  # the first squeeze starts from the discovered bound
    assert before is not None
    scheduler.observe(value)
    scheduler.reject(1)  # a reject rate of 1/2 > 0.15
    (event,) = scheduler.advance_epoch()
    assert isinstance(event, BackedOff)
    assert event.old == squeezed
    assert at_or_looser(side, event.new, squeezed)
    assert at_or_looser(side, before, event.new), (
        f"backed off to {event.new!r}, past {before!r}, the bound before the squeeze"
    )
    if case["factor"] == 1.0:
        assert event.new == before, "a factor of 1.0 restores the bound before the squeeze"


# -- SchedulerCollection ----------------------------------------------------------------


def _collection_of(configs: list[dict[str, Any]]) -> SchedulerCollection:
    return SchedulerCollection([ConstraintScheduler(**c) for c in configs])


@st.composite
def collection_configs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Two or three scheduler configurations whose scheduler and spec names are all distinct."""
    count = draw(st.integers(2, 3))
    return [
        draw(scheduler_configs(prefix=f"s{i}_", nonfinite="skip", open_sides=True))
        for i in range(count)
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(collection_configs(), st.data())
def test_a_collection_behaves_like_its_schedulers_driven_one_by_one(
    configs: list[dict[str, Any]], data: st.DataObject
) -> None:
    collection = _collection_of(configs)
    separate = [ConstraintScheduler(**c) for c in configs]
    owner = {spec.name: i for i, c in enumerate(configs) for spec in config_specs(c)}
    assert len(collection) == len(configs)
    for _ in range(data.draw(st.integers(0, 40), label="steps")):
        action = data.draw(st.sampled_from(["observe", "observe", "reject", "advance", "restore"]))
        if action == "observe":
            chosen = data.draw(st.lists(st.sampled_from(sorted(owner)), unique=True, min_size=1))
            values = {
                n: data.draw(observation_values(configs[owner[n]], separate[owner[n]].bound))
                for n in chosen
            }
            collection.observe(values)
            for name, value in values.items():
                separate[owner[name]].observe(name, value)
        elif action == "reject":
            count = data.draw(st.integers(0, 3))
            collection.reject(count)
            for scheduler in separate:
                scheduler.reject(count)
        elif action == "advance":
            events = collection.advance_epoch()
            assert events == [e for scheduler in separate for e in scheduler.advance_epoch()]
        else:
            saved = json.loads(json.dumps(collection.state_dict(), allow_nan=False))
            collection = _collection_of(configs)
            collection.load_state_dict(saved)
        assert collection.epoch == separate[0].epoch
        assert collection.specs == {s.name: s for sched in separate for s in sched.specs}
        for scheduler in separate:
            mine = collection[scheduler.name]
            assert (mine.epoch, mine.phase, mine.bound) == (
                scheduler.epoch,
                scheduler.phase,
                scheduler.bound,
            )
            assert mine.current_epoch == scheduler.current_epoch
            for name in scheduler.names:
                assert collection.spec(name) == scheduler.spec(name)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(collection_configs(), st.data())
def test_a_collection_loads_all_of_a_state_dict_or_nothing(
    configs: list[dict[str, Any]], data: st.DataObject
) -> None:
    source = _collection_of(configs)
    for _ in range(data.draw(st.integers(0, 4), label="epochs")):
        for config in configs:
            for spec in config_specs(config):
                source.observe({spec.name: data.draw(observation_values(config))})
        source.advance_epoch()
    saved = json.loads(json.dumps(source.state_dict(), allow_nan=False))
    target = _collection_of(configs)
    target.reject(2)
    target.advance_epoch()
    before = state_json(target)

    names = list(saved["schedulers"])
    broken = data.draw(st.sampled_from(names), label="broken")
    how = data.draw(st.sampled_from(["epoch", "phase", "missing", "config"]), label="how")
    entry = saved["schedulers"][broken]
    if how == "epoch":
        entry["state"]["epoch"] = 0
    elif how == "phase":
        entry["state"]["phase"] = "SIDEWAYS"
    elif how == "missing":
        del entry["state"]["bound"]
    else:
        entry["config"]["bound"] = "lower" if entry["config"]["bound"] == "upper" else "upper"
    with pytest.raises(ValueError, match="state_dict") as info:
        target.load_state_dict(saved)
    assert broken in str(info.value)
    assert state_json(target) == before


def test_collection_rejects_an_unknown_spec_name_without_recording_anything() -> None:
    floor = ConstraintScheduler(
        ConstraintSpec("b", "lower", margin=1.0),
        side="lower",
        discovery=DiscoveryPhase(statistic="min"),
    )
    collection = SchedulerCollection(
        [ConstraintScheduler(ConstraintSpec("a", "upper", margin=10.0)), floor]
    )
    before = state_json(collection)
    with pytest.raises(KeyError, match="nope"):
        collection.observe({"nope": 1.0})
    assert state_json(collection) == before
