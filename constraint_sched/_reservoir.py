"""The host's median/quantile sample: a list of values, chosen by `functional`'s sampler.

The decisions (which value enters, in which row) are the functional
sampler's (`constraint_sched.functional.offer`); this class holds the values
in a Python list and keeps the common case (a value that does not enter)
to one comparison.
"""

from __future__ import annotations

import math

from constraint_sched._state import Reader
from constraint_sched.functional._sampler import (
    _MASK,
    Sampler,
    combine,
    merged,
    offer,
    quantile,
    sampler,
    seed_for,
    skip,
)

__all__ = ["Reservoir", "combine", "seed_for"]


class Reservoir:
    """A uniform sample of at most ``size`` values of a stream, and its quantiles.

    Examples:
        >>> r = Reservoir(size=4, seed=0)
        >>> for x in [5.0, 1.0, 3.0]:
        ...     r.add(x)
        >>> r.quantile(0.5), r.count
        (3.0, 3)
    """

    __slots__ = ("_fill", "_next", "_s", "count", "values")

    def __init__(self, size: int, seed: int) -> None:
        self._s: Sampler = sampler(size, seed)  # its count is brought up to date at decisions
        self._fill, self._next = self._s.fill, self._s.next  # read on every add
        self.count = 0
        """The values offered so far."""
        self.values: list[float] = []

    @property
    def size(self) -> int:
        """The most values kept."""
        return self._s.size

    def add(self, x: float) -> None:
        """Take one value (`constraint_sched.functional.offer`'s rule, inlined: the hot path)."""
        self.count += 1
        if self.count < self._fill or self.count == self._next or self.count == self._fill:
            self.decide(x)

    def decide(self, x: float) -> None:
        """Take the value just counted, which the sampler keeps: `add` without the count."""
        if self.count <= self._fill:  # every value so far is in the sample
            self.values.append(x)
            if self.count == self._fill:
                size, _, _, rng, w, following, fill = self._s
                self._decided(skip(Sampler(size, self.count, self.count, rng, w, following, fill)))
        elif self.count == self._next:
            size, _, _, rng, w, following, fill = self._s
            row, s = offer(Sampler(size, self.count - 1, len(self.values), rng, w, following, fill))
            self.values[row] = x
            self._decided(s)

    def _decided(self, s: Sampler) -> None:
        self._s, self._fill, self._next = s, s.fill, s.next

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
        s = self._s._replace(seen=self.count)
        self.values, rng = combine([(self.values, s.seen), (values, population)], s.size, s.rng)
        self._decided(merged(s._replace(rng=rng), len(self.values), population))
        self.count = self._s.seen

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the sample (linear interpolation), or None when empty."""
        return quantile(self.values, q)

    def state(self) -> dict[str, object]:
        """Plain data that `load` reads back exactly."""
        s = self._s
        return {
            "count": self.count,
            "values": list(self.values),
            "rng": str(s.rng),
            "w": s.w,
            "next": s.next,
            "fill": s.fill,
        }

    def load(self, data: Reader) -> None:
        """Restore what `state` wrote; ValueError naming the field if it is corrupt."""
        size = self.size
        values = data.numbers("values")
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise ValueError(
                    f"{data.path}.values[{i}]: a sampled observation is finite, got {v!r}"
                )
        count, following, w = data.integer("count"), data.integer("next"), data.number("w")
        fill = data.integer("fill")
        if fill not in (0, size):
            raise ValueError(f"{data.path}.fill: expected 0 or {size}, got {fill}")
        complete = len(values) == min(count, size)
        if not (complete if fill else len(values) <= min(count, size)):
            raise ValueError(
                f"{data.path}: {count} observations but {len(values)} values "
                "(count and values disagree)"
            )
        rng = data.data.get("rng")
        if not (isinstance(rng, str) and rng.isdigit() and int(rng) <= _MASK):
            raise ValueError(f"{data.path}.rng: expected a 64-bit integer string, got {rng!r}")
        self._decided(Sampler(size, count, len(values), int(rng), w, following, fill))
        self.values, self.count = values, count
