"""A multiplier that keeps at most a share ``alpha`` of steps beyond a moving bound.

The maths is one pure function, `chance_step`, written against a four-function
namespace so that the core runs it on Python floats and the PyTorch adapter on
0-d tensors of the value's device (with no host synchronisation); the docs'
concepts page derives it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import attrs

from constraint_sched._spec import Bound

T = TypeVar("T")


def _number(name: str, low: float, high: float, *, low_open: bool = False) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"ChanceConstraint.{name} must be a number, got {value!r}")
        if not (math.isfinite(value) and (value > low if low_open else value >= low)):
            side = "(" if low_open else "["
            raise ValueError(
                f"ChanceConstraint.{name} must be in {side}{low:g}, {high:g}], got {value!r}"
            )
        if value > high:
            raise ValueError(
                f"ChanceConstraint.{name} must be in {'(' if low_open else '['}{low:g}, "
                f"{high:g}], got {value!r}"
            )

    return check


@attrs.frozen
class ChanceConstraint:
    """How a `ChanceMultiplier` holds a value under a moving ceiling (or over a floor).

    The constraint is a chance constraint: at most a share ``alpha`` of the
    steps may see the value beyond the bound in force. The multiplier aims
    the value at the bound less ``z`` times the value's running spread (``z``
    the normal quantile of ``1 - alpha``: the aim is where the running
    ``1 - alpha`` quantile of the value meets the bound), and reaches that
    aim with an integral controller on the logarithm of the weight, with an
    optional nuPI proportional term (Sohrabi et al. 2024) and a feed-forward
    of every move of the bound, so that the weight's scale never needs
    tuning. Every number here is relative (to the bound, to the weight), so
    the defaults hold across problems; see the concepts page for the
    derivation and the measurements behind the defaults.

    Args:
        alpha: The largest share of steps beyond the bound, in ``(0, 0.5]``.
        initial: The weight before the bound is known (during discovery):
            1 trains on the plain objective ``main + value``.
        integral_gain: The log-weight's change per step per unit of relative
            error (``(value - aim) / |bound|``).
        proportional_gain: nuPI's proportional term: the log-weight's response
            to the smoothed error (0, the default, turns it off: on the
            benchmark every positive value tried made the value swing).
        smoothing: nuPI's error smoothing ``nu`` in ``[0, 1)``.
        noise_window: Steps over which the step-to-step noise is averaged.
        max_margin: The largest margin, a fraction of ``|bound|``.
        elasticity: The assumed response of the value to its weight, the
            ``-d log(value) / d log(weight)`` by which a move of the bound is
            passed straight to the weight (a feed-forward; 0 turns it off).
        glide: The share of an epoch over which the aim moves from the bound
            in force to the next one (0: the next bound from the epoch's first
            step), so that the value is there before the bound is.
        min_weight: The smallest weight; None (the default) is ``initial``:
            the constraint only ever adds weight to the plain objective, as a
            Lagrange multiplier >= 0 does, and a value already under its bound
            is left alone.
        max_weight: The largest weight.

    Examples:
        >>> c = ChanceConstraint(alpha=0.05)
        >>> round(c.z, 3)
        1.645
        >>> ChanceConstraint(alpha=0.7)
        Traceback (most recent call last):
        ...
        ValueError: ChanceConstraint.alpha must be in (0, 0.5], got 0.7
    """

    alpha: float = attrs.field(default=0.05, validator=_number("alpha", 0.0, 0.5, low_open=True))
    initial: float = attrs.field(
        default=1.0, validator=_number("initial", 0.0, math.inf, low_open=True)
    )
    integral_gain: float = attrs.field(
        default=0.05, validator=_number("integral_gain", 0.0, 10.0, low_open=True)
    )
    proportional_gain: float = attrs.field(
        default=0.0, validator=_number("proportional_gain", 0.0, 100.0)
    )
    smoothing: float = attrs.field(default=0.9, validator=_number("smoothing", 0.0, 0.999))
    noise_window: int = attrs.field(default=50)
    max_margin: float = attrs.field(
        default=0.25, validator=_number("max_margin", 0.0, 1.0, low_open=True)
    )
    elasticity: float = attrs.field(default=0.7, validator=_number("elasticity", 0.0, 10.0))
    glide: float = attrs.field(default=0.3, validator=_number("glide", 0.0, 1.0))
    min_weight: float | None = attrs.field(default=None)
    max_weight: float = attrs.field(
        default=1e6, validator=_number("max_weight", 0.0, math.inf, low_open=True)
    )

    @noise_window.validator
    def _check_window(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"ChanceConstraint.noise_window must be an int >= 2, got {value!r}")

    @min_weight.validator
    def _check_min_weight(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            _number("min_weight", 0.0, math.inf, low_open=True)(self, attribute, value)

    @property
    def lowest_weight(self) -> float:
        """The smallest weight: ``min_weight``, or ``initial`` when it is None."""
        return self.initial if self.min_weight is None else self.min_weight

    def __attrs_post_init__(self) -> None:
        if not self.lowest_weight <= self.initial <= self.max_weight:
            raise ValueError(
                f"ChanceConstraint.initial must lie in [min_weight, max_weight] = "
                f"[{self.lowest_weight!r}, {self.max_weight!r}], got {self.initial!r}"
            )

    @property
    def z(self) -> float:
        """The starting margin in noise units: the normal quantile of ``1 - alpha``."""
        return statistics.NormalDist().inv_cdf(1.0 - self.alpha)


class Ops(Protocol[T]):
    """The four functions `chance_step` needs (on floats, or torch's in the adapter)."""

    def exp(self, x: T) -> T:
        """Elementwise ``e ** x``."""

    def sqrt(self, x: T) -> T:
        """Elementwise square root."""

    def clip(self, x: T, low: float, high: float) -> T:
        """``x`` clipped to ``[low, high]``."""

    def minimum(self, x: T, y: float) -> T:
        """The smaller of ``x`` and the number ``y``."""


class ChanceState(NamedTuple, Generic[T]):
    """The multiplier's per-step state: floats (the core) or 0-d tensors (the adapter)."""

    log_weight: T
    integral: T
    error: T
    mean: T
    noise: T


class _FloatOps:
    def exp(self, x: Any) -> Any:
        return math.exp(x)

    def sqrt(self, x: Any) -> Any:
        return math.sqrt(x)

    def clip(self, x: Any, low: float, high: float) -> Any:
        return min(max(x, low), high)

    def minimum(self, x: Any, y: float) -> Any:
        return min(x, y)


FLOAT_OPS: Ops[Any] = _FloatOps()
"""`Ops` over Python floats (the core's; the adapter has torch's)."""


def observe_noise(ops: Ops[Any], st: ChanceState[Any], value: Any, window: int) -> ChanceState[Any]:
    """Fold one value into the running mean and spread; the weight is unchanged.

    Both are exponential moving averages over about ``window`` steps: the
    spread is that of the values around their running mean, so it holds the
    step-to-step noise and the slower swings of the value alike, which is
    what decides how often the value crosses a bound.
    """
    w = 1.0 / window
    diff = value - st.mean
    mean = st.mean + w * diff
    noise = (1.0 - w) * (st.noise + w * diff * diff)
    return st._replace(noise=noise, mean=mean)


def chance_step(
    ops: Ops[Any],
    st: ChanceState[Any],
    value: Any,
    *,
    aim_bound: float,
    moved_from: float,
    z: float,
    sign: float,
    cfg: ChanceConstraint,
) -> ChanceState[Any]:
    """One step of the multiplier: the next state after seeing ``value``.

    Args:
        ops: The array functions.
        st: The state before the step (its ``noise`` already holds this step's value).
        value: The step's value (per example, as the bound is).
        aim_bound: The bound the value is held under (over, for a floor) this
            step: the bound in force, or on its way to the next one.
        moved_from: The previous step's ``aim_bound``, for the feed-forward.
        z: The margin in noise units.
        sign: +1 for a ceiling, -1 for a floor.
        cfg: The settings.

    Returns:
        The next state; its ``log_weight`` is the weight for the next step.
    """
    scale = abs(aim_bound) or 1.0
    margin = ops.minimum(z * ops.sqrt(st.noise), cfg.max_margin * scale)
    aim = aim_bound - sign * margin
    error = sign * (value - aim) / scale
    smoothed = cfg.smoothing * st.error + (1.0 - cfg.smoothing) * error
    forward = 0.0
    if cfg.elasticity > 0 and moved_from != aim_bound and moved_from * aim_bound > 0:
        forward = sign * math.log(moved_from / aim_bound) / cfg.elasticity
    integral = st.integral + cfg.integral_gain * error + forward
    base = math.log(cfg.initial)
    low, high = math.log(cfg.lowest_weight), math.log(cfg.max_weight)
    # Anti-windup: the integral itself stays within the weight's range.
    integral = ops.clip(integral, low - base, high - base)
    log_weight = ops.clip(base + integral + cfg.proportional_gain * smoothed, low, high)
    return ChanceState(log_weight, integral, smoothed, st.mean, st.noise)


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

    Feed it each step's value with the bound to aim under (`update`), and
    each epoch's share of steps that were beyond the bound in force
    (`end_epoch`); read `weight` for the loss ``main + weight * value``. The
    weight stays at ``initial`` while the bound is infinite (during
    discovery). Python floats only; the PyTorch adapter runs the same
    maths on the device.

    Args:
        settings: The `ChanceConstraint` (defaults: ``alpha`` 0.05).
        side: ``"upper"`` (a ceiling: the weight penalises the value) or
            ``"lower"`` (a floor: it rewards it).

    Examples:
        >>> m = ChanceMultiplier()
        >>> m.weight
        1.0
        >>> for _ in range(200):
        ...     _ = m.update(12.0, bound=10.0)  # 20% over, every step: the weight grows
        >>> round(m.weight, 2)
        7.39
        >>> for _ in range(200):
        ...     _ = m.update(1.0, bound=10.0)  # far under: back to the plain objective's 1
        >>> m.weight
        1.0
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
        self._z = settings.z  # the margin in units of the value's spread
        self._steps = 0
        self._last_bound = math.inf
        self._st: ChanceState[float] = ChanceState(math.log(settings.initial), 0.0, 0.0, 0.0, 0.0)

    @property
    def settings(self) -> ChanceConstraint:
        """The settings."""
        return self._cfg

    @property
    def side(self) -> Bound:
        """``"upper"`` or ``"lower"``."""
        return self._side

    @property
    def weight(self) -> float:
        """The weight for the next step."""
        return math.exp(self._st.log_weight)

    @property
    def noise(self) -> float:
        """The value's running standard deviation around its running mean."""
        return math.sqrt(self._st.noise)

    def margin(self, bound: float) -> float:
        """How far inside ``bound`` the value is aimed now."""
        scale = abs(bound) or 1.0
        return min(self._z * self.noise, self._cfg.max_margin * scale)

    def update(self, value: float, bound: float, *, aim: float | None = None) -> float:
        """Take one step's value; return the weight for the next step.

        Args:
            value: The step's value (finite; per example, like the bound).
            bound: The bound in force this step; ``inf`` (``-inf`` for a
                floor) while it is not known yet.
            aim: The bound to aim under (over, for a floor), if not ``bound``:
                tighter than it while the bound is about to move.

        Raises:
            ValueError: A value that is not finite.
        """
        x = float(value)
        if not math.isfinite(x):
            raise ValueError(f"ChanceMultiplier.update: value must be finite, got {value!r}")
        b = float(bound)
        a = b if aim is None else float(aim)
        if self._steps == 0:
            self._st = self._st._replace(mean=x)
        self._st = observe_noise(FLOAT_OPS, self._st, x, self._cfg.noise_window)
        self._steps += 1
        if math.isfinite(b) and math.isfinite(a):
            moved = self._last_bound if math.isfinite(self._last_bound) else a
            self._st = chance_step(
                FLOAT_OPS,
                self._st,
                x,
                aim_bound=a,
                moved_from=moved,
                z=self._z,
                sign=self._sign,
                cfg=self._cfg,
            )
        self._last_bound = a
        return self.weight

    def state_dict(self) -> dict[str, Any]:
        """The multiplier's state as plain Python numbers."""
        return {
            **{k: float(v) for k, v in self._st._asdict().items()},
            "steps": self._steps,
            "last_bound": self._last_bound,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict`; nothing changes if it is invalid.

        Raises:
            TypeError: Not a mapping.
            KeyError: A missing entry, named.
            ValueError: An entry that is not a number of the right range, named.
        """
        values = read_state(state, "ChanceMultiplier")
        self._st = ChanceState(*(values[k] for k in ChanceState._fields))
        self._steps = int(values["steps"])
        self._last_bound = values["last_bound"]

    def __repr__(self) -> str:
        return f"ChanceMultiplier(weight={self.weight:.6g}, side={self._side!r})"


def read_state(state: Any, owner: str) -> dict[str, float]:
    """Check a multiplier's state dict: every entry present, a real number, in range.

    Args:
        state: The mapping to check.
        owner: The class name, for messages.

    Returns:
        The entries as floats (``steps`` an integral float).
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"{owner}.load_state_dict: expected a mapping, got {type(state).__name__}")
    out: dict[str, float] = {}
    for key in (*ChanceState._fields, "steps", "last_bound"):
        if key not in state:
            raise KeyError(f"{owner}.load_state_dict: state['{key}'] is missing")
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(
                f"{owner}.load_state_dict: state['{key}'] must be a number, got {value!r}"
            )
        x = float(value)
        bad = (
            (key != "last_bound" and not math.isfinite(x))
            or (key in ("noise", "steps") and x < 0)
            or (key == "steps" and x != int(x))
            or (key == "last_bound" and math.isnan(x))
        )
        if bad:
            raise ValueError(f"{owner}.load_state_dict: state['{key}'] is out of range: {value!r}")
        out[key] = x
    return out
