"""`ConstraintTerm`: the scheduled ceiling and its multiplier as one loss term."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from constraint_sched._chance import ChanceConstraint, ChanceMultiplier, glide
from constraint_sched._events import Converged, EpochStats, Event
from constraint_sched._inputs import REQUIRED as _REQUIRED
from constraint_sched._inputs import Reduction, main_loss, per_example_mean
from constraint_sched._phases import Backoff, DiscoveryPhase, HoldPhase, Phase
from constraint_sched._scheduler import ConstraintScheduler, logger
from constraint_sched._schedules import Relative, SqueezeSchedule
from constraint_sched._spec import Bound, ConstraintSpec
from constraint_sched.functional._chance import ChanceState, Clock, StepPlan

Echo = bool | Callable[[str], None] | None
"""Where a term prints its epoch lines: True for standard error, False or None
for silence (events still go to the ``constraint_sched`` logger), or a function
that takes a line."""


_UNKNOWN = 1e300
"""The spec's bound while the real one is being discovered (read as infinite)."""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def build_scheduler(
    name: str,
    target: float | Relative,
    *,
    side: Bound,
    squeeze_epochs: int,
    discovery: DiscoveryPhase | None,
    hold: HoldPhase | None,
    backoff: Backoff | None,
) -> ConstraintScheduler:
    """The scheduler a term moves its bound with: discovered, held, squeezed to ``target``."""
    if not isinstance(target, Relative):
        if isinstance(target, bool) or not isinstance(target, (int, float)):
            raise TypeError(
                f"ConstraintTerm: target must be a number or a Relative, got {target!r}"
            )
        if not (math.isfinite(target) and target > 0):
            raise ValueError(f"ConstraintTerm: target must be positive and finite, got {target!r}")
        target = float(target)
    if side not in ("upper", "lower"):
        raise ValueError(f"ConstraintTerm: side must be 'upper' or 'lower', got {side!r}")
    if isinstance(squeeze_epochs, bool) or not isinstance(squeeze_epochs, int):
        raise TypeError(f"ConstraintTerm: squeeze_epochs must be an int, got {squeeze_epochs!r}")
    if squeeze_epochs < 1:
        raise ValueError(f"ConstraintTerm: squeeze_epochs must be >= 1, got {squeeze_epochs!r}")
    # The spec's own bound is never in force: the term reads the bound as unknown
    # until discovery ends.
    spec = ConstraintSpec(name, side, margin=_UNKNOWN)
    squeeze = SqueezeSchedule.geometric(target=target, epochs=squeeze_epochs)
    return ConstraintScheduler(
        spec, discovery=discovery, hold=hold, squeeze=squeeze, backoff=backoff, side=side
    )


def early_hint(name: str, discovered: float, target: float, last: float, side: Bound) -> str:
    """The fix for a discovered bound already at or past the target, fitted to the numbers.

    Args:
        name: The value's name.
        discovered: The bound discovery found.
        target: The target.
        last: The value at discovery's last step (near the bound found: still moving).
        side: ``"upper"`` or ``"lower"``.

    Returns:
        One line that says what to change.
    """
    ceiling = side == "upper"
    ratio = abs(discovered / target) if target else math.inf
    if (ceiling and ratio < 0.01) or (not ceiling and ratio > 100):
        return (
            f"{name}: the value found ({discovered:.4g}) is orders of magnitude from the target "
            f"({target:.4g}): check their units (the target is per example: a KL summed over "
            "its dimensions, averaged over the batch)"
        )
    moving = abs(last - discovered) <= 0.1 * abs(discovered)
    if moving:
        return (
            f"{name}: the value was still at its {'highest' if ceiling else 'lowest'} "
            f"({last:.4g}) when discovery ended: if it keeps "
            f"{'rising' if ceiling else 'falling'} (a learning-rate warm-up, a slow start), "
            "discover over more epochs, discovery=DiscoveryPhase(epochs=3); or aim under what "
            "is found, target=Relative(0.5)"
        )
    return (
        f"{name}: nothing to squeeze at this target: give one "
        f"{'under' if ceiling else 'over'} {discovered:.4g}, or one relative to what discovery "
        f"finds, target=Relative({0.5 if ceiling else 2.0:g})"
    )


class ConstraintTerm:
    """A loss term that holds a value under a ceiling it discovers, holds and squeezes to a target.

    ``loss = main + term(value, main=main)`` each step and
    ``term.epoch_end()`` each epoch: that is the whole use. The ceiling is
    discovered from the value's natural level in the first epoch, while the
    term weighs the value by 0 (the model trains on its main loss alone),
    held, then squeezed geometrically to ``target`` over ``squeeze_epochs``
    epochs; a `ChanceMultiplier` sets the value's weight each step so that
    at most ``alpha`` (5%) of each epoch's steps see the value over the
    ceiling in force, and moves the value towards the next ceiling during
    each squeeze epoch. The weight is relative to the main loss's level, so
    the main loss in any units (a per-pixel mean, a per-example sum, times
    any constant) gives the same run. Nothing else needs a number: no
    healthy point, no floor, no starting weight, no learning rate for the
    weight.

    Values are per example: pass the per-example values, shape ``(batch,)``
    (their mean is taken), or build the term with ``reduction="mean"`` and
    pass the batch mean. A number passed to a term that expects per-example
    values raises, naming the shapes, so a batch-summed value cannot be taken
    for a mean by mistake.

    This class works on Python and numpy numbers; for tensors (gradients
    through the term, no host synchronisation on an accelerator) use
    ``constraint_sched.adapters.torch.TorchConstraintTerm``, which has the same
    interface.

    Args:
        name: The value's name, for messages ("kl").
        target: The final ceiling (floor, with ``side="lower"``), per example:
            a number, or `Relative` (``Relative(0.5)``: half of what discovery
            finds).
        side: ``"upper"`` (a ceiling) or ``"lower"`` (a floor).
        squeeze_epochs: Epochs from the held ceiling to ``target``.
        alpha: The largest share of an epoch's steps over the ceiling in force.
        settings: The multiplier's settings; ``alpha`` overrides theirs.
        discovery: How the ceiling is discovered (default: the max of epoch
            1; ``DiscoveryPhase(statistic="quantile", quantile=0.95)`` for a
            value that spikes early, ``epochs=`` or ``plateau=`` for one that
            settles late).
        hold: Epochs at the discovered ceiling (default 1).
        backoff: Undo a squeeze after which too many steps were over (default:
            none; see `Backoff`).
        reduction: ``"none"`` (per-example values) or ``"mean"``.
        echo: Print each epoch's line and every event: True to standard
            error, False or None for silence (the events still go to the
            ``constraint_sched`` logger), or a function taking a line.

    Examples:
        >>> import numpy as np
        >>> term = ConstraintTerm("kl", target=Relative(0.5), squeeze_epochs=2, echo=None)
        >>> rng = np.random.default_rng(0)
        >>> level = 12.0
        >>> for epoch in range(6):
        ...     for step in range(40):
        ...         natural = 12.0 / (1.0 + 20.0 * term.weight) ** 0.7  # a toy model
        ...         level += (natural - level) / 5.0
        ...         kl = rng.normal(level, 0.1, size=32)
        ...         penalty = term(kl, main=3.0)  # add to the loss: d/dkl is term.weight
        ...     events = term.epoch_end()
        >>> term.phase.name, term.bound == 0.5 * term.scheduler.discovered
        ('CONVERGED', True)
    """

    _owner = "ConstraintTerm"

    def __init__(
        self,
        name: str = "kl",
        *,
        target: float | Relative,
        side: Bound = "upper",
        squeeze_epochs: int = 4,
        alpha: float | None = None,
        settings: ChanceConstraint | None = None,
        discovery: DiscoveryPhase | None = None,
        hold: HoldPhase | None = None,
        backoff: Backoff | None = None,
        reduction: Reduction = "none",
        echo: Echo = True,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self._owner}: name must be a non-empty str, got {name!r}")
        if reduction not in ("none", "mean"):
            raise ValueError(
                f"{self._owner}: reduction must be 'none' or 'mean', got {reduction!r}"
            )
        if not (echo is None or isinstance(echo, bool) or callable(echo)):
            raise TypeError(f"{self._owner}: echo must be a bool, None or a callable, got {echo!r}")
        settings = ChanceConstraint() if settings is None else settings
        if not isinstance(settings, ChanceConstraint):
            raise TypeError(f"{self._owner}: settings must be a ChanceConstraint, got {settings!r}")
        if alpha is not None:
            settings = attrs.evolve(settings, alpha=alpha)
        self._scheduler = build_scheduler(
            name,
            target,
            side=side,
            squeeze_epochs=squeeze_epochs,
            discovery=discovery,
            hold=hold,
            backoff=backoff,
        )
        self._settings = settings
        self._name, self._side, self._reduction = name, side, reduction
        self._echo: Callable[[str], None] | None = (
            (_stderr if echo else None) if echo is None or isinstance(echo, bool) else echo
        )
        self._target: float | Relative = target if isinstance(target, Relative) else float(target)
        self._steps = 0
        self._last_steps = 0
        self._upcoming: tuple[tuple[int, float], float] = ((0, math.nan), math.nan)
        self._init_multiplier()

    def _init_multiplier(self) -> None:
        self._multiplier = ChanceMultiplier(self._settings, side=self._side)
        self._weight = self._multiplier.weight

    # -- reading ---------------------------------------------------------------

    @property
    def name(self) -> str:
        """The value's name."""
        return self._name

    @property
    def target(self) -> float | Relative:
        """The target as given: a number, or a `Relative` fraction of the discovered bound."""
        return self._target

    @property
    def target_bound(self) -> float | None:
        """The target as a bound: None for a `Relative` target until discovery ends."""
        return self._scheduler.target

    @property
    def reduction(self) -> Reduction:
        """How the term reads its value: ``"none"`` (per example) or ``"mean"``."""
        return self._reduction

    @property
    def scheduler(self) -> ConstraintScheduler:
        """The scheduler that moves the bound."""
        return self._scheduler

    @property
    def multiplier(self) -> ChanceMultiplier:
        """The multiplier that sets the weight (its numbers as of the last sync, on a device)."""
        return self._multiplier

    @property
    def settings(self) -> ChanceConstraint:
        """The multiplier's settings."""
        return self._settings

    @property
    def phase(self) -> Phase:
        """The bound's phase."""
        return self._scheduler.phase

    @property
    def epoch(self) -> int:
        """The current epoch, 1-based."""
        return self._scheduler.epoch

    @property
    def bound(self) -> float:
        """The bound in force (``inf`` while a ceiling is discovered, ``-inf`` for a floor)."""
        return self._bound_in_force()

    def _bound_in_force(self) -> float:
        if self._scheduler.phase is Phase.DISCOVERY:
            return math.inf if self._side == "upper" else -math.inf
        return self._scheduler.bound

    @property
    def last_epoch(self) -> EpochStats | None:
        """What the last completed epoch saw, or None before the first one ends."""
        return self._scheduler.last_epoch

    @property
    def weight(self) -> float:
        """The weight the last call applied (before any call: the next call's); 0 in discovery."""
        return float(self._weight)

    @property
    def aim(self) -> float:
        """The bound the value is being moved towards at this step of the epoch."""
        return self._aim_bound()

    # -- the step ----------------------------------------------------------------

    def __call__(self, value: Any, *, main: Any = _REQUIRED) -> float:
        """This step's term, ``weight * mean(value)`` (``-weight * ...`` for a floor).

        Args:
            value: Per-example values, shape ``(batch,)``, or their mean with
                ``reduction="mean"``.
            main: The step's main loss (the rest of the loss the term is
                added to): a number or a 0-d array, or per-example losses
                (their mean is taken). Its level at the end of discovery sets
                the weight's unit; it is not differentiated.

        Returns:
            The term to add to the loss (its derivative is ``weight`` times
            the value's, negated for a floor; read `weight`).

        Raises:
            ValueError: A value of the wrong shape (see the class docs), a
                value or main loss that is not finite, or a main loss whose
                level is not positive when the bound appears.
            TypeError: Not a real number or array, or no ``main``.
        """
        x = per_example_mean(value, self._reduction, self._owner)
        m = main_loss(main, self._owner)
        for what, number in (("the value", x), ("main", m)):
            if not math.isfinite(number):
                raise ValueError(
                    f"{self._owner} {self._name!r}: {what} is not finite ({number!r}); the "
                    "step's loss should be skipped or the step rolled back"
                )
        return self._multiplier.sign * self.step(x, m, self._scheduler.observe) * x

    def step(self, value: float, main: float, observe: Callable[[Any], None]) -> float:
        """One step on host numbers, for an adapter: returns the weight it applies.

        ``observe(value)`` records the value (an adapter's scheduler counts
        it on its books). A non-finite value or main loss is counted and
        leaves the weight as it was; `__call__` refuses one first.
        """
        finite = math.isfinite(value) and math.isfinite(main)
        if finite:
            self._multiplier.check_unit(math.isfinite(self.aim), main,
                                        f"{self._owner} {self._name!r}")  # fmt: skip
        self._weight = self._multiplier.weight
        observe(value)
        plan = self.plan()  # the step counts, whatever its numbers
        if finite:
            self._multiplier.apply(plan, value, main)
        return self._weight

    def plan(self) -> StepPlan:
        """Count one step and return its plan: the bound in force, the aim, the epoch's counts.

        For an adapter that runs the multiplier's step itself, on its own
        arrays (`constraint_sched.functional.multiplier_step`); `__call__` is
        this plus the host step.
        """
        return self._plan(self._aim_bound())

    def _plan(self, aim: float) -> StepPlan:
        plan = self._multiplier.plan(self._bound_in_force(), aim)
        self._steps += 1
        return plan

    @property
    def clock(self) -> Clock:
        """The counts and last aim that `constraint_sched.functional.plan_step` starts from."""
        m = self._multiplier
        return Clock(self._steps, self._last_steps, m.last_epoch_steps, m.last_aim)

    def absorb(self, numbers: ChanceState[Any], *, steps: int, last_aim: float) -> None:
        """Take the multiplier's numbers after ``steps`` steps an adapter ran (``jax.jit``).

        Args:
            numbers: The multiplier's state after them (read on the host).
            steps: How many steps were run since the last call here.
            last_aim: Their last finite aim.
        """
        self._multiplier.set_state(numbers, steps=steps, last_aim=last_aim)
        self._steps += steps
        self._weight = self._multiplier.weight

    def _aim_bound(self) -> float:
        glide_steps = self._settings.glide * self._last_steps
        progress = self._steps / glide_steps if glide_steps > 0 else 1.0
        bound = self._bound_in_force()
        if not math.isfinite(bound):
            return bound
        key = (self._scheduler.epoch, bound)
        if self._upcoming[0] != key:  # once per epoch (and where discovery ends inside one)
            self._upcoming = (key, self._scheduler.upcoming_bound)
        return glide(bound, self._upcoming[1], progress)

    # -- the epoch ---------------------------------------------------------------

    def epoch_end(self, *, advance: Callable[..., list[Event]] | None = None) -> list[Event]:
        """End the epoch: move the bound, reset the epoch's budget, print the epoch's line.

        An epoch without a step moves nothing (see
        `constraint_sched.ConstraintScheduler.advance_epoch`): a second call
        for one epoch neither squeezes nor converges, and its line says "no steps".

        Args:
            advance: What ends the scheduler's epoch, called with ``log=``: an
                adapter's (it merges its device books first); the scheduler's
                own ``advance_epoch`` by default.

        Returns:
            The scheduler's events (also printed, with ``echo``).
        """
        advance = self._scheduler.advance_epoch if advance is None else advance
        return self._finish(advance(log=self._echo is None))

    def _finish(self, events: list[Event]) -> list[Event]:
        stats = self._scheduler.last_epoch
        self._multiplier.end_epoch()
        hints = [
            early_hint(
                self._name,
                event.discovered,
                event.new,
                self._multiplier.state.last,
                self._side,
            )
            for event in events
            if isinstance(event, Converged) and event.early and event.discovered is not None
        ]
        if self._echo is not None:
            if stats is not None:
                self._echo(self._line(stats))
            for event in events:
                prefix = "warning: " if event.level == "warning" else ""
                self._echo(f"  {prefix}{event.message}")
            for hint in hints:
                self._echo(f"  fix: {hint}")
        else:
            for hint in hints:
                logger.warning("fix: %s", hint)
        self._last_steps, self._steps = self._steps, 0
        return events

    def _line(self, stats: EpochStats) -> str:
        discovering = stats.phase is Phase.DISCOVERY
        bound = "discovering" if discovering else f"bound {stats.bound:.4g}"
        over = "" if discovering else f", {stats.violation_rate:.1%} of steps over it"
        if not stats.steps + stats.rejects:
            over = ", no steps"
        return (
            f"{self._name}: epoch {stats.epoch} ({stats.phase.name.lower()}) {bound}{over}, "
            f"weight {self._multiplier.weight:.4g}; next bound {self.bound:.4g}"
        )

    # -- checkpoints -------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The term's state: the scheduler's, the multiplier's, and the step counts."""
        return {
            "scheduler": self._scheduler.state_dict(),
            "multiplier": self._multiplier.state_dict(),
            "steps": self._steps,
            "last_steps": self._last_steps,
            "weight": float(self._weight),
        }

    def load_state_dict(
        self, state: Mapping[str, Any], *, scheduler: Callable[[Any], None] | None = None
    ) -> None:
        """Restore a `state_dict`; on an error nothing changes.

        Args:
            state: What `state_dict` returned.
            scheduler: What loads ``state["scheduler"]``: an adapter's (whose
                state holds its own epoch's books), called after everything
                else is checked and before anything changes; it must change
                nothing when it raises. The scheduler's own by default.

        Raises:
            TypeError: Not a mapping.
            KeyError: A missing entry, named.
            ValueError: An invalid entry, named.
        """
        multiplier, steps, last_steps, weight = self._parse_state(state)
        (self._scheduler.load_state_dict if scheduler is None else scheduler)(state["scheduler"])
        self._multiplier = multiplier
        self._steps, self._last_steps, self._weight = steps, last_steps, weight

    def _parse_state(self, state: Any) -> tuple[ChanceMultiplier, int, int, float]:
        """Check everything in a state dict but the scheduler's part (its own load checks it)."""
        if not isinstance(state, Mapping):
            raise TypeError(
                f"{self._owner}.load_state_dict: expected a mapping, got {type(state).__name__}"
            )
        for key in ("scheduler", "multiplier", "steps", "last_steps", "weight"):
            if key not in state:
                raise KeyError(f"{self._owner}.load_state_dict: state['{key}'] is missing")
        counts = {k: state[k] for k in ("steps", "last_steps")}
        for key, v in counts.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(
                    f"{self._owner}.load_state_dict: state['{key}'] must be an int >= 0, got {v!r}"
                )
        weight = state["weight"]
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not 0 <= weight < math.inf
        ):
            raise ValueError(
                f"{self._owner}.load_state_dict: state['weight'] must be a number >= 0, "
                f"got {weight!r}"
            )
        multiplier = ChanceMultiplier(self._settings, side=self._side)
        multiplier.load_state_dict(state["multiplier"])
        if weight and not _reachable_weight(multiplier, float(weight)):
            settings = multiplier.settings
            raise ValueError(
                f"{self._owner}.load_state_dict: state['weight'] is {weight!r}, which the "
                f"multiplier never applies: 0 while discovering, else within [min_weight, "
                f"max_weight] = [{settings.min_weight:g}, {settings.max_weight:g}] times the "
                f"weight unit {multiplier.unit:.6g}"
            )
        if counts["steps"] != multiplier.epoch_steps:
            raise ValueError(
                f"{self._owner}.load_state_dict: state['steps'] is {counts['steps']}, but "
                f"state['multiplier']['epoch_steps'] is {multiplier.epoch_steps} (the steps "
                "the multiplier saw this epoch): the two must agree"
            )
        return multiplier, counts["steps"], counts["last_steps"], float(weight)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._name!r}, target={self._target!r}, "
            f"phase={self.phase.name}, bound={self.bound:.6g}, weight={self.weight:.4g})"
        )


class TermReadings:
    """What an adapter's term reads from the core `ConstraintTerm` it holds as ``core``.

    The torch and JAX terms hold a core term (the scheduler, the multiplier
    on the host, the epoch's lines) and run its step on their own arrays;
    their readings are the core term's, written once here.

    Examples:
        >>> class MyTerm(TermReadings):
        ...     def __init__(self) -> None:
        ...         self.core = ConstraintTerm("kl", target=5.0, echo=False)
        >>> MyTerm().phase.name, MyTerm().bound
        ('DISCOVERY', inf)
    """

    core: ConstraintTerm
    """The core term."""

    @property
    def name(self) -> str:
        """The value's name."""
        return self.core.name

    @property
    def target(self) -> float | Relative:
        """The target, as given."""
        return self.core.target

    @property
    def target_bound(self) -> float | None:
        """The target as a bound (None before discovery for a `Relative` target)."""
        return self.core.target_bound

    @property
    def reduction(self) -> Reduction:
        """How the term reads its value: ``"none"`` (per example) or ``"mean"``."""
        return self.core.reduction

    @property
    def scheduler(self) -> ConstraintScheduler:
        """The scheduler that moves the bound."""
        return self.core.scheduler

    @property
    def multiplier(self) -> ChanceMultiplier:
        """The multiplier on the host (its numbers as of the last epoch end or sync)."""
        return self.core.multiplier

    @property
    def settings(self) -> ChanceConstraint:
        """The multiplier's settings."""
        return self.core.settings

    @property
    def phase(self) -> Phase:
        """The scheduler's phase."""
        return self.core.phase

    @property
    def epoch(self) -> int:
        """The current epoch, 1-based."""
        return self.core.epoch

    @property
    def bound(self) -> float:
        """The bound in force (``inf`` while a ceiling is discovered, ``-inf`` for a floor)."""
        return self.core.bound

    @property
    def last_epoch(self) -> EpochStats | None:
        """What the last completed epoch saw, or None before the first one ends."""
        return self.core.last_epoch

    @property
    def aim(self) -> float:
        """The bound the value is being moved towards at this step of the epoch."""
        return self.core.aim


def _reachable_weight(multiplier: ChanceMultiplier, weight: float) -> bool:
    """Whether a run of ``multiplier`` applies ``weight`` (a positive one) at some step."""
    if not multiplier.state.scaled:
        return False
    settings, unit = multiplier.settings, multiplier.unit
    low, high = unit * settings.min_weight, unit * settings.max_weight
    return low * (1 - 1e-9) <= weight <= high * (1 + 1e-9)
