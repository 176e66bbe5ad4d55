"""HostBooks: an epoch's books (`constraint_sched.functional.SCHEMA`) on Python floats.

The same statistics as the functional books, kept in one row of Python
numbers per spec slot, which is the fastest way to take one value at a time
on the host: the core scheduler feeds it (`HostBooks.add`, `HostBooks.merge`)
and an adapter keeps the values it reads on the host in it. `pack`, `state`
and `load` are the functional books' layout and state, derived from the
schema, so host and device books combine and save alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from constraint_sched import _state
from constraint_sched._reservoir import Reservoir
from constraint_sched._tally import Tally
from constraint_sched.functional._books import SCHEMA, from_state, to_state

Keep = Literal["all", "max", "min", "counts"]
"""What `HostBooks.add` keeps beyond the counts: ``"all"`` (the sum, max and min),
``"max"`` or ``"min"`` (that extreme alone), or ``"counts"`` (nothing more)."""


class HostBooks:
    """The statistics of an epoch's observations of ``n`` spec slots.

    Examples:
        >>> books = HostBooks(1)
        >>> books.start([4.5], [-math.inf])
        >>> for x in [3.0, float("nan"), 5.0]:
        ...     books.add(0, x)
        >>> books.count, books.nonfinite, books.violations, books.maximum
        ([3], [1], [1], [5.0])
    """

    add: Callable[[int, float], None]
    """``add(i, x)``: count one observation ``x`` of slot ``i`` (what `start` was asked to keep)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.reservoirs: list[Reservoir] | None = None
        self.start([math.inf] * n, [-math.inf] * n, None)

    def start(
        self,
        above: Sequence[float],
        below: Sequence[float],
        reservoirs: list[Reservoir] | None = None,
        *,
        keep: Keep = "all",
    ) -> None:
        """Empty the books for a new epoch.

        Args:
            above: Per slot, values above this are violations.
            below: Per slot, values below this are violations.
            reservoirs: The samples valid values also go to (one per slot), or None.
            keep: What `add` keeps beyond the counts: ``"all"`` (the sum,
                max and min), ``"max"`` or ``"min"`` (that extreme alone), or
                ``"counts"`` (nothing more). The core scheduler keeps only
                what its discovery reads, which keeps `add` as cheap as it
                can be; the others stay at their empty values.
        """
        self.add = {
            "all": self._add_all,
            "max": self._add_max,
            "min": self._add_min,
            "counts": self._add_counts,
        }[keep]
        # One row per slot, read by position on the hot path: count, nonfinite,
        # violations, total, maximum, minimum, then the two violation limits.
        self._rows: list[list[Any]] = [
            [0, 0, 0, 0.0, -math.inf, math.inf, a, b] for a, b in zip(above, below, strict=True)
        ]
        self.rejects = 0
        self.reservoirs = reservoirs

    def limits(self, above: Sequence[float], below: Sequence[float]) -> None:
        """Count later values beyond these as violations (a bound that moved inside the epoch)."""
        for row, a, b in zip(self._rows, above, below, strict=True):
            row[6], row[7] = a, b

    def _add_all(self, i: int, x: float) -> None:
        row = self._rows[i]
        row[0] += 1
        if x - x != 0.0:  # NaN or infinite
            row[1] += 1
            return
        row[3] += x
        if x > row[4]:
            row[4] = x
        if x < row[5]:
            row[5] = x
        if x > row[6] or x < row[7]:
            row[2] += 1
        if self.reservoirs is not None:
            self.reservoirs[i].add(x)

    def _add_max(self, i: int, x: float) -> None:
        row = self._rows[i]
        row[0] += 1
        if x - x != 0.0:
            row[1] += 1
            return
        if x > row[4]:
            row[4] = x
        if x > row[6] or x < row[7]:
            row[2] += 1

    def _add_min(self, i: int, x: float) -> None:
        row = self._rows[i]
        row[0] += 1
        if x - x != 0.0:
            row[1] += 1
            return
        if x < row[5]:
            row[5] = x
        if x > row[6] or x < row[7]:
            row[2] += 1

    def _add_counts(self, i: int, x: float) -> None:
        row = self._rows[i]
        row[0] += 1
        if x - x != 0.0:
            row[1] += 1
            return
        if x > row[6] or x < row[7]:
            row[2] += 1
        if self.reservoirs is not None:  # Reservoir.add, inlined: most values only count
            r = self.reservoirs[i]
            r.count += 1
            if r.count <= r._fill or r.count == r._next:
                r.decide(x)

    def merge(self, i: int, tally: Tally) -> None:
        """Count a `Tally` of slot ``i``'s observations made elsewhere, as if added one by one.

        Its samples go to the slot's reservoir (when there is one) standing
        for its ``valid`` observations.
        """
        row = self._rows[i]
        row[0] += tally.count
        row[1] += tally.nonfinite
        row[2] += tally.violations
        if not tally.valid:
            return
        row[3] += tally.total
        row[4] = max(row[4], tally.maximum)
        row[5] = min(row[5], tally.minimum)
        if self.reservoirs is not None:
            self.reservoirs[i].merge(list(tally.samples), tally.valid)

    def set(
        self,
        i: int,
        *,
        count: int,
        nonfinite: int = 0,
        violations: int = 0,
        total: float = 0.0,
        maximum: float = -math.inf,
        minimum: float = math.inf,
    ) -> None:
        """Put slot ``i``'s statistics as given (a checkpoint that kept only these)."""
        self._rows[i][:6] = [count, nonfinite, violations, total, maximum, minimum]

    def drop_nonfinite(self, i: int) -> None:
        """Forget slot ``i``'s non-finite observations, as if they had never been made."""
        row = self._rows[i]
        row[0] -= row[1]
        row[1] = 0

    def _column(self, k: int) -> list[Any]:
        return [row[k] for row in self._rows]

    @property
    def count(self) -> list[int]:
        """Per slot, the observations counted, valid or not."""
        return self._column(0)

    @property
    def nonfinite(self) -> list[int]:
        """Per slot, the NaN or infinite observations."""
        return self._column(1)

    @property
    def violations(self) -> list[int]:
        """Per slot, the valid observations beyond the limits in force."""
        return self._column(2)

    @property
    def total(self) -> list[float]:
        """Per slot, the sum of the valid observations."""
        return self._column(3)

    @property
    def maximum(self) -> list[float]:
        """Per slot, the largest valid observation (``-inf`` for none)."""
        return self._column(4)

    @property
    def minimum(self) -> list[float]:
        """Per slot, the smallest valid observation (``inf`` for none)."""
        return self._column(5)

    @property
    def above(self) -> list[float]:
        """Per slot, the limit above which a value is a violation."""
        return self._column(6)

    @property
    def below(self) -> list[float]:
        """Per slot, the limit below which a value is a violation."""
        return self._column(7)

    @property
    def steps(self) -> int:
        """The steps observed: the most observations of any slot."""
        return int(max(row[0] for row in self._rows))

    @property
    def empty(self) -> bool:
        """Whether nothing was counted since `start`."""
        return not any(row[0] for row in self._rows) and not self.rejects

    def columns(self) -> dict[str, list[Any]]:
        """Every `SCHEMA` statistic: a list per slot, one value for ``rejects``."""
        return {
            "count": self.count,
            "nonfinite": self.nonfinite,
            "violations": self.violations,
            "total": self.total,
            "rejects": [self.rejects],
            "maximum": self.maximum,
            "minimum": self.minimum,
        }

    def pack(self) -> list[float]:
        """The statistics as one vector, laid out as `constraint_sched.functional.pack` does."""
        columns = self.columns()
        return [float(v) for s in SCHEMA for v in columns[s.name]]

    def state(self) -> dict[str, Any]:
        """Everything counted since `start`, as plain data that `load` restores exactly."""
        books = {k: v if k != "rejects" else v[0] for k, v in self.columns().items()}
        reservoirs = None if self.reservoirs is None else [r.state() for r in self.reservoirs]
        return {**to_state(books), "reservoirs": reservoirs}

    def load(self, data: _state.Reader) -> None:
        """Restore what `state` wrote, after a `start` for the same epoch.

        Raises:
            ValueError: A field is missing or corrupt (named); nothing changes.
        """
        n = self.n
        books = from_state(data.data, n, data.path)
        saved = data.data.get("reservoirs")
        if (saved is None) != (self.reservoirs is None):
            want = "a sample per spec" if self.reservoirs is not None else "none"
            raise ValueError(
                f"{data.path}.reservoirs: this epoch's discovery keeps {want}, got {saved!r}"
            )
        reservoirs = None
        if self.reservoirs is not None:
            items = data.items("reservoirs", n)
            reservoirs = []
            for i, (fresh, item) in enumerate(zip(self.reservoirs, items, strict=True)):
                reservoir = Reservoir(fresh.size, 0)
                reservoir.load(_state.Reader(item, f"{data.path}.reservoirs[{i}]"))
                low, high = books["minimum"][i], books["maximum"][i]
                if not all(low <= v <= high for v in reservoir.values):
                    raise ValueError(
                        f"{data.path}.reservoirs[{i}].values: a sample outside the recorded "
                        f"[minimum, maximum] = [{low!r}, {high!r}]"
                    )
                reservoirs.append(reservoir)
        for i in range(n):
            self.set(
                i,
                count=round(books["count"][i]),
                nonfinite=round(books["nonfinite"][i]),
                violations=round(books["violations"][i]),
                total=books["total"][i],
                maximum=books["maximum"][i],
                minimum=books["minimum"][i],
            )
        self.rejects = round(books["rejects"][0])
        self.reservoirs = reservoirs
