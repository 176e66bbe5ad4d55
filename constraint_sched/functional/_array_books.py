"""`ArrayBooks`: one source's books and median sample, kept as arrays where its values live.

Every update is the functional books' `update` (a fixed sequence of array
operations, no Python branch on an array value), so a step never waits for
the device that holds it. The median/quantile sample is a sample of *steps*:
the functional sampler decides on the host, from the number of steps, whether
a step is kept and in which row; a row holds every slot's value of that step,
NaN where a value is missing, invalid or not accepted, so a slot's valid
entries are a uniform sample of its valid values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from constraint_sched._state import Reader, decode_float, encode_float
from constraint_sched.functional._books import (
    SCHEMA,
    forget_nonfinite,
    from_state,
    init,
    pack,
    reject,
    to_state,
    update,
)
from constraint_sched.functional._sampler import Sampler, offer, sampler


class ArrayBooks:
    """The books of one source's arrays (a device, a process), for one epoch.

    Arrays are of ``xp`` (numpy, torch, ...; the sample rows are written in
    place, so its arrays must take item assignment), on ``device``, in
    ``dtype``. Values come in already detached from any autograd graph.

    Args:
        n: The slots.
        xp: The array namespace.
        device: Where the arrays live (None: the namespace's default).
        dtype: The books' dtype (None: ``xp.float64``).
        sample_size: Rows of the median/quantile sample, when one is kept.

    Examples:
        >>> import numpy as np
        >>> from constraint_sched import functional as F
        >>> books = F.ArrayBooks(2, np, sample_size=0)
        >>> books.start([10.0, 10.0], [-np.inf, -np.inf], sampling=False, seed=0)
        >>> books.add((0,), [np.asarray(12.0)], None)
        >>> books.add((0, 1), [np.asarray(3.0), np.asarray(np.nan)], None)
        >>> F.tallies(books.pack().tolist(), 2)[0][0]
        Tally(count=2, nonfinite=0, violations=1, maximum=12.0, minimum=3.0, total=15.0, samples=())
    """

    def __init__(
        self, n: int, xp: Any, *, device: Any = None, dtype: Any = None, sample_size: int
    ) -> None:
        self.n, self.xp, self.device, self.sample_size = n, xp, device, sample_size
        self.dtype = xp.float64 if dtype is None else dtype
        self._kw: dict[str, Any] = {} if device is None else {"device": device}
        self._nan = xp.asarray(math.nan, dtype=self.dtype, **self._kw)
        self._masks: dict[tuple[int, ...], Any] = {}

    def _array(self, values: Any, dtype: Any = None) -> Any:
        return self.xp.asarray(values, dtype=self.dtype if dtype is None else dtype, **self._kw)

    def start(
        self, above: Sequence[float], below: Sequence[float], *, sampling: bool, seed: int
    ) -> None:
        """Empty books under these violation limits; a fresh sample if ``sampling``."""
        self.books = init(self.xp, self.n, dtype=self.dtype, device=self.device)
        self.above, self.below = self._array(above), self._array(below)
        self.sampler = sampler(self.sample_size, seed)
        self.rows: Any = None
        if sampling and self.sample_size:
            self.rows = self.xp.full((self.sample_size, self.n), math.nan, dtype=self.dtype,
                                     **self._kw)  # fmt: skip
        self.touched = False

    def _mask(self, slots: tuple[int, ...]) -> Any:
        """The slots observed, as a mask made once per tuple (None: all, in order)."""
        if slots not in self._masks:
            full = slots == tuple(range(self.n))
            mask = None if full else self._array([i in slots for i in range(self.n)], self.xp.bool)
            self._masks[slots] = mask
        return self._masks[slots]

    def add(self, slots: tuple[int, ...], values: Sequence[Any], accepted: Any) -> None:
        """Count one step's 0-d arrays of ``slots``; with ``accepted`` (a 0-d bool), if true."""
        xp, self.touched = self.xp, True
        observed = self._mask(slots)
        if observed is not None:  # the slots this step did not observe have no value in it
            by_slot = dict(zip(slots, values, strict=True))
            values = [by_slot.get(i, self._nan) for i in range(self.n)]
        if any(t.ndim for t in values):
            values = [xp.reshape(t, ()) for t in values]
        v = xp.stack(values)
        if v.dtype != self.dtype:
            v = xp.astype(v, self.dtype)
        self.books = update(xp, self.books, v, above=self.above, below=self.below,
                            observed=observed, accepted=accepted)  # fmt: skip
        if self.rows is not None:
            row, self.sampler = offer(self.sampler)
            if row >= 0:  # in place: one row written, where `write` would rewrite the table
                keep = xp.isfinite(v) if accepted is None else xp.isfinite(v) & accepted
                self.rows[row, ...] = xp.where(keep, v, self._nan)

    def reject(self, flag: Any) -> None:
        """Count a rejected step where ``flag`` (a 0-d bool or count array) says so."""
        self.touched = True
        self.books = reject(self.xp, self.books, self.xp.reshape(flag, ()))

    def forget_nonfinite(self, slots: Sequence[int]) -> None:
        """Forget the non-finite observations of ``slots`` this epoch."""
        mask = self._array([i in slots for i in range(self.n)], self.xp.bool)
        self.books = forget_nonfinite(self.xp, self.books, mask)

    @property
    def kept(self) -> int:
        """How many rows of the sample hold steps."""
        return self.sampler.kept if self.rows is not None else 0

    def pack(self) -> Any:
        """The books, then the sample's kept rows, in one float64 vector where they live."""
        xp = self.xp
        parts = [pack(xp, self.books)]
        if self.rows is not None:
            parts.append(xp.reshape(self.rows[: self.kept, ...], (-1,)))
        return xp.astype(xp.concat(parts), xp.float64)

    def state(self) -> dict[str, Any]:
        """The books and the sample as plain data (reads the arrays: for checkpoints only)."""
        rows = None if self.rows is None else self.rows[: self.kept, ...].tolist()
        return {
            "device": str(self.device),
            "books": to_state(self.books),
            "sampler": {**self.sampler._asdict(), "rng": str(self.sampler.rng)},
            "rows": None if rows is None else [[encode_float(v) for v in row] for row in rows],
        }

    def load(self, data: Reader) -> None:
        """Restore what `state` wrote, after a `start` for the same epoch.

        Raises:
            ValueError: A field is missing, corrupt or out of reach of a run (named).
        """
        books = from_state(data.child("books").data, self.n, f"{data.path}.books")
        saved = data.data.get("rows")
        if (saved is None) != (self.rows is None):
            keeps = "a" if self.rows is not None else "no"
            raise ValueError(f"{data.path}.rows: this epoch keeps {keeps} sample, got {saved!r}")
        state = self.sampler
        if self.rows is not None:
            s = data.child("sampler")
            rng = s.data.get("rng")
            if not (isinstance(rng, str) and rng.isdigit()):
                raise ValueError(f"{s.path}.rng: expected an integer string, got {rng!r}")
            state = Sampler(self.sample_size, s.integer("seen"), s.integer("kept"), int(rng),
                            s.number("w"), s.integer("next"), s.integer("fill"))  # fmt: skip
            table = _rows(data, state.kept, self.n, books["minimum"], books["maximum"])
            self.rows = self.xp.full((self.sample_size, self.n), math.nan, dtype=self.dtype,
                                     **self._kw)  # fmt: skip
            if table:
                self.rows[: len(table), ...] = self._array(table)
        self.books = {
            s.name: self._array(books[s.name]) if s.per_slot else self._array(books[s.name][0])
            for s in SCHEMA
        }
        self.sampler, self.touched = state, True


def _rows(data: Reader, kept: int, n: int, low: list[float], high: list[float]) -> list[Any]:
    """The saved sample rows, each value NaN or within the recorded extremes."""
    table = []
    for r, row in enumerate(data.items("rows", kept)):
        if not isinstance(row, list) or len(row) != n:
            raise ValueError(f"{data.path}.rows[{r}]: expected {n} numbers, got {row!r}")
        values = [
            decode_float(v, f"{data.path}.rows[{r}][{i}]", allow_nan=True)
            for i, v in enumerate(row)
        ]
        for i, v in enumerate(values):
            if not (math.isnan(v) or low[i] <= v <= high[i]):
                raise ValueError(
                    f"{data.path}.rows[{r}][{i}] = {v!r} lies outside the recorded "
                    f"[minimum, maximum] = [{low[i]!r}, {high[i]!r}]"
                )
        table.append(values)
    return table
