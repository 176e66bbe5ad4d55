"""Seconds per step of the bundled LBO-VAE trainer against the same step driven the original way.

Both arms train the same model (the trainer's default `TrainConfig` model: an
`LBOVAE` and a `PatchDiscriminator`, AdamW for each) with the same goal table
(`default_goals`), the same LBO objective (`LBOObjective` over `group_tree`, in
log space) and the same forward passes (`Stepper.inputs`), on one fixed batch
of the trainer's ``shapes`` images:

- **ours**: ``Stepper.__call__``, as ``lbo-vae train`` runs it with
  ``recheck="full", refresh=1`` (every group on every step and the whole
  forward again after it, the step the original's bookkeeping is written
  for; the default's cheaper step is ``benchmarks/trainer_profile.py``'s
  subject). Everything stays
  on the device: the scores under the schedulers' bounds as cached tensors
  (`TorchScheduler.log_score`), the reject flag (a non-finite loss, a group at
  0, and with ``kl_hard_ceiling`` a KL half pushed past its ceiling) as a 0-d
  bool tensor, ``RollbackGuard.snapshot()`` / ``restore_if(flag)`` around the
  VAE's step and the discriminator's, the accepted metrics to
  ``TorchScheduler.observe``. (On the CPU the adapter's default,
  ``accumulate="auto"``, reads CPU tensors on the host: there, ours reads the
  metrics and the flag with ``.item()`` too, which costs no wait on a CPU.)
- **original**: the same maths with the original's bookkeeping, written out in
  `OriginalStep`: before every step ``{k: v.clone() for k, v in
  vae.state_dict().items()}`` and ``copy.deepcopy(optimizer.state_dict())``,
  loaded back with ``load_state_dict`` on a reject; every goal scored by the
  core's `ConstraintSpec.log_score` with plain float bounds (the same specs,
  read from the schedulers once, after the warm-up); the loss read with
  ``.item()`` (a non-finite one skips the step); after the step ``.item()`` on
  every goal's raw metric, the group scores read with ``.tolist()`` and the
  reject decided in Python (``if not math.isfinite(loss) or min_group <= 0 or
  crossed``); the accepted values appended to a Python list per goal (the
  original's bookkeeping for discovery and calibration); the discriminator
  trained every other step, when the step was accepted (the host knows, so
  there is nothing to snapshot or undo: the same result as ours, which trains
  it and undoes that on a rejected step).
  Both arms score the constraint goals against their ``met`` levels and clip
  the gradient to ``gradient_clip`` times its running mean; the original
  reads the norm on the host.

So the two arms differ exactly in the host reads, the list bookkeeping and the
clone / deepcopy rollback. A check before the timing runs one step of each
from the same state and the same random seed and prints how far apart the
losses and the parameters end (float rounding only: the bounds are float32
tensors on one side and Python floats on the other).

The timing starts after the warm-up: ``--warmup`` steps of ours, which are the
whole calibration of the ``auto`` scales (``calibration_steps`` is set to it),
so the timed steps train on the LBO objective, not on the calibration's pixel
MSE. By default the timed steps are in epoch 1, where the KL ceiling is still
being discovered (1e9: only a non-finite loss or a group at 0 rejects, so the
baseline pays its snapshot, and in practice never its restore); ``--epoch 2``
ends the epoch first, so the discovered ceiling is in force (a steep score;
with ``--hard-ceiling``, the config's ``kl_hard_ceiling``, a step that crosses
it is also rolled back). The
check's step is each arm's untimed warm-up; then ``--rounds`` rounds, each
timing ``--steps`` steps of ours and then of the original (interleaved, so
drift in the machine's load hits both), the device synchronised before and
after each block and the garbage collector off. The table shows the best and
the median over the rounds of the milliseconds per step, by the wall clock and
by the process's CPU time, and the ratio original / ours (above 1: ours is
faster); the rejected steps of each arm are counted.

``--profile N`` profiles N more steps of each arm with ``torch.profiler`` and
prints where the time goes: convolutions (forward and backward), the
baseline's snapshot and restore, host reads, the rest.

Usage:
    python benchmarks/trainer_step.py [--device auto|cpu|cuda] [--batch-size B]
        [--steps N] [--rounds R] [--warmup W] [--epoch 1|2] [--hard-ceiling]
        [--threads T] [--profile N] [--quick] [--json PATH]

Run it against the source tree with ``PYTHONPATH=. python benchmarks/trainer_step.py``
from the repository root, or with ``constraint-sched[trainer]`` installed.
``--quick`` runs a few steps at batch 8 (a smoke test, not a measurement).
Nothing here asserts on a timing. On a CPU that other work shares, use
``--threads 1``: torch's intra-op threads wait for each other at every
operator, and while one of them is descheduled a step takes many times longer
(the wall clock of a round then says more about the neighbours than the step).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import _machine
import torch
import torch.nn.functional as F

from constraint_sched import ConstraintSpec
from constraint_sched.adapters.lbo_vae import (
    Run,
    Stepper,
    TrainConfig,
    build_schedulers,
    compute,
    group_tree,
)
from constraint_sched.adapters.lbo_vae._step import EMA_DECAY
from constraint_sched.adapters.torch import LBOObjective, TorchScheduler

# -- the original way ---------------------------------------------------------------------------


def _no_label(name: str) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


class OriginalStep:
    """One training step of the same model and goals, with the original's host-side bookkeeping.

    Args:
        forward: The trainer's forward passes over this arm's models (`Stepper.inputs`).
        vae: The VAE (this arm's copy).
        disc: The discriminator (this arm's copy).
        optimizer: The VAE's AdamW.
        disc_optimizer: The discriminator's AdamW.
        goals: The goal table.
        specs: Every goal's spec with its bounds as plain floats (scheduled
            goals: the schedulers' spec with the current bound applied).
        barriers: The goals whose bound a step may not cross (the trainer's
            `Stepper.barriers`: the KL halves with ``kl_hard_ceiling``, else none).
        steps: The step counter to start from (the discriminator trains on even steps).
        met: The trainer's levels at which a constraint goal counts as met
            (`Stepper`'s ``met``): its log score is ``min(0, log score - log level)``.
        clip: The trainer's gradient clip (a multiple of the running mean of the
            norms); the norm is read on the host here.
        norm_ema: That running mean where the trainer's stands (0: none yet).
    """

    def __init__(
        self,
        forward: Callable[..., Any],
        vae: torch.nn.Module,
        disc: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        disc_optimizer: torch.optim.Optimizer,
        goals: Sequence[Any],
        specs: dict[str, ConstraintSpec],
        barriers: Sequence[str],
        steps: int,
        met: dict[str, float] | None = None,
        clip: float | None = None,
        norm_ema: float = 0.0,
    ) -> None:
        self.forward, self.vae, self.disc = forward, vae, disc
        self.log_met = {name: math.log(level) for name, level in (met or {}).items()}
        self.clip, self.norm_ema = clip, norm_ema
        self.optimizer, self.disc_optimizer = optimizer, disc_optimizer
        self.goals, self.specs, self.barriers = tuple(goals), specs, tuple(barriers)
        self.objective = LBOObjective(group_tree(self.goals))
        self.values: dict[str, list[float]] = {g.name: [] for g in self.goals}
        self.steps, self.rejects = steps, 0
        self.label: Callable[[str], contextlib.AbstractContextManager[Any]] = _no_label

    def log_scores(self, metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every goal's log score by the core's spec, bounds as Python floats."""
        specs, log_met = self.specs, self.log_met
        logs = {name: specs[name].log_score(value) for name, value in metrics.items()}
        return {
            name: (value - log_met[name]).clamp_max(0.0) if name in log_met else value
            for name, value in logs.items()
        }

    def __call__(self, x: torch.Tensor) -> tuple[float, bool]:
        """One step on batch ``x``; returns the loss before the step and whether it was rejected."""
        vae, disc, label = self.vae, self.disc, self.label
        b = x.shape[0]
        noise = vae.draw_noise(x)  # type: ignore[operator]
        perturb = vae.draw_noise(x)  # type: ignore[operator]
        perm = torch.roll(torch.arange(b, device=x.device), 1)
        disc.eval()
        with label("original: snapshot (clone + deepcopy)"):
            saved = {k: v.clone() for k, v in vae.state_dict().items()}
            saved_optimizer = copy.deepcopy(self.optimizer.state_dict())
        inputs = self.forward(x, noise, perturb, perm)
        before = compute(self.goals, inputs)
        loss = self.objective(self.log_scores(before), log=True).loss
        with label("original: host reads"):
            loss_value = loss.item()
            before_values = {n: before[n].item() for n in self.barriers}
        if not math.isfinite(loss_value):
            self.rejects += 1
            self.steps += 1
            return loss_value, True
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        if self.clip is not None:
            self._clip()
        self.optimizer.step()
        with torch.no_grad():
            after = self.forward(x, noise, perturb, perm)
            metrics = compute(self.goals, after)
            result = self.objective(self.log_scores(metrics), log=True)
        with label("original: host reads"):
            values = {name: v.item() for name, v in metrics.items()}
            groups = result.groups.tolist()
            after_loss = result.loss.item()
        min_group = min(groups)
        crossed = False
        for name in self.barriers:
            spec = self.specs[name]
            past = spec.violation(values[name])
            if past > 0 and past > spec.violation(before_values[name]):
                crossed = True
        rejected = not math.isfinite(after_loss) or min_group <= 0 or crossed
        if rejected:
            with label("original: restore (load_state_dict)"):
                vae.load_state_dict(saved)
                self.optimizer.load_state_dict(saved_optimizer)
            self.rejects += 1
        else:
            with label("original: lists"):
                for name, v in values.items():
                    if math.isfinite(v):
                        self.values[name].append(v)
            if self.steps % 2 == 0:
                self._train_disc(x, after.recon, after.swap)
        self.steps += 1
        return loss_value, rejected

    def _clip(self) -> None:
        """The trainer's gradient clipping, with the norm read on the host."""
        assert self.clip is not None
        grads = [p.grad for p in self.vae.parameters() if p.grad is not None]
        with self.label("original: host reads"):
            norm = math.sqrt(sum(float(g.square().sum().item()) for g in grads))
        ema = self.norm_ema if self.norm_ema > 0 else norm
        factor = min(1.0, self.clip * ema / max(norm, 1e-12))
        for g in grads:
            g.mul_(factor)
        self.norm_ema = EMA_DECAY * ema + (1.0 - EMA_DECAY) * norm * factor

    def _train_disc(self, x: torch.Tensor, recon: torch.Tensor, swap: torch.Tensor) -> None:
        disc = self.disc
        disc.train()
        real = disc(x)
        fake = disc(torch.cat([recon, swap]).detach())
        loss = F.binary_cross_entropy_with_logits(
            real, torch.ones_like(real)
        ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        self.disc_optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.disc_optimizer.step()
        disc.eval()


# -- set-up -------------------------------------------------------------------------------------


class Arms:
    """Both arms, from one warmed-up trainer: ours and a copy driven the original way."""

    def __init__(self, config: TrainConfig, out: Path, warmup: int, epoch: int) -> None:
        self.run = run = Run(config, out, print_=lambda _: None, progress=False)
        self.device = run.device
        self.stepper: Stepper = run.stepper
        self.x = run.data.images[: config.batch_size].to(self.device)
        for _ in range(warmup):  # the calibration of every auto scale (calibration_steps=warmup)
            self.stepper(self.x)
        if self.stepper.calibrating():
            raise RuntimeError("the warm-up did not end the calibration: raise --warmup")
        if epoch == 2:  # the KL ceiling is discovered: a barrier from now on
            run.schedulers.advance_epoch()
        self.kl_phase = run.collection["kl"].phase.name
        self.kl_ceiling = run.collection["kl"].bound
        vae, disc, optimizer, disc_optimizer = copy.deepcopy(
            (run.vae, run.disc, run.optimizer, run.disc_optimizer)
        )
        # The trainer's forward passes over the copies; this Stepper's own scheduler,
        # guards and __call__ are never used.
        unused = TorchScheduler(build_schedulers(run.goals, config))
        forward = Stepper(vae, disc, run.goals, unused, optimizer, disc_optimizer).inputs
        scheduled = set(run.schedulers.names)
        specs = {
            g.name: run.schedulers.spec(g.name) if g.name in scheduled else g.spec
            for g in run.goals
        }
        self.original = OriginalStep(
            forward,
            vae,
            disc,
            optimizer,
            disc_optimizer,
            run.goals,
            specs,
            self.stepper.barriers,
            self.stepper.steps,
            met=self.stepper.met,
            clip=self.stepper.clip,
            norm_ema=float(self.stepper.norm_ema),
        )
        self.ours_flags: list[torch.Tensor] = []  # each step's reject flag, read after the timing

    def ours(self) -> None:
        """One step of the trainer."""
        self.ours_flags.append(self.stepper(self.x).rejected)

    def base(self) -> None:
        """One step the original way."""
        self.original(self.x)

    def check(self, seed: int = 1234) -> dict[str, Any]:
        """One step of each from the same state and seed: how far apart they end."""
        torch.manual_seed(seed)
        result = self.stepper(self.x)
        torch.manual_seed(seed)
        loss, rejected = self.original(self.x)
        ours_loss = float(result.loss)
        params = [
            (a - b).abs().max().item()
            for a, b in zip(self.run.vae.parameters(), self.original.vae.parameters(), strict=True)
        ]
        return {
            "ours_loss": ours_loss,
            "original_loss": loss,
            "loss_abs_diff": abs(ours_loss - loss),
            "ours_rejected": bool(result.rejected),
            "original_rejected": rejected,
            "max_param_abs_diff": max(params),
        }

    def count_rejects(self) -> tuple[int, int]:
        """Rejected steps so far (of `ours` and of the original's calls): ours, the original's."""
        flags = self.ours_flags
        ours = int(torch.stack(flags).sum().item()) if flags else 0
        return ours, self.original.rejects


# -- timing -------------------------------------------------------------------------------------


def make_sync(device: torch.device) -> Callable[[], None]:
    """A function that waits for ``device`` (a no-op on the CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_block(run: Callable[[], Any], steps: int, sync: Callable[[], None]) -> tuple[float, float]:
    """Wall-clock and process CPU seconds per step over ``steps`` calls of ``run``.

    The device is synchronised before and after, the garbage collector is off.
    """
    sync()
    gc.collect(1)
    enabled = gc.isenabled()
    gc.disable()
    try:
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            run()
        sync()
        return (time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps
    finally:
        if enabled:
            gc.enable()


def summarise(times: Sequence[float]) -> dict[str, float]:
    """Best and median seconds per step."""
    return {"best_s": min(times), "median_s": statistics.median(times)}


# -- profile ------------------------------------------------------------------------------------

CONV = ("conv",)
HOST_READS = ("aten::item", "aten::_local_scalar_dense")


def profile_arm(
    one: Callable[[], Any], steps: int, sync: Callable[[], None], device: torch.device
) -> dict[str, Any]:
    """Where ``steps`` steps spend their time: the profiler's self times, grouped."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    sync()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            one()
        sync()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    top = [
        {
            "name": e.key,
            "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
            "share": e.self_cpu_time_total / total if total else 0.0,
            "calls_per_step": e.count / steps,
        }
        for e in rows[:12]
    ]
    groups = {"convolutions": 0.0, "host reads": 0.0}
    labels = {}
    for e in events:
        if e.key.startswith("original: "):
            labels[e.key] = e.cpu_time_total / 1e3 / steps  # inclusive: the region's whole cost
        elif any(k in e.key for k in CONV):
            groups["convolutions"] += e.self_cpu_time_total
        elif e.key in HOST_READS:
            groups["host reads"] += e.self_cpu_time_total
    shares = {k: v / total if total else 0.0 for k, v in groups.items()}
    return {
        "self_cpu_ms_per_step": total / 1e3 / steps,
        "shares": shares,
        "regions_ms_per_step": labels,
        "top": top,
    }


# -- reporting ----------------------------------------------------------------------------------


def fmt(figures: dict[str, float]) -> str:
    """Best [median] seconds per step, in milliseconds."""
    return f"{figures['best_s'] * 1e3:.1f} [{figures['median_s'] * 1e3:.1f}]"


def print_profile(arm: str, figures: dict[str, Any]) -> None:
    """One arm's profile: the grouped shares, the labelled regions, the top operators."""
    shares = ", ".join(f"{k} {v:.0%}" for k, v in figures["shares"].items())
    print(
        f"  {arm}: {figures['self_cpu_ms_per_step']:.1f} ms of CPU time per step (profiled); "
        f"{shares}"
    )
    for region, ms in sorted(figures["regions_ms_per_step"].items()):
        print(f"    {region}: {ms:.2f} ms per step")
    print(f"    {'operator':<40}{'ms/step':>10}{'share':>8}{'calls/step':>12}")
    for row in figures["top"]:
        print(
            f"    {row['name'][:39]:<40}{row['self_cpu_ms_per_step']:>10.2f}"
            f"{row['share']:>8.1%}{row['calls_per_step']:>12.1f}"
        )


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A temporary output folder for the trainer's run (its metrics file)."""
    with tempfile.TemporaryDirectory(prefix="trainer-step-") as folder:
        yield Path(folder)


def main(argv: Sequence[str] | None = None) -> int:
    """Time both arms and print the table.

    Args:
        argv: Command-line arguments without the program name; None reads ``sys.argv``.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _machine.add_device_argument(parser)
    parser.add_argument("--batch-size", type=int, help="images per step (default 64, the config's)")
    parser.add_argument("--steps", type=int, help="steps per timed block (default 20)")
    parser.add_argument("--rounds", type=int, help="timed rounds per arm (default 3)")
    parser.add_argument(
        "--warmup", type=int, help="untimed steps of ours first: the calibration (default 3)"
    )
    parser.add_argument(
        "--epoch",
        type=int,
        choices=(1, 2),
        default=1,
        help="time in epoch 1 (KL ceiling 1e9, default) or 2 (the discovered ceiling)",
    )
    parser.add_argument(
        "--hard-ceiling",
        action="store_true",
        help="the config's kl_hard_ceiling: a step that crosses the KL ceiling is rejected",
    )
    _machine.add_threads_argument(parser)
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="profile N more steps of each arm"
    )
    _machine.add_quick_and_json(parser, "tiny sizes: a smoke test")
    args = parser.parse_args(argv)
    _machine.set_threads(args.threads, parser)
    device_name = _machine.pick_device(args.device, parser)

    def pick(given: int | None, quick: int, default: int) -> int:
        return given if given is not None else (quick if args.quick else default)

    settings: dict[str, Any] = {
        "batch_size": pick(args.batch_size, 8, TrainConfig().batch_size),
        "steps": pick(args.steps, 2, 20),
        "rounds": pick(args.rounds, 1, 3),
        "warmup": pick(args.warmup, 1, 3),
        "epoch": args.epoch,
        "profile_steps": args.profile,
        "quick": args.quick,
    }
    if any(settings[k] < 1 for k in ("batch_size", "steps", "rounds", "warmup")):
        parser.error("--batch-size, --steps, --rounds and --warmup must be >= 1")
    if args.profile < 0:
        parser.error("--profile must be >= 0")
    config = TrainConfig(
        images=settings["batch_size"],
        batch_size=settings["batch_size"],
        calibration_steps=settings["warmup"],
        kl_hard_ceiling=args.hard_ceiling,
        device=device_name,
        # The step the original's bookkeeping is written for: every group on every step, and
        # the whole forward again after it (the default's cheaper step is trainer_profile's).
        recheck="full",
        refresh=1,
    )
    settings["config"] = {
        "lr": config.lr,
        "image_size": config.image_size,
        "core_dims": config.core_dims,
        "detail_dims": config.detail_dims,
        "width": config.width,
        "disc_width": config.disc_width,
        "calibration_steps": config.calibration_steps,
        "kl_hard_ceiling": config.kl_hard_ceiling,
    }

    with scratch() as out:
        arms = Arms(config, out, settings["warmup"], settings["epoch"])
        device = arms.device
        info = _machine.describe(device)
        vae_params = sum(p.numel() for p in arms.run.vae.parameters())
        disc_params = sum(p.numel() for p in arms.run.disc.parameters())
        print("LBO-VAE trainer step: Stepper.__call__ against the original's bookkeeping")
        print(
            f"  Python {info['python']}, torch {info['torch']}, "
            f"constraint_sched {info['constraint_sched']}"
        )
        _machine.print_machine(info)
        mode = " (--quick: a smoke test, not a measurement)" if args.quick else ""
        print(
            f"  model: LBOVAE {vae_params:,} parameters, PatchDiscriminator {disc_params:,}; "
            f"{len(arms.run.goals)} goals; batch {settings['batch_size']} of "
            f"{config.image_size}x{config.image_size} shapes images"
        )
        ceiling = "none (discovery)" if arms.kl_ceiling >= 1e9 else f"{arms.kl_ceiling:.4g}"
        print(
            f"  timed in epoch {settings['epoch']} (KL {arms.kl_phase}, ceiling {ceiling}, "
            f"hard ceiling {'on' if config.kl_hard_ceiling else 'off'}) after "
            f"{settings['warmup']} warm-up step(s); {settings['rounds']} round(s) of "
            f"{settings['steps']} step(s) per arm, interleaved; gc off while timing{mode}"
        )
        print()

        check = arms.check()
        print(
            f"same maths: one step of each from the same state and seed: loss ours "
            f"{check['ours_loss']:.6g}, original {check['original_loss']:.6g} "
            f"(|diff| {check['loss_abs_diff']:.2e}); rejected {check['ours_rejected']} / "
            f"{check['original_rejected']}; max |parameter diff| after the step "
            f"{check['max_param_abs_diff']:.2e}"
        )
        sync = make_sync(device)
        sides: dict[str, Callable[[], None]] = {"ours": arms.ours, "original": arms.base}
        start_rejects = arms.count_rejects()
        times: dict[str, list[float]] = {side: [] for side in sides}
        cpu_times: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(settings["rounds"]):
            for side, one in sides.items():
                wall, cpu = time_block(one, settings["steps"], sync)
                times[side].append(wall)
                cpu_times[side].append(cpu)
        end_rejects = arms.count_rejects()
        timed = settings["rounds"] * settings["steps"]
        rejects = {
            "ours": end_rejects[0] - start_rejects[0],
            "original": end_rejects[1] - start_rejects[1],
        }
        figures = {side: summarise(t) for side, t in times.items()}
        cpu_figures = {side: summarise(t) for side, t in cpu_times.items()}
        ratio = {
            "best": figures["original"]["best_s"] / figures["ours"]["best_s"],
            "median": figures["original"]["median_s"] / figures["ours"]["median_s"],
        }
        cpu_ratio = {
            "best": cpu_figures["original"]["best_s"] / cpu_figures["ours"]["best_s"],
            "median": cpu_figures["original"]["median_s"] / cpu_figures["ours"]["median_s"],
        }
        print()
        print(
            "ms per step, best [median] over the rounds: wall clock, and the process's CPU "
            "time (all threads; steadier on a shared machine)"
        )
        print(f"  {'arm':<12}{'wall ms/step':>22}{'CPU ms/step':>22}{'rejected':>12}")
        for side in sides:
            print(
                f"  {side:<12}{fmt(figures[side]):>22}{fmt(cpu_figures[side]):>22}"
                f"{f'{rejects[side]}/{timed}':>12}"
            )
        print(
            f"  ratio (original / ours): {ratio['best']:.2f}x [{ratio['median']:.2f}x] "
            f"on {info['device_name']}; CPU time {cpu_ratio['best']:.2f}x "
            f"[{cpu_ratio['median']:.2f}x]; above 1: ours is faster"
        )

        profiles: dict[str, Any] = {}
        if args.profile:
            arms.original.label = torch.profiler.record_function
            print()
            print(f"profile: {args.profile} step(s) per arm (torch.profiler, self CPU time)")
            for side, one in sides.items():
                profiles[side] = profile_arm(one, args.profile, sync, device)
                print_profile(side, profiles[side])
            arms.original.label = _no_label

    if args.json is not None:
        record = {
            "machine": info,
            "settings": settings,
            "kl": {"phase": arms.kl_phase, "ceiling": arms.kl_ceiling},
            "check": check,
            "times_s": times,
            "cpu_times_s": cpu_times,
            "ours": figures["ours"],
            "original": figures["original"],
            "ratio": ratio,
            "cpu": cpu_figures,
            "cpu_ratio": cpu_ratio,
            "rejects": rejects,
            "timed_steps": timed,
            "profile": profiles,
        }
        _machine.write_json(args.json, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
