"""The run's schedulers: the shared KL ceiling and the calibration of every ``auto`` scale."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from constraint_sched import (
    Backoff,
    ConstraintKind,
    ConstraintScheduler,
    DiscoveryPhase,
    HoldPhase,
    SchedulerCollection,
    SqueezeSchedule,
)
from constraint_sched.adapters.lbo_vae._config import TrainConfig
from constraint_sched.adapters.lbo_vae._goals import Goal

KL_GOALS = ("kl_core", "kl_detail")
"""The goals that share the scheduled KL ceiling."""

Bound = Literal["upper", "width"]

CALIBRATED_BOXES = ("detail_var", "median_var_core", "median_var_detail")
"""Variance boxes ``[0, u]`` whose ``u`` is calibrated like an ``auto`` scale, to twice the median.

A box scores best at its centre, so ``u = 2 * median`` centres it on the
variance the model settles at under plain MSE. The original's fixed bounds
(500, 1200) suit its 128-d latent on CelebA: a small model's variances are
two orders of magnitude smaller, and a box centred far above them pushes every
variance, and the KL with it, up.
"""

TIGHTEN_REJECT_RATE = 0.05
"""LBO.md section 5: a fixed scale is tightened only after an epoch rejecting less than this."""

TIGHTEST_SCALE = 5e-4
"""The adaptive tightening's limit: the smallest scale a ``MINIMIZE_SOFT`` spec may have."""

TIGHTEST_BOX = 0.1
"""The adaptive shrinking's limit for a fixed box: this fraction of its own half-width."""

CALIBRATION_HEADROOM = 0.1
"""How much wider an ``auto`` scale is from its calibration to the end of epoch 1 (LBO.md §3)."""


def build_schedulers(goals: Sequence[Goal], config: TrainConfig) -> SchedulerCollection:
    """Every scheduler of a run, as one collection.

    - ``kl``: both KL goals share one ceiling, discovered in epoch 1 as the max
      over the accepted steps, held for ``config.kl_hold`` epochs, squeezed to
      ``config.kl_target`` (geometric from the discovered ceiling, or the
      absolute ``config.kl_table``), backed off when an epoch after a squeeze
      rejects more than ``config.max_reject_rate`` of its steps.
    - one scheduler per ``auto`` scale: the median of the first
      ``config.calibration_steps`` steps, 10% wider until the end of epoch 1;
    - one per `CALIBRATED_BOXES` box: its upper bound twice that median;
    - one per fixed ``MINIMIZE_SOFT`` scale (LBO.md section 5): kept as given
      until the end of epoch ``config.tighten_from``, then tightened by
      ``config.tighten_factor`` after each epoch that rejects under 5% and
      that the run lets tighten (`tightened`), backed off like the KL;
    - one per other ``BOX`` (a ``side="width"`` scheduler): kept and then
      shrunk around its centre the same way, by half the rate (a half-width
      times ``1 - (1 - tighten_factor) / 2``), to at most `TIGHTEST_BOX` of
      its own.

    Raises:
        ValueError: A KL goal is missing, or the squeeze does not suit the specs
            (``kl_target`` or ``kl_table`` is named).
    """
    by_name = {g.name: g for g in goals}
    missing = [n for n in KL_GOALS if n not in by_name]
    if missing:
        raise ValueError(f"build_schedulers: the goal table has no {missing}")
    squeeze = (
        SqueezeSchedule.table(config.kl_table)
        if config.kl_table is not None
        else SqueezeSchedule.geometric(target=config.kl_target, epochs=config.kl_squeeze_epochs)
    )
    discovery, hold = DiscoveryPhase(statistic="max"), HoldPhase(epochs=config.kl_hold)
    backoff = Backoff(max_reject_rate=config.max_reject_rate, factor=1.0)
    try:
        kl = ConstraintScheduler(
            [by_name[n].spec for n in KL_GOALS],
            discovery=discovery,
            hold=hold,
            squeeze=squeeze,
            backoff=backoff,
            name="kl",
        )
    except ValueError as error:  # TrainConfig checks the floor; this names the keys for the rest
        key = "kl_table" if config.kl_table is not None else "kl_target"
        raise ValueError(
            f"TrainConfig.{key}={getattr(config, key)!r} (with kl_lower={config.kl_lower!r}, "
            f"kl_hold={config.kl_hold!r}) gives the KL ceiling no valid schedule: {error}"
        ) from None
    schedulers = [kl]
    for goal in goals:
        if goal.name in CALIBRATED_BOXES:
            schedulers.append(
                ConstraintScheduler(
                    goal.spec,
                    discovery=DiscoveryPhase(
                        statistic="median",
                        headroom=1.0,
                        steps=config.calibration_steps,
                        provisional_headroom=CALIBRATION_HEADROOM,
                    ),
                    hold=HoldPhase(epochs=0),
                )
            )
        elif goal.spec.kind is ConstraintKind.MINIMIZE_SOFT and goal.spec.scale != "auto":
            schedulers.append(_tightened(goal, config, TIGHTEST_SCALE, config.tighten_factor))
        elif goal.spec.kind is ConstraintKind.BOX:
            assert goal.spec.lower is not None
            assert goal.spec.upper is not None
            half = 0.5 * (float(goal.spec.upper) - float(goal.spec.lower))
            factor = box_factor(config.tighten_factor)
            schedulers.append(_tightened(goal, config, TIGHTEST_BOX * half, factor, "width"))
        elif goal.spec.scale == "auto":
            schedulers.append(
                ConstraintScheduler(
                    goal.spec,
                    discovery=DiscoveryPhase(
                        statistic="median",
                        steps=config.calibration_steps,
                        provisional_headroom=CALIBRATION_HEADROOM,
                    ),
                    hold=HoldPhase(epochs=0),
                )
            )
    return SchedulerCollection(schedulers)


def box_factor(tighten_factor: float) -> float:
    """A fixed box's half-width factor per tightening: LBO.md's half of the scales' rate."""
    return 1.0 - 0.5 * (1.0 - tighten_factor)


def _tightened(
    goal: Goal, config: TrainConfig, target: float, factor: float, side: Bound = "upper"
) -> ConstraintScheduler:
    """A fixed scale or box kept as given until ``tighten_from``, then tightened adaptively."""
    return ConstraintScheduler(
        goal.spec,
        side=side,
        discovery=DiscoveryPhase(statistic="given", epochs=config.tighten_from),
        hold=HoldPhase(epochs=0),
        squeeze=SqueezeSchedule.adaptive(
            target=target, factor=factor, max_reject_rate=TIGHTEN_REJECT_RATE
        ),
        backoff=Backoff(max_reject_rate=config.max_reject_rate, factor=1.0),
    )


def tightened(collection: SchedulerCollection) -> tuple[str, ...]:
    """The schedulers of fixed scales and boxes that LBO.md section 5 tightens, by name."""
    return tuple(s.name for s in collection if s.discovery.statistic == "given")


def calibrated(collection: SchedulerCollection) -> tuple[str, ...]:
    """The goals calibrated over the first steps (``auto`` scales, `CALIBRATED_BOXES`)."""
    return tuple(n for s in collection if s.discovery.steps is not None for n in s.names)
