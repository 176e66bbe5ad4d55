"""Every rank observes its own values; at each epoch boundary all ranks agree on one bound.

Start it with two processes (CPU only, the gloo backend)::

    torchrun --nproc_per_node=2 docs/examples/distributed_loop.py

Each rank sees a different shard of simulated training: its own KL values,
its own rejected steps. ``advance_epoch`` reduces the statistics across the
ranks, so the KL ceiling discovered is the largest KL of *any* rank and the
loss scale the median over *every* rank's values. The script checks that
every rank ends each epoch with the same bound, saves a checkpoint on rank 0,
loads it on every rank, and shows the error raised when the ranks' schedulers
are configured differently.
"""

import logging
import os
import statistics
import sys
import tempfile

import torch
import torch.distributed as dist

from constraint_sched import (
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    Phase,
    SchedulerCollection,
    SqueezeSchedule,
)
from constraint_sched.adapters.torch import TorchScheduler

if "RANK" not in os.environ:
    sys.exit("start this script with torchrun: torchrun --nproc_per_node=2 distributed_loop.py")

dist.init_process_group("gloo")  # RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT: set by torchrun
rank, world = dist.get_rank(), dist.get_world_size()
# Every rank logs, but the scheduler logs its events on rank 0 only.
logging.basicConfig(level=logging.INFO, format=f"[rank {rank}] %(message)s", stream=sys.stdout)

STEPS = 50  # per rank and epoch


def build(kl_target=2000.0):
    """The same schedulers on every rank: advance_epoch checks that they agree."""
    return TorchScheduler(
        SchedulerCollection(
            [
                ConstraintScheduler(
                    ConstraintSpec("kl", "box_asymmetric", lower=100.0, healthy=1000.0, upper=1e9),
                    squeeze=SqueezeSchedule.geometric(target=kl_target, epochs=2),
                ),
                ConstraintScheduler(
                    ConstraintSpec("mse", "minimize_soft", scale="auto"),
                    discovery=DiscoveryPhase(statistic="median"),
                ),
            ]
        )
    )


sched = build()
generator = torch.Generator().manual_seed(rank)  # each rank draws its own values
seen = {"kl": [], "mse": []}  # this rank's accepted values of epoch 1, to check the result
rejected = 0
for epoch in range(1, 5):
    for _ in range(STEPS):
        # Simulated metrics of one step: rank 1's KL runs higher than rank 0's.
        kl = (5000.0 + 2000.0 * rank) * (1.0 + torch.rand((), generator=generator))
        mse = 0.1 * (1.0 + rank) * torch.rand((), generator=generator)
        reject = torch.rand((), generator=generator) < 0.05  # a rolled-back step
        sched.observe({"kl": kl, "mse": mse}, accepted=~reject)
        sched.reject(reject)
        if epoch == 1:  # for the checks below only: reading values on the host
            rejected += int(reject)
            if not reject:
                seen["kl"].append(float(kl))
                seen["mse"].append(float(mse))

    events = sched.advance_epoch()  # every rank, at the same point of the loop
    # The same bound and phase everywhere: compare this rank's with every other's.
    mine = (sched.epoch, sched.phase_of("kl"), sched.spec("kl").upper, sched.spec("mse").scale)
    every = [None] * world
    dist.all_gather_object(every, mine)
    assert all(theirs == mine for theirs in every), every
    if rank == 0:
        print(f"after epoch {epoch}: every rank has kl ceiling {mine[2]:,.1f}, {mine[1].name}")

    if epoch == 1:
        # Discovery saw every rank's values: the max and the median of all of them.
        everything = [None] * world
        dist.all_gather_object(everything, (seen, rejected))
        all_kl = [x for values, _ in everything for x in values["kl"]]
        all_mse = [x for values, _ in everything for x in values["mse"]]
        assert sched.core["kl"].discovered == max(all_kl)
        # Exact: the ranks together saw fewer valid values than DiscoveryPhase.reservoir (1024).
        assert sched.core["mse"].discovered == statistics.median(all_mse)
        assert sched.core["kl"].last_epoch.rejects == sum(r for _, r in everything)
        if rank == 0:
            assert max(seen["kl"]) < max(all_kl)  # alone, rank 0 would have found less

assert sched.phase_of("kl") is Phase.CONVERGED
assert sched.spec("kl").upper == 2000.0

# Checkpoint at an epoch boundary, written by rank 0 only; every rank can load it.
folder = [tempfile.mkdtemp() if rank == 0 else None]
dist.broadcast_object_list(folder, src=0)
path = os.path.join(folder[0], "constraints.pt")
if rank == 0:
    torch.save({"constraints": sched.state_dict()}, path)
dist.barrier()  # the file exists before anyone reads it
resumed = build()
resumed.load_state_dict(torch.load(path, weights_only=True)["constraints"])
assert resumed.state_dict() == sched.state_dict()
dist.barrier()  # everyone has read it before rank 0 removes it
if rank == 0:
    os.remove(path)
    os.rmdir(folder[0])

# A rank whose schedulers differ is caught at the next epoch boundary, on every rank.
odd = build(kl_target=2000.0 if rank == 0 else 2500.0)
try:
    odd.advance_epoch()
except ValueError as error:  # raised on every rank: none is left waiting
    if rank == 0:
        print(f"refused: {error}")
else:
    raise AssertionError("ranks with different configurations must not agree")

print(f"rank {rank}: ok")
dist.destroy_process_group()
