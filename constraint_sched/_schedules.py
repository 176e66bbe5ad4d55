"""SqueezeSchedule: how a held bound is tightened towards its target, epoch by epoch."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping
from typing import Any, Literal

import attrs

ScheduleKind = Literal["table", "geometric", "linear", "adaptive"]
"""A `SqueezeSchedule`'s kind: ``"table"``, ``"geometric"``, ``"linear"`` or
``"adaptive"``, each made by the constructor of that name."""


def _check_fraction(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Relative.fraction must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"Relative.fraction must be positive and finite, got {value!r}")


@attrs.frozen
class Relative:
    """A target given as a fraction of the bound discovery finds: no units, no guess.

    ``Relative(0.5)`` squeezes a discovered ceiling of 240 to 120, and one of
    2,400 to 1,200: the target is ``fraction * discovered``, known when
    discovery ends. A fraction under 1 tightens a positive ceiling (over 1, a
    positive floor).

    Args:
        fraction: The target as a multiple of the discovered bound; positive.

    Examples:
        >>> Relative(0.5).of(240.0)
        120.0
        >>> Relative(0)
        Traceback (most recent call last):
        ...
        ValueError: Relative.fraction must be positive and finite, got 0
    """

    fraction: float = attrs.field(validator=_check_fraction)

    def of(self, discovered: float) -> float:
        """The target for a discovered bound."""
        return float(self.fraction * discovered)

    def __str__(self) -> str:
        return f"{self.fraction:g} of the discovered bound"


Target = float | Relative
"""A squeeze target: an absolute bound, or a `Relative` fraction of the discovered one."""


def _check_target(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, Relative):
        return
    if isinstance(value, bool) or not isinstance(value, float) or not math.isfinite(value):
        raise ValueError(
            f"SqueezeSchedule.target must be a finite number or a Relative, got {value!r}"
        )


def _to_float(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


@attrs.frozen
class SqueezeSchedule:
    """How a bound is tightened after the hold, towards ``target``.

    Make one with a constructor: `table` (absolute bounds keyed by epoch),
    `geometric` and `linear` (from the discovered bound to the target in a
    number of epochs: no guessed start) or `adaptive` (tighten by a factor
    while the reject rate allows). Whatever a schedule proposes, a squeeze
    applies ``min(current, proposed)`` for a ceiling (``max`` for a floor),
    never goes past the target, and so never loosens; reaching the target
    converges.

    A schedule is a pure function of the squeeze step (1 for the first
    squeeze epoch), the discovered bound, the current bound and the last
    epoch's reject rate: see `propose`.

    Examples:
        >>> s = SqueezeSchedule.geometric(target=3000.0, epochs=2)
        >>> s.propose(1, start=12000.0, current=12000.0)
        6000.0
        >>> s.propose(2, start=12000.0, current=6000.0)
        3000.0
    """

    kind: ScheduleKind
    target: Target = attrs.field(converter=_to_float, validator=_check_target)
    epochs: int | None = None
    table_entries: tuple[tuple[int, float], ...] = ()
    factor: float | None = None
    max_reject_rate: float | None = None

    def __attrs_post_init__(self) -> None:
        # The constructors check their arguments; this catches a schedule built
        # directly (or loaded) whose fields do not make one, before it is used.
        kind = self.kind
        if kind not in _KINDS:
            raise ValueError(
                f"SqueezeSchedule.kind must be one of {', '.join(map(repr, _KINDS))}, "
                f"got {kind!r}: build one with SqueezeSchedule.table, .geometric, .linear or "
                ".adaptive"
            )
        if kind in ("geometric", "linear"):
            _check_epochs(self.epochs, f"SqueezeSchedule({kind!r}).epochs")
            if kind == "geometric" and self.target == 0.0 and not self.relative:
                raise ValueError("SqueezeSchedule.geometric: target must not be 0 (use linear)")
        if kind == "table":
            if self.relative:
                raise ValueError(
                    "SqueezeSchedule('table').target: a table holds absolute bounds; a Relative "
                    "target needs geometric, linear or adaptive"
                )
            if not self.table_entries:
                raise ValueError(
                    "SqueezeSchedule('table').table_entries: a table needs at least one "
                    "(epoch, bound) entry; build it with SqueezeSchedule.table({epoch: bound})"
                )
            if self.target != self.table_entries[-1][1]:
                raise ValueError(
                    f"SqueezeSchedule('table').target {self.target!r} must be the last entry's "
                    f"bound {self.table_entries[-1][1]!r}"
                )
        if kind == "adaptive":
            _check_factor(self.factor)
            _check_rate(self.max_reject_rate)

    @classmethod
    def table(cls, bounds: Mapping[int, float]) -> SqueezeSchedule:
        """Absolute bounds keyed by the epoch in which they apply; the last entry is the target.

        Epochs are those of the nominal timeline (discovery epochs, then hold
        epochs, then squeeze epochs). If discovery runs longer than nominal,
        or a backoff makes the schedule wait, the rest of the table shifts
        with it. Between keys the previous entry holds. Entries must move
        monotonically (down for a ceiling, up for a floor).

        Args:
            bounds: ``{epoch: bound}``, epochs as ints >= 1, bounds finite.

        Returns:
            The schedule.

        Raises:
            ValueError: The table is empty, has a bad key or value, or is not
                monotone; the message names the entry.

        Examples:
            >>> s = SqueezeSchedule.table({3: 13000, 4: 11000, 5: 9500})
            >>> s.target, s.first_epoch
            (9500.0, 3)
        """
        if not isinstance(bounds, Mapping) or not bounds:
            raise ValueError(
                f"SqueezeSchedule.table needs a non-empty {{epoch: bound}}, got {bounds!r}"
            )
        entries: list[tuple[int, float]] = []
        for epoch, bound in bounds.items():
            if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
                raise ValueError(
                    f"SqueezeSchedule.table: epoch keys must be ints >= 1, got {epoch!r}"
                )
            value = _to_float(bound)
            if not isinstance(value, float) or not math.isfinite(value):
                raise ValueError(
                    f"SqueezeSchedule.table: the bound for epoch {epoch} must be a finite "
                    f"number, got {bound!r}"
                )
            entries.append((epoch, value))
        entries.sort()
        values = [v for _, v in entries]
        down = all(a >= b for a, b in itertools.pairwise(values))
        up = all(a <= b for a, b in itertools.pairwise(values))
        if not (down or up):
            raise ValueError(
                "SqueezeSchedule.table: bounds must move one way (down for a ceiling, up for a "
                f"floor), got {dict(entries)!r}"
            )
        return cls("table", target=entries[-1][1], table_entries=tuple(entries))

    @classmethod
    def geometric(cls, target: Target, epochs: int) -> SqueezeSchedule:
        """Multiply the discovered bound by one factor per epoch, reaching ``target`` in ``epochs``.

        Step ``i`` proposes ``start * (target / start) ** (i / epochs)``. When
        the discovered bound is 0 or of the other sign than the target, no
        factor leads from one to the other: the squeeze then moves in equal
        steps, as `linear` does, and its first `Squeezed` event is a warning
        that says so.

        Args:
            target: The final bound, not zero; or `Relative` (a fraction of
                the discovered bound).
            epochs: Squeeze epochs from the discovered bound to the target.

        Returns:
            The schedule.

        Examples:
            >>> SqueezeSchedule.geometric(target=3000.0, epochs=13).epochs
            13
            >>> half = SqueezeSchedule.geometric(target=Relative(0.5), epochs=2)
            >>> half.propose(1, start=240.0, current=240.0)  # sqrt(0.5) of the way
            169.7056274847714
            >>> half.target_for(240.0)
            120.0
        """
        return cls("geometric", target=target, epochs=_check_epochs(epochs))

    @classmethod
    def linear(cls, target: Target, epochs: int) -> SqueezeSchedule:
        """Move from the discovered bound to ``target`` in equal steps over ``epochs``.

        Args:
            target: The final bound, or `Relative` (a fraction of the
                discovered bound).
            epochs: Squeeze epochs from the discovered bound to the target.

        Returns:
            The schedule.

        Examples:
            >>> SqueezeSchedule.linear(target=3000.0, epochs=4).propose(
            ...     1, start=7000.0, current=7000.0)
            6000.0
        """
        return cls("linear", target=target, epochs=_check_epochs(epochs))

    @classmethod
    def adaptive(
        cls, target: Target, factor: float = 0.9, max_reject_rate: float = 0.05
    ) -> SqueezeSchedule:
        """Tighten by ``factor`` each epoch whose reject rate is at most ``max_reject_rate``.

        A ceiling ``b`` becomes ``b - (1 - factor) * |b|`` (``b * factor`` when
        positive), a floor ``b + (1 - factor) * |b|``, never past ``target``.
        An epoch with a higher reject rate makes the schedule wait.

        Args:
            target: The tightest bound (the floor of a ceiling's descent), or
                `Relative` (a fraction of the discovered bound).
            factor: The multiplier per epoch, in ``(0, 1)``.
            max_reject_rate: The reject rate up to which it tightens, in ``[0, 1]``.

        Returns:
            The schedule.

        Examples:
            >>> s = SqueezeSchedule.adaptive(target=100.0, factor=0.5)
            >>> s.propose(1, start=1000.0, current=1000.0, reject_rate=0.0)
            500.0
            >>> s.propose(2, start=1000.0, current=500.0, reject_rate=0.2)  # waits
            500.0
        """
        _check_factor(factor)
        _check_rate(max_reject_rate)
        return cls(
            "adaptive", target=target, factor=float(factor), max_reject_rate=float(max_reject_rate)
        )

    @property
    def relative(self) -> bool:
        """Whether the target is a `Relative` fraction of the discovered bound."""
        return isinstance(self.target, Relative)

    def target_for(self, discovered: float) -> float:
        """The target as a bound: itself, or its fraction of ``discovered``."""
        target = self.target
        return target.of(discovered) if isinstance(target, Relative) else target

    @property
    def first_epoch(self) -> int | None:
        """The first epoch key of a table schedule; None for the others."""
        return self.table_entries[0][0] if self.table_entries else None

    def propose(
        self,
        step: int,
        *,
        start: float,
        current: float,
        reject_rate: float = 0.0,
        first_epoch: int | None = None,
    ) -> float:
        """The bound this schedule proposes for squeeze step ``step``.

        The scheduler then applies the never-loosen rule and the target; this
        function is pure.

        Args:
            step: 1 for the first squeeze epoch, 2 for the next, ...
            start: The discovered bound the squeeze starts from.
            current: The bound now in force.
            reject_rate: The reject rate of the epoch that just ended.
            first_epoch: The nominal epoch of step 1, for a table; defaults to
                the table's first key.

        Returns:
            The proposed bound; ``current`` when the schedule has nothing to
            propose yet.
        """
        kind = self.kind
        target = self.target_for(start)
        if kind == "table":
            first = self.first_epoch if first_epoch is None else first_epoch
            assert first is not None
            epoch = first + step - 1
            keys = [k for k, _ in self.table_entries]
            at = bisect.bisect_right(keys, epoch) - 1
            return current if at < 0 else self.table_entries[at][1]
        if kind == "adaptive":
            assert self.factor is not None
            assert self.max_reject_rate is not None
            if reject_rate > self.max_reject_rate:
                return current
            direction = -1.0 if target <= start else 1.0
            return current + direction * (1.0 - self.factor) * abs(current)
        assert self.epochs is not None
        if step >= self.epochs:
            return target
        fraction = step / self.epochs
        if kind == "linear":
            return start + (target - start) * fraction
        if no_factor(self, start):  # no factor reaches the target: equal steps instead
            return start + (target - start) * fraction
        return float(start * (target / start) ** fraction)


_KINDS = ("table", "geometric", "linear", "adaptive")


def no_factor(schedule: SqueezeSchedule, start: float) -> bool:
    """Whether a geometric ``schedule`` cannot go from ``start`` by a factor (0, other sign)."""
    target = schedule.target_for(start)
    return schedule.kind == "geometric" and (start == 0 or (start > 0) != (target > 0))


def _check_epochs(epochs: Any, what: str = "SqueezeSchedule: epochs") -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"{what} must be an int >= 1, got {epochs!r}")
    return epochs


def _check_factor(factor: Any) -> None:
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor < 1:
        raise ValueError(f"SqueezeSchedule.adaptive: factor must lie in (0, 1), got {factor!r}")


def _check_rate(rate: Any) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ValueError(
            f"SqueezeSchedule.adaptive: max_reject_rate must lie in [0, 1], got {rate!r}"
        )
