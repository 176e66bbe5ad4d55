"""`EpochFeed`: what an adapter of its own relies on, with numpy arrays as the "device"."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constraint_sched import (
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    EpochFeed,
    SchedulerCollection,
    SqueezeSchedule,
)
from constraint_sched import functional as F
from constraint_sched.state import Reader


def route(name: str, value: Any, where: Any) -> tuple[Any, Any]:
    """numpy arrays are counted as arrays on the "cpu" device; numbers on the host."""
    return ("cpu", value) if isinstance(value, np.ndarray) else (None, value)


def core(statistic: str = "max", **kwargs: Any) -> ConstraintScheduler:
    return ConstraintScheduler(
        ConstraintSpec("kl", "upper", margin=1e9),
        discovery=DiscoveryPhase(statistic=statistic),  # type: ignore[arg-type]
        squeeze=SqueezeSchedule.geometric(1.0, epochs=2),
        **kwargs,
    )


def pair() -> SchedulerCollection:
    return SchedulerCollection(
        [
            ConstraintScheduler(ConstraintSpec("kl", "upper", margin=1e9)),
            ConstraintScheduler(ConstraintSpec("mse", "upper", margin=1e9)),
        ]
    )


def test_numbers_and_arrays_end_the_epoch_as_one_books() -> None:
    feed = EpochFeed(core(), xp=np)
    feed.observe(feed.items(40.0), route)
    feed.observe(feed.items(np.asarray(55.0)), route)
    feed.observe(feed.items(np.asarray(math.nan)), route)
    feed.reject(2)
    feed.reject(np.asarray(True), "cpu")
    kinds = [e.kind for e in feed.end_epoch(log=False)]
    assert kinds == ["discovered", "held"]
    assert feed.core.bound == 55.0
    tally = feed.last["kl"]
    assert (tally.count, tally.nonfinite, tally.maximum, tally.minimum) == (3, 1, 55.0, 40.0)
    assert feed.core.last_epoch.rejects == 3  # type: ignore[union-attr]


def test_a_mapping_with_a_bad_value_records_nothing() -> None:
    feed = EpochFeed(pair(), xp=np)
    with pytest.raises(TypeError, match=r"'mse'.*str"):
        feed.observe(feed.items({"kl": np.asarray(3.0), "mse": "0.5"}), route)
    with pytest.raises(KeyError, match="has no spec 'nope'"):
        feed.observe(feed.items({"kl": 3.0, "nope": 1.0}), route)
    feed.observe(feed.items({"kl": 3.0, "mse": np.asarray(0.5)}), route)  # the retry
    feed.end_epoch(log=False)
    assert [feed.last[n].count for n in ("kl", "mse")] == [1, 1]


def test_observe_value_needs_one_spec() -> None:
    feed = EpochFeed(pair(), owner="MyAdapter", xp=np)
    with pytest.raises(TypeError, match=r"MyAdapter: observe\(value\) needs exactly one spec"):
        feed.items(3.0)


def test_tighten_by_name_needs_a_collection() -> None:
    feed = EpochFeed(core(), owner="MyAdapter", xp=np)
    feed.observe(feed.items(3.0), route)
    with pytest.raises(TypeError, match=r"MyAdapter\.advance_epoch: tighten is a bool"):
        feed.end_epoch(tighten=["kl"], log=False)


def test_nonfinite_raise_drops_device_values_once_and_keeps_the_rest() -> None:
    feed = EpochFeed(core(nonfinite="raise"), xp=np)
    with pytest.raises(ValueError, match="non-finite observation"):
        feed.observe(feed.items(math.inf), route)  # a host value: refused at once
    feed.observe(feed.items(np.asarray(math.nan)), route)  # a device value: at the end
    feed.observe(feed.items(np.asarray(7.0)), route)
    with pytest.raises(ValueError, match=r"1 of 'kl'.*dropped"):
        feed.end_epoch(log=False)
    feed.end_epoch(log=False)
    assert feed.core.bound == 7.0


@settings(deadline=None, max_examples=25)
@given(
    values=st.lists(st.floats(1.0, 100.0), min_size=2, max_size=40),
    cut=st.integers(0, 40),
    statistic=st.sampled_from(["max", "median", "quantile"]),
)
def test_a_checkpoint_mid_epoch_resumes_exactly(
    values: list[float], cut: int, statistic: str
) -> None:
    def make() -> EpochFeed:
        kwargs = {"quantile": 0.7} if statistic == "quantile" else {}
        scheduler = ConstraintScheduler(
            ConstraintSpec("kl", "upper", margin=1e9),
            discovery=DiscoveryPhase(statistic=statistic, reservoir=8, **kwargs),  # type: ignore[arg-type]
            squeeze=SqueezeSchedule.geometric(1.0, epochs=2),
        )
        return EpochFeed(scheduler, xp=np)

    whole, resumed = make(), make()
    cut = min(cut, len(values))
    for k, v in enumerate(values):
        if k == cut:
            resumed.load(Reader(copy.deepcopy(whole.state()), "saved"), lambda entry: "cpu")
        x = np.asarray(v) if k % 3 else v  # both sources
        for feed in (whole, resumed) if k >= cut else (whole,):
            feed.observe(feed.items(x), route)
    if cut == len(values):
        resumed.load(Reader(copy.deepcopy(whole.state()), "saved"), lambda entry: "cpu")
    for feed in (whole, resumed):
        feed.end_epoch(log=False)
    assert resumed.core.state_dict() == whole.core.state_dict()


def test_a_corrupt_checkpoint_names_the_field_and_changes_nothing() -> None:
    feed = EpochFeed(core("median"), xp=np)
    for v in (3.0, 4.0):
        feed.observe(feed.items(np.asarray(v)), route)
    good = feed.state()
    bad = copy.deepcopy(good)
    bad["epoch"]["devices"][0]["books"]["count"] = ["-1.0"]
    other = EpochFeed(core("median"), xp=np)
    other.observe(feed.items(9.0), route)
    before = other.state()
    with pytest.raises(ValueError, match=r"saved\.epoch\.devices\[0\]\.books\.count"):
        other.load(Reader(bad, "saved"), lambda entry: "cpu")
    assert other.state() == before
    with pytest.raises(ValueError, match=r"saved\.names: saved for specs \['x'\]"):
        other.load(Reader({**good, "names": ["x"]}, "saved"), lambda entry: "cpu")


class TwoProcesses:
    """An `Agreement` for one process of two, the other's books and samples given."""

    def __init__(self, other: EpochFeed) -> None:
        self.rank, self.other = 0, other
        self.calls: list[str] = []

    def device(self, preferred: Any) -> Any:
        return "cpu"

    def reduce(self, packed: Any, n: int) -> None:
        self.calls.append("reduce")
        theirs = self.other.host.pack()
        for b in self.other.sources.values():
            mine = F.unpack(np, np.asarray(theirs), n)
            theirs = F.pack(np, F.merge(np, mine, F.unpack(np, b.pack(), n))).tolist()
        merged = F.merge(np, F.unpack(np, packed, n), F.unpack(np, np.asarray(theirs), n))
        packed[:] = F.pack(np, merged)

    def gather(self, obj: Any) -> list[Any]:
        self.calls.append("gather")
        return [obj, obj]  # the other process runs the same configuration at the same epoch


def test_an_agreement_merges_the_other_processes_books() -> None:
    mine, theirs = EpochFeed(core(), xp=np), EpochFeed(core(), xp=np)
    for v in (3.0, 4.0):
        mine.observe(mine.items(np.asarray(v)), route)
    for v in (8.0, 2.0):
        theirs.observe(theirs.items(v), route)
    agreement = TwoProcesses(theirs)
    mine.end_epoch(agreement, log=False)
    assert agreement.calls == ["gather", "reduce"]
    assert mine.core.bound == 8.0  # the other process's maximum
    assert mine.last["kl"].count == 4


def test_array_books_count_only_accepted_steps_and_observed_slots() -> None:
    books = F.ArrayBooks(2, np, sample_size=4)
    books.start([5.0, 5.0], [-math.inf, -math.inf], sampling=True, seed=1)
    books.add((1,), [np.asarray(6.0)], None)
    books.add((0, 1), [np.asarray(1.0), np.asarray(2.0)], np.asarray(False))
    books.add((0, 1), [np.asarray(3.0), np.asarray(math.inf)], np.asarray(True))
    (a, b), _ = F.tallies(books.pack().tolist(), 2)  # the step not accepted counts nowhere
    assert (a.count, a.maximum, a.violations) == (1, 3.0, 0)
    assert (b.count, b.nonfinite, b.maximum, b.violations) == (2, 1, 6.0, 1)
    samples = F.row_samples(books.pack().tolist(), 2, [0, 1])
    assert sorted(samples[0][0]) == [3.0]
    assert sorted(samples[1][0]) == [6.0]


def test_a_feed_without_a_namespace_keeps_the_arrays_it_is_given() -> None:
    feed = EpochFeed(core())  # no xp: the arrays say theirs
    feed.observe(feed.items(np.asarray(5.0)), route, np.asarray(True))
    feed.observe(feed.items(6.0), route, np.asarray(False))  # a number, counted where accepted is
    feed.reject(np.asarray(True), "cpu")
    feed.end_epoch(log=False)
    assert (feed.last["kl"].count, feed.core.bound) == (1, 5.0)
    assert feed.core.last_epoch.rejects == 1  # type: ignore[union-attr]
