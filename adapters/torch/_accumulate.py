"""The device's mirror of the core's `Accumulator`: an epoch's statistics, kept on a device.

Values read on the host go to the core's ``Accumulator``; `DeviceTally`
keeps the same statistics of the tensors of one device. Both hold, per spec
slot: the observations counted (``count``), the NaN/inf ones
(``nonfinite``), the valid ones beyond the bound in force (``violations``),
the sum of the valid ones (``total``), their ``maximum`` and ``minimum``, and
the rejected steps; while a discovery needs a median or a quantile, a uniform
sample of the valid values as well. `pack` lays them out in one float64
vector so that an epoch boundary reads everything with one copy and reduces
it across ranks with two collectives.

The device's median/quantile sample is a reservoir of *steps*: whether a step
is kept, and in which row, is decided on the host from the number of steps
(Algorithm R with a Python generator seeded afresh each epoch), so a kept step
costs one row copy on the device and a skipped one nothing. A row holds every
slot's value of that step, NaN where a value is missing, invalid or not
accepted; the valid entries of a slot are a uniform sample of its valid values.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch

from constraint_sched import _state

# Row order of the statistics; the last two are reduced by max, the others by sum.
SUM_ROWS = ("count", "nonfinite", "violations", "total")
MAX_ROWS = ("maximum", "negminimum")


def layout(n: int, sample_size: int) -> dict[str, slice]:
    """Where each part lies in a packed vector for ``n`` slots."""
    parts = {
        "sum": slice(0, 4 * n + 1),  # the four sum rows, then the rejects
        "max": slice(4 * n + 1, 6 * n + 1),
        "samples": slice(6 * n + 1, 6 * n + 1 + sample_size * n),  # step-major: (size, n)
    }
    return parts


def upload(values: Sequence[float], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Host numbers as a tensor on ``device``, copied without making the host wait.

    On CUDA the numbers go through pinned memory with a non-blocking copy
    (torch's pinned allocator keeps the buffer until the copy is done); a
    pageable copy would block the host until the device caught up.
    """
    host = torch.tensor(list(values), dtype=dtype)
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


class DeviceTally:
    """The statistics of tensors on one device, updated in place: no host synchronisation.

    Every update is a fixed sequence of tensor operations whatever the values
    are (no Python branch on a tensor), so a step never waits for the device.
    The median and quantile sample keeps ``sample_size`` steps (see the
    module's docstring), chosen on the host with the tally's own generator,
    so a run's random stream is left alone.
    """

    def __init__(
        self,
        n: int,
        device: torch.device,
        *,
        bounds: Sequence[float],
        signs: Sequence[float],
        sample_size: int,
        seed: int,
    ) -> None:
        self.n, self.device, self.sample_size = n, device, sample_size
        # MPS has no float64; elsewhere counts and sums stay exact in float64.
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.stats = torch.zeros(6, n, dtype=self.dtype, device=device)
        self.rejects = torch.zeros((), dtype=self.dtype, device=device)
        self.bounds = upload(bounds, self.dtype, device)
        self.signs = upload(signs, self.dtype, device)
        self.samples = torch.full((sample_size, n), math.nan, dtype=self.dtype, device=device)
        self.scaled_bounds = self.bounds * self.signs  # a violation: value * sign > this
        self.sampling = False
        self.steps = 0  # steps offered to the sample this epoch
        self._rng = random.Random(seed)
        self._index: dict[tuple[int, ...], torch.Tensor | None] = {}
        self._constant: dict[int, torch.Tensor] = {}
        self.start(bounds, sampling=False)

    def start(self, bounds: Sequence[float], *, sampling: bool, seed: int | None = None) -> None:
        """Empty the statistics for a new epoch under ``bounds`` (once per epoch: a copy).

        Args:
            bounds: The bounds in force, one per slot.
            sampling: Keep the median or quantile sample this epoch.
            seed: Restart the sample's generator from this seed (an epoch's
                own), so that an epoch's sample never depends on earlier epochs.
        """
        if seed is not None:
            self._rng = random.Random(seed)
        self.stats[:4].zero_()
        self.stats[4:].fill_(-math.inf)
        self.rejects.zero_()
        self.bounds.copy_(upload(bounds, self.dtype, self.device))
        torch.mul(self.bounds, self.signs, out=self.scaled_bounds)
        if self.steps:
            self.samples.fill_(math.nan)
        self.steps = 0
        self.sampling = sampling and self.sample_size > 0
        self.touched = False

    @property
    def kept(self) -> int:
        """How many rows of the sample hold steps."""
        return min(self.steps, self.sample_size)

    def index(self, slots: tuple[int, ...]) -> torch.Tensor | None:
        """The device index of ``slots``, made once per tuple; None for all slots in order."""
        if slots in self._index:
            return self._index[slots]
        full = slots == tuple(range(self.n))
        idx = None if full else upload(slots, torch.long, self.device)
        self._index[slots] = idx
        return idx

    @torch.no_grad()
    def add(
        self, slots: tuple[int, ...], values: list[torch.Tensor], accepted: torch.Tensor | None
    ) -> None:
        """Count one observation per slot; with ``accepted`` (a bool), only if it is true.

        About fifteen small kernels whatever the number of values (one more
        for a step kept in the median or quantile sample); no host synchronisation.
        """
        self.touched = True
        idx = self.index(slots)
        dtype = self.dtype
        if not all(t.dim() == 0 for t in values):
            values = [t.reshape(()) for t in values]
        v = torch.stack(values)  # under no_grad: no graph, whatever the inputs require
        if v.dtype != dtype:
            v = v.to(dtype)
        finite = torch.isfinite(v)
        if accepted is None:
            valid = finite
            weight = self._ones(len(values))
        else:
            valid = finite & accepted
            weight = accepted.to(dtype).expand(v.shape)
        counted = valid.to(dtype)
        if idx is None:
            signs, scaled = self.signs, self.scaled_bounds
        else:
            signs, scaled = self.signs[idx], self.scaled_bounds[idx]
        over = ((v * signs > scaled) & valid).to(dtype)
        sums = torch.stack([weight, weight - counted, over, torch.where(valid, v, 0.0)])
        masked = torch.where(valid, v, math.nan)
        extremes = torch.stack([masked, -masked])
        if idx is None:
            self.stats[:4] += sums
            torch.fmax(self.stats[4:], extremes, out=self.stats[4:])  # fmax skips the NaNs
        else:
            self.stats[:4].index_add_(1, idx, sums)
            self.stats[4:].scatter_reduce_(
                1, idx.expand(2, -1), torch.where(valid, extremes, -math.inf), "amax"
            )
        if self.sampling:
            self._sample(idx, masked)

    def _ones(self, n: int) -> torch.Tensor:
        ones = self._constant.get(n)
        if ones is None:
            ones = self._constant[n] = torch.ones(n, dtype=self.dtype, device=self.device)
        return ones

    def _sample(self, idx: torch.Tensor | None, masked: torch.Tensor) -> None:
        # Algorithm R over steps, decided on the host: the j-th step takes row j
        # while there is room, then replaces a uniform row with probability k/j.
        self.steps += 1
        k, j = self.sample_size, self.steps - 1
        if j >= k:
            j = self._rng.randrange(self.steps)
            if j >= k:
                return
        row = self.samples[j]
        if idx is None:
            row.copy_(masked)
        else:  # the slots this step did not observe have no value in it
            row.fill_(math.nan)
            row.index_copy_(0, idx, masked)

    @torch.no_grad()
    def reject(self, flag: torch.Tensor) -> None:
        """Count a rejected step where ``flag`` (a bool or count tensor) says so."""
        self.touched = True
        self.rejects.add_(flag.detach().reshape(()).to(self.dtype))

    def state(self) -> dict[str, Any]:
        """Everything counted since `start`, as plain data that `load` restores exactly.

        Reads the device (a synchronisation): for checkpoints only.
        """
        code = _state.encode_float
        version, internal, gauss = self._rng.getstate()
        return {
            "device": str(self.device),
            "stats": [[code(v) for v in row] for row in self.stats.tolist()],
            "rejects": float(self.rejects.item()),
            "samples": [[code(v) for v in row] for row in self.samples[: self.kept].tolist()],
            "steps": self.steps,
            "sampling": self.sampling,
            "touched": self.touched,
            "rng": {"version": version, "internal": list(internal), "gauss": gauss},
        }

    @torch.no_grad()
    def load(self, data: _state.Reader) -> None:
        """Restore what `state` wrote, after a `start` for the same epoch.

        Raises:
            ValueError: A field is missing or corrupt (named); nothing changes.
        """
        path, n = data.path, self.n
        stats = _rows(data.items("stats", 6), n, f"{path}.stats", allow_nan=False)
        rejects = data.number("rejects")
        steps = data.integer("steps")
        sampling, touched = data.flag("sampling"), data.flag("touched")
        if sampling != self.sampling:
            raise ValueError(
                f"{path}.sampling: saved as {sampling}, but this epoch's discovery "
                f"{'keeps' if self.sampling else 'keeps no'} sample"
            )
        kept = min(steps, self.sample_size)
        samples = _rows(data.items("samples", kept), n, f"{path}.samples", allow_nan=True)
        rng = data.child("rng")
        internal = rng.integers("internal")
        generator = random.Random()
        try:
            generator.setstate((rng.integer("version"), tuple(internal), rng.data.get("gauss")))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}.rng: not a generator state: {error}") from None
        self.stats.copy_(torch.tensor(stats, dtype=self.dtype))
        self.rejects.fill_(rejects)
        self.samples.fill_(math.nan)
        if samples:
            self.samples[:kept].copy_(torch.tensor(samples, dtype=self.dtype))
        self.steps, self.touched = steps, touched
        self._rng = generator

    @torch.no_grad()
    def pack(self, *, samples: bool) -> torch.Tensor:
        """The statistics, and the sample rows if asked, packed on the device (see `layout`)."""
        parts = [self.stats[:4].reshape(-1), self.rejects.reshape(1), self.stats[4:].reshape(-1)]
        if samples:
            parts.append(self.samples.reshape(-1))
        return torch.cat(parts).to(torch.float64)


def _rows(rows: list[Any], n: int, path: str, *, allow_nan: bool) -> list[list[float]]:
    """Saved rows of ``n`` numbers each (non-finite ones encoded); ValueError naming the entry."""
    out = []
    for r, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != n:
            raise ValueError(f"{path}[{r}]: expected a list of {n} numbers, got {row!r}")
        out.append(
            [_state.decode_float(v, f"{path}[{r}][{i}]", allow_nan=allow_nan)
             for i, v in enumerate(row)]
        )  # fmt: skip
    return out
