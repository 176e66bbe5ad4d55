"""ConstraintSpec: validation errors that name the field, exact scores, bounds that stay valid."""

from __future__ import annotations

import math

import attrs
import numpy as np
import pytest

from constraint_sched import ConstraintKind, ConstraintSpec


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param(dict(kind="box", lower=5.0, upper=1.0), ValueError, "lower must be below upper", id="box-order"),
        pytest.param(dict(kind="box", lower=1.0, upper=1.0), ValueError, "lower must be below upper", id="box-empty"),
        pytest.param(dict(kind="box", lower=0.0, upper=math.inf), ValueError, "BOX needs finite", id="box-inf"),
        pytest.param(
            dict(kind="box_asymmetric", lower=100.0, healthy=3000.0, upper=3000.0),
            ValueError, "healthy must lie strictly between", id="healthy-on-ceiling",
        ),
        pytest.param(
            dict(kind="box_asymmetric", lower=100.0, healthy=50.0, upper=3000.0),
            ValueError, "healthy must lie strictly between", id="healthy-below-floor",
        ),
        pytest.param(dict(kind="box_asymmetric", lower=0.0, upper=1.0), ValueError, "needs healthy", id="missing-healthy"),
        pytest.param(dict(kind="upper", margin=0.0), ValueError, "margin must be positive", id="zero-margin"),
        pytest.param(dict(kind="lower", margin=-1.0), ValueError, "margin must be positive", id="negative-margin"),
        pytest.param(dict(kind="upper"), ValueError, "UPPER needs margin", id="missing-margin"),
        pytest.param(dict(kind="upper", margin=1.0, scale=2.0), ValueError, "does not use scale", id="unused-scale"),
        pytest.param(dict(kind="box", lower=0.0, upper=1.0, healthy=0.5), ValueError, "does not use healthy", id="unused-healthy"),
        pytest.param(dict(kind="minimize_soft", scale=1e-4), ValueError, "scale must be finite and >= 0.0005", id="soft-scale-floor"),
        pytest.param(dict(kind="minimize_hard", scale=0.0), ValueError, "scale must be finite and > 0", id="hard-scale-zero"),
        pytest.param(dict(kind="minimize_soft", scale="big"), TypeError, "scale must be a number or 'auto'", id="scale-string"),
        pytest.param(dict(kind="upper", margin=math.nan), ValueError, "margin is NaN", id="nan-margin"),
        pytest.param(dict(kind="box", lower=math.nan, upper=1.0), ValueError, "lower is NaN", id="nan-lower"),
        pytest.param(dict(kind="upper", margin=True), TypeError, "margin must be a number", id="bool-margin"),
        pytest.param(dict(kind="upper", margin=1.0, steepness=0.0), ValueError, "steepness must be positive", id="zero-steepness"),
        pytest.param(dict(kind="upper", margin=1.0, steepness=math.nan), ValueError, "steepness is NaN", id="nan-steepness"),
        pytest.param(dict(kind="sideways", margin=1.0), ValueError, "kind must be a ConstraintKind", id="unknown-kind"),
    ],
)  # fmt: skip
def test_invalid_specs_raise_naming_the_field(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match) as info:
        ConstraintSpec("kl", **kwargs)
    assert "'kl'" in str(info.value)


def test_name_must_be_a_non_empty_string() -> None:
    with pytest.raises(TypeError, match="name must be a non-empty str"):
        ConstraintSpec("", "upper", margin=1.0)


def test_kind_accepts_names_in_any_case_and_numbers_become_floats() -> None:
    spec = ConstraintSpec("kl", "Box_Asymmetric", lower=100, healthy=3000, upper=10**9)
    assert spec.kind is ConstraintKind.BOX_ASYMMETRIC
    assert isinstance(spec.upper, float)
    assert spec.upper == 1e9


def test_specs_are_frozen() -> None:
    spec = ConstraintSpec("kl", "upper", margin=1.0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        spec.margin = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("spec", "x", "expected"),
    [
        (ConstraintSpec("m", "upper", margin=10.0), -1.0, 1.0),
        (ConstraintSpec("m", "upper", margin=10.0), 4.0, 0.6),
        (ConstraintSpec("m", "upper", margin=10.0), 12.0, 0.0),
        (ConstraintSpec("m", "lower", margin=10.0), 15.0, 0.5),
        (ConstraintSpec("m", "lower", margin=10.0), 25.0, 1.0),
        (ConstraintSpec("m", "minimize_soft", scale=2.0), 2.0, math.exp(-1.0)),
        (ConstraintSpec("m", "minimize_soft", scale=2.0), -3.0, 1.0),
        (ConstraintSpec("m", "minimize_hard", scale=2.0), 2.0, 0.5),
        (ConstraintSpec("m", "box", lower=0.0, upper=10.0), 5.0, 1.0),
        (ConstraintSpec("m", "box", lower=0.0, upper=10.0, steepness=4.0), 10.0, 0.2),
        (ConstraintSpec("m", "box", lower=0.0, upper=10.0, steepness=4.0), 7.5, 0.6),
        (ConstraintSpec("m", "box", lower=0.0, upper=10.0, steepness=4.0), 15.0, 0.2 * math.exp(-4.0)),
        (ConstraintSpec("m", "box_asymmetric", lower=0.0, healthy=2.0, upper=10.0, steepness=4.0), 2.0, 1.0),
        (ConstraintSpec("m", "box_asymmetric", lower=0.0, healthy=2.0, upper=10.0, steepness=4.0), 6.0, 0.6),
        (ConstraintSpec("m", "box_asymmetric", lower=0.0, healthy=2.0, upper=10.0, steepness=4.0), 1.0, 0.6),
        (ConstraintSpec("m", "box_asymmetric", lower=0.0, healthy=2.0, upper=10.0, steepness=4.0), -2.0, 0.2 * math.exp(-4.0)),
        (ConstraintSpec("m", "box_asymmetric", lower=0.0, healthy=2.0, upper=math.inf), 1e12, 1.0),
    ],
)  # fmt: skip
def test_scores_pin_the_documented_values(spec: ConstraintSpec, x: float, expected: float) -> None:
    assert spec.score(x) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_box_score_is_continuous_at_the_ceiling_unlike_the_original() -> None:
    spec = ConstraintSpec("kl", "box_asymmetric", lower=100.0, healthy=3000.0, upper=42358.2)
    inside, on, outside = spec.score(42358.1), spec.score(42358.2), spec.score(42358.3)
    assert inside > on > outside > 0.0
    assert inside - outside < 1e-5


def test_score_keeps_the_type_and_shape_of_its_input() -> None:
    spec = ConstraintSpec("m", "box", lower=0.0, upper=10.0)
    assert isinstance(spec.score(3), float)
    assert isinstance(spec.score(np.float32(3.0)), float)
    values = np.array([[-5.0, 0.0], [5.0, 20.0]], dtype=np.float32)
    scores = spec.score(values)
    assert isinstance(scores, np.ndarray)
    assert scores.shape == (2, 2)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(
        scores, [[spec.score(float(v)) for v in row] for row in values], rtol=1e-6
    )


def test_auto_scale_cannot_score_until_discovered() -> None:
    spec = ConstraintSpec("mse", "minimize_soft", scale="auto")
    with pytest.raises(ValueError, match="'auto' and has not been discovered"):
        spec.score(1.0)
    assert spec.bound("upper") == math.inf
    assert spec.with_bound(0.25).score(0.25) == pytest.approx(math.exp(-1.0))


@pytest.mark.parametrize(
    ("spec", "x", "expected"),
    [
        (ConstraintSpec("m", "upper", margin=3000.0), 3500.0, 500.0),
        (ConstraintSpec("m", "upper", margin=3000.0), 100.0, 0.0),
        (ConstraintSpec("m", "lower", margin=10.0), 4.0, 6.0),
        (ConstraintSpec("m", "box", lower=-1.0, upper=1.0), -3.0, 2.0),
        (ConstraintSpec("m", "box", lower=-1.0, upper=1.0), 0.5, 0.0),
        (ConstraintSpec("m", "box_asymmetric", lower=100.0, healthy=3000.0, upper=math.inf), 1e12, 0.0),
        (ConstraintSpec("m", "box_asymmetric", lower=100.0, healthy=3000.0, upper=math.inf), 40.0, 60.0),
        (ConstraintSpec("m", "minimize_soft", scale=0.5), 0.75, 0.25),
    ],
)  # fmt: skip
def test_violation_is_the_distance_outside_the_bounds(
    spec: ConstraintSpec, x: float, expected: float
) -> None:
    assert spec.violation(x) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kind", "side", "field"),
    [
        ("upper", "upper", "margin"),
        ("lower", "lower", "margin"),
        ("box", "upper", "upper"),
        ("box", "lower", "lower"),
        ("minimize_soft", "upper", "scale"),
        ("minimize_hard", "upper", "scale"),
    ],
)
def test_bound_reads_and_with_bound_moves_the_scheduled_field(
    kind: str, side: str, field: str
) -> None:
    params = {
        "upper": dict(margin=10.0), "lower": dict(margin=10.0), "box": dict(lower=0.0, upper=10.0),
        "minimize_soft": dict(scale=10.0), "minimize_hard": dict(scale=10.0),
    }[kind]  # fmt: skip
    spec = ConstraintSpec("m", kind, **params)
    assert spec.bound(side) == getattr(spec, field)
    moved = spec.with_bound(5.0, side)
    assert getattr(moved, field) == 5.0
    assert moved.bound(side) == 5.0


@pytest.mark.parametrize(
    ("kind", "side"),
    [
        ("upper", "lower"),
        ("lower", "upper"),
        ("minimize_soft", "lower"),
        ("minimize_hard", "lower"),
    ],
)
def test_kinds_without_that_bound_refuse_to_move_it(kind: str, side: str) -> None:
    params = dict(margin=1.0) if kind in ("upper", "lower") else dict(scale=1.0)
    spec = ConstraintSpec("m", kind, **params)
    with pytest.raises(ValueError, match=f"has no {side} bound"):
        spec.with_bound(0.5, side)


def test_healthy_follows_a_ceiling_down_and_a_floor_up() -> None:
    spec = ConstraintSpec("kl", "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
    assert spec.with_bound(13000.0).healthy == 3000.0  # far enough: unchanged
    assert spec.with_bound(3000.0).healthy == pytest.approx(3000.0 - 0.1 * 2900.0)
    assert spec.with_bound(200.0).healthy == pytest.approx(190.0)
    # A floor moved next to healthy: the far "no ceiling" (1e9) does not drag healthy
    # away; the gap is 10% of the local scale (the magnitude, 3000, not the width).
    floor = spec.with_bound(2999.0, "lower")
    assert floor.healthy == pytest.approx(2999.0 + 0.1 * 3000.0)
    both = floor.with_bound(10_000.0, "upper")
    assert (both.lower, both.healthy, both.upper) == (2999.0, floor.healthy, 10_000.0)


@pytest.mark.parametrize("side", ["upper", "lower"])
def test_healthy_stays_finite_and_inside_when_the_other_side_is_infinite(side: str) -> None:
    spec = ConstraintSpec("m", "box_asymmetric", lower=-math.inf, healthy=0.0, upper=math.inf)
    # The smallest subnormals leave no room for a 10% gap: healthy lands one ulp inside.
    for value in (-5.0, -1e-3, 0.0, 1e-3, 5.0, 5e-324, -5e-324):
        moved = spec.with_bound(value, side)
        assert moved.lower < moved.healthy < moved.upper
        assert math.isfinite(moved.healthy)


def test_with_bound_that_empties_the_box_is_an_error() -> None:
    spec = ConstraintSpec("kl", "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
    with pytest.raises(ValueError, match="lower must be below upper"):
        spec.with_bound(50.0)


def test_score_and_violation_read_overridden_parameters_like_a_moved_spec() -> None:
    spec = ConstraintSpec("kl", "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
    moved = spec.with_bound(13000.0)
    xs = np.array([50.0, 500.0, 3000.0, 9000.0, 20000.0])
    params = {"upper": np.asarray(13000.0), "healthy": np.asarray(moved.healthy)}
    np.testing.assert_array_equal(spec.score(xs, parameters=params), moved.score(xs))
    np.testing.assert_array_equal(spec.violation(xs, parameters=params), moved.violation(xs))
    # A number scored under array parameters comes back in their namespace.
    assert float(spec.score(9000.0, parameters=params)) == moved.score(9000.0)
    # An infinite parameter array leaves that side open, as an infinite float does.
    opened = spec.score(xs, parameters={"upper": np.asarray(np.inf)})
    above = xs >= 3000.0
    np.testing.assert_array_equal(opened[above], 1.0)
    np.testing.assert_array_equal(opened[~above], spec.score(xs)[~above])


def test_parameters_must_be_used_by_the_kind() -> None:
    spec = ConstraintSpec("kl", "upper", margin=10.0)
    with pytest.raises(ValueError, match=r"parameters \['upper'\] are not used by UPPER"):
        spec.score(1.0, parameters={"upper": 3.0})
    assert spec.score(5.0, parameters={"margin": 20.0}) == 0.75


@pytest.mark.parametrize(
    "spec",
    [
        ConstraintSpec("u", "upper", margin=2.0),
        ConstraintSpec("l", "lower", margin=2.0),
        ConstraintSpec("b", "box", lower=0.0, upper=1.0),
        ConstraintSpec("a", "box_asymmetric", lower=0.0, healthy=0.3, upper=1.0),
        ConstraintSpec("s", "minimize_soft", scale=1.0),
        ConstraintSpec("h", "minimize_hard", scale=1.0),
    ],
    ids=lambda s: s.kind.name,
)
def test_a_nan_metric_scores_nan_never_a_passing_score(spec: ConstraintSpec) -> None:
    # Every piece of a score tests the metric against a bound, which NaN fails:
    # without care a NaN scores like a value inside (1 for MINIMIZE_SOFT).
    assert math.isnan(spec.score(math.nan))
    assert math.isnan(spec.violation(math.nan))
    scored = spec.score(np.array([math.nan, 0.5]))
    assert math.isnan(scored[0])
    assert scored[1] == spec.score(0.5)
