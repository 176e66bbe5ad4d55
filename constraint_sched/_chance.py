"""A multiplier that keeps at most a share ``alpha`` of each epoch's steps beyond a moving bound.

The maths is one pure function per phase, `discovery_step` while the bound is
unknown and `chance_step` once it is known, written against a small namespace
(`Ops`) so that the core runs them on Python floats and the PyTorch adapter on
0-d tensors of the value's device, with no host synchronisation. The host-side
bookkeeping (step counts, the previous aim) is a `StepPlan` that
`ChanceMultiplier.plan` makes before each step. The docs' concepts page
derives the maths.

Everything is relative, so that nothing has units: the value's error is a
fraction of the bound, and the weight is a multiple of the *weight unit*
``main / |bound|``, the main loss's level at the end of discovery over the
first bound. Multiplying the main loss by any constant multiplies every
weight by that constant and changes nothing else.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import attrs

from constraint_sched import _state
from constraint_sched._spec import Bound

T = TypeVar("T")

SPREAD_CLIP = 3.5
"""A step moves the spread estimate by at most this many of its current spreads."""

MIN_SHARE = 0.002
"""The smallest per-step share the epoch's budget squeezes the aim to (a margin of 2.9 spreads)."""

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


class Ops(Protocol[T]):
    """The functions the maths needs: Python's on floats, torch's in the adapter."""

    def exp(self, x: T) -> T:
        """Elementwise ``e ** x``."""

    def log(self, x: T) -> T:
        """Elementwise natural logarithm."""

    def sqrt(self, x: T) -> T:
        """Elementwise square root."""

    def clip(self, x: T, low: Any, high: Any) -> T:
        """``x`` clipped to ``[low, high]`` (numbers or arrays like ``x``)."""

    def minimum(self, x: T, y: float) -> T:
        """The smaller of ``x`` and the number ``y``."""

    def maximum(self, x: T, y: float) -> T:
        """The larger of ``x`` and the number ``y``."""

    def where(self, condition: Any, x: Any, y: Any) -> T:
        """``x`` where ``condition`` holds, else ``y``."""

    def ndtri(self, p: T) -> T:
        """The standard normal quantile of ``p`` in ``(0, 1)``."""


class ChanceState(NamedTuple, Generic[T]):
    """The multiplier's numbers: floats (the core) or 0-d tensors (the adapter)."""

    scaled: T
    """1 once the bound has appeared and the weight unit is set, else 0."""
    log_unit: T
    """The log of the weight unit, ``log(main level / |first bound|)``."""
    integral: T
    """The controller's integral, in log weight units relative to ``first_weight``."""
    log_weight: T
    """The log of the weight for the next step."""
    main_level: T
    """The main loss's running level during discovery."""
    last: T
    """The previous value during discovery."""
    jump: T
    """Half the running mean of the squared step-to-step change during discovery."""
    seen: T
    """Finite steps seen during discovery."""
    track: T
    """The running mean of the value's position against the bound it tracks."""
    noise: T
    """The running variance of that position (relative to the bound)."""
    overs: T
    """Steps of this epoch beyond the bound in force."""


def initial_state(zero: Any) -> ChanceState[Any]:
    """The state before any step, every field ``zero`` (a float or a tensor)."""
    return ChanceState(*([zero] * len(ChanceState._fields)))


@attrs.frozen
class StepPlan:
    """What the host knows about one step: the bound, the aim, the epoch's counts."""

    bound: float
    """The bound in force (infinite while unknown)."""
    aim_bound: float
    """The bound the value is aimed under this step (the bound, or on its way to the next)."""
    moved_from: float
    """The previous step's ``aim_bound`` (for the feed-forward), or ``aim_bound``."""
    epoch_steps: int
    """Steps of this epoch so far, this one included."""
    epoch_length: int
    """The steps the epoch is expected to have (the last epoch's, or this one's so far)."""
    sign: float
    """+1 for a ceiling, -1 for a floor."""

    @property
    def known(self) -> bool:
        """Whether the bound is known (the multiplier weighs the value)."""
        return math.isfinite(self.bound) and math.isfinite(self.aim_bound)


class _FloatOps:
    def exp(self, x: Any) -> Any:
        return math.exp(x)

    def log(self, x: Any) -> Any:
        return math.log(x)

    def sqrt(self, x: Any) -> Any:
        return math.sqrt(x)

    def clip(self, x: Any, low: Any, high: Any) -> Any:
        return min(max(x, low), high)

    def minimum(self, x: Any, y: float) -> Any:
        return min(x, y)

    def maximum(self, x: Any, y: float) -> Any:
        return max(x, y)

    def where(self, condition: Any, x: Any, y: Any) -> Any:
        return x if condition else y

    def ndtri(self, p: Any) -> Any:
        return statistics.NormalDist().inv_cdf(p)


FLOAT_OPS: Ops[Any] = _FloatOps()
"""`Ops` over Python floats (the core's; the adapter has torch's)."""


def discovery_step(
    ops: Ops[Any], st: ChanceState[Any], value: Any, main: Any, cfg: ChanceConstraint
) -> ChanceState[Any]:
    """One step while the bound is unknown: the weight stays 0; the levels are measured.

    The main loss's level is an exponential average over ``scale_window``
    steps (it sets the weight unit when the bound appears); the value's
    step-to-step noise, half the mean squared change between steps over
    ``noise_window`` steps, seeds the spread (it holds no trend).
    """
    first = st.seen == 0
    lam, lam_main = 1.0 / cfg.noise_window, 1.0 / cfg.scale_window
    diff = value - st.last
    main_level = ops.where(first, main, st.main_level + lam_main * (main - st.main_level))
    jump = ops.where(first, 0.0 * value, (1.0 - lam) * st.jump + lam * 0.5 * diff * diff)
    return st._replace(main_level=main_level, jump=jump, last=value, seen=st.seen + 1.0)


def chance_step(
    ops: Ops[Any],
    st: ChanceState[Any],
    value: Any,
    main: Any,
    plan: StepPlan,
    cfg: ChanceConstraint,
) -> ChanceState[Any]:
    """One step once the bound is known: the next state after seeing ``value``.

    Args:
        ops: The array functions.
        st: The state before the step.
        value: The step's value (per example, as the bound is).
        main: The step's main loss (read only when the bound has just appeared
            and no discovery step measured its level).
        plan: The host's view of the step (`ChanceMultiplier.plan`).
        cfg: The settings.

    Returns:
        The next state; its ``log_weight`` is the weight for the next step.
    """
    sign, aim_bound = plan.sign, plan.aim_bound
    scale = abs(aim_bound) or 1.0
    position = sign * (value - aim_bound) / scale  # > 0: beyond the bound it tracks
    # The first step with a bound sets the unit and seeds the spread from discovery's noise.
    fresh = st.scaled == 0
    level = ops.where(st.seen == 0, main, st.main_level)
    # (A level that is not positive is refused on the host; on a device it would give nan.)
    log_unit = ops.where(fresh, ops.log(ops.maximum(level, 1e-30)) - math.log(scale), st.log_unit)
    integral = ops.where(fresh, 0.0 * st.integral, st.integral)
    track = ops.where(fresh, position, st.track)
    # Discovery's average of squared changes started at 0: divide by the weight it gathered.
    lam = 1.0 / cfg.noise_window
    gathered = ops.maximum(1.0 - (1.0 - lam) ** ops.maximum(st.seen - 1.0, 0.0), 1e-12)
    noise = ops.where(fresh, st.jump / gathered / (scale * scale), st.noise)
    # The spread of the position around its running mean: the bound's planned moves are
    # not in it, and a step moves it by at most SPREAD_CLIP spreads (a transient is not noise).
    dev = position - track
    limit = SPREAD_CLIP * ops.sqrt(noise)
    dev = ops.where(noise > 0, ops.clip(dev, -limit, limit), dev)
    track = track + lam * dev
    noise = (1.0 - lam) * (noise + lam * dev * dev)
    # The epoch's budget: steps beyond the bound in force ahead of the aimed share tighten it.
    overs = st.overs + ops.where(sign * (value - plan.bound) > 0, 1.0, 0.0)
    share = cfg.step_share
    budget = cfg.alpha * max(plan.epoch_length, 1)
    ahead = overs - share * plan.epoch_steps
    allowed = share * ops.clip(1.0 - ahead / budget, min(MIN_SHARE / share, 1.0), 1.0)
    margin = ops.minimum(ops.ndtri(1.0 - allowed) * ops.sqrt(noise), cfg.max_margin)
    error = position + margin  # relative to the bound: > 0 beyond the aim
    forward = 0.0
    moved = plan.moved_from
    if cfg.elasticity > 0 and moved != aim_bound and moved * aim_bound > 0:
        forward = sign * math.log(moved / aim_bound) / cfg.elasticity
    low = math.log(cfg.min_weight / cfg.first_weight)
    high = math.log(cfg.max_weight / cfg.first_weight)
    # Anti-windup: the integral itself stays within the weight's range.
    integral = ops.clip(integral + cfg.integral_gain * error + forward, low, high)
    push = cfg.proportional_gain * ops.maximum(error, 0.0)
    log_weight = log_unit + math.log(cfg.first_weight) + ops.clip(integral + push, low, high)
    return ChanceState(
        scaled=0.0 * st.scaled + 1.0,
        log_unit=log_unit,
        integral=integral,
        log_weight=log_weight,
        main_level=ops.where(fresh, level, st.main_level),
        last=st.last,
        jump=st.jump,
        seen=st.seen,
        track=track,
        noise=noise,
        overs=overs,
    )


def glide(bound: float, upcoming: float, progress: float) -> float:
    """The bound to aim under at ``progress`` (0 to 1) of an epoch whose next bound is ``upcoming``.

    Geometric between bounds of one sign, linear otherwise; ``bound`` itself
    when either is infinite.
    """
    if upcoming == bound or not (math.isfinite(bound) and math.isfinite(upcoming)):
        return bound
    f = min(max(progress, 0.0), 1.0)
    if bound * upcoming > 0:
        return float(bound * (upcoming / bound) ** f)
    return bound + (upcoming - bound) * f


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
        plan = self.plan(bound, aim)
        if not plan.known:
            self._st = discovery_step(FLOAT_OPS, self._st, x, m, self._cfg)
            return self.weight
        self._st = chance_step(FLOAT_OPS, self._st, x, m, plan, self._cfg)
        return self.weight

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

    def set_state(self, numbers: ChanceState[float]) -> None:
        """Replace the numbers (the adapter hands back what it ran on the device)."""
        self._st = ChanceState(*(float(v) for v in numbers))

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
    low = math.log(settings.min_weight / settings.first_weight)
    high = math.log(settings.max_weight / settings.first_weight)
    v = values
    problems = [
        ("scaled", v["scaled"] not in (0.0, 1.0), "0 or 1"),
        ("seen", v["seen"] != int(v["seen"]) or not 0 <= v["seen"] <= steps, "an int <= steps"),
        ("jump", v["jump"] < 0, ">= 0"),
        ("noise", v["noise"] < 0, ">= 0"),
        ("integral", not low - 1e-9 <= v["integral"] <= high + 1e-9, f"in [{low:g}, {high:g}]"),
        (
            "overs",
            v["overs"] != int(v["overs"]) or not 0 <= v["overs"] <= epoch_steps,
            "an int <= epoch_steps",
        ),
        ("epoch_steps", epoch_steps > steps, "<= steps"),
        ("main_level", v["scaled"] == 1.0 and v["main_level"] <= 0, "> 0 once scaled"),
    ]
    if v["scaled"] == 1.0:
        rel = v["log_weight"] - v["log_unit"] - math.log(settings.first_weight)
        problems.append(
            ("log_weight", not low - 1e-9 <= rel <= high + 1e-9, "within the weight's range")
        )
    for key, bad, expected in problems:
        if bad:
            got = state[key] if key in state else v.get(key)
            raise ValueError(f"{where}['{key}'] is out of range: expected {expected}, got {got!r}")
    if math.isnan(last_aim):
        raise ValueError(f"{where}['last_aim'] must not be NaN")
    numbers = ChanceState(*(values[k] for k in ChanceState._fields))
    return numbers, (counts[0], counts[1], counts[2]), last_aim
