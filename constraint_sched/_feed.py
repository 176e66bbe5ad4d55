"""`EpochFeed`: an epoch's observations from many sources, merged into schedulers once per epoch.

What an adapter would otherwise write again for its framework, written once
over the array API: the call forms of ``observe``, the host's books and one
`constraint_sched.functional.ArrayBooks` per device, the ``steps``
discovery window, the non-finite policy, the one read at the epoch's end
(with the cross-process agreement an `Agreement` supplies), the median
sample combined across sources, and the epoch's part of a checkpoint.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Protocol

import array_api_compat
import numpy as np

from constraint_sched._accumulator import HostBooks
from constraint_sched._collection import SchedulerCollection
from constraint_sched._counts import check_count
from constraint_sched._events import Event
from constraint_sched._inputs import real_number
from constraint_sched._phases import Phase
from constraint_sched._reservoir import Reservoir
from constraint_sched._scheduler import ConstraintScheduler
from constraint_sched._state import Reader, decode_float
from constraint_sched._tally import Tally
from constraint_sched.functional import _books as B
from constraint_sched.functional._array_books import ArrayBooks
from constraint_sched.functional._sampler import combine, seed_for

_MISSING: Any = object()


class Agreement(Protocol):
    """How the processes of a distributed run agree at an epoch boundary (a torch group, ...).

    An adapter implements it over its framework's collectives and passes it
    to `EpochFeed.end_epoch`; the feed calls each method once per boundary,
    on every process, in the same order.
    """

    @property
    def rank(self) -> int:
        """This process's rank (events are logged on rank 0)."""
        ...

    def device(self, preferred: Any) -> Any:
        """Where the collectives run, given where the books are (None: none are on a device)."""
        ...

    def reduce(self, packed: Any, n: int) -> None:
        """Reduce packed books of ``n`` slots across processes, in place (see `reduce_packed`)."""
        ...

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (picklable), in rank order."""
        ...


class EpochFeed:
    """An epoch's observations from the host and from devices, fed into schedulers once per epoch.

    The stateful core of an adapter: it takes each step's values (Python
    numbers counted on the host, 0-d arrays counted where they live, with no
    host read), ends the epoch with one read of every source, agrees across
    processes, and moves the bounds of its `SchedulerCollection`. An
    adapter keeps only what is its framework's: checking and placing its
    tensors, its collectives, its cached bound tensors.

    Args:
        core: The scheduler fed, or a collection of them.
        owner: The adapter's name, for messages.
        xp: The namespace of the books on a device (None: the namespace of the
            arrays observed there; a checkpoint's device books need it).
        dtype: The books' dtype on a device, a function of the device
            (None: ``xp.float64`` everywhere).
        also: What else ``observe`` takes besides numbers, for messages.

    Examples:
        >>> import numpy as np
        >>> from constraint_sched import ConstraintScheduler, ConstraintSpec
        >>> feed = EpochFeed(ConstraintScheduler(ConstraintSpec("kl", "upper", margin=1e9)), xp=np)
        >>> def route(name, value, where):  # arrays stay where they are; numbers: the host
        ...     return ("cpu", value) if isinstance(value, np.ndarray) else (None, value)
        >>> _ = feed.observe(feed.items({"kl": np.asarray(40.0)}), route)
        >>> _ = feed.observe(feed.items(35.0), route)
        >>> [e.kind for e in feed.end_epoch(log=False)], feed.core.bound
        (['discovered', 'held'], 40.0)
    """

    MISSING: Any = _MISSING
    """`items`'s default second argument: ``observe(value)`` or ``observe(mapping)``."""

    def __init__(
        self,
        core: ConstraintScheduler | SchedulerCollection,
        *,
        owner: str = "EpochFeed",
        xp: Any = None,
        dtype: Callable[[Any], Any] | None = None,
        also: str = " or an array",
    ) -> None:
        if isinstance(core, ConstraintScheduler):
            collection = SchedulerCollection([core])  # one scheduler: a collection of one
        elif isinstance(core, SchedulerCollection):
            collection = core
        else:
            raise TypeError(
                f"{owner}: scheduler must be a ConstraintScheduler or a SchedulerCollection, "
                f"got {core!r}"
            )
        self.core, self.collection, self.owner, self.xp, self._dtype, self._also = (
            core, collection, owner, xp, dtype, also)  # fmt: skip
        self.schedulers = tuple(collection)
        self.names = tuple(n for s in self.schedulers for n in s.names)
        self._index = {n: i for i, n in enumerate(self.names)}
        self._owner = [s for s in self.schedulers for _ in s.names]
        self._raising = [s.nonfinite == "raise" for s in self._owner]
        self._centres = [s.centre for s in self._owner]  # a "width" bound observes |x - centre|
        self.sample_size = max(s.discovery.reservoir for s in self.schedulers)
        config = json.dumps([s.state_dict()["config"] for s in self.schedulers], sort_keys=True)
        self._digest = zlib.crc32(config.encode())
        self.host = HostBooks(len(self.names))
        self.sources: dict[Any, ArrayBooks] = {}
        self.last: dict[str, Tally] = {}
        """The last completed epoch's statistics per spec (across every process)."""
        self._flushed: list[Tally] | None = None  # merged early this epoch (a steps window)
        self._window_calls = 0  # observe calls this epoch, while a steps window is open
        self._window_at: int | None = None
        self._start_epoch()

    # -- a step ------------------------------------------------------------------------

    @property
    def windows(self) -> bool:
        """Whether a ``steps`` discovery's window is open (an `observe` may end it)."""
        return self._window_at is not None

    def slot(self, name: Any) -> int:
        """The position of spec ``name``; KeyError naming the specs."""
        i = self._index.get(name) if isinstance(name, str) else None
        if i is None:
            raise KeyError(f"{self.owner} has no spec {name!r}; it has {list(self.names)}")
        return i

    def items(self, name_or_value: Any, value: Any = _MISSING) -> Iterable[tuple[Any, Any]]:
        """``observe``'s three call forms as ``(name, value)`` pairs; TypeError for a bad one."""
        if value is not _MISSING:
            return ((name_or_value, value),)
        if isinstance(name_or_value, Mapping):
            return name_or_value.items()
        if len(self.names) == 1:
            return ((self.names[0], name_or_value),)
        raise TypeError(
            f"{self.owner}: observe(value) needs exactly one spec; this one has "
            f"{list(self.names)}: use observe(name, value) or observe({{name: value}})"
        )

    def observe(
        self,
        items: Iterable[tuple[Any, Any]],
        route: Callable[[str, Any, Any], tuple[Any, Any]],
        accepted: Any = None,
        agreement: Agreement | None = None,
    ) -> bool:
        """Record one step's values, all or nothing (a retry never counts a value twice).

        Args:
            items: ``(name, value)`` pairs (`items` makes them).
            route: ``route(name, value, where)`` gives ``(device, array)``,
                a 0-d array counted on that device with no host read, or
                ``(None, number)``, counted on the host; ``where`` is the
                device of ``accepted`` (None without it).
            accepted: A 0-d bool array: count the step only if true (its
                device then counts the host's values too); None: counted.
            agreement: The processes' agreement, for a ``steps`` window that closes.

        Returns:
            Whether a ``steps`` discovery's window closed, moving bounds.

        Raises:
            KeyError: An unknown name.
            TypeError: A value that is not a real number.
            ValueError: A non-finite host value of a scheduler with ``nonfinite="raise"``.
        """
        where: Any = None
        xp: Any = None
        if accepted is not None:
            where = array_api_compat.device(accepted)
            xp = array_api_compat.array_namespace(accepted)
        groups: dict[Any, tuple[list[int], list[Any]]] = {}
        on_host: list[tuple[int, float]] = []
        index, centres = self._index, self._centres
        for name, v in items:
            i = index.get(name) if isinstance(name, str) else None
            if i is None:
                i = self.slot(name)
            centre = centres[i]
            device, v = route(name, v, where)
            if device is None:
                if type(v) is not float:
                    v = real_number(v, f"{self.owner}.observe: the value of {name!r}", self._also)
                if where is not None:  # acceptance is decided on a device: so is this value
                    device = where
                    v = xp.asarray(v, dtype=xp.float64, device=where)
            if centre is not None:
                v = abs(v - centre)
            if device is not None:
                group = groups.get(device)
                if group is None:
                    group = groups[device] = ([], [])
                group[0].append(i)
                group[1].append(v)
            elif v - v != 0.0 and self._raising[i]:
                raise ValueError(
                    f"{self.owner}: non-finite observation {v!r} of {name!r} "
                    "(nonfinite='raise'); nothing was recorded"
                )
            else:
                on_host.append((i, v))
        for i, x in on_host:
            self.host.add(i, x)
        for device, (slots, values) in groups.items():
            books = self.books(device, array_api_compat.array_namespace(values[0]))
            books.add(tuple(slots), values, accepted if device == where else None)
        if self._window_at is None:
            return False
        self._window_calls += 1
        if self._window_calls < self._window_at:
            return False
        log = agreement is None or agreement.rank == 0
        tallies = self._merge(agreement, log=log)  # a steps discovery's window is full
        if self._flushed is not None:
            tallies = [a + b for a, b in zip(self._flushed, tallies, strict=True)]
        self._flushed = tallies
        self._start_epoch()
        return True

    def reject(self, count: Any, device: Any = None) -> None:
        """Count rejected steps: an int on the host, or a 0-d bool array on ``device``."""
        if device is not None:
            self.books(device, array_api_compat.array_namespace(count)).reject(count)
        else:
            self.host.rejects += check_count(count, f"{self.owner}.reject")

    def books(self, device: Any, xp: Any = None) -> ArrayBooks:
        """The books of ``device`` this epoch, made the first time it is seen (arrays of ``xp``).

        Raises:
            ValueError: Neither ``xp`` nor the feed's namespace says what arrays to keep.
        """
        books = self.sources.get(device)
        if books is None:
            xp = self.xp if xp is None else xp
            if xp is None:
                raise ValueError(f"{self.owner}: books on {device!r} need an array namespace (xp)")
            dtype = None if self._dtype is None else self._dtype(device)
            books = ArrayBooks(len(self.names), xp, device=device, dtype=dtype,
                               sample_size=self.sample_size)  # fmt: skip
            self.sources[device] = books
            self._start(device, books)
        return books

    # -- the epoch's end ---------------------------------------------------------------

    def end_epoch(
        self,
        agreement: Agreement | None = None,
        *,
        tighten: bool | Collection[str] = True,
        log: bool = True,
    ) -> list[Event]:
        """Read every source once, agree across processes, merge, and move every bound.

        Raises:
            ValueError: The processes' schedulers differ, or non-finite values
                reached a scheduler with ``nonfinite="raise"`` on a device
                (they are dropped, so the next call ends the epoch without them).
        """
        if self.core is not self.collection and not isinstance(tighten, bool):
            raise TypeError(
                f"{self.owner}.advance_epoch: tighten is a bool for a single scheduler, "
                f"got {tighten!r}"
            )
        log = log and (agreement is None or agreement.rank == 0)
        tallies = self._merge(agreement, log=log)
        events = self.collection.advance_epoch(log=log, tighten=tighten)
        if self._flushed is not None:  # a steps discovery ended inside the epoch: report it whole
            tallies = [a + b for a, b in zip(self._flushed, tallies, strict=True)]
        self.last = dict(zip(self.names, tallies, strict=True))
        self._flushed, self._window_calls = None, 0
        self._start_epoch()
        return events

    def _merge(self, agreement: Agreement | None, *, log: bool) -> list[Tally]:
        """Read once, agree across processes and merge everything into the schedulers."""
        if agreement is not None:
            mine = (self._digest, self.collection.epoch, self.names)
            for r, theirs in enumerate(agreement.gather(mine)):
                if theirs != mine:
                    raise ValueError(
                        f"{self.owner}: rank {r} has (config digest, epoch, specs) {theirs!r} "
                        f"but rank {agreement.rank} has {mine!r}; every rank must build the "
                        "same schedulers and call advance_epoch together"
                    )
        tallies, rejects = self._collect(agreement)
        bad = [i for i, t in enumerate(tallies) if t.nonfinite and self._raising[i]]
        if bad:  # raised once: the bad values go, so the next call can end the epoch
            for i in bad:
                self.host.drop_nonfinite(i)
            for books in self.sources.values():
                books.forget_nonfinite(bad)
            counts = ", ".join(f"{tallies[i].nonfinite} of {self.names[i]!r}" for i in bad)
            raise ValueError(
                f"{self.owner}: non-finite observations this epoch ({counts}) with "
                "nonfinite='raise'; they were dropped and the epoch's other observations kept: "
                "call advance_epoch again to end the epoch without them"
            )
        for scheduler in self.schedulers:  # rejects first: a steps discovery counts them
            scheduler.reject(rejects)
        for i, tally in enumerate(tallies):
            self._owner[i].merge(self.names[i], tally, log=log)
        return tallies

    def _collect(self, agreement: Agreement | None) -> tuple[list[Tally], int]:
        """Every slot's tally of the epoch (across processes with ``agreement``): one read."""
        n = len(self.names)
        live = [b for b in self.sources.values() if b.touched or b.rows is not None]
        xp, target = (live[0].xp, live[0].device) if live else (self.xp or np, None)
        if agreement is not None:
            target = agreement.device(target)
        kw = {} if target is None else {"device": target}
        head = xp.asarray(self.host.pack(), dtype=xp.float64, **kw)
        size = head.shape[0]
        packs = [b.pack() if target is None else array_api_compat.to_device(b.pack(), target)
                 for b in live]  # fmt: skip
        books = B.unpack(xp, head, n)
        for packed in packs:
            books = B.merge(xp, books, B.unpack(xp, packed[:size], n))
        head = B.pack(xp, books)
        if agreement is not None:
            agreement.reduce(head, n)
        flat = xp.concat([head, *packs]).tolist()  # the one read
        # Median/quantile samples: each source (the host, each device, each process) holds a
        # uniform sample of its own valid values; they are combined in proportion to the
        # values each stands for, the same way on every process.
        sampled = [i for i in range(n) if self._sampled(i)]
        sources: dict[int, list[tuple[list[float], int]]] = {i: [] for i in sampled}
        start = size
        for packed in packs:
            own, start = flat[start : start + packed.shape[0]], start + packed.shape[0]
            for i, source in B.row_samples(own, n, sampled).items():
                sources[i].append(source)
        if self.host.reservoirs is not None:
            for i in sampled:
                reservoir = self.host.reservoirs[i]
                sources[i].append((list(reservoir.values), reservoir.count))
        if agreement is not None and sampled:
            every = agreement.gather(sources)
            sources = {i: [p for rank in every for p in rank[i]] for i in sampled}
        samples: list[list[float]] = [[] for _ in range(n)]
        where = B.layout(n)
        for i in sampled:
            seed = seed_for(f"{self.names[i]}/combine/{self.collection.epoch}")
            samples[i], _ = combine([p for p in sources[i] if p[1]], self.sample_size, seed)
            valid = flat[where["count"].start + i] - flat[where["nonfinite"].start + i]
            if not samples[i] and valid > 0:  # a small sample of steps kept none with a valid
                samples[i] = [flat[where["total"].start + i] / valid]  # value: the mean stands in
        return B.tallies(flat[:size], n, samples)

    def _sampled(self, i: int) -> bool:
        s = self._owner[i]
        return s.phase is Phase.DISCOVERY and s.discovery.statistic in ("median", "quantile")

    def _limits(self) -> tuple[list[float], list[float]]:
        """Per slot, the values above and below which a value violates the bound in force."""
        upper = [s.side != "lower" for s in self._owner]  # a half-width is a ceiling
        bounds = [s.bound for s in self._owner]
        above = [b if u else math.inf for b, u in zip(bounds, upper, strict=True)]
        below = [-math.inf if u else b for b, u in zip(bounds, upper, strict=True)]
        return above, below

    def _start(self, device: Any, books: ArrayBooks) -> None:
        above, below = self._limits()
        sampling = any(self._sampled(i) for i in range(len(self.names)))
        seed = seed_for("/".join(self.names) + f"@{device}/{self.collection.epoch}")
        books.start(above, below, sampling=sampling, seed=seed)

    def _start_epoch(self) -> None:
        above, below = self._limits()
        reservoirs = None
        if any(self._sampled(i) for i in range(len(self.names))):
            epoch = self.collection.epoch
            reservoirs = [Reservoir(self.sample_size, seed_for(f"{n}@host/{epoch}"))
                          for n in self.names]  # fmt: skip
        self.host.start(above, below, reservoirs)
        for device, books in self.sources.items():
            self._start(device, books)
        windows = [
            s.discovery.steps
            for s in self.schedulers
            if s.discovery.steps is not None and s.phase is Phase.DISCOVERY
        ]
        open_windows = [w for w in windows if w > self._window_calls]
        self._window_at = min(open_windows) if open_windows else None

    # -- checkpoints -------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The spec names, `core`'s state and the epoch's statistics so far, held as they are.

        The epoch's part holds the host's books and each device's (with the
        median or quantile samples and their generators), so a feed restored
        mid-epoch goes on exactly as this one would.
        """
        flushed = None if self._flushed is None else [t.state() for t in self._flushed]
        epoch = {
            "host": self.host.state(),
            "devices": [b.state() for b in self.sources.values() if b.touched],
            "window_calls": self._window_calls,
            "flushed": flushed,
        }
        return {"names": list(self.names), "core": self.core.state_dict(), "epoch": epoch}

    def load(self, saved: Reader, device: Callable[[Reader], Any]) -> None:
        """Restore what `state` wrote (or an earlier release's layout); on a ValueError, no change.

        Args:
            saved: A reader of the mapping holding ``names``, ``core`` and ``epoch``.
            device: The device a saved device's books are restored on, from its entry.

        Raises:
            ValueError: Corrupt data, other spec names, or a state no run
                reaches; the message names the field.
        """
        names = saved.data.get("names")
        if names != list(self.names):
            raise ValueError(
                f"{saved.path}.names: saved for specs {names!r}, but this {self.owner} has "
                f"{list(self.names)}"
            )
        core = saved.data.get("core")
        if not isinstance(core, Mapping):
            raise ValueError(f"{saved.path}.core: expected a mapping, got {core!r}")
        before = Reader(self.state(), saved.path)
        try:
            self._load(core, saved.child("epoch"), device)
        except ValueError:
            self._load(before.data["core"], before.child("epoch"), device)
            raise

    def _load(
        self,
        core: Mapping[str, Any],
        epoch: Reader,
        device: Callable[[Reader], Any],
    ) -> None:
        combined = "host" not in epoch.data  # the oldest layout: one tally per spec
        window_calls = 0 if combined else epoch.integer("window_calls")
        flushed = epoch.data.get("flushed")
        if flushed is not None:
            items = epoch.items("flushed", len(self.names))
            flushed = [
                Tally.from_state(x, f"{epoch.path}.flushed[{i}]") for i, x in enumerate(items)
            ]
        self.core.load_state_dict(core)
        self.sources = {}
        self._window_calls, self._flushed = window_calls, flushed
        self._start_epoch()
        if combined:
            items = epoch.items("tallies", self.host.n)
            for i, item in enumerate(items):
                self.host.merge(i, Tally.from_state(item, f"{epoch.path}.tallies[{i}]"))
            self.host.rejects = epoch.integer("rejects")
            return
        self.host.load(epoch.child("host"))
        for k, item in enumerate(epoch.items("devices")):
            saved = Reader(item, f"{epoch.path}.devices[{k}]")
            if "stats" in saved.data:  # the previous release's layout: merged on the host
                _load_previous_device(self.host, saved)
                continue
            where = device(saved)
            if where in self.sources:
                raise ValueError(
                    f"{saved.path}.device: the statistics of {saved.data.get('device')!r} would "
                    f"be restored on {where}, which already holds another device's"
                )
            self.books(where).load(saved)


def _load_previous_device(host: HostBooks, saved: Reader) -> None:
    """One device's statistics as the previous release saved them, merged into ``host``."""
    rows, samples = saved.items("stats", 6), saved.items("samples")
    for i in range(host.n):
        try:
            stat = [
                decode_float(row[i], f"{saved.path}.stats[{r}][{i}]") for r, row in enumerate(rows)
            ]
            values = [
                decode_float(row[i], f"{saved.path}.samples", allow_nan=True) for row in samples
            ]
            tally = Tally(round(stat[0]), nonfinite=round(stat[1]), violations=round(stat[2]),
                          total=stat[3], maximum=stat[4],
                          minimum=-stat[5],  # the previous layout kept the minimum negated
                          samples=[v for v in values if v == v])  # fmt: skip
        except (TypeError, ValueError, IndexError) as error:
            raise ValueError(f"{saved.path}: {error}") from None
        host.merge(i, tally)
    host.rejects += round(saved.number("rejects"))
