"""The hot paths' shortcuts make the same decisions and keep the same books as the plain rules.

`functional.decisions` makes a full sample's next decisions at once, where
`functional.offer` makes them one observation at a time; `HostBooks.add_step`
counts a whole step (and may count steps later, in bulk), where
`HostBooks.add` counts one value. Both must be indistinguishable from the
plain rule: the same rows and indices, bit for bit, and the same statistics.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from constraint_sched import functional as F
from constraint_sched._reservoir import Reservoir
from constraint_sched.state import Reader


@given(
    size=st.integers(1, 64),
    seed=st.integers(0, 2**64 - 1),
    extra=st.integers(0, 300),
    n=st.integers(1, 40),
)
def test_decisions_made_at_once_are_those_offer_makes_one_by_one(
    size: int, seed: int, extra: int, n: int
) -> None:
    s = F.sampler(size, seed)
    for _ in range(size + extra):  # fill the sample, then go on for a while
        _, s = F.offer(s)
    planned = F.decisions(s, n)
    made: list[tuple[int, int]] = []
    while len(made) < n:
        # The observations between two decisions only count: jump to the next decision's.
        row, s = F.offer(s._replace(seen=s.next - 1))
        assert row >= 0
        made.append((row, s.next))
    assert made == list(zip(planned.rows, planned.next, strict=True))
    assert s == planned.end


@given(
    size=st.integers(1, 32),
    seed=st.integers(0, 2**32),
    values=st.lists(st.floats(-1e6, 1e6), min_size=0, max_size=600),
)
def test_the_host_reservoir_keeps_what_offer_decides(
    size: int, seed: int, values: list[float]
) -> None:
    reservoir = Reservoir(size, seed)
    expected: list[float] = []
    s = F.sampler(size, seed)
    for x in values:
        reservoir.add(x)
        row, s = F.offer(s)
        if row == len(expected):
            expected.append(x)
        elif row >= 0:
            expected[row] = x
    assert reservoir.values == expected
    assert reservoir.count == len(values)
    clone = Reservoir(size, 0)
    clone.load(Reader(reservoir.state(), "r"))
    for x in values[:50]:
        clone.add(x)
        reservoir.add(x)
    assert clone.values == reservoir.values


VALUES = st.one_of(
    st.floats(-100.0, 100.0),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 5.0, -5.0]),
)


@given(
    steps=st.lists(st.tuples(VALUES, VALUES), max_size=300),
    keep=st.sampled_from(["all", "max", "min", "counts"]),
    limits=st.sampled_from([(5.0, -math.inf), (math.inf, -5.0), (math.inf, -math.inf)]),
)
def test_a_step_counted_whole_is_counted_as_its_values_one_by_one(
    steps: list[tuple[float, float]], keep: str, limits: tuple[float, float]
) -> None:
    above, below = limits
    whole, one = F.HostBooks(2), F.HostBooks(2)
    for books in (whole, one):
        books.start([above] * 2, [below] * 2, keep=keep)  # type: ignore[arg-type]
    for a, b in steps:
        assert whole.add_step({"a": a, "b": b, "other": "ignored"}, ("a", "b"))
        one.add(0, a)
        one.add(1, b)
    assert whole.pack() == one.pack() or _same_with_nan(whole.pack(), one.pack())
    assert [math.copysign(1.0, v) for v in whole.pack()] == [
        math.copysign(1.0, v) for v in one.pack()
    ]


def _same_with_nan(a: list[float], b: list[float]) -> bool:
    return all((x == y) or (x != x and y != y) for x, y in zip(a, b, strict=True))


def test_a_step_with_a_missing_name_or_another_type_counts_nothing() -> None:
    books = F.HostBooks(2)
    books.start([math.inf] * 2, [-math.inf] * 2, keep="max")
    assert not books.add_step({"a": 1.0}, ("a", "b"))
    assert not books.add_step({"a": 1.0, "b": 2}, ("a", "b"))
    assert books.add_step({"a": 1.0, "b": 2.0}, ("a", "b"))
    assert books.count == [1, 1]
    assert books.maximum == [1.0, 2.0]
