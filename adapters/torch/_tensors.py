"""The bounds and score parameters as cached 0-d tensors, updated in place at each epoch."""

from __future__ import annotations

import math
from typing import Any

import torch

from constraint_sched import ConstraintSpec, Readings

_FIELDS = ("lower", "upper", "healthy", "margin", "scale")


class BoundTensors(Readings):
    """Bounds and spec parameters as tensors a compiled loss reads: one object per device and dtype.

    Each tensor is made once per (spec or scheduler, device, dtype) and
    written in place when the bounds move (`_refresh_tensors`), so a function
    compiled with ``torch.compile`` sees each new bound without recompiling.
    A mixin of the torch adapter's scheduler, over the readings of
    `constraint_sched.Readings`.
    """

    def _init_tensors(self) -> None:
        self._bounds: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}
        self._params: dict[tuple[int, torch.device, torch.dtype], dict[str, torch.Tensor]] = {}
        # One spec object per slot for all epochs: a score passes every numeric field as a
        # cached tensor and reads only the kind and steepness, which never change, so
        # torch.compile's guards hold across epochs (see `score`).
        self._scorers = [self.spec(n) for n in self.names]
        self._slots = {n: i for i, n in enumerate(self.names)}
        self._scheduler_index = [k for k, s in enumerate(self.schedulers) for _ in s.names]

    def _slot(self, name: str | None) -> int:
        return self._slots[self.spec(name).name]

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

        Raises:
            KeyError: No spec has that name.
            TypeError: No name with several schedulers, or a dtype that is not floating.
        """
        single = name is None and len(self.schedulers) == 1
        k = 0 if single else self._scheduler_index[self._slot(name)]
        key = (k, *_where(device, dtype))
        if key not in self._bounds:
            self._bounds[key] = torch.full(
                (), self.schedulers[k].bound, dtype=key[2], device=key[1]
            )
        return self._bounds[key]

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
        """
        slot = self._slot(name)
        key = (slot, *_where(device, dtype))
        if key not in self._params:
            self._params[key] = {
                f: torch.full((), v, dtype=key[2], device=key[1])
                for f, v in _numbers(self.spec(self.names[slot])).items()
            }
        return self._params[key]

    def score(self, name: str | None, x: torch.Tensor) -> torch.Tensor:
        """The score of ``x`` under spec ``name``'s current bound (differentiable, elementwise).

        Computed by the core's `constraint_sched.ConstraintSpec.score` with
        the cached parameter tensors of ``x``'s device and dtype, so
        ``torch.compile`` does not recompile at epoch boundaries. Reduce
        per-sample scores (e.g. ``.mean()``) before `LBOObjective`.

        Raises:
            ValueError: The spec's scale is ``"auto"`` and still being discovered.
        """
        spec, params = self._scoring(name, x)
        return spec.score(x, parameters=params)

    def log_score(self, name: str | None, x: torch.Tensor) -> torch.Tensor:
        """The log of `score` (`constraint_sched.ConstraintSpec.log_score`): finite however far out.

        Raises:
            ValueError: The spec's scale is ``"auto"`` and still being discovered.
        """
        spec, params = self._scoring(name, x)
        return spec.log_score(x, parameters=params)

    def violation(self, name: str | None, x: torch.Tensor) -> torch.Tensor:
        """How far ``x`` lies beyond spec ``name``'s current bounds (0 inside), elementwise."""
        slot = self._slot(name)
        params = self.parameters(self.names[slot], device=x.device, dtype=x.dtype)
        return self._scorers[slot].violation(x, parameters=params)

    def _scoring(self, name: str | None, x: torch.Tensor) -> tuple[ConstraintSpec, Any]:
        slot = self._slot(name)
        if self._auto[slot]:  # a cached flag: torch.compile guards on it, not on the spec
            self.spec(self.names[slot]).score(0.0)  # raises the core's error, naming the spec
        params = self.parameters(self.names[slot], device=x.device, dtype=x.dtype)
        return self._scorers[slot], params

    @torch.no_grad()
    def _refresh_tensors(self) -> None:
        self._auto = [self.spec(n).scale == "auto" for n in self.names]
        for (k, _, _), t in self._bounds.items():
            t.fill_(self.schedulers[k].bound)
        for (slot, _, _), params in self._params.items():
            values = _numbers(self.spec(self.names[slot]))
            for field, t in params.items():
                t.fill_(values[field])


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
    values = {f: getattr(spec, f) for f in _FIELDS if getattr(spec, f) is not None}
    return {f: math.inf if v == "auto" else float(v) for f, v in values.items()}
