"""Typed events that a scheduler's epoch boundary causes, and the per-epoch record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import attrs

from constraint_sched._phases import Phase


def _fmt(value: float) -> str:
    return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.1f}"


@attrs.frozen
class Event:
    """Something an epoch boundary did to a bound.

    Every event names its ``constraint`` (the scheduler's name) and the
    ``epoch`` in which the ``new`` bound applies (the epoch that starts with
    it), with the ``old`` bound it replaces. ``kind`` is a short stable name
    for logs and JSON.

    Examples:
        >>> e = Squeezed(constraint="kl", epoch=3, old=42358.2, new=13000.0, proposed=13000.0)
        >>> e.kind, e.message
        ('squeezed', 'kl: squeezed ceiling 42,358.2 -> 13,000 (epoch 3)')
    """

    kind: ClassVar[str] = "event"
    constraint: str
    epoch: int
    old: float
    new: float
    side: str = attrs.field(default="upper", kw_only=True)

    @property
    def level(self) -> str:
        """``"info"``, or ``"warning"`` for an event that likely needs the user's attention."""
        return "info"

    @property
    def bound_name(self) -> str:
        """``"ceiling"``, ``"floor"`` or ``"half-width"`` (a box's, around its centre)."""
        names = {"upper": "ceiling", "lower": "floor", "width": "half-width"}
        return names.get(self.side, self.side)

    @property
    def message(self) -> str:
        """One line for a log."""
        return (
            f"{self.constraint}: {self.kind} {self.bound_name} {_fmt(self.old)} -> "
            f"{_fmt(self.new)} (epoch {self.epoch})"
        )


@attrs.frozen
class Discovered(Event):
    """Discovery ended: the bound is the statistic of the window (with headroom).

    ``value`` is the statistic before headroom, ``per_spec`` the statistic of
    each spec sharing the bound, ``observations`` the valid observations seen.
    """

    kind: ClassVar[str] = "discovered"
    statistic: str = attrs.field(default="max", kw_only=True)
    value: float = attrs.field(default=0.0, kw_only=True)
    per_spec: Mapping[str, float] = attrs.field(factory=dict, kw_only=True)
    observations: int = attrs.field(default=0, kw_only=True)
    clamped: bool = attrs.field(default=False, kw_only=True)
    """Whether the statistic (with headroom) was no valid bound: the nearest valid one is used."""

    @property
    def level(self) -> str:
        """``"warning"`` when the bound used has another sign than the data's statistic.

        A `clamped` bound of the statistic's own sign (a ceiling found below
        the specs' least valid one, say) is ``"info"``: the data said "lower",
        and the least valid bound is as low as the specs allow.
        """
        return "warning" if self._sign_flipped else "info"

    @property
    def _sign_flipped(self) -> bool:
        return self.clamped and self.value != 0 and (self.value > 0) != (self.new > 0)

    @property
    def kept(self) -> bool:
        """Whether discovery kept the specs' own bound (``DiscoveryPhase(statistic="given")``)."""
        return self.statistic == "given"

    @property
    def message(self) -> str:
        """One line for a log."""
        parts = ", ".join(f"{k} {_fmt(v)}" for k, v in self.per_spec.items())
        if self.kept:
            return (
                f"{self.constraint}: kept the given {self.bound_name} {_fmt(self.new)}; "
                f"applies from epoch {self.epoch}"
            )
        return (
            f"{self.constraint}: discovered {self.bound_name} {_fmt(self.new)} "
            f"({self.statistic} {_fmt(self.value)} over {self.observations} observations"
            f"{'; ' + parts if len(self.per_spec) > 1 else ''}{self._clamp_note}); applies from "
            f"epoch {self.epoch}"
        )

    @property
    def _clamp_note(self) -> str:
        if not self.clamped:
            return ""
        note = f"; no valid {self.bound_name} lies there: the nearest valid one is used"
        if self._sign_flipped:
            note += ", of the other sign: check the sign and the units of the values observed"
        return note


@attrs.frozen
class DiscoveryExtended(Event):
    """Discovery goes on past its nominal length; ``reason`` says why."""

    kind: ClassVar[str] = "discovery_extended"
    reason: str = attrs.field(default="", kw_only=True)

    @property
    def message(self) -> str:
        """One line for a log."""
        return f"{self.constraint}: discovery extended into epoch {self.epoch}: {self.reason}"


@attrs.frozen
class Idle(Event):
    """An epoch with no step (no observation, no rejection) ended: nothing moved.

    A hold does not count it, a squeeze takes no step and cannot converge,
    and a backoff still judges the last squeeze step at the next epoch with
    steps. It usually means `advance_epoch` (or a term's ``epoch_end``) was
    called twice for one epoch, or the steps were observed elsewhere.
    """

    kind: ClassVar[str] = "idle"

    @property
    def level(self) -> str:
        """``"warning"``: an epoch without steps is most likely a mistake in the loop."""
        return "warning"

    @property
    def message(self) -> str:
        """One line for a log."""
        return (
            f"{self.constraint}: epoch {self.epoch - 1} saw no step (no observation, no "
            f"rejection) and does not count: the {self.bound_name} stays at {_fmt(self.new)} "
            f"in epoch {self.epoch}; was advance_epoch called twice?"
        )


@attrs.frozen
class Held(Event):
    """The discovered bound is held for ``epochs`` epochs from ``epoch``."""

    kind: ClassVar[str] = "held"
    epochs: int = attrs.field(default=1, kw_only=True)

    @property
    def message(self) -> str:
        """One line for a log."""
        return (
            f"{self.constraint}: holding {self.bound_name} at {_fmt(self.new)} for "
            f"{self.epochs} epoch{'s' if self.epochs != 1 else ''} from epoch {self.epoch}"
        )


@attrs.frozen
class Settled(Event):
    """A bound discovered inside an epoch drops its provisional headroom at the epoch's end.

    Examples:
        >>> Settled(constraint="mse", epoch=2, old=0.33, new=0.3).message
        'mse: settled ceiling 0.33 -> 0.3, the provisional headroom removed (epoch 2)'
    """

    kind: ClassVar[str] = "settled"

    @property
    def message(self) -> str:
        """One line for a log."""
        return (
            f"{self.constraint}: settled {self.bound_name} {_fmt(self.old)} -> {_fmt(self.new)}, "
            f"the provisional headroom removed (epoch {self.epoch})"
        )


@attrs.frozen
class Squeezed(Event):
    """The bound was tightened; ``proposed`` is what the schedule asked for.

    ``note``, when set, says why the squeeze does not go as configured (a
    geometric squeeze from a bound of the other sign than its target moves
    linearly); such an event is a warning (`level`).

    Examples:
        >>> Squeezed(constraint="gap", epoch=3, old=-2.0, new=-0.5, proposed=-0.5).level
        'info'
    """

    kind: ClassVar[str] = "squeezed"
    proposed: float = attrs.field(default=0.0, kw_only=True)
    note: str = attrs.field(default="", kw_only=True)

    @property
    def level(self) -> str:
        """``"warning"`` for a squeeze with a `note`, else ``"info"``."""
        return "warning" if self.note else "info"

    @property
    def message(self) -> str:
        """One line for a log."""
        line = super().message
        return f"{line}: {self.note}" if self.note else line


@attrs.frozen
class BackedOff(Event):
    """A squeeze hurt: ``rate`` of ``metric`` exceeded ``limit``, so the bound was relaxed."""

    kind: ClassVar[str] = "backed_off"
    metric: str = attrs.field(default="reject_rate", kw_only=True)
    rate: float = attrs.field(default=0.0, kw_only=True)
    limit: float = attrs.field(default=0.0, kw_only=True)

    @property
    def message(self) -> str:
        """One line for a log."""
        return (
            f"{self.constraint}: backed off {self.bound_name} {_fmt(self.old)} -> "
            f"{_fmt(self.new)} (epoch {self.epoch}): {self.metric} {self.rate:.1%} > "
            f"{self.limit:.1%}"
        )


@attrs.frozen
class Converged(Event):
    """The bound is final.

    ``reason`` says why: ``"target"`` (a squeeze reached the target),
    ``"early"`` (discovery already found the bound at or past the target, so
    the bound is the target) or ``"no_squeeze"`` (no squeeze schedule: the
    discovered bound is kept). An early convergence is a warning
    (`level` ``"warning"``): the discovered value is in ``discovered`` and the
    message gives both numbers, since it usually means that discovery watched
    something other than the natural value (a model already trained with a
    penalty, a value in other units) rather than a run with nothing to squeeze.

    Examples:
        >>> e = Converged(
        ...     constraint="kl", epoch=2, old=1.0, new=1.0, reason="early", discovered=0.83
        ... )
        >>> e.level
        'warning'
        >>> print(e.message)  # doctest: +NORMALIZE_WHITESPACE
        kl: converged early: the discovered ceiling 0.83 is already at or under the target 1,
        so the bound is the target from epoch 2 and nothing is squeezed; discovery should watch
        the plain objective's value, per example (see "What to train on while discovering")
    """

    kind: ClassVar[str] = "converged"
    reason: str = attrs.field(default="target", kw_only=True)
    discovered: float | None = attrs.field(default=None, kw_only=True)

    @property
    def early(self) -> bool:
        """Whether discovery already found the bound at or past the target."""
        return self.reason == "early"

    @property
    def level(self) -> str:
        """``"warning"`` for an early convergence, else ``"info"``."""
        return "warning" if self.early else "info"

    @property
    def message(self) -> str:
        """One line for a log."""
        if self.early and self.discovered is not None:
            under = "under" if self.side != "lower" else "over"
            return (
                f"{self.constraint}: converged early: the discovered {self.bound_name} "
                f"{_fmt(self.discovered)} is already at or {under} the target {_fmt(self.new)}, "
                f"so the bound is the target from epoch {self.epoch} and nothing is squeezed; "
                "discovery should watch the plain objective's value, per example "
                '(see "What to train on while discovering")'
            )
        how = {
            "target": "at its target",
            "early": "already at its target after discovery",
            "no_squeeze": "is final (no squeeze schedule)",
        }.get(self.reason, self.reason)
        return (
            f"{self.constraint}: converged, {self.bound_name} {_fmt(self.new)} {how} "
            f"(epoch {self.epoch})"
        )


@attrs.frozen
class EpochStats:
    """What a scheduler saw in one epoch, and the bound and phase it ran under.

    Attributes:
        epoch: The epoch (1-based).
        phase: The phase during the epoch.
        bound: The bound in force during the epoch.
        steps: Accepted steps (observations of the most observed spec).
        rejects: Rejected steps (`ConstraintScheduler.reject` calls).
        observations: Valid (finite) observations, over every spec.
        nonfinite: NaN or infinite observations, skipped.
        violations: Valid observations beyond the bound.
        reject_rate: ``rejects / (steps + rejects)``, 0 when both are 0.
        violation_rate: ``violations / observations``, 0 when there are none.
    """

    epoch: int
    phase: Phase
    bound: float
    steps: int
    rejects: int
    observations: int
    nonfinite: int
    violations: int

    @property
    def reject_rate(self) -> float:
        """Rejected steps over all steps of the epoch."""
        total = self.steps + self.rejects
        return self.rejects / total if total else 0.0

    @property
    def violation_rate(self) -> float:
        """Valid observations beyond the bound over valid observations."""
        return self.violations / self.observations if self.observations else 0.0
