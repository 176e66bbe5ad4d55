"""Tally and ConstraintScheduler.merge: observations summarised elsewhere, merged at once."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constraint_sched import (
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    SchedulerCollection,
    SqueezeSchedule,
    Tally,
)

values = st.lists(
    st.one_of(
        st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
        st.sampled_from([math.nan, math.inf, -math.inf]),
    ),
    max_size=30,
)


def test_of_counts_extremes_violations_and_mean() -> None:
    t = Tally.of([3.0, math.nan, 5.0, 4.0, math.inf], bound=4.5)
    assert (t.count, t.nonfinite, t.valid, t.violations) == (5, 2, 3, 1)
    assert (t.maximum, t.minimum, t.total, t.mean) == (5.0, 3.0, 12.0, 4.0)
    assert t.samples == (3.0, 5.0, 4.0)
    floor = Tally.of([3.0, 5.0, 4.0], bound=4.5, side="lower")
    assert floor.violations == 2


def test_an_empty_tally_has_no_mean() -> None:
    t = Tally.of([math.nan])
    assert (t.count, t.valid, t.maximum, t.minimum) == (1, 0, -math.inf, math.inf)
    assert math.isnan(t.mean)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"count": -1}, ValueError, r"Tally.count must be an int >= 0, got -1"),
        ({"count": 1.5}, ValueError, r"Tally.count must be an int"),
        ({"count": True}, ValueError, r"Tally.count must be an int"),
        ({"count": 1, "nonfinite": 2}, ValueError, r"nonfinite \(2\) exceeds Tally.count \(1\)"),
        ({"count": 2, "nonfinite": 1, "violations": 2, "maximum": 1, "minimum": 1}, ValueError, r"violations \(2\) exceeds"),
        ({"count": 0, "maximum": 1.0}, ValueError, r"no valid observation must have maximum=-inf"),
        ({"count": 1}, ValueError, r"must be finite with 1 valid"),
        ({"count": 2, "maximum": 1.0, "minimum": 2.0}, ValueError, r"maximum \(1.0\) is below Tally.minimum \(2.0\)"),
        ({"count": 1, "maximum": 1.0, "minimum": 1.0, "samples": [1.0, 1.0]}, ValueError, r"holds 2 values but there are only 1"),
        ({"count": 1, "maximum": 1.0, "minimum": 1.0, "samples": [3.0]}, ValueError, r"samples\[0\] = 3.0 is not a finite value"),
        ({"count": 1, "maximum": 1.0, "minimum": 1.0, "samples": "x"}, TypeError, r"Tally.samples must be an iterable of numbers"),
    ],
    ids=[
        "negative-count", "float-count", "bool-count", "nonfinite-over-count",
        "violations-over-valid", "extremes-without-values", "infinite-extremes",
        "max-below-min", "too-many-samples", "sample-outside-extremes", "samples-not-numbers",
    ],
)  # fmt: skip
def test_contradictory_tallies_are_refused_naming_the_field(
    kwargs: dict, error: type, match: str
) -> None:
    count = kwargs.pop("count")
    with pytest.raises(error, match=match):
        Tally(count, **kwargs)


def _kl_scheduler(statistic: str = "max") -> ConstraintScheduler:
    specs = [
        ConstraintSpec(n, "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
        for n in ("kl_core", "kl_detail")
    ]
    quantile = 0.9 if statistic == "quantile" else None
    return ConstraintScheduler(
        specs,
        discovery=DiscoveryPhase(statistic=statistic, quantile=quantile),
        squeeze=SqueezeSchedule.geometric(target=3000.0, epochs=3),
    )


@pytest.mark.parametrize("statistic", ["max", "median", "quantile"])
@settings(max_examples=40, deadline=None)
@given(epochs=st.lists(st.tuples(values, values, st.integers(0, 3)), min_size=1, max_size=6))
def test_merging_a_tally_equals_observing_its_values(
    statistic: str, epochs: list[tuple[list[float], list[float], int]]
) -> None:
    merged, observed = _kl_scheduler(statistic), _kl_scheduler(statistic)
    for core, detail, rejects in epochs:
        for name, xs in (("kl_core", core), ("kl_detail", detail)):
            merged.merge(name, Tally.of(xs, bound=merged.bound))
            for x in xs:
                observed.observe(name, x)
        merged.reject(rejects)
        observed.reject(rejects)
        assert merged.advance_epoch() == observed.advance_epoch()
        assert merged.last_epoch == observed.last_epoch
        assert (merged.phase, merged.bound) == (observed.phase, observed.bound)


def test_merge_forms_and_errors() -> None:
    single = ConstraintScheduler(ConstraintSpec("kl", "upper", margin=1e9))
    single.merge(Tally(2, maximum=7.0, minimum=5.0))
    single.merge("kl", Tally(1, maximum=9.0, minimum=9.0))
    assert single.current_epoch.observations == 3
    with pytest.raises(TypeError, match=r"merge takes a Tally, got 3\.0"):
        single.merge(3.0)  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="has no spec 'nope'"):
        single.merge("nope", Tally(0))
    assert single.advance_epoch()[0].new == 9.0

    two = _kl_scheduler()
    with pytest.raises(TypeError, match="name it"):
        two.merge(Tally(0))


def test_merge_with_nonfinite_raise_refuses_and_records_nothing() -> None:
    sched = ConstraintScheduler(ConstraintSpec("kl", "upper", margin=1e9), nonfinite="raise")
    with pytest.raises(
        ValueError, match=r"1 non-finite observations of 'kl' \(nonfinite='raise'\)"
    ):
        sched.merge(Tally.of([1.0, math.nan]))
    assert sched.current_epoch.observations == 0


def test_a_median_discovery_needs_samples() -> None:
    sched = _kl_scheduler("median")
    with pytest.raises(
        ValueError, match=r"discovery by 'median' needs Tally.samples for 'kl_core'"
    ):
        sched.merge("kl_core", Tally(2, maximum=5.0, minimum=4.0))
    assert sched.current_epoch.observations == 0
    sched.merge("kl_core", Tally(2, maximum=5000.0, minimum=4000.0, samples=[4000.0, 5000.0]))
    assert sched.advance_epoch()[0].new == 4500.0


def test_a_collection_routes_merges_by_spec_name() -> None:
    mse = ConstraintScheduler(
        ConstraintSpec("mse", "minimize_soft", scale="auto"),
        discovery=DiscoveryPhase(statistic="median"),
    )
    both = SchedulerCollection([mse, _kl_scheduler()])
    both.merge("mse", Tally.of([0.2, 0.4, 0.3]))
    both.merge("kl_detail", Tally.of([40000.0]))
    with pytest.raises(KeyError, match="nope"):
        both.merge("nope", Tally(0))
    both.advance_epoch()
    assert both.spec("mse").scale == 0.3
    assert both.spec("kl_core").upper == 40000.0


def test_advance_epoch_can_stay_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="constraint_sched")
    sched, seen = _kl_scheduler(), []
    sched.add_callback(seen.append)
    sched.observe("kl_core", 5000.0)
    events = sched.advance_epoch(log=False)
    assert events  # callbacks still run:
    assert seen == events
    assert not caplog.records
    sched.observe("kl_core", 4000.0)  # a step: the held epoch counts, the squeeze starts
    sched.advance_epoch()
    assert caplog.records


def _scale_scheduler(reservoir: int, quantile: float) -> ConstraintScheduler:
    return ConstraintScheduler(
        ConstraintSpec("mse", "minimize_soft", scale="auto"),
        discovery=DiscoveryPhase(statistic="quantile", quantile=quantile, reservoir=reservoir),
    )


def test_a_sample_weighs_as_the_observations_it_stands_for() -> None:
    # 32 small values, then 3,200 large ones summarised by a sample of 32: the
    # 10% quantile of all 3,232 observations is large, though half the values given are small.
    sched = _scale_scheduler(reservoir=32, quantile=0.1)
    sched.merge(Tally.of([0.001] * 32))
    sched.merge(Tally(3200, maximum=1.0, minimum=1.0, total=3200.0, samples=[1.0] * 32))
    sched.advance_epoch()
    assert sched.spec().scale == 1.0


def test_merged_samples_keep_the_proportions_of_their_populations() -> None:
    sched = _scale_scheduler(reservoir=200, quantile=0.5)
    small = Tally(1000, maximum=0.0, minimum=0.0, samples=[0.0] * 200)
    large = Tally(9000, maximum=1.0, minimum=1.0, total=9000.0, samples=[1.0] * 200)
    sched.merge(small)
    sched.merge(large)
    state = sched.state_dict()["state"]["window"][0]
    share = state["values"].count(0.0) / len(state["values"])
    assert len(state["values"]) == 200
    assert state["count"] == 10_000
    assert 0.03 < share < 0.2  # 10% expected; a hypergeometric draw of 200


def test_a_merged_reservoir_keeps_sampling_and_restores_exactly() -> None:
    a, b = _scale_scheduler(16, 0.5), _scale_scheduler(16, 0.5)
    a.merge(
        Tally(
            100,
            maximum=99.0,
            minimum=0.0,
            total=4950.0,
            samples=[float(i) for i in range(0, 96, 6)],
        )
    )
    b.load_state_dict(a.state_dict())
    for x in range(100, 400):
        a.observe(float(x))
        b.observe(float(x))
    assert a.state_dict() == b.state_dict()
    values = a.state_dict()["state"]["window"][0]["values"]
    assert len(values) == 16
    assert sum(v >= 100 for v in values) >= 8  # later values keep entering: 3/4 expected
    assert a.advance_epoch() == b.advance_epoch()


def test_a_small_sample_stands_for_its_population_and_shrinks_the_sample() -> None:
    sched = _scale_scheduler(reservoir=8, quantile=0.5)
    for x in range(8):
        sched.observe(100.0 + x)  # 8 values, kept exactly
    # 3 values standing for 24: the union's share is 1/4 old, 3/4 new, and the
    # largest sample in which the new part can supply its share has 4 values.
    sched.merge(Tally(24, maximum=3.0, minimum=1.0, samples=[1.0, 2.0, 3.0]))
    window = sched.state_dict()["state"]["window"][0]
    assert window["count"] == 32
    values = sorted(window["values"])
    assert len(values) == 4
    assert sum(v >= 100 for v in values) == 1
    for _ in range(1000):  # later values keep entering the shrunken sample
        sched.observe(50.0)
    assert 50.0 in sched.state_dict()["state"]["window"][0]["values"]
    sched.advance_epoch()
    assert sched.spec().scale == 50.0
