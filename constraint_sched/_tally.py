"""Tally: a summary of one spec's observations made elsewhere (a device, another process)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, SupportsFloat

import attrs

from constraint_sched._spec import Side
from constraint_sched._state import Reader, encode_float


def _check_count(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Tally.{attribute.name} must be an int >= 0, got {value!r}")


def _to_samples(value: Any) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"Tally.samples must be an iterable of numbers, got {value!r}") from None


@attrs.frozen
class Tally:
    """A summary of many observations of one spec, merged into a scheduler at once.

    A training loop that cannot afford to hand every value to
    `ConstraintScheduler.observe` (the values live on an accelerator, or in
    other processes) accumulates these counts and extremes itself and merges
    them with `ConstraintScheduler.merge` before `advance_epoch`; the torch
    adapter does exactly that. Merging a tally is equivalent to observing its
    values one by one, for the max and min statistics exactly; the median and
    quantiles use ``samples`` (all the valid values, or a uniform sample of them).

    Args:
        count: Observations, valid or not (each is one accepted step of the spec).
        nonfinite: How many of them were NaN or infinite.
        violations: How many valid ones lay beyond the bound in force.
        maximum: The largest valid value; ``-inf`` when there is none.
        minimum: The smallest valid value; ``inf`` when there is none.
        total: The sum of the valid values, for `mean` (schedulers do not use it).
        samples: Valid values for a median or quantile discovery: all of
            them, or a uniform sample; at most ``count - nonfinite``.

    Raises:
        ValueError: The counts contradict each other, or the extremes the
            counts (a finite maximum with no valid value, ``maximum < minimum``,
            a non-finite sample); the message names the field.

    Examples:
        >>> t = Tally.of([3.0, float("nan"), 5.0, 4.0], bound=4.5)
        >>> t.count, t.nonfinite, t.violations, t.maximum, t.minimum, t.mean
        (4, 1, 1, 5.0, 3.0, 4.0)
    """

    count: int = attrs.field(validator=_check_count)
    nonfinite: int = attrs.field(default=0, validator=_check_count, kw_only=True)
    violations: int = attrs.field(default=0, validator=_check_count, kw_only=True)
    maximum: float = attrs.field(default=-math.inf, converter=float, kw_only=True)
    minimum: float = attrs.field(default=math.inf, converter=float, kw_only=True)
    total: float = attrs.field(default=0.0, converter=float, kw_only=True)
    samples: tuple[float, ...] = attrs.field(default=(), converter=_to_samples, kw_only=True)

    def __attrs_post_init__(self) -> None:
        valid = self.count - self.nonfinite
        if valid < 0:
            raise ValueError(
                f"Tally.nonfinite ({self.nonfinite}) exceeds Tally.count ({self.count})"
            )
        if self.violations > valid:
            raise ValueError(
                f"Tally.violations ({self.violations}) exceeds the valid observations "
                f"({valid} = count - nonfinite)"
            )
        if valid == 0:
            if self.maximum != -math.inf or self.minimum != math.inf:
                raise ValueError(
                    "Tally with no valid observation must have maximum=-inf and minimum=inf, "
                    f"got maximum={self.maximum!r}, minimum={self.minimum!r}"
                )
        elif not (math.isfinite(self.maximum) and math.isfinite(self.minimum)):
            raise ValueError(
                f"Tally.maximum and Tally.minimum must be finite with {valid} valid "
                f"observations, got maximum={self.maximum!r}, minimum={self.minimum!r}"
            )
        elif self.maximum < self.minimum:
            raise ValueError(
                f"Tally.maximum ({self.maximum!r}) is below Tally.minimum ({self.minimum!r})"
            )
        if len(self.samples) > valid:
            raise ValueError(
                f"Tally.samples holds {len(self.samples)} values but there are only {valid} "
                "valid observations"
            )
        for i, s in enumerate(self.samples):
            if not (math.isfinite(s) and self.minimum <= s <= self.maximum):
                raise ValueError(
                    f"Tally.samples[{i}] = {s!r} is not a finite value in "
                    f"[minimum, maximum] = [{self.minimum!r}, {self.maximum!r}]"
                )

    @property
    def valid(self) -> int:
        """The valid (finite) observations: ``count - nonfinite``."""
        return self.count - self.nonfinite

    @property
    def mean(self) -> float:
        """The mean of the valid values, ``total / valid``; NaN when there is none."""
        return self.total / self.valid if self.valid else math.nan

    def __add__(self, other: Tally) -> Tally:
        """Two parts of one epoch's observations as one (for a report: the samples are dropped)."""
        if not isinstance(other, Tally):
            return NotImplemented
        return Tally(
            self.count + other.count,
            nonfinite=self.nonfinite + other.nonfinite,
            violations=self.violations + other.violations,
            maximum=max(self.maximum, other.maximum),
            minimum=min(self.minimum, other.minimum),
            total=self.total + other.total,
        )

    def state(self) -> dict[str, Any]:
        """The tally as strict-JSON data (`from_state` reads it back)."""
        return {
            "count": self.count,
            "nonfinite": self.nonfinite,
            "violations": self.violations,
            "total": encode_float(self.total),
            "maximum": encode_float(self.maximum),
            "minimum": encode_float(self.minimum),
            "samples": list(self.samples),
        }

    @classmethod
    def from_state(cls, data: Any, path: str) -> Tally:
        """Read what `state` wrote; a ValueError naming ``path`` if it is no tally a run makes."""
        r = Reader(data, path)
        try:
            return cls(
                r.integer("count"),
                nonfinite=r.integer("nonfinite"),
                violations=r.integer("violations"),
                total=r.number("total"),
                maximum=r.number("maximum"),
                minimum=r.number("minimum"),
                samples=r.numbers("samples"),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from None

    @classmethod
    def of(
        cls, values: Iterable[SupportsFloat], *, bound: float | None = None, side: Side = "upper"
    ) -> Tally:
        """Tally ``values``, keeping every valid one as a sample.

        Args:
            values: The observations.
            bound: The bound in force, to count violations (none without it).
            side: Whether ``bound`` is a ceiling (``"upper"``) or a floor.

        Returns:
            The tally.
        """
        if side not in ("upper", "lower"):
            raise ValueError(f"Tally.of: side must be 'upper' or 'lower', got {side!r}")
        xs = [float(v) for v in values]
        good = [x for x in xs if math.isfinite(x)]
        if bound is None:
            violations = 0
        elif side == "upper":
            violations = sum(x > bound for x in good)
        else:
            violations = sum(x < bound for x in good)
        return cls(
            len(xs),
            nonfinite=len(xs) - len(good),
            violations=violations,
            maximum=max(good, default=-math.inf),
            minimum=min(good, default=math.inf),
            total=math.fsum(good),
            samples=good,
        )
