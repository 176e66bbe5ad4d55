"""torch.distributed glue: who we are, and the two reductions an epoch boundary needs."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


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


def reduce_packed(packed: torch.Tensor, sum_part: slice, max_part: slice, group: Any) -> None:
    """Sum the counts and sums, and take the max of the extremes, across ranks, in place."""
    dist.all_reduce(packed[sum_part], op=dist.ReduceOp.SUM, group=group)
    dist.all_reduce(packed[max_part], op=dist.ReduceOp.MAX, group=group)


def gather(obj: Any, group: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    out: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out
