"""ConstraintCallback: a Lightning callback that feeds logged step values to a TorchScheduler."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch

from constraint_sched import (
    ConstraintScheduler,
    Event,
    Phase,
    Readings,
    SchedulerCollection,
)
from constraint_sched.adapters.torch import TorchScheduler
from constraint_sched.adapters.torch._bound import bound_reading


class ConstraintCallback(pl.Callback, Readings):
    """Schedule constraint bounds from the values a LightningModule logs in ``training_step``.

    At the end of every training batch the callback reads the values the
    module logged in that step with ``self.log(key, tensor)`` (the default
    ``on_step=True`` of ``training_step``), from ``trainer.callback_metrics``,
    and hands them to a `constraint_sched.adapters.torch.TorchScheduler`.
    Nothing is read on the host: the logged tensors stay where they are and
    the statistics accumulate on their device. A key that the module did not
    log in a step (the value in ``callback_metrics`` is the one already
    observed, or one left from an earlier epoch) is not observed for that
    step. NaN and infinite values are counted and skipped by the core.

    At the end of each training epoch (``on_train_epoch_end``) the callback
    advances the schedulers: the one host synchronisation of the epoch, and,
    under DDP, the agreement of every rank on the same bounds and phases. The
    events are logged by the core (the ``constraint_sched`` logger, rank 0
    only) and kept in `last_events`; the bound of every spec past discovery
    goes to the trainer's loggers as ``f"{log_prefix}{name}"``. Lightning
    calls ``ModelCheckpoint`` after the other callbacks at the end of an
    epoch, so a checkpoint saved there holds the state after the epoch's
    advance, and a run resumed from it continues with the bounds and phases
    of an uninterrupted run.

    The module reads the bounds through the callback, with the names of
    `constraint_sched.adapters.torch.TorchScheduler`: `bound_tensor` (a
    cached 0-d tensor on the module's device, updated in place at each epoch
    end), `score` and `violation` for the loss; host values `spec`,
    `phase_of`, `bound_of` and `phases` (and `phase`, `bound` with one
    scheduler). The simplest way for a module to reach its callback is to
    build it and return it from ``configure_callbacks``.

    As on the `TorchScheduler`, `bound` and `phase` are properties now;
    the old tensor call ``callback.bound(name)`` still works for one release
    and warns (``DeprecationWarning``: use `bound_tensor`), while
    ``callback.phase(name)`` raises ``TypeError`` (use `phase_of`).

    Args:
        scheduler: A core scheduler or a collection of them (wrapped in a
            `TorchScheduler` here), or a `TorchScheduler` built by the caller.
        keys: The logged key of each spec, ``{spec name: logged key}``; specs
            left out are read from the key of their own name.
        reject_key: A logged key whose value is nonzero in a rejected step
            (log ``reject.float()``); the values of such a step are not
            observed, and the step counts as rejected. None: every step is
            accepted.
        log_prefix: The prefix of the bounds' names in the trainer's loggers;
            None logs nothing.
        process_group: The ``torch.distributed`` group the ranks agree in;
            None for the default group, which Lightning's DDP initialises
            before training starts. Only with a core scheduler or collection.

    Raises:
        TypeError: ``scheduler`` is not a scheduler, a collection or a
            `TorchScheduler`; a key is not a string.
        ValueError: ``keys`` names a spec that the scheduler does not have,
            two specs or the reject flag share a logged key, or a
            ``process_group`` comes with a `TorchScheduler`.

    Examples:
        >>> from constraint_sched import ConstraintScheduler, ConstraintSpec, SqueezeSchedule
        >>> kl = ConstraintSpec("kl", "box_asymmetric", lower=0.05, healthy=1.0, upper=1e9)
        >>> callback = ConstraintCallback(
        ...     ConstraintScheduler(kl, squeeze=SqueezeSchedule.geometric(target=2.0, epochs=2)),
        ...     keys={"kl": "train/kl"},
        ... )
        >>> callback.state_key
        "ConstraintCallback{'specs': ['kl']}"
        >>> callback.phase_of("kl").name, callback.bound_tensor("kl")
        ('DISCOVERY', tensor(1.0000e+09))
        >>> callback.phase, callback.bound  # one scheduler: host values, as in the core
        (<Phase.DISCOVERY: 1>, 1000000000.0)
    """

    def __init__(
        self,
        scheduler: ConstraintScheduler | SchedulerCollection | TorchScheduler,
        *,
        keys: Mapping[str, str] | None = None,
        reject_key: str | None = None,
        log_prefix: str | None = "bound/",
        process_group: Any = None,
    ) -> None:
        if isinstance(scheduler, TorchScheduler):
            if process_group is not None:
                raise ValueError(
                    "ConstraintCallback: process_group goes to the TorchScheduler itself when "
                    "you build one; pass it there, not here"
                )
            torch_scheduler = scheduler
        elif isinstance(scheduler, (ConstraintScheduler, SchedulerCollection)):
            torch_scheduler = TorchScheduler(scheduler, process_group=process_group)
        else:
            raise TypeError(
                "ConstraintCallback: scheduler must be a ConstraintScheduler, a "
                f"SchedulerCollection or a TorchScheduler, got {scheduler!r}"
            )
        names = torch_scheduler.names
        given = dict(keys or {})
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(
                f"ConstraintCallback: keys names specs {unknown} that the scheduler does not "
                f"have; it has {list(names)}"
            )
        watched = {name: given.get(name, name) for name in names}
        for name, key in [*watched.items(), ("reject_key", reject_key)]:
            if key is not None and not isinstance(key, str):
                raise TypeError(
                    f"ConstraintCallback: the logged key of {name!r} must be a str, got {key!r}"
                )
        by_key: dict[str, str] = {}
        for name, key in watched.items():
            if key in by_key:
                raise ValueError(
                    f"ConstraintCallback: specs {by_key[key]!r} and {name!r} both read the "
                    f"logged key {key!r}; each spec needs its own"
                )
            by_key[key] = name
        if reject_key is not None and reject_key in by_key:
            raise ValueError(
                f"ConstraintCallback: reject_key {reject_key!r} is also the logged key of spec "
                f"{by_key[reject_key]!r}"
            )
        self._scheduler = torch_scheduler
        self._keys = watched
        self._reject_key = reject_key
        self._log_prefix = log_prefix
        self._module: pl.LightningModule | None = None
        # Per key: the tensor last observed (or found at the epoch's start), to tell
        # a value logged in this step from one left in callback_metrics.
        self._latest: dict[str, Any] = {}
        self._seen: set[str] = set()
        self._checked = False
        self._last_events: list[Event] = []

    # -- what the module reads -------------------------------------------------------

    @property
    def scheduler(self) -> TorchScheduler:
        """The `TorchScheduler` that does the scheduling (its ``core`` is the core's)."""
        return self._scheduler

    @property
    def keys(self) -> dict[str, str]:
        """The logged key of every spec, ``{spec name: logged key}``."""
        return dict(self._keys)

    @property
    def last_events(self) -> list[Event]:
        """The events of the last epoch end, on every rank."""
        return list(self._last_events)

    @property
    def bound(self) -> float:
        """The bound in force of the one scheduler, a float (`TorchScheduler.bound`).

        Calling it the old way, ``callback.bound(name, device=..., dtype=...)``,
        still works for one release: it warns (``DeprecationWarning``) and
        returns `bound_tensor` (on the module's device by default). With
        several schedulers it has no float value: use `bound_of`.
        """
        return bound_reading(self, self.bound_tensor, "ConstraintCallback")

    @property
    def schedulers(self) -> tuple[ConstraintScheduler, ...]:
        """The core schedulers (the rest of the reading is `constraint_sched.Readings`)."""
        return self._scheduler.schedulers

    def scheduler_of(self, name: str) -> ConstraintScheduler:
        """The core scheduler holding spec ``name`` (KeyError if none)."""
        return self._scheduler.scheduler_of(name)

    def bound_tensor(
        self,
        name: str | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """The bound in force for spec ``name`` as a cached 0-d tensor, updated in place.

        The same tensor object comes back at every call with the same device
        and dtype, and the epoch's advance writes the new bound into it: read
        it in ``training_step`` (also inside a compiled loss) and treat it as
        read-only. During discovery it holds the spec's own bound (for
        example ``1e9``). (Formerly ``bound(...)``.)

        Args:
            name: A spec name; may be left out when there is one scheduler.
            device: Where the tensor lives; default: the device of the module
                the callback is attached to (the CPU before it is attached).
            dtype: Its floating dtype; default: ``torch.get_default_dtype()``.

        Returns:
            The cached tensor.
        """
        return self._scheduler.bound_tensor(name, device=self._device(device), dtype=dtype)

    def score(self, name: str | None, x: torch.Tensor) -> torch.Tensor:
        """The score of ``x`` under spec ``name``'s current bound (differentiable).

        See `constraint_sched.adapters.torch.TorchScheduler.score`: the
        spec's parameters are cached tensors on ``x``'s device.

        Raises:
            ValueError: The spec's scale is ``"auto"`` and still being discovered.
        """
        return self._scheduler.score(name, x)

    def violation(self, name: str | None, x: torch.Tensor) -> torch.Tensor:
        """How far ``x`` lies beyond spec ``name``'s current bounds (0 inside; differentiable)."""
        return self._scheduler.violation(name, x)

    # -- Lightning hooks -----------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remember the module, whose device `bound_tensor` uses by default."""
        self._module = pl_module

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start watching for the monitored keys: each must be logged in the first epoch."""
        self._seen = set()
        self._checked = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Note what ``callback_metrics`` holds already: no step of this epoch logged it."""
        metrics = trainer.callback_metrics
        self._latest = {key: metrics.get(key) for key in self._watched()}

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Observe the values logged in this step, on their device (no host read)."""
        metrics = trainer.callback_metrics
        values = {}
        for name, key in self._keys.items():
            value = self._fresh(metrics, key)
            if value is not None:
                values[name] = value
        rejected = None
        if self._reject_key is not None:
            flag = self._fresh(metrics, self._reject_key)
            if flag is not None:
                rejected = flag != 0
        if rejected is not None:
            self._scheduler.reject(rejected)
            if values:
                self._scheduler.observe(values, accepted=~rejected)
        elif values:
            self._scheduler.observe(values)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Advance the schedulers (one synchronisation; every rank agrees) and log the bounds.

        Raises:
            ValueError: At the first epoch end of a fit, a monitored key was
                not logged in any step of the epoch; the message names it.
        """
        if not self._checked:
            missing = [key for key in self._watched() if key not in self._seen]
            if missing:
                logged = sorted(k for k in trainer.callback_metrics if isinstance(k, str))
                raise ValueError(
                    f"ConstraintCallback: the monitored key(s) {missing} were not logged in any "
                    f"training step of epoch {trainer.current_epoch}; log them in training_step "
                    f"with self.log(key, value) (on_step=True, the default there). Logged keys: "
                    f"{logged}"
                )
            self._checked = True
        self._last_events = self._scheduler.advance_epoch()
        if self._log_prefix is not None and trainer.loggers:
            bounds = self._bounds_to_log()
            if bounds:
                for logger in trainer.loggers:
                    logger.log_metrics(bounds, step=trainer.global_step)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Refuse a checkpoint that holds no state for this callback (a resume would start over).

        Raises:
            ValueError: The checkpoint's callbacks have no entry under `state_key`.
        """
        saved = checkpoint.get("callbacks") or {}
        if self.state_key not in saved:
            ours = sorted(str(k) for k in saved if str(k).startswith(type(self).__qualname__))
            raise ValueError(
                f"ConstraintCallback: the checkpoint has no state under {self.state_key!r} "
                f"(it holds {ours or 'no ConstraintCallback state'}); resume with the callback "
                "and the spec names it was saved with"
            )

    # -- checkpoints --------------------------------------------------------------------

    @property
    def state_key(self) -> str:
        """The callback's key in a checkpoint, from its spec names: two callbacks don't collide."""
        return self._generate_state_key(specs=list(self._scheduler.names))

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state as plain data (`TorchScheduler.state_dict`).

        Lightning saves it in the checkpoint under `state_key`; it loads with
        ``torch.load(..., weights_only=True)``.
        """
        return self._scheduler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a `state_dict` into the scheduler (the configuration is never changed).

        Raises:
            ValueError: The state was saved by a scheduler configured otherwise,
                or is corrupt; the message names the field. Nothing changes.
        """
        self._scheduler.load_state_dict(state_dict)

    # -- internals -------------------------------------------------------------------------

    def _watched(self) -> list[str]:
        keys = list(self._keys.values())
        return keys if self._reject_key is None else [*keys, self._reject_key]

    def _fresh(self, metrics: Mapping[str, Any], key: str) -> Any:
        """The value logged under ``key`` in this step, or None if the step did not log it."""
        value = metrics.get(key)
        if value is None or _same(value, self._latest.get(key)):
            return None
        self._latest[key] = value
        self._seen.add(key)
        return value

    def _device(self, device: torch.device | str | None) -> torch.device | str | None:
        if device is not None or self._module is None:
            return device
        return self._module.device

    def _bounds_to_log(self) -> dict[str, float]:
        return {
            f"{self._log_prefix}{name}": s.bound
            for s in self._scheduler.schedulers
            if s.phase is not Phase.DISCOVERY and math.isfinite(s.bound)
            for name in s.names
        }


def _same(value: Any, previous: Any) -> bool:
    """Whether ``value`` is the tensor ``previous`` again: a key not logged since.

    ``self.log`` stores a copy of each value it is given, and
    ``callback_metrics`` hands out detached views of the copy it holds. A view
    of the storage of ``previous``, which is kept alive here (so its memory is
    not reused), is the same value; a new copy has a storage of its own.
    Reading where a tensor's storage lies reads nothing on the device.
    """
    if value is previous:
        return True
    if not isinstance(value, torch.Tensor) or not isinstance(previous, torch.Tensor):
        return False
    return (
        value.device == previous.device
        and value.untyped_storage().data_ptr() == previous.untyped_storage().data_ptr()
        and value.storage_offset() == previous.storage_offset()
    )
