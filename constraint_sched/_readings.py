"""Readings: the one way every owner of schedulers reads their state by spec name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from constraint_sched._names import find

if TYPE_CHECKING:
    from constraint_sched._events import EpochStats
    from constraint_sched._phases import Phase
    from constraint_sched._scheduler import ConstraintScheduler
    from constraint_sched._spec import ConstraintSpec


class Readings:
    """The reading protocol: phases, bounds and epochs of some schedulers, by spec name.

    Written once here and shared by `ConstraintScheduler`,
    `SchedulerCollection`, the torch adapter and the Lightning callback, so
    that code written against one reads the others. A subclass provides
    `schedulers` (and may name itself in messages with ``reader``). With
    exactly one scheduler, the plain properties `phase`, `bound` and
    `last_epoch` read it; with several they raise a ``ValueError`` naming the
    by-name method to use instead.

    Examples:
        >>> from constraint_sched import ConstraintScheduler, ConstraintSpec, SchedulerCollection
        >>> both = SchedulerCollection([
        ...     ConstraintScheduler(ConstraintSpec("kl", "upper", margin=1e9)),
        ...     ConstraintScheduler(ConstraintSpec("mse", "upper", margin=1e9))])
        >>> isinstance(both, Readings), both.bound_of("kl"), both.phases["mse"].name
        (True, 1000000000.0, 'DISCOVERY')
    """

    @property
    def reader(self) -> str:
        """The name this object goes by in messages."""
        return type(self).__name__

    @property
    def schedulers(self) -> tuple[ConstraintScheduler, ...]:
        """The schedulers read, in order."""
        raise NotImplementedError

    @property
    def names(self) -> tuple[str, ...]:
        """Every spec name, scheduler by scheduler."""
        return tuple(n for s in self.schedulers for n in s.names)

    @property
    def epoch(self) -> int:
        """The current epoch, 1-based (every scheduler advances together)."""
        schedulers = self.schedulers
        return schedulers[0].epoch if schedulers else 1

    def scheduler_of(self, name: str) -> ConstraintScheduler:
        """The scheduler holding spec ``name``.

        Raises:
            KeyError: No scheduler has that spec (the message lists the names).
        """
        index = {n: s for s in self.schedulers for n in s.names}
        return find(index, name, self.reader, "spec", self.names)

    def only(self, what: str, instead: str) -> ConstraintScheduler:
        """The one scheduler, for a reading of one value; else a ValueError naming ``instead``."""
        schedulers = self.schedulers
        if len(schedulers) == 1:
            return schedulers[0]
        raise ValueError(
            f"{self.reader}.{what} needs exactly one scheduler, and this one has "
            f"{len(schedulers)} ({[s.name for s in schedulers]}): use {instead}(name) with a "
            f"spec name, one of {list(self.names)}"
        )

    @property
    def phase(self) -> Phase:
        """The phase of the one scheduler (a `Phase`: compare with ``is``).

        Raises:
            ValueError: There are several schedulers: use `phase_of` or `phases`.
        """
        return self.only("phase", "phase_of").phase

    @property
    def phases(self) -> dict[str, Phase]:
        """The phase of every spec (its scheduler's), by spec name."""
        return {n: s.phase for s in self.schedulers for n in s.names}

    def phase_of(self, name: str) -> Phase:
        """The phase of the scheduler holding spec ``name``.

        Raises:
            KeyError: No spec has that name.
        """
        return self.scheduler_of(name).phase

    @property
    def bound(self) -> float:
        """The bound in force of the one scheduler (its specs' own during discovery).

        Raises:
            ValueError: There are several schedulers: use `bound_of`.
        """
        return self.only("bound", "bound_of").bound

    def bound_of(self, name: str) -> float:
        """The bound in force for spec ``name`` (its scheduler's).

        Raises:
            KeyError: No spec has that name.
        """
        return self.scheduler_of(name).bound

    @property
    def last_epoch(self) -> EpochStats | None:
        """What the one scheduler's last completed epoch saw (None before one ends).

        Raises:
            ValueError: There are several schedulers: use `last_epoch_of`.
        """
        return self.only("last_epoch", "last_epoch_of").last_epoch

    def last_epoch_of(self, name: str) -> EpochStats | None:
        """The last completed epoch of the scheduler holding spec ``name``.

        Raises:
            KeyError: No spec has that name.
        """
        return self.scheduler_of(name).last_epoch

    def spec(self, name: str | None = None) -> ConstraintSpec:
        """The spec called ``name`` with its scheduler's current bound applied.

        Args:
            name: The spec's name; may be left out when there is one spec.

        Raises:
            KeyError: No spec has that name.
            TypeError: No name, with several specs.
        """
        if name is None:
            names = self.names
            if len(names) != 1:
                raise TypeError(f"{self.reader}: name the spec: one of {list(names)}")
            name = names[0]
        return self.scheduler_of(name).spec(name)
