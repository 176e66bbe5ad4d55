"""One device's books and median sample: `constraint_sched.functional` state kept on the device.

Every update is the functional books' `update` (a fixed sequence of tensor
operations, no Python branch on a tensor), so a step never waits for the
device. The median/quantile sample is a sample of *steps*: the functional
sampler decides on the host, from the number of steps, whether a step is
kept and in which row; a row holds every slot's value of that step, NaN where
a value is missing, invalid or not accepted, so a slot's valid entries are a
uniform sample of its valid values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import array_api_compat
import torch

from constraint_sched import functional as F
from constraint_sched.state import Reader, decode_float, encode_float


def upload(values: Sequence[float], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Host numbers as a tensor on ``device``, copied without making the host wait.

    On CUDA the numbers go through pinned memory with a non-blocking copy
    (torch's pinned allocator keeps the buffer until the copy is done).
    """
    host = torch.tensor(list(values), dtype=dtype)
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


class DeviceBooks:
    """The books of the tensors of one device, for one epoch."""

    def __init__(self, n: int, device: torch.device, sample_size: int) -> None:
        self.n, self.device, self.sample_size = n, device, sample_size
        # MPS has no float64; elsewhere counts and sums stay exact in float64.
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.xp = array_api_compat.array_namespace(torch.empty(0))
        self._masks: dict[tuple[int, ...], torch.Tensor | None] = {}

    def start(
        self, above: Sequence[float], below: Sequence[float], sampling: bool, seed: int
    ) -> None:
        """Empty books under these violation limits; a fresh sample if ``sampling``."""
        self.books = F.init(self.xp, self.n, dtype=self.dtype, device=self.device)
        self.above = upload(above, self.dtype, self.device)
        self.below = upload(below, self.dtype, self.device)
        self.sampler = F.sampler(self.sample_size, seed)
        self.rows: torch.Tensor | None = None
        if sampling and self.sample_size:
            self.rows = torch.full(
                (self.sample_size, self.n), math.nan, dtype=self.dtype, device=self.device
            )
        self.touched = False

    def _mask(self, slots: tuple[int, ...]) -> torch.Tensor | None:
        """The slots observed, as a device mask made once per tuple (None: all, in order)."""
        if slots not in self._masks:
            full = slots == tuple(range(self.n))
            mask = [i in slots for i in range(self.n)]
            self._masks[slots] = None if full else upload(mask, torch.bool, self.device)
        return self._masks[slots]

    @torch.no_grad()
    def add(
        self, slots: tuple[int, ...], values: list[torch.Tensor], accepted: torch.Tensor | None
    ) -> None:
        """Count one step's values of ``slots``; with ``accepted`` (a 0-d bool), only if true."""
        self.touched = True
        if not all(t.dim() == 0 for t in values):
            values = [t.reshape(()) for t in values]
        v = torch.stack(values)  # under no_grad: no graph, whatever the inputs require
        if v.dtype != self.dtype:
            v = v.to(self.dtype)
        observed = self._mask(slots)
        if observed is not None:  # the slots this step did not observe have no value in it
            v = torch.full((self.n,), math.nan, dtype=self.dtype, device=self.device).index_copy(
                0, torch.tensor(slots, device=self.device), v
            )
        xp = self.xp
        self.books = F.update(xp, self.books, v, above=self.above, below=self.below,
                              observed=observed, accepted=accepted)  # fmt: skip
        if self.rows is not None:
            row, self.sampler = F.offer(self.sampler)
            if row >= 0:  # in place: one row copied, where `F.write` would rewrite the table
                keep = torch.isfinite(v) if accepted is None else torch.isfinite(v) & accepted
                self.rows[row] = torch.where(keep, v, math.nan)

    @torch.no_grad()
    def reject(self, flag: torch.Tensor) -> None:
        """Count a rejected step where ``flag`` (a 0-d bool or count tensor) says so."""
        self.touched = True
        self.books = F.reject(self.xp, self.books, flag.detach().reshape(()))

    def forget_nonfinite(self, slots: Sequence[int]) -> None:
        """Forget the non-finite observations of ``slots`` this epoch."""
        mask = upload([i in slots for i in range(self.n)], torch.bool, self.device)
        self.books = F.forget_nonfinite(self.xp, self.books, mask)

    @property
    def kept(self) -> int:
        """How many rows of the sample hold steps."""
        return self.sampler.kept if self.rows is not None else 0

    def pack(self) -> torch.Tensor:
        """The books, then the sample's kept rows, in one float64 vector on the device."""
        parts = [F.pack(self.xp, self.books)]
        if self.rows is not None:
            parts.append(self.rows[: self.kept].reshape(-1))
        return torch.cat(parts).to(torch.float64)

    def state(self) -> dict[str, Any]:
        """The books and the sample as plain data (reads the device: for checkpoints only)."""
        rows = None if self.rows is None else self.rows[: self.kept].tolist()
        return {
            "device": str(self.device),
            "books": F.to_state(self.books),
            "sampler": {**self.sampler._asdict(), "rng": str(self.sampler.rng)},
            "rows": None if rows is None else [[encode_float(v) for v in row] for row in rows],
        }

    @torch.no_grad()
    def load(self, data: Reader) -> None:
        """Restore what `state` wrote, after a `start` for the same epoch.

        Raises:
            ValueError: A field is missing, corrupt or out of reach of a run (named).
        """
        books = F.from_state(data.child("books").data, self.n, f"{data.path}.books")
        saved = data.data.get("rows")
        if (saved is None) != (self.rows is None):
            keeps = "a" if self.rows is not None else "no"
            raise ValueError(f"{data.path}.rows: this epoch keeps {keeps} sample, got {saved!r}")
        sampler = self.sampler
        if self.rows is not None:
            s = data.child("sampler")
            rng = s.data.get("rng")
            if not (isinstance(rng, str) and rng.isdigit()):
                raise ValueError(f"{s.path}.rng: expected an integer string, got {rng!r}")
            sampler = F.Sampler(self.sample_size, s.integer("seen"), s.integer("kept"), int(rng),
                                s.number("w"), s.integer("next"), s.integer("fill"))  # fmt: skip
            rows = data.items("rows", sampler.kept)
            low, high = books["minimum"], books["maximum"]
            table = []
            for r, row in enumerate(rows):
                if not isinstance(row, list) or len(row) != self.n:
                    raise ValueError(
                        f"{data.path}.rows[{r}]: expected {self.n} numbers, got {row!r}"
                    )
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
            self.rows.fill_(math.nan)
            if table:
                self.rows[: len(table)] = torch.tensor(table, dtype=self.dtype)
        self.books = {
            s.name: torch.tensor(
                books[s.name] if s.per_slot else books[s.name][0],
                dtype=self.dtype,
                device=self.device,
            )
            for s in F.SCHEMA
        }
        self.sampler, self.touched = sampler, True
