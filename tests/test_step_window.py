"""DiscoveryPhase(steps=...): discovery that ends inside its first epoch (LBO's auto scales)."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from constraint_sched import (
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    HoldPhase,
    Phase,
    SchedulerCollection,
    SqueezeSchedule,
    Tally,
)


def calibration(
    steps: int = 200, *, headroom: float = 0.1, hold: int = 1, target: float = 0.01
) -> ConstraintScheduler:
    """LBO.md section 3: the median of the first `steps` steps, 10% wider for the rest of epoch 1."""
    return ConstraintScheduler(
        ConstraintSpec("mse", "minimize_soft", scale="auto"),
        discovery=DiscoveryPhase(statistic="median", steps=steps, provisional_headroom=headroom),
        hold=HoldPhase(epochs=hold),
        squeeze=SqueezeSchedule.geometric(target=target, epochs=3),
    )


def test_the_lbo_calibration_epoch_by_epoch() -> None:
    sched, seen = calibration(), []
    sched.add_callback(seen.append)
    values = [0.2 + 0.001 * (i % 97) for i in range(500)]
    for i, x in enumerate(values):
        sched.observe(x)
        if i == 198:
            assert sched.phase is Phase.DISCOVERY
            assert sched.spec().scale == "auto"
    median = statistics.median(values[:200])
    assert sched.phase is Phase.HOLD
    assert sched.bound == pytest.approx(1.1 * median)
    assert [e.kind for e in seen] == ["discovered", "held"]
    assert seen[0].epoch == 1  # applies at once, inside epoch 1
    assert seen[0].value == median
    assert seen[1].epoch == 2  # the hold's epochs count from the next epoch
    events = sched.advance_epoch()
    assert [e.kind for e in events] == ["settled"]
    assert (events[0].old, events[0].new) == (pytest.approx(1.1 * median), median)
    assert (sched.epoch, sched.phase, sched.bound) == (2, Phase.HOLD, median)
    sched.observe(median)  # the held epoch counts only with a step in it
    assert [e.kind for e in sched.advance_epoch()] == ["squeezed"]  # epoch 3 = 1 + hold + 1
    assert sched.epoch == 3
    assert sched.phase is Phase.SQUEEZE


def test_rejected_steps_count_and_the_window_ends_at_the_next_record() -> None:
    sched = calibration(steps=5)
    for x in (1.0, 2.0, 3.0):
        sched.observe(x)
    sched.reject(2)  # 5 steps: the window is full, and ends when values are next recorded
    assert sched.phase is Phase.DISCOVERY
    sched.observe(10.0)
    assert sched.phase is Phase.HOLD
    assert sched.discovered == statistics.median([1.0, 2.0, 3.0, 10.0])


def test_an_epoch_shorter_than_the_window_discovers_at_its_end_without_provisional_room() -> None:
    sched = calibration(steps=100)
    for x in (1.0, 2.0, 3.0):
        sched.observe(x)
    kinds = [e.kind for e in sched.advance_epoch()]
    assert kinds == ["discovered", "held"]
    assert sched.bound == 2.0


def test_a_window_without_a_valid_value_waits_for_the_epoch() -> None:
    sched = calibration(steps=3)
    for _ in range(5):
        sched.observe(math.nan)
    assert sched.phase is Phase.DISCOVERY
    assert [e.kind for e in sched.advance_epoch()] == ["discovery_extended"]
    for x in (4.0, 5.0, 6.0):
        sched.observe(x)
    assert sched.phase is Phase.HOLD  # the window applies to the next discovery epoch too
    assert sched.bound == pytest.approx(5.5)


def test_a_window_at_or_past_the_target_converges_at_once() -> None:
    sched, seen = calibration(steps=3, target=0.5), []
    sched.add_callback(seen.append)
    for x in (0.1, 0.2, 0.3):
        sched.observe(x)
    assert [e.kind for e in seen] == ["discovered", "converged"]
    assert (sched.phase, sched.bound) == (Phase.CONVERGED, 0.5)
    assert sched.advance_epoch() == []  # nothing to settle


def test_a_floor_is_widened_downwards() -> None:
    floor = ConstraintScheduler(
        ConstraintSpec("var", "lower", margin=1e-9),
        side="lower",
        discovery=DiscoveryPhase(statistic="min", steps=3, provisional_headroom=0.5),
    )
    for x in (4.0, 2.0, 3.0):
        floor.observe(x)
    assert floor.bound == 1.0  # 2 - 0.5 * 2
    assert [e.kind for e in floor.advance_epoch()] == ["settled"]
    assert floor.bound == 2.0


def test_a_restored_scheduler_settles_the_same_way() -> None:
    sched = calibration(steps=4)
    for x in (1.0, 2.0, 3.0, 4.0, 9.0):
        sched.observe(x)
    clone = calibration(steps=4)
    clone.load_state_dict(json.loads(json.dumps(sched.state_dict())))
    assert clone.bound == sched.bound
    assert clone.advance_epoch() == sched.advance_epoch()
    assert clone.bound == sched.bound == 2.5


def test_a_merge_ends_the_window_and_can_stay_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="constraint_sched")
    sched, seen = calibration(steps=4), []
    both = SchedulerCollection([sched])
    sched.add_callback(seen.append)
    both.merge("mse", Tally.of([1.0, 2.0, 3.0, 4.0]), log=False)
    assert sched.phase is Phase.HOLD
    assert [e.kind for e in seen] == ["discovered", "held"]
    assert not caplog.records


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"steps": 10, "epochs": 2},
            r"steps ends discovery inside its first epoch: it needs epochs=1",
        ),
        ({"steps": 10, "plateau": 0.1, "max_epochs": 3}, r"needs epochs=1 and no plateau"),
        ({"provisional_headroom": 0.1}, r"provisional_headroom .* needs steps"),
        ({"steps": 0}, r"DiscoveryPhase.steps"),
        ({"steps": 5, "provisional_headroom": -0.1}, r"DiscoveryPhase.provisional_headroom"),
    ],
    ids=["two-epochs", "plateau", "headroom-without-steps", "zero-steps", "negative-headroom"],
)
def test_invalid_windows_are_refused_naming_the_field(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DiscoveryPhase(statistic="median", **kwargs)
