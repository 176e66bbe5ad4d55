"""HostBooks: an epoch's books (`constraint_sched.functional.SCHEMA`) on Python floats.

The same statistics as the functional books, kept in one row of Python
numbers per spec slot, which is the fastest way to take one value at a time
on the host: the core scheduler feeds it (`HostBooks.add`,
`HostBooks.add_step`, `HostBooks.merge`) and an adapter keeps the values it
reads on the host in it. `pack`, `state` and `load` are the functional
books' layout and state, derived from the schema, so host and device books
combine and save alike.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from constraint_sched import _state
from constraint_sched._reservoir import Reservoir
from constraint_sched._tally import Tally
from constraint_sched.functional._books import SCHEMA, from_state, to_state

Keep = Literal["all", "max", "min", "counts"]
"""What `HostBooks.add` keeps beyond the counts: ``"all"`` (the sum, max and min),
``"max"`` or ``"min"`` (that extreme alone), or ``"counts"`` (nothing more)."""

_PENDING = 4096
"""The most values `HostBooks.add_step` leaves waiting to be counted (a bound on memory)."""


def _limits(above: float, below: float) -> list[float]:
    """A row's violation limits, then the same brought within the finite floats (low, high).

    ``low <= x <= high`` holds only for a finite value within the limits: on
    the hot path, the common case takes that one comparison.
    """
    return [above, below, max(below, -sys.float_info.max), min(above, sys.float_info.max)]


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
        self._keep = keep
        self._pending: list[float] = []
        """Steps `add_step` counts later, their values one after another."""
        # One row per slot, read by position on the hot path: count, nonfinite,
        # violations, total, maximum, minimum, the violation limits (`_limits`),
        # then the slot's reservoir (`reservoirs`).
        self._rows: list[list[Any]] = [
            [0, 0, 0, 0.0, -math.inf, math.inf, *_limits(a, b), None]
            for a, b in zip(above, below, strict=True)
        ]
        self.rejects = 0
        self.reservoirs = reservoirs

    @property
    def reservoirs(self) -> list[Reservoir] | None:
        """The samples valid values also go to (one per slot), or None."""
        return self._reservoirs

    @reservoirs.setter
    def reservoirs(self, reservoirs: list[Reservoir] | None) -> None:
        self._reservoirs = reservoirs
        for i, row in enumerate(self._rows):
            row[10] = None if reservoirs is None else reservoirs[i]
        # `add_step` leaves values waiting where their order changes nothing: no sum, no sample.
        self._defer = reservoirs is None and self._keep != "all"

    def limits(self, above: Sequence[float], below: Sequence[float]) -> None:
        """Count later values beyond these as violations (a bound that moved inside the epoch)."""
        if self._pending:
            self._count_pending()
        for row, a, b in zip(self._rows, above, below, strict=True):
            row[6:10] = _limits(a, b)

    def _add_all(self, i: int, x: float) -> None:
        row = self._rows[i]
        row[0] += 1
        if not row[8] <= x <= row[9]:  # not finite, or beyond the limits: the rare case
            if x - x != 0.0:  # NaN or infinite
                row[1] += 1
                return
            if x > row[6] or x < row[7]:
                row[2] += 1
        row[3] += x
        if x > row[4]:
            row[4] = x
        if x < row[5]:
            row[5] = x
        r = row[10]
        if r is not None:
            r.add(x)

    def _add_max(self, i: int, x: float) -> None:
        if self._pending:  # first the steps before it: equal extremes keep the first
            self._count_pending()
        row = self._rows[i]
        row[0] += 1
        if not row[8] <= x <= row[9]:
            if x - x != 0.0:
                row[1] += 1
                return
            if x > row[6] or x < row[7]:
                row[2] += 1
        if x > row[4]:
            row[4] = x

    def _add_min(self, i: int, x: float) -> None:
        if self._pending:
            self._count_pending()
        row = self._rows[i]
        row[0] += 1
        if not row[8] <= x <= row[9]:
            if x - x != 0.0:
                row[1] += 1
                return
            if x > row[6] or x < row[7]:
                row[2] += 1
        if x < row[5]:
            row[5] = x

    def _add_counts(self, i: int, x: float) -> None:
        row = self._rows[i]
        row[0] += 1
        if not row[8] <= x <= row[9]:
            if x - x != 0.0:
                row[1] += 1
                return
            if x > row[6] or x < row[7]:
                row[2] += 1
        r = row[10]
        if r is not None:  # Reservoir.add, inlined: most values only count
            r._left -= 1
            if not r._left:
                r.decide(x)

    def add_step(self, step: Mapping[str, Any], names: Sequence[str]) -> bool:
        """Count one step of every slot, ``step[names[i]]`` of slot ``i``, as `add` would.

        Counts nothing and returns False where a name is missing or a value
        is not a Python float (for the caller to convert or refuse); other
        keys are not read. Where the order of the values changes nothing
        that is kept (no sum, no sample), they wait in a list and are
        counted together, with numpy, when the books are next read or the
        list is full: the same statistics as `add` one by one, at a fraction
        of the cost.
        """
        values = self._pending if self._defer else []
        start, taken = len(values), False
        try:
            for name in names:
                x = step[name]
                if type(x) is not float:
                    return False
                values.append(x)
            taken = True
        except KeyError:
            return False
        finally:
            if not taken:  # all or nothing
                del values[start:]
        if not self._defer:
            for i, x in enumerate(values):
                self.add(i, x)
        elif len(values) >= _PENDING:
            self._count_pending()
        return True

    def _count_pending(self) -> None:
        """Count the steps `add_step` left waiting, as `add` would have one by one."""
        pending, self._pending = self._pending, []
        steps = np.fromiter(pending, np.float64, len(pending)).reshape(-1, self.n)
        for row, column in zip(self._rows, steps.T, strict=True):
            valid = column[np.isfinite(column)]
            row[0] += len(column)
            row[1] += len(column) - len(valid)
            if not len(valid):
                continue
            row[2] += int(np.count_nonzero((valid > row[6]) | (valid < row[7])))
            # The first of equal extremes, as one by one (0.0 and -0.0 are equal).
            if self._keep == "max":
                top = float(valid[np.argmax(valid)])
                if top > row[4]:
                    row[4] = top
            elif self._keep == "min":
                low = float(valid[np.argmin(valid)])
                if low < row[5]:
                    row[5] = low

    def merge(self, i: int, tally: Tally) -> None:
        """Count a `Tally` of slot ``i``'s observations made elsewhere, as if added one by one.

        Its samples go to the slot's reservoir (when there is one) standing
        for its ``valid`` observations.
        """
        if self._pending:
            self._count_pending()
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
        if self._pending:
            self._count_pending()
        self._rows[i][:6] = [count, nonfinite, violations, total, maximum, minimum]

    def drop_nonfinite(self, i: int) -> None:
        """Forget slot ``i``'s non-finite observations, as if they had never been made."""
        if self._pending:
            self._count_pending()
        row = self._rows[i]
        row[0] -= row[1]
        row[1] = 0

    def _column(self, k: int) -> list[Any]:
        if self._pending:
            self._count_pending()
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
        return int(max(self.count))

    @property
    def empty(self) -> bool:
        """Whether nothing was counted since `start`."""
        return not any(self.count) and not self.rejects

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
