"""`constraint_sched.functional`: the books, the sampler and their state, as an adapter uses them."""

from __future__ import annotations

import math

import array_api_compat
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from constraint_sched import ChanceConstraint, Tally
from constraint_sched import functional as F

xp = array_api_compat.array_namespace(np.zeros(0))

values = st.lists(
    st.one_of(st.floats(-1e6, 1e6), st.sampled_from([math.nan, math.inf, -math.inf])),
    max_size=40,
)


def books_of(stream: list[float], above: float = 10.0) -> F.Books:
    books = F.init(xp, 1)
    for x in stream:
        books = F.update(xp, books, np.array([x]), above=above, below=-math.inf)
    return books


@given(stream=values, split=st.integers(0, 40))
def test_books_are_the_tally_of_the_stream_and_merge_like_one_stream(
    stream: list[float], split: int
) -> None:
    (tally,), rejects = F.tallies(F.pack(xp, books_of(stream)).tolist(), 1)
    expected = Tally.of(stream, bound=10.0)
    assert (tally.count, tally.nonfinite, tally.violations) == (
        expected.count,
        expected.nonfinite,
        expected.violations,
    )
    assert (tally.maximum, tally.minimum) == (expected.maximum, expected.minimum)
    assert tally.total == pytest.approx(expected.total, rel=1e-12, abs=1e-6)
    assert rejects == 0
    merged = F.merge(xp, books_of(stream[:split]), books_of(stream[split:]))
    whole = books_of(stream)
    for name in ("count", "nonfinite", "violations", "maximum", "minimum"):
        assert merged[name].tolist() == whole[name].tolist()


def test_accepted_and_observed_masks_count_only_what_they_let_through() -> None:
    books = F.init(xp, 2)
    step = np.array([5.0, 20.0])
    books = F.update(xp, books, step, above=10.0, below=-math.inf, accepted=np.asarray(False))
    books = F.reject(xp, books, np.asarray(True))
    books = F.update(xp, books, step, above=10.0, below=-math.inf, observed=np.array([True, False]))
    a, b = F.tallies(F.pack(xp, books).tolist(), 2)[0]
    assert (a.count, a.maximum, b.count, b.maximum) == (1, 5.0, 0, -math.inf)
    assert F.tallies(F.pack(xp, books).tolist(), 2)[1] == 1


def test_pack_unpack_and_the_reductions_cover_the_packed_vector_once() -> None:
    books = books_of([1.0, 2.0, math.nan])
    assert {k: v.tolist() for k, v in F.unpack(xp, F.pack(xp, books), 1).items()} == {
        k: v.tolist() for k, v in books.items()
    }
    parts: list[tuple[slice, str]] = []
    F.reduce_packed(3, lambda part, how: parts.append((part, how)))
    covered = sorted(i for part, _ in parts for i in range(part.start, part.stop))
    assert covered == list(range(F.pack(xp, F.init(xp, 3)).shape[0]))
    assert [how for _, how in parts] == ["sum", "max", "min"]


def test_books_state_round_trips_and_refuses_what_no_run_reaches() -> None:
    books = books_of([1.0, 12.0, math.inf])
    state = F.to_state(books)
    assert F.from_state(state, 1, "books")["count"] == [3.0]
    with pytest.raises(ValueError, match=r"books.count\[0\]"):
        F.from_state({**state, "count": [-1.0]}, 1, "books")
    with pytest.raises(ValueError, match="books: slot 0"):
        F.from_state({**state, "violations": [7.0]}, 1, "books")
    with pytest.raises(ValueError, match=r"books\.total"):
        F.from_state({**state, "total": ["inf"]}, 1, "books")


def test_the_sampler_keeps_everything_up_to_its_size_then_a_uniform_sample() -> None:
    size, n, seeds = 5, 20, 3000
    kept = np.zeros(n)
    for seed in range(seeds):
        s, rows = F.sampler(size, seed), [-1] * size
        for i in range(n):
            row, s = F.offer(s)
            if i < size:
                assert row == i  # appended while there is room
            if row >= 0:
                rows[row] = i
        assert s.kept == size
        assert s.seen == n
        kept[rows] += 1
    # Each of the 20 observations is in a sample of 5 with probability 1/4.
    assert np.abs(kept / seeds - size / n).max() < 0.04


def test_the_host_reservoir_makes_the_functional_samplers_decisions() -> None:
    stream = [float(i) for i in range(500)]
    reservoir = F.Reservoir(16, seed=7)
    for x in stream:
        reservoir.add(x)
    s, sample = F.sampler(16, 7), []
    for x in stream:
        row, s = F.offer(s)
        if row == len(sample):
            sample.append(x)
        elif row >= 0:
            sample[row] = x
    assert reservoir.values == sample


def test_write_replaces_one_row_of_any_namespace() -> None:
    rows = np.zeros((3, 2))
    out = F.write(xp, rows, 1, np.array([4.0, 5.0]))
    assert out.tolist() == [[0.0, 0.0], [4.0, 5.0], [0.0, 0.0]]
    assert rows.tolist() == [[0.0, 0.0]] * 3  # functional: the input is unchanged


def test_the_host_namespace_and_numpy_give_the_same_chance_step() -> None:
    settings = ChanceConstraint()
    plan = F.StepPlan(10.0, 10.0, 10.0, 3, 20, 1.0)
    st_host = F.initial_state(0.0)._replace(seen=5.0, main_level=2.0, jump=0.1, last=9.0)
    st_np = F.ChanceState(*(np.asarray(v) for v in st_host))
    a = F.multiplier_step(F.host, st_host, 11.0, 2.0, plan, settings)
    b = F.multiplier_step(xp, st_np, np.asarray(11.0), np.asarray(2.0), plan, settings)
    assert [float(v) for v in b] == pytest.approx(list(a), rel=1e-12)
    assert float(F.weight(xp, b)) == pytest.approx(F.weight(F.host, a), rel=1e-12)


def test_the_normal_quantile_comes_from_the_adapter_that_registered_it() -> None:
    class Elsewhere:
        __name__ = "some.other.namespace"

    with pytest.raises(TypeError, match="register_ndtri"):
        F.ndtri(Elsewhere(), np.asarray(0.5))
    F.register_ndtri("some.other.namespace", lambda p: p * 0.0 + 1.25)
    assert F.ndtri(Elsewhere(), np.asarray(0.5)) == 1.25
    assert float(F.ndtri(xp, np.asarray(0.975))) == pytest.approx(1.959964, rel=1e-6)
