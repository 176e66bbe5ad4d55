"""The seed's numbers (seeds/000: v17d, adaptive KL ceiling discovery), in one place."""

from __future__ import annotations

from constraint_sched import ConstraintSpec

#: The squeeze table, keyed by the epoch in which each bound applies.
KL_TABLE: dict[int, float] = {
    3: 13000.0,
    4: 11000.0,
    5: 9500.0,
    6: 8200.0,
    7: 7000.0,
    8: 6000.0,
    9: 5200.0,
    10: 4600.0,
    11: 4100.0,
    12: 3700.0,
    13: 3400.0,
    14: 3200.0,
    15: 3000.0,
}
KL_TARGET = 3000.0
#: The maxima of the seed's expected epoch-1 log.
MAX_KL_CORE = 42358.2
MAX_KL_DETAIL = 38921.5
#: "Rollbacks: 3/395" in epoch 1: 395 steps per epoch.
STEPS_PER_EPOCH = 395


def kl_specs() -> list[ConstraintSpec]:
    """The seed's two KL goals: BOX_ASYMMETRIC, lower 100, healthy 3000, no ceiling (1e9)."""
    return [
        ConstraintSpec(name, "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
        for name in ("kl_core", "kl_detail")
    ]
