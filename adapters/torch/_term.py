"""`TorchConstraintTerm`: the core's `ConstraintTerm` for tensors, with no host sync per step."""

from __future__ import annotations

import math
from typing import Any

import torch

from constraint_sched import ConstraintTerm, Event, Phase
from constraint_sched._chance import (
    ChanceState,
    Ops,
    chance_step,
    discovery_step,
)
from constraint_sched._term import _REQUIRED, main_loss, per_example_mean
from constraint_sched.adapters.torch._scheduler import TorchScheduler


class _TorchOps:
    def exp(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)

    def log(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)

    def sqrt(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x)

    def clip(self, x: torch.Tensor, low: Any, high: Any) -> torch.Tensor:
        return torch.clamp(x, low, high)

    def minimum(self, x: torch.Tensor, y: float) -> torch.Tensor:
        return torch.clamp(x, max=y)

    def maximum(self, x: torch.Tensor, y: float) -> torch.Tensor:
        return torch.clamp(x, min=y)

    def where(self, condition: Any, x: Any, y: Any) -> torch.Tensor:
        return torch.where(condition, x, y)

    def ndtri(self, p: torch.Tensor) -> torch.Tensor:
        quantile: torch.Tensor = torch.special.ndtri(p)
        return quantile


TORCH_OPS: Ops[torch.Tensor] = _TorchOps()


class TorchConstraintTerm(ConstraintTerm):
    """The core's `constraint_sched.ConstraintTerm` on tensors, with no host sync per step.

    The same discovery, hold, squeeze and `constraint_sched.ChanceMultiplier`
    as the core's term, with the multiplier's numbers kept as 0-d tensors on
    the value's device: a call reads nothing on the host, so a CUDA training
    step does not wait for the GPU; `epoch_end` synchronises once (through
    `TorchScheduler.advance_epoch`). The returned term is ``weight * mean(kl)``
    with the weight detached, so its gradient is the weight times the value's.

    Takes what the core's term takes, and tensors: per-example values of
    shape ``(batch,)`` (e.g. ``kl.sum(dim=-1)`` of a per-dimension KL), or a
    0-d batch mean with ``reduction="mean"``, and the step's main loss as
    ``main=`` (a 0-d tensor, read detached). Python and numpy numbers are
    accepted too (as CPU tensors). Under ``torch.distributed``, each rank's
    bound is agreed at `epoch_end`; each rank's weight follows its own
    values, so pass the values averaged over ranks if the weights must agree
    step by step.

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

    _owner = "TorchConstraintTerm"

    def _init_multiplier(self) -> None:
        super()._init_multiplier()
        self._torch = TorchScheduler(self._scheduler)
        self._tensors: ChanceState[torch.Tensor] | None = None
        self._weight_tensor: torch.Tensor | None = None
        self._device_math = False  # tests set it to run the device maths on the CPU

    @property
    def torch_scheduler(self) -> TorchScheduler:
        """The adapter around `scheduler` that observes on the device."""
        return self._torch

    @property
    def weight(self) -> float:
        """The weight the last call applied (read from its device: a host sync there)."""
        if self._weight_tensor is None:
            return float(self._weight)
        return float(self._weight_tensor)

    @property
    def weight_tensor(self) -> torch.Tensor | None:
        """The weight the last call applied as a 0-d tensor on an accelerator, without a sync.

        None before the first call, and while the values are on the CPU
        (where the weight is a number: `weight`).
        """
        return self._weight_tensor

    def __call__(self, value: Any, *, main: Any = _REQUIRED) -> torch.Tensor:  # type: ignore[override]
        """This step's term, ``weight * mean(value)`` as a tensor (negated for a floor).

        On the CPU the multiplier runs on Python numbers (reading a CPU tensor
        costs nothing); on an accelerator it runs on 0-d tensors of the
        value's device, reading nothing on the host. A non-finite value or
        main loss is passed to the scheduler (which counts it) and leaves the
        weight as it was.

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
        m = self._main(main, x.device)
        detached = x.detach()
        aim = self._aim_bound()
        bound = self._bound_in_force()
        sign = self._multiplier.sign
        if x.device.type == "cpu" and not self._device_math:
            self._to_host()
            v, mv = float(detached), float(m)
            finite = math.isfinite(v) and math.isfinite(mv)
            if finite:
                self._multiplier.check_unit(math.isfinite(aim), mv, f"{self._owner} {self._name!r}")
            self._weight = self._multiplier.weight
            self._torch.observe(detached)
            if finite:
                self._multiplier.update(v, bound, main=mv, aim=aim)
            else:
                self._multiplier.plan(bound, aim)  # the step counts; the numbers stay
            self._steps += 1
            return sign * self._weight * x
        st = self._state_for(x)
        weight = torch.where(st.scaled > 0, torch.exp(st.log_weight), 0.0).to(x.dtype)
        self._weight_tensor = weight
        self._torch.observe(detached)
        plan = self._multiplier.plan(bound, aim)
        dtype = st.log_weight.dtype
        xt, mt = detached.to(dtype), m.to(dtype)
        if plan.known:
            new = chance_step(TORCH_OPS, st, xt, mt, plan, self._settings)
        else:
            new = discovery_step(TORCH_OPS, st, xt, mt, self._settings)
        # A non-finite value or main loss leaves the numbers as they were (the scheduler counts it).
        ok = torch.isfinite(xt) & torch.isfinite(mt)
        self._tensors = ChanceState(*(torch.where(ok, a, b) for a, b in zip(new, st, strict=True)))
        self._steps += 1
        return sign * weight * x

    def _main(self, main: Any, device: torch.device) -> torch.Tensor:
        """The step's main loss as a detached 0-d tensor on ``device``."""
        if not isinstance(main, torch.Tensor):
            return torch.as_tensor(main_loss(main, self._owner), dtype=torch.float64)
        if main.is_complex() or not main.is_floating_point() or main.device.type == "meta":
            raise TypeError(
                f"{self._owner} {self._name!r}: main must be a real floating tensor with values, "
                f"got dtype {main.dtype} on {main.device.type}"
            )
        if main.dim() > 1 or main.numel() == 0:
            raise ValueError(
                f"{self._owner} {self._name!r}: main must be the step's loss, a 0-d tensor or "
                f"per-example losses of shape (batch,), got shape {tuple(main.shape)}"
            )
        loss: torch.Tensor = main.detach()
        if loss.dim() == 1:
            loss = loss.mean()
        return loss.to(device)

    def _to_host(self) -> None:
        """Move the multiplier's numbers from the device tensors to the core's multiplier."""
        if self._tensors is not None:
            self._mirror()
            self._weight = float(self._weight_tensor) if self._weight_tensor is not None else 0.0
            self._tensors, self._weight_tensor = None, None

    def _reduce(self, value: Any) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            number = per_example_mean(value, self._reduction, self._owner)
            return torch.as_tensor(number, dtype=torch.get_default_dtype())
        if value.is_complex() or not value.is_floating_point():
            raise ValueError(
                f"{self._owner} {self._name!r}: expected a real floating tensor, got dtype "
                f"{value.dtype}"
            )
        if value.device.type == "meta":
            raise ValueError(
                f"{self._owner} {self._name!r}: got a meta tensor, which holds no values"
            )
        if value.dim() == 1 and value.numel() > 0:
            return value.mean()
        if value.dim() > 1 or value.numel() == 0:
            raise ValueError(
                f"{self._owner} {self._name!r}: expected one value per example, shape "
                f"(batch,), got shape {tuple(value.shape)}; sum a per-dimension KL over its "
                "dimensions first (kl.sum(dim=-1))"
            )
        if self._reduction != "mean":
            per_example_mean(0.0, "none", self._owner)  # raises the core's message
        return value

    def _state_for(self, x: torch.Tensor) -> ChanceState[torch.Tensor]:
        st = self._tensors
        if st is not None and st.log_weight.device == x.device:
            return st
        dtype = torch.float64 if x.device.type == "cpu" else torch.float32
        if st is not None:  # the value moved to another device: the state follows it
            moved = ChanceState(*(t.to(x.device, dtype) for t in st))
            self._tensors = moved
            return moved
        # From the core's multiplier (fresh, loaded, or run on the CPU so far).
        fresh = ChanceState(
            *(torch.tensor(v, dtype=dtype, device=x.device) for v in self._multiplier.state)
        )
        self._tensors = fresh
        return fresh

    def epoch_end(self) -> list[Event]:
        """End the epoch: one host sync, the bound moves, the budget resets, a line printed.

        Returns:
            The scheduler's events (also printed, with ``echo``).

        Raises:
            ValueError: The main loss's level at the end of discovery is not
                positive (the weight unit cannot be set).
        """
        events = self._torch.advance_epoch(log=self._echo is None)
        self._mirror()
        if self._scheduler.phase is not Phase.DISCOVERY and self._multiplier.state.seen:
            # The device set (or is about to set) the unit unchecked: check it once, here.
            self._multiplier.check_unit(
                math.isfinite(self.aim), math.nan, f"{self._owner} {self._name!r}"
            )
        finished = self._finish(events)
        if self._tensors is not None:
            self._tensors = self._tensors._replace(overs=torch.zeros_like(self._tensors.overs))
        return finished

    def _mirror(self) -> None:
        """Copy the device numbers into the core's multiplier (a host sync)."""
        if self._tensors is None:
            return
        self._multiplier.set_state(ChanceState(*(float(t) for t in self._tensors)))

    def state_dict(self) -> dict[str, Any]:
        """The term's state, as the core's but for the scheduler's part: plain numbers (a sync)."""
        self._mirror()
        state = super().state_dict()
        state["scheduler"] = self._torch.state_dict()
        if self._weight_tensor is not None:
            state["weight"] = float(self._weight_tensor)
        return state

    def _load_scheduler(self, state: Any) -> None:
        self._torch.load_state_dict(state)

    def _loaded(self) -> None:
        # The multiplier's numbers move to the device of the next value.
        self._tensors, self._weight_tensor = None, None
