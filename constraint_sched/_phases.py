"""The phases of a scheduled bound and the settings of each: discovery, hold, backoff."""

from __future__ import annotations

import enum
import math
from typing import Any, Literal

import attrs

DiscoveryStatistic = Literal["max", "min", "median", "quantile", "given"]
"""What discovery takes of the valid observations (`DiscoveryPhase`): ``"max"``,
``"min"``, ``"median"`` or ``"quantile"``; ``"given"`` keeps the specs' own bound."""

BackoffMetric = Literal["reject_rate", "violation_rate"]
"""The rate a `Backoff` watches: ``"reject_rate"`` (rejected steps / steps) or
``"violation_rate"`` (valid observations beyond the bound / valid observations)."""


class Phase(enum.Enum):
    """Where a scheduled bound is in its life; phases only move forward.

    ``DISCOVERY`` (no bound of its own: watch the metric), ``HOLD`` (the bound
    is what discovery found), ``SQUEEZE`` (tightened along a schedule towards a
    target), ``CONVERGED`` (at the target, or nothing left to do).

    Examples:
        >>> Phase.HOLD.value < Phase.SQUEEZE.value
        True
    """

    DISCOVERY = 1
    HOLD = 2
    SQUEEZE = 3
    CONVERGED = 4


def _positive_int(name: str, *, allow_zero: bool = False) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        least = 0 if allow_zero else 1
        if value is None and attribute.default is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name}.{attribute.name} must be an int >= {least}, got {value!r}")

    return check


def _number_in(
    name: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and attribute.default is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name}.{attribute.name} must be a number, got {value!r}")
        ok = (
            not math.isnan(value)
            and (value > low if low_open else value >= low)
            and (value < high if high_open else value <= high)
        )
        if not ok:
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            raise ValueError(
                f"{name}.{attribute.name} must lie in {lo}{low}, {high}{hi}, got {value!r}"
            )

    return check


def _one_of(name: str, choices: tuple[str, ...]) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ValueError(
                f"{name}.{attribute.name} must be one of {', '.join(map(repr, choices))}, "
                f"got {value!r}"
            )

    return check


@attrs.frozen
class DiscoveryPhase:
    """How a bound is discovered: watch the metric, then take a statistic of it.

    The bound found is the statistic of every valid (finite) observation of the
    discovery window, widened by ``headroom`` as a fraction of its magnitude:
    ``s + headroom * |s|`` for a ceiling, ``s - headroom * |s|`` for a floor,
    so a ceiling with headroom still contains every observation when the metric
    is negative. ``"max"`` and ``"min"`` are exact. ``"median"`` and
    ``"quantile"`` are computed from a bounded uniform sample of each spec's
    observations (``reservoir`` values, O(1) memory): exact up to that many
    observations, an estimate from a uniform random sample beyond (seeded, so
    runs repeat and restore exactly).

    With ``steps``, discovery ends inside its first epoch, after that many
    steps (observed plus rejected), instead of at its end: the bound found is
    widened by a further ``provisional_headroom`` for the rest of the epoch,
    and settles (with a `Settled` event) at the next epoch boundary, where the
    hold starts. If the epoch ends first, discovery ends there as usual. This
    is the LBO calibration of ``auto`` scales: the median of the first 200
    steps, 10% wider for the rest of epoch 1.

    Discovery lasts at least ``epochs`` epochs that saw a valid observation; an
    epoch that saw none extends it (with a `DiscoveryExtended` event) and never
    yields a bound. With ``plateau`` set, discovery goes on after ``epochs``
    while the statistic still grows by more than ``plateau`` (relative to its
    value one epoch earlier), for at most ``max_epochs`` epochs with data.

    Args:
        epochs: The least number of epochs with data to watch.
        statistic: ``"max"``, ``"min"``, ``"median"`` or ``"quantile"``. A
            ceiling takes ``"max"`` (the default) or a central statistic; a
            floor takes ``"min"`` or a central statistic. ``"given"`` keeps
            the bound the specs were built with, after ``epochs`` epochs
            with or without observations: for a bound you set yourself and
            only want tightened later (an adaptive squeeze).
        quantile: The quantile in ``(0, 1)``, for ``statistic="quantile"`` only.
        headroom: Non-negative widening, a fraction of the statistic's magnitude.
        plateau: Relative growth per epoch below which discovery may end.
        max_epochs: The most epochs with data discovery may last; needs ``plateau``.
        reservoir: How many observations per spec the median/quantile sample keeps.
        steps: End discovery after this many steps of its first epoch; needs ``epochs=1``.
        provisional_headroom: Extra widening, a fraction of the magnitude, from
            the end of a ``steps`` window to the end of its epoch.

    Examples:
        >>> DiscoveryPhase()
        DiscoveryPhase(epochs=1, statistic='max', headroom=0.0, quantile=None, plateau=None, max_epochs=None, reservoir=1024, steps=None, provisional_headroom=0.0)
        >>> DiscoveryPhase(epochs=1, plateau=0.05, max_epochs=4).max_epochs
        4
        >>> DiscoveryPhase(statistic="median", steps=200, provisional_headroom=0.1).steps
        200
    """  # noqa: E501

    epochs: int = attrs.field(default=1, validator=_positive_int("DiscoveryPhase"))
    statistic: DiscoveryStatistic = attrs.field(
        default="max",
        validator=_one_of("DiscoveryPhase", ("max", "min", "median", "quantile", "given")),
    )
    headroom: float = attrs.field(
        default=0.0, validator=_number_in("DiscoveryPhase", 0.0, math.inf, high_open=True)
    )
    quantile: float | None = attrs.field(
        default=None,
        validator=_number_in("DiscoveryPhase", 0.0, 1.0, low_open=True, high_open=True),
    )
    plateau: float | None = attrs.field(
        default=None, validator=_number_in("DiscoveryPhase", 0.0, math.inf, high_open=True)
    )
    max_epochs: int | None = attrs.field(default=None, validator=_positive_int("DiscoveryPhase"))
    reservoir: int = attrs.field(default=1024, validator=_positive_int("DiscoveryPhase"))
    steps: int | None = attrs.field(default=None, validator=_positive_int("DiscoveryPhase"))
    provisional_headroom: float = attrs.field(
        default=0.0, validator=_number_in("DiscoveryPhase", 0.0, math.inf, high_open=True)
    )

    def __attrs_post_init__(self) -> None:
        if (self.statistic == "quantile") != (self.quantile is not None):
            raise ValueError(
                "DiscoveryPhase.quantile must be given with statistic='quantile' and only then, "
                f"got statistic={self.statistic!r}, quantile={self.quantile!r}"
            )
        if (self.plateau is None) != (self.max_epochs is None):
            raise ValueError(
                "DiscoveryPhase.plateau and max_epochs go together: discovery that waits for "
                "a plateau needs a most number of epochs, got "
                f"plateau={self.plateau!r}, max_epochs={self.max_epochs!r}"
            )
        if self.steps is not None and (self.epochs != 1 or self.plateau is not None):
            raise ValueError(
                "DiscoveryPhase.steps ends discovery inside its first epoch: it needs "
                f"epochs=1 and no plateau, got epochs={self.epochs}, plateau={self.plateau!r}"
            )
        if self.provisional_headroom and self.steps is None:
            raise ValueError(
                "DiscoveryPhase.provisional_headroom widens a bound found after `steps` steps "
                f"for the rest of that epoch: it needs steps, got {self.provisional_headroom!r}"
            )
        if self.statistic == "given" and (
            self.steps is not None or self.plateau is not None or self.headroom
        ):
            raise ValueError(
                "DiscoveryPhase(statistic='given') keeps the spec's own bound: it takes no "
                f"steps, plateau or headroom, got steps={self.steps!r}, "
                f"plateau={self.plateau!r}, headroom={self.headroom!r}"
            )
        if self.max_epochs is not None and self.max_epochs < self.epochs:
            raise ValueError(
                f"DiscoveryPhase.max_epochs must be >= epochs={self.epochs}, got {self.max_epochs}"
            )

    @property
    def quantile_level(self) -> float | None:
        """The quantile the statistic estimates (0.5 for the median), or None for max/min."""
        if self.statistic == "median":
            return 0.5
        return self.quantile


@attrs.frozen
class HoldPhase:
    """How long a discovered bound is held before the squeeze starts.

    Args:
        epochs: Epochs at the discovered bound; 0 squeezes straight away.

    Examples:
        >>> HoldPhase(epochs=2).epochs
        2
    """

    epochs: int = attrs.field(default=1, validator=_positive_int("HoldPhase", allow_zero=True))


@attrs.frozen
class Backoff:
    """How a squeeze that hurts is relaxed.

    At the end of an epoch that ran on a freshly squeezed bound, if that
    epoch's rate (``metric``) exceeds ``max_reject_rate``, the bound moves back
    towards the bound before the squeeze by ``factor`` of the gap (1.0 restores
    it, never more), and the schedule waits ``cooldown`` further epochs before
    it retries the same squeeze step. A converged bound is final.

    Args:
        max_reject_rate: The largest tolerated rate, in ``(0, 1]``.
        metric: ``"reject_rate"`` (rejected steps / steps) or
            ``"violation_rate"`` (valid observations beyond the bound /
            valid observations).
        factor: The fraction of the last squeeze to undo, in ``(0, 1]``.
        cooldown: Epochs to wait at the relaxed bound beyond the first.

    Examples:
        >>> Backoff(max_reject_rate=0.15, factor=1.0).factor
        1.0
    """

    max_reject_rate: float = attrs.field(
        default=0.15, validator=_number_in("Backoff", 0.0, 1.0, low_open=True)
    )
    metric: BackoffMetric = attrs.field(
        default="reject_rate", validator=_one_of("Backoff", ("reject_rate", "violation_rate"))
    )
    factor: float = attrs.field(
        default=0.5, validator=_number_in("Backoff", 0.0, 1.0, low_open=True)
    )
    cooldown: int = attrs.field(default=1, validator=_positive_int("Backoff", allow_zero=True))
