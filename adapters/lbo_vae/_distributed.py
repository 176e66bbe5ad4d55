"""Data-parallel training of the LBO-VAE: the process group, the shards, the replicas' agreement.

Under ``torchrun --nproc_per_node=N`` every rank runs the whole trainer on its
own shard of each epoch's batches (`shard`); the replicas stay identical
because they start from the same weights (`broadcast_module`), apply the same
averaged gradients (`average_gradients`) and roll a step back together or not
at all (`agree_any`, which the `Stepper` applies to each step's reject flag).
The schedulers agree by themselves (`constraint_sched.adapters.torch.TorchScheduler`
reduces its statistics at every epoch boundary). Outside a launched run (no
``WORLD_SIZE`` above 1, no initialised process group) every function here is
a no-op or the identity, so the single-process trainer is unchanged.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.utils.hooks import RemovableHandle


def _active() -> bool:
    """Whether a process group of more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


T = TypeVar("T")

DEFAULT_TIMEOUT = datetime.timedelta(minutes=10)
"""How long a collective waits for the other ranks before the run fails instead of hanging."""


# -- who we are ------------------------------------------------------------------------------


def launched(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the process was started by ``torchrun`` with more than one rank.

    Args:
        environ: The environment to read; ``os.environ`` when None.

    Examples:
        >>> launched({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
        True
        >>> launched({})
        False
    """
    env = os.environ if environ is None else environ
    return int(env.get("WORLD_SIZE", "1")) > 1


def world_size() -> int:
    """The number of ranks training together; 1 outside an initialised process group.

    Examples:
        >>> world_size()  # no process group here
        1
    """
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    """This process's rank; 0 outside an initialised process group (so it is the main one).

    Examples:
        >>> rank()
        0
    """
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def backend_for(device: torch.device) -> str:
    """The collective backend for a run on ``device``: NCCL on CUDA, gloo otherwise.

    Examples:
        >>> backend_for(torch.device("cpu"))
        'gloo'
        >>> backend_for(torch.device("cuda", 1))
        'nccl'
    """
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device) -> torch.device:
    """``device``, with a CUDA device pinned to this rank's GPU in a distributed run.

    A bare ``cuda`` means each process's current device; naming the index
    keeps every tensor (and every comparison of devices) on the rank's own GPU.

    Examples:
        >>> rank_device(torch.device("cpu"))
        device(type='cpu')
    """
    if device == torch.device("cuda") and _active():  # no index: the current one
        return torch.device("cuda", torch.cuda.current_device())
    return device


# -- the process group ---------------------------------------------------------------------


def setup(
    device: torch.device,
    *,
    environ: Mapping[str, str] | None = None,
    timeout: datetime.timedelta = DEFAULT_TIMEOUT,
) -> bool:
    """Initialise the default process group from ``torchrun``'s environment, if launched.

    Reads ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT`` (``init_method="env://"``). On CUDA the rank's GPU is
    ``LOCAL_RANK`` and the backend NCCL; on the CPU the backend is gloo.

    Args:
        device: Where the run trains (`backend_for` picks the backend).
        environ: The environment to read; ``os.environ`` when None (the
            process group itself always reads ``os.environ``).
        timeout: How long a collective may wait for the other ranks.

    Returns:
        Whether this call initialised a process group (and `teardown` should
        destroy it): False when not launched, or when one is already initialised.

    Raises:
        ValueError: A CUDA run on a machine with fewer GPUs than ``LOCAL_RANK + 1``.

    Examples:
        >>> setup(torch.device("cpu"), environ={})  # a plain single-process run
        False
    """
    env = os.environ if environ is None else environ
    if not launched(env) or (dist.is_available() and dist.is_initialized()):
        return False
    backend = backend_for(device)
    if backend == "nccl":
        local = int(env.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local} has no GPU: torch sees {torch.cuda.device_count()}; "
                "start at most one process per GPU"
            )
        torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=timeout, device_id=torch.device("cuda", local))
    else:
        dist.init_process_group(backend, timeout=timeout)
    return True


def teardown() -> None:
    """Destroy the default process group, if one is initialised.

    Examples:
        >>> teardown()  # nothing to destroy: a no-op
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(
    device: torch.device, *, timeout: datetime.timedelta = DEFAULT_TIMEOUT
) -> Iterator[int]:
    """`setup` on entry, `teardown` on exit (only a group it made); yields this rank.

    Examples:
        >>> with process_group(torch.device("cpu")) as me:  # not launched: rank 0 alone
        ...     me
        0
    """
    made = setup(device, timeout=timeout)
    try:
        yield rank()
    finally:
        if made:
            teardown()


# -- the data --------------------------------------------------------------------------------


def shard(batches: Sequence[T], rank: int, world: int) -> list[T]:
    """This rank's batches of an epoch: every ``world``-th one, the same number on every rank.

    Every rank shuffles the same order (the same seeded generator), cuts it
    into the same batches, and takes batches ``rank, rank + world, ...``: the
    ranks' shards are disjoint, and the last ``len(batches) % world`` batches
    are dropped so that every rank runs the same number of steps (a rank with
    a step more would wait for the others' collectives forever).

    Args:
        batches: The epoch's batches, in the same order on every rank.
        rank: This rank, ``0 <= rank < world``.
        world: The number of ranks.

    Raises:
        ValueError: Fewer batches than ranks: some rank would have none.

    Examples:
        >>> shard(list("abcdefg"), 0, 2), shard(list("abcdefg"), 1, 2)
        (['a', 'c', 'e'], ['b', 'd', 'f'])
        >>> shard(list("abc"), 0, 1)
        ['a', 'b', 'c']
    """
    if world == 1:
        return list(batches)
    if len(batches) < world:
        raise ValueError(
            f"an epoch has {len(batches)} batches, fewer than the {world} ranks: use more "
            "images or a smaller batch_size (it is per rank)"
        )
    return list(batches[rank : len(batches) // world * world : world])


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed for this rank's random draws in ``epoch`` (noise, augmentation).

    The ranks draw different noise, and a run resumed at an epoch boundary
    draws exactly what the uninterrupted run drew, whichever rank's random
    state the checkpoint holds.

    Examples:
        >>> rank_seed(0, 1, 0) != rank_seed(0, 1, 1)
        True
        >>> 0 <= rank_seed(0, 1, 0) < 2**63
        True
    """
    digest = hashlib.blake2b(f"lbo-vae:{seed}:{epoch}:{rank}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


# -- the replicas ----------------------------------------------------------------------------


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank, in place (a no-op alone).

    Examples:
        >>> broadcast_module(torch.nn.Linear(2, 1))  # no process group: nothing to do
    """
    if not _active():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=src)


def average_gradients(optimizer: torch.optim.Optimizer) -> RemovableHandle | None:
    """Average the gradients of ``optimizer``'s parameters across ranks before each step.

    The LBO-VAE's `Stepper` calls the model's ``encode``, ``decode``, ``split``
    and ``join`` directly, many times a step, and runs the model again after
    the step; ``DistributedDataParallel`` only synchronises gradients when its
    own ``forward`` makes the graph. So the gradients are averaged explicitly
    instead, by an optimizer step pre-hook: after ``backward`` and before
    ``optimizer.step()``, one all-reduce of all the gradients flattened into a
    buffer per device and dtype. Every rank then takes the same step from the
    same weights (an all-reduce leaves the same bits on every rank). Every
    rank runs the same code path (the phases agree), so the same parameters
    have gradients on every rank.

    Args:
        optimizer: The optimizer whose ``step`` should see averaged gradients.

    Returns:
        The hook's handle (``handle.remove()`` stops it), or None outside a
        distributed run (no hook).

    Examples:
        >>> model = torch.nn.Linear(2, 1)
        >>> average_gradients(torch.optim.SGD(model.parameters(), lr=0.1)) is None
        True
    """
    if not _active():
        return None

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        all_reduce_mean(
            [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        )

    return optimizer.register_step_pre_hook(hook)


def all_reduce_mean(tensors: Sequence[torch.Tensor]) -> None:
    """Replace each tensor by its mean across ranks, in place: one all-reduce per device and dtype.

    Examples:
        >>> t = torch.ones(3)
        >>> all_reduce_mean([t]); t  # alone: unchanged
        tensor([1., 1., 1.])
    """
    if not _active() or not tensors:
        return
    world = dist.get_world_size()
    buckets: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for t in tensors:
        buckets.setdefault((t.device, t.dtype), []).append(t)
    for bucket in buckets.values():
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world)
        for t, mean in zip(bucket, torch.split(flat, [t.numel() for t in bucket]), strict=True):
            t.copy_(mean.view_as(t))


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` across ranks, in place; returns it (unchanged alone).

    Examples:
        >>> all_reduce_sum(torch.tensor([1.0, 2.0]))
        tensor([1., 2.])
    """
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def agree_any(flag: torch.Tensor) -> torch.Tensor:
    """Make a bool flag True on every rank where it is True on any, in place; returns it.

    One all-reduce (MAX) on the flag's device: with NCCL it is queued on the
    GPU like any kernel, so the host does not wait for it.

    Examples:
        >>> agree_any(torch.tensor(True))  # alone: unchanged
        tensor(True)
    """
    if _active():
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag


def replica_digest(modules: Sequence[torch.nn.Module], extra: Any = None) -> str:
    """A short hash of the modules' parameters and buffers (bit for bit) and of ``extra`` (JSON).

    Examples:
        >>> a = torch.nn.Linear(2, 1)
        >>> replica_digest([a]) == replica_digest([a]), len(replica_digest([a]))
        (True, 16)
    """
    h = hashlib.blake2b(digest_size=8)
    for module in modules:
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


def check_replicas(modules: Sequence[torch.nn.Module], extra: Any = None) -> str:
    """Check that every rank holds the same weights (and ``extra``); returns the digest.

    Raises:
        RuntimeError: Some rank's `replica_digest` differs (the ranks are named).

    Examples:
        >>> len(check_replicas([torch.nn.Linear(2, 1)], extra={"kl": 1.0}))
        16
    """
    mine = replica_digest(modules, extra)
    if not _active():
        return mine
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    differ = [r for r, theirs in enumerate(every) if theirs != every[0]]
    if differ:
        raise RuntimeError(
            f"the replicas diverged: ranks {differ} differ from rank 0 (digests {every})"
        )
    return mine
