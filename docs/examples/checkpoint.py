"""Save a scheduler to JSON mid-run, resume it in a new process's worth of objects, compare.

A run is interrupted in the middle of epoch 4 (during the squeeze), its
scheduler saved with ``state_dict()`` as strict JSON, and restored into a
freshly built scheduler with ``load_state_dict()``. The resumed run and an
uninterrupted one then see the same values and must agree on every event.
Finally, two loads that must fail: a different configuration, and a state
dict written by a newer release.
"""

import json
import os
import tempfile

import numpy as np

from constraint_sched import (
    FORMAT_VERSION,
    Backoff,
    ConstraintScheduler,
    ConstraintSpec,
    SqueezeSchedule,
)


def build(target=3000.0):
    """The scheduler as the training script builds it, before any checkpoint is loaded."""
    return ConstraintScheduler(
        ConstraintSpec("kl", "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9),
        squeeze=SqueezeSchedule.geometric(target=target, epochs=6),
        backoff=Backoff(max_reject_rate=0.15),
    )


def feed(sched, rng, steps):
    """Some steps of simulated training: KL under the ceiling, one step in ten rolled back."""
    for _ in range(steps):
        if rng.uniform() < 0.1:
            sched.reject()
        else:
            sched.observe(min(40_000.0, 0.95 * sched.bound) * rng.uniform(0.7, 1.0))


rng = np.random.default_rng(7)
original = build()
for _ in range(3):  # epochs 1-3
    feed(original, rng, 100)
    original.advance_epoch()
feed(original, rng, 40)  # part of epoch 4

with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "scheduler.json")
    with open(path, "w") as f:
        json.dump(original.state_dict(), f, allow_nan=False)  # strict JSON: no NaN/Infinity
    resumed = build()  # built from the same configuration...
    with open(path) as f:
        resumed.load_state_dict(json.load(f))  # ...then given the saved state


def describe(sched):
    seen = sched.current_epoch
    return (
        f"epoch {sched.epoch} {sched.phase.name}, ceiling {sched.bound:,.1f}; "
        f"this epoch so far: {seen.steps} steps kept, {seen.rejects} rolled back"
    )


print("saved:  ", describe(original))
print("resumed:", describe(resumed))
assert resumed.state_dict() == original.state_dict()
assert resumed.current_epoch == original.current_epoch  # the half epoch's counts too

# Both see the same rest of the run, and agree on every event and bound.
rest = np.random.default_rng(11)
rest_copy = np.random.default_rng(11)
for _ in range(6):
    feed(original, rest, 60)
    feed(resumed, rest_copy, 60)
    a, b = original.advance_epoch(), resumed.advance_epoch()
    assert a == b
    assert (original.epoch, original.phase, original.bound) == (
        resumed.epoch,
        resumed.phase,
        resumed.bound,
    )
    for event in a:
        print("   ", event.message)
print("after:  ", describe(resumed))

# A state dict never changes the configuration: build the scheduler as it was saved.
state = original.state_dict()
try:
    build(target=2000.0).load_state_dict(state)
except ValueError as error:
    print("\nother configuration:", error)
else:
    raise AssertionError("a different target must not load")

# A state dict from a newer format version is refused, not guessed at.
newer = dict(state, version=FORMAT_VERSION + 1)
try:
    build().load_state_dict(newer)
except ValueError as error:
    print("newer version:", error)
else:
    raise AssertionError("a newer format must not load")
