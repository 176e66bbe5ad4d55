"""Accumulator: one epoch's books of every spec, kept on the host, framework-free.

The one set of per-epoch statistics: for each spec slot the observations
counted (``count``), the NaN/inf ones (``nonfinite``), the valid ones beyond
the bound in force (``violations``), the sum of the valid ones (``total``),
their ``maximum`` and ``minimum``, the rejected steps, and, while a median or
quantile discovery needs them, a `Reservoir` sample per slot. The core
scheduler feeds it (`add`, `merge`); the torch adapter uses it for the values
it reads on the host and mirrors the same statistics on each device
(``adapters/torch/_accumulate.py``), laid out by `pack`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from constraint_sched import _state
from constraint_sched._reservoir import Reservoir
from constraint_sched._tally import Tally


class Accumulator:
    """The statistics of an epoch's observations of ``n`` spec slots.

    Examples:
        >>> books = Accumulator(1)
        >>> books.start([4.5], [-math.inf])
        >>> for x in [3.0, float("nan"), 5.0]:
        ...     books.add(0, x)
        >>> books.count, books.nonfinite, books.violations, books.maximum
        ([3], [1], [1], [5.0])
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.reservoirs: list[Reservoir] | None = None
        self.start([math.inf] * n, [-math.inf] * n, None)

    def start(
        self,
        above: Sequence[float],
        below: Sequence[float],
        reservoirs: list[Reservoir] | None = None,
    ) -> None:
        """Empty the books for a new epoch.

        Args:
            above: Per slot, values above this are violations.
            below: Per slot, values below this are violations.
            reservoirs: The samples valid values also go to (one per slot), or None.
        """
        n = self.n
        self.count = [0] * n
        self.nonfinite = [0] * n
        self.violations = [0] * n
        self.total = [0.0] * n
        self.maximum = [-math.inf] * n
        self.minimum = [math.inf] * n
        self.rejects = 0
        self.limits(above, below)
        self.reservoirs = reservoirs

    def limits(self, above: Sequence[float], below: Sequence[float]) -> None:
        """Count later values beyond these as violations (a bound that moved inside the epoch)."""
        self.above, self.below = list(above), list(below)

    def add(self, i: int, x: float) -> None:
        """Count one observation ``x`` of slot ``i``."""
        self.count[i] += 1
        if x - x != 0.0:  # NaN or infinite
            self.nonfinite[i] += 1
            return
        self.total[i] += x
        if x > self.maximum[i]:
            self.maximum[i] = x
        if x < self.minimum[i]:
            self.minimum[i] = x
        if x > self.above[i] or x < self.below[i]:
            self.violations[i] += 1
        if self.reservoirs is not None:
            self.reservoirs[i].add(x)

    def merge(self, i: int, tally: Tally) -> None:
        """Count a `Tally` of slot ``i``'s observations made elsewhere, as if added one by one.

        Its samples go to the slot's reservoir (when there is one) standing
        for its ``valid`` observations.
        """
        self.count[i] += tally.count
        self.nonfinite[i] += tally.nonfinite
        self.violations[i] += tally.violations
        if not tally.valid:
            return
        self.total[i] += tally.total
        self.maximum[i] = max(self.maximum[i], tally.maximum)
        self.minimum[i] = min(self.minimum[i], tally.minimum)
        if self.reservoirs is not None:
            self.reservoirs[i].merge(list(tally.samples), tally.valid)

    def drop_nonfinite(self, i: int) -> None:
        """Forget slot ``i``'s non-finite observations, as if they had never been made."""
        self.count[i] -= self.nonfinite[i]
        self.nonfinite[i] = 0

    @property
    def steps(self) -> int:
        """The steps observed: the most observations of any slot."""
        return max(self.count)

    @property
    def empty(self) -> bool:
        """Whether nothing was counted since `start`."""
        return not any(self.count) and not self.rejects

    def pack(self) -> list[float]:
        """The statistics as one vector: the four sum rows, the rejects, then max and -min rows."""
        out: list[float] = [*self.count, *self.nonfinite, *self.violations, *self.total]
        out.append(float(self.rejects))
        out += self.maximum
        out += [-m for m in self.minimum]
        return [float(v) for v in out]

    def state(self) -> dict[str, Any]:
        """Everything counted since `start`, as plain data that `load` restores exactly."""
        code = _state.encode_float
        return {
            "count": list(self.count),
            "nonfinite": list(self.nonfinite),
            "violations": list(self.violations),
            "total": [code(v) for v in self.total],
            "maximum": [code(v) for v in self.maximum],
            "minimum": [code(v) for v in self.minimum],
            "rejects": self.rejects,
            "reservoirs": None if self.reservoirs is None else [r.state() for r in self.reservoirs],
        }

    def load(self, data: _state.Reader) -> None:
        """Restore what `state` wrote, after a `start` for the same epoch.

        Raises:
            ValueError: A field is missing or corrupt (named); nothing changes.
        """
        n = self.n
        count, nonfinite = data.integers("count", n), data.integers("nonfinite", n)
        violations, rejects = data.integers("violations", n), data.integer("rejects")
        total, maximum = data.numbers("total", n), data.numbers("maximum", n)
        minimum = data.numbers("minimum", n)
        for i in range(n):
            if not nonfinite[i] + violations[i] <= count[i]:
                raise ValueError(
                    f"{data.path}: slot {i} counts {count[i]} observations, {nonfinite[i]} "
                    f"non-finite and {violations[i]} violations"
                )
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
                reservoirs.append(reservoir)
        self.count, self.nonfinite, self.violations = count, nonfinite, violations
        self.total, self.maximum, self.minimum = total, maximum, minimum
        self.rejects = rejects
        self.reservoirs = reservoirs
