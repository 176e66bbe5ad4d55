"""A streaming quantile in O(1) memory: the P-square estimator of Jain and Chlamtac (1985)."""

from __future__ import annotations

import math


class P2Quantile:
    """Estimate one quantile of a stream from five markers, without keeping the stream.

    Exact while it has seen at most five values; an estimate afterwards whose
    error shrinks as the stream grows. Every value must be finite.

    Example:
        >>> q = P2Quantile(0.5)
        >>> for x in [5.0, 1.0, 3.0]:
        ...     q.add(x)
        >>> q.value()
        3.0
    """

    __slots__ = ("_count", "_desired", "_heights", "_increments", "_positions", "p")

    def __init__(self, p: float) -> None:
        self.p = p
        self._count = 0
        self._heights: list[float] = []
        self._positions = [1.0, 2.0, 3.0, 4.0, 5.0]
        self._desired = [1.0, 1.0 + 2.0 * p, 1.0 + 4.0 * p, 3.0 + 2.0 * p, 5.0]
        self._increments = [0.0, p / 2.0, p, (1.0 + p) / 2.0, 1.0]

    @property
    def count(self) -> int:
        """How many values it has seen."""
        return self._count

    def add(self, x: float) -> None:
        """Take one finite value."""
        self._count += 1
        q = self._heights
        if self._count <= 5:
            q.append(x)
            q.sort()
            return
        n, desired = self._positions, self._desired
        if x < q[0]:
            q[0] = x
            k = 0
        elif x >= q[4]:
            q[4] = x
            k = 3
        else:
            k = 0
            while x >= q[k + 1]:
                k += 1
        for i in range(k + 1, 5):
            n[i] += 1.0
        for i in range(5):
            desired[i] += self._increments[i]
        for i in (1, 2, 3):
            d = desired[i] - n[i]
            if (d >= 1.0 and n[i + 1] - n[i] > 1.0) or (d <= -1.0 and n[i - 1] - n[i] < -1.0):
                step = 1.0 if d > 0 else -1.0
                candidate = self._parabolic(i, step)
                if not q[i - 1] < candidate < q[i + 1]:
                    j = i + int(step)
                    candidate = q[i] + step * (q[j] - q[i]) / (n[j] - n[i])
                q[i] = candidate
                n[i] += step

    def _parabolic(self, i: int, d: float) -> float:
        q, n = self._heights, self._positions
        return q[i] + d / (n[i + 1] - n[i - 1]) * (
            (n[i] - n[i - 1] + d) * (q[i + 1] - q[i]) / (n[i + 1] - n[i])
            + (n[i + 1] - n[i] - d) * (q[i] - q[i - 1]) / (n[i] - n[i - 1])
        )

    def value(self) -> float | None:
        """The current estimate, or None before the first value."""
        q = self._heights
        if not q:
            return None
        if self._count > 5:
            return q[2]
        position = self.p * (len(q) - 1)
        low = math.floor(position)
        high = min(low + 1, len(q) - 1)
        return q[low] + (q[high] - q[low]) * (position - low)

    def state(self) -> dict[str, object]:
        """Plain data that `from_state` restores exactly."""
        return {
            "count": self._count,
            "heights": list(self._heights),
            "positions": list(self._positions),
            "desired": list(self._desired),
        }

    @classmethod
    def from_state(cls, p: float, state: dict[str, object]) -> P2Quantile:
        """Rebuild an estimator from `state`; the caller has checked the types."""
        estimator = cls(p)
        estimator._count = int(state["count"])  # type: ignore[call-overload]
        estimator._heights = [float(v) for v in state["heights"]]  # type: ignore[attr-defined]
        estimator._positions = [float(v) for v in state["positions"]]  # type: ignore[attr-defined]
        estimator._desired = [float(v) for v in state["desired"]]  # type: ignore[attr-defined]
        return estimator
