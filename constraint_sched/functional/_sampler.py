"""One sampler for median and quantile discovery: Li's Algorithm L, its random state explicit.

Which observation enters the sample, and in which row, is decided on the
host from the number of observations offered (`offer`), with a seeded
splitmix64 generator whose state is one integer; writing the value into the
chosen row is one call, `write`, on any array namespace (or a list append
on the host). So the core keeps a sample of each spec's values in a Python
list, and an adapter keeps a sample of steps (a row holds every slot's
value of that step) on a device, with the same decisions and no host read.

`offer` decides one observation at a time; `decisions` makes a full
sample's next decisions at once (the host's hot path), with the same draws
and the same float operations (`_leaps`), hence the same rows and states.
"""

from __future__ import annotations

import math
import zlib
from itertools import accumulate, repeat
from operator import add, mul, truediv
from typing import Any, NamedTuple

import numpy as np

_MASK = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment: the i-th draw's state is rng + i * _GAMMA
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
    state = (state + _GAMMA) & _MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    z ^= z >> 31
    return state, ((z >> 11) + 0.5) / 9007199254740992.0


def _uniforms(state: int, n: int) -> np.ndarray:
    """The floats of ``n`` successive `splitmix64` draws from ``state``, computed at once.

    The generator is counter-based (the i-th draw's state is ``state + i *
    _GAMMA`` mod 2**64), so the draws are independent: numpy's uint64
    arithmetic wraps as `_MASK` does, and the float is made by the same exact
    steps, so each is bit for bit the one `splitmix64` gives. The state after
    them is ``(state + n * _GAMMA) & _MASK``.
    """
    z = np.arange(1, n + 1, dtype=np.uint64) * np.uint64(_GAMMA) + np.uint64(state)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    floats: np.ndarray = ((z >> np.uint64(11)).astype(np.float64) + 0.5) / 9007199254740992.0
    return floats


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
    rng, v = splitmix64(rng)
    (w,), (following,) = _leaps(size, w, count, [u], [v])
    return Sampler(size, count, kept, rng, w, following, fill)


def _leaps(
    size: int, w: float, count: int, us: list[float], vs: list[float]
) -> tuple[list[float], list[int]]:
    """Algorithm L's steps from weight ``w`` after observation ``count``, one per draw pair.

    A step multiplies the weight by ``exp(log(u) / size)`` and leaps
    ``floor(log(v) / log1p(-w))`` observations (none while ``w`` is not
    below 1); the next step starts at the observation after the leap. `skip`
    (one step) and `decisions` (many) both step through here, so that they
    make the same float operations, in C loops over the draws.

    Returns:
        Per step, the weight and the index of the next observation to enter.
    """
    factors = map(math.exp, map(truediv, map(math.log, us), repeat(size)))
    ws = list(accumulate(factors, mul, initial=w))[1:]
    # log(1 - w), or -inf where w is not below 1: a leap of floor(log(v) / -inf) = 0
    logs = [math.log1p(-x) if x < 1 else -math.inf for x in ws]
    leaps = map(math.floor, map(truediv, map(math.log, vs), logs))
    return ws, list(accumulate(map(add, leaps, repeat(1)), initial=count))[1:]


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


class Decisions(NamedTuple):
    """A full sample's next decisions, made at once by `decisions`."""

    rows: list[int]
    """Per decision, the row its observation replaces."""
    next: list[int]
    """Per decision, the index of the next observation to enter after it."""
    end: Sampler
    """The state after the last decision."""


def decisions(s: Sampler, n: int) -> Decisions:
    """The next ``n`` (at least 1) decisions of a full sample under Algorithm L, made at once.

    ``s`` is the state of a full sample whose weight ``w`` is not 0 (no
    `merged`), at or after a `skip`: its next decision is at ``s.next``. The
    decisions and the states are those that `offer` makes at the same
    observations (the draws of `_uniforms`, the steps of `_leaps`), so the
    decisions of ``n`` are those of any larger number, up to the ``n``-th.

    Examples:
        >>> s = sampler(2, seed=0)
        >>> for _ in range(2):
        ...     _, s = offer(s)
        >>> planned = decisions(s, 3)
        >>> made = []
        >>> while len(made) < 3:
        ...     row, s = offer(s)
        ...     if row >= 0:
        ...         made.append((row, s.next))
        >>> made == list(zip(planned.rows, planned.next)) and s == planned.end
        True
    """
    size, seen, kept, rng, w, following, fill = s
    draws = _uniforms(rng, 3 * n)  # per decision: the row's draw, then the two of the step
    rows = (draws[::3] * kept).astype(np.int64).tolist()  # int(u * kept), as `offer`
    ws, nexts = _leaps(size, w, following, draws[1::3].tolist(), draws[2::3].tolist())
    seen = nexts[-2] if n > 1 else following
    rng = (rng + 3 * n * _GAMMA) & _MASK
    return Decisions(rows, nexts, Sampler(size, seen, kept, rng, ws[-1], nexts[-1], fill))


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
