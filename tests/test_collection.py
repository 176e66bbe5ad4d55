"""SchedulerCollection: one observe, one reject, one advance_epoch for many schedulers."""

from __future__ import annotations

import pytest
from seed_data import KL_TABLE, kl_specs

from constraint_sched import (
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    Event,
    Phase,
    SchedulerCollection,
    SqueezeSchedule,
)


def goals() -> SchedulerCollection:
    """A small goal table: the shared KL ceiling and thirty auto-scaled goals."""
    schedulers = [ConstraintScheduler(kl_specs(), squeeze=SqueezeSchedule.table(KL_TABLE))]
    schedulers += [
        ConstraintScheduler(
            ConstraintSpec(f"goal{i}", "minimize_soft", scale="auto"),
            discovery=DiscoveryPhase(statistic="median"),
        )
        for i in range(30)
    ]
    return SchedulerCollection(schedulers)


def test_values_are_routed_to_their_schedulers_by_spec_name() -> None:
    c = goals()
    assert len(c) == 31
    for step in range(10):
        values = {f"goal{i}": 0.1 * i + 0.01 * step for i in range(30)}
        values.update(kl_core=40_000.0 + step, kl_detail=30_000.0)
        c.observe(values)
    c.reject(1)
    events = c.advance_epoch()
    assert c.epoch == 2
    assert [e.kind for e in events[:2]] == ["discovered", "held"]
    assert c["kl_core+kl_detail"].bound == 40_009.0
    assert c.spec("goal3").scale == pytest.approx(0.3 + 0.045)  # exact median of 10
    assert c.spec("goal0").scale == pytest.approx(0.045)
    assert all(s.last_epoch is not None and s.last_epoch.rejects == 1 for s in c)
    assert set(c.specs) == {"kl_core", "kl_detail"} | {f"goal{i}" for i in range(30)}
    assert all(s.phase is Phase.HOLD for s in c)


def test_unknown_names_and_duplicates_are_errors() -> None:
    c = goals()
    with pytest.raises(KeyError, match="has no spec 'kl'"):
        c.observe({"kl": 1.0})
    with pytest.raises(KeyError, match="has no scheduler 'kl_core'"):
        c["kl_core"]
    a = ConstraintScheduler(ConstraintSpec("x", "upper", margin=1.0))
    b = ConstraintScheduler(ConstraintSpec("x", "upper", margin=1.0), name="other")
    with pytest.raises(ValueError, match="spec 'x' is in both 'x' and 'other'"):
        SchedulerCollection([a, b])
    with pytest.raises(ValueError, match="two schedulers are named 'x'"):
        SchedulerCollection(
            [a, ConstraintScheduler(ConstraintSpec("y", "upper", margin=1.0), name="x")]
        )
    with pytest.raises(TypeError, match=r"schedulers\[0\] must be a ConstraintScheduler"):
        SchedulerCollection(["x"])  # type: ignore[list-item]


def test_collection_callbacks_see_every_schedulers_events() -> None:
    seen: list[Event] = []
    c = SchedulerCollection(
        [ConstraintScheduler(ConstraintSpec(n, "upper", margin=1e9)) for n in "ab"],
        callbacks=[seen.append],
    )
    c.observe({"a": 1.0, "b": 2.0})
    events = c.advance_epoch()
    assert seen == events
    assert [(e.constraint, e.kind) for e in events] == [
        ("a", "discovered"), ("a", "held"), ("b", "discovered"), ("b", "held"),
    ]  # fmt: skip
    assert "b" in c
    assert repr(c) == "SchedulerCollection(['a', 'b'], epoch=2)"
