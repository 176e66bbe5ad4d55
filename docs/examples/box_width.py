"""A box's two sides moved together, around its centre: ``side="width"``.

The log-variance box ``[-15, 10]`` has its centre at -2.5 and a half-width of
12.5. Kept for two epochs, it then shrinks by 2.5% an epoch (LBO's boxes, at
half the 5% rate of its scales), its centre fixed. What is observed, and what
a discovery by the max would find, is the distance ``|x - centre|``.
"""

from constraint_sched import (
    Backoff,
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    HoldPhase,
    SqueezeSchedule,
)

logvar = ConstraintScheduler(
    ConstraintSpec("logvar", "box", lower=-15.0, upper=10.0),
    side="width",
    discovery=DiscoveryPhase(statistic="given", epochs=2),  # [-15, 10] until the end of epoch 2
    hold=HoldPhase(epochs=0),
    squeeze=SqueezeSchedule.adaptive(target=1.25, factor=0.975),
    backoff=Backoff(max_reject_rate=0.15, factor=1.0),
)
for epoch in range(1, 6):
    for x in (-4.0, -1.0, 0.5):  # a stand-in for an epoch of log-variances
        logvar.observe(x)
    logvar.advance_epoch()
    spec = logvar.spec()
    print(epoch, round(logvar.bound, 4), (round(spec.lower, 4), round(spec.upper, 4)))

assert logvar.centre == -2.5
# 12.5 x 0.975 after each of epochs 2 to 5: a half-width of 11.296 around -2.5
assert (round(logvar.spec().lower, 3), round(logvar.spec().upper, 3)) == (-13.796, 8.796)
