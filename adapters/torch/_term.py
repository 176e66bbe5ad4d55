"""`TorchConstraintTerm`: the core's `ConstraintTerm` for tensors, with no host sync per step."""

from __future__ import annotations

import math
from typing import Any

import torch

from constraint_sched import ConstraintTerm, Event
from constraint_sched._chance import ChanceState, Ops, chance_step, observe_noise
from constraint_sched._term import per_example_mean
from constraint_sched.adapters.torch._scheduler import TorchScheduler


class _TorchOps:
    def exp(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)

    def sqrt(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x)

    def clip(self, x: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return torch.clamp(x, low, high)

    def minimum(self, x: torch.Tensor, y: float) -> torch.Tensor:
        return torch.clamp(x, max=y)


TORCH_OPS: Ops[torch.Tensor] = _TorchOps()


class TorchConstraintTerm(ConstraintTerm):
    """The core's `constraint_sched.ConstraintTerm` on tensors, with no host sync per step.

    The same discovery, hold, squeeze and `constraint_sched.ChanceMultiplier`
    as the core's term, with the multiplier's state kept as 0-d tensors on the
    value's device: a call reads nothing on the host, so a CUDA training step
    does not wait for the GPU; `epoch_end` synchronises once (through
    `TorchScheduler.advance_epoch`). The returned term is ``weight * mean(kl)``
    with the weight detached, so its gradient is the weight times the value's.

    Takes what the core's term takes, and tensors: per-example values of
    shape ``(batch,)`` (e.g. ``kl.sum(dim=-1)`` of a per-dimension KL), or a
    0-d batch mean with ``reduction="mean"``. Python and numpy numbers are
    accepted too (as CPU tensors). Under ``torch.distributed``, each rank's
    bound is agreed at `epoch_end`; each rank's weight follows its own
    values, so pass the values averaged over ranks if the weights must agree
    step by step.

    Examples:
        >>> import torch
        >>> term = TorchConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
        >>> mu = torch.zeros(32, 4, requires_grad=True)
        >>> kl = 0.5 * (mu + 3.0).pow(2).sum(dim=-1)  # per example: shape (32,)
        >>> loss = term(kl)
        >>> loss.backward()
        >>> term.weight, tuple(mu.grad.shape)
        (1.0, (32, 4))
    """

    _owner = "TorchConstraintTerm"

    def _init_multiplier(self) -> None:
        super()._init_multiplier()
        self._torch = TorchScheduler(self._scheduler)
        self._tensors: ChanceState[torch.Tensor] | None = None
        self._weight_tensor: torch.Tensor | None = None
        self._seen = 0
        self._last_aim = math.inf
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

    def __call__(self, value: Any) -> torch.Tensor:  # type: ignore[override]
        """This step's term, ``weight * mean(value)`` as a tensor; records the value.

        On the CPU the multiplier runs on Python numbers (reading a CPU tensor
        costs nothing); on an accelerator it runs on 0-d tensors of the
        value's device, reading nothing on the host. A non-finite value is
        passed to the scheduler (which counts it) and leaves the weight as it
        was.

        Args:
            value: Per-example values, shape ``(batch,)``, or their mean with
                ``reduction="mean"``: a tensor (any device, with grad) or a number.

        Returns:
            The term to add to the loss, on the value's device.

        Raises:
            ValueError: A value of the wrong shape, or a complex or meta tensor.
        """
        x = self._reduce(value)
        detached = x.detach()
        aim = self._aim_bound()
        if x.device.type == "cpu" and not self._device_math:
            self._to_host()
            self._weight = self._multiplier.weight
            self._torch.observe(detached)
            v = float(detached)
            if math.isfinite(v):
                self._multiplier.update(v, self.bound, aim=aim)
            self._steps += 1
            return self._weight * x
        st = self._state_for(x)
        weight = torch.exp(st.log_weight).to(x.dtype)
        self._weight_tensor = weight
        self._torch.observe(detached)
        self._tensors = self._step(st, detached.to(st.log_weight.dtype), aim)
        self._steps += 1
        return weight * x

    def _to_host(self) -> None:
        """Move the multiplier's state from the device tensors to the core's multiplier."""
        if self._tensors is not None:
            self._mirror()
            self._weight = float(self._weight_tensor) if self._weight_tensor is not None else 1.0
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
        m = self._multiplier.state_dict()
        self._seen, self._last_aim = int(m["steps"]), m["last_bound"]
        fresh = ChanceState(
            *(torch.tensor(m[k], dtype=dtype, device=x.device) for k in ChanceState._fields)
        )
        self._tensors = fresh
        return fresh

    def _step(
        self, st: ChanceState[torch.Tensor], x: torch.Tensor, aim: float
    ) -> ChanceState[torch.Tensor]:
        cfg = self._settings
        if self._seen == 0:
            st = st._replace(mean=x)
        new = observe_noise(TORCH_OPS, st, x, cfg.noise_window)
        self._seen += 1
        if math.isfinite(aim):
            moved = self._last_aim if math.isfinite(self._last_aim) else aim
            sign = 1.0 if self._side == "upper" else -1.0
            new = chance_step(
                TORCH_OPS,
                new,
                x,
                aim_bound=aim,
                moved_from=moved,
                z=cfg.z,
                sign=sign,
                cfg=cfg,
            )
        self._last_aim = aim
        # A non-finite value leaves the state as it was (it is counted by the scheduler).
        ok = torch.isfinite(x)
        return ChanceState(*(torch.where(ok, a, b) for a, b in zip(new, st, strict=True)))

    def epoch_end(self) -> list[Event]:
        """End the epoch: one host sync, the bound moves, the margin is corrected, a line printed.

        Returns:
            The scheduler's events (also printed, with ``echo``).
        """
        events = self._torch.advance_epoch(log=self._echo is None)
        self._mirror()
        return self._finish(events)

    def _mirror(self) -> None:
        """Copy the device state into the core's multiplier (a host sync)."""
        if self._tensors is None:
            return
        self._multiplier.load_state_dict(
            {
                **{k: float(v) for k, v in self._tensors._asdict().items()},
                "steps": self._seen,
                "last_bound": self._last_aim,
            }
        )

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
        # The multiplier's state moves to the device of the next value.
        self._tensors, self._weight_tensor = None, None
