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


def combine(parts: list[tuple[list[float], int]], size: int, rng: int) -> tuple[list[float], int]:
    """A uniform sample of at most ``size`` values of the union of several populations.

    Each part is ``(sample, population)``: a uniform sample, without
    replacement, of ``min(population, size)`` or more of ``population``
    observations. The result draws from each part as a sample of the union
    would (a multivariate hypergeometric split), then picks that many of the
    part's values at random.

    Returns:
        The sample and the generator's next state.
    """
    remaining = [population for _, population in parts]
    total = sum(remaining)
    take = [0] * len(parts)
    for _ in range(min(size, total)):
        rng, u = _splitmix64(rng)
        pick = u * total
        j = 0
        while j < len(parts) - 1 and pick >= remaining[j]:
            pick -= remaining[j]
            j += 1
        take[j] += 1
        remaining[j] -= 1
        total -= 1
    out: list[float] = []
    for (sample, _), n in zip(parts, take, strict=True):
        pool = list(sample)
        for i in range(n):  # a partial Fisher-Yates shuffle
            rng, u = _splitmix64(rng)
            j = i + int(u * (len(pool) - i))
            pool[i], pool[j] = pool[j], pool[i]
        out += pool[:n]
    return out, rng


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
        # The stream index of the next value to enter the sample.
        if self._w == 0.0:  # after a merge: Vitter's Algorithm X, which needs only the count
            u, k, t = self._uniform(), self.size, self.count + 1
            gap, quot = 0, (t - k) / t
            while quot > u:
                gap, t = gap + 1, t + 1
                quot *= (t - k) / t
        else:  # Algorithm L
            self._w *= math.exp(math.log(self._uniform()) / self.size)
            gap = math.floor(math.log(self._uniform()) / math.log1p(-self._w)) if self._w < 1 else 0
        self._next = self.count + gap + 1

    def merge(self, values: list[float], population: int) -> None:
        """Take ``values``, a uniform sample of ``population`` observations (all of them if equal).

        The sample then stands for ``count + population`` observations: each
        part keeps a share of the sample proportional to how many observations
        it stands for, not to how many values it brings. ``values`` must hold
        at least ``min(population, size)`` of them.
        """
        if len(values) >= population:
            for x in values[:population]:
                self.add(x)
            return
        if len(values) < min(population, self.size):
            raise ValueError(
                f"a sample of {population} observations needs at least "
                f"{min(population, self.size)} values, got {len(values)}"
            )
        merged, self._rng = combine(
            [(self.values, self.count), (values, population)], self.size, self._rng
        )
        self.values = merged
        self.count += population
        self._w = 0.0
        self._skip()

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
