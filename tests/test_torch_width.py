"""The torch adapter observes a ``side="width"`` scheduler's distance from its centre, on any path."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from host_reads import host_reads_forbidden  # noqa: E402

from constraint_sched import (  # noqa: E402
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    HoldPhase,
    SchedulerCollection,
    SqueezeSchedule,
)
from constraint_sched.adapters.torch import TorchScheduler  # noqa: E402

# One step per row: logvar, detail_mean and whether the step is accepted.
STEPS = [(-3.0, 0.5, True), (4.0, -7.0, True), (-20.0, 2.0, False), (-9.5, math.nan, True)]


def core() -> SchedulerCollection:
    """Two boxes, each with a width discovered from the distances, held, then squeezed."""
    return SchedulerCollection(
        [
            ConstraintScheduler(
                ConstraintSpec(name, "box", lower=low, upper=high),
                side="width",
                discovery=DiscoveryPhase(statistic=statistic),
                hold=HoldPhase(epochs=1),
                squeeze=SqueezeSchedule.geometric(target=1.0, epochs=2),
            )
            for name, low, high, statistic in (
                ("logvar", -15.0, 10.0, "max"),  # centre -2.5
                ("detail_mean", -30.0, 30.0, "median"),  # centre 0
            )
        ]
    )


@pytest.mark.parametrize("feed", ["tensors, device", "cpu tensors, auto", "numbers"])
def test_every_feed_records_the_distance_from_the_centre(feed: str) -> None:
    sched = TorchScheduler(core(), accumulate="device" if "device" in feed else "auto")
    reference = core()
    guard = host_reads_forbidden() if "device" in feed else _nothing()
    with guard:
        for logvar, mean, accepted in STEPS:
            values = {"logvar": logvar, "detail_mean": mean}
            if feed == "numbers":
                sched.observe(values, accepted=accepted)
            else:
                tensors = {n: torch.tensor(v, requires_grad=True) for n, v in values.items()}
                sched.observe(tensors, accepted=torch.tensor(accepted))
                sched.reject(torch.tensor(not accepted))
    for logvar, mean, accepted in STEPS:
        if accepted:
            reference.observe({"logvar": logvar, "detail_mean": mean})
        else:
            reference.reject()
    if feed == "numbers":
        sched.reject(1)
    events = sched.advance_epoch()
    assert events == reference.advance_epoch()
    # max |x + 2.5| over accepted steps is 7 (x = -9.5); the median |x| of 0.5 and 7 is 3.75
    assert [(e.constraint, e.new) for e in events if e.kind == "discovered"] == [
        ("logvar", 7.0),
        ("detail_mean", 3.75),
    ]
    assert sched.spec("logvar") == reference.spec("logvar")
    assert (sched.spec("logvar").lower, sched.spec("logvar").upper) == (-9.5, 4.5)
    assert sched.last_tallies["logvar"].violations == 0  # nothing is outside the given box
    assert sched.last_tallies["detail_mean"].nonfinite == 1


def test_score_uses_the_shrunk_box() -> None:
    sched = TorchScheduler(core())
    sched.observe({"logvar": 4.5, "detail_mean": 1.0})
    sched.advance_epoch()  # logvar's box is now [-9.5, 4.5]
    x = torch.tensor([-2.5, 4.5, 10.0], dtype=torch.float64)
    expected = torch.tensor([sched.spec("logvar").score(float(v)) for v in x], dtype=torch.float64)
    torch.testing.assert_close(sched.score("logvar", x), expected)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None
