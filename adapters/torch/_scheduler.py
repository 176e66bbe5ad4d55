"""TorchScheduler: a core scheduler fed from tensors without host synchronisation."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal, SupportsFloat

import array_api_compat
import numpy as np
import torch

from constraint_sched import (
    ConstraintScheduler,
    EpochFeed,
    Event,
    Readings,
    SchedulerCollection,
    Tally,
)
from constraint_sched.adapters.torch import _distributed
from constraint_sched.adapters.torch._bound import bound_reading
from constraint_sched.adapters.torch._tensors import BoundTensors
from constraint_sched.state import FORMAT_VERSION, Reader, check_header

Accumulate = Literal["auto", "device", "host"]
"""Where observations are counted: ``"auto"`` (accelerator tensors on their device,
CPU tensors and numbers on the host), ``"device"`` (every tensor on its own device)
or ``"host"`` (every value read to the host)."""

Observation = SupportsFloat | torch.Tensor
"""An observed value: a tensor on any device (with or without grad) or a number."""

_XP = array_api_compat.array_namespace(torch.empty(0))
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
        if accumulate not in ("auto", "device", "host"):
            raise ValueError(
                f"TorchScheduler: accumulate must be 'auto', 'device' or 'host', got {accumulate!r}"
            )
        f32, f64 = torch.float32, torch.float64  # MPS has no float64
        self._feed = EpochFeed(scheduler, owner="TorchScheduler", xp=_XP, also=" or a tensor",
                               dtype=lambda d: f32 if d.type == "mps" else f64)  # fmt: skip
        self._accumulate: Accumulate = accumulate
        self._group = process_group
        self._init_tensors()
        self._refresh_tensors()

    # -- reading (the rest is constraint_sched.Readings) -----------------------------

    @property
    def core(self) -> ConstraintScheduler | SchedulerCollection:
        """The wrapped core scheduler or collection."""
        return self._feed.core

    @property
    def schedulers(self) -> tuple[ConstraintScheduler, ...]:
        """The core schedulers, in order (one when a single scheduler was given)."""
        return self._feed.schedulers

    @property
    def names(self) -> tuple[str, ...]:
        """Every spec name, in order."""
        return self._feed.names

    @property
    def last_tallies(self) -> dict[str, Tally]:
        """The last completed epoch's statistics per spec, across every rank."""
        return dict(self._feed.last)

    @property
    def last_means(self) -> dict[str, float]:
        """The last completed epoch's mean of the valid observations per spec (NaN if none)."""
        return {n: t.mean for n, t in self._feed.last.items()}

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
        value: Observation = EpochFeed.MISSING,
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
        items = self._feed.items(name_or_value, value)
        flag = self._acceptance(accepted)
        if flag is False:
            return
        agreement = _distributed.agreement(self._group) if self._feed.windows else None
        with torch.no_grad():  # the books take values, never their graphs
            if self._feed.observe(items, self._route, flag, agreement):
                self._refresh_tensors()

    def _route(self, name: str, v: Any, where: torch.device | None) -> tuple[Any, Any]:
        """Where ``v`` is counted: on its device (or ``accepted``'s), or on the host."""
        if not isinstance(v, torch.Tensor):
            return None, v
        if v.numel() != 1 or v.is_complex() or v.dtype == torch.bool or v.is_meta:
            _check_tensor(v, f"TorchScheduler.observe: the value of {name!r}")
        mode, cpu = self._accumulate, v.device.type == "cpu"
        if mode == "device" or (not cpu and (mode == "auto" or where is not None)):
            return (v.device, v) if where is None else (where, v.to(where))
        return None, float(v.item())

    def _acceptance(self, accepted: Any) -> torch.Tensor | Literal[False] | None:
        """A device flag deciding acceptance there; None: counted; False: not counted."""
        if accepted is None:
            return None
        if isinstance(accepted, torch.Tensor):
            _check_tensor(accepted, "TorchScheduler.observe: accepted", element=False)
            if accepted.dtype != torch.bool or accepted.numel() != 1:
                raise TypeError(
                    "TorchScheduler.observe: accepted must be a bool or a one-element bool "
                    f"tensor, got a {accepted.dtype} tensor of shape {tuple(accepted.shape)}"
                )
            if self._on_device(accepted):
                return accepted.reshape(())
            return None if accepted.item() else False
        if isinstance(accepted, (bool, np.bool_)):
            return None if accepted else False
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
                self._feed.reject(count.detach(), count.device)
                return
            count = int(count.item())
        self._feed.reject(count)

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
        agreement = _distributed.agreement(self._group)
        events = self._feed.end_epoch(agreement, tighten=tighten, log=log)
        self._refresh_tensors()
        return events

    def add_callback(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` for every later event of every scheduler, on every rank."""
        for scheduler in self.schedulers:
            scheduler.add_callback(callback)

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
        return {"format": _FORMAT, "version": FORMAT_VERSION, **self._feed.state()}

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
        check_header(state_dict, _FORMAT, "state_dict")
        self._feed.load(Reader(state_dict, "state_dict"), _usable_device)
        self._refresh_tensors()

    def _on_device(self, t: torch.Tensor) -> bool:
        mode = self._accumulate
        return mode == "device" or (mode == "auto" and t.device.type != "cpu")


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
