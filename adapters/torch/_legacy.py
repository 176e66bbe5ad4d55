"""Reading the epoch statistics of earlier releases' TorchScheduler state dicts.

Their layouts kept the statistics per device in rows read by position, with
a median sample drawn by another generator; they load into the host's books
(the samples merged as the observations they stand for), so a restored run
goes on with every count, extreme and sum exact and a sample as good.
"""

from __future__ import annotations

from constraint_sched import Tally
from constraint_sched import functional as F
from constraint_sched.state import Reader, decode_float


def load_combined(host: F.HostBooks, epoch: Reader) -> None:
    """The oldest layout: one combined tally per spec and the rejected steps."""
    items = epoch.items("tallies", host.n)
    for i, item in enumerate(items):
        host.merge(i, Tally.from_state(item, f"{epoch.path}.tallies[{i}]"))
    host.rejects = epoch.integer("rejects")


def load_previous_device(host: F.HostBooks, saved: Reader) -> None:
    """One device's statistics as the previous release saved them, merged into ``host``.

    Raises:
        ValueError: A row or sample is missing or is no tally a run makes (named).
    """
    rows, samples = saved.items("stats", 6), saved.items("samples")
    for i in range(host.n):
        try:
            stat = [
                decode_float(row[i], f"{saved.path}.stats[{r}][{i}]") for r, row in enumerate(rows)
            ]
            values = [
                decode_float(row[i], f"{saved.path}.samples", allow_nan=True) for row in samples
            ]
            tally = Tally(
                round(stat[0]),
                nonfinite=round(stat[1]),
                violations=round(stat[2]),
                total=stat[3],
                maximum=stat[4],
                minimum=-stat[5],  # the previous layout kept the minimum negated
                samples=[v for v in values if v == v],
            )
        except (TypeError, ValueError, IndexError) as error:
            raise ValueError(f"{saved.path}: {error}") from None
        host.merge(i, tally)
    host.rejects += round(saved.number("rejects"))
