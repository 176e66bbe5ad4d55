"""A fixed scale kept as given for five epochs, then tightened adaptively, with backoff.

The bound is the spec's own (0.4): nothing is discovered. From the end of
epoch 5 each epoch that rejects at most 5% of its steps multiplies it by 0.95,
and an epoch after a tightening that rejects more than 15% undoes it.
"""

from constraint_sched import (
    Backoff,
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    HoldPhase,
    SqueezeSchedule,
)

inactive = ConstraintScheduler(
    ConstraintSpec("inactive", "minimize_soft", scale=0.4),
    discovery=DiscoveryPhase(statistic="given", epochs=5),  # 0.4 until the end of epoch 5
    hold=HoldPhase(epochs=0),
    squeeze=SqueezeSchedule.adaptive(target=5e-4, factor=0.95),
    backoff=Backoff(max_reject_rate=0.15, factor=1.0),
)
for epoch in range(1, 8):
    for _ in range(100):  # a stand-in for an epoch of steps
        inactive.observe(0.2)
    events = inactive.advance_epoch(tighten=epoch != 6)  # a readiness test of your own
    print(epoch, round(inactive.bound, 4), [e.kind for e in events])

assert round(inactive.bound, 4) == 0.361  # 0.4 x 0.95 after epochs 5 and 7, not after 6
