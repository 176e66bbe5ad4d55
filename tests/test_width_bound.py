"""``side="width"``: a box's two sides moved together, around its fixed centre."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constraint_sched import (
    Backoff,
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    Event,
    HoldPhase,
    Phase,
    SchedulerCollection,
    SqueezeSchedule,
)

LOGVAR = ConstraintSpec("logvar", "box", lower=-15.0, upper=10.0)  # centre -2.5, half-width 12.5


def shrinking(spec: ConstraintSpec = LOGVAR, epochs: int = 2) -> ConstraintScheduler:
    """LBO.md section 5's box: kept ``epochs`` epochs, then shrunk by 2.5% an epoch."""
    return ConstraintScheduler(
        spec,
        side="width",
        discovery=DiscoveryPhase(statistic="given", epochs=epochs),
        hold=HoldPhase(epochs=0),
        squeeze=SqueezeSchedule.adaptive(target=1.0, factor=0.975, max_reject_rate=0.05),
        backoff=Backoff(max_reject_rate=0.15, factor=1.0),
    )


def centred_epoch(sched: ConstraintScheduler) -> list[Event]:
    """End an epoch with one step at the centre: inside any half-width, so no violation."""
    sched.observe(dict.fromkeys(sched.names, sched.centre))
    return sched.advance_epoch()


def test_a_given_width_shrinks_around_the_centre() -> None:
    sched = shrinking()
    assert (sched.side, sched.centre, sched.bound) == ("width", -2.5, 12.5)
    assert centred_epoch(sched) == []
    events = centred_epoch(sched)
    assert [e.message for e in events] == [
        "logvar: kept the given half-width 12.5; applies from epoch 3",
        "logvar: squeezed half-width 12.5 -> 12.1875 (epoch 3)",
    ]
    for _ in range(3):
        spec = sched.spec()
        assert spec.lower is not None
        assert spec.upper is not None
        assert (spec.lower + spec.upper) / 2 == pytest.approx(-2.5)
        assert spec.upper - spec.lower == pytest.approx(2 * sched.bound)
        centred_epoch(sched)
    assert sched.bound == pytest.approx(12.5 * 0.975**4)


def test_discovery_finds_the_smallest_centred_box_holding_every_observation() -> None:
    sched = ConstraintScheduler(LOGVAR, side="width", hold=HoldPhase(epochs=0))
    for x in (-1.0, 4.5, -6.0):  # distances 1.5, 7, 3.5 from -2.5
        sched.observe(x)
    event = sched.advance_epoch()[0]
    assert (event.kind, event.value, event.new) == ("discovered", 7.0, 7.0)
    assert (sched.spec().lower, sched.spec().upper) == (-9.5, 4.5)


def test_violations_count_values_outside_either_side() -> None:
    sched = ConstraintScheduler(LOGVAR, side="width", discovery=DiscoveryPhase(statistic="given"))
    for x in (-16.0, 11.0, 0.0, -15.0, 10.0):  # two outside, two on the sides, one inside
        sched.observe(x)
    assert sched.current_epoch.violations == 2


def test_a_squeeze_that_hurts_restores_the_wider_box() -> None:
    sched = shrinking(epochs=1)
    centred_epoch(sched)  # kept, squeezed to 12.1875 for epoch 2
    sched.reject(3)
    sched.observe(0.0)  # 3 of 4 steps rejected: back off
    kinds = [e.kind for e in sched.advance_epoch()]
    assert kinds == ["backed_off"]
    assert (sched.spec().lower, sched.spec().upper) == (-15.0, 10.0)


def test_nonfinite_observations_are_counted_not_measured() -> None:
    sched = ConstraintScheduler(LOGVAR, side="width", hold=HoldPhase(epochs=0))
    sched.observe(float("nan"))
    sched.observe(float("-inf"))
    sched.observe(0.5)
    assert sched.current_epoch.nonfinite == 2
    assert sched.advance_epoch()[0].new == 3.0
    with pytest.raises(TypeError, match="'logvar' must be a number"):
        sched.observe("wide")  # type: ignore[arg-type]


def test_boxes_sharing_a_centre_share_the_widest_half_width() -> None:
    narrow = ConstraintSpec("narrow", "box", lower=-1.0, upper=1.0)
    wide = ConstraintSpec("wide", "box", lower=-3.0, upper=3.0)
    sched = ConstraintScheduler(
        [narrow, wide],
        side="width",
        discovery=DiscoveryPhase(statistic="given"),
        hold=HoldPhase(0),
    )
    assert sched.bound == 3.0
    centred_epoch(sched)
    assert (sched.spec("narrow").lower, sched.spec("narrow").upper) == (-3.0, 3.0)


@pytest.mark.parametrize(
    ("specs", "discovery", "message"),
    [
        (
            [ConstraintSpec("kl", "box_asymmetric", lower=0.0, healthy=1.0, upper=2.0)],
            None,
            "side='width' moves BOX specs, and 'kl' is BOX_ASYMMETRIC",
        ),
        (
            [ConstraintSpec("var", "minimize_soft", scale=0.5)],
            None,
            "'var' is MINIMIZE_SOFT",
        ),
        (
            [LOGVAR, ConstraintSpec("ratio", "box", lower=0.0, upper=0.7)],
            None,
            "must share a centre, got {'logvar': -2.5, 'ratio': 0.35}",
        ),
        ([LOGVAR], DiscoveryPhase(statistic="min"), "cannot be discovered by statistic='min'"),
    ],
)
def test_invalid_width_schedulers_are_refused_naming_the_cause(
    specs: list[ConstraintSpec], discovery: DiscoveryPhase | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("{", r"\{")):
        ConstraintScheduler(specs, side="width", discovery=discovery)


def test_a_bad_side_name_lists_the_three_choices() -> None:
    with pytest.raises(ValueError, match="'upper', 'lower' or 'width', got 'both'"):
        ConstraintScheduler(LOGVAR, side="both")  # type: ignore[arg-type]


def test_a_target_must_be_a_positive_half_width() -> None:
    with pytest.raises(ValueError, match=r"squeeze bound -1\.0 gives no valid spec"):
        ConstraintScheduler(
            LOGVAR, side="width", squeeze=SqueezeSchedule.adaptive(target=-1.0, factor=0.9)
        )


def test_state_dict_restores_a_shrunk_box_and_refuses_another_side() -> None:
    sched = shrinking(epochs=1)
    for _ in range(3):
        centred_epoch(sched)
    clone = shrinking(epochs=1)
    clone.load_state_dict(sched.state_dict())
    assert clone.spec() == sched.spec()
    assert clone.phase is Phase.SQUEEZE
    ceiling = ConstraintScheduler(
        LOGVAR,
        discovery=DiscoveryPhase(statistic="given", epochs=1),
        hold=HoldPhase(epochs=0),
        squeeze=SqueezeSchedule.adaptive(target=1.0, factor=0.975, max_reject_rate=0.05),
        backoff=Backoff(max_reject_rate=0.15, factor=1.0),
    )
    with pytest.raises(ValueError, match=r"config\.bound"):
        ceiling.load_state_dict(sched.state_dict())


def test_a_collection_tightens_a_width_like_any_other_bound() -> None:
    collection = SchedulerCollection([shrinking(epochs=1)])
    collection.observe({"logvar": -2.5})  # the centre: a step inside the box
    collection.advance_epoch(tighten=False)  # kept, the squeeze held back
    assert collection.spec("logvar").upper == 10.0
    collection.observe({"logvar": -2.5})
    collection.advance_epoch(tighten=["logvar"])
    assert collection.spec("logvar").upper == pytest.approx(-2.5 + 12.5 * 0.975)


# -- the reference model: a half-width is a ceiling on the distance from the centre ----------

statistics = st.sampled_from(["max", "median", "given", "quantile"])


@st.composite
def runs(draw: st.DrawFn) -> dict[str, object]:
    centre = draw(st.floats(-1e3, 1e3, allow_nan=False))
    half = draw(st.floats(1e-2, 1e3, allow_nan=False))
    statistic = draw(statistics)
    discovery = DiscoveryPhase(
        statistic=statistic,
        epochs=draw(st.integers(1, 2)),
        **({"quantile": 0.9} if statistic == "quantile" else {}),
    )
    squeeze = draw(
        st.one_of(
            st.builds(
                SqueezeSchedule.adaptive,
                target=st.floats(1e-3, 1e2),
                factor=st.floats(0.5, 0.99),
                max_reject_rate=st.floats(0.0, 0.5),
            ),
            st.builds(
                SqueezeSchedule.geometric, target=st.floats(1e-3, 1e2), epochs=st.integers(1, 4)
            ),
        )
    )
    epochs = draw(
        st.lists(
            st.tuples(
                st.lists(
                    st.one_of(
                        st.floats(-2e3, 2e3, allow_nan=False),
                        st.sampled_from([math.nan, math.inf]),
                    ),
                    max_size=6,
                ),
                st.integers(0, 3),
            ),
            min_size=1,
            max_size=8,
        )
    )
    return {
        "centre": centre,
        "half": half,
        "discovery": discovery,
        "hold": HoldPhase(epochs=draw(st.integers(0, 1))),
        "squeeze": squeeze,
        "backoff": Backoff(max_reject_rate=draw(st.floats(0.05, 0.5)), factor=1.0),
        "epochs": epochs,
    }


@settings(max_examples=150, deadline=None)
@given(runs())
def test_a_width_bound_moves_exactly_as_a_ceiling_on_the_distance(run: dict) -> None:
    c, h = run["centre"], run["half"]
    box = ConstraintSpec("m", "box", lower=c - h, upper=c + h)
    parts = {k: run[k] for k in ("discovery", "hold", "squeeze", "backoff")}
    width = ConstraintScheduler(box, side="width", **parts)
    h = width.bound  # the half-width the box's own sides give, rounding included
    distance = ConstraintScheduler(ConstraintSpec("m", "upper", margin=h), **parts)
    for values, rejects in run["epochs"]:
        for x in values:
            width.observe(x)
            distance.observe(abs(x - width.centre))
        width.reject(rejects)
        distance.reject(rejects)
        assert width.current_epoch == distance.current_epoch
        got = [(e.kind, e.old, e.new) for e in width.advance_epoch()]
        want = [(e.kind, e.old, e.new) for e in distance.advance_epoch()]
        assert got == want
        assert (width.phase, width.bound) == (distance.phase, distance.bound)
        spec = width.spec()
        if width.phase is not Phase.DISCOVERY:
            assert spec.lower == width.centre - width.bound
            assert spec.upper == width.centre + width.bound
        clone = ConstraintScheduler(box, side="width", **parts)
        clone.load_state_dict(width.state_dict())
        assert (clone.spec(), clone.phase, clone.epoch) == (spec, width.phase, width.epoch)
