"""A bounded uniform sample of a stream (Li's Algorithm L) for medians and quantiles.

The sample keeps every value until it holds ``size`` of them, so quantiles are
exact up to that many observations; after that it is a uniform random sample
of the whole stream, updated in O(1) amortised time (the random numbers are
drawn only when a value enters the sample). The generator is a seeded
splitmix64 whose state is one integer, so a sample saves to plain data and
restores exactly.
"""

from __future__ import annotations

import math
import zlib

from constraint_sched._state import Reader

_MASK = (1 << 64) - 1


def _splitmix64(state: int) -> tuple[int, float]:
    """The next state and a uniform float in (0, 1)."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    z ^= z >> 31
    return state, ((z >> 11) + 0.5) / 9007199254740992.0


def seed_for(name: str) -> int:
    """A stable seed from a name (the same in every process, unlike ``hash``)."""
    return zlib.crc32(name.encode())


class Reservoir:
    """A uniform sample of at most ``size`` values of a stream, and its quantiles.

    Examples:
        >>> r = Reservoir(size=4, seed=0)
        >>> for x in [5.0, 1.0, 3.0]:
        ...     r.add(x)
        >>> r.quantile(0.5), r.count
        (3.0, 3)
    """

    __slots__ = ("_next", "_rng", "_w", "count", "size", "values")

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.count = 0
        self.values: list[float] = []
        self._rng = seed & _MASK
        self._w = 1.0
        self._next = 0

    def _uniform(self) -> float:
        self._rng, u = _splitmix64(self._rng)
        return u

    def _skip(self) -> None:
        # Algorithm L: the stream index of the next value to enter the sample.
        self._w *= math.exp(math.log(self._uniform()) / self.size)
        gap = math.floor(math.log(self._uniform()) / math.log1p(-self._w)) if self._w < 1 else 0
        self._next = self.count + gap + 1

    def add(self, x: float) -> None:
        """Take one value."""
        self.count += 1
        if self.count <= self.size:
            self.values.append(x)
            if self.count == self.size:
                self._skip()
        elif self.count == self._next:
            self.values[int(self._uniform() * self.size)] = x
            self._skip()

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the sample (linear interpolation), or None when empty."""
        if not self.values:
            return None
        ordered = sorted(self.values)
        position = q * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    def state(self) -> dict[str, object]:
        """Plain data that `restore` reads back exactly."""
        return {
            "count": self.count,
            "values": list(self.values),
            "rng": str(self._rng),
            "w": self._w,
            "next": self._next,
        }

    def load(self, data: Reader) -> None:
        """Restore what `state` wrote; ValueError naming the field if it is corrupt."""
        values = data.numbers("values")
        count, following, w = data.integer("count"), data.integer("next"), data.number("w")
        if len(values) != min(count, self.size):
            raise ValueError(f"{data.path}: {count} observations but {len(values)} values")
        rng = data.data.get("rng")
        if not (isinstance(rng, str) and rng.isdigit() and int(rng) <= _MASK):
            raise ValueError(f"{data.path}.rng: expected a 64-bit integer string, got {rng!r}")
        self.count, self.values, self._rng, self._w, self._next = (
            count, values, int(rng), w, following
        )  # fmt: skip
