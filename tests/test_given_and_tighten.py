"""A bound given rather than discovered (``statistic="given"``), and squeezes held back by the caller."""

from __future__ import annotations

import pytest

from constraint_sched import (
    Backoff,
    ConstraintScheduler,
    ConstraintSpec,
    Discovered,
    DiscoveryExtended,
    DiscoveryPhase,
    HoldPhase,
    Phase,
    SchedulerCollection,
    SqueezeSchedule,
)


def tightened(epochs: int = 3) -> ConstraintScheduler:
    """A fixed soft scale of 0.4, kept for ``epochs`` epochs, then tightened by 5% an epoch."""
    return ConstraintScheduler(
        ConstraintSpec("inactive", "minimize_soft", scale=0.4),
        discovery=DiscoveryPhase(statistic="given", epochs=epochs),
        hold=HoldPhase(epochs=0),
        squeeze=SqueezeSchedule.adaptive(target=0.1, factor=0.95, max_reject_rate=0.05),
        backoff=Backoff(max_reject_rate=0.15, factor=1.0),
    )


def test_a_given_bound_is_kept_through_discovery_with_or_without_observations() -> None:
    sched = tightened(epochs=3)
    assert sched.bound == 0.4
    sched.observe(5.0)  # far above the scale: a discovering max would take it
    assert sched.advance_epoch() == []
    sched.reject()  # a rejected step: an epoch with no observation counts too
    assert sched.advance_epoch() == []
    sched.observe(0.05)
    events = sched.advance_epoch()
    assert isinstance(events[0], Discovered)
    assert events[0].new == 0.4
    assert events[0].message == "inactive: kept the given ceiling 0.4; applies from epoch 4"
    assert sched.phase is Phase.SQUEEZE
    assert sched.bound == pytest.approx(0.38)  # the adaptive squeeze's first step


def test_an_epoch_without_a_step_does_not_count_towards_a_given_discovery() -> None:
    sched = tightened(epochs=2)
    sched.observe(0.05)
    assert sched.advance_epoch() == []
    (extended,) = sched.advance_epoch()  # no observation and no rejection
    assert isinstance(extended, DiscoveryExtended)
    assert (extended.old, extended.new, extended.epoch) == (0.4, 0.4, 3)
    assert extended.reason == "no step in epoch 2"
    assert (sched.phase, sched.bound, sched.epoch) == (Phase.DISCOVERY, 0.4, 3)
    sched.observe(0.05)
    events = sched.advance_epoch()  # the second epoch with a step ends discovery
    assert isinstance(events[0], Discovered)
    assert events[0].message == "inactive: kept the given ceiling 0.4; applies from epoch 4"
    assert sched.bound == pytest.approx(0.38)


def test_a_given_bound_is_tightened_and_backed_off_like_a_discovered_one() -> None:
    sched = tightened(epochs=1)
    sched.observe(0.3)
    sched.advance_epoch()
    assert sched.bound == pytest.approx(0.38)
    for _ in range(3):
        sched.observe(0.3)
    sched.reject(2)  # 40% of the epoch's steps after a squeeze: back off
    sched.advance_epoch()
    assert sched.bound == pytest.approx(0.4)


def test_a_given_bound_restores_from_a_state_dict_mid_discovery() -> None:
    sched = tightened(epochs=3)
    sched.observe(0.05)
    sched.advance_epoch()
    clone = tightened(epochs=3)
    clone.load_state_dict(sched.state_dict())
    for s in (sched, clone):
        for _ in range(2):
            s.observe(0.05)  # each epoch counts only with a step
            s.advance_epoch()
    assert clone.bound == sched.bound == pytest.approx(0.38)


@pytest.mark.parametrize(
    "extra", [{"steps": 10}, {"plateau": 0.1, "max_epochs": 3}, {"headroom": 0.1}]
)
def test_given_takes_no_steps_plateau_or_headroom(extra: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"statistic='given'\) keeps the spec's own bound"):
        DiscoveryPhase(statistic="given", **extra)  # type: ignore[arg-type]


def geometric() -> ConstraintScheduler:
    return ConstraintScheduler(
        ConstraintSpec("kl", "upper", margin=1e9),
        hold=HoldPhase(epochs=0),
        squeeze=SqueezeSchedule.geometric(target=10.0, epochs=2),
        name="kl",
    )


def test_tighten_false_holds_a_squeeze_step_back_until_the_caller_allows_it() -> None:
    sched = geometric()
    sched.observe(1000.0)
    sched.advance_epoch(tighten=False)  # discovered; the first squeeze waits
    assert sched.phase is Phase.SQUEEZE
    assert sched.bound == 1000.0
    sched.observe(5.0)  # each epoch gets a step well inside the bound: it counts
    sched.advance_epoch(tighten=False)
    assert sched.bound == 1000.0
    sched.observe(5.0)
    sched.advance_epoch()
    assert sched.bound == pytest.approx(100.0)  # the first step, not a skipped one
    sched.observe(5.0)
    sched.advance_epoch()
    assert sched.bound == pytest.approx(10.0)
    assert sched.phase is Phase.CONVERGED


def test_a_collection_tightens_only_the_schedulers_it_is_told() -> None:
    collection = SchedulerCollection([geometric(), tightened(epochs=1)])
    collection["kl"].observe(1000.0)
    collection["inactive"].observe(0.05)
    collection.advance_epoch(tighten={"kl"})
    assert collection["kl"].bound == pytest.approx(100.0)
    assert collection["inactive"].bound == 0.4  # kept, not tightened
    assert collection["inactive"].phase is Phase.SQUEEZE
    collection["kl"].observe(5.0)  # steps in both: the held-back epoch counts
    collection["inactive"].observe(0.05)
    collection.advance_epoch(tighten=False)
    assert collection["kl"].bound == pytest.approx(100.0)
    assert collection["inactive"].bound == 0.4
    with pytest.raises(KeyError, match="unknown schedulers \\['nope'\\]"):
        collection.advance_epoch(tighten={"nope"})
