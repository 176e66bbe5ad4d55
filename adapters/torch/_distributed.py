"""torch.distributed glue: who we are, and the two reductions an epoch boundary needs."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from constraint_sched import functional as F


def active(group: Any = None) -> bool:
    """Whether a process group is initialised (and has more than one rank)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def rank(group: Any = None) -> int:
    """This process's rank in ``group``; 0 outside a distributed run."""
    return dist.get_rank(group) if dist.is_available() and dist.is_initialized() else 0


def reduce_device(group: Any, preferred: torch.device) -> torch.device:
    """Where the collectives run: the accelerator for NCCL, the CPU for gloo and others."""
    backend = str(dist.get_backend(group))
    if backend == "nccl":
        if preferred.type == "cuda":
            return preferred
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def reduce_books(packed: torch.Tensor, n: int, group: Any) -> None:
    """Reduce packed books across ranks in place: each statistic by its schema's reduction."""

    def reduce(part: slice, how: F.Reduction) -> None:
        dist.all_reduce(packed[part], op=_OPS[how], group=group)

    F.reduce_packed(n, reduce)


def gather(obj: Any, group: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    out: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


class Agreement:
    """`constraint_sched.Agreement` over a ``torch.distributed`` group."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.rank = rank(group)

    def device(self, preferred: torch.device | None) -> torch.device:
        return reduce_device(self.group, torch.device("cpu") if preferred is None else preferred)

    def reduce(self, packed: torch.Tensor, n: int) -> None:
        reduce_books(packed, n, self.group)

    def gather(self, obj: Any) -> list[Any]:
        return gather(obj, self.group)


def agreement(group: Any) -> Agreement | None:
    """The group's agreement when a distributed run is active, else None."""
    return Agreement(group) if active(group) else None


def mean(group: Any, value: torch.Tensor, main: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A term's value and main loss averaged across ranks (one all-reduce), or as they are."""
    if not active(group):
        return value, main
    where = reduce_device(group, value.device)
    pair = torch.stack([value.to(torch.float64), main.to(value.device, torch.float64)]).to(where)
    dist.all_reduce(pair, op=dist.ReduceOp.SUM, group=group)
    pair = (pair / dist.get_world_size(group)).to(value.device)
    return pair[0].to(value.dtype), pair[1]
