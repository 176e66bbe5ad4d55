"""ConstraintScheduler: one bound shared by one or more specs, moved epoch by epoch."""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, SupportsFloat

import attrs
import numpy as np

from constraint_sched import _state
from constraint_sched._accumulator import HostBooks, Keep
from constraint_sched._counts import check_count
from constraint_sched._events import EpochStats, Event
from constraint_sched._inputs import real_number
from constraint_sched._names import find
from constraint_sched._phases import Backoff, DiscoveryPhase, HoldPhase, Phase
from constraint_sched._reachable import check_epoch_stats, check_reachable, read_fields
from constraint_sched._readings import Readings
from constraint_sched._reservoir import Reservoir, seed_for
from constraint_sched._schedules import SqueezeSchedule
from constraint_sched._spec import (
    MIN_SOFT_SCALE,
    Bound,
    ConstraintKind,
    ConstraintSpec,
    bound_field,
)
from constraint_sched._tally import Tally
from constraint_sched._transitions import (
    Config,
    EpochSummary,
    State,
    aggregate,
    transition,
    upcoming,
    window_full,
    window_open,
    window_statistic,
    within_epoch,
)

logger = logging.getLogger("constraint_sched")

Callback = Callable[[Event], None]
"""A function a scheduler calls with each `Event`, after logging it."""

NonFinite = Literal["skip", "raise"]
"""What a scheduler does with a NaN or infinite observation: ``"skip"`` (count it
and leave it out) or ``"raise"`` (a ValueError)."""

Count = int | bool | np.bool_ | np.integer[Any] | np.ndarray[Any, Any]
"""A count of rejected steps: an int >= 0, a bool, or a numpy bool or integer scalar
(a 0-d array of one too)."""

_MISSING: Any = object()
_FORMAT = "constraint_sched.ConstraintScheduler"
# How far inside its opposite side a box's moved bound must stay, relative to magnitude.
_BOX_GAP = 1e-6
_NO_STAT, _MAX, _MIN, _QUANTILE = 0, 1, 2, 3
_KEEP: dict[int, Keep] = {_NO_STAT: "counts", _MAX: "max", _MIN: "min", _QUANTILE: "counts"}
"""What the books keep in each mode: what the window reads."""


class ConstraintScheduler(Readings):
    """Discover a bound from observations, hold it, squeeze it to a target, back off if it hurts.

    One scheduler moves one bound (a ceiling with ``side="upper"``, a floor
    with ``side="lower"``) shared by every spec it is given: the seed's
    ``kl_core`` and ``kl_detail`` share one ceiling, the max over both. With
    ``side="width"`` it moves both sides of ``BOX`` specs at once, around
    their fixed centre ``c``: the bound is the half-width ``h`` of the range
    ``[c - h, c + h]``, it behaves like a ceiling on the distance ``|x - c|``
    (that distance is what is observed, discovered and counted as a
    violation), and squeezing it shrinks the box around its centre.

    Call `observe` for each accepted step's metric values and `reject` for
    each rejected step, then `advance_epoch` at the end of every epoch; it
    returns the events it caused, logs them on the ``constraint_sched`` logger
    and passes them to the callbacks. Read the bound with `bound`, or a
    spec with the bound applied with `spec`. `phase`, `bound` and
    `last_epoch` read the same on a `SchedulerCollection` of one scheduler
    and on the torch adapter; `phase_of`, `bound_of`, `last_epoch_of` and
    `phases` read them by spec name there and here alike.

    The phases: epochs of ``DISCOVERY`` (the specs keep their own bound,
    e.g. 1e9), then the discovered bound is held for ``hold.epochs`` epochs,
    then squeezed towards ``squeeze.target``, then ``CONVERGED``. A
    discovered bound already at or past the target converges at once, at the
    target. Without a squeeze the discovered bound is final after the hold.

    Every bound the scheduler produces gives valid specs: a discovered value
    that would not (a scale of 0, a ceiling under a box's floor) is moved to the
    nearest bound that does, and ``healthy`` follows the bound (see
    `ConstraintSpec.with_bound`).

    Args:
        specs: One spec or several sharing the bound; names must be unique.
        discovery: How the bound is discovered; by default over one epoch, by
            the max for a ceiling and the min for a floor.
        hold: How long it is held.
        squeeze: How it is tightened; None for no squeeze.
        backoff: How a squeeze that hurts is relaxed; needs ``squeeze``.
        side: Which bound moves: ``"upper"`` (a ceiling, discovered by a
            max; the default), ``"lower"`` (a floor, discovered by a min) or
            ``"width"`` (the half-width of ``BOX`` specs sharing one centre,
            discovered by the max distance from it;
            ``DiscoveryPhase(statistic="given")`` keeps their own). The
            property `side` reads it back.
        nonfinite: ``"skip"`` (count NaN/inf observations and ignore them) or
            ``"raise"`` (ValueError).
        name: The name in events and logs; defaults to the specs' names joined by ``+``.
        callbacks: Called with each event, in order, after it is logged.
        bound: The old name of ``side`` (a DeprecationWarning): ``bound`` is
            the number the scheduler moves, `bound`.

    Raises:
        ValueError: An argument is invalid or the parts disagree (a target that
            gives no valid spec, a table that starts during the hold, ...).

    Examples:
        >>> kl = [ConstraintSpec(n, "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
        ...       for n in ("kl_core", "kl_detail")]
        >>> sched = ConstraintScheduler(kl, squeeze=SqueezeSchedule.table({3: 13000, 4: 3000}))
        >>> sched.observe({"kl_core": 42358.2, "kl_detail": 38921.5})
        >>> [e.kind for e in sched.advance_epoch()]
        ['discovered', 'held']
        >>> sched.epoch, sched.phase, sched.bound
        (2, <Phase.HOLD: 2>, 42358.2)
        >>> sched.observe({"kl_core": 30000.0, "kl_detail": 29000.0})  # an epoch counts with steps
        >>> _ = sched.advance_epoch(); sched.bound
        13000.0
    """

    def __init__(
        self,
        specs: ConstraintSpec | Sequence[ConstraintSpec],
        *,
        discovery: DiscoveryPhase | None = None,
        hold: HoldPhase | None = None,
        squeeze: SqueezeSchedule | None = None,
        backoff: Backoff | None = None,
        side: Bound | None = None,
        nonfinite: NonFinite = "skip",
        name: str | None = None,
        callbacks: Iterable[Callback] = (),
        bound: Bound | None = None,
    ) -> None:
        side = _side(side, bound)
        spec_list = _check_specs(specs)
        if discovery is None:  # a ceiling is discovered by the max, a floor by the min
            discovery = DiscoveryPhase(statistic="min" if side == "lower" else "max")
        hold = HoldPhase() if hold is None else hold
        _check_type("discovery", discovery, DiscoveryPhase)
        _check_type("hold", hold, HoldPhase)
        if squeeze is not None:
            _check_type("squeeze", squeeze, SqueezeSchedule)
        if backoff is not None:
            _check_type("backoff", backoff, Backoff)
            if squeeze is None:
                raise ValueError("ConstraintScheduler: backoff needs a squeeze schedule to undo")
        if side not in ("upper", "lower", "width"):
            raise ValueError(
                f"ConstraintScheduler: side must be 'upper', 'lower' or 'width', got {side!r}"
            )
        if nonfinite not in ("skip", "raise"):
            raise ValueError(
                f"ConstraintScheduler: nonfinite must be 'skip' or 'raise', got {nonfinite!r}"
            )
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"ConstraintScheduler: name must be a non-empty str, got {name!r}")
        self._centre = _shared_centre(spec_list) if side == "width" else None
        if side != "width":
            for spec in spec_list:
                bound_field(spec.kind, side, spec.name)
        wrong = "max" if side == "lower" else "min"
        if discovery.statistic == wrong:
            right = "min" if side == "lower" else "max"
            raise ValueError(
                f"ConstraintScheduler: side={side!r} cannot be discovered by "
                f"statistic={wrong!r} (every observation would violate it); use "
                f"DiscoveryPhase(statistic={right!r}), 'median' or 'quantile'"
            )
        initial = aggregate(side, [_own_bound(s, side) for s in spec_list])
        self._cfg = Config(
            name=name or "+".join(s.name for s in spec_list),
            side=side,
            discovery=discovery,
            hold=hold,
            squeeze=squeeze,
            backoff=backoff,
            valid_range=_valid_range(spec_list, side),
            start=initial,
        )
        if squeeze is not None:
            _check_squeeze(self._cfg, spec_list, squeeze)
        self._original = tuple(spec_list)
        self._names = tuple(s.name for s in spec_list)
        self._index = {n: i for i, n in enumerate(self._names)}
        self._single = len(self._names) == 1
        self._callbacks: list[Callback] = list(callbacks)
        self._raise_nonfinite = nonfinite == "raise"
        self._nonfinite_policy: NonFinite = nonfinite
        self._books = HostBooks(len(self._names))
        """The epoch's statistics (the discovery window's extremes of earlier epochs: _window)."""
        self._add = self._books.add  # records a checked observation: the hot path's last call
        """The books' `add`, refreshed with each epoch's (`HostBooks.start`)."""
        self._commit(State(bound=initial))
        self._reset_window()
        self._reset_epoch()
        self._window_observations = 0
        self._last: EpochStats | None = None

    # -- reading --------------------------------------------------------------

    @property
    def name(self) -> str:
        """The name used in events and logs."""
        return self._cfg.name

    @property
    def side(self) -> Bound:
        """``"upper"`` for a ceiling, ``"lower"`` for a floor, ``"width"`` for a half-width."""
        return self._cfg.side

    @property
    def centre(self) -> float | None:
        """The centre of a ``"width"`` bound's boxes; None for a ceiling or a floor."""
        return self._centre

    @property
    def epoch(self) -> int:
        """The current epoch, 1-based: after the k-th `advance_epoch` it is k + 1."""
        return self._st.epoch

    @property
    def phase(self) -> Phase:
        """The current phase (every spec of the scheduler shares it)."""
        return self._st.phase

    @property
    def phases(self) -> dict[str, Phase]:
        """The phase of every spec, by name: the same for all, the scheduler's."""
        return dict.fromkeys(self._names, self._st.phase)

    @property
    def bound(self) -> float:
        """The bound in force: the specs' own (loosest) bound during discovery."""
        return self._st.bound

    @property
    def reader(self) -> str:
        """The name the scheduler goes by in messages."""
        return f"ConstraintScheduler {self.name!r}"

    @property
    def schedulers(self) -> tuple[ConstraintScheduler, ...]:
        """This scheduler alone (as a `Readings`)."""
        return (self,)

    def scheduler_of(self, name: str) -> ConstraintScheduler:
        """This scheduler, if it has spec ``name``.

        Raises:
            KeyError: No spec has that name.
        """
        self._lookup(name)
        return self

    @property
    def upcoming_bound(self) -> float:
        """The bound the next `advance_epoch` sets if it neither backs off nor is held back.

        A preview for controllers that move towards the next bound during the
        epoch (`ChanceMultiplier`): the bound in force while discovering,
        holding (but for the hold's last epoch) or waiting, else the
        schedule's next step.
        """
        return upcoming(self._cfg, self._st)

    @property
    def discovered(self) -> float | None:
        """The bound discovery found (before any early convergence), or None before."""
        return self._st.discovered

    @property
    def target(self) -> float | None:
        """The squeeze target as a bound, or None.

        None without a squeeze, and before discovery for a `Relative` target
        (then known as that fraction of the discovered bound).
        """
        return self._cfg.target(self._st.discovered)

    @property
    def discovery(self) -> DiscoveryPhase:
        """How the bound is discovered."""
        return self._cfg.discovery

    @property
    def nonfinite(self) -> NonFinite:
        """What a NaN or infinite observation does: ``"skip"`` or ``"raise"``."""
        return self._nonfinite_policy

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the specs sharing the bound."""
        return self._names

    @property
    def specs(self) -> tuple[ConstraintSpec, ...]:
        """Every spec with the current bound applied."""
        return self._specs

    def spec(self, name: str | None = None) -> ConstraintSpec:
        """The spec called ``name`` with the current bound applied.

        Args:
            name: The spec's name; may be left out when there is only one.

        Returns:
            The spec, with its own bound during discovery.

        Raises:
            KeyError: No spec has that name.
        """
        return self._specs[self._lookup(name)]

    @property
    def last_epoch(self) -> EpochStats | None:
        """What the last completed epoch saw, or None before the first `advance_epoch`."""
        return self._last

    @property
    def current_epoch(self) -> EpochStats:
        """What the current epoch has seen so far."""
        return self._epoch_stats()

    def add_callback(self, callback: Callback) -> None:
        """Call ``callback(event)`` for every later event."""
        if not callable(callback):
            raise TypeError(
                f"ConstraintScheduler.add_callback: expected a callable, got {callback!r}"
            )
        self._callbacks.append(callback)

    # -- the hot path ---------------------------------------------------------

    def observe(
        self,
        name_or_value: str | SupportsFloat | Mapping[str, SupportsFloat],
        value: SupportsFloat = _MISSING,
    ) -> None:
        """Record the metric of an accepted step.

        Three forms: ``observe(value)`` when the scheduler has one spec,
        ``observe(name, value)``, and ``observe({name: value, ...})``. Values
        are anything ``float()`` accepts (Python and numpy numbers, 0-d
        arrays). NaN and infinite values are counted and skipped, or raise
        with ``nonfinite="raise"``. A mapping is checked whole before any of
        it is recorded: if one name or value is refused, nothing is, so a
        retry never counts a value twice. O(1) time and memory.

        Args:
            name_or_value: The value, a spec name, or a mapping of names to values.
            value: The value, when the first argument is a name.

        Raises:
            KeyError: An unknown spec name.
            TypeError: A value ``float()`` does not accept, or a missing name
                when the scheduler has several specs.
            ValueError: A non-finite value with ``nonfinite="raise"``.
        """
        # The dispatch is ordered for speed: this is the training loop's hot path. Python
        # floats need no conversion or check where nothing else is asked (`_plain_one`,
        # `_plain_size`); a value is converted inline; `_value` repeats checks only to raise.
        kind = type(name_or_value)
        if kind is float and value is _MISSING and self._plain_one:
            self._add(0, name_or_value)  # type: ignore[arg-type]
            return
        if (
            kind is dict
            and value is _MISSING
            and len(name_or_value) == self._plain_size  # type: ignore[arg-type]
            and self._books.add_step(name_or_value, self._names)  # type: ignore[arg-type]
        ):
            return  # else the general path below converts, or refuses, a value or a name
        centre, raising = self._centre, self._raise_nonfinite
        if value is _MISSING:
            if kind is dict or (kind is not float and isinstance(name_or_value, Mapping)):
                # Every name and value is checked before anything is recorded.
                index = self._index
                checked = []
                for key, item in name_or_value.items():  # type: ignore[union-attr]
                    i = index.get(key)
                    if i is None:
                        i = self._lookup(key)
                    x = item if type(item) is float else self._value(i, item, centre=False)
                    if centre is not None:
                        x = abs(x - centre)
                    if raising and x - x != 0.0:
                        self._value(i, item)  # raises, naming the value
                    checked.append((i, x))
                add = self._add
                for i, x in checked:
                    add(i, x)
                if self._in_window:
                    self._check_window(log=True)
                return
            if not self._single:
                raise TypeError(
                    f"ConstraintScheduler {self.name!r}: observe(value) needs exactly one spec; "
                    f"this one has {list(self._names)}: use observe(name, value) or "
                    "observe({name: value})"
                )
            i, value = 0, name_or_value  # type: ignore[assignment]
        else:
            i = self._index.get(name_or_value)  # type: ignore[arg-type]
            if i is None:
                i = self._lookup(name_or_value)
        x = value if type(value) is float else self._value(i, value, centre=False)
        if centre is not None:
            x = abs(x - centre)
        if raising and x - x != 0.0:
            self._value(i, value)  # raises, naming the value
        self._add(i, x)
        if self._in_window:
            self._check_window(log=True)

    def _prepare(self, name: Any, value: SupportsFloat) -> tuple[int, float]:
        """Spec ``name``'s slot and ``value`` checked (`_value`), recording nothing."""
        i = self._index.get(name)
        if i is None:
            i = self._lookup(name)
        return i, self._value(i, value)

    def _record_all(self, checked: Sequence[tuple[int, float]]) -> None:
        """Record observations `_prepare` checked, then end a full ``steps`` window."""
        add = self._add
        for i, x in checked:
            add(i, x)
        if self._in_window:
            self._check_window(log=True)

    def _value(self, i: int, value: SupportsFloat, *, centre: bool = True) -> float:
        """An observation of slot ``i`` as the float recorded (a distance for a ``"width"`` bound).

        With ``centre=False``, the real number only: no distance, no non-finite check.

        Raises:
            TypeError: Not a real number (`constraint_sched.functional.real_number`).
            ValueError: It is NaN or infinite and ``nonfinite="raise"``.
        """
        what = f"ConstraintScheduler {self.name!r}: observation of {self._names[i]!r}"
        x = real_number(value, what)
        if not centre:
            return x
        if self._centre is not None:
            x = abs(x - self._centre)
        if x - x != 0.0 and self._raise_nonfinite:  # NaN or infinite
            raise ValueError(
                f"ConstraintScheduler {self.name!r}: non-finite observation {x!r} of "
                f"{self._names[i]!r} (nonfinite='raise'); nothing was recorded"
            )
        return x

    def merge(
        self, name_or_tally: str | Tally, tally: Tally = _MISSING, *, log: bool = True
    ) -> None:
        """Record a `Tally`: many observations of one spec summarised elsewhere.

        For loops whose values live where a per-value `observe` would cost too
        much (an accelerator, other processes): merging is equivalent to
        observing the tallied values one by one (for a median or quantile,
        when ``samples`` holds them all; a sample of fewer weighs as the
        ``valid`` observations it stands for). Two forms: ``merge(tally)``
        when the scheduler has one spec, and ``merge(name, tally)``. A
        ``"width"`` bound's tally is of the distances ``|x - centre|``.

        Args:
            name_or_tally: The tally, or the spec's name.
            tally: The tally, when the first argument is a name.
            log: Log the events of a ``steps`` discovery this merge ends (see
                `advance_epoch`); they go to the callbacks either way.

        Raises:
            KeyError: An unknown spec name.
            TypeError: Not a `Tally`, or a missing name when there are several specs.
            ValueError: The tally has non-finite observations and
                ``nonfinite="raise"``, or valid observations but no samples
                while discovery needs them (median, quantile). Nothing is recorded.

        Examples:
            >>> sched = ConstraintScheduler(ConstraintSpec("kl", "upper", margin=1e9))
            >>> sched.merge(Tally(3, maximum=950.0, minimum=700.0))
            >>> sched.advance_epoch()[0].new
            950.0
        """
        if tally is _MISSING:
            tally, i = name_or_tally, self._lookup(None)  # type: ignore[assignment]
        else:
            i = self._lookup(name_or_tally)
        if not isinstance(tally, Tally):
            raise TypeError(
                f"ConstraintScheduler {self.name!r}: merge takes a Tally, got {tally!r}"
            )
        if tally.nonfinite and self._raise_nonfinite:
            raise ValueError(
                f"ConstraintScheduler {self.name!r}: {tally.nonfinite} non-finite observations "
                f"of {self._names[i]!r} (nonfinite='raise')"
            )
        mode = self._mode
        if mode == _QUANTILE and tally.valid and not tally.samples:
            raise ValueError(
                f"ConstraintScheduler {self.name!r}: discovery by "
                f"{self._cfg.discovery.statistic!r} needs Tally.samples for "
                f"{self._names[i]!r} ({tally.valid} valid observations, no samples)"
            )
        self._books.merge(i, tally)
        if self._in_window:
            self._check_window(log=log)

    def reject(self, count: Count = 1) -> None:
        """Count ``count`` rejected steps (steps rolled back; their values are not observed).

        Args:
            count: How many: an int >= 0, a bool (a step's reject flag: True
                counts one), or a numpy bool or integer scalar (a 0-d array too).

        Raises:
            TypeError: Anything else (a float, a string, an array of several values...).
            ValueError: A negative count.
        """
        self._books.rejects += check_count(count, "ConstraintScheduler.reject")

    # -- the epoch boundary ---------------------------------------------------

    def advance_epoch(self, *, log: bool = True, tighten: bool = True) -> list[Event]:
        """End the current epoch: move the bound as its phase says, and start the next.

        An epoch that saw no step (no observation, valid or not, and no
        rejection) counts for nothing: in a hold or a squeeze only the epoch
        number moves and the one event is `constraint_sched.Idle` (a warning:
        most likely this was called twice); discovery is extended. So the
        bound never squeezes or converges on no data.

        Args:
            log: Log the events on ``logging.getLogger("constraint_sched")``;
                a distributed run passes False on every rank but the first.
            tighten: False holds a squeeze step back this epoch: the schedule
                waits, as an adaptive one does after a bad epoch. For a
                readiness test of the caller's own (a run that tightens only
                while its objective is healthy). Discovery, hold and backoff
                go on as usual.

        Returns:
            The events caused, each with the epoch in which its new bound
            applies; also logged (unless ``log`` is False) and passed to the
            callbacks.
        """
        stats = self._epoch_stats()
        per_spec = self._window_values() if self._mode != _NO_STAT else {}
        summary = EpochSummary(
            stats=stats,
            statistic=aggregate(self._cfg.side, list(per_spec.values())) if per_spec else None,
            per_spec=per_spec,
            window_observations=self._window_observations + stats.observations,
            tighten=bool(tighten),
        )
        new_state, events = transition(self._cfg, self._st, summary)
        # Commit only after the pure transition succeeded: a failure leaves all as it was.
        self._commit(new_state)
        self._window_observations = summary.window_observations
        self._last = stats
        if window_statistic(self._cfg, new_state) is None:  # discovery is over
            self._reset_window()
        else:  # discovery goes on: the window keeps this epoch's extremes
            self._window = self._window_now()
        self._reset_epoch()
        self._emit(events, log=log)
        return events

    # -- checkpoints ----------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's configuration and state as strict-JSON plain data, versioned.

        Returns:
            ``{"format", "version", "config", "state"}``; `load_state_dict`
            restores it exactly.
        """
        st = self._st
        window: list[Any]
        if self._mode == _QUANTILE:
            window = [r.state() for r in self._reservoirs]
        else:
            window = [_state.encode_float(v) for v in self._window_now()]
        return {
            "format": _FORMAT,
            "version": _state.FORMAT_VERSION,
            "config": self._config_plain(),
            "state": {
                **{k: _state.to_plain(v) for k, v in attrs.asdict(st, recurse=False).items()},
                "window": window,
                "window_observations": self._window_observations,
                "counts": list(self._books.count),
                "nonfinite": sum(self._books.nonfinite),
                "violations": sum(self._books.violations),
                "rejects": self._books.rejects,
                "last_epoch": None if self._last is None else _state.to_plain(self._last),
            },
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a `state_dict`; the scheduler then behaves exactly as the one that saved it.

        Args:
            state_dict: What `state_dict` returned (possibly through JSON).

        Raises:
            ValueError: The data is corrupt, of another format or a newer
                version, or was saved by a scheduler configured differently;
                the message names the field. The scheduler is unchanged.
        """
        path = "state_dict"
        _state.check_header(state_dict, _FORMAT, path)
        here = self._config_plain()
        saved = state_dict.get("config")
        where = _state.first_difference(saved, here, "config")
        if where is not None:
            inner = where[len("config") :]
            raise ValueError(
                f"ConstraintScheduler {self.name!r}: {path}.{where} was saved as "
                f"{_state.resolve(saved, inner)!r} but this scheduler has "
                f"{_state.resolve(here, inner)!r}; a state dict never changes the configuration: "
                "build the scheduler as it was saved"
            )
        r = _state.Reader(state_dict, path).child("state")
        n = len(self._names)
        st = State(**read_fields(State, r, optional=("settle_to",)))
        check_reachable(self._cfg, st, f"{path}.state")
        mode = self._mode_for(st)
        reservoirs: list[Reservoir] = []
        if mode == _QUANTILE:
            window = [self._window_start(mode)] * n
            for i, item in enumerate(r.items("window", n)):
                reservoir = self._new_reservoir(i)
                reservoir.load(_state.Reader(item, f"{path}.state.window[{i}]"))
                reservoirs.append(reservoir)
        else:
            window = r.numbers("window", n)
            empty = self._window_start(mode)
            for i, v in enumerate(window):
                if not (math.isfinite(v) or v == empty):
                    raise ValueError(
                        f"{path}.state.window[{i}]: an extreme of observations is finite "
                        f"({empty!r} before any), got {v!r}"
                    )
        counts = r.integers("counts", n)
        if "last_epoch" not in r.data:
            raise ValueError(
                f"{path}.state: missing key 'last_epoch' (null before the first epoch's end)"
            )
        last = None
        if r.data["last_epoch"] is not None:
            e = r.child("last_epoch")
            last = EpochStats(**read_fields(EpochStats, e))
            check_epoch_stats(last, e.path)
        window_observations = r.integer("window_observations")
        nonfinite, violations, rejects = (
            r.integer("nonfinite"),
            r.integer("violations"),
            r.integer("rejects"),
        )
        if nonfinite + violations > sum(counts):
            raise ValueError(
                f"{path}.state: nonfinite ({nonfinite}) and violations ({violations}) are more "
                f"observations than the {sum(counts)} counted (counts)"
            )
        # Everything read and checked: commit.
        self._commit(st)
        self._mode = mode
        self._window = window
        self._reservoirs = reservoirs
        self._window_observations = window_observations
        self._reset_epoch()
        books = self._books  # the core reads only the totals of the two counts
        for i, count in enumerate(counts):
            books.set(i, count=count)
        books.set(0, count=counts[0], nonfinite=nonfinite, violations=violations)
        books.rejects = rejects
        self._last = last

    # -- internals ------------------------------------------------------------

    def _check_window(self, *, log: bool) -> None:
        if not window_full(self._cfg, self._st, self._books.steps + self._books.rejects):
            return
        stats = self._epoch_stats()
        per_spec = self._window_values()
        summary = EpochSummary(
            stats=stats,
            statistic=aggregate(self._cfg.side, list(per_spec.values())) if per_spec else None,
            per_spec=per_spec,
            window_observations=self._window_observations + stats.observations,
        )
        outcome = within_epoch(self._cfg, self._st, summary)
        if outcome is None:  # nothing valid yet: the epoch's end decides
            return
        new_state, events = outcome
        self._commit(new_state)
        self._window_observations = summary.window_observations
        self._reset_window()
        self._emit(events, log=log)

    def _emit(self, events: list[Event], *, log: bool) -> None:
        for event in events:
            if log:
                logger.log(
                    logging.WARNING if event.level == "warning" else logging.INFO, event.message
                )
            for callback in self._callbacks:
                callback(event)

    def _commit(self, st: State) -> None:
        # Build the specs first: if that raised, nothing would be half-updated.
        if st.phase is Phase.DISCOVERY:
            specs = self._original
        else:
            specs = tuple(_with_bound(s, st.bound, self._cfg.side) for s in self._original)
        self._st, self._specs = st, specs
        self._in_window = window_open(self._cfg, st)
        # Floats go straight to the books: no centre, NaN skipped, no window to check.
        plain = not (self._centre is not None or self._raise_nonfinite or self._in_window)
        self._plain_one = plain and self._single  # observe(value)
        self._plain_size = len(self._names) if plain else 0  # observe({every name: value})
        above, below = (st.bound, -math.inf) if self._cfg.side != "lower" else (math.inf, st.bound)
        n = len(self._names)
        self._books.limits([above] * n, [below] * n)

    def _mode_for(self, st: State) -> int:
        """How the window reads what `window_statistic` asks for in ``st``."""
        statistic = window_statistic(self._cfg, st)
        if statistic is None:
            return _NO_STAT
        return {"max": _MAX, "min": _MIN}.get(statistic, _QUANTILE)

    @staticmethod
    def _window_start(mode: int) -> float:
        return -math.inf if mode == _MAX else math.inf

    def _quantile_level(self) -> float:
        level = self._cfg.discovery.quantile_level
        assert level is not None
        return level

    def _new_reservoir(self, i: int) -> Reservoir:
        size = self._cfg.discovery.reservoir
        return Reservoir(size, seed_for(f"{self._cfg.name}/{self._names[i]}"))

    def _reset_window(self) -> None:
        self._mode = self._mode_for(self._st)
        n = len(self._names)
        self._window = [self._window_start(self._mode)] * n
        self._reservoirs = (
            [self._new_reservoir(i) for i in range(n)] if self._mode == _QUANTILE else []
        )
        self._books.reservoirs = self._reservoirs if self._mode == _QUANTILE else None

    def _reset_epoch(self) -> None:
        books = self._books
        reservoirs = self._reservoirs if self._mode == _QUANTILE else None
        books.start(books.above, books.below, reservoirs, keep=_KEEP[self._mode])
        self._add = books.add

    def _window_now(self) -> list[float]:
        """The window's extreme per slot: earlier discovery epochs' and this one's."""
        if self._mode == _MAX:
            return [max(w, m) for w, m in zip(self._window, self._books.maximum, strict=True)]
        if self._mode == _MIN:
            return [min(w, m) for w, m in zip(self._window, self._books.minimum, strict=True)]
        return list(self._window)

    def _window_values(self) -> dict[str, float]:
        if self._mode == _QUANTILE:
            level = self._quantile_level()
            values = [r.quantile(level) for r in self._reservoirs]
            return {n: v for n, v in zip(self._names, values, strict=True) if v is not None}
        window = self._window_now()
        return {n: v for n, v in zip(self._names, window, strict=True) if math.isfinite(v)}

    def _epoch_stats(self) -> EpochStats:
        st, books = self._st, self._books
        return EpochStats(
            epoch=st.epoch,
            phase=st.phase,
            bound=st.bound,
            steps=books.steps,
            rejects=books.rejects,
            observations=sum(books.count) - sum(books.nonfinite),
            nonfinite=sum(books.nonfinite),
            violations=sum(books.violations),
        )

    def _lookup(self, name: Any) -> int:
        if name is None:
            if len(self._names) == 1:
                return 0
            raise TypeError(
                f"ConstraintScheduler {self.name!r}: name it: one of {list(self._names)}"
            )
        return find(self._index, name, f"ConstraintScheduler {self.name!r}", "spec", self._names)

    def _config_plain(self) -> dict[str, Any]:
        cfg = self._cfg
        return {
            "name": cfg.name,
            "bound": cfg.side,
            "nonfinite": self._nonfinite_policy,
            "specs": [_state.to_plain(s) for s in self._original],
            "discovery": _state.to_plain(cfg.discovery),
            "hold": _state.to_plain(cfg.hold),
            "squeeze": _state.to_plain(cfg.squeeze),
            "backoff": _state.to_plain(cfg.backoff),
        }

    def __repr__(self) -> str:
        return (
            f"ConstraintScheduler({self.name!r}, epoch={self.epoch}, phase={self.phase.name}, "
            f"bound={self.bound!r})"
        )


def _check_type(name: str, value: Any, kind: type) -> None:
    if not isinstance(value, kind):
        raise TypeError(f"ConstraintScheduler: {name} must be a {kind.__name__}, got {value!r}")


def _check_specs(specs: ConstraintSpec | Sequence[ConstraintSpec]) -> list[ConstraintSpec]:
    spec_list = [specs] if isinstance(specs, ConstraintSpec) else list(specs)
    if not spec_list:
        raise ValueError("ConstraintScheduler: specs must hold at least one ConstraintSpec")
    for i, spec in enumerate(spec_list):
        if not isinstance(spec, ConstraintSpec):
            raise TypeError(
                f"ConstraintScheduler: specs[{i}] must be a ConstraintSpec, got {spec!r}"
            )
    names = [s.name for s in spec_list]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"ConstraintScheduler: spec names must be unique, repeated: {duplicates}")
    return spec_list


def _side(side: Bound | None, bound: Bound | None) -> Bound:
    """``side``, or the deprecated ``bound`` that named it before."""
    if bound is None:
        return "upper" if side is None else side
    if side is not None:
        raise TypeError("ConstraintScheduler: pass side= alone (bound= is its old name)")
    warnings.warn(
        "ConstraintScheduler(bound=...) is deprecated: the argument is now side= (bound is "
        "the number the scheduler moves)",
        DeprecationWarning,
        stacklevel=3,
    )
    return bound


def _valid_range(specs: Sequence[ConstraintSpec], side: Bound) -> tuple[float, float]:
    """The closed range of shared bounds that leave every spec valid."""
    low, high = -math.inf, math.inf
    if side == "width":  # any positive half-width leaves a box non-empty
        return _LEAST_POSITIVE, math.inf
    for spec in specs:
        field = bound_field(spec.kind, side, spec.name)
        if field in ("margin", "scale"):
            least = MIN_SOFT_SCALE if spec.kind is ConstraintKind.MINIMIZE_SOFT else _LEAST_POSITIVE
            low = max(low, least)
        elif side == "upper":
            assert spec.lower is not None
            if math.isfinite(spec.lower):
                low = max(low, spec.lower + _BOX_GAP * max(abs(spec.lower), 1.0))
        else:
            assert spec.upper is not None
            if math.isfinite(spec.upper):
                high = min(high, spec.upper - _BOX_GAP * max(abs(spec.upper), 1.0))
    if low > high:
        raise ValueError(
            f"ConstraintScheduler: no single {side} bound suits every spec "
            f"({[s.name for s in specs]}): it would have to lie in [{low}, {high}]"
        )
    return low, high


# A margin or MINIMIZE_HARD scale may be any positive float: the smallest one is the
# nearest valid value to a discovered value <= 0 (a LOWER floor under a metric that
# reaches 0 or below).
_LEAST_POSITIVE = math.ulp(0.0)


def _check_squeeze(cfg: Config, specs: Sequence[ConstraintSpec], squeeze: SqueezeSchedule) -> None:
    low, high = cfg.valid_range
    if squeeze.relative:  # known when discovery ends; then moved into the valid range
        return
    values = [v for _, v in squeeze.table_entries] or [squeeze.target_for(0.0)]
    for value in values:
        if not low <= value <= high:
            raise ValueError(
                f"ConstraintScheduler {cfg.name!r}: squeeze bound {value!r} gives no valid spec "
                f"for {[s.name for s in specs]} (valid {cfg.side} bounds lie in [{low}, {high}])"
            )
    if squeeze.kind == "table":
        first = squeeze.first_epoch
        assert first is not None
        if first < cfg.first_squeeze_epoch:
            raise ValueError(
                f"ConstraintScheduler {cfg.name!r}: squeeze table starts at epoch {first}, "
                f"inside discovery ({cfg.discovery.epochs} epochs) and hold "
                f"({cfg.hold.epochs}); the first squeeze epoch is {cfg.first_squeeze_epoch}"
            )
        entries = [v for _, v in squeeze.table_entries]
        loosening = any(cfg.tighter(a, b) == a and a != b for a, b in itertools.pairwise(entries))
        if loosening:
            way = "up" if cfg.side == "lower" else "down"
            raise ValueError(
                f"ConstraintScheduler {cfg.name!r}: a {cfg.side} bound's squeeze table must "
                f"move {way}, got {dict(squeeze.table_entries)!r}"
            )


def _shared_centre(specs: Sequence[ConstraintSpec]) -> float:
    """The one centre of the ``BOX`` specs a ``"width"`` bound moves, or a ValueError."""
    centres: dict[str, float] = {}
    for spec in specs:
        if spec.kind is not ConstraintKind.BOX:
            raise ValueError(
                f"ConstraintScheduler: side='width' moves BOX specs, and {spec.name!r} is "
                f"{spec.kind.name}"
            )
        centres[spec.name] = _centre_and_half_width(spec)[0]
    if len(set(centres.values())) > 1:
        raise ValueError(
            f"ConstraintScheduler: specs sharing a 'width' bound must share a centre, got {centres}"
        )
    return next(iter(centres.values()))


def _centre_and_half_width(spec: ConstraintSpec) -> tuple[float, float]:
    """The centre of a ``BOX`` spec's own range and its half-width."""
    assert spec.lower is not None
    assert spec.upper is not None
    half = 0.5 * (float(spec.upper) - float(spec.lower))
    return float(spec.lower) + half, half


def _own_bound(spec: ConstraintSpec, side: Bound) -> float:
    """The bound ``spec`` has before any scheduling: a half-width for ``"width"``."""
    return _centre_and_half_width(spec)[1] if side == "width" else spec.bound(side)


def _with_bound(spec: ConstraintSpec, bound: float, side: Bound) -> ConstraintSpec:
    """``spec`` with ``bound`` applied: for ``"width"``, the range ``centre -+ bound``."""
    if side == "width":
        centre = _centre_and_half_width(spec)[0]
        return attrs.evolve(spec, lower=centre - bound, upper=centre + bound)
    return spec.with_bound(bound, side)
