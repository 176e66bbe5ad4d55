"""`Relative`: a squeeze target given as a fraction of the bound discovery finds."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constraint_sched import (
    ConstraintScheduler,
    ConstraintSpec,
    Converged,
    Phase,
    Relative,
    SqueezeSchedule,
)


def kl_scheduler(
    target: float | Relative, epochs: int = 2, box: bool = False
) -> ConstraintScheduler:
    spec = (
        ConstraintSpec("kl", "box_asymmetric", lower=10.0, healthy=50.0, upper=1e9)
        if box
        else ConstraintSpec("kl", "upper", margin=1e9)
    )
    return ConstraintScheduler(
        spec, squeeze=SqueezeSchedule.geometric(target=target, epochs=epochs)
    )


def walk(sched: ConstraintScheduler, first: float, epochs: int) -> list[float]:
    """Observe ``first`` in epoch 1, then values far under every bound; the bounds in force."""
    bounds = []
    sched.observe(first)
    sched.advance_epoch(log=False)
    for _ in range(epochs):
        bounds.append(sched.bound)
        sched.observe(0.0)
        sched.advance_epoch(log=False)
    bounds.append(sched.bound)
    return bounds


@pytest.mark.parametrize(
    ("fraction", "error", "words"),
    [
        (0.0, ValueError, "positive and finite"),
        (-0.5, ValueError, "positive and finite"),
        (math.inf, ValueError, "positive and finite"),
        ("0.5", TypeError, "must be a number"),
        (True, TypeError, "must be a number"),
    ],
)
def test_a_fraction_must_be_a_positive_number(fraction: object, error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        Relative(fraction)  # type: ignore[arg-type]


def test_a_table_holds_absolute_bounds_only() -> None:
    with pytest.raises(ValueError, match="a Relative target needs geometric, linear or adaptive"):
        SqueezeSchedule("table", target=Relative(0.5), table_entries=((3, 1.0),))


def test_the_target_is_the_fraction_of_what_discovery_found() -> None:
    sched = kl_scheduler(Relative(0.25))
    assert sched.target is None  # not known yet
    bounds = walk(sched, 240.0, epochs=3)
    assert sched.target == 60.0
    assert bounds == [240.0, pytest.approx(120.0), 60.0, 60.0]  # hold, squeeze in 2 epochs
    assert sched.phase is Phase.CONVERGED


@pytest.mark.parametrize("found", [24.0, 240.0, 2400.0])
def test_the_same_relative_schedule_fits_any_level(found: float) -> None:
    """No units: a value ten times larger is squeezed through bounds ten times larger."""
    bounds = walk(kl_scheduler(Relative(0.5), epochs=3), found, epochs=4)
    reference = walk(kl_scheduler(Relative(0.5), epochs=3), 1.0, epochs=4)
    assert bounds == pytest.approx([found * b for b in reference])


def test_linear_and_adaptive_schedules_take_a_relative_target() -> None:
    linear = ConstraintScheduler(
        ConstraintSpec("kl", "upper", margin=1e9),
        squeeze=SqueezeSchedule.linear(target=Relative(0.5), epochs=2),
    )
    assert walk(linear, 100.0, epochs=3)[-2:] == [pytest.approx(50.0), pytest.approx(50.0)]
    adaptive = SqueezeSchedule.adaptive(target=Relative(0.5), factor=0.5)
    assert adaptive.propose(1, start=100.0, current=100.0) == 50.0


def test_a_relative_target_at_or_past_the_discovered_bound_converges_early() -> None:
    sched = kl_scheduler(Relative(2.0))
    sched.observe(10.0)
    events = sched.advance_epoch(log=False)
    converged = [e for e in events if isinstance(e, Converged)]
    assert converged
    assert converged[0].early
    assert sched.bound == 20.0


def test_a_relative_target_outside_the_valid_range_is_moved_into_it() -> None:
    """A box's ceiling cannot go under its floor: a tenth of 60 (6) becomes just over 10."""
    sched = kl_scheduler(Relative(0.1), box=True)
    walk(sched, 60.0, epochs=3)
    target = sched.target
    assert target is not None
    assert 10.0 < target < 10.001
    assert sched.bound == target


def test_state_dicts_keep_a_relative_target_and_refuse_another() -> None:
    a = kl_scheduler(Relative(0.25))
    walk(a, 240.0, epochs=1)
    state = json.loads(json.dumps(a.state_dict()))
    b = kl_scheduler(Relative(0.25))
    b.load_state_dict(state)
    assert (b.bound, b.target, b.phase) == (a.bound, a.target, a.phase)
    with pytest.raises(ValueError, match=r"squeeze\.target"):
        kl_scheduler(Relative(0.5)).load_state_dict(state)
    with pytest.raises(ValueError, match=r"squeeze\.target"):
        kl_scheduler(60.0).load_state_dict(state)


@settings(max_examples=50, deadline=None)
@given(
    st.floats(min_value=1e-3, max_value=1e6),
    st.floats(min_value=0.01, max_value=0.99),
    st.integers(min_value=1, max_value=6),
)
def test_a_squeeze_to_a_relative_target_never_loosens_and_ends_on_it(
    found: float, fraction: float, epochs: int
) -> None:
    sched = kl_scheduler(Relative(fraction), epochs=epochs)
    bounds = walk(sched, found, epochs=epochs + 2)
    assert all(b >= a for a, b in zip(bounds[1:], bounds, strict=False))  # never loosens
    assert sched.phase is Phase.CONVERGED
    assert sched.bound == pytest.approx(fraction * found)
