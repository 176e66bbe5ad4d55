"""Score and violation functions of every constraint kind, written once against the array API.

Each function takes the array namespace ``xp`` of its input (numpy, torch, ...)
and the spec's parameters as Python floats (or 0-d arrays of the same
namespace), and uses only operations of the array API standard, so the same
code scores numpy arrays and torch tensors (with autograd) alike. Python
scalars are handled by the caller, which wraps them in a 0-d numpy array and
unwraps the result.
"""

from __future__ import annotations

import math
from typing import Any

Array = Any
"""Any array of an array-API namespace (numpy, torch, ...)."""

Param = Any
"""A spec parameter: a Python float, or a 0-d array of the scored array's namespace."""


def _relu(xp: Any, x: Array) -> Array:
    return xp.where(x > 0, x, xp.zeros_like(x))


def _clip01(xp: Any, x: Array) -> Array:
    return xp.where(x < 0, xp.zeros_like(x), xp.where(x > 1, xp.ones_like(x), x))


def box_profile(xp: Any, d: Array, steepness: float) -> Array:
    """Score of a box constraint as a function of the normalised distance ``d >= 0``.

    ``d`` is 0 at the healthy point and 1 on the bound. Inside (``d <= 1``) the
    score falls linearly from 1 to ``1 / (1 + k)``; outside it decays as
    ``exp(-k (d - 1)) / (1 + k)``. The two pieces meet with equal value and
    equal slope at ``d = 1``, so the score is continuous, differentiable and
    strictly decreasing in ``d``: a value just past the bound always scores
    below one just inside.
    """
    k = steepness
    edge = 1.0 / (1.0 + k)
    inside = 1.0 - (1.0 - edge) * d
    # Evaluate the tail only where it is used, so exp never overflows and
    # autograd never multiplies an inf by the zero of the unused branch.
    beyond = xp.where(d > 1, d - 1.0, xp.zeros_like(d))
    outside = edge * xp.exp(-k * beyond)
    return xp.where(d <= 1, inside, outside)


def box_log_profile(xp: Any, d: Array, steepness: float) -> Array:
    """``log(box_profile(d))``, computed directly: finite however far past the bound.

    Inside, ``log(1 - (1 - e) d)`` with ``e = 1 / (1 + k)``; outside the line
    ``log(e) - k (d - 1)``, whose slope never vanishes, where the score itself
    would underflow to 0.
    """
    k = steepness
    edge = 1.0 / (1.0 + k)
    within = xp.where(d <= 1, d, xp.ones_like(d))  # log's argument stays >= edge > 0
    inside = xp.log(1.0 - (1.0 - edge) * within)
    beyond = xp.where(d > 1, d - 1.0, xp.zeros_like(d))
    outside = math.log(edge) - k * beyond
    return xp.where(d <= 1, inside, outside)


def box_distance(xp: Any, x: Array, lower: Param, upper: Param) -> Array:
    """Normalised distance of ``x`` from the centre of ``[lower, upper]``."""
    centre = 0.5 * (lower + upper)
    half = 0.5 * (upper - lower)
    return xp.abs(x - centre) / half


def asymmetric_distance(xp: Any, x: Array, lower: Param, healthy: Param, upper: Param) -> Array:
    """Normalised distance of ``x`` from ``healthy``: 1 at ``lower`` and at ``upper``.

    An infinite ``lower`` or ``upper`` leaves that side without a bound: the
    distance there is 0 for every finite ``x``. The parameters are floats or
    0-d arrays of ``x``'s namespace.
    """
    zero = xp.zeros_like(x)
    below = _ratio(xp, healthy - x, healthy - lower, zero)
    above = _ratio(xp, x - healthy, upper - healthy, zero)
    return xp.where(x <= healthy, below, above)


def _ratio(xp: Any, num: Array, den: Param, zero: Array) -> Array:
    """``num / den``, or 0 where ``den`` is infinite (an open side of a box)."""
    if isinstance(den, float):
        return zero if math.isinf(den) else num / den
    return xp.where(xp.isinf(den), zero, num / den)


def upper_score(xp: Any, x: Array, margin: Param) -> Array:
    """``clip((margin - x) / margin, 0, 1)``: 1 at or below 0, 0 at or above ``margin``."""
    return _clip01(xp, (margin - x) / margin)


def lower_score(xp: Any, x: Array, margin: Param) -> Array:
    """``clip((x - margin) / margin, 0, 1)``: 0 at or below ``margin``, 1 from ``2 margin``."""
    return _clip01(xp, (x - margin) / margin)


def minimize_soft_score(xp: Any, x: Array, scale: Param) -> Array:
    """``exp(-max(x, 0) / scale)``."""
    return xp.exp(-_relu(xp, x) / scale)


def minimize_hard_score(xp: Any, x: Array, scale: Param) -> Array:
    """``1 / (1 + (max(x, 0) / scale) ** 2)``."""
    r = _relu(xp, x) / scale
    return 1.0 / (1.0 + r * r)


def log_of_clipped(xp: Any, score: Array) -> Array:
    """``log(score)`` of a score that reaches 0 (``-inf`` there), with no NaN gradient."""
    positive = score > 0
    safe = xp.where(positive, score, xp.ones_like(score))
    return xp.where(positive, xp.log(safe), xp.full_like(score, -math.inf))


def minimize_soft_log_score(xp: Any, x: Array, scale: Param) -> Array:
    """``log(exp(-max(x, 0) / s)) = -max(x, 0) / s``."""
    return -_relu(xp, x) / scale


def minimize_hard_log_score(xp: Any, x: Array, scale: Param) -> Array:
    """``-log(1 + (max(x, 0) / s)^2)``, without the score's underflow."""
    r = _relu(xp, x) / scale
    return -xp.log1p(r * r)


def excess(xp: Any, x: Array, lower: Param, upper: Param) -> Array:
    """How far ``x`` lies outside ``[lower, upper]``; 0 inside. Infinite ends never bind."""
    out = xp.zeros_like(x)
    if not (isinstance(upper, float) and math.isinf(upper)):
        out = out + _relu(xp, x - upper)
    if not (isinstance(lower, float) and math.isinf(lower)):
        out = out + _relu(xp, lower - x)
    return out
