"""Per-step cost of the PyTorch adapter against the original's bookkeeping, side by side.

Two parts, each timed against its baseline in the same run, on the CPU or on a
CUDA device (``--device``; the header names the device, torch and the threads):

(a) **Observing 30 goal tensors per step.** The baseline is what the original
    training script did with its goals: ``t.item()`` per goal, ``np.isnan`` /
    ``np.isinf`` checks, the valid value appended to a per-goal list, and
    ``np.median`` / ``max`` of the lists at the epoch end. Ours is one
    ``TorchScheduler.observe(goals)`` per step over a ``SchedulerCollection`` of
    30 specs: 28 ``MINIMIZE_SOFT`` specs with ``scale="auto"`` discovered by
    the median, and ``kl_core`` / ``kl_detail`` (``BOX_ASYMMETRIC``) sharing one
    ceiling discovered by the max; ``advance_epoch()`` at the epoch end. Rows:

    - *step*: a small VAE-like forward pass (linear encoder to the mean and
      log-variance of a 64-d latent, linear decoder; parameters requiring grad)
      makes 30 fresh goal tensors on the device (28 reconstruction errors of
      column blocks, the KL of each latent half), then they are recorded; in
      the discovery epoch (epoch 1, where the median keeps a sample) and in a
      later epoch (after ``advance_epoch()``);
    - *observe only*: the recording alone, on goals computed beforehand;
    - *VAE training step*: forward (the goals come from part (b)'s conv VAE),
      backward, AdamW step, then the recording, as the original recorded an
      accepted step.

    On CUDA the device is synchronised only at the end of each timed block,
    never per step: the baseline's ``.item()`` waits for the device 30 times a
    step, ours never waits (a check with ``torch.cuda.set_sync_debug_mode``
    confirms it). What that buys depends on how much device work there is to
    overlap with: next to a tiny forward pass a sync costs little and the
    adapter's own kernel launches dominate. On the CPU the adapter's default
    (``accumulate="auto"``) reads CPU tensors on the host, so both sides do
    much the same work; ``accumulate="device"`` (the code path an accelerator
    takes) is shown as a third column there.

(b) **Snapshot and restore around a step** of a ~1M-parameter convolutional VAE
    (32x32 RGB, stride-2 convs 3->32->64->128 and a 3x3 conv, 64-d latent in
    two halves, a mirrored ConvTranspose2d decoder, BatchNorm buffers) with AdamW (``fused=True`` on
    CUDA, so that its ``step`` counters live on the device; plain on the CPU),
    after a few training steps so that the optimizer state exists. The
    baseline is ``{k: v.clone() for k, v in model.state_dict().items()}`` plus
    ``copy.deepcopy(optimizer.state_dict())``, restored with
    ``model.load_state_dict`` and ``optimizer.load_state_dict``; ours is
    ``RollbackGuard.snapshot()`` with ``restore()``, or ``restore_if(flag)`` with
    a bool tensor on the device. Restoring every step is the worst case; the
    flag is True throughout, and the baseline of the last row reads it with
    ``flag.item()``, as a loop that decides on the host must. Only the snapshot
    and restore are timed, not the forward and backward passes.

Usage:
    python benchmarks/adapter_overhead.py [--device auto|cpu|cuda] [--steps N]
        [--iterations K] [--repeats R] [--train-steps T] [--train-batch B]
        [--threads N] [--quick] [--json PATH]

Run it against the source tree with ``PYTHONPATH=. python benchmarks/adapter_overhead.py``
from the repository root, or with ``constraint-sched[torch]`` installed. The
default run takes about 20 seconds on a 2-core CPU and about a minute on an
H100; ``--quick`` runs a few steps of everything (a smoke test, not a
measurement).

Times are wall-clock ``time.perf_counter_ns`` over a block of steps, with the
garbage collector off and the device synchronised before and after the block;
the sides take turns in each repeat, after one untimed warm-up round. Tables
show the best of the repeats and, in brackets, their median, per step. Ratios
are baseline / ours from the best times (from the medians in brackets): above
1 means the adapter is faster. On a shared machine, torch's CPU threads
compete with other processes and the medians suffer (``--threads 1`` steadies
them). Nothing here asserts on a timing.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import _machine
import numpy as np
import torch

from constraint_sched import (
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    SchedulerCollection,
    SqueezeSchedule,
)
from constraint_sched.adapters.torch import RollbackGuard, TorchScheduler

SOFT_NAMES = tuple(f"goal_{i:02d}" for i in range(28))
KL_NAMES = ("kl_core", "kl_detail")
GOAL_NAMES = SOFT_NAMES + KL_NAMES
"""The 30 goals of part (a): 28 soft goals with auto scales, two KL halves sharing a ceiling."""

KL_TABLE = {3: 13000.0, 4: 11000.0, 5: 9500.0, 15: 3000.0}
"""A squeeze table for the KL ceiling (only its shape matters: epoch 2 is the hold)."""

WIDTH, LATENT = 112, 64
"""Part (a)'s forward pass: input width (28 blocks of 4 columns) and latent size."""

Goals = dict[str, torch.Tensor]
Record = Callable[[Goals], Any]


# -- timing ------------------------------------------------------------------------------


def make_sync(device: torch.device) -> Callable[[], None]:
    """A function that waits for ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_block(run: Callable[[], Any], sync: Callable[[], None]) -> int:
    """Nanoseconds of one call of ``run``, device synchronised before and after, gc off."""
    sync()
    gc.collect(1)  # the young generations: a full collection scans all of torch (~0.1 s)
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        run()
        sync()
        return time.perf_counter_ns() - start
    finally:
        if enabled:
            gc.enable()


def summarise(times: Sequence[float]) -> dict[str, float]:
    """Best and median of per-step times, in microseconds."""
    return {"best_us": min(times), "median_us": statistics.median(times)}


def ratio(base: dict[str, float], ours: dict[str, float]) -> dict[str, float]:
    """Baseline / ours from the best times and from the medians."""
    return {
        "best": base["best_us"] / ours["best_us"],
        "median": base["median_us"] / ours["median_us"],
    }


# -- the models ---------------------------------------------------------------------------


class ConvVAE(torch.nn.Module):
    """A ~1M-parameter convolutional VAE on 32x32 images, latent split into two halves.

    Encoder: stride-2 convs 3->32->64->128 with BatchNorm, a 3x3 conv at 128,
    a linear layer to the mean and log-variance of a 64-d latent (core and
    detail halves). Decoder: the mirror image, with ConvTranspose2d.
    """

    def __init__(self, latent: int = 64, image: int = 32) -> None:
        super().__init__()
        side = image // 8
        nn = torch.nn
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.Conv2d(64, 128, 4, stride=2, padding=1),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 128, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.to_stats = nn.Linear(128 * side * side, 2 * latent)
        self.from_latent = nn.Linear(latent, 128 * side * side)
        self.decoder = nn.Sequential(
            nn.Unflatten(1, (128, side, side)),
            nn.Conv2d(128, 128, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 3, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> Goals:
        """One step's 30 goals: 28 row MSEs of the reconstruction, the KL of each latent half."""
        mu, logvar = self.to_stats(self.encoder(x)).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        error = (self.decoder(self.from_latent(z)) - x).square()
        goals = {name: error[:, :, i].mean() for i, name in enumerate(SOFT_NAMES)}
        kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)
        core, detail = kl.chunk(2, dim=1)
        goals["kl_core"] = core.sum(dim=1).mean()
        goals["kl_detail"] = detail.sum(dim=1).mean()
        return goals


def vae_loss(goals: Goals) -> torch.Tensor:
    """A training loss over the goals: the mean reconstruction error plus a small KL."""
    recon = torch.stack([goals[name] for name in SOFT_NAMES]).mean()
    return recon + 1e-3 * (goals["kl_core"] + goals["kl_detail"])


def make_trained(
    device: torch.device, warm_steps: int, batch: int
) -> tuple[ConvVAE, torch.optim.Optimizer]:
    """The VAE and its AdamW after ``warm_steps`` training steps (the state exists)."""
    torch.manual_seed(0)
    model = ConvVAE().to(device)
    fused = True if device.type == "cuda" else None  # on CUDA: `step` lives on the device
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2, fused=fused)
    x = torch.rand(batch, 3, 32, 32, device=device)
    for _ in range(warm_steps):
        optimizer.zero_grad(set_to_none=True)
        vae_loss(model(x)).backward()
        optimizer.step()
    return model, optimizer


# -- part (a): observing 30 goal tensors per step -------------------------------------------


class GoalHead(torch.nn.Module):
    """A small VAE-like forward pass whose outputs the 30 goals reduce."""

    def __init__(self, width: int = WIDTH, latent: int = LATENT) -> None:
        super().__init__()
        self.encode = torch.nn.Linear(width, 2 * latent)
        self.decode = torch.nn.Linear(latent, width)

    def forward(self, x: torch.Tensor) -> Goals:
        """One step's goals: 28 block MSEs of the reconstruction and the KL of each half."""
        mu, logvar = self.encode(x).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        error = (self.decode(z) - x).square()
        block = x.shape[1] // len(SOFT_NAMES)
        goals = {
            name: error[:, i * block : (i + 1) * block].mean() for i, name in enumerate(SOFT_NAMES)
        }
        kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)
        core, detail = kl.chunk(2, dim=1)
        goals["kl_core"] = core.sum(dim=1).mean()
        goals["kl_detail"] = detail.sum(dim=1).mean()
        return goals


def make_producer(device: torch.device, batch: int) -> Callable[[], Goals]:
    """A function that runs one step's forward pass and returns its 30 fresh goal tensors."""
    torch.manual_seed(0)
    head = GoalHead().to(device)
    x = torch.randn(batch, WIDTH, device=device)
    return lambda: head(x)


def make_scheduler(accumulate: Literal["auto", "device"]) -> TorchScheduler:
    """The adapter over 30 specs: auto scales by the median, a shared KL ceiling by the max."""
    soft = [
        ConstraintScheduler(
            ConstraintSpec(name, "minimize_soft", scale="auto"),
            discovery=DiscoveryPhase(statistic="median"),
        )
        for name in SOFT_NAMES
    ]
    kl = ConstraintScheduler(
        [
            ConstraintSpec(name, "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
            for name in KL_NAMES
        ],
        squeeze=SqueezeSchedule.table(KL_TABLE),
    )
    return TorchScheduler(SchedulerCollection([*soft, kl]), accumulate=accumulate)


def baseline_side() -> tuple[Record, Callable[[], Any]]:
    """The original's bookkeeping: ``.item()``, NaN/inf checks, a list per goal."""
    lists: dict[str, list[float]] = {name: [] for name in GOAL_NAMES}

    def record(goals: Goals) -> None:
        for name, t in goals.items():
            v = t.item()
            if np.isnan(v) or np.isinf(v):
                continue
            lists[name].append(v)

    def end_epoch() -> tuple[dict[str, float], float]:
        scales = {name: float(np.median(lists[name])) for name in SOFT_NAMES}
        ceiling = max(max(lists[name]) for name in KL_NAMES)
        for values in lists.values():
            values.clear()
        return scales, ceiling

    return record, end_epoch


def ours_side(accumulate: Literal["auto", "device"]) -> tuple[Record, Callable[[], Any]]:
    """The adapter: one ``observe(goals)`` per step, ``advance_epoch()`` at the epoch end."""
    sched = make_scheduler(accumulate)
    return sched.observe, sched.advance_epoch


def produce_only_side() -> tuple[Record, Callable[[], Any]]:
    """No recording at all: what producing the goals costs by itself."""
    return (lambda goals: None), (lambda: None)


Side = Callable[[], tuple[Record, Callable[[], Any]]]
"""Builds one side of part (a): its per-step recording and its epoch end."""


def observe_sides(device: torch.device) -> dict[str, Side]:
    """The sides of part (a), by label; ``accumulate="device"`` only where it differs."""
    sides: dict[str, Side] = {
        "produce": produce_only_side,
        "baseline": baseline_side,
        "ours": lambda: ours_side("auto"),
    }
    if device.type == "cpu":
        sides["ours_device"] = lambda: ours_side("device")
    return sides


def make_trainer(device: torch.device, batch: int) -> Callable[[Record], None]:
    """A function that runs one training step of the conv VAE and records its 30 goals."""
    model, optimizer = make_trained(device, 1, batch)
    x = torch.rand(batch, 3, 32, 32, device=device)

    def step(record: Record) -> None:
        optimizer.zero_grad(set_to_none=True)
        goals = model(x)
        vae_loss(goals).backward()
        optimizer.step()
        record(goals)  # the accepted step's values, as the original recorded them

    return step


def time_observe(device: torch.device, settings: dict[str, Any]) -> dict[str, Any]:
    """Time part (a): every side through a discovery epoch, its end, and a later epoch.

    Each round also times the recording alone (on goals computed beforehand)
    and whole training steps of the conv VAE (forward, backward, AdamW step,
    then the recording) in a discovery epoch.

    Args:
        device: Where the goals are computed.
        settings: ``steps`` per timed block, ``repeats``, ``goal_pool`` (steps
            of goals computed beforehand), ``goal_batch`` (rows of the small
            forward pass), ``train_steps`` and ``train_batch`` (the VAE's).

    Returns:
        Per side, per block: microseconds per step (per epoch for the epoch end), one per repeat.
    """
    steps, pool_size, train_steps = (
        settings["steps"],
        settings["goal_pool"],
        settings["train_steps"],
    )
    sync = make_sync(device)
    produce = make_producer(device, settings["goal_batch"])
    pool = [produce() for _ in range(pool_size)]
    feed = [pool[i % pool_size] for i in range(steps)]
    train = make_trainer(device, settings["train_batch"])
    sides = observe_sides(device)
    blocks = ("step_discovery", "epoch_end", "step_later", "only_discovery", "only_later")
    times: dict[str, dict[str, list[float]]] = {
        s: {b: [] for b in (*blocks, "train_step")} for s in sides
    }

    def steps_of(record: Record) -> Callable[[], None]:
        def run() -> None:
            for _ in range(steps):
                record(produce())

        return run

    def only_of(record: Record) -> Callable[[], None]:
        def run() -> None:
            for goals in feed:
                record(goals)

        return run

    def train_of(record: Record) -> Callable[[], None]:
        def run() -> None:
            for _ in range(train_steps):
                train(record)

        return run

    warmup = settings["warmup_rounds"]
    for round_ in range(warmup + settings["repeats"]):  # the warm-up rounds are not kept
        for side, make in sides.items():
            # Full steps: a discovery epoch, its end, then a later epoch.
            record, end_epoch = make()
            record(produce())  # one untimed step: first-use allocations
            t_discovery = time_block(steps_of(record), sync) / steps
            t_end = time_block(end_epoch, sync)
            record(produce())
            t_later = time_block(steps_of(record), sync) / steps
            # The recording alone, on goals computed beforehand.
            record, end_epoch = make()
            record(pool[0])
            t_only_discovery = time_block(only_of(record), sync) / steps
            end_epoch()
            record(pool[0])
            t_only_later = time_block(only_of(record), sync) / steps
            # Whole training steps of the conv VAE, discovery epoch.
            record, _ = make()
            train(record)
            t_train = time_block(train_of(record), sync) / train_steps
            if round_ < warmup:
                continue
            figures = (t_discovery, t_end, t_later, t_only_discovery, t_only_later, t_train)
            for block, ns in zip((*blocks, "train_step"), figures, strict=True):
                times[side][block].append(ns / 1e3)
    return times


OBSERVE_CASES = (
    ("step, discovery epoch", "step_discovery"),
    ("step, later epoch", "step_later"),
    ("observe only, discovery", "only_discovery"),
    ("observe only, later", "only_later"),
    ("VAE training step", "train_step"),
)


def observe_records(times: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """One record per case of part (a): each side's figures and baseline / ours."""
    records = []
    ours_sides = [s for s in ("ours", "ours_device") if s in times]
    for case, block in (*OBSERVE_CASES, ("epoch end (per epoch)", "epoch_end")):
        base = summarise(times["baseline"][block])
        record: dict[str, Any] = {"case": case, "block": block, "baseline": base}
        for side in ours_sides:
            ours = summarise(times[side][block])
            record[side] = ours
            record[f"ratio_{side}"] = ratio(base, ours)
        records.append(record)
    return records


def check_observe_sync(device: torch.device, batch: int) -> str:
    """Whether one observe() of device tensors waits for the device (CUDA only)."""
    if device.type != "cuda":
        return "n/a on the CPU"
    produce = make_producer(device, batch)
    sched = make_scheduler("auto")
    sched.observe(produce())  # first use: allocations and index tensors
    goals = produce()
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        sched.observe(goals)
    except RuntimeError as error:
        return f"SYNCHRONISED: {error}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return "no host synchronisation (torch.cuda.set_sync_debug_mode('error') raised nothing)"


# -- part (b): snapshot and restore --------------------------------------------------------


def rollback_sides(
    base: tuple[ConvVAE, torch.optim.Optimizer],
    guard: RollbackGuard,
    flag: torch.Tensor,
) -> dict[str, Callable[[], Any]]:
    """One iteration of each side of part (b), by label."""
    model, optimizer = base

    def base_snapshot() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        snap = {k: v.clone() for k, v in model.state_dict().items()}
        return snap, copy.deepcopy(optimizer.state_dict())

    def base_restore(saved: tuple[dict[str, torch.Tensor], dict[str, Any]]) -> None:
        model.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])

    def base_both() -> None:
        base_restore(base_snapshot())

    def base_if() -> None:
        saved = base_snapshot()
        if flag.item():
            base_restore(saved)

    def guard_both() -> None:
        guard.snapshot()
        guard.restore()

    def guard_if() -> None:
        guard.snapshot()
        guard.restore_if(flag)

    return {
        "base_snapshot": base_snapshot,
        "base_restore": base_both,
        "base_restore_if": base_if,
        "guard_snapshot": guard.snapshot,
        "guard_restore": guard_both,
        "guard_restore_if": guard_if,
    }


ROLLBACK_CASES = (
    (
        "snapshot only",
        "base_snapshot",
        "guard_snapshot",
        "clone state_dict + deepcopy(optimizer.state_dict()) vs guard.snapshot()",
    ),
    (
        "snapshot + restore",
        "base_restore",
        "guard_restore",
        "... + load_state_dict() x2 vs guard.snapshot() + guard.restore()",
    ),
    (
        "snapshot + restore_if",
        "base_restore",
        "guard_restore_if",
        "baseline as above vs guard.snapshot() + guard.restore_if(flag)",
    ),
    (
        "snapshot + if flag.item()",
        "base_restore_if",
        "guard_restore_if",
        "snapshot, `if flag.item(): restore` vs guard.restore_if(flag), a bool tensor",
    ),
)


def time_rollback(
    device: torch.device, settings: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Time part (b): each side ``iterations`` times per block, ``repeats`` rounds.

    Args:
        device: Where the model lives.
        settings: ``iterations`` per timed block, ``repeats``, ``warmup_rounds``,
            ``warm_steps`` (training steps before timing) and ``vae_batch``.

    Returns:
        What the model holds, and per side the microseconds per iteration, one per repeat.
    """
    iterations, warmup = settings["iterations"], settings["warmup_rounds"]
    sync = make_sync(device)
    base = make_trained(device, settings["warm_steps"], settings["vae_batch"])
    model, optimizer = make_trained(device, settings["warm_steps"], settings["vae_batch"])
    guard = RollbackGuard(model, optimizer)
    flag = torch.tensor(True, device=device)
    sides = rollback_sides(base, guard, flag)
    times: dict[str, list[float]] = {side: [] for side in sides}

    def block(one: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(iterations):
                one()

        return run

    for round_ in range(warmup + settings["repeats"]):  # the warm-up rounds are not kept
        for side, one in sides.items():
            elapsed = time_block(block(one), sync) / iterations
            if round_ >= warmup:
                times[side].append(elapsed / 1e3)
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    state = [v for entry in optimizer.state.values() for v in entry.values() if torch.is_tensor(v)]
    info = {
        "model": "ConvVAE (32x32x3 images, 64-d latent in two halves)",
        "parameters": params,
        "parameter_tensors": len(list(model.parameters())),
        "buffer_elements": buffers,
        "optimizer": f"AdamW{' (fused=True)' if device.type == 'cuda' else ''}",
        "optimizer_state_tensors": len(state),
        "snapshot_bytes": sum(t.numel() * t.element_size() for t in guard_tensors(guard)),
        "guard": repr(guard),
        "guard_allocations": getattr(guard, "_allocations", None),
        "guard_host_reads": getattr(guard, "_host_reads", None),
        "sync_check": check_rollback_sync(guard, flag),
    }
    return info, times


def guard_tensors(guard: RollbackGuard) -> list[torch.Tensor]:
    """The snapshot buffers the guard holds (empty if it keeps them elsewhere)."""
    return list(getattr(guard, "_snaps", []))


def check_rollback_sync(guard: RollbackGuard, flag: torch.Tensor) -> str:
    """Whether snapshot() + restore_if(flag) waits for the device (CUDA only)."""
    if flag.device.type != "cuda":
        return "n/a on the CPU"
    guard.snapshot()
    guard.restore_if(flag)
    torch.cuda.synchronize(flag.device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        guard.snapshot()
        guard.restore_if(flag)
    except RuntimeError as error:
        return f"SYNCHRONISED: {error}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return "no host synchronisation (torch.cuda.set_sync_debug_mode('error') raised nothing)"


def rollback_records(times: dict[str, list[float]]) -> list[dict[str, Any]]:
    """One record per case of part (b)."""
    records = []
    for case, base_side, ours_side_, what in ROLLBACK_CASES:
        base, ours = summarise(times[base_side]), summarise(times[ours_side_])
        records.append(
            {
                "case": case,
                "what": what,
                "baseline_side": base_side,
                "ours_side": ours_side_,
                "baseline": base,
                "ours": ours,
                "ratio": ratio(base, ours),
            }
        )
    return records


# -- reporting ---------------------------------------------------------------------------------


def print_header(info: dict[str, Any], settings: dict[str, Any]) -> None:
    """Where and how the figures were taken."""
    print("PyTorch adapter overhead: TorchScheduler.observe() and RollbackGuard")
    print(
        f"  {info['implementation']} {info['python']}, torch {info['torch']}, "
        f"numpy {info['numpy']}, constraint_sched {info['constraint_sched']}"
    )
    _machine.print_machine(info)
    mode = " (--quick: a smoke test, not a measurement)" if settings["quick"] else ""
    print(
        f"  {settings['repeats']} repeats, best [median]; per timed block: part (a) "
        f"{settings['steps']} steps ({settings['train_steps']} VAE training steps), part (b) "
        f"{settings['iterations']} iterations; gc off while timing{mode}"
    )
    print()


def fmt(figures: dict[str, float]) -> str:
    """Best [median] in microseconds."""
    return f"{figures['best_us']:.1f} [{figures['median_us']:.1f}]"


def fmt_ratio(r: dict[str, float]) -> str:
    """Best [median] ratio."""
    return f"{r['best']:.2f}x [{r['median']:.2f}x]"


def print_observe(
    records: list[dict[str, Any]],
    floors: dict[str, dict[str, float]],
    settings: dict[str, Any],
    sync_check: str,
) -> None:
    """Part (a)'s table, then what the rows include."""
    device_column = "ours_device" in records[0]
    print(
        f"(a) Observing {len(GOAL_NAMES)} goal tensors per step "
        "(28 soft, auto scale by median; 2 KL halves sharing a ceiling by max)"
    )
    print("    us per step, best [median]; ratio (baseline / ours) above 1: the adapter is faster")
    head = f"  {'case':<26}{'baseline':>20}{'ours':>20}{'ratio':>18}"
    if device_column:
        head = f"  {'case':<26}{'baseline':>20}{'ours (auto)':>20}{'ratio':>18}"
        head += f"{'ours (device)':>20}{'ratio':>18}"
    print(head)
    for r in records:
        if r["block"] == "epoch_end":
            continue
        line = (
            f"  {r['case']:<26}{fmt(r['baseline']):>20}{fmt(r['ours']):>20}"
            f"{fmt_ratio(r['ratio_ours']):>18}"
        )
        if device_column:
            line += f"{fmt(r['ours_device']):>20}{fmt_ratio(r['ratio_ours_device']):>18}"
        print(line)
    print(
        f"    step: the small forward pass (batch {settings['goal_batch']}) that makes the goals, "
        "then the recording; alone it takes "
        f"{fmt(floors['step_discovery'])} us per step"
    )
    print(
        "    observe only: the recording alone, on goals computed beforehand "
        f"({settings['goal_pool']} steps' worth, cycled)"
    )
    print(
        f"    VAE training step: the conv VAE of part (b), batch {settings['train_batch']}: "
        "forward (the goals), backward, AdamW step, then the recording; without the "
        f"recording it takes {fmt(floors['train_step'])} us per step"
    )
    for r in records:
        if r["block"] not in ("step_discovery", "step_later", "train_step"):
            continue
        floor = floors[r["block"]]["best_us"]
        parts = [f"baseline {r['baseline']['best_us'] - floor:.1f}"]
        for side, label in (("ours", "ours"), ("ours_device", "ours (device)")):
            if side in r:
                parts.append(f"{label} {r[side]['best_us'] - floor:.1f}")
        print(f"    recording cost (best - no recording), {r['case']}: {', '.join(parts)} us")
    end = next(r for r in records if r["block"] == "epoch_end")
    ours_end = f"ours advance_epoch() {fmt(end['ours'])}"
    if device_column:
        ours_end += f", ours (device) {fmt(end['ours_device'])}"
    print(
        f"    end of the discovery epoch, us once per epoch: baseline np.median/max of "
        f"the lists {fmt(end['baseline'])}, {ours_end}"
    )
    print(f"    sync check, ours: {sync_check}")
    print()


def print_rollback(records: list[dict[str, Any]], info: dict[str, Any]) -> None:
    """Part (b)'s table."""
    print(
        f"(b) Snapshot and restore: {info['model']}, {info['parameters']:,} parameters in "
        f"{info['parameter_tensors']} tensors, {info['optimizer']} with "
        f"{info['optimizer_state_tensors']} state tensors; {info['snapshot_bytes'] / 2**20:.1f} "
        "MiB per snapshot"
    )
    print("    us per step, best [median]; ratio (baseline / ours) above 1: the guard is faster")
    print(f"  {'case':<28}{'baseline':>22}{'ours':>22}{'ratio':>18}")
    for r in records:
        print(
            f"  {r['case']:<28}{fmt(r['baseline']):>22}{fmt(r['ours']):>22}"
            f"{fmt_ratio(r['ratio']):>18}"
        )
    for r in records:
        print(f"    {r['case']}: {r['what']}")
    print(
        f"    guard: {info['guard']}; snapshot buffers allocated {info['guard_allocations']} "
        f"time(s), flag read on the host {info['guard_host_reads']} time(s) over the run"
    )
    print(f"    sync check, guard.snapshot() + restore_if(flag): {info['sync_check']}")
    print()


def main(argv: Sequence[str] | None = None) -> int:
    """Run both parts and print the tables.

    Args:
        argv: Command-line arguments without the program name; None reads ``sys.argv``.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _machine.add_device_argument(parser)
    parser.add_argument("--steps", type=int, help="part (a): steps per timed block (default 200)")
    parser.add_argument(
        "--iterations", type=int, help="part (b): iterations per timed block (default 20)"
    )
    parser.add_argument("--repeats", type=int, help="timed rounds per side (default 7)")
    parser.add_argument(
        "--train-steps",
        type=int,
        help="part (a): VAE training steps per timed block (default 10 on the CPU, 50 on CUDA)",
    )
    parser.add_argument(
        "--train-batch",
        type=int,
        help="part (a): the VAE training step's batch (default 4 on the CPU, 2048 on CUDA)",
    )
    _machine.add_threads_argument(parser, "torch's CPU threads (default: torch's own choice)")
    _machine.add_quick_and_json(parser, "tiny sizes: a smoke test")
    args = parser.parse_args(argv)
    _machine.set_threads(args.threads, parser)
    if _machine.pick_device(args.device, parser) == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    cuda = device.type == "cuda"

    def pick(given: int | None, quick: int, cpu: int, on_cuda: int) -> int:
        if given is not None:
            return given
        return quick if args.quick else (on_cuda if cuda else cpu)

    settings: dict[str, Any] = {
        "device": str(device),
        "steps": pick(args.steps, 3, 200, 200),
        "iterations": pick(args.iterations, 1, 20, 20),
        "repeats": pick(args.repeats, 1, 7, 7),
        "warmup_rounds": 0 if args.quick else 1,
        "train_steps": pick(args.train_steps, 1, 10, 50),
        # On CUDA, 2048 images of 32x32 are as many pixels as the original's 512 of 64x64.
        "train_batch": pick(args.train_batch, 1, 4, 2048),
        "goal_batch": 256,
        "vae_batch": 2 if args.quick else 32,
        "warm_steps": 1 if args.quick else 3,
        "threads": torch.get_num_threads(),
        "quick": args.quick,
    }
    sizes = ("steps", "iterations", "repeats", "train_steps", "train_batch")
    if any(settings[k] < 1 for k in sizes):
        parser.error(
            "--steps, --iterations, --repeats, --train-steps and --train-batch must be >= 1"
        )
    settings["goal_pool"] = min(settings["steps"], 50)

    info = _machine.describe(device)
    print_header(info, settings)
    observe_times = time_observe(device, settings)
    observe = observe_records(observe_times)
    floors = {block: summarise(figures) for block, figures in observe_times["produce"].items()}
    sync_check = check_observe_sync(device, settings["goal_batch"])
    print_observe(observe, floors, settings, sync_check)
    model_info, rollback_times = time_rollback(device, settings)
    rollback = rollback_records(rollback_times)
    print_rollback(rollback, model_info)

    ratios = {
        "observe_step_discovery": observe[0]["ratio_ours"]["best"],
        "observe_step_later": observe[1]["ratio_ours"]["best"],
        "observe_train_step": observe[4]["ratio_ours"]["best"],
        "rollback_snapshot_restore": rollback[1]["ratio"]["best"],
        "rollback_snapshot_restore_if": rollback[2]["ratio"]["best"],
    }
    print(
        "Summary (baseline / ours, best): observing, discovery epoch "
        f"{ratios['observe_step_discovery']:.2f}x, later epoch "
        f"{ratios['observe_step_later']:.2f}x, VAE training step "
        f"{ratios['observe_train_step']:.2f}x; snapshot + restore "
        f"{ratios['rollback_snapshot_restore']:.2f}x, snapshot + restore_if "
        f"{ratios['rollback_snapshot_restore_if']:.2f}x (on {info['device_name']})"
    )

    if args.json is not None:
        figures = {
            "machine": info,
            "settings": settings,
            "ratios": ratios,
            "observe": {
                "goals": list(GOAL_NAMES),
                "no_recording": floors,
                "sync_check": sync_check,
                "records": observe,
            },
            "rollback": {**model_info, "records": rollback},
        }
        _machine.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
