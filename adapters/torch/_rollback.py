"""RollbackGuard: undo an optimizer step from snapshot buffers allocated once, not per step."""

from __future__ import annotations

import itertools
from collections.abc import MutableMapping, Sequence
from typing import Any, Final

import numpy as np
import torch

__all__ = ["RollbackGuard"]

# Optimizer state values that are remembered by value: they cannot change in place.
_IMMUTABLE: Final = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device)
_MISSING: Final[Any] = object()
_HOW_TO_FIX: Final = "or call restore() after reading the flag"

# Where a tensor or value came from, for error messages:
# ("parameter", name) | ("buffer", name) | ("param", n, param) | ("state", n, param, key),
# where n is the optimizer's position.
_Origin = tuple[Any, ...]
# A model slot: the module's `_parameters` or `_buffers` dict, the name in it, the tensor.
_Slot = tuple[MutableMapping[str, Any], str, torch.Tensor]
# One optimizer state entry: the key in `optimizer.state`, its dict, the (key, value) pairs.
_Entry = tuple[torch.Tensor, MutableMapping[Any, Any], tuple[tuple[Any, Any], ...]]
# One optimizer: the optimizer, its number of state entries, the entries.
_OptRecord = tuple[torch.optim.Optimizer, int, list[_Entry]]
_Signature = tuple[tuple[torch.dtype, torch.device, torch.Size, tuple[int, ...]], ...]

# restore_if selects: the device, live and snapshot tensors seen as integers, a 0-d buffer.
_Select = tuple[torch.device, list[torch.Tensor], list[torch.Tensor], torch.Tensor]

_UNCHANGED, _VALUES_CHANGED, _STRUCTURE_CHANGED = 0, 1, 2
# The integer type of each element size: selecting on these bits is exact for any value.
_BITS: Final = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
# Above this many elements, one torch.where per tensor moves less memory than 3 foreach ops.
_SELECT_MAX_NUMEL: Final = 1 << 20


class RollbackGuard:
    """Snapshot a model and its optimizers before a step, and undo the step if it was bad.

    `snapshot` copies every parameter, every buffer (unless ``buffers=False``)
    and every tensor in each optimizer's ``state`` into buffers allocated once
    and reused while the set, shapes, dtypes and devices of those tensors stay
    the same; non-tensor state values (Python numbers) are remembered by value.
    Parameters that an optimizer holds but ``model`` does not are snapshotted
    too. Optimizer ``param_groups`` (learning rates and other settings) are
    not part of the snapshot: a step does not change them.

    `restore` copies the snapshot back in place, so parameters and state
    tensors keep their identity, and deletes optimizer state created since the
    snapshot (a fresh optimizer's first step creates it lazily), so the
    optimizer is exactly as it was. `restore_if` does the same only where a
    0-d bool tensor is True, without synchronising with the host (see there
    for the cases where it cannot), or when a host bool is True.

    Restoring is bit-exact: training on after a restore gives the same bits as
    a run in which the undone step never happened.

    Args:
        model: The module whose parameters and buffers are snapshotted.
        optimizer: An optimizer, a sequence of them, or None (model only).
        buffers: Whether to snapshot the model's buffers too (BatchNorm running
            statistics and ``num_batches_tracked``).

    Raises:
        TypeError: If ``model`` is not a ``torch.nn.Module``, ``optimizer`` is
            not an optimizer, a sequence of optimizers or None, or ``buffers``
            is not a bool.
        ValueError: If ``optimizer`` names the same optimizer twice.

    Examples:
        >>> import torch
        >>> from constraint_sched.adapters.torch import RollbackGuard
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = torch.optim.Adam(model.parameters(), lr=0.1)
        >>> guard = RollbackGuard(model, opt)
        >>> guard.snapshot()
        >>> before = model.weight.detach().clone()
        >>> model(torch.randn(4, 3)).sum().backward()
        >>> opt.step()
        >>> bad = torch.tensor(True)  # e.g. ~torch.isfinite(loss), computed on the device
        >>> guard.restore_if(bad)  # lazily created Adam state: reads the flag once
        >>> torch.equal(model.weight, before), len(opt.state)
        (True, 0)
        >>> guard
        RollbackGuard(tensors=2, bytes=16, optimizers=1, buffers=True)
    """

    # Whether restore_if selects CPU tensors as integers too. CPU kernels run one tensor at a
    # time anyway, so one torch.where each is cheaper there; the tests turn this on to check
    # the accelerators' path on the CPU.
    _select_on_cpu: bool = False

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
        *,
        buffers: bool = True,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(buffers, bool):
            raise TypeError(f"buffers must be a bool, got {buffers!r}")
        self._model = model
        self._optimizers = _optimizers(optimizer)
        self._buffers = buffers
        self._has_snapshot = False
        # What the last snapshot saw: where each tensor lives, and the optimizers' state.
        self._slots: list[_Slot] = []
        self._records: list[_OptRecord] = []
        self._origins: list[_Origin] = []
        # The tensors, their data pointers (to notice a swapped `.data`) and their snapshots.
        self._signature: _Signature | None = None
        self._live: list[torch.Tensor] = []
        self._pointers: list[int] = []
        self._snaps: list[torch.Tensor] = []
        # The plan for copying and selecting, rebuilt only when the tensors change.
        self._copies: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
        self._selects: list[_Select] = []
        self._wheres: list[tuple[torch.device, torch.Tensor, torch.Tensor]] = []
        self._devices: set[torch.device] = set()
        # Internal counters, read by the tests: how often the snapshot buffers were
        # (re)allocated, and how often restore_if had to read its flag on the host.
        self._allocations = 0
        self._host_reads = 0

    @property
    def has_snapshot(self) -> bool:
        """Whether `snapshot` has been called, so that there is something to restore."""
        return self._has_snapshot

    def snapshot(self) -> None:
        """Copy the current parameters, buffers and optimizer state into the snapshot buffers.

        The buffers are allocated at the first call and again only when the
        tensors to copy change in number, shape, dtype, stride or device (for
        example when an optimizer creates its state at its first step); in
        between, a snapshot allocates nothing and costs one ``_foreach_copy_``
        per (device, element size) group, copying bits.

        Raises:
            TypeError: If an optimizer's state holds a value that is neither a
                tensor nor an immutable Python value (a list, say), which
                cannot be restored without a deep copy.
        """
        slots, records, live, origins = self._collect()
        if self._signature is None or not self._same_tensors(live):
            signature: _Signature = tuple((t.dtype, t.device, t.shape, t.stride()) for t in live)
            if signature != self._signature:
                self._allocate(live)
                self._signature = signature
            self._plan(live)
        self._slots, self._records, self._origins = slots, records, origins
        with torch.no_grad():
            for live_group, snap_group in self._copies:
                torch._foreach_copy_(snap_group, live_group)
        self._has_snapshot = True

    def restore(self) -> None:
        """Put every snapshotted tensor and optimizer state entry back as it was.

        Values are copied in place, so the parameter objects an optimizer holds
        stay the same objects; optimizer state created since the snapshot is
        deleted, and state that was replaced is put back. The snapshot stays
        valid: restoring twice restores the same values.

        Raises:
            RuntimeError: If `snapshot` has not been called.
        """
        self._require_snapshot("restore")
        if [t.data_ptr() for t in self._live] != self._pointers:
            self._plan(self._live)  # a tensor's `.data` was swapped: copy into its new memory
        for mapping, name, tensor in self._slots:
            if mapping.get(name) is not tensor:
                mapping[name] = tensor
        for optimizer, _, entries in self._records:
            state = optimizer.state
            kept = {id(key) for key, _, _ in entries}
            for key in [key for key in state if id(key) not in kept]:
                del state[key]
            for key, entry, items in entries:
                if state.get(key) is not entry:
                    state[key] = entry
                entry.clear()
                entry.update(items)
        with torch.no_grad():
            for live_group, snap_group in self._copies:
                torch._foreach_copy_(live_group, snap_group)

    def restore_if(self, flag: torch.Tensor | bool | np.bool_ | np.ndarray[Any, Any]) -> None:
        """Restore the snapshot where ``flag`` is True, leave everything as it is where False.

        A host flag (a Python or numpy bool, or a one-element numpy bool
        array: the value is already known) simply restores, as `restore`
        does, or does nothing. The rest of this
        describes the flag as a tensor, decided on the device.

        In the steady state (the same tensors and optimizer state entries as at
        the snapshot) this reads nothing on the host and branches on nothing.
        Each tensor is selected bit by bit, never blended as floats, so NaN
        and inf left by a bad step are replaced exactly and a False flag
        leaves every bit as it was. On an accelerator, tensors of up to
        ``2**20`` elements are selected together, with four operations per
        (device, element size) group (the three ``_foreach`` ones launch a
        kernel per few dozen tensors): seen as integers of their width,
        ``t = (t - snap) * (1 - flag) + snap`` in wrapping integer arithmetic
        is ``snap`` or ``t`` exactly. Larger tensors, tensors that overlap
        others in memory, and tensors on the CPU take one
        ``torch.where(flag, snap, t, out=t)`` each, on their bits too.

        Where it cannot select on the device, it says so or reads the flag
        openly:

        - The structure changed since the snapshot, typically at the first
          step of a fresh optimizer, which creates its state lazily: entries
          cannot be deleted conditionally, so this call reads the flag once (a
          host synchronisation when it lives on an accelerator) and restores
          eagerly or does nothing. The next `snapshot` takes the new state in.
        - ``flag`` lives on the CPU and tensors on an accelerator: the flag's
          value is already on the host, so it is read (no device
          synchronisation) and the restore is eager.
        - State lives on the host while ``flag`` lives on an accelerator: a
          CPU tensor (Adam's ``step`` unless ``capturable=True`` or
          ``fused=True``) or a Python value in optimizer state that changed
          since the snapshot. Rather than synchronise silently, this raises
          ``ValueError`` and changes nothing. On the CPU it just works.

        Args:
            flag: A bool tensor with one element, on any device, or a Python
                or numpy bool (a one-element numpy bool array too).

        Raises:
            TypeError: If ``flag`` is neither a bool tensor nor a bool (an int,
                a float, a float tensor...).
            ValueError: If ``flag`` has more than one element, or state lives
                on the host while ``flag`` lives on an accelerator (see above).
            RuntimeError: If `snapshot` has not been called.
        """
        if isinstance(flag, np.ndarray) and flag.dtype == np.bool_ and flag.size == 1:
            flag = flag.reshape(())[()]  # a numpy bool
        if isinstance(flag, (bool, np.bool_)):
            self._require_snapshot("restore_if")
            if flag:
                self.restore()
            return
        flag = _check_flag(flag)
        self._require_snapshot("restore_if")
        status, origin = self._compare()
        on_host = flag.device.type == "cpu"
        if status == _VALUES_CHANGED and not on_host:
            value = self._optimizers[origin[1]].state[origin[2]][origin[3]]
            raise ValueError(
                f"{_describe(origin, self._optimizers)} is a Python value "
                f"({type(value).__name__}) that changed since the snapshot, but flag is on "
                f"{flag.device}; restore_if cannot restore it without reading the flag: keep "
                f"that state in tensors on the flag's device, {_HOW_TO_FIX}"
            )
        if status != _UNCHANGED or (on_host and any(d.type != "cpu" for d in self._devices)):
            # The one host read: changed structure, Python values, or a flag already on the host.
            self._host_reads += 1
            if flag.item():
                self.restore()
            return
        flags: dict[torch.device, torch.Tensor] = {}
        for device in self._devices:
            if device == flag.device:
                flags[device] = flag
            elif device.type == "cpu":
                index = next(i for i, t in enumerate(self._live) if t.device.type == "cpu")
                origin = self._origins[index]
                fix = "use capturable=True or fused=True, " if origin[0] == "state" else ""
                raise ValueError(
                    f"{_describe(origin, self._optimizers)} is a CPU tensor but flag is on "
                    f"{flag.device}; {fix}{_HOW_TO_FIX}"
                )
            else:
                flags[device] = flag.to(device, non_blocking=True)
        with torch.no_grad():
            for device, lives, snaps, keep in self._selects:
                torch.logical_not(flags[device], out=keep)
                torch._foreach_sub_(lives, snaps)
                torch._foreach_mul_(lives, keep)
                torch._foreach_add_(lives, snaps)
            for device, live, snap in self._wheres:
                torch.where(flags[device], snap, live, out=live)

    def __repr__(self) -> str:
        """Count the tensors and bytes the snapshot holds."""
        n_bytes = sum(t.numel() * t.element_size() for t in self._snaps)
        held = f"tensors={len(self._snaps)}, bytes={n_bytes}" if self._has_snapshot else "empty"
        return (
            f"{type(self).__name__}({held}, optimizers={len(self._optimizers)}, "
            f"buffers={self._buffers})"
        )

    def _require_snapshot(self, method: str) -> None:
        if not self._has_snapshot:
            raise RuntimeError(
                f"RollbackGuard.{method}() called before snapshot(): there is nothing to "
                "restore; call snapshot() before the step that may be undone"
            )

    def _collect(
        self,
    ) -> tuple[list[_Slot], list[_OptRecord], list[torch.Tensor], list[_Origin]]:
        """List the tensors to snapshot now, where each one lives, and the optimizers' state."""
        slots: list[_Slot] = []
        live: list[torch.Tensor] = []
        origins: list[_Origin] = []
        seen: set[int] = set()

        def add(tensor: torch.Tensor, origin: _Origin) -> None:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                live.append(tensor)
                origins.append(origin)

        for prefix, module in self._model.named_modules(remove_duplicate=False):
            kinds = (("parameter", module._parameters), ("buffer", module._buffers))
            for kind, mapping in kinds if self._buffers else kinds[:1]:
                for name, tensor in mapping.items():
                    if tensor is not None and id(tensor) not in seen:
                        slots.append((mapping, name, tensor))
                        add(tensor, (kind, f"{prefix}.{name}" if prefix else name))
        records: list[_OptRecord] = []
        for n, optimizer in enumerate(self._optimizers):
            for group in optimizer.param_groups:
                for param in group["params"]:
                    add(param, ("param", n, param))
            entries: list[_Entry] = []
            for key, entry in optimizer.state.items():
                if not isinstance(entry, MutableMapping):
                    raise TypeError(
                        f"optimizer {n} ({type(optimizer).__name__}): state of "
                        f"{_param_name(optimizer, key)} must be a dict, got "
                        f"{type(entry).__name__}"
                    )
                items = tuple(entry.items())
                for name, value in items:
                    if isinstance(value, torch.Tensor):
                        add(value, ("state", n, key, name))
                    elif not _immutable(value):
                        origin = ("state", n, key, name)
                        raise TypeError(
                            f"{_describe(origin, self._optimizers)} is a "
                            f"{type(value).__name__}; RollbackGuard restores tensors and "
                            "immutable Python values in optimizer state, not containers"
                        )
                entries.append((key, entry, items))
            records.append((optimizer, len(optimizer.state), entries))
        return slots, records, live, origins

    def _allocate(self, live: list[torch.Tensor]) -> None:
        """Allocate one snapshot buffer per tensor, with the tensor's strides."""
        self._snaps = [torch.empty_like(t, memory_format=torch.preserve_format) for t in live]
        self._allocations += 1

    def _same_tensors(self, live: list[torch.Tensor]) -> bool:
        """Whether ``live`` holds the planned tensors, over the same memory."""
        planned = self._live
        return (
            len(live) == len(planned)
            and all(a is b for a, b in zip(live, planned, strict=True))
            and [t.data_ptr() for t in live] == self._pointers
        )

    def _plan(self, live: list[torch.Tensor]) -> None:
        """Group the tensors for `_foreach_copy_` and choose how `restore_if` selects each.

        Every copy and select works on the tensors' bits, seen as integers of their
        width: a float copy may go through another type (half NaN payloads do not
        survive CUDA's ``_foreach_copy_``), an integer copy cannot.
        """
        self._live = live
        self._pointers = [t.data_ptr() for t in live]
        self._devices = {t.device for t in live}
        overlapping = _overlapping(live)
        copies: dict[tuple[torch.device, torch.dtype], tuple[list[Any], list[Any]]] = {}
        selects: dict[tuple[torch.device, torch.dtype], tuple[list[Any], list[Any]]] = {}
        self._wheres = []
        for i, (t, snap) in enumerate(zip(live, self._snaps, strict=True)):
            bits = _BITS.get(t.element_size())
            t_bits = t.detach().view(bits) if bits else t.detach()
            snap_bits = snap.view(bits) if bits else snap
            group = copies.setdefault((t.device, t_bits.dtype), ([], []))
            group[0].append(t_bits)
            group[1].append(snap_bits)
            on_cpu = t.device.type == "cpu" and not self._select_on_cpu
            if bits is None or on_cpu or t.numel() > _SELECT_MAX_NUMEL or i in overlapping:
                self._wheres.append((t.device, t_bits, snap_bits))
            else:
                group = selects.setdefault((t.device, t_bits.dtype), ([], []))
                group[0].append(t_bits)
                group[1].append(snap_bits)
        self._copies = list(copies.values())
        self._selects = [
            (device, lives, snaps, torch.empty((), dtype=dtype, device=device))
            for (device, dtype), (lives, snaps) in selects.items()
        ]

    def _compare(self) -> tuple[int, _Origin]:
        """Compare the live structure with the snapshot's, without reading any tensor.

        Returns:
            ``(_UNCHANGED, ())``; ``(_VALUES_CHANGED, origin)`` when only Python
            values in optimizer state differ (the first such value's origin);
            ``(_STRUCTURE_CHANGED, ())`` when tensors were replaced (or their
            ``.data``), or state entries created or deleted.
        """
        if [t.data_ptr() for t in self._live] != self._pointers:
            return _STRUCTURE_CHANGED, ()
        for mapping, name, tensor in self._slots:
            if mapping.get(name) is not tensor:
                return _STRUCTURE_CHANGED, ()
        changed: _Origin = ()
        for n, (optimizer, size, entries) in enumerate(self._records):
            state = optimizer.state
            if len(state) != size:
                return _STRUCTURE_CHANGED, ()
            for key, entry, items in entries:
                if state.get(key) is not entry or len(entry) != len(items):
                    return _STRUCTURE_CHANGED, ()
                for name, value in items:
                    now = entry.get(name, _MISSING)
                    if now is value:
                        continue
                    if isinstance(now, torch.Tensor) or isinstance(value, torch.Tensor):
                        return _STRUCTURE_CHANGED, ()
                    if now is _MISSING:
                        return _STRUCTURE_CHANGED, ()
                    if not changed and not _same_value(now, value):
                        changed = ("state", n, key, name)
        return (_VALUES_CHANGED, changed) if changed else (_UNCHANGED, ())


def _optimizers(optimizer: object) -> tuple[torch.optim.Optimizer, ...]:
    """Validate the ``optimizer`` argument and return it as a tuple."""
    expected = "a torch.optim.Optimizer, a sequence of them, or None"
    if optimizer is None:
        return ()
    if isinstance(optimizer, torch.optim.Optimizer):
        return (optimizer,)
    if not isinstance(optimizer, Sequence) or isinstance(optimizer, (str, bytes)):
        raise TypeError(f"optimizer must be {expected}, got {type(optimizer).__name__}")
    result = tuple(optimizer)
    for i, item in enumerate(result):
        if not isinstance(item, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be {expected}, got {type(item).__name__} at index {i}")
        for j in range(i):
            if result[j] is item:
                raise ValueError(f"optimizer holds the same optimizer twice, at index {j} and {i}")
    return result


def _check_flag(flag: object) -> torch.Tensor:
    """Validate ``flag`` and return it as a 0-d view, reading no value."""
    if not isinstance(flag, torch.Tensor):
        raise TypeError(
            f"flag must be a torch.bool tensor or a bool, got {type(flag).__name__} {flag!r}"
        )
    if flag.dtype != torch.bool:
        raise TypeError(f"flag must be a torch.bool tensor, got dtype {flag.dtype}")
    if flag.numel() != 1:
        raise ValueError(
            f"flag must be a bool tensor with one element, got shape {tuple(flag.shape)}"
        )
    return flag.reshape(())


def _overlapping(tensors: Sequence[torch.Tensor]) -> set[int]:
    """Positions of tensors whose memory overlaps a tensor listed before them in memory order.

    No two tensors outside this set overlap, so selecting those in place, one
    integer operation at a time, is elementwise.
    """
    spans = []
    for i, t in enumerate(tensors):
        if t.numel() > 0:
            extent = 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride(), strict=True))
            start = t.data_ptr()
            spans.append((str(t.device), start, start + extent * t.element_size(), i))
    spans.sort()
    overlapping: set[int] = set()
    device, end = "", 0
    for span_device, start, span_end, i in spans:
        if span_device == device and start < end:
            overlapping.add(i)
        if span_device != device or span_end > end:
            device, end = span_device, span_end
    return overlapping


def _immutable(value: object) -> bool:
    if isinstance(value, tuple):
        return all(_immutable(item) for item in value)
    return isinstance(value, _IMMUTABLE)


def _same_value(a: object, b: object) -> bool:
    """Python-value equality that treats NaN as equal to NaN and never raises."""
    try:
        return bool(a == b) or (a != a and b != b)
    except Exception:
        return False


def _param_name(optimizer: torch.optim.Optimizer, key: object) -> str:
    """Name a parameter as ``optimizer.state_dict()`` numbers it."""
    params = itertools.chain.from_iterable(g["params"] for g in optimizer.param_groups)
    for i, param in enumerate(params):
        if param is key:
            return f"param {i}"
    return "a tensor not in its param_groups"


def _describe(origin: _Origin, optimizers: Sequence[torch.optim.Optimizer]) -> str:
    """Say in words where a snapshotted tensor or value lives."""
    kind = origin[0]
    if kind in ("parameter", "buffer"):
        return f"{kind} {origin[1]!r}"
    n, key = origin[1], origin[2]
    optimizer = optimizers[n]
    where = f"optimizer {n} ({type(optimizer).__name__}): "
    if kind == "param":
        return where + _param_name(optimizer, key)
    return where + f"state[{origin[3]!r}] of {_param_name(optimizer, key)}"
