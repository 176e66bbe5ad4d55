"""The seed's walk-through as a runnable demo: a simulated VAE's KL under a discovered ceiling.

Run ``python -m constraint_sched`` (``--help`` for options). A toy model stands
in for training: its KL drifts towards a natural level (high after
initialisation, higher for a larger learning rate), is pushed under the
ceiling by the barrier, and a step whose KL overshoots the ceiling is
rejected, as LBO's rollback would. The scheduler is the real one; only the
model is simulated.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import numpy as np

from constraint_sched._phases import Backoff
from constraint_sched._scheduler import ConstraintScheduler
from constraint_sched._schedules import SqueezeSchedule
from constraint_sched._spec import ConstraintSpec

SEED_TABLE = {
    3: 13000.0, 4: 11000.0, 5: 9500.0, 6: 8200.0, 7: 7000.0, 8: 6000.0, 9: 5200.0,
    10: 4600.0, 11: 4100.0, 12: 3700.0, 13: 3400.0, 14: 3200.0, 15: 3000.0,
}  # fmt: skip

SCENARIOS = {
    # name: (natural KL after initialisation, how fast the model follows the barrier)
    "seed": (36_000.0, 0.5),
    "explode": (170_000.0, 0.03),
    "low": (2_400.0, 0.5),
}


def simulate(
    scenario: str = "seed", epochs: int = 15, steps: int = 395, seed: int = 0
) -> ConstraintScheduler:
    """Run the simulated training and print what a trainer would print.

    Args:
        scenario: ``"seed"`` (the seed's expected run), ``"explode"`` (KL near
            200k after initialisation) or ``"low"`` (KL already under the target).
        epochs: Epochs to run.
        steps: Steps per epoch.
        seed: Seed of the simulated noise.

    Returns:
        The scheduler, after the last epoch.
    """
    natural, follow = SCENARIOS[scenario]
    rng = np.random.default_rng(seed)
    specs = [
        ConstraintSpec(name, "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
        for name in ("kl_core", "kl_detail")
    ]
    sched = ConstraintScheduler(
        specs, squeeze=SqueezeSchedule.table(SEED_TABLE), backoff=Backoff(max_reject_rate=0.15)
    )
    level = natural
    for _ in range(epochs):
        ceiling = sched.bound
        kept: list[tuple[float, float]] = []
        rejected = 0
        for _ in range(steps):
            goal = min(natural, 0.85 * ceiling)
            level += follow * (goal - level)
            core = level * (1.0 + 0.06 * rng.standard_normal())
            detail = 0.9 * level * (1.0 + 0.06 * rng.standard_normal())
            if max(core, detail) > ceiling:
                sched.reject()  # the step is rolled back: its values are not observed
                rejected += 1
                continue
            sched.observe({"kl_core": core, "kl_detail": detail})
            kept.append((core, detail))
        means = np.mean(kept, axis=0) if kept else (float("nan"), float("nan"))
        bound = "none (1e9)" if ceiling >= 1e9 else f"{ceiling:,.0f}"
        print(
            f"Epoch {sched.epoch:2d} | {sched.phase.name:<9} | ceiling {bound:>10} | "
            f"KL_core {means[0]:9,.1f} | KL_detail {means[1]:9,.1f} | "
            f"rejects {rejected}/{steps} ({rejected / steps:.1%})"
        )
        sched.advance_epoch()
    return sched


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m constraint_sched``."""
    parser = argparse.ArgumentParser(
        prog="python -m constraint_sched",
        description="The seed's KL-ceiling walk-through (discover, hold, squeeze, converge) "
        "on a simulated model, driven by the real scheduler.",
    )
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="seed")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--steps", type=int, default=395)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.steps < 1:
        parser.error("--epochs and --steps must be at least 1")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("    -> %(message)s"))
    log = logging.getLogger("constraint_sched")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        sched = simulate(args.scenario, args.epochs, args.steps, args.seed)
    finally:
        log.removeHandler(handler)
    print(f"Final: phase {sched.phase.name}, ceiling {sched.bound:,.1f}")
    return 0
