"""An epoch's books: one schema, and pure functions over any array namespace.

Every statistic an epoch keeps is declared once, in `SCHEMA`: its name, how
it combines across steps, devices and ranks (``sum``, ``max`` or ``min``),
its empty value, and whether it is kept per spec slot or per step. The
books themselves are a plain ``dict`` from those names to arrays (a pytree
for JAX), and `init`, `update`, `reject`, `merge`, `pack`, `unpack`,
`reduce_packed`, `tallies`, `to_state` and `from_state` read the schema, so
that a new statistic is one line here and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import attrs

from constraint_sched._state import Reader, decode_float, encode_float
from constraint_sched._tally import Tally

Reduction = Literal["sum", "max", "min"]
"""How two parts of an epoch's books combine, for one `Statistic`: ``"sum"``,
``"max"`` or ``"min"``."""

Books = dict[str, Any]
"""The books: a dict from each `SCHEMA` name to an array (shape ``(n,)``, or ``()`` per step)."""


@attrs.frozen
class Statistic:
    """One statistic of an epoch's books.

    Args:
        name: Its key in the books.
        reduction: How two parts of an epoch combine: ``"sum"``, ``"max"`` or ``"min"``.
        empty: Its value before any observation.
        per_slot: Kept per spec slot (shape ``(n,)``) or once per step (shape ``()``).
    """

    name: str
    reduction: Reduction
    empty: float
    per_slot: bool = True


SCHEMA: tuple[Statistic, ...] = (
    Statistic("count", "sum", 0.0),
    Statistic("nonfinite", "sum", 0.0),
    Statistic("violations", "sum", 0.0),
    Statistic("total", "sum", 0.0),
    Statistic("rejects", "sum", 0.0, per_slot=False),
    Statistic("maximum", "max", -math.inf),
    Statistic("minimum", "min", math.inf),
)
"""The books' statistics, grouped by reduction (so that `pack` lays each group out in one run).

``count``: observations of a slot, valid or not (accepted steps only);
``nonfinite``: the NaN or infinite ones; ``violations``: valid ones beyond
the bound in force; ``total``: the sum of the valid ones; ``rejects``:
rejected steps; ``maximum`` and ``minimum``: the extremes of the valid ones.
"""

_COMBINE: dict[Reduction, Callable[[Any, Any, Any], Any]] = {
    "sum": lambda xp, a, b: a + b,
    "max": lambda xp, a, b: xp.maximum(a, b),
    "min": lambda xp, a, b: xp.minimum(a, b),
}


def init(xp: Any, n: int, *, dtype: Any = None, device: Any = None) -> Books:
    """Empty books for ``n`` slots, as arrays of ``xp`` (float64 unless ``dtype`` says).

    Examples:
        >>> import numpy as np
        >>> books = init(np, 2)
        >>> books["count"].tolist(), books["maximum"].tolist(), books["rejects"].shape
        ([0.0, 0.0], [-inf, -inf], ())
    """
    dtype = xp.float64 if dtype is None else dtype
    kwargs = {} if device is None else {"device": device}
    return {
        s.name: xp.full((n,) if s.per_slot else (), s.empty, dtype=dtype, **kwargs) for s in SCHEMA
    }


def update(
    xp: Any,
    books: Books,
    values: Any,
    *,
    above: Any,
    below: Any,
    observed: Any = None,
    accepted: Any = None,
) -> Books:
    """The books after one step's values (one per slot); pure, with no data-dependent branch.

    Args:
        xp: The values' namespace.
        books: The books so far.
        values: Shape ``(n,)``: each slot's value this step.
        above: Values above this (per slot, or one number) are violations.
        below: Values below this are violations.
        observed: Shape ``(n,)`` bools: which slots this step observed (None: all).
        accepted: A 0-d bool: count the step only if true (None: counted).

    Returns:
        New books (the old ones are not changed).

    Examples:
        >>> import numpy as np
        >>> b = init(np, 1)
        >>> for x in [3.0, float("nan"), 5.0]:
        ...     b = update(np, b, np.array([x]), above=4.5, below=-np.inf)
        >>> [b[k].tolist() for k in ("count", "nonfinite", "violations", "total", "maximum")]
        [[3.0], [1.0], [1.0], [8.0], [5.0]]
    """
    dtype = books["count"].dtype
    if values.dtype != dtype:
        values = xp.astype(values, dtype)
    valid = xp.isfinite(values)
    weight: Any = 1.0
    if observed is not None:
        valid = valid & observed
        weight = xp.astype(observed, dtype)
    if accepted is not None:
        valid = valid & accepted
        weight = weight * xp.astype(accepted, dtype)
    counted = xp.astype(valid, dtype)
    over = xp.astype(valid & ((values > above) | (values < below)), dtype)
    return {
        "count": books["count"] + weight,
        "nonfinite": books["nonfinite"] + (weight - counted),
        "violations": books["violations"] + over,
        "total": books["total"] + xp.where(valid, values, 0.0),
        "rejects": books["rejects"],
        "maximum": xp.maximum(books["maximum"], xp.where(valid, values, -math.inf)),
        "minimum": xp.minimum(books["minimum"], xp.where(valid, values, math.inf)),
    }


def reject(xp: Any, books: Books, flag: Any) -> Books:
    """The books after ``flag`` (a 0-d bool or count) more rejected steps."""
    return {**books, "rejects": books["rejects"] + xp.astype(flag, books["rejects"].dtype)}


def forget_nonfinite(xp: Any, books: Books, slots: Any) -> Books:
    """The books as if the non-finite observations of ``slots`` (a bool mask) were never made."""
    dropped = xp.where(slots, books["nonfinite"], 0.0)
    return {**books, "count": books["count"] - dropped, "nonfinite": books["nonfinite"] - dropped}


def merge(xp: Any, a: Books, b: Books) -> Books:
    """Two parts of one epoch's books as one, each statistic by its reduction."""
    return {s.name: _COMBINE[s.reduction](xp, a[s.name], b[s.name]) for s in SCHEMA}


def layout(n: int) -> dict[str, slice]:
    """Where each statistic, and each reduction's run of them, lies in a packed vector.

    Examples:
        >>> layout(2)["rejects"], layout(2)["max"]
        (slice(8, 9, None), slice(9, 11, None))
    """
    out: dict[str, slice] = {}
    start = 0
    for s in SCHEMA:
        size = n if s.per_slot else 1
        out[s.name] = slice(start, start + size)
        run = out.get(s.reduction)
        out[s.reduction] = slice(start if run is None else run.start, start + size)
        start += size
    return out


def pack(xp: Any, books: Books) -> Any:
    """The books as one 1-D array in `SCHEMA` order (an epoch's one copy, one reduction per run)."""
    return xp.concat([xp.reshape(books[s.name], (-1,)) for s in SCHEMA])


def unpack(xp: Any, packed: Any, n: int) -> Books:
    """The books `pack` laid out."""
    where = layout(n)
    return {
        s.name: packed[where[s.name]] if s.per_slot else xp.reshape(packed[where[s.name]], ())
        for s in SCHEMA
    }


def reduce_packed(n: int, reduce: Callable[[slice, Reduction], None]) -> None:
    """Call ``reduce(part, reduction)`` once per reduction's run of a packed vector.

    An adapter reduces across processes with it: ``reduce`` runs its
    collective (a sum, max or min all-reduce) on ``packed[part]``.
    """
    where = layout(n)
    for reduction in ("sum", "max", "min"):
        if reduction in where:
            reduce(where[reduction], reduction)


def tallies(
    packed: Sequence[float], n: int, samples: Sequence[Sequence[float]] | None = None
) -> tuple[list[Tally], int]:
    """Each slot's `Tally` and the rejected steps, from packed books read on the host.

    Args:
        packed: `pack`'s vector as Python floats.
        n: The slots.
        samples: Each slot's median/quantile sample, if one was kept.

    Raises:
        ValueError: The numbers are not what any run reaches (see `Tally`).
    """
    where = {name: part.start for name, part in layout(n).items()}
    out = []
    for i in range(n):
        count, nonfinite, violations = (
            round(packed[where[k] + i]) for k in ("count", "nonfinite", "violations")
        )
        try:
            tally = Tally(
                count,
                nonfinite=nonfinite,
                violations=violations,
                total=packed[where["total"] + i],
                maximum=packed[where["maximum"] + i],
                minimum=packed[where["minimum"] + i],
                samples=() if samples is None else samples[i],
            )
        except ValueError as error:
            raise ValueError(f"slot {i}: {error}") from None
        out.append(tally)
    return out, round(packed[where["rejects"]])


def row_samples(
    packed: Sequence[float], n: int, slots: Sequence[int]
) -> dict[int, tuple[list[float], int]]:
    """Each slot's sample from packed books followed by a sample of steps (rows of ``n`` values).

    A row holds every slot's value of one kept step, NaN where the step had
    no valid value of that slot, so a slot's non-NaN entries are a uniform
    sample of its valid values.

    Returns:
        For each of ``slots``, its sampled values and the valid observations
        they stand for (``count - nonfinite``), as `combine` takes them.
    """
    where, size = layout(n), sum(n if s.per_slot else 1 for s in SCHEMA)
    rows = (len(packed) - size) // n
    out = {}
    for i in slots:
        valid = round(packed[where["count"].start + i] - packed[where["nonfinite"].start + i])
        values = [packed[size + r * n + i] for r in range(rows)]
        out[i] = ([x for x in values if x == x], valid)  # x == x: not NaN
    return out


def to_state(books: Mapping[str, Any]) -> dict[str, Any]:
    """The books as strict-JSON data (host lists; non-finite floats as strings)."""
    out: dict[str, Any] = {}
    for s in SCHEMA:
        values = [float(v) for v in _host_list(books[s.name])]
        out[s.name] = [encode_float(v) for v in values] if s.per_slot else encode_float(values[0])
    return out


def from_state(data: Any, n: int, path: str) -> dict[str, list[float]]:
    """Read what `to_state` wrote, checked against what a run reaches; ValueError naming the path.

    Returns:
        Each statistic as a list of floats (one for a per-step statistic).
    """
    reader = Reader(data, path)
    out: dict[str, list[float]] = {}
    for s in SCHEMA:
        raw = reader.data.get(s.name)
        items = raw if s.per_slot else [raw]
        if not isinstance(items, list) or len(items) != (n if s.per_slot else 1):
            size = n if s.per_slot else 1
            raise ValueError(f"{path}.{s.name}: expected {size} numbers, got {raw!r}")
        out[s.name] = [decode_float(v, f"{path}.{s.name}") for v in items]
    for name in ("count", "nonfinite", "violations", "rejects"):
        for i, v in enumerate(out[name]):
            if not (math.isfinite(v) and v >= 0 and v == int(v)):
                raise ValueError(f"{path}.{name}[{i}]: expected a count >= 0, got {v!r}")
    if not all(math.isfinite(v) for v in out["total"]):
        raise ValueError(f"{path}.total: expected finite sums, got {out['total']!r}")
    packed = [v for s in SCHEMA for v in out[s.name]]
    try:
        tallies(packed, n)
    except ValueError as error:
        names = ", ".join(s.name for s in SCHEMA)
        raise ValueError(f"{path}: {error} (the statistics {names} disagree)") from None
    return out


def _host_list(value: Any) -> list[Any]:
    if hasattr(value, "tolist"):
        listed = value.tolist()
        return listed if isinstance(listed, list) else [listed]
    return list(value) if isinstance(value, (list, tuple)) else [value]
