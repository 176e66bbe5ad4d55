"""`ChanceConstraint` and `ChanceMultiplier`: the weight that holds a value under a moving bound."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constraint_sched import ChanceConstraint, ChanceMultiplier
from constraint_sched._chance import glide


def closed_loop(
    multiplier: ChanceMultiplier, bound: float, steps: int, seed: int = 0, lag: float = 10.0
) -> np.ndarray:
    """A toy model whose value follows ``12 / weight**0.7`` with a lag and 2% noise."""
    rng = np.random.default_rng(seed)
    level = 12.0
    values = []
    for _ in range(steps):
        level += (12.0 / multiplier.weight**0.7 - level) / lag
        value = level * (1.0 + 0.02 * rng.standard_normal())
        values.append(value)
        multiplier.update(value, bound)
    return np.asarray(values)


def test_defaults_and_the_margin_quantile() -> None:
    c = ChanceConstraint()
    assert c.alpha == 0.05
    assert c.z == pytest.approx(statistics.NormalDist().inv_cdf(0.95))
    assert c.lowest_weight == c.initial == 1.0
    assert ChanceConstraint(min_weight=0.1).lowest_weight == 0.1


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"alpha": 0.0}, "alpha must be in (0, 0.5]"),
        ({"alpha": 0.6}, "alpha must be in (0, 0.5]"),
        ({"alpha": "0.05"}, "alpha must be a number"),
        ({"initial": 0.0}, "initial must be in"),
        ({"integral_gain": -1.0}, "integral_gain"),
        ({"noise_window": 1}, "noise_window must be an int >= 2"),
        ({"noise_window": 2.5}, "noise_window must be an int >= 2"),
        ({"glide": 1.5}, "glide"),
        ({"min_weight": 2.0}, "initial must lie in [min_weight, max_weight]"),
        ({"max_weight": 0.5}, "initial must lie in [min_weight, max_weight]"),
        ({"smoothing": math.nan}, "smoothing"),
    ],
)
def test_invalid_settings_name_the_field(kwargs: dict, words: str) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        ChanceConstraint(**kwargs)
    assert words in str(info.value)


def test_the_weight_stays_initial_while_the_bound_is_unknown() -> None:
    m = ChanceMultiplier(ChanceConstraint(initial=2.0))
    for value in (1.0, 50.0, 3.0):
        assert m.update(value, math.inf) == 2.0


def test_a_value_over_the_bound_raises_the_weight_and_one_under_it_lowers_it_to_initial() -> None:
    m = ChanceMultiplier()
    for _ in range(100):
        m.update(12.0, 10.0)
    high = m.weight
    assert high > 2.0
    for _ in range(400):
        m.update(1.0, 10.0)
    assert m.weight == 1.0  # never under the plain objective's weight by default


def test_with_a_lower_min_weight_the_value_is_pulled_up_to_the_aim() -> None:
    m = ChanceMultiplier(ChanceConstraint(min_weight=1e-3))
    for _ in range(300):
        m.update(1.0, 10.0)
    assert m.weight < 0.5


def test_a_floor_mirrors_a_ceiling() -> None:
    ceiling, floor = ChanceMultiplier(side="upper"), ChanceMultiplier(side="lower")
    for _ in range(50):
        ceiling.update(12.0, 10.0)
        floor.update(-12.0, -10.0)
    assert floor.weight == pytest.approx(ceiling.weight)


def test_the_closed_loop_holds_the_value_just_under_the_bound_on_all_but_alpha_of_steps() -> None:
    m = ChanceMultiplier()
    values = closed_loop(m, bound=5.0, steps=3000)
    settled = values[1000:]
    # On white noise the margin is the normal quantile of 1 - alpha of the value's running
    # spread; the weight's own wandering adds a little: near alpha, and not far under it.
    assert 0.01 <= np.mean(settled > 5.0) <= 0.075
    assert 0.93 * 5.0 < np.mean(settled) < 5.0


def test_the_feed_forward_follows_a_falling_bound() -> None:
    """With the bound passed as it glides down, few steps are over it."""
    m = ChanceMultiplier()
    rng = np.random.default_rng(1)
    level, over = 12.0, 0
    for step in range(2000):
        bound = max(5.0, 10.0 * 0.9995**step)
        level += (12.0 / m.weight**0.7 - level) / 10.0
        value = level * (1.0 + 0.02 * rng.standard_normal())
        over += value > bound
        m.update(value, bound)
    assert over / 2000 < 0.05


def test_aim_tighter_than_the_bound_moves_the_value_there() -> None:
    at_bound, ahead = ChanceMultiplier(), ChanceMultiplier()
    for _ in range(50):
        at_bound.update(9.0, 10.0)
        ahead.update(9.0, 10.0, aim=8.0)
    assert ahead.weight > at_bound.weight


def test_a_non_finite_value_raises() -> None:
    m = ChanceMultiplier()
    with pytest.raises(ValueError, match="value must be finite"):
        m.update(math.nan, 10.0)


def test_state_dict_resumes_exactly() -> None:
    a = ChanceMultiplier()
    closed_loop(a, 5.0, 300)
    b = ChanceMultiplier()
    b.load_state_dict(a.state_dict())
    for value in (4.0, 6.0, 5.5, 3.0):
        assert a.update(value, 5.0) == b.update(value, 5.0)


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"noise": -1.0}, ValueError, "state['noise'] is out of range"),
        ({"steps": 1.5}, ValueError, "state['steps'] is out of range"),
        ({"log_weight": math.inf}, ValueError, "state['log_weight'] is out of range"),
        ({"mean": "x"}, ValueError, "state['mean'] must be a number"),
        ({"integral": None}, KeyError, "state['integral'] is missing"),
    ],
)
def test_a_bad_state_dict_names_the_entry_and_changes_nothing(
    change: dict, error: type[Exception], words: str
) -> None:
    m = ChanceMultiplier()
    closed_loop(m, 5.0, 50)
    before = m.state_dict()
    state = {**before, **change}
    state = {k: v for k, v in state.items() if v is not None}
    with pytest.raises(error) as info:
        m.load_state_dict(state)
    assert words in str(info.value)
    assert m.state_dict() == before


def test_settings_and_side_are_checked() -> None:
    with pytest.raises(TypeError, match="settings must be a ChanceConstraint"):
        ChanceMultiplier({"alpha": 0.1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="side must be 'upper' or 'lower'"):
        ChanceMultiplier(side="width")  # type: ignore[arg-type]


def test_glide_moves_geometrically_to_the_next_bound() -> None:
    assert glide(10.0, 5.0, 0.0) == 10.0
    assert glide(10.0, 5.0, 1.0) == pytest.approx(5.0)
    assert glide(10.0, 5.0, 0.5) == pytest.approx(math.sqrt(50.0))
    assert glide(10.0, 5.0, 3.0) == pytest.approx(5.0)
    assert glide(math.inf, 5.0, 0.5) == math.inf
    assert glide(1.0, -1.0, 0.5) == 0.0  # one sign to the other: linear


values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
bounds = st.one_of(st.just(math.inf), st.floats(min_value=1e-3, max_value=1e6))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(values, bounds), min_size=1, max_size=200))
def test_the_weight_is_always_finite_and_within_its_limits(steps: list) -> None:
    """Explosions, values far below the bound, bounds that jump: the weight stays in range."""
    cfg = ChanceConstraint()
    m = ChanceMultiplier(cfg)
    for value, bound in steps:
        w = m.update(value, bound)
        assert math.isfinite(w)
        assert cfg.lowest_weight * (1 - 1e-12) <= w <= cfg.max_weight * (1 + 1e-12)
