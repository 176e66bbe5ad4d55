"""Score and violation functions of every constraint kind, written once against the array API.

Each function takes the array namespace ``xp`` of its input (numpy, torch, ...)
and the spec's parameters as Python floats, and uses only operations of the
array API standard, so the same code scores numpy arrays and torch tensors
(with autograd) alike. Python scalars are handled by the caller, which wraps
them in a 0-d numpy array and unwraps the result.
"""

from __future__ import annotations

import math
from typing import Any

Array = Any
"""Any array of an array-API namespace (numpy, torch, ...)."""


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


def box_distance(xp: Any, x: Array, lower: float, upper: float) -> Array:
    """Normalised distance of ``x`` from the centre of ``[lower, upper]``."""
    centre = 0.5 * (lower + upper)
    half = 0.5 * (upper - lower)
    return xp.abs(x - centre) / half


def asymmetric_distance(xp: Any, x: Array, lower: float, healthy: float, upper: float) -> Array:
    """Normalised distance of ``x`` from ``healthy``: 1 at ``lower`` and at ``upper``.

    An infinite ``lower`` or ``upper`` leaves that side without a bound: the
    distance there is 0 for every finite ``x``.
    """
    zero = xp.zeros_like(x)
    below = zero if math.isinf(lower) else (healthy - x) / (healthy - lower)
    above = zero if math.isinf(upper) else (x - healthy) / (upper - healthy)
    return xp.where(x <= healthy, below, above)


def upper_score(xp: Any, x: Array, margin: float) -> Array:
    """``clip((margin - x) / margin, 0, 1)``: 1 at or below 0, 0 at or above ``margin``."""
    return _clip01(xp, (margin - x) / margin)


def lower_score(xp: Any, x: Array, margin: float) -> Array:
    """``clip((x - margin) / margin, 0, 1)``: 0 at or below ``margin``, 1 from ``2 margin``."""
    return _clip01(xp, (x - margin) / margin)


def minimize_soft_score(xp: Any, x: Array, scale: float) -> Array:
    """``exp(-max(x, 0) / scale)``."""
    return xp.exp(-_relu(xp, x) / scale)


def minimize_hard_score(xp: Any, x: Array, scale: float) -> Array:
    """``1 / (1 + (max(x, 0) / scale) ** 2)``."""
    r = _relu(xp, x) / scale
    return 1.0 / (1.0 + r * r)


def excess(xp: Any, x: Array, lower: float, upper: float) -> Array:
    """How far ``x`` lies outside ``[lower, upper]``; 0 inside. Infinite ends never bind."""
    out = xp.zeros_like(x)
    if not math.isinf(upper):
        out = out + _relu(xp, x - upper)
    if not math.isinf(lower):
        out = out + _relu(xp, lower - x)
    return out
