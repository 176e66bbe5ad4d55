"""`TorchConstraintTerm`: the core's `ConstraintTerm` on tensors, with no host sync per step."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import array_api_compat
import torch

from constraint_sched import (
    ConstraintTerm,
    Event,
    Phase,
    Relative,
    TermReadings,
)
from constraint_sched import functional as F
from constraint_sched.adapters.torch import _distributed
from constraint_sched.adapters.torch._scheduler import Accumulate, TorchScheduler

_OWNER = "TorchConstraintTerm"

# The array API has no special functions: the multiplier's normal quantile is torch's.
F.register_ndtri(array_api_compat.array_namespace(torch.empty(0)).__name__, torch.special.ndtri)


class TorchConstraintTerm(TermReadings):
    """The core's `constraint_sched.ConstraintTerm` on tensors, with no host sync per step.

    The same discovery, hold, squeeze and `constraint_sched.ChanceMultiplier`
    as the core's term (which it holds: `core`), with the multiplier's
    numbers kept as 0-d tensors on the value's device and stepped by
    `constraint_sched.functional.multiplier_step`: a call reads nothing on the
    host, so a CUDA training step does not wait for the GPU; `epoch_end`
    synchronises once (through `TorchScheduler.advance_epoch`). On the CPU
    the multiplier runs on Python floats (reading a CPU tensor costs nothing)
    unless ``accumulate="device"``. The returned term is ``weight * mean(kl)``
    with the weight detached, so its gradient is the weight times the value's.

    Takes what the core's term takes, and tensors: per-example values of
    shape ``(batch,)`` (e.g. ``kl.sum(dim=-1)`` of a per-dimension KL), or a
    0-d batch mean with ``reduction="mean"``, and the step's main loss as
    ``main=`` (a 0-d tensor, read detached). Python and numpy numbers are
    accepted too. Under ``torch.distributed`` every rank applies the same
    weight at every step: the multiplier steps on the value and main loss
    averaged across ranks (one all-reduce per step, no host sync on an
    accelerator), and the bound is agreed at `epoch_end`.

    Args:
        name: The value's name.
        target: The bound to squeeze to: a number, or a `constraint_sched.Relative`.
        accumulate: ``"auto"`` (the device path for accelerator tensors, host
            floats for CPU ones), ``"device"`` (0-d tensors and device books
            on every device, the CPU included) or ``"host"``; see `TorchScheduler`.
        process_group: The ``torch.distributed`` group whose ranks agree
            (None: the default group, when one is initialised).
        **options: The core term's other arguments, as for
            `constraint_sched.ConstraintTerm`: ``side``, ``squeeze_epochs``,
            ``alpha``, ``settings``, ``discovery``, ``hold``, ``backoff``,
            ``reduction``, ``echo``.

    Examples:
        >>> import torch
        >>> term = TorchConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
        >>> mu = torch.zeros(32, 4, requires_grad=True)
        >>> recon = (mu - 1.0).pow(2).mean()
        >>> kl = 0.5 * (mu + 3.0).pow(2).sum(dim=-1)  # per example: shape (32,)
        >>> loss = recon + term(kl, main=recon)
        >>> loss.backward()
        >>> term.weight, tuple(mu.grad.shape)  # discovery: the KL weighs nothing yet
        (0.0, (32, 4))
    """

    def __init__(
        self,
        name: str = "kl",
        *,
        target: float | Relative,
        accumulate: Accumulate = "auto",
        process_group: Any = None,
        **options: Any,
    ) -> None:
        self.core = ConstraintTerm(name, target=target, **options)
        """The core term: the scheduler, the multiplier on the host, the epoch's lines."""
        self._torch = TorchScheduler(
            self.core.scheduler, accumulate=accumulate, process_group=process_group
        )
        self._accumulate, self._group = accumulate, process_group
        self._xp = array_api_compat.array_namespace(torch.empty(0))
        self._state: F.ChanceState[torch.Tensor] | None = None
        self._weight = self.core.weight
        self._weight_tensor: torch.Tensor | None = None

    @property
    def torch_scheduler(self) -> TorchScheduler:
        """The adapter around `scheduler` that observes on the device."""
        return self._torch

    @property
    def weight(self) -> float:
        """The weight the last call applied (read from its device: a host sync there)."""
        return self._weight if self._weight_tensor is None else float(self._weight_tensor)

    @property
    def weight_tensor(self) -> torch.Tensor | None:
        """The weight the last call applied as a 0-d tensor on its device, without a sync.

        None before the first call, and while the values are on the host path
        (where the weight is a number: `weight`).
        """
        return self._weight_tensor

    def __call__(self, value: Any, *, main: Any = F.REQUIRED) -> torch.Tensor:
        """This step's term, ``weight * mean(value)`` as a tensor (negated for a floor).

        A non-finite value or main loss is passed to the scheduler (which
        counts it) and leaves the weight as it was.

        Args:
            value: Per-example values, shape ``(batch,)``, or their mean with
                ``reduction="mean"``: a tensor (any device, with grad) or a number.
            main: The step's main loss: a 0-d tensor (read detached) or a number,
                or per-example losses (their mean is taken).

        Returns:
            The term to add to the loss, on the value's device.

        Raises:
            ValueError: A value of the wrong shape, or a complex or meta tensor.
            TypeError: No ``main``, or one that is not a real number or tensor.
        """
        x = self._reduce(value)
        detached, m = x.detach(), self._main(main, x.device)
        agreed, m = _distributed.mean(self._group, detached, m)
        sign = self.core.multiplier.sign
        if self._accumulate == "device" or x.device.type != "cpu":
            st = self._state_for(x)
            weight = F.weight(self._xp, st).to(x.dtype)
            self._weight_tensor = weight
            self._torch.observe(detached)
            value_, main_ = agreed.to(st.log_weight.dtype), m.to(st.log_weight.dtype)
            plan = self.core.plan()
            self._state = F.multiplier_step(self._xp, st, value_, main_, plan, self.core.settings)
            term: torch.Tensor = sign * weight * x
            return term
        self._to_host()
        observe = self._torch.observe
        self._weight = self.core.step(float(agreed), float(m), lambda _: observe(detached))
        return sign * self._weight * x

    def _main(self, main: Any, device: torch.device) -> torch.Tensor:
        """The step's main loss as a detached 0-d tensor on ``device``."""
        owner = f"{_OWNER} {self.core.name!r}"
        if not isinstance(main, torch.Tensor):
            return torch.as_tensor(F.main_loss(main, _OWNER), dtype=torch.float64)
        if main.device.type == "meta":
            raise TypeError(f"{owner}: main must be a real floating tensor with values, not meta")
        loss: torch.Tensor = F.array_main(main.detach(), owner)
        return loss.to(device)

    def _reduce(self, value: Any) -> torch.Tensor:
        """The step's value per example, as a tensor (the batch mean of per-example values)."""
        if not isinstance(value, torch.Tensor):
            number = F.per_example_mean(value, self.core.reduction, _OWNER)
            return torch.as_tensor(number, dtype=torch.get_default_dtype())
        owner = f"{_OWNER} {self.core.name!r}"
        if value.device.type == "meta":
            raise ValueError(f"{owner}: got a meta tensor, which holds no values")
        reduced: torch.Tensor = F.array_value(value, self.core.reduction, owner)
        return reduced

    def _state_for(self, x: torch.Tensor) -> F.ChanceState[torch.Tensor]:
        """The multiplier's numbers as 0-d tensors on ``x``'s device (moved there if need be)."""
        st = self._state
        if st is not None and st.log_weight.device == x.device:
            return st
        dtype = torch.float64 if x.device.type == "cpu" else torch.float32
        numbers = self.core.multiplier.state if st is None else st
        self._state = F.ChanceState(
            *(torch.as_tensor(v, dtype=dtype).to(x.device) for v in numbers)
        )
        return self._state

    def _to_host(self) -> None:
        """Move the multiplier's numbers from the device tensors to the core's multiplier."""
        if self._state is not None:
            self._mirror()
            self._weight = float(self._weight_tensor) if self._weight_tensor is not None else 0.0
            self._state, self._weight_tensor = None, None

    def _mirror(self) -> None:
        """Copy the device numbers into the core's multiplier (a host sync)."""
        if self._state is not None:
            self.core.multiplier.set_state(self._state)

    def epoch_end(self) -> list[Event]:
        """End the epoch: one host sync, the bound moves, the budget resets, a line printed.

        Returns:
            The scheduler's events (also printed, with ``echo``).

        Raises:
            ValueError: The main loss's level at the end of discovery is not
                positive (the weight unit cannot be set).
        """
        events = self.core.epoch_end(advance=self._advance)
        if self._state is not None:
            self._state = self._state._replace(overs=torch.zeros_like(self._state.overs))
        return events

    def _advance(self, *, log: bool) -> list[Event]:
        events = self._torch.advance_epoch(log=log)
        self._mirror()
        core = self.core
        if core.phase is not Phase.DISCOVERY and core.multiplier.state.seen:
            # The device set (or is about to set) the unit unchecked: check it once, here.
            owner = f"{_OWNER} {core.name!r}"
            core.multiplier.check_unit(math.isfinite(core.aim), math.nan, owner)
        return events

    def state_dict(self) -> dict[str, Any]:
        """The term's state, as the core's but for the scheduler's part: plain numbers (a sync)."""
        self._mirror()
        return {
            **self.core.state_dict(),
            "scheduler": self._torch.state_dict(),
            "weight": self.weight,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict` (its scheduler part: TorchScheduler's); on an error, no change.

        Raises:
            TypeError: Not a mapping.
            KeyError: A missing entry, named.
            ValueError: An invalid entry, named.
        """
        self.core.load_state_dict(state, scheduler=self._torch.load_state_dict)
        self._weight = self.core.weight
        self._state, self._weight_tensor = None, None  # the numbers move to the next value's device

    def __repr__(self) -> str:
        return repr(self.core).replace("ConstraintTerm", _OWNER, 1)
