"""TorchScheduler: a core scheduler fed from tensors without host synchronisation."""

from __future__ import annotations

import json
import math
import warnings
import zlib
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal, NoReturn, SupportsFloat, cast

import numpy as np
import torch

from constraint_sched import (
    ConstraintScheduler,
    ConstraintSpec,
    EpochStats,
    Event,
    Phase,
    SchedulerCollection,
    Tally,
    _state,
)
from constraint_sched._accumulator import Accumulator
from constraint_sched._names import find
from constraint_sched._reservoir import Reservoir, combine, seed_for
from constraint_sched._scheduler import check_count
from constraint_sched.adapters.torch import _distributed
from constraint_sched.adapters.torch._accumulate import DeviceTally, layout, upload

Accumulate = Literal["auto", "device", "host"]
Observation = SupportsFloat | torch.Tensor
BoundTensor = Callable[..., torch.Tensor]
"""``bound_tensor(name=None, *, device=None, dtype=None)`` of a TorchScheduler or a callback."""

_MISSING: Any = object()
_FORMAT = "constraint_sched.adapters.torch.TorchScheduler"
_FIELDS = ("lower", "upper", "healthy", "margin", "scale")
_SAMPLED = ("median", "quantile")


class TorchScheduler:
    """A `ConstraintScheduler` (or a `SchedulerCollection`) observed from tensors on any device.

    A training step hands its metric tensors to `observe` and never waits
    for the accelerator: statistics of accelerator tensors accumulate on
    their device, in place; CPU tensors and numbers are read on the host.
    `advance_epoch` synchronises once, agrees across ``torch.distributed``
    ranks, merges the statistics into the core and moves the bounds. Bounds
    and score parameters are 0-d tensors updated in place (`bound_tensor`,
    `parameters`), so a compiled loss needs no recompile. State reads as in
    the core: `phase`, `bound`, `last_epoch`, and `phase_of`, `bound_of`,
    `last_epoch_of`, `phases` by spec name. The docs' "Your own PyTorch loop"
    page says which statistics are exact, how a ``steps`` discovery ends
    inside an epoch, and which call forms are deprecated.

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
        # A single scheduler is handled as a collection of one.
        if isinstance(scheduler, ConstraintScheduler):
            collection = SchedulerCollection([scheduler])
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
        self._core = scheduler
        self._collection = collection
        self._schedulers = list(collection)
        self._accumulate: Accumulate = accumulate
        self._group = process_group
        self._names: tuple[str, ...] = tuple(n for s in self._schedulers for n in s.names)
        self._owner = [s for s in self._schedulers for _ in s.names]
        self._owner_index = [k for k, s in enumerate(self._schedulers) for _ in s.names]
        self._index = {n: i for i, n in enumerate(self._names)}
        self._raise_nonfinite = [s.nonfinite == "raise" for s in self._owner]
        # A "width" bound observes the distance from its boxes' centre (None: the value).
        self._centres = [s.centre for s in self._owner]
        # One spec object per slot for all epochs: a score passes every numeric
        # field as a cached tensor and reads only the kind and steepness, which
        # never change, so torch.compile's guards hold across epochs (see `score`).
        self._scorers = [s.spec(n) for s, n in zip(self._owner, self._names, strict=True)]
        self._auto = [False] * len(self._names)
        self._sample_size = max(s.discovery.reservoir for s in self._schedulers)
        config = json.dumps([s.state_dict()["config"] for s in self._schedulers], sort_keys=True)
        self._digest = zlib.crc32(config.encode())
        self._host = Accumulator(len(self._names))
        self._devices: dict[torch.device, DeviceTally] = {}
        self._bounds: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}
        self._params: dict[tuple[int, torch.device, torch.dtype], dict[str, torch.Tensor]] = {}
        self._last: dict[str, Tally] = {}
        self._last_means: dict[str, float] = {}
        self._flushed: list[Tally] | None = None  # merged early this epoch (a steps window)
        self._window_calls = 0  # observe calls this epoch, while a steps window is open
        self._window_at: int | None = None
        self._start_epoch()

    # -- reading ---------------------------------------------------------------

    @property
    def core(self) -> ConstraintScheduler | SchedulerCollection:
        """The wrapped core scheduler or collection."""
        return self._core

    @property
    def schedulers(self) -> tuple[ConstraintScheduler, ...]:
        """The core schedulers, in order (one when a single scheduler was given)."""
        return tuple(self._schedulers)

    @property
    def names(self) -> tuple[str, ...]:
        """Every spec name, in order."""
        return self._names

    @property
    def epoch(self) -> int:
        """The current epoch, 1-based."""
        return self._schedulers[0].epoch

    @property
    def phase(self) -> Phase:
        """The phase of the one scheduler (a `constraint_sched.Phase`: compare with ``is``).

        This used to be a method, ``phase(name=None)``; it is a
        property now, as in the core, so ``sched.phase is Phase.DISCOVERY``
        reads the phase. The old call ``sched.phase(name)`` raises
        ``TypeError`` (a ``Phase`` is not callable): use `phase_of`.

        Raises:
            ValueError: There are several schedulers: use `phase_of` with a
                spec name, or `phases`.
        """
        return self._only("phase", "phase_of").phase

    @property
    def phases(self) -> dict[str, Phase]:
        """The phase of every spec (its scheduler's), by spec name."""
        return {name: s.phase for name, s in zip(self._names, self._owner, strict=True)}

    def phase_of(self, name: str) -> Phase:
        """The phase of the scheduler that holds spec ``name``.

        Raises:
            KeyError: No spec has that name.
        """
        return self._owner[self._slot(name)].phase

    @property
    def last_epoch(self) -> EpochStats | None:
        """The core's `constraint_sched.ConstraintScheduler.last_epoch` of the one scheduler.

        Raises:
            ValueError: There are several schedulers: use `last_epoch_of`.
        """
        return self._only("last_epoch", "last_epoch_of").last_epoch

    def last_epoch_of(self, name: str) -> EpochStats | None:
        """`constraint_sched.ConstraintScheduler.last_epoch` of the scheduler holding ``name``.

        Raises:
            KeyError: No spec has that name.
        """
        return self._owner[self._slot(name)].last_epoch

    def spec(self, name: str | None = None) -> ConstraintSpec:
        """The spec called ``name`` with its current bound applied."""
        return self._owner[self._slot(name)].spec(self._names[self._slot(name)])

    @property
    def last_tallies(self) -> dict[str, Tally]:
        """The last completed epoch's statistics per spec, across every rank."""
        return dict(self._last)

    @property
    def last_means(self) -> dict[str, float]:
        """The last completed epoch's mean of the valid observations per spec (NaN if none)."""
        return dict(self._last_means)

    @property
    def bound(self) -> float:
        """The bound in force of the one scheduler, a float (a host value, as in the core).

        For a tensor, use `bound_tensor`. This used to be the
        tensor method; the old call ``sched.bound(name, device=..., dtype=...)``
        keeps working for one release: it warns (``DeprecationWarning``) and
        returns ``bound_tensor(name, device=..., dtype=...)``. So the value
        returned here is a float that can be called so. With several
        schedulers there is no one bound: the value returned then can only
        be called the old way; using it as a number (``float()``, arithmetic,
        comparisons, formatting) raises ``ValueError``: use `bound_of`.

        Returns:
            The bound (the specs' own, e.g. ``1e9``, during discovery).
        """
        return self._bound_reading(self.bound_tensor, "TorchScheduler")

    def bound_of(self, name: str) -> float:
        """The bound in force for spec ``name``, a float (its scheduler's, on the host).

        Raises:
            KeyError: No spec has that name.
        """
        return self._owner[self._slot(name)].bound

    def bound_tensor(
        self,
        name: str | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """The bound in force for spec ``name`` as a 0-d tensor, updated in place each epoch.

        The same tensor object is returned for the same scheduler, device and
        dtype, and `advance_epoch` writes the new bound into it, so a compiled
        function that reads it sees the new value without recompiling. Treat
        it as read-only. (Formerly ``bound(...)``.)

        Args:
            name: A spec of the scheduler; may be left out when there is one scheduler.
            device: Where the tensor lives (default: the CPU).
            dtype: Its floating dtype (default: ``torch.get_default_dtype()``).

        Returns:
            The cached tensor (``inf`` or the spec's own bound during discovery).

        Raises:
            KeyError: No spec has that name.
            TypeError: No name with several schedulers, or a dtype that is not floating.
        """
        k = self._scheduler_index(name)
        key = (k, *_where(device, dtype))
        cached = self._bounds.get(key)
        if cached is None:
            cached = torch.full((), self._schedulers[k].bound, dtype=key[2], device=key[1])
            self._bounds[key] = cached
        return cached

    def parameters(
        self,
        name: str | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> dict[str, torch.Tensor]:
        """The numeric parameters of spec ``name`` as cached 0-d tensors, updated in place.

        These are what `score` passes to `constraint_sched.ConstraintSpec.score`
        (``upper`` and ``healthy`` of a ``BOX_ASYMMETRIC`` spec, a ``margin``, a
        ``scale``...). An ``"auto"`` scale not yet discovered reads ``inf``.

        Returns:
            A dict from field name to tensor; the dict and its tensors are cached.
        """
        slot = self._slot(name)
        key = (slot, *_where(device, dtype))
        cached = self._params.get(key)
        if cached is None:
            cached = {
                f: torch.full((), v, dtype=key[2], device=key[1])
                for f, v in _numbers(self.spec(self._names[slot])).items()
            }
            self._params[key] = cached
        return cached

    def score(self, name: str | None, x: torch.Tensor) -> torch.Tensor:
        """The score of ``x`` under spec ``name``'s current bound (differentiable).

        Computed by the core's `constraint_sched.ConstraintSpec.score` with
        the cached parameter tensors of ``x``'s device and dtype. Nothing it
        reads changes from one epoch to the next except the values in those
        tensors, so ``torch.compile`` does not recompile at epoch boundaries.
        ``x`` may have any shape: the score is elementwise, so per-sample
        values give per-sample scores (reduce them, e.g. with ``.mean()``,
        before `LBOObjective`, which takes one score per goal).

        Raises:
            ValueError: The spec's scale is ``"auto"`` and still being discovered.
        """
        spec, params = self._scoring(name, x)
        return spec.score(x, parameters=params)

    def log_score(self, name: str | None, x: torch.Tensor) -> torch.Tensor:
        """The log of `score`, from the core's `constraint_sched.ConstraintSpec.log_score`.

        For `LBOObjective` with ``log=True``: finite (and with a slope) however
        far past its bound ``x`` lies, where the score itself underflows to 0.
        Elementwise, as `score`.

        Raises:
            ValueError: The spec's scale is ``"auto"`` and still being discovered.
        """
        spec, params = self._scoring(name, x)
        return spec.log_score(x, parameters=params)

    def _scoring(
        self, name: str | None, x: torch.Tensor
    ) -> tuple[ConstraintSpec, dict[str, torch.Tensor]]:
        """Spec ``name`` and its cached parameter tensors for ``x``'s device and dtype."""
        slot = self._slot(name)
        if self._auto[slot]:
            self.spec(self._names[slot]).score(0.0)  # raises the core's error, naming the spec
        return self._scorers[slot], self.parameters(
            self._names[slot], device=x.device, dtype=x.dtype
        )

    def violation(self, name: str | None, x: torch.Tensor) -> torch.Tensor:
        """How far ``x`` lies beyond spec ``name``'s current bounds (0 inside), elementwise."""
        slot = self._slot(name)
        params = self.parameters(self._names[slot], device=x.device, dtype=x.dtype)
        return self._scorers[slot].violation(x, parameters=params)

    # -- the hot path ------------------------------------------------------------

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
        ``.mean()``); it is detached. Accelerator tensors are
        accumulated on their device without any host synchronisation. A
        ``side="width"`` scheduler records the distance ``|x - centre|``.

        Args:
            name_or_value: The value, a spec name, or a mapping of names to values.
            value: The value, when the first argument is a name.
            accepted: Count the values only if this is true: a 0-d bool tensor
                (on the device, for a step whose rejection is decided there), a
                bool or a numpy bool. Pair it with ``reject(~accepted)``.

        Raises:
            KeyError: An unknown spec name.
            TypeError: A value that is neither a number nor a real tensor
                (complex tensors are refused on every device), a missing name
                with several specs, or an ``accepted`` that is not a bool.
            ValueError: A tensor with more than one element or on the meta
                device (no data); a non-finite host value of a scheduler with
                ``nonfinite="raise"`` (device values are checked at the epoch
                boundary).

        A mapping is checked whole before any of it is recorded: if one name
        or value is refused, nothing is, so a retry never counts a value twice.
        """
        if value is _MISSING:
            if isinstance(name_or_value, Mapping):
                items: Any = name_or_value.items()
            else:
                if len(self._names) != 1:
                    raise TypeError(
                        f"TorchScheduler: observe(value) needs exactly one spec; this one has "
                        f"{list(self._names)}: use observe(name, value) or observe({{name: value}})"
                    )
                items = ((self._names[0], name_or_value),)
        else:
            items = ((name_or_value, value),)
        where: torch.device | None = None  # the device that decides acceptance
        flag: torch.Tensor | None = None
        if accepted is not None:
            if isinstance(accepted, torch.Tensor):
                _refuse_meta(accepted, "TorchScheduler.observe: accepted")
                if accepted.dtype != torch.bool or accepted.numel() != 1:
                    raise TypeError(
                        "TorchScheduler.observe: accepted must be a bool or a one-element bool "
                        f"tensor, got a {accepted.dtype} tensor of shape {tuple(accepted.shape)}"
                    )
                if self._on_device(accepted):
                    where, flag = accepted.device, accepted.reshape(())
                elif not accepted.item():
                    return
            elif isinstance(accepted, (bool, np.bool_)):
                if not accepted:
                    return
                accepted = None
            else:
                raise TypeError(
                    f"TorchScheduler.observe: accepted must be a bool or a bool tensor, "
                    f"got {type(accepted).__name__} {accepted!r}"
                )
        # Everything is checked before anything is recorded: a refused name or
        # value leaves the epoch's statistics as they were.
        groups: dict[torch.device, tuple[list[int], list[torch.Tensor]]] = {}
        on_host: list[tuple[int, float]] = []
        for name, v in items:
            i = self._index.get(name)
            if i is None:
                i = self._slot(name)
            if isinstance(v, torch.Tensor):
                if v.numel() != 1:
                    raise ValueError(
                        f"TorchScheduler.observe: the value of {name!r} must hold one element, "
                        f"got a tensor of shape {tuple(v.shape)}: reduce per-sample values "
                        "first (e.g. with .mean() or .max()), or observe them one by one"
                    )
                _refuse_meta(v, f"TorchScheduler.observe: the value of {name!r}")
                if v.is_complex():
                    raise TypeError(
                        f"TorchScheduler.observe: the value of {name!r} must be real, got a "
                        f"{v.dtype} tensor"
                    )
                centre = self._centres[i]
                if centre is not None:
                    v = (v.detach() - centre).abs()
                if self._on_device(v) or (where is not None and v.device.type != "cpu"):
                    device = v.device if where is None else where
                    group = groups.get(device)
                    if group is None:
                        group = groups[device] = ([], [])
                    group[0].append(i)
                    group[1].append(v if v.device == device else v.to(device))
                    continue
                x = float(v.item())
            else:
                try:
                    x = float(v)
                except (TypeError, ValueError):
                    raise TypeError(
                        f"TorchScheduler.observe: the value of {name!r} must be a number or a "
                        f"tensor, got {v!r}"
                    ) from None
                centre = self._centres[i]
                if centre is not None:
                    x = abs(x - centre)
            if where is not None:  # acceptance is decided on the device: so is this value
                group = groups.setdefault(where, ([], []))
                group[0].append(i)
                group[1].append(torch.full((), x, dtype=torch.float64, device=where))
                continue
            if x - x != 0.0 and self._raise_nonfinite[i]:
                raise ValueError(
                    f"TorchScheduler: non-finite observation {x!r} of {name!r} "
                    "(nonfinite='raise'); nothing was recorded"
                )
            on_host.append((i, x))
        host = self._host
        for i, x in on_host:
            host.add(i, x)
        for device, (slots, values) in groups.items():
            self._tally(device).add(
                tuple(slots),
                values,
                flag if device == where else None,
            )
        if self._window_at is not None:
            self._window_calls += 1
            if self._window_calls >= self._window_at:
                self._end_windows()

    def reject(self, count: int | bool | np.bool_ | np.integer[Any] | torch.Tensor = 1) -> None:
        """Count rejected steps: an int >= 0, a bool, a numpy bool or integer, or a bool tensor.

        A one-element bool tensor on an accelerator (the step's reject flag)
        is counted on the device, without a host synchronisation; a CPU bool
        or integer tensor is read as an int. The host types are those of
        `constraint_sched.ConstraintScheduler.reject`.

        Raises:
            TypeError: A tensor that is not a one-element bool tensor (a CPU
                integer tensor is read as an int), or not a count at all (a
                float, a string...).
            ValueError: A negative count.
        """
        if isinstance(count, torch.Tensor):
            _refuse_meta(count, "TorchScheduler.reject: count")
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
                self._tally(count.device).reject(count)
                return
            count = int(count.item())
        self._host.rejects += check_count(count, "TorchScheduler.reject")

    # -- the epoch boundary --------------------------------------------------------

    def advance_epoch(
        self, *, tighten: bool | Collection[str] = True, log: bool = True
    ) -> list[Event]:
        """End the epoch: synchronise once, agree across ranks, move every bound.

        ``tighten`` is passed to the core's ``advance_epoch``: False (or, for a
        collection, the names of the schedulers that may) holds squeeze steps
        back this epoch. In a distributed run every rank must pass the same.

        Under an initialised ``torch.distributed`` process group every rank
        must call this at the same point: the statistics are reduced across
        ranks first, so all ranks end with the same bounds and phases. Events
        are logged on rank 0 only (none with ``log=False``), returned and passed
        to callbacks on every rank.

        Returns:
            The core's events.

        Raises:
            ValueError: The ranks' schedulers are configured differently or at
                different epochs (nothing changes), or non-finite values
                reached a scheduler with ``nonfinite="raise"`` on the device
                path (the message counts them per spec). Those values are
                dropped and nothing else changes: the next call ends the epoch
                with the rest, as if they had never been observed.
        """
        log = log and _distributed.rank(self._group) == 0
        tallies = self._merge_epoch_so_far(log=log)
        if self._core is not self._collection and not isinstance(tighten, bool):
            raise TypeError(
                "TorchScheduler.advance_epoch: tighten is a bool for a single "
                f"scheduler, got {tighten!r}"
            )
        events = self._collection.advance_epoch(log=log, tighten=tighten)
        flushed, self._flushed = self._flushed, None
        if flushed is not None:  # a steps discovery ended inside the epoch: report it whole
            tallies = [_plus(a, b) for a, b in zip(flushed, tallies, strict=True)]
        self._last = dict(zip(self._names, tallies, strict=True))
        self._last_means = {n: t.mean for n, t in zip(self._names, tallies, strict=True)}
        self._window_calls = 0
        self._start_epoch()
        return events

    def add_callback(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` for every later event of every scheduler, on every rank.

        Events of a ``DiscoveryPhase(steps=...)`` discovery, which ends inside
        an epoch during `observe`, arrive this way (and in the log).
        """
        for scheduler in self._schedulers:
            scheduler.add_callback(callback)

    def _merge_epoch_so_far(self, *, log: bool) -> list[Tally]:
        """Synchronise once, agree across ranks and merge everything into the core."""
        distributed = _distributed.active(self._group)
        if distributed:
            self._check_agreement()
        tallies, rejects = self._collect(distributed)
        bad = [i for i, t in enumerate(tallies) if t.nonfinite and self._raise_nonfinite[i]]
        if bad:  # raised once: the bad values go, so the next call can end the epoch
            self._drop_nonfinite(bad)
            counts = ", ".join(f"{tallies[i].nonfinite} of {self._names[i]!r}" for i in bad)
            raise ValueError(
                f"TorchScheduler: non-finite observations this epoch ({counts}) with "
                "nonfinite='raise'; they were dropped and the epoch's other observations kept: "
                "call advance_epoch again to end the epoch without them"
            )
        # Rejects first: a steps discovery counts rejected steps, and ends in a merge.
        for scheduler in self._schedulers:
            scheduler.reject(rejects)
        for i, tally in enumerate(tallies):
            self._owner[i].merge(self._names[i], tally, log=log)
        return tallies

    @torch.no_grad()
    def _drop_nonfinite(self, slots: list[int]) -> None:
        """Forget the non-finite observations of ``slots`` this epoch, on the host and devices."""
        for i in slots:
            self._host.drop_nonfinite(i)
        for tally in self._devices.values():
            for i in slots:
                tally.stats[0, i] -= tally.stats[1, i]
                tally.stats[1, i] = 0.0

    def _end_windows(self) -> None:
        """A ``steps`` discovery's window is full: merge what the epoch saw so far (one sync)."""
        tallies = self._merge_epoch_so_far(log=_distributed.rank(self._group) == 0)
        if self._flushed is not None:
            tallies = [_plus(a, b) for a, b in zip(self._flushed, tallies, strict=True)]
        self._flushed = tallies
        self._start_epoch()

    # -- checkpoints -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The core's state and this epoch's statistics so far, as plain data.

        Goes into an ordinary ``torch.save`` and loads with
        ``torch.load(..., weights_only=True)`` (or JSON). The epoch's
        statistics are saved as they are held, on the host and on each device
        (with the median or quantile samples and their generators), so a
        scheduler restored mid-epoch goes on exactly as this one would.
        Reading the device statistics synchronises; in a distributed run save
        at an epoch boundary, where they are empty (each rank holds only its
        own part).

        Returns:
            ``{"format", "version", "names", "core", "epoch"}``.
        """
        return {
            "format": _FORMAT,
            "version": _state.FORMAT_VERSION,
            "names": list(self._names),
            "core": self._core.state_dict(),
            "epoch": {
                "host": self._host.state(),
                "devices": [t.state() for t in self._devices.values() if t.touched],
                "window_calls": self._window_calls,
                "flushed": None
                if self._flushed is None
                else [_tally_plain(t) for t in self._flushed],
            },
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a `state_dict`: the core's state and the epoch's statistics so far.

        Statistics saved on a device this process does not have (a CUDA
        checkpoint on a CPU-only machine) are restored on the CPU. A state of
        an earlier release (one combined tally per spec) loads too; a median
        or quantile sample from it then only stands for the observations it
        summarises, so the rest of that epoch is not bit-identical.

        Raises:
            ValueError: Corrupt, foreign or newer data, other spec names, or a
                core state that does not load; the message names the field.
                Nothing changes.
        """
        path = "state_dict"
        _state.check_header(state_dict, _FORMAT, path)
        names = state_dict.get("names")
        if names != list(self._names):
            raise ValueError(
                f"{path}.names: saved for specs {names!r}, but this TorchScheduler has "
                f"{list(self._names)}"
            )
        core = state_dict.get("core")
        if not isinstance(core, Mapping):
            raise ValueError(f"{path}.core: expected a mapping, got {core!r}")
        epoch = _state.Reader(state_dict, path).child("epoch")
        before = self.state_dict()
        try:
            self._load(core, epoch)
        except ValueError:
            self._load(before["core"], _state.Reader(before, path).child("epoch"))
            raise

    def _load(self, core: Mapping[str, Any], epoch: _state.Reader) -> None:
        """Load the core, then the epoch's statistics (`load_state_dict` undoes a failure)."""
        if "host" not in epoch.data:  # an earlier release's combined tallies
            self._load_combined(core, epoch)
            return
        window_calls = epoch.integer("window_calls")
        flushed = None
        if epoch.data.get("flushed", None) is not None:
            items = epoch.items("flushed", len(self._names))
            flushed = [
                _tally_read(item, f"{epoch.path}.flushed[{i}]") for i, item in enumerate(items)
            ]
        devices = epoch.items("devices")
        self._core.load_state_dict(core)
        self._devices = {}
        self._window_calls, self._flushed = window_calls, flushed
        self._start_epoch()
        self._host.load(epoch.child("host"))
        for k, item in enumerate(devices):
            saved = _state.Reader(item, f"{epoch.path}.devices[{k}]")
            device = _usable_device(saved)
            if device in self._devices:
                raise ValueError(
                    f"{saved.path}.device: the statistics of {saved.data.get('device')!r} would "
                    f"be restored on {device}, which already holds another device's"
                )
            self._tally(device).load(saved)

    def _load_combined(self, core: Mapping[str, Any], epoch: _state.Reader) -> None:
        rejects = epoch.integer("rejects")
        items = epoch.items("tallies", len(self._names))
        tallies = [_tally_read(item, f"{epoch.path}.tallies[{i}]") for i, item in enumerate(items)]
        self._core.load_state_dict(core)
        self._window_calls, self._flushed = 0, None
        self._start_epoch()
        host = self._host
        for i, tally in enumerate(tallies):
            host.set(
                i,
                count=tally.count,
                nonfinite=tally.nonfinite,
                violations=tally.violations,
                total=tally.total,
                maximum=tally.maximum,
                minimum=tally.minimum,
            )
            if host.reservoirs is not None and tally.samples:
                host.reservoirs[i].merge(list(tally.samples), tally.valid)
        host.rejects = rejects

    # -- internals -------------------------------------------------------------------------

    def _slot(self, name: str | None) -> int:
        if name is None:
            if len(self._names) == 1:
                return 0
            raise TypeError(f"TorchScheduler: name the spec: one of {list(self._names)}")
        return find(self._index, name, "TorchScheduler", "spec", self._names)

    def _only(self, what: str, instead: str) -> ConstraintScheduler:
        """The one scheduler, for a property that reads one value; else a ValueError."""
        if len(self._schedulers) == 1:
            return self._schedulers[0]
        raise self._several(what, instead)

    def _bound_reading(self, tensor: BoundTensor, owner: str) -> float:
        """What a ``bound`` property returns: a callable float for one scheduler, else a refusal.

        Args:
            tensor: The ``bound_tensor`` method that the deprecated call form returns.
            owner: The class name, for the deprecation warning.
        """
        if len(self._schedulers) == 1:
            return _CallableBound(self._schedulers[0].bound, tensor, owner)
        message = str(self._several("bound", "bound_of")).replace("TorchScheduler", owner, 1)
        return cast(float, _NoSingleBound(tensor, owner, message))

    def _several(self, what: str, instead: str) -> ValueError:
        return ValueError(
            f"TorchScheduler.{what} needs exactly one scheduler, and this one has "
            f"{len(self._schedulers)} ({[s.name for s in self._schedulers]}): use "
            f"{instead}(name) with a spec name, one of {list(self._names)}"
        )

    def _scheduler_index(self, name: str | None) -> int:
        if name is None and len(self._schedulers) == 1:
            return 0
        return self._owner_index[self._slot(name)]

    def _on_device(self, t: torch.Tensor) -> bool:
        mode = self._accumulate
        return mode == "device" or (mode == "auto" and t.device.type != "cpu")

    def _tally(self, device: torch.device) -> DeviceTally:
        tally = self._devices.get(device)
        if tally is None:
            bounds, signs, _, _ = self._bound_lists()
            tally = DeviceTally(
                len(self._names),
                device,
                bounds=bounds,
                signs=signs,
                sample_size=self._sample_size,
                seed=seed_for("/".join(self._names) + f"@{device}"),
            )
            tally.start(bounds, sampling=self._sampling(), seed=self._device_seed(device))
            self._devices[device] = tally
        return tally

    def _device_seed(self, device: torch.device) -> int:
        """The seed of a device's sample this epoch (restarted each epoch, so never saved)."""
        return seed_for("/".join(self._names) + f"@{device}/{self.epoch}")

    def _bound_lists(self) -> tuple[list[float], list[float], list[float], list[float]]:
        bounds, signs, above, below = [], [], [], []
        for scheduler in self._owner:
            b = scheduler.bound
            upper = scheduler.side != "lower"  # a half-width is a ceiling on a distance
            bounds.append(b)
            signs.append(1.0 if upper else -1.0)
            above.append(b if upper else math.inf)
            below.append(-math.inf if upper else b)
        return bounds, signs, above, below

    def _needs_samples(self, i: int) -> bool:
        s = self._owner[i]
        return s.phase is Phase.DISCOVERY and s.discovery.statistic in _SAMPLED

    def _sampling(self) -> bool:
        return any(self._needs_samples(i) for i in range(len(self._names)))

    def _start_epoch(self) -> None:
        bounds, _, above, below = self._bound_lists()
        sampling = self._sampling()
        reservoirs = None
        if sampling:
            reservoirs = [
                Reservoir(self._sample_size, seed_for(f"{n}@host/{self.epoch}"))
                for n in self._names
            ]
        self._host.start(above, below, reservoirs)
        for device, tally in self._devices.items():
            tally.start(bounds, sampling=sampling, seed=self._device_seed(device))
        windows = [
            s.discovery.steps
            for s in self._schedulers
            if s.discovery.steps is not None and s.phase is Phase.DISCOVERY
        ]
        open_windows = [w for w in windows if w > self._window_calls]
        self._window_at = min(open_windows) if open_windows else None
        self._refresh_tensors()

    @torch.no_grad()
    def _refresh_tensors(self) -> None:
        self._auto = [self.spec(n).scale == "auto" for n in self._names]
        for (k, _, _), t in self._bounds.items():
            t.fill_(self._schedulers[k].bound)
        for (slot, _, _), params in self._params.items():
            values = _numbers(self.spec(self._names[slot]))
            for field, t in params.items():
                t.fill_(values[field])

    def _collect(self, distributed: bool) -> tuple[list[Tally], int]:
        """Every slot's tally of the epoch (across ranks if ``distributed``): one sync."""
        n, k = len(self._names), self._sample_size
        parts = layout(n, k)
        live = [t for t in self._devices.values() if t.touched or t.sampling]
        target = live[0].device if live else torch.device("cpu")
        if distributed:
            target = _distributed.reduce_device(self._group, target)
        head_size = parts["max"].stop
        head = upload(self._host.pack(), torch.float64, target)
        packs, kept = [], []
        for tally in live:
            packed = tally.pack(samples=tally.sampling).to(target)
            head[parts["sum"]] += packed[parts["sum"]]
            torch.maximum(head[parts["max"]], packed[parts["max"]], out=head[parts["max"]])
            packs.append(packed)
            kept.append(tally.kept if tally.sampling else 0)
        if distributed:
            _distributed.reduce_packed(head, parts["sum"], parts["max"], self._group)
        flat = torch.cat([head, *packs]).tolist()  # the one synchronisation
        # Median/quantile samples: each source (the host, each device, each rank)
        # holds a uniform sample of its own valid values; they are combined in
        # proportion to the values each stands for, the same way on every rank.
        sampled = [i for i in range(n) if self._needs_samples(i)]
        sources: dict[int, list[tuple[list[float], int]]] = {i: [] for i in sampled}
        start = head_size
        for packed, rows in zip(packs, kept, strict=True):
            own = flat[start : start + packed.numel()]
            start += packed.numel()
            for i in sampled:
                valid = round(own[i] - own[n + i])  # this device's count - nonfinite
                values = [own[head_size + r * n + i] for r in range(rows)]
                sources[i].append(([x for x in values if x == x], valid))  # x == x: not NaN
        if self._host.reservoirs is not None:
            for i in sampled:
                reservoir = self._host.reservoirs[i]
                sources[i].append((list(reservoir.values), reservoir.count))
        if distributed and sampled:
            every = _distributed.gather(sources, self._group)
            sources = {i: [p for rank in every for p in rank[i]] for i in sampled}
        samples: list[list[float]] = [[] for _ in range(n)]
        for i in sampled:
            seed = seed_for(f"{self._names[i]}/combine/{self.epoch}")
            samples[i], _ = combine([p for p in sources[i] if p[1]], k, seed)
        tallies = []
        for i in range(n):
            count, nonfinite, violations = (round(flat[r * n + i]) for r in range(3))
            tallies.append(
                Tally(
                    count,
                    nonfinite=nonfinite,
                    violations=violations,
                    maximum=flat[4 * n + 1 + i],
                    minimum=-flat[5 * n + 1 + i],
                    total=flat[3 * n + i],
                    samples=samples[i],
                )
            )
        return tallies, round(flat[4 * n])

    def _check_agreement(self) -> None:
        mine = (self._digest, self.epoch, self._names)
        every = _distributed.gather(mine, self._group)
        for r, theirs in enumerate(every):
            if theirs != mine:
                raise ValueError(
                    f"TorchScheduler: rank {r} has (config digest, epoch, specs) {theirs!r} but "
                    f"rank {_distributed.rank(self._group)} has {mine!r}; every rank must build "
                    "the same schedulers and call advance_epoch together"
                )


def _deprecated_call(
    tensor: BoundTensor,
    owner: str,
    name: str | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    warnings.warn(
        f"{owner}.bound(...) is deprecated; use bound_tensor(...) for the tensor "
        "(bound is now a float property, and bound_of(name) the float of a spec)",
        DeprecationWarning,
        stacklevel=3,
    )
    return tensor(name, device=device, dtype=dtype)


class _CallableBound(float):
    """A bound as a float that may still be called as the deprecated ``bound(...)`` method.

    Everything a float does, it does (arithmetic gives plain floats); calling
    it warns and returns the tensor of ``bound_tensor``. Pickled or copied, it
    is a plain float.
    """

    __slots__ = ("_owner", "_tensor")
    _owner: str
    _tensor: BoundTensor

    def __new__(cls, value: float, tensor: BoundTensor, owner: str) -> _CallableBound:
        self = super().__new__(cls, value)
        self._tensor, self._owner = tensor, owner
        return self

    def __call__(
        self,
        name: str | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Deprecated: ``bound_tensor(name, device=device, dtype=dtype)``, with a warning."""
        return _deprecated_call(self._tensor, self._owner, name, device, dtype)

    def __reduce__(self) -> tuple[type[float], tuple[float]]:
        return float, (float(self),)


class _NoSingleBound:
    """The ``bound`` of several schedulers: callable the deprecated way, no number.

    Calling it warns and returns ``bound_tensor(...)``, as `_CallableBound`
    does; any use as a number raises the ValueError that says to use
    ``bound_of(name)``.
    """

    __slots__ = ("_message", "_owner", "_tensor")

    def __init__(self, tensor: BoundTensor, owner: str, message: str) -> None:
        self._tensor, self._owner, self._message = tensor, owner, message

    def __call__(
        self,
        name: str | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Deprecated: ``bound_tensor(name, device=device, dtype=dtype)``, with a warning."""
        return _deprecated_call(self._tensor, self._owner, name, device, dtype)

    def _refuse(self, *args: object) -> NoReturn:
        raise ValueError(self._message)

    __float__ = __int__ = __index__ = __bool__ = __format__ = __round__ = _refuse
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _refuse
    __pow__ = __rpow__ = __neg__ = __pos__ = __abs__ = _refuse
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{self._owner}.bound of several schedulers: use bound_of(name)>"


def _where(device: torch.device | str | None, dtype: torch.dtype | None) -> tuple[Any, Any]:
    dev = torch.device("cpu") if device is None else torch.device(device)
    index: int | None = dev.index  # None for a bare "cuda" (torch's stubs say int)
    if dev.type == "cuda" and index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    kind = torch.get_default_dtype() if dtype is None else dtype
    if not torch.empty(0, dtype=kind).is_floating_point():
        raise TypeError(f"TorchScheduler: dtype must be a floating dtype, got {kind}")
    return dev, kind


def _numbers(spec: ConstraintSpec) -> dict[str, float]:
    out = {}
    for field in _FIELDS:
        value = getattr(spec, field)
        if value is not None:
            out[field] = math.inf if value == "auto" else float(value)
    return out


def _usable_device(saved: _state.Reader) -> torch.device:
    """The device a saved device tally is restored on: its own, or the CPU if absent here."""
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


def _refuse_meta(t: torch.Tensor, what: str) -> None:
    """A ValueError for a tensor on the meta device, which holds no value to count."""
    if t.device.type == "meta":
        raise ValueError(
            f"{what} is a meta tensor, which holds no data: pass the real value (a model built "
            "on the meta device must be materialised first, e.g. with to_empty() and its init)"
        )


def _tally_plain(t: Tally) -> dict[str, Any]:
    return {
        "count": t.count,
        "nonfinite": t.nonfinite,
        "violations": t.violations,
        "total": _state.encode_float(t.total),
        "maximum": _state.encode_float(t.maximum),
        "minimum": _state.encode_float(t.minimum),
        "samples": list(t.samples),
    }


def _tally_read(data: Any, path: str) -> Tally:
    r = _state.Reader(data, path)
    count, nonfinite, violations = (
        r.integer("count"),
        r.integer("nonfinite"),
        r.integer("violations"),
    )
    maximum, minimum, total = r.number("maximum"), r.number("minimum"), r.number("total")
    samples = r.numbers("samples")
    try:
        return Tally(
            count,
            nonfinite=nonfinite,
            violations=violations,
            maximum=maximum,
            minimum=minimum,
            total=total,
            samples=samples,
        )
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None


def _plus(a: Tally, b: Tally) -> Tally:
    """Two parts of one epoch's tally, for its report (samples are not kept)."""
    return Tally(
        a.count + b.count,
        nonfinite=a.nonfinite + b.nonfinite,
        violations=a.violations + b.violations,
        maximum=max(a.maximum, b.maximum),
        minimum=min(a.minimum, b.minimum),
        total=a.total + b.total,
    )
