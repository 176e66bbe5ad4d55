"""ConstraintKind and ConstraintSpec: what a constraint asks of a metric, and its score."""

from __future__ import annotations

import enum
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, overload

import attrs
import numpy as np
from array_api_compat import array_namespace

from constraint_sched import _scores

Side = Literal["upper", "lower"]
"""One of a spec's two bounds: ``"upper"`` (its ceiling) or ``"lower"`` (its floor)."""

Bound = Literal["upper", "lower", "width"]
"""What a scheduler or a term moves: ``"upper"`` (a ceiling), ``"lower"`` (a floor) or
``"width"`` (a box's half-width around its centre, for a scheduler)."""

T = TypeVar("T")

MIN_SOFT_SCALE = 5e-4
"""The smallest scale a ``MINIMIZE_SOFT`` spec accepts (LBO.md, section 2)."""

HEALTHY_GAP = 0.1
"""How close, as a fraction of the local scale, a moved bound may come to ``healthy``.

When a scheduler moves the ceiling of a ``BOX_ASYMMETRIC`` spec to ``u``, the
healthy point becomes ``min(healthy, u - HEALTHY_GAP * s)``, where the local
scale ``s`` is the box's width ``u - lower`` capped at ``max(|u|, |healthy|)``
(so a far "no floor" such as -1e9 does not drag healthy away). Healthy stays
where it is while it lies that far below the ceiling, and follows the ceiling
down after that; it always stays strictly inside the box (at the midpoint
between the bounds when rounding leaves no room for the gap). Floors mirror the
rule. For the seed's KL goal (lower 100, healthy 3000) a ceiling of 3000 puts
healthy at 2710.
"""


class ConstraintKind(enum.Enum):
    """The shape of a constraint, which fixes its parameters and its score.

    | kind | parameters | score |
    |---|---|---|
    | `UPPER` | `margin` | `clip((margin - x) / margin, 0, 1)` |
    | `LOWER` | `margin` | `clip((x - margin) / margin, 0, 1)` |
    | `BOX` | `lower`, `upper` | 1 at the centre, linear to the bounds, exponential tails |
    | `BOX_ASYMMETRIC` | `lower`, `healthy`, `upper` | 1 at `healthy`, linear to each bound, tails |
    | `MINIMIZE_SOFT` | `scale` | `exp(-max(x, 0) / scale)` |
    | `MINIMIZE_HARD` | `scale` | `1 / (1 + (max(x, 0) / scale) ** 2)` |

    Examples:
        >>> ConstraintKind["BOX_ASYMMETRIC"] is ConstraintKind.BOX_ASYMMETRIC
        True
    """

    UPPER = "upper"
    LOWER = "lower"
    BOX = "box"
    BOX_ASYMMETRIC = "box_asymmetric"
    MINIMIZE_SOFT = "minimize_soft"
    MINIMIZE_HARD = "minimize_hard"


_PARAMETERS: dict[ConstraintKind, frozenset[str]] = {
    ConstraintKind.UPPER: frozenset({"margin"}),
    ConstraintKind.LOWER: frozenset({"margin"}),
    ConstraintKind.BOX: frozenset({"lower", "upper"}),
    ConstraintKind.BOX_ASYMMETRIC: frozenset({"lower", "upper", "healthy"}),
    ConstraintKind.MINIMIZE_SOFT: frozenset({"scale"}),
    ConstraintKind.MINIMIZE_HARD: frozenset({"scale"}),
}
_OPTIONAL_PARAMETERS = ("lower", "upper", "healthy", "margin", "scale")

# Which field a scheduled bound moves, per kind and side; a missing entry means
# the kind has no such bound.
_BOUND_FIELD: dict[tuple[ConstraintKind, Side], str] = {
    (ConstraintKind.UPPER, "upper"): "margin",
    (ConstraintKind.LOWER, "lower"): "margin",
    (ConstraintKind.BOX, "upper"): "upper",
    (ConstraintKind.BOX, "lower"): "lower",
    (ConstraintKind.BOX_ASYMMETRIC, "upper"): "upper",
    (ConstraintKind.BOX_ASYMMETRIC, "lower"): "lower",
    (ConstraintKind.MINIMIZE_SOFT, "upper"): "scale",
    (ConstraintKind.MINIMIZE_HARD, "upper"): "scale",
}


def _to_kind(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return ConstraintKind[value.upper()]
        except KeyError:
            return value  # the validator names it
    return value


def _to_float(value: Any) -> Any:
    if isinstance(value, bool):
        return value  # the validator names it
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def _to_optional_float(value: Any) -> Any:
    return None if value is None else _to_float(value)


def _to_scale(value: Any) -> Any:
    return value if value is None or value == "auto" else _to_float(value)


def _check_name(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"ConstraintSpec.name must be a non-empty str, got {value!r}")


def _check_kind(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, ConstraintKind):
        names = ", ".join(k.name for k in ConstraintKind)
        raise ValueError(
            f"ConstraintSpec {instance.name!r}: kind must be a ConstraintKind or one of "
            f"{names}, got {value!r}"
        )


def _check_number(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None or (attribute.name == "scale" and value == "auto"):
        return
    if not isinstance(value, float):
        expected = "a number or 'auto'" if attribute.name == "scale" else "a number"
        raise TypeError(
            f"ConstraintSpec {instance.name!r}: {attribute.name} must be {expected}, got {value!r}"
        )
    if math.isnan(value):
        raise ValueError(f"ConstraintSpec {instance.name!r}: {attribute.name} is NaN")


@attrs.frozen
class ConstraintSpec:
    """What a constraint asks of one raw metric, and the score that measures it.

    A spec is immutable and validated when it is made: every parameter its
    kind needs must be given, no parameter it does not use may be given, and
    each must be in range. A scheduler that moves a bound makes a new spec with
    `with_bound`.

    Args:
        name: The metric's name, used to route observations and in messages.
        kind: A `ConstraintKind`, or its name as a string (``"box_asymmetric"``).
        lower: The floor of a ``BOX`` or ``BOX_ASYMMETRIC`` spec (``-inf``
            allowed for ``BOX_ASYMMETRIC``: no floor).
        upper: The ceiling of a ``BOX`` or ``BOX_ASYMMETRIC`` spec (``inf``
            allowed for ``BOX_ASYMMETRIC``: no ceiling).
        healthy: The value of a ``BOX_ASYMMETRIC`` spec that scores 1.
        margin: The bound of an ``UPPER`` or ``LOWER`` spec; positive.
        scale: The scale of a ``MINIMIZE_SOFT`` (at least 5e-4) or
            ``MINIMIZE_HARD`` (positive) spec, or ``"auto"`` to have a scheduler
            discover it.
        steepness: ``k``, how fast a box's score decays outside its bounds.

    Raises:
        ValueError: A parameter is missing, unused by the kind, NaN or out of
            range; the message names it.
        TypeError: A parameter has the wrong type.

    Examples:
        >>> kl = ConstraintSpec("kl_core", "box_asymmetric", lower=100.0,
        ...                     healthy=3000.0, upper=42358.2)
        >>> kl.score(3000.0)
        1.0
        >>> round(kl.score(42358.2), 4)  # on the ceiling: 1 / (1 + steepness)
        0.0476
        >>> round(kl.violation(45000.0), 1)
        2641.8
        >>> kl.with_bound(3000.0).healthy  # healthy follows the ceiling down
        2710.0
    """

    name: str = attrs.field(validator=_check_name)
    kind: ConstraintKind = attrs.field(converter=_to_kind, validator=_check_kind)
    lower: float | None = attrs.field(
        default=None, converter=_to_optional_float, validator=_check_number, kw_only=True
    )
    upper: float | None = attrs.field(
        default=None, converter=_to_optional_float, validator=_check_number, kw_only=True
    )
    healthy: float | None = attrs.field(
        default=None, converter=_to_optional_float, validator=_check_number, kw_only=True
    )
    margin: float | None = attrs.field(
        default=None, converter=_to_optional_float, validator=_check_number, kw_only=True
    )
    scale: float | Literal["auto"] | None = attrs.field(
        default=None, converter=_to_scale, validator=_check_number, kw_only=True
    )
    steepness: float = attrs.field(
        default=20.0, converter=_to_float, validator=_check_number, kw_only=True
    )

    def __attrs_post_init__(self) -> None:
        needed = _PARAMETERS[self.kind]
        for field in _OPTIONAL_PARAMETERS:
            given = getattr(self, field) is not None
            if field in needed and not given:
                raise ValueError(f"ConstraintSpec {self.name!r}: {self.kind.name} needs {field}")
            if field not in needed and given:
                raise ValueError(
                    f"ConstraintSpec {self.name!r}: {self.kind.name} does not use {field} "
                    f"(got {getattr(self, field)!r}); it takes {', '.join(sorted(needed))}"
                )
        if not (math.isfinite(self.steepness) and self.steepness > 0):
            raise ValueError(
                f"ConstraintSpec {self.name!r}: steepness must be positive and finite, "
                f"got {self.steepness!r}"
            )
        self._check_ranges()

    def _check_ranges(self) -> None:
        kind, name = self.kind, self.name
        if kind in (ConstraintKind.UPPER, ConstraintKind.LOWER):
            margin = self.margin
            assert margin is not None
            if not (math.isfinite(margin) and margin > 0):
                raise ValueError(
                    f"ConstraintSpec {name!r}: margin must be positive and finite, got {margin!r}"
                )
        elif kind in (ConstraintKind.MINIMIZE_SOFT, ConstraintKind.MINIMIZE_HARD):
            scale = self.scale
            if scale == "auto":
                return
            assert isinstance(scale, float)
            least = MIN_SOFT_SCALE if kind is ConstraintKind.MINIMIZE_SOFT else 0.0
            if not (math.isfinite(scale) and scale > 0 and scale >= least):
                bound = f">= {least}" if least else "> 0"
                raise ValueError(
                    f"ConstraintSpec {name!r}: scale must be finite and {bound} for "
                    f"{kind.name}, got {scale!r}"
                )
        else:
            lower, upper = self.lower, self.upper
            assert lower is not None
            assert upper is not None
            if kind is ConstraintKind.BOX and not (math.isfinite(lower) and math.isfinite(upper)):
                raise ValueError(
                    f"ConstraintSpec {name!r}: BOX needs finite lower and upper, got "
                    f"lower={lower!r}, upper={upper!r}; use BOX_ASYMMETRIC for one open side"
                )
            if lower == math.inf or upper == -math.inf:
                raise ValueError(
                    f"ConstraintSpec {name!r}: lower={lower!r}, upper={upper!r} leave no room"
                )
            if not lower < upper:
                raise ValueError(
                    f"ConstraintSpec {name!r}: lower must be below upper, got "
                    f"lower={lower!r}, upper={upper!r}"
                )
            if kind is ConstraintKind.BOX_ASYMMETRIC:
                healthy = self.healthy
                assert healthy is not None
                if not (math.isfinite(healthy) and lower < healthy < upper):
                    raise ValueError(
                        f"ConstraintSpec {name!r}: healthy must lie strictly between lower and "
                        f"upper, got lower={lower!r}, healthy={healthy!r}, upper={upper!r}"
                    )

    # -- scores ---------------------------------------------------------------

    @overload
    def score(self, x: float, *, parameters: Mapping[str, Any] | None = None) -> float: ...
    @overload
    def score(self, x: T, *, parameters: Mapping[str, Any] | None = None) -> T: ...
    def score(self, x: Any, *, parameters: Mapping[str, Any] | None = None) -> Any:
        """Score ``x`` in ``[0, 1]``: 1 is fully satisfied, 0 is dead.

        Works on Python numbers (returns a float), numpy arrays and any other
        array-API array, such as torch tensors, element-wise and differentiably.
        The box kinds are continuous and strictly decreasing in the distance
        from the healthy point (see `ConstraintKind`). A NaN metric scores NaN,
        never a number that would pass for a satisfied goal, so an objective
        built on it is NaN too and the step can be rejected.

        Args:
            x: The raw metric: a number or an array.
            parameters: Values to use instead of the spec's own, by field
                name (``lower``, ``upper``, ``healthy``, ``margin``,
                ``scale``), typically 0-d arrays of ``x``'s namespace that a
                compiled loss reads as inputs (the torch adapter passes its
                cached bound tensors), so a moved bound needs no recompile.

        Returns:
            The score, of the same type and shape as ``x``.

        Raises:
            ValueError: The spec's scale is still ``"auto"``, or ``parameters``
                names a field the kind does not use.

        Examples:
            >>> ConstraintSpec("mse", "minimize_soft", scale=0.5).score(0.0)
            1.0
        """
        return _apply(self._score, x, self._values(parameters), nan_through=True)

    @overload
    def log_score(self, x: float, *, parameters: Mapping[str, Any] | None = None) -> float: ...
    @overload
    def log_score(self, x: T, *, parameters: Mapping[str, Any] | None = None) -> T: ...
    def log_score(self, x: Any, *, parameters: Mapping[str, Any] | None = None) -> Any:
        """The natural log of `score`, computed without underflow.

        Where the score is tiny (far past a box's bound, or a large metric on
        a ``MINIMIZE`` kind) it underflows to 0 and its gradient vanishes; the
        log score stays finite there and keeps a slope that pulls the metric
        back (``-steepness`` per unit of normalised distance past a box's
        bound, ``-1/scale`` for ``MINIMIZE_SOFT``). ``UPPER`` and ``LOWER``
        reach a score of exactly 0 at their margin: their log score is
        ``-inf`` there, with a zero (not NaN) gradient. A NaN metric gives NaN.

        Args:
            x: The raw metric: a number or an array.
            parameters: As for `score`.

        Returns:
            ``log(score(x))``, of the same type and shape as ``x``.

        Raises:
            ValueError: As for `score`.

        Examples:
            >>> kl = ConstraintSpec("kl", "box_asymmetric", lower=100.0, healthy=3000.0,
            ...                     upper=13000.0)
            >>> round(kl.log_score(30000.0), 2)  # log(1/21) - 20 * 1.7: 1.7 past the bound
            -37.04
            >>> kl.score(1e6), round(kl.log_score(1e6), 1)  # the score underflows, its log does not
            (0.0, -1977.0)
            >>> ConstraintSpec("mse", "minimize_soft", scale=0.5).log_score(1.0)
            -2.0
        """
        return _apply(self._log_score, x, self._values(parameters), nan_through=True)

    @overload
    def violation(self, x: float, *, parameters: Mapping[str, Any] | None = None) -> float: ...
    @overload
    def violation(self, x: T, *, parameters: Mapping[str, Any] | None = None) -> T: ...
    def violation(self, x: Any, *, parameters: Mapping[str, Any] | None = None) -> Any:
        """How far ``x`` lies outside the spec's bounds: 0 inside, positive outside.

        This is the ``g(x) <= 0`` form a Lagrangian or penalty method needs
        (``g = violation``). For ``UPPER`` and ``LOWER`` the bound is the
        margin; for the ``MINIMIZE`` kinds it is the scale (the level the
        metric is pushed below). A NaN metric's violation is NaN.

        Args:
            x: The raw metric: a number or an array.
            parameters: Values to use instead of the spec's own, as in `score`.

        Returns:
            The non-negative distance outside the bounds, like ``x``.

        Examples:
            >>> ConstraintSpec("kl", "upper", margin=3000.0).violation(3500.0)
            500.0
        """
        return _apply(self._violation, x, self._values(parameters), nan_through=True)

    def _score(self, xp: Any, x: Any, p: Mapping[str, Any]) -> Any:
        return _MATHS[self.kind].score(xp, x, p, self.steepness)

    def _log_score(self, xp: Any, x: Any, p: Mapping[str, Any]) -> Any:
        return _MATHS[self.kind].log_score(xp, x, p, self.steepness)

    def _violation(self, xp: Any, x: Any, p: Mapping[str, Any]) -> Any:
        return _MATHS[self.kind].violation(xp, x, p, self.steepness)

    def _values(self, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
        """The parameters the kind uses, by name, with ``parameters`` applied over them."""
        used = _PARAMETERS[self.kind]
        if parameters:
            unknown = sorted(set(parameters) - used)
            if unknown:
                raise ValueError(
                    f"ConstraintSpec {self.name!r}: parameters {unknown} are not used by "
                    f"{self.kind.name}; it takes {', '.join(sorted(used))}"
                )
            return {f: parameters[f] if f in parameters else self._float(f) for f in used}
        return {f: self._float(f) for f in used}

    def _float(self, field: str) -> float:
        value = getattr(self, field)
        if value == "auto":
            raise ValueError(
                f"ConstraintSpec {self.name!r}: scale is 'auto' and has not been discovered "
                "yet; run a ConstraintScheduler over it or give a number"
            )
        return float(value)

    # -- bounds ---------------------------------------------------------------

    def bound(self, side: Side = "upper") -> float:
        """The value of the bound a scheduler moves on ``side``.

        Args:
            side: ``"upper"`` for the ceiling (``upper``, an ``UPPER`` margin or
                a ``MINIMIZE`` scale), ``"lower"`` for the floor (``lower`` or a
                ``LOWER`` margin).

        Returns:
            The bound as a float; ``inf`` for an ``"auto"`` scale.

        Raises:
            ValueError: The kind has no bound on that side.

        Examples:
            >>> ConstraintSpec("kl", "box", lower=0.0, upper=1e9).bound("upper")
            1000000000.0
        """
        value = getattr(self, bound_field(self.kind, side, self.name))
        return math.inf if value == "auto" else float(value)

    def with_bound(self, value: float, side: Side = "upper") -> ConstraintSpec:
        """A copy of this spec with the bound on ``side`` moved to ``value``.

        For ``BOX_ASYMMETRIC`` the healthy point follows a ceiling that comes
        within ``HEALTHY_GAP`` (10%) of the box's local scale of it, and
        likewise a floor, so that every bound that leaves the box non-empty
        gives a valid spec (the original divided by zero at a ceiling equal to
        ``healthy``).

        Args:
            value: The new bound.
            side: ``"upper"`` or ``"lower"``, as in `bound`.

        Returns:
            The new spec.

        Raises:
            ValueError: The kind has no bound on that side, or ``value`` leaves
                no valid spec (a ceiling at or below a box's floor, a
                non-positive margin or scale).

        Examples:
            >>> spec = ConstraintSpec("kl", "box_asymmetric", lower=100.0,
            ...                       healthy=3000.0, upper=1e9)
            >>> spec.with_bound(13000.0).upper
            13000.0
        """
        field = bound_field(self.kind, side, self.name)
        value = float(value)
        changes: dict[str, Any] = {field: value}
        if self.kind is ConstraintKind.BOX_ASYMMETRIC:
            lower, healthy, upper = (self._float(f) for f in ("lower", "healthy", "upper"))
            other = lower if side == "upper" else upper
            width = abs(value - other)
            if width > 0:  # otherwise the box is empty: evolve's validation names it
                scale = min(width, max(abs(value), abs(healthy)))
                if not (math.isfinite(scale) and scale > 0):
                    scale = min(width, 1.0)
                if side == "upper" and value > lower:
                    moved = min(healthy, value - HEALTHY_GAP * scale)
                    if not lower < moved < value:  # rounding, a few ulps from the floor
                        moved = _strictly_inside(value, lower)
                    changes["healthy"] = moved
                elif side == "lower" and value < upper:
                    moved = max(healthy, value + HEALTHY_GAP * scale)
                    if not value < moved < upper:
                        moved = _strictly_inside(value, upper)
                    changes["healthy"] = moved
        return attrs.evolve(self, **changes)


Maths = Callable[[Any, Any, Mapping[str, Any], float], Any]
"""``(xp, x, parameters, steepness) -> array``: one kind's score, log-score or violation."""


@attrs.frozen
class _KindMaths:
    """The score, log-score and violation of one kind (`_MATHS`), over `_scores`."""

    score: Maths
    log_score: Maths
    violation: Maths


def _box(xp: Any, x: Any, p: Mapping[str, Any]) -> Any:
    return _scores.box_distance(xp, x, p["lower"], p["upper"])


def _asymmetric(xp: Any, x: Any, p: Mapping[str, Any]) -> Any:
    return _scores.asymmetric_distance(xp, x, p["lower"], p["healthy"], p["upper"])


def _boxed(distance: Callable[[Any, Any, Mapping[str, Any]], Any]) -> _KindMaths:
    """A box kind's maths: its profile of ``distance``, steepness ``k``."""
    return _KindMaths(
        score=lambda xp, x, p, k: _scores.box_profile(xp, distance(xp, x, p), k),
        log_score=lambda xp, x, p, k: _scores.box_log_profile(xp, distance(xp, x, p), k),
        violation=lambda xp, x, p, k: _scores.excess(xp, x, p["lower"], p["upper"]),
    )


_MATHS: dict[ConstraintKind, _KindMaths] = {
    ConstraintKind.UPPER: _KindMaths(
        score=lambda xp, x, p, k: _scores.upper_score(xp, x, p["margin"]),
        log_score=lambda xp, x, p, k: _scores.log_of_clipped(
            xp, _scores.upper_score(xp, x, p["margin"])
        ),
        violation=lambda xp, x, p, k: _scores.excess(xp, x, -math.inf, p["margin"]),
    ),
    ConstraintKind.LOWER: _KindMaths(
        score=lambda xp, x, p, k: _scores.lower_score(xp, x, p["margin"]),
        log_score=lambda xp, x, p, k: _scores.log_of_clipped(
            xp, _scores.lower_score(xp, x, p["margin"])
        ),
        violation=lambda xp, x, p, k: _scores.excess(xp, x, p["margin"], math.inf),
    ),
    ConstraintKind.MINIMIZE_SOFT: _KindMaths(
        score=lambda xp, x, p, k: _scores.minimize_soft_score(xp, x, p["scale"]),
        log_score=lambda xp, x, p, k: _scores.minimize_soft_log_score(xp, x, p["scale"]),
        violation=lambda xp, x, p, k: _scores.excess(xp, x, -math.inf, p["scale"]),
    ),
    ConstraintKind.MINIMIZE_HARD: _KindMaths(
        score=lambda xp, x, p, k: _scores.minimize_hard_score(xp, x, p["scale"]),
        log_score=lambda xp, x, p, k: _scores.minimize_hard_log_score(xp, x, p["scale"]),
        violation=lambda xp, x, p, k: _scores.excess(xp, x, -math.inf, p["scale"]),
    ),
    ConstraintKind.BOX: _boxed(_box),
    ConstraintKind.BOX_ASYMMETRIC: _boxed(_asymmetric),
}
"""Every kind's maths, in one table: a spec's `score`, `log_score` and `violation` look it up."""


def _strictly_inside(bound: float, other: float) -> float:
    """A finite point strictly between ``bound`` and ``other``: the midpoint if it is one."""
    mid = bound + 0.5 * (other - bound)
    if math.isfinite(mid) and min(bound, other) < mid < max(bound, other):
        return mid
    return math.nextafter(bound, other)  # an open side (inf), or a few ulps of room


def bound_field(kind: ConstraintKind, side: str, name: str = "?") -> str:
    """The spec field that a bound on ``side`` moves, or a ValueError naming the mismatch."""
    field = _BOUND_FIELD.get((kind, side))  # type: ignore[arg-type]
    if field is None:
        if side not in ("upper", "lower"):
            raise ValueError(f"bound must be 'upper' or 'lower', got {side!r}")
        raise ValueError(
            f"ConstraintSpec {name!r}: a {kind.name} spec has no {side} bound to schedule"
        )
    return field


def _apply(fn: Any, x: Any, p: dict[str, Any], *, nan_through: bool = False) -> Any:
    # Scores saturate (to 0 or 1) far from the bounds; numpy's overflow on the way
    # there is expected, not an error. errstate only concerns numpy.
    # Other namespaces never enter errstate, so torch.compile traces a score whole.
    arrays = [v for v in p.values() if not isinstance(v, float)]
    if not isinstance(x, np.ndarray) and isinstance(x, numbers.Real):
        if arrays:  # array parameters (a bound tensor) score a number in their namespace
            xp = array_namespace(*arrays)
            return _through(xp, fn(xp, xp.asarray(float(x)), p), xp.asarray(float(x)))
        if nan_through and math.isnan(x):
            return math.nan
        with np.errstate(over="ignore"):
            return float(fn(np, np.asarray(float(x), dtype=np.float64), p))
    xp = array_namespace(x, *arrays)
    if isinstance(x, np.ndarray):
        with np.errstate(over="ignore"):
            out = fn(xp, x, p)
    else:
        out = fn(xp, x, p)
    return _through(xp, out, x) if nan_through else out


def _through(xp: Any, out: Any, x: Any) -> Any:
    """``out`` with NaN wherever ``x`` is NaN.

    The pieces of a score test ``x > ...``, which a NaN fails: without this a
    NaN metric would score like a value inside its bounds.
    """
    return xp.where(xp.isnan(x), x, out)
