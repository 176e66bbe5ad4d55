"""A multiplier that keeps at most a share ``alpha`` of each epoch's steps beyond a moving bound.

The maths is `constraint_sched.functional`'s (`discovery_step` while the
bound is unknown, `chance_step` once it is known, over any namespace): this
module holds the settings and the stateful multiplier that runs it on Python
floats. The docs' concepts page derives the maths.

Everything is relative, so that nothing has units: the value's error is a
fraction of the bound, and the weight is a multiple of the *weight unit*
``main / |bound|``, the main loss's level at the end of discovery over the
first bound. Multiplying the main loss by any constant multiplies every
weight by that constant and changes nothing else.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from constraint_sched import _state
from constraint_sched._spec import Bound
from constraint_sched.functional._chance import (
    MIN_SHARE,
    SPREAD_CLIP,
    ChanceState,
    StepPlan,
    chance_step,
    discovery_step,
    initial_state,
)
from constraint_sched.functional._chance import glide as _glide
from constraint_sched.functional._namespace import host

__all__ = [
    "MIN_SHARE",
    "SPREAD_CLIP",
    "ChanceConstraint",
    "ChanceMultiplier",
    "ChanceState",
    "StepPlan",
    "chance_step",
    "check_main_level",
    "discovery_step",
    "glide",
    "initial_state",
    "read_state",
]

_FORMAT = "constraint_sched.ChanceMultiplier"


def _number(name: str, low: float, high: float, *, low_open: bool = False) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"ChanceConstraint.{name} must be a number, got {value!r}")
        inside = value > low if low_open else value >= low
        if not (math.isfinite(value) and inside and value <= high):
            side = "(" if low_open else "["
            raise ValueError(
                f"ChanceConstraint.{name} must be in {side}{low:g}, {high:g}], got {value!r}"
            )

    return check


def _window(name: str) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"ChanceConstraint.{name} must be an int >= 2, got {value!r}")

    return check


@attrs.frozen
class ChanceConstraint:
    """How a `ChanceMultiplier` holds a value under a moving ceiling (or over a floor).

    The constraint is a chance constraint per epoch: at most a share
    ``alpha`` of an epoch's steps may see the value beyond the bound in
    force. While the bound is unknown (discovery) the weight is 0: the model
    trains on its main loss alone, and the multiplier measures the main
    loss's level and the value's step-to-step noise. When the bound appears,
    the weight starts at ``first_weight`` weight units, where the unit is the
    main loss's level over the bound (at 1, the term at the bound is as large
    as the main loss). From then on the value is aimed at the bound less
    ``z`` times its spread around the bound it tracks, where ``z`` grows as
    the epoch's steps beyond the bound use up the epoch's allowance; an
    integral controller on the logarithm of the weight, with a proportional
    response to the value's excess over its aim and a feed-forward of every
    move of the bound, reaches that aim. Every number here is relative (to
    the bound, to the weight unit, to ``alpha``), so the defaults hold across
    problems and loss scales; see the concepts page for the derivation and
    the measurements behind them.

    Args:
        alpha: The largest share of an epoch's steps beyond the bound, in
            ``(0, 0.5]``. ``0.5`` aims the value's mean at the bound.
        first_weight: The weight when the bound appears, in weight units
            (the main loss's level over the bound): 1 makes the term at the
            bound as large as the main loss.
        integral_gain: The log-weight's change per step per unit of relative
            error (``(value - aim) / |bound|``).
        proportional_gain: The log-weight's immediate response to the
            value's relative excess over its aim (a value under its aim lowers
            the weight through the integral alone).
        noise_window: Steps over which the value's spread is averaged.
        scale_window: Steps over which the main loss's level is averaged
            during discovery.
        max_margin: The largest margin, a fraction of ``|bound|``.
        elasticity: The assumed response of the value to its weight, the
            ``-d log(value) / d log(weight)`` by which a move of the bound is
            passed straight to the weight (a feed-forward; 0 turns it off).
        glide: The share of an epoch over which the aim moves from the bound
            in force to the next one (0: the next bound from the epoch's first
            step), so that the value is there before the bound is.
        min_weight: The smallest weight, in weight units (a value far under
            its bound is left almost alone).
        max_weight: The largest weight, in weight units.

    Examples:
        >>> c = ChanceConstraint(alpha=0.05)
        >>> round(c.step_share, 4), round(c.z, 3)
        (0.0263, 1.938)
        >>> ChanceConstraint(alpha=0.5).z
        0.0
        >>> ChanceConstraint(alpha=0.7)
        Traceback (most recent call last):
        ...
        ValueError: ChanceConstraint.alpha must be in (0, 0.5], got 0.7
    """

    alpha: float = attrs.field(default=0.05, validator=_number("alpha", 0.0, 0.5, low_open=True))
    first_weight: float = attrs.field(
        default=1.0, validator=_number("first_weight", 0.0, math.inf, low_open=True)
    )
    integral_gain: float = attrs.field(
        default=0.05, validator=_number("integral_gain", 0.0, 10.0, low_open=True)
    )
    proportional_gain: float = attrs.field(
        default=1.0, validator=_number("proportional_gain", 0.0, 100.0)
    )
    noise_window: int = attrs.field(default=100, validator=_window("noise_window"))
    scale_window: int = attrs.field(default=10, validator=_window("scale_window"))
    max_margin: float = attrs.field(
        default=0.25, validator=_number("max_margin", 0.0, 1.0, low_open=True)
    )
    elasticity: float = attrs.field(default=0.7, validator=_number("elasticity", 0.0, 10.0))
    glide: float = attrs.field(default=0.3, validator=_number("glide", 0.0, 1.0))
    min_weight: float = attrs.field(
        default=1e-3, validator=_number("min_weight", 0.0, math.inf, low_open=True)
    )
    max_weight: float = attrs.field(
        default=1e6, validator=_number("max_weight", 0.0, math.inf, low_open=True)
    )

    def __attrs_post_init__(self) -> None:
        if not self.min_weight <= self.first_weight <= self.max_weight:
            raise ValueError(
                f"ChanceConstraint.first_weight must lie in [min_weight, max_weight] = "
                f"[{self.min_weight!r}, {self.max_weight!r}], got {self.first_weight!r}"
            )

    @property
    def step_share(self) -> float:
        """The share of steps the aim allows beyond the bound: half of alpha's odds.

        ``alpha / (2 (1 - alpha))``: 2.6% for ``alpha`` 5%, 50% for 50%.
        Consecutive steps are alike, so steps beyond a bound come in runs;
        aiming at half the allowance keeps the other half for them.
        """
        return self.alpha / (2.0 * (1.0 - self.alpha))

    @property
    def z(self) -> float:
        """The starting margin in spreads: the normal quantile of ``1 - step_share``."""
        return statistics.NormalDist().inv_cdf(1.0 - self.step_share)


def glide(bound: float, upcoming: float, progress: float) -> float:
    """`constraint_sched.functional.glide` on Python floats."""
    return float(_glide(host, bound, upcoming, progress))


class ChanceMultiplier:
    """The weight of a value that must stay under a moving bound on all but ``alpha`` of the steps.

    Feed it each step's value, the main loss, and the bound to aim under
    (`update`), and tell it where each epoch ends (`end_epoch`); read
    `weight` for the loss ``main + weight * value``. The weight is 0 while
    the bound is infinite (during discovery), so that the model trains on its
    main loss alone; when the bound appears it starts at ``first_weight``
    times the main loss's level over the bound, and every later weight is a
    multiple of that unit: the main loss in any units gives the same run.
    Python floats only; the PyTorch adapter runs the same maths on the
    device.

    Args:
        settings: The `ChanceConstraint` (defaults: ``alpha`` 0.05).
        side: ``"upper"`` (a ceiling: the weight penalises the value) or
            ``"lower"`` (a floor: it rewards it).

    Examples:
        >>> m = ChanceMultiplier()
        >>> m.update(12.0, bound=math.inf, main=50.0)  # discovery: the weight is 0
        0.0
        >>> w = m.update(12.0, bound=10.0, main=50.0)  # the bound appears: 1 unit, 50 / 10
        >>> round(m.unit, 3)
        5.0
        >>> for _ in range(200):
        ...     _ = m.update(12.0, bound=10.0, main=50.0)  # 20% over, every step: it grows
        >>> m.weight > 5 * m.unit
        True
    """

    def __init__(self, settings: ChanceConstraint | None = None, *, side: Bound = "upper") -> None:
        settings = ChanceConstraint() if settings is None else settings
        if not isinstance(settings, ChanceConstraint):
            raise TypeError(
                f"ChanceMultiplier: settings must be a ChanceConstraint, got {settings!r}"
            )
        if side not in ("upper", "lower"):
            raise ValueError(f"ChanceMultiplier: side must be 'upper' or 'lower', got {side!r}")
        self._cfg = settings
        self._side: Bound = side
        self._sign = 1.0 if side == "upper" else -1.0
        self._st: ChanceState[float] = initial_state(0.0)
        self._steps = 0
        self._epoch_steps = 0
        self._last_epoch_steps = 0
        self._last_aim = math.inf

    # -- reading -----------------------------------------------------------------

    @property
    def settings(self) -> ChanceConstraint:
        """The settings."""
        return self._cfg

    @property
    def side(self) -> Bound:
        """``"upper"`` or ``"lower"``."""
        return self._side

    @property
    def sign(self) -> float:
        """+1 for a ceiling, -1 for a floor: the term is ``sign * weight * value``."""
        return self._sign

    @property
    def state(self) -> ChanceState[float]:
        """The numbers (floats)."""
        return self._st

    @property
    def weight(self) -> float:
        """The weight for the next step: 0 until the bound is known."""
        return math.exp(self._st.log_weight) if self._st.scaled else 0.0

    @property
    def unit(self) -> float:
        """The weight unit, the main loss's level over the first bound (nan before it is set)."""
        return math.exp(self._st.log_unit) if self._st.scaled else math.nan

    @property
    def main_level(self) -> float:
        """The main loss's running level during discovery (0 before any step)."""
        return self._st.main_level

    @property
    def noise(self) -> float:
        """The value's spread around the bound it tracks, a fraction of that bound."""
        return math.sqrt(self._st.noise)

    @property
    def steps(self) -> int:
        """Steps seen, all epochs."""
        return self._steps

    @property
    def epoch_steps(self) -> int:
        """Steps seen this epoch."""
        return self._epoch_steps

    @property
    def last_epoch_steps(self) -> int:
        """Steps of the last epoch that had any: the expected length of this one."""
        return self._last_epoch_steps

    @property
    def last_aim(self) -> float:
        """The last finite aim (``inf`` before any)."""
        return self._last_aim

    # -- the step ------------------------------------------------------------------

    def plan(self, bound: float, aim: float | None = None) -> StepPlan:
        """Count one step and return what the host knows of it (the adapter runs the maths).

        Args:
            bound: The bound in force; ``inf`` (``-inf`` for a floor) while unknown.
            aim: The bound to aim under (over, for a floor), if not ``bound``.

        Returns:
            The step's `StepPlan`.
        """
        b = float(bound)
        a = b if aim is None else float(aim)
        moved = self._last_aim if math.isfinite(self._last_aim) else a
        self._steps += 1
        self._epoch_steps += 1
        if math.isfinite(a):
            self._last_aim = a
        return StepPlan(
            bound=b,
            aim_bound=a,
            moved_from=moved,
            epoch_steps=self._epoch_steps,
            epoch_length=max(self._last_epoch_steps, self._epoch_steps),
            sign=self._sign,
        )

    def update(self, value: float, bound: float, *, main: float, aim: float | None = None) -> float:
        """Take one step's value and main loss; return the weight for the next step.

        Args:
            value: The step's value (finite; per example, like the bound).
            bound: The bound in force this step; ``inf`` (``-inf`` for a
                floor) while it is not known yet.
            main: The step's main loss (finite; positive while the bound is
                unknown: its level sets the weight unit).
            aim: The bound to aim under (over, for a floor), if not ``bound``:
                tighter than it while the bound is about to move.

        Raises:
            ValueError: A value or main loss that is not finite; a main loss
                whose level is not positive when the bound appears.
        """
        x, m = float(value), float(main)
        if not math.isfinite(x):
            raise ValueError(f"ChanceMultiplier.update: value must be finite, got {value!r}")
        if not math.isfinite(m):
            raise ValueError(f"ChanceMultiplier.update: main must be finite, got {main!r}")
        known = math.isfinite(bound) and (aim is None or math.isfinite(aim))
        self.check_unit(known, m)
        self.apply(self.plan(bound, aim), x, m)
        return self.weight

    def apply(self, plan: StepPlan, value: float, main: float) -> None:
        """Run one planned step on Python floats (`update` is `plan` then this).

        For a caller that plans each step itself (`plan`) and checks its inputs.

        Args:
            plan: The step's plan, from `plan`.
            value: The step's value.
            main: The step's main loss.
        """
        if plan.known:
            self._st = chance_step(host, self._st, value, main, plan, self._cfg)
        else:
            self._st = discovery_step(host, self._st, value, main, self._cfg)

    def check_unit(self, known: bool, main: float, owner: str = "ChanceMultiplier") -> None:
        """Raise if the weight unit is, or would be set by a step at a known bound, unmeasurable.

        The unit is the main loss's level over the bound: a level that is not
        positive (or this step's ``main``, where discovery saw no step) gives none.

        Args:
            known: Whether the step's bound is known (it sets the unit if unset).
            main: The step's main loss.
            owner: Who asks, for the message.

        Raises:
            ValueError: The level is not positive, with the fix.
        """
        st = self._st
        if st.scaled:
            check_main_level(st.main_level, owner)
        elif known:
            check_main_level(main if st.seen == 0 else st.main_level, owner)

    def end_epoch(self) -> None:
        """Close the epoch: its length is the next epoch's expected one; its budget resets."""
        if self._epoch_steps:
            self._last_epoch_steps = self._epoch_steps
        self._epoch_steps = 0
        self._st = self._st._replace(overs=0.0)

    def set_state(
        self, numbers: ChanceState[Any], *, steps: int = 0, last_aim: float | None = None
    ) -> None:
        """Replace the numbers with what an adapter ran elsewhere (a device, ``jax.jit``).

        Args:
            numbers: The state (numbers, or 0-d arrays read on the host).
            steps: Steps run elsewhere since the last `plan` here, counted as planned.
            last_aim: The last finite aim of those steps.
        """
        self._st = ChanceState(*(float(v) for v in numbers))
        self._steps += steps
        self._epoch_steps += steps
        if last_aim is not None and math.isfinite(last_aim):
            self._last_aim = float(last_aim)

    # -- checkpoints -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The multiplier's state as strict-JSON data, with its settings."""
        return {
            "format": _FORMAT,
            "version": _state.FORMAT_VERSION,
            "settings": _state.to_plain(self._cfg),
            "side": self._side,
            **{k: _state.encode_float(v) for k, v in self._st._asdict().items()},
            "steps": self._steps,
            "epoch_steps": self._epoch_steps,
            "last_epoch_steps": self._last_epoch_steps,
            "last_aim": _state.encode_float(self._last_aim),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict`; nothing changes if it is invalid.

        Raises:
            TypeError: Not a mapping.
            KeyError: A missing entry, named.
            ValueError: An entry of the wrong type or out of the range a run
                reaches, or settings or a side other than this multiplier's, named.
        """
        numbers, counts, last_aim = read_state(state, "ChanceMultiplier", self._cfg, self._side)
        self._st = numbers
        self._steps, self._epoch_steps, self._last_epoch_steps = counts
        self._last_aim = last_aim

    def __repr__(self) -> str:
        return f"ChanceMultiplier(weight={self.weight:.6g}, side={self._side!r})"


def check_main_level(level: float, owner: str) -> None:
    """A ValueError when the main loss's level cannot set the weight unit."""
    if not (math.isfinite(level) and level > 0):
        raise ValueError(
            f"{owner}: the main loss's level at the end of discovery is {level!r}; the weight "
            "is set relative to it, so pass a main loss that is positive (a loss that is 0 at "
            "a perfect fit, as MSE, BCE or cross-entropy are, without an additive constant)"
        )


NumberRule = Callable[[ChanceState[float], ChanceConstraint, int, int], "str | None"]
"""``rule(numbers, settings, steps, epoch_steps)``: the range a run keeps a number in, if broken."""


def _log_range(settings: ChanceConstraint) -> tuple[float, float]:
    """The controller's range of ``log(weight / (unit * first_weight))``."""
    return (
        math.log(settings.min_weight / settings.first_weight),
        math.log(settings.max_weight / settings.first_weight),
    )


def _unscaled(name: str) -> NumberRule:
    """A number that stays 0 until the bound appears (the weight unit is set then)."""

    def rule(v: ChanceState[float], s: ChanceConstraint, steps: int, epoch: int) -> str | None:
        return (
            "0 before the bound is known (scaled = 0)"
            if not v.scaled and getattr(v, name)
            else None
        )

    return rule


def _integral(v: ChanceState[float], s: ChanceConstraint, steps: int, epoch: int) -> str | None:
    low, high = _log_range(s)
    if not v.scaled:
        return _unscaled("integral")(v, s, steps, epoch)
    return None if low - 1e-9 <= v.integral <= high + 1e-9 else f"in [{low:g}, {high:g}]"


def _log_weight(v: ChanceState[float], s: ChanceConstraint, steps: int, epoch: int) -> str | None:
    if not v.scaled:
        return _unscaled("log_weight")(v, s, steps, epoch)
    low, high = _log_range(s)
    relative = v.log_weight - v.log_unit - math.log(s.first_weight)
    if low - 1e-9 <= relative <= high + 1e-9:
        return None
    return (
        f"a weight within [min_weight, max_weight] = [{s.min_weight:g}, {s.max_weight:g}] "
        f"times the weight unit (log_unit {v.log_unit!r}: one of the two is corrupt)"
    )


NUMBER_RULES: dict[str, NumberRule] = {
    "scaled": lambda v, s, steps, epoch: None if v.scaled in (0.0, 1.0) else "0 or 1",
    "log_unit": _unscaled("log_unit"),
    "integral": _integral,
    "log_weight": _log_weight,
    "main_level": lambda v, s, steps, epoch: (
        "> 0 once a main loss is seen (a level <= 0 gives no weight unit)"
        if (v.seen > 0 or v.scaled == 1.0) and v.main_level <= 0
        else None
    ),
    "last": lambda v, s, steps, epoch: None,  # any finite value
    "jump": lambda v, s, steps, epoch: ">= 0" if v.jump < 0 else None,
    "seen": lambda v, s, steps, epoch: (
        None if v.seen == int(v.seen) and 0 <= v.seen <= steps else "an int <= steps"
    ),
    "track": _unscaled("track"),
    "noise": lambda v, s, steps, epoch: (
        ">= 0" if v.noise < 0 else _unscaled("noise")(v, s, steps, epoch)
    ),
    "overs": lambda v, s, steps, epoch: (
        None if v.overs == int(v.overs) and 0 <= v.overs <= epoch else "an int <= epoch_steps"
    ),
}
"""Every number of the multiplier's state and the range a run keeps it in (None: in range)."""

if sorted(NUMBER_RULES) != sorted(ChanceState._fields):  # a new number needs its rule
    raise RuntimeError(f"ChanceState {ChanceState._fields} but rules for {list(NUMBER_RULES)}")


def read_state(
    state: Any, owner: str, settings: ChanceConstraint, side: Bound
) -> tuple[ChanceState[float], tuple[int, int, int], float]:
    """Check a multiplier's state dict against what a run with ``settings`` reaches.

    Args:
        state: The mapping to check.
        owner: The class name, for messages.
        settings: The settings of the multiplier that loads it.
        side: Its side.

    Returns:
        The numbers, the counts (steps, epoch steps, last epoch's steps) and the last aim.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"{owner}.load_state_dict: expected a mapping, got {type(state).__name__}")
    where = f"{owner}.load_state_dict: state"
    if state.get("format") != _FORMAT:
        raise ValueError(
            f"{where}['format'] is {state.get('format')!r}, not {_FORMAT!r}: a multiplier state "
            "from before the scale-free term (weights relative to the main loss) cannot be resumed"
        )
    for key in (*ChanceState._fields, "steps", "epoch_steps", "last_epoch_steps", "last_aim"):
        if key not in state:
            raise KeyError(f"{where}['{key}'] is missing")
    saved = state.get("settings")
    if saved != _state.to_plain(settings):
        found = _state.first_difference(saved, _state.to_plain(settings), "settings")
        raise ValueError(
            f"{where}[{found!r}] differs from this multiplier's settings: a state saved with "
            "other settings would not resume the same run"
        )
    if state.get("side") != side:
        raise ValueError(f"{where}['side'] is {state.get('side')!r}, this multiplier's is {side!r}")
    values: dict[str, float] = {}
    for key in ChanceState._fields:
        try:
            values[key] = _state.decode_float(state[key], f"{where}['{key}']")
        except ValueError:
            raise ValueError(
                f"{where}['{key}'] must be a finite number, got {state[key]!r}"
            ) from None
        if not math.isfinite(values[key]):
            raise ValueError(f"{where}['{key}'] must be a finite number, got {state[key]!r}")
    counts = []
    for key in ("steps", "epoch_steps", "last_epoch_steps"):
        v = state[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{where}['{key}'] must be an int >= 0, got {v!r}")
        counts.append(v)
    steps, epoch_steps, _ = counts
    last_aim = _state.decode_float(state["last_aim"], f"{where}['last_aim']")
    numbers = ChanceState(*(values[k] for k in ChanceState._fields))
    for key, rule in NUMBER_RULES.items():
        expected = rule(numbers, settings, steps, epoch_steps)
        if expected is not None:
            raise ValueError(
                f"{where}['{key}'] is out of range: expected {expected}, got {state[key]!r}"
            )
    if epoch_steps > steps:
        raise ValueError(f"{where}['epoch_steps'] is out of range: expected <= steps")
    if math.isnan(last_aim):
        raise ValueError(f"{where}['last_aim'] must not be NaN")
    return numbers, (counts[0], counts[1], counts[2]), last_aim
