"""One sampler for median and quantile discovery: Li's Algorithm L, its random state explicit.

Which observation enters the sample, and in which row, is decided on the
host from the number of observations offered (`offer`), with a seeded
splitmix64 generator whose state is one integer; writing the value into the
chosen row is one call, `write`, on any array namespace (or a list append
on the host). So the core keeps a sample of each spec's values in a Python
list, and an adapter keeps a sample of steps (a row holds every slot's
value of that step) on a device, with the same decisions and no host read.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, NamedTuple

_MASK = (1 << 64) - 1
_NEVER = 1 << 62  # an observation index no stream reaches


class Sampler(NamedTuple):
    """The sampler's state: plain integers and a float, saved as they are."""

    size: int
    """The most values the sample holds."""
    seen: int
    """Observations offered so far."""
    kept: int
    """Values the sample holds."""
    rng: int
    """The generator's state (a 64-bit integer)."""
    w: float
    """Algorithm L's running weight (0 after a `merged`: Algorithm X then)."""
    next: int
    """The index of the next observation to enter the sample, once it is full."""
    fill: int
    """Observations up to this index are appended (the sample holds them all)."""


def splitmix64(state: int) -> tuple[int, float]:
    """The generator's next state and a uniform float in (0, 1)."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    z ^= z >> 31
    return state, ((z >> 11) + 0.5) / 9007199254740992.0


def seed_for(name: str) -> int:
    """A stable seed from a name (the same in every process, unlike ``hash``)."""
    return zlib.crc32(name.encode())


def sampler(size: int, seed: int) -> Sampler:
    """A sampler of at most ``size`` values that has seen nothing.

    Examples:
        >>> s = sampler(2, seed=0)
        >>> rows = []
        >>> for _ in range(3):
        ...     row, s = offer(s)
        ...     rows.append(row)
        >>> rows[:2], s.seen, s.kept
        ([0, 1], 3, 2)
    """
    return Sampler(size, 0, 0, seed & _MASK, 1.0, 0, size)


def skip(s: Sampler) -> Sampler:
    """The sampler with the index of the next observation to enter a full sample drawn."""
    size, count, kept, rng, w, _, fill = s
    if w == 0.0:  # after a merge: Vitter's Algorithm X, which needs only the count
        if kept == 0:  # nothing to replace: nothing enters again
            return Sampler(size, count, kept, rng, w, count + _NEVER, fill)
        rng, u = splitmix64(rng)
        t = count + 1
        gap, quot = 0, (t - kept) / t
        while quot > u:
            gap, t = gap + 1, t + 1
            quot *= (t - kept) / t
        return Sampler(size, count, kept, rng, w, count + gap + 1, fill)
    rng, u = splitmix64(rng)
    w *= math.exp(math.log(u) / size)
    rng, u = splitmix64(rng)
    gap = math.floor(math.log(u) / math.log1p(-w)) if w < 1 else 0
    return Sampler(size, count, kept, rng, w, count + gap + 1, fill)


def offer(s: Sampler) -> tuple[int, Sampler]:
    """Offer one observation: the row it goes to (``kept`` before it: append), or -1.

    Returns:
        The row and the next state.
    """
    size, count, kept, rng, w, following, fill = s
    count += 1
    if count <= fill:  # every observation so far is in the sample
        s = Sampler(size, count, kept + 1, rng, w, following, fill)
        return count - 1, skip(s) if count == size else s
    if count == following:
        rng, u = splitmix64(rng)
        return int(u * kept), skip(Sampler(size, count, kept, rng, w, following, fill))
    return -1, Sampler(size, count, kept, rng, w, following, fill)


def merged(s: Sampler, kept: int, population: int) -> Sampler:
    """The state after the sample was replaced by ``kept`` values standing for ``population`` more.

    Nothing is appended after a merge; later observations enter by Algorithm X.
    """
    return skip(Sampler(s.size, s.seen + population, kept, s.rng, 0.0, s.next, 0))


def write(xp: Any, rows: Any, row: int, values: Any) -> Any:
    """``rows`` with row ``row`` replaced by ``values`` (functional: a new array)."""
    index = xp.arange(rows.shape[0], device=getattr(rows, "device", None))
    return xp.where(xp.reshape(index == row, (-1, 1)), values, rows)


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
        rng, u = splitmix64(rng)
        pick, j = u * sum(fractions), 0
        while j < len(parts) - 1 and (pick >= fractions[j] or fractions[j] == 0.0):
            pick -= fractions[j]
            j += 1
        take[j] = min(take[j] + 1, len(parts[j][0]))
        fractions[j] = 0.0
    out: list[float] = []
    for (pool, _), k in zip(parts, take, strict=True):
        for i in range(k):  # a partial Fisher-Yates shuffle
            rng, u = splitmix64(rng)
            j = i + int(u * (len(pool) - i))
            pool[i], pool[j] = pool[j], pool[i]
        out += pool[:k]
    return out, rng


def quantile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of ``values`` (linear interpolation), or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
