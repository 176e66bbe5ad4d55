"""SchedulerCollection: many schedulers driven as one: one observe, one advance_epoch."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any, SupportsFloat

from constraint_sched import _state
from constraint_sched._counts import check_count
from constraint_sched._events import Event
from constraint_sched._names import find
from constraint_sched._readings import Readings
from constraint_sched._scheduler import Callback, ConstraintScheduler, Count
from constraint_sched._spec import ConstraintSpec
from constraint_sched._tally import Tally

_FORMAT = "constraint_sched.SchedulerCollection"


class SchedulerCollection(Readings):
    """Drive many `ConstraintScheduler` objects as one, routing values by spec name.

    A trainer with thirty scheduled goals makes one call per step,
    ``observe({name: value, ...})``, one `reject` per rejected step (counted by
    every scheduler), one `advance_epoch` per epoch, and saves one
    `state_dict`. Spec names must be unique across the collection; schedulers
    are looked up by their own name (``collection["kl_core+kl_detail"]``).

    State reads the same as on a `ConstraintScheduler`: by spec name with
    `phase_of`, `bound_of` and `last_epoch_of`, for all at once with
    `phases`; and, when the collection holds exactly one scheduler, as the
    plain properties `phase`, `bound` and `last_epoch` (with several they
    raise a ``ValueError`` that says which method to use instead).

    Args:
        schedulers: The schedulers; their names and spec names must be unique.
        callbacks: Added to every scheduler: called with each event.

    Raises:
        ValueError: Two schedulers share a name, or two specs share a name.

    Examples:
        >>> from constraint_sched import ConstraintSpec, ConstraintScheduler
        >>> mse = ConstraintSpec("mse", "minimize_soft", scale="auto")
        >>> kl = ConstraintSpec("kl", "upper", margin=1e9)
        >>> both = SchedulerCollection([
        ...     ConstraintScheduler(mse, discovery=DiscoveryPhase(statistic="median")),
        ...     ConstraintScheduler(kl)])
        >>> for mse_value, kl_value in [(0.2, 900.0), (0.4, 1200.0), (0.3, 1000.0)]:
        ...     both.observe({"mse": mse_value, "kl": kl_value})
        >>> [e.kind for e in both.advance_epoch()]
        ['discovered', 'held', 'discovered', 'held']
        >>> both.spec("mse").scale, both.spec("kl").margin
        (0.3, 1200.0)
        >>> both.phase_of("kl"), both.bound_of("kl")
        (<Phase.HOLD: 2>, 1200.0)
    """

    def __init__(
        self, schedulers: Iterable[ConstraintScheduler], *, callbacks: Iterable[Callback] = ()
    ) -> None:
        self._schedulers: dict[str, ConstraintScheduler] = {}
        self._route: dict[str, ConstraintScheduler] = {}
        for i, scheduler in enumerate(schedulers):
            if not isinstance(scheduler, ConstraintScheduler):
                raise TypeError(
                    f"SchedulerCollection: schedulers[{i}] must be a ConstraintScheduler, "
                    f"got {scheduler!r}"
                )
            if scheduler.name in self._schedulers:
                raise ValueError(
                    f"SchedulerCollection: two schedulers are named {scheduler.name!r}"
                )
            self._schedulers[scheduler.name] = scheduler
            for spec_name in scheduler.names:
                if spec_name in self._route:
                    raise ValueError(
                        f"SchedulerCollection: spec {spec_name!r} is in both "
                        f"{self._route[spec_name].name!r} and {scheduler.name!r}"
                    )
                self._route[spec_name] = scheduler
        for callback in callbacks:
            for scheduler in self._schedulers.values():
                scheduler.add_callback(callback)

    def __getitem__(self, name: str) -> ConstraintScheduler:
        """The scheduler called ``name``."""
        return find(self._schedulers, name, "SchedulerCollection", "scheduler", self._schedulers)

    def __iter__(self) -> Iterator[ConstraintScheduler]:
        """The schedulers, in the order given."""
        return iter(self._schedulers.values())

    def __len__(self) -> int:
        """How many schedulers."""
        return len(self._schedulers)

    def __contains__(self, name: object) -> bool:
        """Whether a scheduler is called ``name``."""
        return name in self._schedulers

    @property
    def schedulers(self) -> tuple[ConstraintScheduler, ...]:
        """The schedulers, in order."""
        return tuple(self._schedulers.values())

    @property
    def names(self) -> tuple[str, ...]:
        """Every spec name, scheduler by scheduler."""
        return tuple(self._route)

    def scheduler_of(self, name: str) -> ConstraintScheduler:
        """The scheduler holding spec ``name``.

        Raises:
            KeyError: No scheduler has that spec.
        """
        return find(self._route, name, "SchedulerCollection", "spec", sorted(self._route))

    @property
    def specs(self) -> dict[str, ConstraintSpec]:
        """Every spec by name, with its current bound applied."""
        return {s.name: s for scheduler in self for s in scheduler.specs}

    def observe(self, values: Mapping[str, SupportsFloat]) -> None:
        """Record an accepted step's values, ``{spec name: value}``, each to its scheduler.

        The whole mapping is checked before anything is recorded: if one
        name or value is refused, no scheduler records any of it.

        Raises:
            KeyError: A name no scheduler has.
            TypeError: A value ``float()`` does not accept.
            ValueError: A non-finite value of a scheduler with ``nonfinite="raise"``.
        """
        route = self._route
        checked: dict[ConstraintScheduler, list[tuple[int, float]]] = {}
        for name, value in values.items():
            scheduler = route.get(name) or self.scheduler_of(name)
            checked.setdefault(scheduler, []).append(scheduler._prepare(name, value))
        for scheduler, pairs in checked.items():
            scheduler._record_all(pairs)

    def merge(self, name: str, tally: Tally, *, log: bool = True) -> None:
        """Record a `Tally` of spec ``name``'s observations in its scheduler.

        Args:
            name: The spec's name.
            tally: Its observations.
            log: Log the events of a ``steps`` discovery this merge ends.

        Raises:
            KeyError: A name no scheduler has.
        """
        self.scheduler_of(name).merge(name, tally, log=log)

    def reject(self, count: Count = 1) -> None:
        """Count ``count`` rejected steps in every scheduler.

        Args:
            count: As for `ConstraintScheduler.reject`: an int >= 0, a bool,
                or a numpy bool or integer scalar.

        Raises:
            TypeError: A count of another type. Nothing is counted.
            ValueError: A negative count. Nothing is counted.
        """
        value = check_count(count, "SchedulerCollection.reject")
        for scheduler in self._schedulers.values():
            scheduler.reject(value)

    def advance_epoch(
        self, *, log: bool = True, tighten: bool | Collection[str] = True
    ) -> list[Event]:
        """End the epoch in every scheduler; the events of all, in scheduler order.

        Args:
            log: Log the events (see `ConstraintScheduler.advance_epoch`).
            tighten: True or False for every scheduler, or the names of the
                schedulers that may take a squeeze step this epoch (the
                others wait; see `ConstraintScheduler.advance_epoch`).

        Raises:
            KeyError: ``tighten`` names a scheduler the collection does not have.
        """
        if not isinstance(tighten, bool):
            allowed = set(tighten)
            unknown = sorted(allowed - set(self._schedulers))
            if unknown:
                raise KeyError(
                    f"SchedulerCollection.advance_epoch: tighten names unknown schedulers "
                    f"{unknown}; the collection has {sorted(self._schedulers)}"
                )
        events: list[Event] = []
        for name, scheduler in self._schedulers.items():
            may = tighten if isinstance(tighten, bool) else name in allowed
            events.extend(scheduler.advance_epoch(log=log, tighten=may))
        return events

    def state_dict(self) -> dict[str, Any]:
        """Every scheduler's state dict, by name, versioned."""
        return {
            "format": _FORMAT,
            "version": _state.FORMAT_VERSION,
            "schedulers": {name: s.state_dict() for name, s in self._schedulers.items()},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore every scheduler; nothing changes unless all of them load.

        Raises:
            ValueError: The data is corrupt, foreign or newer, names other
                schedulers than this collection has, or a scheduler's state
                does not load; the message names it.
        """
        _state.check_header(state_dict, _FORMAT, "state_dict")
        saved = state_dict.get("schedulers")
        if not isinstance(saved, Mapping):
            raise ValueError(f"state_dict.schedulers: expected a mapping, got {saved!r}")
        if set(saved) != set(self._schedulers):
            missing = sorted(set(self._schedulers) - set(saved))
            extra = sorted(set(saved) - set(self._schedulers))
            raise ValueError(f"state_dict.schedulers: missing {missing}, unexpected {extra}")
        backups = {name: s.state_dict() for name, s in self._schedulers.items()}
        try:
            for name, scheduler in self._schedulers.items():
                try:
                    scheduler.load_state_dict(saved[name])
                except ValueError as error:
                    raise ValueError(f"state_dict.schedulers[{name!r}]: {error}") from error
        except ValueError:
            for name, scheduler in self._schedulers.items():
                scheduler.load_state_dict(backups[name])
            raise

    def __repr__(self) -> str:
        return f"SchedulerCollection({list(self._schedulers)}, epoch={self.epoch})"
