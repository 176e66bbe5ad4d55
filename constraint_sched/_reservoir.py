"""The host's median/quantile sample: a list of values, chosen by `functional`'s sampler.

The decisions (which value enters, in which row) are the functional
sampler's (`constraint_sched.functional.offer`); this class holds the values
in a Python list and keeps the common case (a value that does not enter)
to one comparison. Once the sample is full, it makes its next decisions
several at a time (`decisions`: the same as `offer`'s, at a fraction of
their cost), so that a value that enters costs little more.
"""

from __future__ import annotations

import math

from constraint_sched._state import Reader
from constraint_sched.functional._sampler import (
    _MASK,
    Decisions,
    Sampler,
    combine,
    decisions,
    merged,
    offer,
    quantile,
    sampler,
    seed_for,
    skip,
)

__all__ = ["Reservoir", "combine", "seed_for"]

_PLANNED = 256
"""How many decisions of a full sample are made at once."""


class Reservoir:
    """A uniform sample of at most ``size`` values of a stream, and its quantiles.

    Examples:
        >>> r = Reservoir(size=4, seed=0)
        >>> for x in [5.0, 1.0, 3.0]:
        ...     r.add(x)
        >>> r.quantile(0.5), r.count
        (3.0, 3)
    """

    __slots__ = ("_due", "_left", "_made", "_planned", "_s", "values")

    def __init__(self, size: int, seed: int) -> None:
        self.values: list[float] = []
        self._s: Sampler
        """The sampler's state at the last decision made alone, or before `_planned`."""
        self._planned: Decisions | None
        """The full sample's next decisions, made at once from `_s` (None: one at a time)."""
        self._made: int
        """How many of `_planned` are made."""
        self._due: int
        """The count at which the sample next takes a value."""
        self._left: int
        """Values to count until then: `decide` takes the one that brings it to 0."""
        self._decided(sampler(size, seed))

    @property
    def size(self) -> int:
        """The most values kept."""
        return self._s.size

    @property
    def count(self) -> int:
        """The values offered so far."""
        return self._due - self._left

    @count.setter
    def count(self, count: int) -> None:
        self._left = self._due - count

    def add(self, x: float) -> None:
        """Take one value (the hot path: a countdown unless the value enters)."""
        self._left -= 1
        if not self._left:
            self.decide(x)

    def decide(self, x: float) -> None:
        """Take the value just counted, which brought `_left` to 0: `add` without the count."""
        planned = self._planned
        if planned is not None:  # a full sample: the next of the decisions made at once
            made = self._made
            self.values[planned.rows[made]] = x
            due = planned.next[made]
            self._left, self._due, self._made = due - self._due, due, made + 1
            if made + 1 == len(planned.rows):
                self._decided(planned.end)
            return
        count = self._due
        if count <= self._s.fill:  # every value so far is in the sample
            self.values.append(x)
            if count < self._s.fill:
                self._left, self._due = 1, count + 1
            else:
                self._decided(skip(self._s._replace(seen=count, kept=count)))
        else:  # after a merge (Algorithm X): one decision at a time
            row, s = offer(self._s._replace(seen=count - 1, kept=len(self.values)))
            self.values[row] = x
            self._decided(s)

    def _decided(self, s: Sampler) -> None:
        """Go on from ``s``, the sampler's state at the value just counted."""
        self._s, self._planned, self._made = s, None, 0
        self._due = s.seen + 1 if s.seen < s.fill else s.next
        self._left = self._due - s.seen
        if s.seen >= s.fill and s.w != 0.0:
            self._planned = decisions(s, _PLANNED)

    def _now(self) -> Sampler:
        """The sampler's state after the values counted so far."""
        s = self._s if not self._made else decisions(self._s, self._made).end
        return s._replace(seen=self.count, kept=len(self.values))

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
        s = self._now()
        self.values, rng = combine([(self.values, s.seen), (values, population)], s.size, s.rng)
        self._decided(merged(s._replace(rng=rng), len(self.values), population))
        self.count = self._s.seen

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the sample (linear interpolation), or None when empty."""
        return quantile(self.values, q)

    def state(self) -> dict[str, object]:
        """Plain data that `load` reads back exactly."""
        s = self._now()
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
