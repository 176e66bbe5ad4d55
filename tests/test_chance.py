"""`ChanceConstraint` and `ChanceMultiplier`: the weight that holds a value under a moving bound."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constraint_sched import ChanceConstraint, ChanceMultiplier
from constraint_sched._chance import glide
from constraint_sched.functional import (
    StepPlan,
    chance_step,
    initial_state,
)
from constraint_sched.functional import host as FLOAT_OPS


def closed_loop(
    multiplier: ChanceMultiplier,
    bound: float,
    epochs: int,
    steps: int = 100,
    *,
    seed: int = 0,
    scale: float = 1.0,
    discover: int = 50,
) -> np.ndarray:
    """A toy model: its value relaxes to ``12 / (1 + weight / (0.05 scale))**0.7``, 2% noise.

    The main loss is ``3 scale``: a model whose loss is in other units (``scale``)
    needs a weight ``scale`` times as large for the same value. ``discover``
    steps at an unknown bound come first; an epoch ends every ``steps`` steps.
    """
    rng = np.random.default_rng(seed)
    level = 12.0
    values = []
    for step in range(discover + epochs * steps):
        natural = 12.0 / (1.0 + multiplier.weight / (0.05 * scale)) ** 0.7
        level += (natural - level) / 5.0
        value = level * (1.0 + 0.02 * rng.standard_normal())
        values.append(value)
        multiplier.update(value, bound if step >= discover else math.inf, main=3.0 * scale)
        if step >= discover and (step - discover + 1) % steps == 0:
            multiplier.end_epoch()
    return np.asarray(values[discover:])


def test_defaults_and_the_margin_quantile() -> None:
    c = ChanceConstraint()
    assert c.alpha == 0.05
    assert c.step_share == pytest.approx(0.05 / 1.9)
    assert c.z == pytest.approx(statistics.NormalDist().inv_cdf(1 - 0.05 / 1.9))
    assert ChanceConstraint(alpha=0.5).z == 0.0  # aims the mean at the bound
    assert c.first_weight == 1.0
    assert c.min_weight < c.first_weight < c.max_weight


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"alpha": 0.0}, "alpha must be in (0, 0.5]"),
        ({"alpha": 0.6}, "alpha must be in (0, 0.5]"),
        ({"alpha": "0.05"}, "alpha must be a number"),
        ({"alpha": True}, "alpha must be a number"),
        ({"first_weight": 0.0}, "first_weight must be in"),
        ({"integral_gain": -1.0}, "integral_gain"),
        ({"proportional_gain": math.nan}, "proportional_gain"),
        ({"noise_window": 1}, "noise_window must be an int >= 2"),
        ({"noise_window": 2.5}, "noise_window must be an int >= 2"),
        ({"scale_window": 0}, "scale_window must be an int >= 2"),
        ({"glide": 1.5}, "glide"),
        ({"min_weight": 2.0}, "first_weight must lie in [min_weight, max_weight]"),
        ({"max_weight": 0.5}, "first_weight must lie in [min_weight, max_weight]"),
    ],
)
def test_invalid_settings_name_the_field(kwargs: dict, words: str) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        ChanceConstraint(**kwargs)
    assert words in str(info.value)


def test_the_weight_is_zero_while_the_bound_is_unknown() -> None:
    m = ChanceMultiplier()
    for value in (1.0, 50.0, 3.0):
        assert m.update(value, math.inf, main=2.0) == 0.0
    assert m.weight == 0.0
    assert math.isnan(m.unit)


def test_the_first_weight_is_the_main_loss_level_over_the_bound() -> None:
    """At 1 weight unit the term at the bound is as large as the main loss."""
    m = ChanceMultiplier(ChanceConstraint(proportional_gain=0.0, integral_gain=1e-9))
    for _ in range(200):
        m.update(4.0, math.inf, main=30.0)
    m.update(4.0, 8.0, main=999.0)  # the main loss is read in discovery only
    assert m.unit == pytest.approx(30.0 / 8.0)
    assert m.weight == pytest.approx(30.0 / 8.0, rel=1e-6)
    half = ChanceMultiplier(ChanceConstraint(first_weight=0.5, integral_gain=1e-9))
    for _ in range(200):
        half.update(4.0, math.inf, main=30.0)
    half.update(4.0, 8.0, main=30.0)
    assert half.weight == pytest.approx(0.5 * 30.0 / 8.0, rel=1e-3)


def test_a_multiplier_with_no_discovery_takes_the_first_main_loss_as_its_level() -> None:
    m = ChanceMultiplier()
    m.update(12.0, 10.0, main=50.0)
    assert m.unit == pytest.approx(5.0)


def test_the_main_loss_level_sets_only_the_unit_every_weight_scales_with_it() -> None:
    """A main loss c times larger: the same values give weights exactly c times larger."""
    for c in (1e-3, 7.5, 1e3):
        a, b = ChanceMultiplier(), ChanceMultiplier()
        rng = np.random.default_rng(4)
        for step in range(400):
            value = float(rng.uniform(2.0, 14.0))
            main = float(rng.uniform(1.0, 3.0))
            bound = math.inf if step < 60 else 10.0 * 0.999**step
            wa = a.update(value, bound, main=main)
            wb = b.update(value, bound, main=c * main)
            assert wb == pytest.approx(c * wa, rel=1e-9)
            if step % 90 == 89:
                a.end_epoch()
                b.end_epoch()


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
def test_the_closed_loop_is_the_same_at_any_loss_scale(scale: float) -> None:
    """A model whose loss is in other units, with the main loss in those units: the same run."""
    reference = closed_loop(ChanceMultiplier(), bound=5.0, epochs=5)
    values = closed_loop(ChanceMultiplier(), bound=5.0, epochs=5, scale=scale)
    np.testing.assert_allclose(values, reference, rtol=1e-6)


def test_the_closed_loop_holds_the_value_under_the_bound_in_every_epoch() -> None:
    m = ChanceMultiplier()
    values = closed_loop(m, bound=5.0, epochs=30)
    per_epoch = (values.reshape(30, 100) > 5.0).mean(axis=1)
    assert per_epoch.max() <= 0.05
    settled = values[1000:]
    # White noise of 2%: the margin is about 2 spreads, so the mean sits 4% or so under it.
    assert 0.9 * 5.0 < settled.mean() < 5.0


def test_the_epoch_budget_widens_the_margin_after_steps_over_the_bound() -> None:
    """Steps over the bound ahead of the aimed share raise the weight more for the same value."""
    cfg = ChanceConstraint()
    base = initial_state(0.0)._replace(
        scaled=1.0, seen=10.0, main_level=1.0, noise=0.02**2, track=-0.05
    )
    plan = StepPlan(10.0, 10.0, 10.0, epoch_steps=20, epoch_length=100, sign=1.0)
    calm = chance_step(FLOAT_OPS, base, 9.6, 1.0, plan, cfg)
    spent = chance_step(FLOAT_OPS, base._replace(overs=4.0), 9.6, 1.0, plan, cfg)
    assert spent.log_weight > calm.log_weight
    assert spent.overs == 4.0  # 9.6 is under the bound: not counted


def test_end_epoch_resets_the_budget_and_keeps_the_epoch_length() -> None:
    m = ChanceMultiplier()
    for step in range(30):
        m.update(12.0, math.inf if step < 10 else 10.0, main=1.0)
    assert m.state.overs == 20.0
    m.end_epoch()
    assert m.state.overs == 0.0
    assert m.epoch_steps == 0
    assert m.plan(10.0).epoch_length == 30


def test_the_feed_forward_follows_a_falling_bound() -> None:
    """With the bound passed as it glides down, few steps are over it."""
    m = ChanceMultiplier()
    rng = np.random.default_rng(1)
    level, over = 12.0, 0
    for step in range(2100):
        bound = math.inf if step < 100 else max(5.0, 10.0 * 0.9995 ** (step - 100))
        natural = 12.0 / (1.0 + m.weight / 0.05) ** 0.7
        level += (natural - level) / 5.0
        value = level * (1.0 + 0.02 * rng.standard_normal())
        over += value > bound
        m.update(value, bound, main=3.0)
        if step % 100 == 99:
            m.end_epoch()
    assert over / 2000 < 0.05


def test_aim_tighter_than_the_bound_moves_the_value_there() -> None:
    at_bound, ahead = ChanceMultiplier(), ChanceMultiplier()
    for _ in range(50):
        at_bound.update(9.0, 10.0, main=1.0)
        ahead.update(9.0, 10.0, main=1.0, aim=8.0)
    assert ahead.weight > at_bound.weight


def test_a_value_far_under_its_bound_lowers_the_weight_to_its_floor() -> None:
    cfg = ChanceConstraint()
    m = ChanceMultiplier(cfg)
    for _ in range(2000):
        m.update(1.0, 10.0, main=1.0)
    assert m.weight == pytest.approx(cfg.min_weight * m.unit)


def test_a_floor_mirrors_a_ceiling() -> None:
    ceiling, floor = ChanceMultiplier(side="upper"), ChanceMultiplier(side="lower")
    assert (ceiling.sign, floor.sign) == (1.0, -1.0)
    for _ in range(50):
        ceiling.update(12.0, 10.0, main=1.0)
        floor.update(-12.0, -10.0, main=1.0)
    assert floor.weight == pytest.approx(ceiling.weight)


@pytest.mark.parametrize(
    ("value", "main", "words"),
    [
        (math.nan, 1.0, "value must be finite"),
        (1.0, math.inf, "main must be finite"),
    ],
)
def test_a_non_finite_value_or_main_loss_raises(value: float, main: float, words: str) -> None:
    m = ChanceMultiplier()
    with pytest.raises(ValueError, match=words):
        m.update(value, 10.0, main=main)
    assert m.steps == 0


@pytest.mark.parametrize("main", [0.0, -2.0])
def test_a_main_loss_that_is_not_positive_cannot_set_the_unit(main: float) -> None:
    m = ChanceMultiplier()
    for _ in range(5):
        m.update(3.0, math.inf, main=main)
    with pytest.raises(ValueError, match="pass a main loss that is positive"):
        m.update(3.0, 10.0, main=1.0)
    assert m.steps == 5  # nothing counted


def test_state_dict_resumes_exactly_and_is_strict_json() -> None:
    a = ChanceMultiplier()
    closed_loop(a, 5.0, epochs=2, steps=60)
    a.update(6.0, 5.0, main=3.0)
    state = a.state_dict()
    json.dumps(state, allow_nan=False)
    b = ChanceMultiplier()
    b.load_state_dict(json.loads(json.dumps(state)))
    for value in (4.0, 6.0, 5.5, 3.0):
        assert a.update(value, 5.0, main=3.0) == b.update(value, 5.0, main=3.0)
    a.end_epoch()
    b.end_epoch()
    assert a.state_dict() == b.state_dict()


def test_a_fresh_multiplier_state_round_trips() -> None:
    a, b = ChanceMultiplier(), ChanceMultiplier()
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict()


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"noise": -1.0}, ValueError, "state['noise'] is out of range"),
        ({"steps": 1.5}, ValueError, "state['steps'] must be an int >= 0"),
        ({"log_weight": "inf"}, ValueError, "state['log_weight'] must be a finite number"),
        ({"log_weight": 1000.0}, ValueError, "state['log_weight'] is out of range"),
        ({"integral": 99.0}, ValueError, "state['integral'] is out of range"),
        ({"track": "x"}, ValueError, "state['track'] must be a finite number"),
        ({"overs": 1e9}, ValueError, "state['overs'] is out of range"),
        ({"scaled": 0.5}, ValueError, "state['scaled'] is out of range"),
        ({"integral": None}, KeyError, "state['integral'] is missing"),
        ({"format": None}, ValueError, "before the scale-free term"),
        ({"side": "lower"}, ValueError, "state['side']"),
    ],
)
def test_a_bad_state_dict_names_the_entry_and_changes_nothing(
    change: dict, error: type[Exception], words: str
) -> None:
    m = ChanceMultiplier()
    closed_loop(m, 5.0, epochs=1, steps=50)
    before = m.state_dict()
    state = {**before, **change}
    state = {k: v for k, v in state.items() if v is not None}
    with pytest.raises(error) as info:
        m.load_state_dict(state)
    assert words in str(info.value)
    assert m.state_dict() == before


def test_a_state_saved_with_other_settings_is_refused_naming_the_setting() -> None:
    a = ChanceMultiplier(ChanceConstraint(alpha=0.1))
    a.update(3.0, 5.0, main=1.0)
    with pytest.raises(ValueError, match=r"settings\.alpha"):
        ChanceMultiplier().load_state_dict(a.state_dict())


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
mains = st.floats(min_value=1e-6, max_value=1e6)
bounds = st.one_of(st.just(math.inf), st.floats(min_value=1e-3, max_value=1e6))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(values, mains, bounds, st.booleans()), min_size=1, max_size=200))
def test_the_weight_is_always_finite_and_within_its_limits(steps: list) -> None:
    """Explosions, values far below the bound, bounds that jump: the weight stays in range."""
    cfg = ChanceConstraint()
    m = ChanceMultiplier(cfg)
    for value, main, bound, end in steps:
        w = m.update(value, bound, main=main)
        assert math.isfinite(w)
        if m.state.scaled:
            assert cfg.min_weight * (1 - 1e-9) <= w / m.unit <= cfg.max_weight * (1 + 1e-9)
        else:
            assert w == 0.0
        if end:
            m.end_epoch()
