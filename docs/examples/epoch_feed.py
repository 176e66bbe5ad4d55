"""An adapter of your own over `EpochFeed`: an epoch's values from two sources, one read.

What `TorchScheduler` does with tensors, for numpy arrays: the feed counts
Python numbers on the host and arrays where they live (here one "device",
the CPU), reads both once at the epoch's end, and moves the bounds. The
adapter only says where a value goes (`route`); a checkpoint taken
mid-epoch resumes exactly.
"""

import numpy as np

from constraint_sched import (
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    EpochFeed,
    SqueezeSchedule,
)
from constraint_sched.state import Reader


def make_feed() -> EpochFeed:
    core = ConstraintScheduler(
        ConstraintSpec("kl", "upper", margin=1e9),
        discovery=DiscoveryPhase(statistic="median"),
        squeeze=SqueezeSchedule.geometric(8.0, epochs=3),
    )
    return EpochFeed(core, owner="NumpyScheduler", xp=np)


feed, twin = make_feed(), make_feed()


def route(name: str, value: object, where: object) -> tuple[object, object]:
    """Arrays are counted where they live; anything else on the host."""
    if isinstance(value, np.ndarray):
        return "cpu", value
    return None, value


rng = np.random.default_rng(0)
for epoch in range(1, 7):
    for step in range(50):
        kl = rng.normal(30.0 / epoch, 1.0)
        value = np.asarray(kl) if step % 2 else float(kl)  # half arrays, half numbers
        if epoch == 1 and step == 25:  # a checkpoint mid-epoch, restored into a twin
            twin.load(Reader(feed.state(), "saved"), device=lambda entry: "cpu")
        for f in (feed, twin) if (epoch, step) >= (1, 25) else (feed,):
            f.observe(f.items(value), route)
    events = feed.end_epoch(log=False)
    twin.end_epoch(log=False)
    for event in events:
        print(f"epoch {epoch}: {event.message}")

core = feed.core
print(f"phase {core.phase.name}, bound {core.bound:.3g}, last mean {feed.last['kl'].mean:.3g}")
assert core.phase.name == "CONVERGED"
assert core.bound == 8.0
assert 25.0 < core.discovered < 35.0  # the median of epoch 1's values, both sources merged
assert twin.core.discovered == core.discovered  # the twin resumed the same median sample
