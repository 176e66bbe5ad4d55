"""The chance multiplier's step, as pure functions over a namespace.

`discovery_step` runs while the bound is unknown (the weight is 0; the main
loss's level and the value's noise are measured), `chance_step` once it is
known, and `multiplier_step` picks between them and leaves the state alone
on a non-finite value. `plan_step` is the host's bookkeeping of a step (its
aim, the epoch's counts) written the same way, so that JAX runs the whole
step inside ``jax.jit``. The docs' concepts page derives the maths.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from constraint_sched.functional._namespace import host, namespace, ndtri

if TYPE_CHECKING:
    from constraint_sched._chance import ChanceConstraint

T = TypeVar("T")

SPREAD_CLIP = 3.5
"""A step moves the spread estimate by at most this many of its current spreads."""

MIN_SHARE = 0.002
"""The smallest per-step share the epoch's budget squeezes the aim to (a margin of 2.9 spreads)."""


class ChanceState(NamedTuple, Generic[T]):
    """The multiplier's numbers: floats (the core) or 0-d arrays (an adapter)."""

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
    """The state before any step, every field ``zero`` (a float or a 0-d array)."""
    return ChanceState(*([zero] * len(ChanceState._fields)))


class StepPlan(NamedTuple):
    """What the host knows about one step (numbers, or 0-d arrays under ``jax.jit``)."""

    bound: Any
    """The bound in force (infinite while unknown)."""
    aim_bound: Any
    """The bound the value is aimed under this step (the bound, or on its way to the next)."""
    moved_from: Any
    """The previous step's ``aim_bound`` (for the feed-forward), or ``aim_bound``."""
    epoch_steps: Any
    """Steps of this epoch so far, this one included."""
    epoch_length: Any
    """The steps the epoch is expected to have (the last epoch's, or this one's so far)."""
    sign: float
    """+1 for a ceiling, -1 for a floor."""

    @property
    def known(self) -> bool:
        """Whether the bound is known (the multiplier weighs the value); host plans only."""
        return math.isfinite(self.bound) and math.isfinite(self.aim_bound)


class Clock(NamedTuple):
    """A term's step counts and last aim, from which `plan_step` makes each step's plan."""

    epoch_steps: Any
    """Steps of this epoch so far."""
    last_steps: Any
    """The last epoch's steps (the aim glides over a share of them)."""
    last_epoch_steps: Any
    """The last non-empty epoch's steps (the epoch's expected length)."""
    last_aim: Any
    """The last finite aim (``inf`` before any)."""


def glide(xp: Any, bound: Any, upcoming: Any, progress: Any) -> Any:
    """The bound to aim under at ``progress`` (0 to 1) of an epoch whose next bound is ``upcoming``.

    Geometric between bounds of one sign, linear otherwise; ``bound`` itself
    when either is infinite.

    Examples:
        >>> glide(host, 100.0, 25.0, 0.5)
        50.0
    """
    if xp is host:
        if upcoming == bound or not (math.isfinite(bound) and math.isfinite(upcoming)):
            return bound
        f = min(max(progress, 0.0), 1.0)
        if bound * upcoming > 0:
            return float(bound * (upcoming / bound) ** f)
        return bound + (upcoming - bound) * f
    f = xp.clip(progress, 0.0, 1.0)
    same = bound * upcoming > 0
    geometric = bound * xp.where(same, upcoming / xp.where(same, bound, 1.0), 1.0) ** f
    moving = xp.isfinite(bound) & xp.isfinite(upcoming) & (upcoming != bound)
    inside = xp.where(same, geometric, bound + (upcoming - bound) * f)
    return xp.where(moving, inside, bound)


def plan_step(
    xp: Any, clock: Clock, bound: Any, upcoming: Any, sign: float, glide_share: float
) -> tuple[StepPlan, Clock]:
    """One step's plan and the clock after it.

    Args:
        xp: The namespace of the clock's numbers.
        clock: The counts before the step.
        bound: The bound in force (``inf``, ``-inf`` for a floor, while unknown).
        upcoming: The bound the next epoch will hold.
        sign: +1 for a ceiling, -1 for a floor.
        glide_share: The share of an epoch over which the aim moves to ``upcoming``.
    """
    span = glide_share * clock.last_steps
    progress = xp.where(span > 0, clock.epoch_steps / xp.where(span > 0, span, 1.0), 1.0)
    aim = xp.where(xp.isfinite(bound), glide(xp, bound, upcoming, progress), bound)
    steps = clock.epoch_steps + 1
    plan = StepPlan(
        bound=bound,
        aim_bound=aim,
        moved_from=xp.where(xp.isfinite(clock.last_aim), clock.last_aim, aim),
        epoch_steps=steps,
        epoch_length=xp.where(clock.last_epoch_steps > steps, clock.last_epoch_steps, steps),
        sign=sign,
    )
    last_aim = xp.where(xp.isfinite(aim), aim, clock.last_aim)
    return plan, clock._replace(epoch_steps=steps, last_aim=last_aim)


JUMP_MAX = 1e38
"""The largest squared change `discovery_step` counts, and squared deviation `chance_step`
takes into the spread (within float32's range too)."""


def discovery_step(
    xp: Any, st: ChanceState[Any], value: Any, main: Any, cfg: ChanceConstraint
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
    main_level = xp.where(first, main, st.main_level + lam_main * (main - st.main_level))
    # Clipped: values far apart (1e300, say) must not make the noise, or a saved state, inf.
    change = xp.clip(0.5 * diff * diff, max=JUMP_MAX)
    jump = xp.where(first, 0.0 * value, (1.0 - lam) * st.jump + lam * change)
    return st._replace(main_level=main_level, jump=jump, last=value, seen=st.seen + 1.0)


def chance_step(
    xp: Any,
    st: ChanceState[Any],
    value: Any,
    main: Any,
    plan: StepPlan,
    cfg: ChanceConstraint,
) -> ChanceState[Any]:
    """One step once the bound is known: the next state after seeing ``value``.

    Args:
        xp: The namespace of the state's numbers.
        st: The state before the step.
        value: The step's value (per example, as the bound is).
        main: The step's main loss (read only when the bound has just appeared
            and no discovery step measured its level).
        plan: The step's plan (numbers on the host, or arrays under ``jax.jit``).
        cfg: The settings.

    Returns:
        The next state; its ``log_weight`` is the weight for the next step.
    """
    px = namespace(plan.bound, plan.aim_bound, plan.moved_from, plan.epoch_length)
    sign, aim_bound = plan.sign, plan.aim_bound
    scale = px.where(aim_bound == 0, 1.0, px.abs(aim_bound))
    position = sign * (value - aim_bound) / scale  # > 0: beyond the bound it tracks
    # The first step with a bound sets the unit and seeds the spread from discovery's noise.
    fresh = st.scaled == 0
    level = xp.where(st.seen == 0, main, st.main_level)
    # (A level that is not positive is refused on the host; on a device it would give nan.)
    log_level = xp.log(xp.clip(level, min=1e-30)) - px.log(scale)
    log_unit = xp.where(fresh, log_level, st.log_unit)
    integral = xp.where(fresh, 0.0 * st.integral, st.integral)
    track = xp.where(fresh, position, st.track)
    # Discovery's average of squared changes started at 0: divide by the weight it gathered.
    lam = 1.0 / cfg.noise_window
    gathered = xp.clip(1.0 - (1.0 - lam) ** xp.clip(st.seen - 1.0, min=0.0), min=1e-12)
    noise = xp.where(fresh, st.jump / gathered / (scale * scale), st.noise)
    # The spread of the position around its running mean: the bound's planned moves are
    # not in it, and a step moves it by at most SPREAD_CLIP spreads (a transient is not noise).
    dev = position - track
    limit = SPREAD_CLIP * xp.sqrt(noise)
    dev = xp.where(noise > 0, xp.clip(dev, -limit, limit), dev)
    track = track + lam * dev
    # Clipped as discovery's change is: a deviation of 1e300 must not make the noise inf.
    noise = (1.0 - lam) * (noise + lam * xp.clip(dev * dev, max=JUMP_MAX))
    # The epoch's budget: steps beyond the bound in force ahead of the aimed share tighten it.
    overs = st.overs + xp.where(sign * (value - plan.bound) > 0, 1.0, 0.0)
    share = cfg.step_share
    budget = cfg.alpha * px.clip(plan.epoch_length, min=1)
    ahead = overs - share * plan.epoch_steps
    allowed = share * xp.clip(1.0 - ahead / budget, min(MIN_SHARE / share, 1.0), 1.0)
    margin = xp.clip(ndtri(xp, 1.0 - allowed) * xp.sqrt(noise), max=cfg.max_margin)
    error = position + margin  # relative to the bound: > 0 beyond the aim
    forward: Any = 0.0
    if cfg.elasticity > 0:  # a move of the aim, passed straight to the weight
        moved = plan.moved_from
        ok = (moved != aim_bound) & (moved * aim_bound > 0)
        ratio = px.where(ok, moved / px.where(ok, aim_bound, 1.0), 1.0)
        forward = px.where(ok, sign * px.log(ratio) / cfg.elasticity, 0.0)
    low = math.log(cfg.min_weight / cfg.first_weight)
    high = math.log(cfg.max_weight / cfg.first_weight)
    # Anti-windup: the integral itself stays within the weight's range.
    integral = xp.clip(integral + cfg.integral_gain * error + forward, low, high)
    push = cfg.proportional_gain * xp.clip(error, min=0.0)
    log_weight = log_unit + math.log(cfg.first_weight) + xp.clip(integral + push, low, high)
    return ChanceState(
        scaled=0.0 * st.scaled + 1.0,
        log_unit=log_unit,
        integral=integral,
        log_weight=log_weight,
        main_level=xp.where(fresh, level, st.main_level),
        last=st.last,
        jump=st.jump,
        seen=st.seen,
        track=track,
        noise=noise,
        overs=overs,
    )


def multiplier_step(
    xp: Any,
    st: ChanceState[Any],
    value: Any,
    main: Any,
    plan: StepPlan,
    cfg: ChanceConstraint,
) -> ChanceState[Any]:
    """The state after one step: discovery's or the chance step, by whether the bound is known.

    A value or main loss that is not finite leaves the state as it was (the
    scheduler counts such a step; the multiplier learns nothing from it).
    """
    px = namespace(plan.bound, plan.aim_bound)
    known = px.isfinite(plan.bound) & px.isfinite(plan.aim_bound)
    if px is host:
        new = (chance_step if known else _discovery)(xp, st, value, main, plan, cfg)
    else:  # the plan is traced: both branches, one selected
        a = chance_step(xp, st, value, main, plan, cfg)
        b = discovery_step(xp, st, value, main, cfg)
        new = ChanceState(*(xp.where(known, x, y) for x, y in zip(a, b, strict=True)))
    ok = xp.isfinite(value) & xp.isfinite(main)
    if xp is host:
        return new if ok else st
    return ChanceState(*(xp.where(ok, x, y) for x, y in zip(new, st, strict=True)))


def _discovery(
    xp: Any, st: ChanceState[Any], value: Any, main: Any, plan: StepPlan, cfg: ChanceConstraint
) -> ChanceState[Any]:
    return discovery_step(xp, st, value, main, cfg)


def weight(xp: Any, st: ChanceState[Any]) -> Any:
    """The weight the state gives the next step: 0 until the bound is known."""
    if xp is host:
        return math.exp(st.log_weight) if st.scaled else 0.0
    return xp.where(st.scaled > 0, xp.exp(st.log_weight), 0.0)
