"""ConstraintScheduler beyond the seed: statistics, schedules, floors, backoff, errors, events."""

from __future__ import annotations

import logging
import math

import pytest
from seed_data import KL_TABLE, kl_specs

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
    Phase,
    Squeezed,
    SqueezeSchedule,
)


def ceiling(**kwargs: object) -> ConstraintScheduler:
    spec = ConstraintSpec("m", "box_asymmetric", lower=0.0, healthy=1.0, upper=math.inf)
    return ConstraintScheduler(spec, **kwargs)


def feed(sched: ConstraintScheduler, values: list[float], rejects: int = 0) -> list[Event]:
    for v in values:
        sched.observe(v)
    sched.reject(rejects)
    return sched.advance_epoch()


def bounds_over(sched: ConstraintScheduler, epochs: int, value: float = 1.0) -> list[float]:
    out = []
    for _ in range(epochs):
        feed(sched, [value])
        out.append(sched.bound)
    return out


# -- discovery ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("discovery", "expected"),
    [
        pytest.param(DiscoveryPhase(), 9.0, id="max"),
        pytest.param(DiscoveryPhase(statistic="median"), 5.0, id="median"),
        pytest.param(DiscoveryPhase(statistic="quantile", quantile=0.75), 7.0, id="quantile"),
        pytest.param(DiscoveryPhase(headroom=0.5), 13.5, id="max-headroom"),
    ],
)
def test_discovery_statistics(discovery: DiscoveryPhase, expected: float) -> None:
    sched = ceiling(discovery=discovery)
    feed(sched, [1.0, 9.0, 5.0, 3.0, 7.0])
    assert sched.bound == pytest.approx(expected)


def test_median_is_exact_up_to_the_reservoir_size() -> None:
    sched = ceiling(discovery=DiscoveryPhase(statistic="median", reservoir=200))
    values = [float((i * 37) % 200) for i in range(200)]  # 0..199 shuffled
    feed(sched, values)
    assert sched.bound == 99.5


def test_median_of_a_long_stream_is_estimated_from_a_uniform_sample() -> None:
    sched = ceiling(discovery=DiscoveryPhase(statistic="median", reservoir=512))
    values = [float((i * 7919) % 1000) for i in range(50_000)]  # a permutation-like spread
    feed(sched, values)
    assert sched.bound == pytest.approx(499.5, abs=40.0)  # ~2 standard errors of a 512 sample


def test_a_late_surge_still_reaches_a_sampled_quantile() -> None:
    """The sample stays uniform over the whole stream, not only its start."""
    sched = ceiling(discovery=DiscoveryPhase(statistic="quantile", quantile=0.9, reservoir=256))
    feed(sched, [1.0] * 10_000 + [100.0] * 10_000)
    assert sched.bound == 100.0


def test_headroom_on_a_negative_ceiling_still_contains_every_observation() -> None:
    spec = ConstraintSpec("m", "box", lower=-100.0, upper=0.0)
    sched = ConstraintScheduler(spec, discovery=DiscoveryPhase(headroom=0.1))
    feed(sched, [-30.0, -10.0, -20.0])
    assert sched.bound == pytest.approx(-9.0)  # -10 + 0.1 * |-10|, never -10 * 1.1 = -11
    assert sched.bound >= -10.0


def test_floor_discovers_the_min_and_headroom_widens_it_downwards() -> None:
    spec = ConstraintSpec("m", "box", lower=-1e9, upper=1e9)
    sched = ConstraintScheduler(
        spec, side="lower", discovery=DiscoveryPhase(statistic="min", headroom=0.1)
    )
    feed(sched, [5.0, -4.0, 2.0])
    assert sched.bound == pytest.approx(-4.4)
    assert sched.spec().lower == pytest.approx(-4.4)
    assert sched.spec().upper == 1e9


def test_a_floor_is_discovered_by_the_min_by_default() -> None:
    sched = ConstraintScheduler(ConstraintSpec("v", "box", lower=0.0, upper=500.0), side="lower")
    feed(sched, [40.0, 12.0, 30.0])
    assert sched.bound == 12.0


def test_discovery_over_several_epochs_keeps_one_window() -> None:
    sched = ceiling(discovery=DiscoveryPhase(epochs=3))
    assert feed(sched, [5.0]) == []
    assert feed(sched, [9.0]) == []
    (discovered, _held) = feed(sched, [7.0])
    assert isinstance(discovered, Discovered)
    assert (discovered.epoch, discovered.new, discovered.observations) == (4, 9.0, 3)


def test_plateau_extends_discovery_while_the_metric_still_rises() -> None:
    sched = ceiling(discovery=DiscoveryPhase(plateau=0.1, max_epochs=5))
    (first,) = feed(sched, [100.0])
    assert isinstance(first, DiscoveryExtended)
    assert "no earlier epoch" in first.reason
    (second,) = feed(sched, [150.0])
    assert isinstance(second, DiscoveryExtended)
    assert "grew 50.0% > plateau 10.0%" in second.reason
    discovered, _held = feed(sched, [160.0])  # +6.7%: a plateau
    assert isinstance(discovered, Discovered)
    assert (sched.epoch, sched.bound) == (4, 160.0)


def test_plateau_discovery_stops_at_max_epochs() -> None:
    sched = ceiling(discovery=DiscoveryPhase(plateau=0.01, max_epochs=3))
    feed(sched, [1.0])
    feed(sched, [2.0])
    discovered, _held = feed(sched, [4.0])
    assert isinstance(discovered, Discovered)
    assert sched.bound == 4.0


def test_plateau_epochs_without_data_do_not_count() -> None:
    sched = ceiling(discovery=DiscoveryPhase(plateau=0.1, max_epochs=2))
    feed(sched, [10.0])
    (empty,) = feed(sched, [])
    assert "no valid observation" in empty.reason
    assert sched.phase is Phase.DISCOVERY
    feed(sched, [10.5])
    assert sched.phase is Phase.HOLD


# -- schedules ----------------------------------------------------------------


def test_geometric_squeeze_pins_each_epoch() -> None:
    sched = ceiling(squeeze=SqueezeSchedule.geometric(target=100.0, epochs=4))
    feed(sched, [1600.0])
    assert bounds_over(sched, 5) == pytest.approx([800.0, 400.0, 200.0, 100.0, 100.0])
    assert sched.phase is Phase.CONVERGED


def test_linear_squeeze_pins_each_epoch() -> None:
    sched = ceiling(squeeze=SqueezeSchedule.linear(target=100.0, epochs=3), hold=HoldPhase(2))
    feed(sched, [400.0])
    assert bounds_over(sched, 5) == pytest.approx([400.0, 300.0, 200.0, 100.0, 100.0])


def test_adaptive_squeeze_waits_while_the_reject_rate_is_high() -> None:
    sched = ceiling(
        squeeze=SqueezeSchedule.adaptive(target=100.0, factor=0.5, max_reject_rate=0.1),
        hold=HoldPhase(0),
    )
    feed(sched, [1000.0])
    assert sched.bound == 500.0  # no hold: the first squeeze follows discovery
    feed(sched, [1.0] * 8, rejects=2)  # 20% rejected: wait
    assert sched.bound == 500.0
    feed(sched, [1.0] * 9, rejects=1)  # 10%: tighten
    assert sched.bound == 250.0
    feed(sched, [1.0])
    assert (sched.bound, sched.phase) == (125.0, Phase.SQUEEZE)
    feed(sched, [1.0])
    assert (sched.bound, sched.phase) == (100.0, Phase.CONVERGED)


def test_table_with_gaps_holds_the_previous_entry() -> None:
    sched = ceiling(squeeze=SqueezeSchedule.table({3: 50.0, 6: 10.0}))
    feed(sched, [100.0])
    assert bounds_over(sched, 5) == [50.0, 50.0, 50.0, 10.0, 10.0]


def test_a_squeeze_never_loosens() -> None:
    sched = ceiling(squeeze=SqueezeSchedule.table({3: 13000.0, 4: 11000.0, 5: 3000.0}))
    feed(sched, [12000.0])
    assert bounds_over(sched, 3) == [12000.0, 11000.0, 3000.0]


def test_without_a_squeeze_the_discovered_bound_is_final_after_the_hold() -> None:
    sched = ceiling(hold=HoldPhase(2))
    feed(sched, [7.0])
    assert sched.phase is Phase.HOLD
    assert feed(sched, [7.0]) == []
    (converged,) = feed(sched, [7.0])
    assert isinstance(converged, Converged)
    assert (converged.reason, converged.early) == ("no_squeeze", False)
    assert converged.message == "m: converged, ceiling 7 is final (no squeeze schedule) (epoch 4)"
    assert (sched.phase, sched.bound) == (Phase.CONVERGED, 7.0)


def test_floor_squeezes_upwards() -> None:
    spec = ConstraintSpec("var", "lower", margin=1e-9)
    sched = ConstraintScheduler(
        spec,
        side="lower",
        discovery=DiscoveryPhase(statistic="min"),
        squeeze=SqueezeSchedule.table({3: 0.2, 4: 0.5}),
    )
    feed(sched, [0.1, 0.3])
    assert sched.bound == 0.1
    assert bounds_over(sched, 2) == [0.2, 0.5]
    assert sched.phase is Phase.CONVERGED
    assert sched.spec().margin == 0.5


def test_violation_rate_backoff() -> None:
    sched = ceiling(
        squeeze=SqueezeSchedule.table({3: 10.0, 4: 5.0}),
        backoff=Backoff(max_reject_rate=0.25, metric="violation_rate", factor=1.0, cooldown=0),
    )
    feed(sched, [20.0])
    feed(sched, [20.0])
    assert sched.bound == 10.0
    (backoff,) = feed(sched, [9.0, 11.0, 12.0, 8.0])  # half beyond the ceiling
    assert isinstance(backoff, BackedOff)
    assert (backoff.metric, backoff.rate, backoff.new) == ("violation_rate", 0.5, 20.0)
    assert sched.last_epoch is not None
    assert sched.last_epoch.violation_rate == 0.5
    (retry,) = feed(sched, [9.0])  # cooldown 0: retry right away
    assert isinstance(retry, Squeezed)
    assert retry.new == 10.0


# -- spec validity for every bound -------------------------------------------


def test_a_discovered_ceiling_below_the_floor_is_moved_to_the_nearest_valid_bound() -> None:
    spec = ConstraintSpec("kl", "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
    sched = ConstraintScheduler(spec)
    feed(sched, [50.0, 80.0])
    assert sched.bound > 100.0
    assert sched.bound == pytest.approx(100.0, rel=1e-5)
    s = sched.spec()
    assert s.lower < s.healthy < s.upper


def test_a_discovered_scale_of_zero_is_floored_at_the_least_valid_scale() -> None:
    spec = ConstraintSpec("dead_dims", "minimize_soft", scale="auto")
    sched = ConstraintScheduler(spec, discovery=DiscoveryPhase(statistic="median"))
    feed(sched, [0.0, 0.0, 0.0])
    assert sched.bound == 5e-4
    assert sched.spec().score(0.0) == 1.0


def test_shared_specs_share_one_bound_and_keep_their_own_fields() -> None:
    a = ConstraintSpec("a", "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
    b = ConstraintSpec("b", "upper", margin=1e9)
    sched = ConstraintScheduler([a, b], squeeze=SqueezeSchedule.table({3: 2000.0}))
    sched.observe({"a": 5000.0, "b": 6000.0})
    feed(sched, [])
    assert (sched.spec("a").upper, sched.spec("b").margin) == (6000.0, 6000.0)
    sched.observe({"a": 1000.0, "b": 1000.0})  # the held epoch counts only with a step
    feed(sched, [])
    assert (sched.spec("a").upper, sched.spec("b").margin) == (2000.0, 2000.0)
    assert sched.spec("a").healthy == pytest.approx(2000.0 - 0.1 * 1900.0)


# -- events, logging, callbacks ----------------------------------------------


def test_events_are_logged_and_passed_to_callbacks(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Event] = []
    sched = ConstraintScheduler(
        kl_specs(), squeeze=SqueezeSchedule.table(KL_TABLE), callbacks=[seen.append]
    )
    later: list[str] = []
    sched.add_callback(lambda e: later.append(e.kind))
    sched.observe({"kl_core": 42358.2, "kl_detail": 38921.5})
    with caplog.at_level(logging.INFO, logger="constraint_sched"):
        events = sched.advance_epoch()
    assert seen == events
    assert later == ["discovered", "held"]
    assert [r.name for r in caplog.records] == ["constraint_sched"] * 2
    assert "discovered ceiling 42,358.2" in caplog.records[0].getMessage()
    assert "kl_core 42,358.2, kl_detail 38,921.5" in caplog.records[0].getMessage()
    assert isinstance(events[1], Held)


def test_event_messages_read_well() -> None:
    sched = ceiling(squeeze=SqueezeSchedule.table({3: 13000.0}), backoff=Backoff())
    feed(sched, [42358.2])
    (squeezed, converged) = feed(sched, [1.0])
    assert squeezed.message == "m: squeezed ceiling 42,358.2 -> 13,000 (epoch 3)"
    assert converged.message == "m: converged, ceiling 13,000 at its target (epoch 3)"


# -- input errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param(dict(side="middle"), ValueError, "side must be 'upper', 'lower' or 'width'", id="bad-side"),
        pytest.param(dict(nonfinite="ignore"), ValueError, "nonfinite must be 'skip' or 'raise'", id="bad-policy"),
        pytest.param(dict(backoff=Backoff()), ValueError, "backoff needs a squeeze", id="backoff-alone"),
        pytest.param(dict(discovery=DiscoveryPhase(statistic="min")), ValueError, r"statistic='max'", id="min-ceiling"),
        pytest.param(dict(squeeze=SqueezeSchedule.table({2: 500.0})), ValueError, "starts at epoch 2, inside", id="table-in-hold"),
        pytest.param(dict(squeeze=SqueezeSchedule.table({3: 500.0, 4: 5000.0})), ValueError, "must move down", id="table-loosens"),
        pytest.param(dict(squeeze=SqueezeSchedule.linear(target=50.0, epochs=3)), ValueError, "gives no valid spec", id="target-under-floor"),
        pytest.param(dict(discovery="max"), TypeError, "discovery must be a DiscoveryPhase", id="discovery-type"),
        pytest.param(dict(name=""), TypeError, "name must be a non-empty str", id="empty-name"),
    ],
)  # fmt: skip
def test_invalid_scheduler_arguments(kwargs: dict, error: type, match: str) -> None:
    spec = ConstraintSpec("kl", "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
    with pytest.raises(error, match=match):
        ConstraintScheduler(spec, **kwargs)


def test_the_old_name_bound_still_names_the_side_with_a_deprecation_warning() -> None:
    spec = ConstraintSpec("v", "lower", margin=1e-9)
    with pytest.warns(DeprecationWarning, match="now side="):
        sched = ConstraintScheduler(spec, bound="lower")
    assert sched.side == "lower"
    with pytest.raises(TypeError, match="side= alone"):
        ConstraintScheduler(spec, side="lower", bound="lower")


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        pytest.param(lambda: DiscoveryPhase(epochs=0), "epochs must be an int >= 1", id="epochs-0"),
        pytest.param(lambda: DiscoveryPhase(statistic="mean"), "statistic must be one of", id="stat"),
        pytest.param(lambda: DiscoveryPhase(statistic="quantile"), "quantile must be given", id="q-missing"),
        pytest.param(lambda: DiscoveryPhase(statistic="quantile", quantile=1.0), r"quantile must lie in \(0.0, 1.0\)", id="q-range"),
        pytest.param(lambda: DiscoveryPhase(headroom=-0.1), "headroom must lie in", id="headroom"),
        pytest.param(lambda: DiscoveryPhase(plateau=0.1), "plateau and max_epochs go together", id="plateau-alone"),
        pytest.param(lambda: DiscoveryPhase(epochs=3, plateau=0.1, max_epochs=2), "max_epochs must be >= epochs", id="max-epochs"),
        pytest.param(lambda: HoldPhase(-1), "HoldPhase.epochs must be an int >= 0", id="hold"),
        pytest.param(lambda: Backoff(max_reject_rate=0.0), "max_reject_rate must lie in", id="rate"),
        pytest.param(lambda: Backoff(factor=1.5), "factor must lie in", id="factor"),
        pytest.param(lambda: Backoff(metric="loss"), "metric must be one of", id="metric"),
        pytest.param(lambda: SqueezeSchedule.table({}), "non-empty", id="table-empty"),
        pytest.param(lambda: SqueezeSchedule.table({0: 1.0}), "epoch keys must be ints >= 1", id="table-key"),
        pytest.param(lambda: SqueezeSchedule.table({3: math.nan}), "bound for epoch 3 must be a finite", id="table-nan"),
        pytest.param(lambda: SqueezeSchedule.table({3: 5.0, 4: 1.0, 5: 3.0}), "must move one way", id="table-zigzag"),
        pytest.param(lambda: SqueezeSchedule.geometric(target=0.0, epochs=3), "must not be 0", id="geo-zero"),
        pytest.param(lambda: SqueezeSchedule.linear(target=math.inf, epochs=3), "target must be a finite", id="lin-inf"),
        pytest.param(lambda: SqueezeSchedule.linear(target=1.0, epochs=0), "epochs must be an int >= 1", id="lin-epochs"),
        pytest.param(lambda: SqueezeSchedule.adaptive(target=1.0, factor=1.0), r"factor must lie in \(0, 1\)", id="adaptive"),
    ],
)  # fmt: skip
def test_invalid_phase_and_schedule_settings(factory: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()  # type: ignore[operator]


def test_observe_errors_name_the_problem() -> None:
    sched = ConstraintScheduler(kl_specs())
    with pytest.raises(TypeError, match=r"observe\(value\) needs exactly one spec"):
        sched.observe(1.0)
    with pytest.raises(KeyError, match="has no spec 'kl'"):
        sched.observe("kl", 1.0)
    with pytest.raises(KeyError, match="has no spec 'kl'"):
        sched.observe({"kl": 1.0})
    with pytest.raises(TypeError, match="observation of 'kl_core' must be a number, got 'big'"):
        sched.observe("kl_core", "big")
    with pytest.raises(ValueError, match="count must be an int >= 0"):
        sched.reject(-1)
    assert sched.current_epoch.steps == 0


def test_geometric_from_a_bound_of_the_other_sign_moves_linearly_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = ConstraintSpec("m", "box", lower=-1e6, upper=1e6)
    sched = ConstraintScheduler(spec, squeeze=SqueezeSchedule.geometric(target=-5.0, epochs=3))
    feed(sched, [10.0])  # discovered 10: no factor takes 10 to -5
    with caplog.at_level(logging.INFO, logger="constraint_sched"):
        first = feed(sched, [-100.0])  # the hold ends: the first squeeze step
        later = [feed(sched, [-100.0]) for _ in range(2)]
    (squeezed,) = [e for e in first if isinstance(e, Squeezed)]
    assert squeezed.new == 5.0  # 10 + (-5 - 10) / 3
    assert squeezed.level == "warning"
    assert "differ in sign" in squeezed.note
    assert "3 equal steps" in squeezed.message
    assert [e.new for e in later[0]] == [0.0]
    assert [e.kind for e in later[1]] == ["squeezed", "converged"]
    assert sched.bound == -5.0
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "differ in sign" in warned[0].getMessage()


def test_counters_and_rates() -> None:
    sched = ceiling()
    for v in [1.0, 2.0, math.nan]:
        sched.observe(v)
    sched.reject(1)
    stats = sched.current_epoch
    assert (stats.steps, stats.rejects, stats.observations, stats.nonfinite) == (3, 1, 2, 1)
    assert stats.reject_rate == 0.25
    sched.advance_epoch()
    assert sched.current_epoch.steps == 0
    assert sched.last_epoch == stats


# -- regressions found by the property tests ----------------------------------


def test_full_backoff_restores_the_bound_before_the_squeeze_exactly() -> None:
    sched = ConstraintScheduler(
        ConstraintSpec("loss", "upper", margin=1e9),
        squeeze=SqueezeSchedule.table({3: 0.3, 4: 0.1}),
        backoff=Backoff(factor=1.0, cooldown=0),
    )
    feed(sched, [0.9])
    feed(sched, [0.9])
    feed(sched, [0.5], rejects=1)
    assert sched.bound == 0.9  # not 0.9000000000000001


def test_a_floor_backoff_to_a_tiny_bound_stays_a_valid_spec() -> None:
    sched = ConstraintScheduler(
        ConstraintSpec("entropy", "lower", margin=1e-3),
        side="lower",
        squeeze=SqueezeSchedule.table({3: 0.5, 4: 1.0}),
        backoff=Backoff(factor=1.0),
    )
    feed(sched, [1e-20])
    feed(sched, [0.7])
    (backoff,) = feed(sched, [0.7], rejects=1)
    assert isinstance(backoff, BackedOff)
    assert sched.bound == 1e-20
    assert sched.spec().margin == 1e-20
    feed(sched, [0.7])  # and the scheduler keeps working
    assert sched.epoch == 5


def test_a_floor_discovered_at_a_subnormal_value_is_kept() -> None:
    spec = ConstraintSpec("entropy", "lower", margin=1e-3)
    sched = ConstraintScheduler(spec, side="lower")
    feed(sched, [5e-310, 1.0])
    assert sched.bound == 5e-310
