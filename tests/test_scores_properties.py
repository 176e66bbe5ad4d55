"""Properties of ConstraintSpec.score and .violation for every kind, on floats, numpy and torch."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import (
    BOX_KINDS,
    KINDS_WITH_BOUND,
    MIN_SOFT_SCALE,
    box_asymmetric_specs,
    box_specs,
    constraint_specs,
    lower_specs,
    minimize_hard_specs,
    minimize_soft_specs,
    upper_specs,
)

from constraint_sched import ConstraintKind, ConstraintSpec

K = ConstraintKind
EPS = sys.float_info.epsilon
TORCH_SETTINGS = settings(max_examples=40)

any_spec = constraint_specs(open_sides=True)
box_spec = st.one_of(box_specs(), box_asymmetric_specs(open_sides=True))
finite_box_spec = st.one_of(box_specs(), box_asymmetric_specs())


# -- what the documentation says about each kind ---------------------------------------


def healthy_point(spec: ConstraintSpec) -> float:
    """A point that the docs say scores exactly 1."""
    if spec.kind is K.BOX:
        assert spec.lower is not None
        assert spec.upper is not None
        return 0.5 * (spec.lower + spec.upper)
    if spec.kind is K.BOX_ASYMMETRIC:
        assert spec.healthy is not None
        return spec.healthy
    if spec.kind is K.LOWER:
        assert spec.margin is not None
        return 2.0 * spec.margin
    return 0.0


def unit(spec: ConstraintSpec) -> float:
    """The length over which the score changes by order one."""
    kind = spec.kind
    if kind in (K.UPPER, K.LOWER):
        assert spec.margin is not None
        return spec.margin
    if kind in (K.MINIMIZE_SOFT, K.MINIMIZE_HARD):
        assert isinstance(spec.scale, float)
        return spec.scale
    widths = [w for w in side_widths(spec) if math.isfinite(w)]
    return min(widths) if widths else max(abs(healthy_point(spec)), 1.0)


def side_widths(spec: ConstraintSpec) -> tuple[float, float]:
    """Distance from the healthy point to the floor and to the ceiling of a box kind."""
    assert spec.lower is not None
    assert spec.upper is not None
    h = healthy_point(spec)
    return h - spec.lower, spec.upper - h


def slope_limit(spec: ConstraintSpec) -> float:
    """The steepest slope of the score, |d score / dx|, from its documented formula."""
    kind = spec.kind
    if kind in BOX_KINDS:
        k = spec.steepness
        return k / (1.0 + k) / min(side_widths(spec))
    if kind is K.MINIMIZE_HARD:
        return 3.0 * math.sqrt(3.0) / 8.0 / unit(spec)  # max of 2r / (1 + r^2)^2
    return 1.0 / unit(spec)


def expected_violation(spec: ConstraintSpec, x: float) -> float:
    """How far x lies outside the spec's bounds, by the documentation."""
    kind = spec.kind
    if kind is K.UPPER:
        assert spec.margin is not None
        return max(x - spec.margin, 0.0)
    if kind is K.LOWER:
        assert spec.margin is not None
        return max(spec.margin - x, 0.0)
    if kind in (K.MINIMIZE_SOFT, K.MINIMIZE_HARD):
        assert isinstance(spec.scale, float)
        return max(x - spec.scale, 0.0)
    assert spec.lower is not None
    assert spec.upper is not None
    if x > spec.upper:
        return x - spec.upper
    if x < spec.lower:
        return spec.lower - x
    return 0.0


def box_distance(spec: ConstraintSpec, x: float) -> float:
    """The normalised distance of the box kinds: 0 at the healthy point, 1 on a bound."""
    below, above = side_widths(spec)
    h = healthy_point(spec)
    if spec.kind is K.BOX:
        return abs(x - h) / above
    width = below if x <= h else above
    return 0.0 if math.isinf(width) else abs(x - h) / width


def box_profile(spec: ConstraintSpec, d: float) -> float:
    """The documented box profile: linear to 1/(1+k) on the bound, then an exponential tail."""
    k = spec.steepness
    edge = 1.0 / (1.0 + k)
    return 1.0 - (1.0 - edge) * d if d <= 1.0 else edge * math.exp(-k * (d - 1.0))


def kinks(spec: ConstraintSpec) -> list[float]:
    """The points where the score is not differentiable (or where the formula changes)."""
    kind = spec.kind
    if kind in BOX_KINDS:
        assert spec.lower is not None
        assert spec.upper is not None
        return [b for b in (spec.lower, healthy_point(spec), spec.upper) if math.isfinite(b)]
    if kind is K.LOWER:
        return [unit(spec), 2.0 * unit(spec)]
    if kind is K.UPPER:
        return [0.0, unit(spec)]
    return [0.0, unit(spec)]  # the clip at 0 and the violation's bound


@st.composite
def spec_and_points(
    draw: st.DrawFn, specs: st.SearchStrategy[ConstraintSpec] = any_spec, size: int = 1
) -> tuple[ConstraintSpec, list[float]]:
    """A spec and points on its own scale: near its kinks, in its tails, and far away."""
    spec = draw(specs)
    anchor, length = healthy_point(spec), unit(spec)
    near = st.floats(-60.0, 60.0).map(lambda t: anchor + t * length)
    on_kink = st.sampled_from(kinks(spec) or [anchor]).flatmap(
        lambda b: st.sampled_from([b, math.nextafter(b, math.inf), math.nextafter(b, -math.inf)])
    )
    beside_kink = st.sampled_from(kinks(spec) or [anchor]).flatmap(
        lambda b: st.floats(-1e-3, 1e-3).map(lambda t: b + t * length)
    )
    far = st.floats(-1e12, 1e12).map(lambda t: anchor + t * length)
    points = draw(
        st.lists(st.one_of(near, near, on_kink, beside_kink, far), min_size=size, max_size=size)
    )
    return spec, points


# -- range and special values ---------------------------------------------------------


@given(spec_and_points(size=8))
def test_score_lies_in_the_unit_interval(case: tuple[ConstraintSpec, list[float]]) -> None:
    spec, xs = case
    for x in xs:
        s = spec.score(x)
        assert isinstance(s, float)
        assert 0.0 <= s <= 1.0, (x, s)


FLOAT32_MAX = float(np.finfo(np.float32).max)


@given(
    any_spec,
    st.lists(
        st.one_of(st.floats(-FLOAT32_MAX, FLOAT32_MAX), st.sampled_from([math.inf, -math.inf])),
        min_size=1,
        max_size=8,
    ),
)
def test_score_of_any_metric_value_even_huge_or_infinite_lies_in_the_unit_interval(
    spec: ConstraintSpec, xs: list[float]
) -> None:
    # Any value a float32 metric can take, or a diverged (infinite) one. This
    # runs under the project's warnings-as-errors, so an overflow warning fails it.
    for x in xs:
        assert 0.0 <= spec.score(x) <= 1.0, x
        assert spec.violation(x) >= 0.0, x


@given(any_spec)
def test_score_is_one_at_the_healthy_point(spec: ConstraintSpec) -> None:
    assert spec.score(healthy_point(spec)) == 1.0


@given(finite_box_spec)
def test_box_score_on_either_bound_is_one_over_one_plus_steepness(spec: ConstraintSpec) -> None:
    expected = 1.0 / (1.0 + spec.steepness)
    assert math.isclose(spec.score(spec.lower), expected, rel_tol=1e-9)
    assert math.isclose(spec.score(spec.upper), expected, rel_tol=1e-9)


@given(spec_and_points(box_spec, size=8))
def test_box_score_follows_the_documented_profile(
    case: tuple[ConstraintSpec, list[float]],
) -> None:
    spec, xs = case
    for x in xs:
        d = box_distance(spec, x)
        expected = box_profile(spec, d)
        # d itself carries a rounding error of a few ulps of x relative to the width.
        slack = 4 * EPS * max(abs(x), abs(healthy_point(spec))) * slope_limit(spec) + 1e-12
        assert abs(spec.score(x) - expected) <= slack + 1e-9 * expected, (x, d)


@given(upper_specs(), st.floats(0.0, 10.0))
def test_upper_score_is_one_below_zero_zero_beyond_the_margin_linear_between(
    spec: ConstraintSpec, t: float
) -> None:
    m = unit(spec)
    assert spec.score(-t * m) == 1.0
    assert spec.score(m * (1.0 + t)) == 0.0
    if t <= 1.0:
        assert math.isclose(spec.score(t * m), 1.0 - t, rel_tol=1e-9, abs_tol=1e-12)


@given(lower_specs(), st.floats(0.0, 10.0))
def test_lower_score_is_zero_up_to_the_margin_one_from_twice_the_margin(
    spec: ConstraintSpec, t: float
) -> None:
    m = unit(spec)
    assert spec.score(2.0 * m + t * m) == 1.0
    assert spec.score(m - t * m) == 0.0
    if t <= 1.0:
        assert math.isclose(spec.score(m + t * m), t, rel_tol=1e-9, abs_tol=1e-12)


@given(st.one_of(minimize_soft_specs(), minimize_hard_specs()), st.floats(0.0, 50.0))
def test_minimize_scores_are_one_at_or_below_zero_and_follow_their_formula_above(
    spec: ConstraintSpec, t: float
) -> None:
    s = unit(spec)
    assert spec.score(-t * s) == 1.0
    r = t
    expected = math.exp(-r) if spec.kind is K.MINIMIZE_SOFT else 1.0 / (1.0 + r * r)
    assert math.isclose(spec.score(t * s), expected, rel_tol=1e-9, abs_tol=1e-300)


@given(box_asymmetric_specs(open_sides=True), st.floats(0.0, 1e12))
def test_an_open_side_never_lowers_the_score(spec: ConstraintSpec, t: float) -> None:
    assume(math.isinf(spec.lower) or math.isinf(spec.upper))
    h = healthy_point(spec)
    if math.isinf(spec.upper):
        assert spec.score(h + t * max(abs(h), 1.0)) == 1.0
        assert spec.violation(h + t * max(abs(h), 1.0)) == 0.0
    if math.isinf(spec.lower):
        assert spec.score(h - t * max(abs(h), 1.0)) == 1.0
        assert spec.violation(h - t * max(abs(h), 1.0)) == 0.0


@given(
    st.one_of(minimize_soft_specs(allow_auto=True), minimize_hard_specs(allow_auto=True)).filter(
        lambda s: s.scale == "auto"
    )
)
def test_an_auto_scale_cannot_be_scored_until_discovered(spec: ConstraintSpec) -> None:
    with pytest.raises(ValueError, match="auto"):
        spec.score(1.0)


# -- continuity and monotonicity ------------------------------------------------------


@given(finite_box_spec, st.floats(0.0, 1e-3), st.booleans())
def test_box_score_is_continuous_across_each_bound(
    spec: ConstraintSpec, t: float, at_upper: bool
) -> None:
    bound = spec.upper if at_upper else spec.lower
    assert bound is not None
    delta = t * unit(spec)
    outward = 1.0 if at_upper else -1.0
    inside, outside = bound - outward * delta, bound + outward * delta
    jump = abs(spec.score(inside) - spec.score(outside))
    assert jump <= slope_limit(spec) * 2 * delta * (1 + 1e-6) + 1e-9
    # One ulp either side of the bound: the scores agree to float precision.
    ulp_in = math.nextafter(bound, bound - outward)
    ulp_out = math.nextafter(bound, bound + outward)
    assert abs(spec.score(ulp_in) - spec.score(ulp_out)) <= 1e-9


@given(spec_and_points(size=2))
def test_score_changes_no_faster_than_its_steepest_slope(
    case: tuple[ConstraintSpec, list[float]],
) -> None:
    spec, (x1, x2) = case
    slack = 8 * EPS * max(abs(x1), abs(x2), abs(healthy_point(spec)), unit(spec))
    limit = slope_limit(spec) * (abs(x1 - x2) + slack)
    assert abs(spec.score(x1) - spec.score(x2)) <= limit * (1 + 1e-9) + 1e-12


@given(spec_and_points(size=2), st.booleans())
def test_score_never_increases_moving_away_from_the_healthy_point(
    case: tuple[ConstraintSpec, list[float]], upwards: bool
) -> None:
    spec, points = case
    h = healthy_point(spec)
    if spec.kind is K.LOWER:
        upwards = False  # everything below 2 margin is on the unhealthy side
    elif spec.kind in (K.UPPER, K.MINIMIZE_SOFT, K.MINIMIZE_HARD):
        upwards = True
    side = [x for x in points if (x >= h if upwards else x <= h)]
    assume(len(side) == 2)
    near, far = sorted(side, key=lambda x: abs(x - h))
    assert spec.score(far) <= spec.score(near), (near, far)


@given(
    finite_box_spec,
    st.one_of(st.floats(0.0, 1.0), st.floats(0.999, 1.0)),
    st.one_of(st.floats(1e-6, 1.0), st.floats(1e-6, 1e-3)),
    st.booleans(),
)
def test_box_score_strictly_decreases_with_distance(
    spec: ConstraintSpec, t: float, gap: float, upwards: bool
) -> None:
    # Distances up to where the tail has fallen by e^-30: below that, exp underflows.
    d_max = 1.0 + 30.0 / spec.steepness
    d1 = t if t >= 0.999 else t * d_max  # the second form straddles the bound
    d2 = min(d1 + gap * d_max, d_max)
    assume(d2 - d1 >= 1e-6 * d_max)
    below, above = side_widths(spec)
    h = healthy_point(spec)
    x1, x2 = (h + d1 * above, h + d2 * above) if upwards else (h - d1 * below, h - d2 * below)
    assert spec.score(x2) < spec.score(x1), (x1, x2)


# -- violation --------------------------------------------------------------------------


@given(spec_and_points(constraint_specs(open_sides=True), size=8))
def test_violation_is_zero_inside_and_the_distance_outside(
    case: tuple[ConstraintSpec, list[float]],
) -> None:
    spec, xs = case
    for x in xs:
        assert spec.violation(x) == expected_violation(spec, x), x


# -- numpy arrays -------------------------------------------------------------------------


@given(spec_and_points(size=12))
def test_numpy_scores_match_the_float_scores_element_by_element(
    case: tuple[ConstraintSpec, list[float]],
) -> None:
    spec, xs = case
    array = np.asarray(xs, dtype=np.float64).reshape(3, 4)
    scores = spec.score(array)
    violations = spec.violation(array)
    assert isinstance(scores, np.ndarray)
    assert scores.shape == (3, 4)
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores.ravel(), [spec.score(x) for x in xs], rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(
        violations.ravel(), [spec.violation(x) for x in xs], rtol=1e-12, atol=0.0
    )


@given(spec_and_points(size=6))
def test_numpy_float32_arrays_keep_their_dtype_and_range(
    case: tuple[ConstraintSpec, list[float]],
) -> None:
    spec, xs = case
    array = np.asarray(np.clip(xs, -1e30, 1e30), dtype=np.float32)
    scores = spec.score(array)
    assert scores.dtype == np.float32
    assert scores.shape == array.shape
    assert np.all((scores >= 0.0) & (scores <= 1.0))


@given(spec_and_points(size=1))
def test_numpy_scalars_and_python_ints_score_like_floats(
    case: tuple[ConstraintSpec, list[float]],
) -> None:
    spec, (x,) = case
    assert spec.score(np.float64(x)) == spec.score(x)
    assert spec.score(round(x)) == spec.score(float(round(x)))


# -- torch tensors ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch() -> Any:
    return pytest.importorskip("torch")


@TORCH_SETTINGS
@given(spec_and_points(size=8))
def test_torch_scores_match_the_float_scores(
    torch: Any, case: tuple[ConstraintSpec, list[float]]
) -> None:
    spec, xs = case
    tensor = torch.tensor(xs, dtype=torch.float64)
    scores = spec.score(tensor)
    assert isinstance(scores, torch.Tensor)
    assert scores.dtype == torch.float64
    np.testing.assert_allclose(scores.numpy(), [spec.score(x) for x in xs], rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(
        spec.violation(tensor).numpy(), [spec.violation(x) for x in xs], rtol=1e-12, atol=0.0
    )


@st.composite
def smooth_points(draw: st.DrawFn) -> tuple[ConstraintSpec, list[float]]:
    """A spec with finite parameters and points at least a thousandth of its unit from kinks."""
    spec = draw(constraint_specs())
    anchor, length = healthy_point(spec), unit(spec)
    ts = draw(st.lists(st.floats(-5.0, 5.0), min_size=1, max_size=6))
    points = [anchor + t * length for t in ts]
    points = [x for x in points if all(abs(x - b) > 1e-3 * length for b in kinks(spec))]
    assume(points)
    return spec, points


@TORCH_SETTINGS
@given(smooth_points())
def test_torch_gradients_pass_gradcheck_away_from_the_kinks(
    torch: Any, case: tuple[ConstraintSpec, list[float]]
) -> None:
    spec, xs = case
    x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    eps = 1e-6 * unit(spec)
    # Gradients are of order 1/unit: scale the absolute tolerance with them.
    atol = 1e-5 * slope_limit(spec)
    assert torch.autograd.gradcheck(spec.score, (x,), eps=eps, atol=atol, rtol=1e-3)
    assert torch.autograd.gradcheck(spec.violation, (x,), eps=eps, atol=atol, rtol=1e-3)


@TORCH_SETTINGS
@given(spec_and_points(size=10))
def test_torch_gradients_are_finite_everywhere_even_far_outside(
    torch: Any, case: tuple[ConstraintSpec, list[float]]
) -> None:
    spec, xs = case
    for fn in (spec.score, spec.violation):
        x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
        y = fn(x)
        if not y.requires_grad:
            # Only a constant (a box open on both sides) may leave the graph.
            assert spec.kind is K.BOX_ASYMMETRIC
            assert math.isinf(spec.lower)
            assert math.isinf(spec.upper)
            continue
        y.sum().backward()
        assert x.grad is not None
        assert torch.isfinite(x.grad).all(), (fn.__name__, xs, x.grad)


# -- moving a bound --------------------------------------------------------------------------


def bound_range(spec: ConstraintSpec, side: str) -> tuple[float, float]:
    """The documented open range of admissible bounds (closed at 5e-4 for MINIMIZE_SOFT)."""
    if spec.kind in (K.UPPER, K.LOWER, K.MINIMIZE_HARD):
        return 0.0, math.inf
    if spec.kind is K.MINIMIZE_SOFT:
        return MIN_SOFT_SCALE, math.inf
    assert spec.lower is not None
    assert spec.upper is not None
    return (spec.lower, math.inf) if side == "upper" else (-math.inf, spec.upper)


@st.composite
def spec_side_and_bound(
    draw: st.DrawFn, edge_gap: float = 1e-6, kinds: tuple[K, ...] | None = None
) -> tuple[ConstraintSpec, str, float]:
    """A spec, a side it has a bound on, and an admissible new bound for that side.

    The new bound keeps ``edge_gap`` (relative to its magnitude) from the
    opposite side of a box, as the scheduler's own bounds do. ``kinds``
    narrows the kinds drawn (each must have a bound on both sides).
    """
    side = draw(st.sampled_from(["upper", "lower"]))
    allowed = KINDS_WITH_BOUND[side] if kinds is None else kinds
    spec = draw(constraint_specs(allowed, open_sides=True, allow_auto=True))
    low, high = bound_range(spec, side)
    if math.isfinite(low) and spec.kind in BOX_KINDS:
        low += edge_gap * max(abs(low), 1.0)
    if math.isfinite(high):
        high -= edge_gap * max(abs(high), 1.0)
    if math.isinf(low) and math.isinf(high):
        low, high = -1e6, 1e6
    elif math.isinf(high):
        high = max(low, 0.0) + 1e6 * max(abs(low), 1.0)
    elif math.isinf(low):
        low = min(high, 0.0) - 1e6 * max(abs(high), 1.0)
    value = draw(
        st.one_of(
            st.floats(low, high, exclude_min=spec.kind is not K.MINIMIZE_SOFT),
            st.sampled_from([high] + ([low] if spec.kind is K.MINIMIZE_SOFT else [])),
        )
    )
    return spec, side, value


def moved_healthy(spec: ConstraintSpec, side: str, value: float) -> float:
    """Where `with_bound` puts ``healthy``, by the rule documented on ``HEALTHY_GAP``."""
    assert spec.lower is not None
    assert spec.upper is not None
    assert spec.healthy is not None
    other = spec.lower if side == "upper" else spec.upper
    width = abs(value - other)
    scale = min(width, max(abs(value), abs(spec.healthy)))
    if not (math.isfinite(scale) and scale > 0):
        scale = min(width, 1.0)
    if side == "upper":
        moved = min(spec.healthy, value - 0.1 * scale)
    else:
        moved = max(spec.healthy, value + 0.1 * scale)
    if not min(value, other) < moved < max(value, other):
        # Rounding left no room for the gap (a scale of a few subnormals, say): the
        # documented fallback is the midpoint between the bounds, or the next float.
        mid = value + 0.5 * (other - value)
        if math.isfinite(mid) and min(value, other) < mid < max(value, other):
            return mid
        return math.nextafter(value, other)
    return moved


@given(spec_side_and_bound())
def test_with_bound_gives_a_valid_spec_for_every_admissible_bound(
    case: tuple[ConstraintSpec, str, float],
) -> None:
    spec, side, value = case
    moved = spec.with_bound(value, side)  # validation runs on construction
    assert moved.bound(side) == value
    assert moved.kind is spec.kind
    assert moved.steepness == spec.steepness
    assert moved.name == spec.name
    for x in (value, healthy_point(moved), value + unit(moved), value - unit(moved)):
        assert 0.0 <= moved.score(x) <= 1.0
    if spec.kind is K.BOX_ASYMMETRIC:
        assert moved.lower < moved.healthy < moved.upper
        # The other side stays where it was.
        if side == "upper":
            assert moved.lower == spec.lower
        else:
            assert moved.upper == spec.upper


@given(spec_side_and_bound(kinds=(K.BOX_ASYMMETRIC,)))
def test_with_bound_moves_healthy_only_as_far_as_the_documented_gap_needs(
    case: tuple[ConstraintSpec, str, float],
) -> None:
    spec, side, value = case
    assert spec.kind is K.BOX_ASYMMETRIC
    moved = spec.with_bound(value, side)
    assert moved.healthy == moved_healthy(spec, side, value)
    # Healthy never moves away from the new bound, only with it.
    if side == "upper":
        assert moved.healthy <= spec.healthy
    else:
        assert moved.healthy >= spec.healthy


def test_with_bound_falls_back_to_the_midpoint_when_the_gap_underflows() -> None:
    # Found by the property above in CI: a healthy point of one subnormal makes the
    # gap's scale underflow to 0, so healthy would land on the new floor itself.
    spec = ConstraintSpec(
        "a", "box_asymmetric", lower=-0.001, upper=0.001, healthy=-5e-324, steepness=20.0
    )
    moved = spec.with_bound(0.0, "lower")
    assert moved.lower == 0.0
    assert moved.healthy == 0.0005
    assert moved.lower < moved.healthy < moved.upper


def test_with_bound_on_the_seed_goal_puts_healthy_at_2710() -> None:
    kl = ConstraintSpec("kl", "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
    assert kl.with_bound(3000.0).healthy == 2710.0
    assert kl.with_bound(13000.0).healthy == 3000.0


@given(box_asymmetric_specs(open_sides=True), st.sampled_from(["upper", "lower"]), st.data())
def test_with_bound_a_few_ulps_inside_the_opposite_side_still_gives_a_valid_spec(
    spec: ConstraintSpec, side: str, data: st.DataObject
) -> None:
    # The docs promise a valid spec for every bound that leaves the box
    # non-empty; a box needs at least one float strictly inside for healthy.
    other = spec.lower if side == "upper" else spec.upper
    assert other is not None
    assume(math.isfinite(other))
    value = other
    for _ in range(data.draw(st.integers(2, 64), label="ulps")):
        value = math.nextafter(value, math.inf if side == "upper" else -math.inf)
    moved = spec.with_bound(value, side)
    assert moved.lower < moved.healthy < moved.upper


@given(st.sampled_from(["upper", "lower"]), st.data())
def test_with_bound_rejects_a_bound_that_leaves_no_valid_spec(
    side: str, data: st.DataObject
) -> None:
    spec = data.draw(constraint_specs(KINDS_WITH_BOUND[side], open_sides=True))
    low, high = bound_range(spec, side)
    outside = []
    if math.isfinite(low):
        outside.append(data.draw(st.floats(max_value=low, allow_nan=False, allow_infinity=False)))
        if spec.kind is K.MINIMIZE_SOFT:
            outside = [min(outside[0], math.nextafter(low, -math.inf))]
    if math.isfinite(high):
        outside.append(data.draw(st.floats(min_value=high, allow_nan=False, allow_infinity=False)))
    assume(outside)
    for value in outside:
        with pytest.raises(ValueError, match=spec.name):
            spec.with_bound(value, side)


# -- log_score: the log of the score, where the score itself underflows ------------------


@given(spec_and_points(size=8))
def test_log_score_is_the_log_of_the_score_wherever_the_score_is_representable(
    case: tuple[ConstraintSpec, list[float]],
) -> None:
    spec, xs = case
    for x in xs:
        score, log_score = spec.score(x), spec.log_score(x)
        if score > 1e-300:
            assert log_score == pytest.approx(math.log(score), rel=1e-9, abs=1e-9)
        elif score == 0.0 and spec.kind in (K.UPPER, K.LOWER):
            assert log_score == -math.inf  # a margin is a hard edge
        else:
            assert math.isfinite(log_score)
            assert log_score < math.log(1e-290)


@given(spec_and_points(specs=finite_box_spec, size=2))
def test_log_score_keeps_its_slope_far_past_a_box_bound(
    case: tuple[ConstraintSpec, list[float]],
) -> None:
    # Past a bound the log score is a line of slope -steepness in the normalised
    # distance: a metric 1e6 widths out still gets pulled back.
    spec = case[0]
    assert spec.upper is not None
    assert spec.lower is not None
    width = spec.upper - (
        spec.healthy if spec.healthy is not None else 0.5 * (spec.lower + spec.upper)
    )
    assume(math.isfinite(width) and width > 0)
    far, farther = spec.upper + 1e3 * width, spec.upper + 2e3 * width
    drop = spec.log_score(far) - spec.log_score(farther)
    assert drop == pytest.approx(1e3 * spec.steepness, rel=1e-6)


def test_log_score_of_a_nan_metric_is_nan() -> None:
    for spec in (
        ConstraintSpec("a", "upper", margin=1.0),
        ConstraintSpec("b", "minimize_soft", scale=1.0),
        ConstraintSpec("c", "box", lower=0.0, upper=1.0),
    ):
        assert math.isnan(spec.log_score(math.nan))


@TORCH_SETTINGS
@given(smooth_points())
def test_torch_log_score_passes_gradcheck_where_it_is_finite(
    torch: Any, case: tuple[ConstraintSpec, list[float]]
) -> None:
    spec, xs = case
    xs = [x for x in xs if math.isfinite(spec.log_score(x)) and spec.score(x) > 1e-6]
    assume(xs)
    x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    eps = 1e-6 * unit(spec)
    # d log s = ds / s: with s >= 1e-6 the slope is at most 1e6 times the score's.
    atol = 1e-5 * slope_limit(spec) / min(spec.score(v) for v in xs)
    assert torch.autograd.gradcheck(spec.log_score, (x,), eps=eps, atol=atol, rtol=1e-3)


@TORCH_SETTINGS
@given(spec_and_points(size=10))
def test_torch_log_score_gradients_are_never_nan(
    torch: Any, case: tuple[ConstraintSpec, list[float]]
) -> None:
    spec, xs = case
    x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    y = spec.log_score(x)
    assert torch.allclose(
        y, torch.tensor([spec.log_score(v) for v in xs], dtype=torch.float64), equal_nan=True
    )
    if y.requires_grad:
        y.sum().backward()
        assert x.grad is not None
        assert not torch.isnan(x.grad).any()
