"""Quick start: a ceiling discovered in epoch 1, held in epoch 2, squeezed to 3000.

A stand-in for training produces one KL value per step. The scheduler watches
the values in epoch 1, holds the ceiling it found in epoch 2, then squeezes it
geometrically to the target in five epochs.
"""

import numpy as np

from constraint_sched import (
    Backoff,
    ConstraintScheduler,
    ConstraintSpec,
    Phase,
    SqueezeSchedule,
)

rng = np.random.default_rng(0)

# A KL goal with a floor of 100, a healthy value of 3000 and no ceiling yet (1e9).
kl = ConstraintSpec("kl", "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
sched = ConstraintScheduler(
    kl,
    squeeze=SqueezeSchedule.geometric(target=3000.0, epochs=5),
    backoff=Backoff(max_reject_rate=0.15),
)

for _ in range(8):
    spec = sched.spec()  # the spec with the current ceiling: use spec.score(kl) in the loss
    for _step in range(200):
        # Stand-in for a training step: the KL sits under the ceiling in force,
        # or at its natural level (about 40,000) when that is lower.
        value = min(40_000.0, 0.95 * spec.upper) * rng.uniform(0.7, 1.0)
        sched.observe(value)  # an accepted step; call sched.reject() for a rolled-back one
    for event in sched.advance_epoch():
        print(event.message)

print(f"epoch {sched.epoch}: {sched.phase.name}, ceiling {sched.bound:,.0f}")

assert 35_000.0 < sched.discovered <= 40_000.0  # found from the data, not guessed
assert sched.phase is Phase.CONVERGED
assert sched.bound == 3000.0 == sched.spec().upper
