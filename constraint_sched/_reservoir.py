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
_NEVER = 1 << 62  # a stream index no stream reaches


def _splitmix64(state: int) -> tuple[int, float]:
    """The next state and a uniform float in (0, 1)."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    z ^= z >> 31
    return state, ((z >> 11) + 0.5) / 9007199254740992.0


def combine(parts: list[tuple[list[float], int]], size: int, rng: int) -> tuple[list[float], int]:
    """A sample of at most ``size`` values of the union of several populations.

    Each part is ``(sample, population)``: a uniform sample, without
    replacement, of a ``population`` of observations (all of them when the
    lengths are equal). Each part gives the combined sample a share
    proportional to its population (the remainders going to parts at random
    in proportion to their fractions), picked at random from its values; the
    combined sample is as large as every part can supply its share of.

    Returns:
        The sample and the generator's next state.
    """
    parts = [(list(sample), population) for sample, population in parts if population > 0]
    total = sum(population for _, population in parts)
    if not parts:
        return [], rng
    n = min(size, total)
    for sample, population in parts:
        n = min(n, len(sample) * total // population)
    quotas = [n * population / total for _, population in parts]
    take = [math.floor(q) for q in quotas]
    fractions = [q - t for q, t in zip(quotas, take, strict=True)]
    for _ in range(n - sum(take)):
        rng, u = _splitmix64(rng)
        pick, j = u * sum(fractions), 0
        while j < len(parts) - 1 and (pick >= fractions[j] or fractions[j] == 0.0):
            pick -= fractions[j]
            j += 1
        take[j] = min(take[j] + 1, len(parts[j][0]))
        fractions[j] = 0.0
    out: list[float] = []
    for (pool, _), k in zip(parts, take, strict=True):
        for i in range(k):  # a partial Fisher-Yates shuffle
            rng, u = _splitmix64(rng)
            j = i + int(u * (len(pool) - i))
            pool[i], pool[j] = pool[j], pool[i]
        out += pool[:k]
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

    __slots__ = ("_fill", "_next", "_rng", "_w", "count", "size", "values")

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.count = 0
        self.values: list[float] = []
        self._rng = seed & _MASK
        self._w = 1.0
        self._next = 0
        self._fill = size  # values are appended while count <= this

    def _uniform(self) -> float:
        self._rng, u = _splitmix64(self._rng)
        return u

    def _skip(self) -> None:
        # The stream index of the next value to enter the sample.
        if self._w == 0.0:  # after a merge: Vitter's Algorithm X, which needs only the count
            k = len(self.values)
            if k == 0:  # nothing to replace: nothing enters again
                self._next = self.count + _NEVER
                return
            u, t = self._uniform(), self.count + 1
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
        it stands for, not to how many values it brings (see `combine`); a
        part with fewer values than its share can shrink the sample.
        """
        if len(values) >= population:
            for x in values[:population]:
                self.add(x)
            return
        merged, self._rng = combine(
            [(self.values, self.count), (values, population)], self.size, self._rng
        )
        self.values = merged
        self.count += population
        self._fill = 0  # the sample no longer holds every value: nothing is appended
        self._w = 0.0
        self._skip()

    def add(self, x: float) -> None:
        """Take one value."""
        self.count += 1
        if self.count <= self._fill:  # every value so far is in the sample
            self.values.append(x)
            if self.count == self.size:
                self._skip()
        elif self.count == self._next:
            values = self.values
            values[int(self._uniform() * len(values))] = x
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
            "fill": self._fill,
        }

    def load(self, data: Reader) -> None:
        """Restore what `state` wrote; ValueError naming the field if it is corrupt."""
        values = data.numbers("values")
        count, following, w = data.integer("count"), data.integer("next"), data.number("w")
        fill = data.integer("fill")
        if fill not in (0, self.size):
            raise ValueError(f"{data.path}.fill: expected 0 or {self.size}, got {fill}")
        complete = len(values) == min(count, self.size)
        if not (complete if fill else len(values) <= min(count, self.size)):
            raise ValueError(f"{data.path}: {count} observations but {len(values)} values")
        rng = data.data.get("rng")
        if not (isinstance(rng, str) and rng.isdigit() and int(rng) <= _MASK):
            raise ValueError(f"{data.path}.rng: expected a 64-bit integer string, got {rng!r}")
        self.count, self.values, self._rng, self._w, self._next, self._fill = (
            count, values, int(rng), w, following, fill
        )  # fmt: skip
