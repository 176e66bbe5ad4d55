"""The seed's adaptive KL ceiling (v17d), and its edge cases, on a stand-in for training.

Two KL goals, ``kl_core`` and ``kl_detail``, share one ceiling. Epoch 1
discovers it (the max over both), epoch 2 holds it, epochs 3-15 squeeze it by
the seed's table down to 3000. The training run is simulated: each epoch's KL
values stay under the ceiling in force, up to a natural level, and the
scenarios say how many steps are rolled back. The scheduler is the real one.
"""

import numpy as np

from constraint_sched import (
    BackedOff,
    Backoff,
    ConstraintScheduler,
    ConstraintSpec,
    Converged,
    DiscoveryExtended,
    Phase,
    SqueezeSchedule,
)

STEPS = 395  # steps per epoch, as in the seed's logs ("Rollbacks: 3/395")
KL_TABLE = {
    3: 13000, 4: 11000, 5: 9500, 6: 8200, 7: 7000, 8: 6000, 9: 5200,
    10: 4600, 11: 4100, 12: 3700, 13: 3400, 14: 3200, 15: 3000,
}  # fmt: skip


def make_scheduler():
    """The seed's set-up: no ceiling (1e9) until epoch 1 has shown where KL goes."""
    kl = [
        ConstraintSpec(name, "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
        for name in ("kl_core", "kl_detail")
    ]
    return ConstraintScheduler(
        kl,
        squeeze=SqueezeSchedule.table(KL_TABLE),
        backoff=Backoff(max_reject_rate=0.15),
        name="kl",  # in events and logs; the default is "kl_core+kl_detail"
    )


def run(title, peaks, rejects=None, epochs=15, seed=0):
    """Run ``epochs`` simulated epochs and print one line per epoch, then its events.

    Args:
        title: The scenario's name.
        peaks: The natural maximum of (kl_core, kl_detail) with no ceiling.
        rejects: {epoch: rolled-back steps}; 3 in epoch 1 and 0 elsewhere by default.
        epochs: How many epochs to run.
        seed: Seed of the simulated KL values.
    """
    rejects = {1: 3} if rejects is None else rejects
    rng = np.random.default_rng(seed)
    sched = make_scheduler()
    print(f"== {title}")
    for _ in range(epochs):
        epoch, ceiling = sched.epoch, sched.bound
        rolled_back = rejects.get(epoch, 0)
        accepted = STEPS - rolled_back
        if accepted:
            # Each half's KL stays under the ceiling in force (core at most 98% of
            # it, detail 95%) or at its natural peak; the epoch's largest value is
            # that level.
            levels = [
                min(peak, share * ceiling) for peak, share in zip(peaks, (0.98, 0.95), strict=True)
            ]
            values = [level * rng.uniform(0.8, 1.0, size=accepted) for level in levels]
            for column, level in zip(values, levels, strict=True):
                column[rng.integers(accepted)] = level
            for core, detail in zip(*values, strict=True):
                sched.observe({"kl_core": core, "kl_detail": detail})
        sched.reject(rolled_back)
        shown = "none" if ceiling >= 1e9 else f"{ceiling:,.1f}"
        top = "-" if not accepted else f"{max(values[0]):,.1f} / {max(values[1]):,.1f}"
        print(
            f"epoch {epoch:2d}  {sched.phase.name:9s}  ceiling {shown:>9}  "
            f"max KL core/detail {top:>19}  rollbacks {rolled_back:3d}/{STEPS} "
            f"({rolled_back / STEPS:.1%})"
        )
        for event in sched.advance_epoch():
            print(f"    {event.message}")
    print()
    return sched


# The seed's run: epoch-1 maxima 42,358.2 (kl_core) and 38,921.5 (kl_detail).
seed = run("the seed's run", peaks=(42_358.2, 38_921.5))

# KL explodes to 200k in epoch 1; the first squeeze (200k -> 13k) is too much:
# 30% of epoch 3's steps are rolled back.
explode = run(
    "KL explodes in epoch 1",
    peaks=(200_000.0, 180_000.0),
    rejects={1: 3, 3: round(0.3 * STEPS)},
    epochs=18,
)

# KL is already under the target in epoch 1.
low = run("KL already below the target", peaks=(2_500.0, 2_200.0), epochs=4)

# Every step of epoch 1 is rolled back: nothing valid was observed.
stalled = run(
    "every step of epoch 1 rejected", peaks=(42_358.2, 38_921.5), rejects={1: STEPS}, epochs=16
)

# The seed: discovered in epoch 1, held in epoch 2, table from epoch 3, converged in 15.
assert seed.discovered == 42_358.2
assert seed.phase is Phase.CONVERGED
assert seed.bound == 3000.0
assert seed.spec("kl_core").upper == seed.spec("kl_detail").upper == 3000.0
assert seed.spec("kl_core").healthy < 3000.0  # healthy moved inside the box

# Exploding KL: discovered and held at 200k, backed off once, converged three epochs late.
assert explode.discovered == 200_000.0
assert explode.phase is Phase.CONVERGED
assert explode.bound == 3000.0

# Low KL: converged at once, at the target; later epochs never loosen it to 13k.
assert low.discovered == 2_500.0
assert low.phase is Phase.CONVERGED
assert low.bound == 3000.0

# No valid observation in epoch 1: discovery extended; everything one epoch later.
assert stalled.discovered == 42_358.2
assert stalled.phase is Phase.CONVERGED
assert stalled.bound == 3000.0

# The events a callback would have seen, checked on a fresh run of the explosion.
events = []
probe = make_scheduler()
probe.add_callback(events.append)
probe.observe({"kl_core": 200_000.0, "kl_detail": 180_000.0})
probe.advance_epoch()  # discovered + held
probe.observe({"kl_core": 150_000.0, "kl_detail": 140_000.0})  # a held epoch counts with steps
probe.advance_epoch()  # squeezed to 13,000
probe.observe({"kl_core": 12_000.0, "kl_detail": 11_000.0})
probe.reject(1)  # 1 of 2 steps rolled back: 50% > 15%
probe.advance_epoch()
backoff = [e for e in events if isinstance(e, BackedOff)]
assert len(backoff) == 1
assert backoff[0].new == 13_000.0 + 0.5 * (200_000.0 - 13_000.0)  # factor 0.5 of the gap
assert not any(isinstance(e, (Converged, DiscoveryExtended)) for e in events)
