"""TorchScheduler: a core scheduler fed from tensors without host synchronisation."""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal, SupportsFloat

import array_api_compat
import numpy as np
import torch

from constraint_sched import (
    ConstraintScheduler,
    Event,
    Phase,
    Readings,
    SchedulerCollection,
    Tally,
)
from constraint_sched import functional as F
from constraint_sched.adapters.torch import _distributed
from constraint_sched.adapters.torch._accumulate import DeviceBooks, upload
from constraint_sched.adapters.torch._bound import bound_reading
from constraint_sched.adapters.torch._legacy import load_combined, load_previous_device
from constraint_sched.adapters.torch._tensors import BoundTensors
from constraint_sched.state import FORMAT_VERSION, Reader, check_header

Accumulate = Literal["auto", "device", "host"]
"""Where observations are counted: ``"auto"`` (accelerator tensors on their device,
CPU tensors and numbers on the host), ``"device"`` (every tensor on its own device)
or ``"host"`` (every value read to the host)."""

Observation = SupportsFloat | torch.Tensor
"""An observed value: a tensor on any device (with or without grad) or a number."""

_MISSING: Any = object()
_FORMAT = "constraint_sched.adapters.torch.TorchScheduler"


class TorchScheduler(BoundTensors, Readings):
    """A `ConstraintScheduler` (or a `SchedulerCollection`) observed from tensors on any device.

    A training step hands its metric tensors to `observe` and never waits
    for the accelerator: statistics of accelerator tensors accumulate on
    their device (`constraint_sched.functional`'s books, updated by tensor
    operations); CPU tensors and numbers are read on the host.
    `advance_epoch` synchronises once, agrees across ``torch.distributed``
    ranks, merges the statistics into the core and moves the bounds. Bounds
    and score parameters are 0-d tensors updated in place (`bound_tensor`,
    `parameters`), so a compiled loss needs no recompile. State reads as in
    the core (`constraint_sched.Readings`): `phase`, `bound`, `last_epoch`,
    and `phase_of`, `bound_of`, `last_epoch_of`, `phases` by spec name. The
    docs' "Your own PyTorch loop" page says which statistics are exact, how
    a ``steps`` discovery ends inside an epoch, and which call forms are
    deprecated.

    Args:
        scheduler: The core scheduler, or a collection of them.
        accumulate: ``"auto"`` (accelerator tensors on their device, CPU
            tensors and numbers on the host), ``"device"`` (every tensor on
            its own device, CPU included) or ``"host"`` (read every value:
            one synchronisation per tensor; for debugging).
        process_group: The ``torch.distributed`` group to agree in; None for
            the default group (used only when one is initialised).

    Raises:
        TypeError: ``scheduler`` is neither a scheduler nor a collection.
        ValueError: ``accumulate`` is not one of the three modes.

    Examples:
        >>> from constraint_sched import ConstraintSpec, ConstraintScheduler, SqueezeSchedule
        >>> kl = [ConstraintSpec(n, "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
        ...       for n in ("kl_core", "kl_detail")]
        >>> sched = TorchScheduler(ConstraintScheduler(
        ...     kl, squeeze=SqueezeSchedule.table({3: 13000.0, 4: 3000.0})))
        >>> for a, b in [(42358.2, 38921.5), (40000.0, 39500.0)]:
        ...     sched.observe({"kl_core": torch.tensor(a), "kl_detail": torch.tensor(b)})
        >>> [e.kind for e in sched.advance_epoch()]
        ['discovered', 'held']
        >>> sched.phase, sched.bound  # host values, as in the core
        (<Phase.HOLD: 2>, 42358.19921875)
        >>> ceiling = sched.bound_tensor(dtype=torch.float64)
        >>> ceiling
        tensor(42358.1992, dtype=torch.float64)
        >>> sched.observe({"kl_core": torch.tensor(30000.0), "kl_detail": torch.tensor(29000.0)})
        >>> _ = sched.advance_epoch(); ceiling  # the same tensor, updated in place
        tensor(13000., dtype=torch.float64)
        >>> sched.phase_of("kl_detail"), sched.bound_of("kl_detail")
        (<Phase.SQUEEZE: 3>, 13000.0)
    """

    def __init__(
        self,
        scheduler: ConstraintScheduler | SchedulerCollection,
        *,
        accumulate: Accumulate = "auto",
        process_group: Any = None,
    ) -> None:
        if isinstance(scheduler, ConstraintScheduler):
            collection = SchedulerCollection([scheduler])  # one scheduler: a collection of one
        elif isinstance(scheduler, SchedulerCollection):
            collection = scheduler
        else:
            raise TypeError(
                "TorchScheduler: scheduler must be a ConstraintScheduler or a "
                f"SchedulerCollection, got {scheduler!r}"
            )
        if accumulate not in ("auto", "device", "host"):
            raise ValueError(
                f"TorchScheduler: accumulate must be 'auto', 'device' or 'host', got {accumulate!r}"
            )
        self._core, self._collection = scheduler, collection
        self._schedulers = tuple(collection)
        self._accumulate: Accumulate = accumulate
        self._group = process_group
        self._names = tuple(n for s in self._schedulers for n in s.names)
        self._index = {n: i for i, n in enumerate(self._names)}
        self._owner = [s for s in self._schedulers for _ in s.names]
        self._raising = [s.nonfinite == "raise" for s in self._owner]
        self._centres = [s.centre for s in self._owner]  # a "width" bound observes |x - centre|
        self._sample_size = max(s.discovery.reservoir for s in self._schedulers)
        config = json.dumps([s.state_dict()["config"] for s in self._schedulers], sort_keys=True)
        self._digest = zlib.crc32(config.encode())
        self._xp = array_api_compat.array_namespace(torch.empty(0))
        self._host = F.HostBooks(len(self._names))
        self._devices: dict[torch.device, DeviceBooks] = {}
        self._last: dict[str, Tally] = {}
        self._flushed: list[Tally] | None = None  # merged early this epoch (a steps window)
        self._window_calls = 0  # observe calls this epoch, while a steps window is open
        self._window_at: int | None = None
        self._init_tensors()
        self._start_epoch()

    # -- reading (the rest is constraint_sched.Readings) -----------------------------

    @property
    def core(self) -> ConstraintScheduler | SchedulerCollection:
        """The wrapped core scheduler or collection."""
        return self._core

    @property
    def schedulers(self) -> tuple[ConstraintScheduler, ...]:
        """The core schedulers, in order (one when a single scheduler was given)."""
        return self._schedulers

    @property
    def names(self) -> tuple[str, ...]:
        """Every spec name, in order."""
        return self._names

    @property
    def last_tallies(self) -> dict[str, Tally]:
        """The last completed epoch's statistics per spec, across every rank."""
        return dict(self._last)

    @property
    def last_means(self) -> dict[str, float]:
        """The last completed epoch's mean of the valid observations per spec (NaN if none)."""
        return {n: t.mean for n, t in self._last.items()}

    @property
    def bound(self) -> float:
        """The bound in force of the one scheduler, a float (a host value, as in the core).

        For a tensor, use `bound_tensor`. The old call ``sched.bound(name,
        device=..., dtype=...)`` keeps working for one release: it warns
        (``DeprecationWarning``) and returns ``bound_tensor(...)``. With
        several schedulers, using the value as a number raises ``ValueError``:
        use `bound_of`.
        """
        return bound_reading(self, self.bound_tensor, "TorchScheduler")

    # -- the hot path --------------------------------------------------------------

    def observe(
        self,
        name_or_value: str | Observation | Mapping[str, Observation],
        value: Observation = _MISSING,
        *,
        accepted: torch.Tensor | bool | None = None,
    ) -> None:
        """Record a step's metric values: tensors (any device, with or without grad) or numbers.

        Three forms, as in the core: ``observe(value)`` with one spec,
        ``observe(name, value)`` and ``observe({name: value, ...})``. A tensor
        must hold one element (reduce a per-sample metric first, e.g. with
        ``.mean()``); it is detached. Accelerator tensors are accumulated on
        their device without any host synchronisation. A ``side="width"``
        scheduler records the distance ``|x - centre|``. A mapping is checked
        whole before any of it is recorded, so a retry never counts a value twice.

        Args:
            name_or_value: The value, a spec name, or a mapping of names to values.
            value: The value, when the first argument is a name.
            accepted: Count the values only if this is true: a 0-d bool tensor
                (on the device, for a step whose rejection is decided there), a
                bool or a numpy bool. Pair it with ``reject(~accepted)``.

        Raises:
            KeyError: An unknown spec name.
            TypeError: A value that is neither a number nor a real tensor, a
                missing name with several specs, or an ``accepted`` that is not a bool.
            ValueError: A tensor with more than one element or on the meta
                device; a non-finite host value of a scheduler with
                ``nonfinite="raise"`` (device values are checked at the epoch boundary).
        """
        if value is not _MISSING:
            items: Any = ((name_or_value, value),)
        elif isinstance(name_or_value, Mapping):
            items = name_or_value.items()
        elif len(self._names) == 1:
            items = ((self._names[0], name_or_value),)
        else:
            raise TypeError(
                f"TorchScheduler: observe(value) needs exactly one spec; this one has "
                f"{list(self._names)}: use observe(name, value) or observe({{name: value}})"
            )
        where, flag = self._acceptance(accepted)
        if where is False:
            return
        # Everything is checked before anything is recorded.
        groups: dict[torch.device, tuple[list[int], list[torch.Tensor]]] = {}
        on_host: list[tuple[int, float]] = []
        for name, v in items:
            i = self._index.get(name)
            if i is None:
                i = self._slot(name)
            centre = self._centres[i]
            if isinstance(v, torch.Tensor):
                _check_tensor(v, f"TorchScheduler.observe: the value of {name!r}")
                if centre is not None:
                    v = (v.detach() - centre).abs()
                if self._on_device(v) or (where is not None and v.device.type != "cpu"):
                    device = v.device if where is None else where
                    group = groups.setdefault(device, ([], []))
                    group[0].append(i)
                    group[1].append(v.to(device))
                    continue
                x = float(v.item())
            else:
                x = F.real_number(
                    v, f"TorchScheduler.observe: the value of {name!r}", " or a tensor"
                )
                if centre is not None:
                    x = abs(x - centre)
            if where is not None:  # acceptance is decided on the device: so is this value
                group = groups.setdefault(where, ([], []))
                group[0].append(i)
                group[1].append(torch.full((), x, dtype=torch.float64, device=where))
            elif x - x != 0.0 and self._raising[i]:
                raise ValueError(
                    f"TorchScheduler: non-finite observation {x!r} of {name!r} "
                    "(nonfinite='raise'); nothing was recorded"
                )
            else:
                on_host.append((i, x))
        for i, x in on_host:
            self._host.add(i, x)
        for device, (slots, values) in groups.items():
            self._books(device).add(tuple(slots), values, flag if device == where else None)
        if self._window_at is not None:
            self._window_calls += 1
            if self._window_calls >= self._window_at:
                self._end_windows()

    def _acceptance(self, accepted: Any) -> tuple[Any, torch.Tensor | None]:
        """Where acceptance is decided: (device, flag); (None, None): host; (False, None): no."""
        if accepted is None:
            return None, None
        if isinstance(accepted, torch.Tensor):
            _check_tensor(accepted, "TorchScheduler.observe: accepted", element=False)
            if accepted.dtype != torch.bool or accepted.numel() != 1:
                raise TypeError(
                    "TorchScheduler.observe: accepted must be a bool or a one-element bool "
                    f"tensor, got a {accepted.dtype} tensor of shape {tuple(accepted.shape)}"
                )
            if self._on_device(accepted):
                return accepted.device, accepted.reshape(())
            return (None, None) if accepted.item() else (False, None)
        if isinstance(accepted, (bool, np.bool_)):
            return (None, None) if accepted else (False, None)
        raise TypeError(
            f"TorchScheduler.observe: accepted must be a bool or a bool tensor, "
            f"got {type(accepted).__name__} {accepted!r}"
        )

    def reject(self, count: int | bool | np.bool_ | np.integer[Any] | torch.Tensor = 1) -> None:
        """Count rejected steps: an int >= 0, a bool, a numpy bool or integer, or a bool tensor.

        A one-element bool tensor on an accelerator (the step's reject flag)
        is counted on the device, without a host synchronisation; a CPU bool
        or integer tensor is read as an int.

        Raises:
            TypeError: A tensor that is not a one-element bool tensor (a CPU
                integer tensor is read as an int), or not a count at all.
            ValueError: A negative count.
        """
        if isinstance(count, torch.Tensor):
            _check_tensor(count, "TorchScheduler.reject: count", element=False)
            device_flag = count.dtype == torch.bool and self._on_device(count)
            cpu_int = count.device.type == "cpu" and not (
                count.is_floating_point() or count.is_complex()
            )
            if count.numel() != 1 or not (device_flag or cpu_int):
                raise TypeError(
                    "TorchScheduler.reject: count must be an int, a bool, or a one-element bool "
                    f"tensor, got a {count.dtype} tensor of shape {tuple(count.shape)} on "
                    f"{count.device}"
                )
            if device_flag:
                self._books(count.device).reject(count)
                return
            count = int(count.item())
        self._host.rejects += F.check_count(count, "TorchScheduler.reject")

    # -- the epoch boundary ----------------------------------------------------------

    def advance_epoch(
        self, *, tighten: bool | Collection[str] = True, log: bool = True
    ) -> list[Event]:
        """End the epoch: synchronise once, agree across ranks, move every bound.

        ``tighten`` is passed to the core's ``advance_epoch``: False (or, for a
        collection, the names of the schedulers that may) holds squeeze steps
        back this epoch. Under ``torch.distributed`` every rank must call this
        at the same point, with the same ``tighten``: the statistics are
        reduced across ranks first, so all ranks end with the same bounds.
        Events are logged on rank 0 only (none with ``log=False``), returned
        and passed to callbacks on every rank.

        Raises:
            ValueError: The ranks' schedulers are configured differently or at
                different epochs (nothing changes), or non-finite values
                reached a scheduler with ``nonfinite="raise"`` on the device
                path (counted per spec): those values are dropped and nothing
                else changes, so the next call ends the epoch without them.
        """
        log = log and _distributed.rank(self._group) == 0
        if self._core is not self._collection and not isinstance(tighten, bool):
            raise TypeError(
                "TorchScheduler.advance_epoch: tighten is a bool for a single "
                f"scheduler, got {tighten!r}"
            )
        tallies = self._merge_epoch_so_far(log=log)
        events = self._collection.advance_epoch(log=log, tighten=tighten)
        if self._flushed is not None:  # a steps discovery ended inside the epoch: report it whole
            tallies = [a + b for a, b in zip(self._flushed, tallies, strict=True)]
        self._last = dict(zip(self._names, tallies, strict=True))
        self._flushed, self._window_calls = None, 0
        self._start_epoch()
        return events

    def add_callback(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` for every later event of every scheduler, on every rank."""
        for scheduler in self._schedulers:
            scheduler.add_callback(callback)

    def _merge_epoch_so_far(self, *, log: bool) -> list[Tally]:
        """Synchronise once, agree across ranks and merge everything into the core."""
        distributed = _distributed.active(self._group)
        if distributed:
            self._check_agreement()
        tallies, rejects = self._collect(distributed)
        bad = [i for i, t in enumerate(tallies) if t.nonfinite and self._raising[i]]
        if bad:  # raised once: the bad values go, so the next call can end the epoch
            for i in bad:
                self._host.drop_nonfinite(i)
            for books in self._devices.values():
                books.forget_nonfinite(bad)
            counts = ", ".join(f"{tallies[i].nonfinite} of {self._names[i]!r}" for i in bad)
            raise ValueError(
                f"TorchScheduler: non-finite observations this epoch ({counts}) with "
                "nonfinite='raise'; they were dropped and the epoch's other observations kept: "
                "call advance_epoch again to end the epoch without them"
            )
        for scheduler in self._schedulers:  # rejects first: a steps discovery counts them
            scheduler.reject(rejects)
        for i, tally in enumerate(tallies):
            self._owner[i].merge(self._names[i], tally, log=log)
        return tallies

    def _collect(self, distributed: bool) -> tuple[list[Tally], int]:
        """Every slot's tally of the epoch (across ranks if ``distributed``): one sync."""
        n, xp = len(self._names), self._xp
        live = [b for b in self._devices.values() if b.touched or b.rows is not None]
        target = live[0].device if live else torch.device("cpu")
        if distributed:
            target = _distributed.reduce_device(self._group, target)
        head = upload(self._host.pack(), torch.float64, target)
        size = head.numel()
        packs = [b.pack().to(target) for b in live]
        books = F.unpack(xp, head, n)
        for packed in packs:
            books = F.merge(xp, books, F.unpack(xp, packed[:size], n))
        head = F.pack(xp, books)
        if distributed:
            _distributed.reduce_books(head, n, self._group)
        flat = torch.cat([head, *packs]).tolist()  # the one synchronisation
        # Median/quantile samples: each source (the host, each device, each rank) holds a
        # uniform sample of its own valid values; they are combined in proportion to the
        # values each stands for, the same way on every rank.
        sampled = [i for i in range(n) if self._sampled(i)]
        sources: dict[int, list[tuple[list[float], int]]] = {i: [] for i in sampled}
        start = size
        for packed in packs:
            own, start = flat[start : start + packed.numel()], start + packed.numel()
            for i, source in F.row_samples(own, n, sampled).items():
                sources[i].append(source)
        if self._host.reservoirs is not None:
            for i in sampled:
                reservoir = self._host.reservoirs[i]
                sources[i].append((list(reservoir.values), reservoir.count))
        if distributed and sampled:
            every = _distributed.gather(sources, self._group)
            sources = {i: [p for rank in every for p in rank[i]] for i in sampled}
        samples: list[list[float]] = [[] for _ in range(n)]
        for i in sampled:
            seed = F.seed_for(f"{self._names[i]}/combine/{self.epoch}")
            samples[i], _ = F.combine([p for p in sources[i] if p[1]], self._sample_size, seed)
        where = F.layout(n)
        for i in sampled:  # a small sample of steps can keep none with a valid value of a slot
            valid = flat[where["count"].start + i] - flat[where["nonfinite"].start + i]
            if not samples[i] and valid > 0:  # then the epoch's mean stands in for its sample
                samples[i] = [flat[where["total"].start + i] / valid]
        return F.tallies(flat[:size], n, samples)

    def _end_windows(self) -> None:
        """A ``steps`` discovery's window is full: merge what the epoch saw so far (one sync)."""
        tallies = self._merge_epoch_so_far(log=_distributed.rank(self._group) == 0)
        if self._flushed is not None:
            tallies = [a + b for a, b in zip(self._flushed, tallies, strict=True)]
        self._flushed = tallies
        self._start_epoch()

    def _check_agreement(self) -> None:
        mine = (self._digest, self.epoch, self._names)
        for r, theirs in enumerate(_distributed.gather(mine, self._group)):
            if theirs != mine:
                raise ValueError(
                    f"TorchScheduler: rank {r} has (config digest, epoch, specs) {theirs!r} but "
                    f"rank {_distributed.rank(self._group)} has {mine!r}; every rank must build "
                    "the same schedulers and call advance_epoch together"
                )

    # -- checkpoints -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The core's state and this epoch's statistics so far, as plain data.

        Goes into an ordinary ``torch.save`` and loads with
        ``torch.load(..., weights_only=True)`` (or JSON). The epoch's
        statistics are saved as they are held, on the host and on each device
        (with the median or quantile samples and their generators), so a
        scheduler restored mid-epoch goes on exactly as this one would.
        Reading the device statistics synchronises; in a distributed run save
        at an epoch boundary, where they are empty (each rank holds only its own part).

        Returns:
            ``{"format", "version", "names", "core", "epoch"}``.
        """
        flushed = None if self._flushed is None else [t.state() for t in self._flushed]
        return {
            "format": _FORMAT,
            "version": FORMAT_VERSION,
            "names": list(self._names),
            "core": self._core.state_dict(),
            "epoch": {
                "host": self._host.state(),
                "devices": [b.state() for b in self._devices.values() if b.touched],
                "window_calls": self._window_calls,
                "flushed": flushed,
            },
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a `state_dict`: the core's state and the epoch's statistics so far.

        Statistics saved on a device this process does not have (a CUDA
        checkpoint on a CPU-only machine) are restored on the CPU. States of
        earlier releases load too (their device statistics and samples are
        merged on the host, so the rest of that epoch's median sample is not
        bit-identical).

        Raises:
            ValueError: Corrupt, foreign or newer data, other spec names, or a
                state no run reaches; the message names the field. Nothing changes.
        """
        path = "state_dict"
        check_header(state_dict, _FORMAT, path)
        names = state_dict.get("names")
        if names != list(self._names):
            raise ValueError(
                f"{path}.names: saved for specs {names!r}, but this TorchScheduler has "
                f"{list(self._names)}"
            )
        core = state_dict.get("core")
        if not isinstance(core, Mapping):
            raise ValueError(f"{path}.core: expected a mapping, got {core!r}")
        epoch = Reader(state_dict, path).child("epoch")
        before = self.state_dict()
        try:
            self._load(core, epoch)
        except ValueError:
            self._load(before["core"], Reader(before, path).child("epoch"))
            raise

    def _load(self, core: Mapping[str, Any], epoch: Reader) -> None:
        """Load the core, then the epoch's statistics (`load_state_dict` undoes a failure)."""
        combined = "host" not in epoch.data  # the oldest layout: one tally per spec
        window_calls = 0 if combined else epoch.integer("window_calls")
        flushed = epoch.data.get("flushed")
        if flushed is not None:
            items = epoch.items("flushed", len(self._names))
            flushed = [
                Tally.from_state(x, f"{epoch.path}.flushed[{i}]") for i, x in enumerate(items)
            ]
        self._core.load_state_dict(core)
        self._devices = {}
        self._window_calls, self._flushed = window_calls, flushed
        self._start_epoch()
        if combined:
            load_combined(self._host, epoch)
            return
        self._host.load(epoch.child("host"))
        for k, item in enumerate(epoch.items("devices")):
            saved = Reader(item, f"{epoch.path}.devices[{k}]")
            if "stats" in saved.data:  # the previous release's layout: merged on the host
                load_previous_device(self._host, saved)
                continue
            device = _usable_device(saved)
            if device in self._devices:
                raise ValueError(
                    f"{saved.path}.device: the statistics of {saved.data.get('device')!r} would "
                    f"be restored on {device}, which already holds another device's"
                )
            self._books(device).load(saved)

    # -- internals -------------------------------------------------------------------

    def scheduler_of(self, name: str) -> ConstraintScheduler:
        """The core scheduler holding spec ``name``.

        Raises:
            KeyError: No spec has that name.
        """
        try:
            return self._owner[self._index[name]]
        except (KeyError, TypeError):
            raise KeyError(
                f"TorchScheduler has no spec {name!r}; it has {list(self._names)}"
            ) from None

    def _on_device(self, t: torch.Tensor) -> bool:
        mode = self._accumulate
        return mode == "device" or (mode == "auto" and t.device.type != "cpu")

    def _sampled(self, i: int) -> bool:
        s = self._owner[i]
        return s.phase is Phase.DISCOVERY and s.discovery.statistic in ("median", "quantile")

    def _books(self, device: torch.device) -> DeviceBooks:
        books = self._devices.get(device)
        if books is None:
            books = self._devices[device] = DeviceBooks(len(self._names), device, self._sample_size)
            self._start(device, books)
        return books

    def _start(self, device: torch.device, books: DeviceBooks) -> None:
        above, below = self._limits()
        sampling = any(self._sampled(i) for i in range(len(self._names)))
        seed = F.seed_for("/".join(self._names) + f"@{device}/{self.epoch}")
        books.start(above, below, sampling, seed)

    def _limits(self) -> tuple[list[float], list[float]]:
        """Per slot, the values above and below which a value violates the bound in force."""
        upper = [s.side != "lower" for s in self._owner]  # a half-width is a ceiling
        bounds = [s.bound for s in self._owner]
        above = [b if u else math.inf for b, u in zip(bounds, upper, strict=True)]
        below = [-math.inf if u else b for b, u in zip(bounds, upper, strict=True)]
        return above, below

    def _start_epoch(self) -> None:
        above, below = self._limits()
        reservoirs = None
        if any(self._sampled(i) for i in range(len(self._names))):
            reservoirs = [
                F.Reservoir(self._sample_size, F.seed_for(f"{n}@host/{self.epoch}"))
                for n in self._names
            ]
        self._host.start(above, below, reservoirs)
        for device, books in self._devices.items():
            self._start(device, books)
        windows = [
            s.discovery.steps
            for s in self._schedulers
            if s.discovery.steps is not None and s.phase is Phase.DISCOVERY
        ]
        open_windows = [w for w in windows if w > self._window_calls]
        self._window_at = min(open_windows) if open_windows else None
        self._refresh_tensors()


def _check_tensor(t: torch.Tensor, what: str, *, element: bool = True) -> None:
    """A ValueError for a meta tensor or several values; a TypeError for a complex one."""
    if element and t.numel() != 1:
        raise ValueError(
            f"{what} must hold one element, got a tensor of shape {tuple(t.shape)}: reduce "
            "per-sample values first (e.g. with .mean() or .max()), or observe them one by one"
        )
    if t.device.type == "meta":
        raise ValueError(
            f"{what} is a meta tensor, which holds no data: pass the real value (a model built "
            "on the meta device must be materialised first, e.g. with to_empty() and its init)"
        )
    if element and (t.is_complex() or t.dtype == torch.bool):
        raise TypeError(f"{what} must be a real number, got a {t.dtype} tensor")


def _usable_device(saved: Reader) -> torch.device:
    """The device a saved device's books are restored on: its own, or the CPU if absent here."""
    name = saved.data.get("device")
    try:
        device = torch.device(name)  # type: ignore[arg-type]
    except (TypeError, RuntimeError):
        raise ValueError(f"{saved.path}.device: expected a torch device, got {name!r}") from None
    if device.type == "meta":
        raise ValueError(f"{saved.path}.device: statistics cannot live on the meta device")
    try:
        torch.empty((), device=device)
    except (RuntimeError, AssertionError):  # torch raises both for a device it lacks
        return torch.device("cpu")
    return device
