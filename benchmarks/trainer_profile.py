"""Where a default LBO-VAE training step spends its time on the CPU, part by part.

The run is the trainer's default: ``Run(TrainConfig(device="cpu"))`` builds the
models, the optimizers, the goal table, the schedulers and the data (the
embedded procedural shapes) exactly as ``lbo-vae train`` does. The warm-up
runs `Stepper` on the epoch's batches until the calibration of the ``auto``
scales is over (the calibration trains on plain pixel MSE: a cheaper step),
and a few steps more; every timed step is then a full LBO step (goals,
``-log(min group)``, rollback check), in epoch 1 (the KL ceiling still being
discovered, which costs the step nothing). The run's schedulers stay in
epoch 1 throughout: the timing never calls ``advance_epoch``.

Three arms run interleaved, a round of consecutive steps each (a whole
cycle of the step: ``lcm(2, refresh)`` steps, 4 by default, which hold one
evaluation of the costly groups per ``refresh`` steps and the
discriminator's updates), on the trainer's batches in its seeded order: the
plain and bare arms take the same batches, the timed arm the next ones.

- **plain**: a plain beta-VAE step of the same architecture and batch, as the
  beta-VAE arm of ``benchmarks/trainer_quality.py`` trains it: an `LBOVAE`
  built from the run's `ModelConfig` and seed, AdamW at the config's ``lr``,
  the squared error summed over the pixels and averaged over the batch plus
  ``beta`` (`BETA`; the cost does not depend on it) times `kl_divergence`,
  on a sample with fresh noise; forward, backward and the optimizer step.
- **bare**: ``Stepper.__call__`` as the trainer runs it, no timer inside.
- **timed**: the same call with ``time.perf_counter`` around its parts. The
  benchmark wraps, on the run's own objects and only while this arm runs,
  what the step calls: ``Stepper.inputs`` and ``Stepper.cheap_inputs`` (the
  forward passes with the graph before the optimizer step: every group's, or
  the reconstruction's and the KL's alone; without the graph, the
  re-evaluation), ``Stepper.check`` (the re-evaluation after any other
  step: the encoder alone), inside
  it ``LBOVAE.encode``, ``LBOVAE.decode``, ``augment`` and the
  discriminator's ``forward``; ``compute`` and each goal's metric;
  ``Stepper.log_scores`` and the objective; ``torch.Tensor.backward``;
  ``Stepper._clip_gradients``; each optimizer's ``zero_grad`` and ``step``;
  ``Stepper.crossed``; each ``RollbackGuard``'s ``snapshot`` and
  ``restore_if``; the schedulers' ``observe`` and ``reject``; and
  ``Stepper._train_disc``. Each part's time is its own (the parts it calls are
  counted where they belong), so the parts add up to the step: what no
  wrapper covers (the noise draws, the permutation, the calibration check,
  the step's own Python) is the row "the step's own code".

The backward pass is one call: it is split by the forward part whose graph it
runs back through. ``--profile-pairs`` more rounds of the timed arm run under
``torch.profiler`` with a label per part; each backward operator is matched
by its autograd sequence number to the forward operator that made it, and so
to its part; the parameters' gradient accumulation (``AccumulateGrad``) is a
part of its own. The profiler's shares of the backward are applied to the
backward's timed median (the profiler's own overhead inflates small operators
more than convolutions: the split is an estimate, the backward's total is
not).

Of the backward, part runs back through groups that get no gradient: the
loss is ``-log`` of the smallest group, so every other group's gradient is
zero, yet the backward computes it. On ``5 x --profile-pairs`` more batches
the step's forward runs twice (same noise, same random draws) and the
backward of its loss is timed against that of the bottleneck group's ``-log``
score alone (an `LBOObjective` over that group); the two VAE gradients are
compared (they are the same) and nothing is stepped.

The table gives, per part, the median over the rounds of its milliseconds
per step (a round's time over its steps), its share of the timed step and its multiple of
the plain step; then the step against the plain step (bare arm over plain
arm, and the timers' own overhead, timed over bare), the parts summed by
component (the re-evaluation, the discriminator all told, the decoder all
told, the backward's zeros, the rollback, ...), and
each goal group's metrics (forward, backward, re-evaluation). ``--threads 1,2`` profiles each
thread count in turn, each on a fresh run of the same seed, and puts them
side by side.

Usage:
    python benchmarks/trainer_profile.py [--steps N] [--threads T[,T...]]
        [--profile-pairs P] [--warmup W] [--quick] [--json PATH] [--md PATH]

Run it against the source tree with ``PYTHONPATH=. python benchmarks/trainer_profile.py``
from the repository root, or with ``constraint-sched[trainer]`` installed.
The committed tables (``benchmarks/results/trainer_profile.md``, the command
and the machine on top; the trainer page's design notes include it) come from::

    python benchmarks/trainer_profile.py --threads 1,2 --md benchmarks/results/trainer_profile.md

with ``--json benchmarks/results/trainer_profile.json`` for every figure.

``--quick`` profiles 4 steps of a tiny configuration (16x16 images, batch 16,
a narrow model): a smoke test of the script, not a measurement. The timers
need operators that finish when they return: the CPU only. On a CPU that
other work shares, ``--threads 1`` gives the steadiest figures: torch's
intra-op threads wait for each other at every operator. Nothing here asserts
on a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import shlex
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import _machine
import attrs
import torch

from constraint_sched.adapters.lbo_vae import (
    Run,
    TrainConfig,
    _step,
    _train,
    build,
    compute,
    group_tree,
)
from constraint_sched.adapters.lbo_vae._metrics import kl_divergence
from constraint_sched.adapters.torch import LBOObjective

BETA = 0.3
"""The plain beta-VAE's KL weight (about the KL-matched one of the quality benchmark)."""

STEPS = 40
"""Timed steps per arm by default (10 rounds of the default 4 steps)."""
PROFILE_PAIRS = 2
"""Rounds of steps profiled by default for the split of the backward pass."""
ZERO_REPS = 5
"""Batches per profiled pair on which the backward of the bottleneck group alone is timed."""
EXTRA_WARMUP = 4
"""Steps after the calibration before the timing."""

QUICK: dict[str, Any] = {
    "image_size": 16,
    "images": 64,
    "heldout": 16,
    "batch_size": 16,
    "width": 4,
    "disc_width": 4,
    "core_dims": 2,
    "detail_dims": 2,
    "calibration_steps": 2,
}
"""``--quick``'s tiny configuration (a smoke test of the script, not a result)."""
QUICK_STEPS = 4
QUICK_WARMUP = 1
QUICK_PROFILE_PAIRS = 1

FORWARD, UPDATE, REEVAL = "forward, with the graph", "backward and update", "re-evaluation"
ROLLBACK, SCHEDULERS, DISC = "rollback", "schedulers", "discriminator update"
STEP = "the step's own code"
PHASES = (FORWARD, UPDATE, REEVAL, ROLLBACK, SCHEDULERS, DISC, STEP)
"""The phases of a step, in the table's order."""

ENCODER = "encoder (x)"
DECODER = "decoder (recon; swap; core only and 2 perturbed)"
AUGMENTED = "augmented copy (augment + encoder)"
DISCRIMINATOR = "discriminator (recon + swap)"
GOALS = "goals' metrics"
OBJECTIVE = "scores and objective"
GLUE = "tensor glue (sample, split, join, cat)"
BACKWARD = "backward"
CLIP = "gradient clipping"
ADAMW = "AdamW (zero_grad + step)"
CROSSED = "barrier check (crossed)"
SNAPSHOT = "snapshot: VAE + AdamW"
RESTORE = "restore_if: VAE + AdamW"
DISC_GUARD = "snapshot + restore_if: discriminator + AdamW"
OBSERVE = "observe + reject"
DISC_FORWARD = "forward (real + fake)"
DISC_BACKWARD = "backward"
DISC_REST = "loss and glue"
OWN = "noise, permutation, calibration check, Python"

BACKWARD_THROUGH = {
    "decoder": "backward through the decoder",
    "encoder": "backward through the encoder (x and augmented)",
    "discriminator": "backward through the discriminator",
    "goals": "backward through the goals' metrics",
    "glue": "backward through the scores, objective and glue",
    "parameters": "parameter gradients (AccumulateGrad)",
}
"""The rows the backward pass is split into, by the forward part it runs back through."""

ROWS: tuple[tuple[str, str], ...] = (
    (FORWARD, ENCODER),
    (FORWARD, DECODER),
    (FORWARD, AUGMENTED),
    (FORWARD, DISCRIMINATOR),
    (FORWARD, GOALS),
    (FORWARD, OBJECTIVE),
    (FORWARD, GLUE),
    (UPDATE, BACKWARD),
    (UPDATE, CLIP),
    (UPDATE, ADAMW),
    (REEVAL, ENCODER),
    (REEVAL, DECODER),
    (REEVAL, AUGMENTED),
    (REEVAL, DISCRIMINATOR),
    (REEVAL, GOALS),
    (REEVAL, OBJECTIVE),
    (REEVAL, CROSSED),
    (REEVAL, GLUE),
    (ROLLBACK, SNAPSHOT),
    (ROLLBACK, RESTORE),
    (ROLLBACK, DISC_GUARD),
    (SCHEDULERS, OBSERVE),
    (DISC, DISC_FORWARD),
    (DISC, DISC_BACKWARD),
    (DISC, ADAMW),
    (DISC, DISC_REST),
    (STEP, OWN),
)
"""Every part the clock times, in the table's order (the backward split replaces BACKWARD)."""

PLAIN_PARTS = ("forward (encode, sample, decode, loss)", "backward", "AdamW (zero_grad + step)")

Key = tuple[str, str, str]
"""A clock's key: (phase, part, detail); the detail names a goal, else is empty."""


# -- the clock -----------------------------------------------------------------------------------


class Clock:
    """Wall time per part by ``time.perf_counter``, each part without the parts it contains.

    A part is a `Key`. Parts nest: entering one inside another stops the
    outer one's own clock until the inner one ends, so the parts' times add up
    to the outermost part's. With ``record`` set, each part is also a
    ``torch.profiler.record_function`` region named `label`.
    """

    def __init__(self) -> None:
        self.totals: dict[Key, float] = defaultdict(float)
        self.calls: dict[Key, int] = defaultdict(int)
        self._stack: list[list[float]] = []  # [start, time in the parts inside]
        self.phases: list[str] = []
        self.record = False

    @staticmethod
    def label(key: Key) -> str:
        """The profiler label of a part: ``tp|phase|part|detail``."""
        return "tp|" + "|".join(key)

    @property
    def phase(self) -> str:
        """The phase the step is in (the innermost one entered), `STEP` outside any."""
        return self.phases[-1] if self.phases else STEP

    @contextlib.contextmanager
    def part(self, key: Key) -> Iterator[None]:
        """Time ``key`` for the duration of the block (its own time only)."""
        region = (
            torch.profiler.record_function(self.label(key))
            if self.record
            else contextlib.nullcontext()
        )
        with region:
            frame = [time.perf_counter(), 0.0]
            self._stack.append(frame)
            try:
                yield
            finally:
                elapsed = time.perf_counter() - frame[0]
                self._stack.pop()
                self.totals[key] += elapsed - frame[1]
                self.calls[key] += 1
                if self._stack:
                    self._stack[-1][1] += elapsed

    @contextlib.contextmanager
    def in_phase(self, phase: str) -> Iterator[None]:
        """The parts entered in the block belong to ``phase``."""
        self.phases.append(phase)
        try:
            yield
        finally:
            self.phases.pop()

    def take(self) -> tuple[dict[Key, float], dict[Key, int]]:
        """The times and calls so far, and start afresh."""
        totals, calls = dict(self.totals), dict(self.calls)
        self.totals.clear()
        self.calls.clear()
        return totals, calls


def _forward_phase() -> str:
    return FORWARD if torch.is_grad_enabled() else REEVAL


class Timers:
    """The clock's wrappers around what a `Stepper` calls, installed and removed on demand.

    Every wrapper is set on the run's own objects (instance attributes, two
    module globals of ``_step``, and ``torch.Tensor.backward``) and removed by
    `remove`, which leaves the objects as they were. An attribute a future
    `Stepper` no longer has is skipped: its time then shows as the step's own.
    """

    def __init__(self, run: Run, clock: Clock) -> None:
        self.run, self.clock = run, clock
        self.stepper = run.stepper
        self._undo: list[Callable[[], None]] = []
        self._encodes = 0
        self.skipped: list[str] = []

    # -- installing -----------------------------------------------------------------

    def _set(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        if not hasattr(owner, name):
            self.skipped.append(f"{type(owner).__name__}.{name}")
            return
        own = name in getattr(owner, "__dict__", {})
        original = getattr(owner, name)
        setattr(owner, name, make(original))

        def undo() -> None:
            if own:  # a module's global, a class's method, an attribute of the instance's own
                setattr(owner, name, original)
            else:  # the instance's class has it: drop the wrapper, the method shows through
                delattr(owner, name)

        self._undo.append(undo)

    def _timed(self, key: Callable[[], Key]) -> Callable[[Any], Any]:
        clock = self.clock

        def make(original: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with clock.part(key()):
                    return original(*args, **kwargs)

            return wrapper

        return make

    def install(self) -> None:
        """Wrap every part of the step."""
        clock, stepper, run = self.clock, self.stepper, self.run

        def inputs(original: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                self._encodes = 0
                phase = _forward_phase()
                with clock.in_phase(phase), clock.part((phase, GLUE, "")):
                    return original(*args, **kwargs)

            return wrapper

        def encode(original: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                self._encodes += 1
                part = ENCODER if self._encodes == 1 else AUGMENTED
                with clock.part((clock.phase, part, "")):
                    return original(*args, **kwargs)

            return wrapper

        def disc_forward(original: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                phase = clock.phase
                part = DISC_FORWARD if phase == DISC else DISCRIMINATOR
                with clock.part((phase, part, "")):
                    return original(*args, **kwargs)

            return wrapper

        def compute(original: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                phase = _forward_phase()
                with clock.in_phase(phase), clock.part((phase, GOALS, "")):
                    return original(*args, **kwargs)

            return wrapper

        def backward(original: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                phase = clock.phase
                key = (DISC, DISC_BACKWARD, "") if phase == DISC else (UPDATE, BACKWARD, "")
                with clock.part(key):
                    return original(*args, **kwargs)

            return wrapper

        def train_disc(original: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with clock.in_phase(DISC), clock.part((DISC, DISC_REST, "")):
                    return original(*args, **kwargs)

            return wrapper

        def metric(goal: Any) -> Any:
            name = goal.name

            def wrapper(inputs: Any) -> Any:
                with clock.part((clock.phase, GOALS, name)):
                    return goal.metric(inputs)

            return attrs.evolve(goal, metric=wrapper)

        objective = self._timed(lambda: (_forward_phase(), OBJECTIVE, ""))
        self._set(stepper, "inputs", inputs)
        self._set(stepper, "cheap_inputs", inputs)
        self._set(run.vae, "encode", encode)
        self._set(run.vae, "decode", self._timed(lambda: (clock.phase, DECODER, "")))
        self._set(_step, "augment", self._timed(lambda: (clock.phase, AUGMENTED, "")))
        self._set(run.disc, "forward", disc_forward)
        self._set(_step, "compute", compute)
        self._set(stepper, "log_scores", objective)
        self._set(stepper, "objective", lambda original: TimedObjective(original, objective))
        self._set(stepper, "crossed", self._timed(lambda: (REEVAL, CROSSED, "")))

        def check(original: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                self._encodes = 0
                with clock.in_phase(REEVAL), clock.part((REEVAL, GLUE, "")):
                    return original(*args, **kwargs)

            return wrapper

        self._set(stepper, "check", check)
        self._set(torch.Tensor, "backward", backward)
        self._set(stepper, "_clip_gradients", self._timed(lambda: (UPDATE, CLIP, "")))
        for opt, phase in ((run.optimizer, UPDATE), (run.disc_optimizer, DISC)):
            for name in ("zero_grad", "step"):
                self._set(opt, name, self._timed(lambda phase=phase: (phase, ADAMW, "")))  # type: ignore[misc]
        for name, part in (("snapshot", SNAPSHOT), ("restore_if", RESTORE)):
            self._set(stepper.guard, name, self._timed(lambda part=part: (ROLLBACK, part, "")))  # type: ignore[misc]
            self._set(stepper.disc_guard, name, self._timed(lambda: (ROLLBACK, DISC_GUARD, "")))
        for name in ("observe", "reject"):
            self._set(stepper.schedulers, name, self._timed(lambda: (SCHEDULERS, OBSERVE, "")))
        self._set(stepper, "_train_disc", train_disc)
        goals = stepper.goals
        stepper.goals = tuple(metric(goal) for goal in goals)

        def restore_goals() -> None:
            stepper.goals = goals

        self._undo.append(restore_goals)

    def remove(self) -> None:
        """Unwrap everything `install` wrapped."""
        while self._undo:
            self._undo.pop()()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The wrappers, for the duration of the block."""
        self.install()
        try:
            yield
        finally:
            self.remove()


# -- the arms ------------------------------------------------------------------------------------


class Plain:
    """The plain beta-VAE step of the quality benchmark, on the run's architecture and seed."""

    def __init__(self, run: Run) -> None:
        config = run.config
        _train._seed_everything(config.seed)
        vae, _ = build(_train.model_config(config, int(run.data.images.shape[1])))
        self.vae = vae.to(run.device)
        self.vae.train()
        self.optimizer = torch.optim.AdamW(self.vae.parameters(), lr=config.lr)
        self.parameters = sum(p.numel() for p in self.vae.parameters())

    def step(self, x: torch.Tensor, times: list[float]) -> None:
        """One step on ``x``; adds its parts' seconds to ``times`` (`PLAIN_PARTS`)."""
        vae = self.vae
        t0 = time.perf_counter()
        mu, logvar = vae.encode(x)
        recon = vae.decode(vae.reparameterize(mu, logvar, None))
        sse = (recon - x).square().flatten(1).sum(dim=1).mean()
        loss = sse + BETA * kl_divergence(mu, logvar)
        t1 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        self.optimizer.step()
        t3 = time.perf_counter()
        times[0] += t1 - t0
        times[1] += t2 - t1
        times[2] += t3 - t2


class Batches:
    """The run's batches in the trainer's seeded order, epoch after epoch (`epoch_batches`)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.queue: list[torch.Tensor] = []

    def next(self) -> torch.Tensor:
        """The next batch, on the run's device."""
        run = self.run
        if not self.queue:
            self.queue = _train.epoch_batches(
                len(run.data.images), run.config.batch_size, run.generator
            )
        return run.data.images[self.queue.pop(0)].to(run.device)


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The garbage collector off (after a collection) for the duration of the block."""
    gc.collect(1)
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# -- one profile ---------------------------------------------------------------------------------


def warm_up(run: Run, batches: Batches, extra: int) -> int:
    """Steps until the calibration is over, then ``extra`` more; how many it took."""
    steps = 0
    limit = 10 * run.config.calibration_steps + 100
    while run.stepper.calibrating():
        run.stepper(batches.next())
        steps += 1
        if steps > limit:
            raise RuntimeError(f"the calibration did not end in {limit} steps")
    for _ in range(extra):
        run.stepper(batches.next())
    return steps + extra


def round_steps(config: TrainConfig) -> int:
    """Steps per timed round: a whole cycle of the discriminator's update and of ``refresh``."""
    return math.lcm(2, config.refresh)


def time_pairs(
    run: Run, plain: Plain, timers: Timers, clock: Clock, batches: Batches, pairs: int
) -> dict[str, Any]:
    """``pairs`` rounds of `round_steps` steps per arm, interleaved: the seconds of each.

    Returns:
        ``per`` (steps per round), ``plain`` and ``bare`` (seconds per round),
        ``plain_parts`` (per round, `PLAIN_PARTS`), ``timed`` (seconds per
        round) and ``parts`` (per round, ``{key: seconds}``), ``calls`` (the
        parts' calls over all rounds) and
        the rejected steps of the trainer's arms.
    """
    stepper = run.stepper
    per = round_steps(run.config)
    out: dict[str, Any] = {"plain": [], "plain_parts": [], "bare": [], "timed": [], "parts": []}
    out["per"] = per
    calls: dict[Key, int] = defaultdict(int)
    flags: list[torch.Tensor] = []
    for _ in range(pairs):
        xs = [batches.next() for _ in range(per)]
        with no_gc():
            parts = [0.0] * len(PLAIN_PARTS)
            start = time.perf_counter()
            for x in xs:
                plain.step(x, parts)
            out["plain"].append(time.perf_counter() - start)
            out["plain_parts"].append(parts)
        with no_gc():
            start = time.perf_counter()
            for x in xs:
                flags.append(stepper(x).rejected)
            out["bare"].append(time.perf_counter() - start)
        xs = [batches.next() for _ in range(per)]
        with no_gc(), timers.installed():
            clock.take()
            start = time.perf_counter()
            for x in xs:
                with clock.part((STEP, OWN, "")):
                    flags.append(stepper(x).rejected)
            out["timed"].append(time.perf_counter() - start)
            totals, counts = clock.take()
        out["parts"].append(totals)
        for key, n in counts.items():
            calls[key] += n
    out["calls"] = dict(calls)
    out["rejected"] = int(torch.stack(flags).sum()) if flags else 0
    return out


def backward_split(
    run: Run, timers: Timers, clock: Clock, batches: Batches, pairs: int
) -> dict[str, Any]:
    """The backward pass's shares by the forward part it runs back through (`torch.profiler`).

    Returns:
        ``shares`` (by `BACKWARD_THROUGH` key), ``goal_shares`` (the goals'
        part by goal), and the profiled milliseconds they come from.
    """
    from torch.profiler import ProfilerActivity, profile

    stepper = run.stepper
    clock.record = True
    try:
        with timers.installed(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(round_steps(run.config) * pairs):
                with clock.part((STEP, OWN, "")):
                    stepper(batches.next())
        clock.take()
    finally:
        clock.record = False
    events = prof.events()

    def region(event: Any) -> str | None:
        while event is not None:
            if event.name.startswith("tp|"):
                return str(event.name)
            event = event.cpu_parent
        return None

    made_in: dict[int, str] = {}  # autograd sequence number -> the forward part's label
    backward_nodes = []
    vae_backward = Clock.label((UPDATE, BACKWARD, ""))
    for event in events:
        if event.name.startswith("autograd::engine::evaluate_function"):
            if region(event) == vae_backward:
                backward_nodes.append(event)
        elif event.sequence_nr >= 0 and event.name.startswith("aten::"):
            label = region(event)
            if label is not None and f"|{BACKWARD}|" not in label:
                made_in.setdefault(event.sequence_nr, label)
    through: dict[str, float] = defaultdict(float)
    goals: dict[str, float] = defaultdict(float)
    for event in backward_nodes:
        us = float(event.cpu_time_total)
        if "AccumulateGrad" in event.name:
            through["parameters"] += us
            continue
        label = made_in.get(event.sequence_nr)
        part = label.split("|")[2:4] if label else ["", ""]
        if part[0] == DECODER:
            through["decoder"] += us
        elif part[0] in (ENCODER, AUGMENTED):
            through["encoder"] += us
        elif part[0] == DISCRIMINATOR:
            through["discriminator"] += us
        elif part[0] == GOALS:
            through["goals"] += us
            if part[1]:
                goals[part[1]] += us
        else:
            through["glue"] += us
    total = sum(through.values())
    return {
        "profiled_steps": round_steps(run.config) * pairs,
        "profiled_backward_ms_per_step": total / 1e3 / (round_steps(run.config) * pairs),
        "shares": {k: through.get(k, 0.0) / total if total else 0.0 for k in BACKWARD_THROUGH},
        "goal_shares": {k: v / total if total else 0.0 for k, v in goals.items()},  # by goal
    }


def zero_gradient_backward(run: Run, batches: Batches, reps: int) -> dict[str, Any]:
    """The backward of the step's loss against that of its bottleneck group's alone.

    The loss is ``-log`` of the smallest group: every other group's gradient
    is zero, yet the backward pass runs back through all of them. Per batch,
    the step's forward (`Stepper.inputs`, `compute`, the log scores) runs
    twice with the same noise and random draws; one backward is of the step's loss, the other
    of ``-log`` of the bottleneck group alone (an `LBOObjective` over that
    group), in alternating order, the VAE's gradients compared. Nothing is
    stepped: the run's weights do not move.

    Returns:
        ``full_ms`` and ``bottleneck_ms`` (medians), ``bottlenecks`` (the
        group of each batch) and ``max_grad_diff`` (the largest difference
        between the two gradients over every batch and parameter).
    """
    stepper, vae = run.stepper, run.vae
    tree = group_tree(run.goals)
    full: list[float] = []
    alone: list[float] = []
    names: list[str] = []
    diff = 0.0
    for i in range(reps):
        x = batches.next()
        noise, perturb = vae.draw_noise(x), vae.draw_noise(x)
        perm = torch.roll(torch.arange(x.shape[0], device=x.device), 1)
        stepper.disc.eval()

        seed = int(torch.randint(2**31, ()))

        def scores(
            seed: int = seed,
            x: torch.Tensor = x,
            noise: torch.Tensor = noise,
            perturb: torch.Tensor = perturb,
            perm: torch.Tensor = perm,
        ) -> dict[str, torch.Tensor]:
            torch.manual_seed(seed)  # the augmented copy's draws: the same in both forwards
            inputs = stepper.inputs(x, noise, perturb, perm)
            return stepper.log_scores(compute(stepper.goals, inputs))

        result = stepper.objective(scores(), log=True)
        name = stepper.group_names[int(result.bottleneck)]
        names.append(name)
        losses = {"full": result.loss, "alone": None}
        grads: dict[str, list[torch.Tensor]] = {}
        for arm in ("full", "alone") if i % 2 == 0 else ("alone", "full"):
            loss = losses[arm]
            if loss is None:
                loss = LBOObjective({name: tree[name]})(scores(), log=True).loss
            stepper.optimizer.zero_grad(set_to_none=True)
            with no_gc():
                start = time.perf_counter()
                loss.backward()
                (full if arm == "full" else alone).append(time.perf_counter() - start)
            grads[arm] = [
                torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in vae.parameters()
            ]
        for a, b in zip(grads["full"], grads["alone"], strict=True):
            diff = max(diff, float((a - b).abs().max()))
    stepper.optimizer.zero_grad(set_to_none=True)
    run.disc_optimizer.zero_grad(set_to_none=True)
    return {
        "reps": reps,
        "full_ms": statistics.median(full) * 1e3,
        "bottleneck_ms": statistics.median(alone) * 1e3,
        "bottlenecks": names,
        "max_grad_diff": diff,
    }


class TimedObjective:
    """An `LBOObjective` whose calls (the loss and `group_loss`) are timed by ``make``'s wrapper."""

    def __init__(self, original: Any, make: Callable[[Any], Any]) -> None:
        self._original = original
        self._call = make(original)
        self.group_loss = make(original.group_loss)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The objective's loss, timed."""
        return self._call(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def median_ms(values: Sequence[float], per: int = 2) -> float:
    """The median of per-round seconds, as milliseconds per step (a round of ``per`` steps)."""
    return statistics.median(values) * 1e3 / per if values else 0.0


def summarise(
    raw: dict[str, Any],
    split: dict[str, Any] | None,
    zeros: dict[str, Any] | None,
    goal_groups: list[str],
) -> dict[str, Any]:
    """The table's figures from the pairs: every part's median ms per step, and the totals."""
    per_pair = raw["parts"]
    pairs = len(per_pair)
    per = int(raw.get("per", 2))
    row_keys = [(phase, part) for phase, part in ROWS]

    known = set(row_keys)

    def row_of(phase: str, part: str) -> tuple[str, str]:
        # a part no row names (a wrapper called where it was not expected): the step's own
        return (phase, part) if (phase, part) in known else (STEP, OWN)

    series: dict[tuple[str, str], list[float]] = {key: [0.0] * pairs for key in row_keys}
    for i, totals in enumerate(per_pair):
        for (phase, part, _), seconds in totals.items():
            series[row_of(phase, part)][i] += seconds
        # what the clock saw in no part (between the two step calls): the step's own too
        series[(STEP, OWN)][i] += raw["timed"][i] - sum(totals.values())
    parts = []
    for phase, part in row_keys:
        ms = median_ms(per=per, values=series[(phase, part)])
        calls = sum(n for (p, q, _), n in raw["calls"].items() if (p, q) == (phase, part))
        if (phase, part) == (UPDATE, BACKWARD) and split is not None:
            for key, name in BACKWARD_THROUGH.items():
                parts.append(
                    {
                        "phase": phase,
                        "part": name,
                        "ms": ms * split["shares"][key],
                        "calls_per_step": calls / (per * pairs),
                        "estimated": True,
                    }
                )
            continue
        parts.append(
            {
                "phase": phase,
                "part": part,
                "ms": ms,
                "calls_per_step": calls / (per * pairs),
                "estimated": False,
            }
        )
    step_ms = median_ms(per=per, values=raw["timed"])
    plain_ms = median_ms(per=per, values=raw["plain"])
    bare_ms = median_ms(per=per, values=raw["bare"])
    backward_ms = median_ms(per=per, values=series[(UPDATE, BACKWARD)])
    for row in parts:
        row["share"] = row["ms"] / step_ms if step_ms else 0.0
        row["x_plain"] = row["ms"] / plain_ms if plain_ms else 0.0
    phases = {phase: sum(r["ms"] for r in parts if r["phase"] == phase) for phase in PHASES}
    plain_parts = {
        name: median_ms(per=per, values=[p[i] for p in raw["plain_parts"]])
        for i, name in enumerate(PLAIN_PARTS)
    }

    def ms_of(phase: str, part: str) -> float:
        return sum(r["ms"] for r in parts if r["phase"] == phase and r["part"] == part)

    def goal_ms(phase: str, names: set[str]) -> float:
        return median_ms(
            per=per,
            values=[
                sum(v for (p, q, d), v in totals.items() if (p, q) == (phase, GOALS) and d in names)
                for totals in per_pair
            ],
        )

    def goal_backward(names: set[str]) -> float | None:
        if split is None:
            return None
        return backward_ms * sum(split["goal_shares"].get(n, 0.0) for n in names)

    goals = {
        name: {
            "group": "/".join(path),
            "forward_ms": goal_ms(FORWARD, {name}),
            "backward_ms": goal_backward({name}),
            "reevaluation_ms": goal_ms(REEVAL, {name}),
        }
        for name, path in raw["paths"].items()
    }
    groups: dict[str, dict[str, Any]] = {}
    for group in goal_groups:
        names = {n for n, path in raw["paths"].items() if path[0] == group}
        ordered = [n for n in raw["paths"] if n in names]
        subgroups = list(
            dict.fromkeys(raw["paths"][n][1] for n in ordered if len(raw["paths"][n]) > 1)
        )
        groups[group] = {
            "goals": ordered,
            "shown": ", ".join(ordered)
            if len(ordered) <= 4 or not subgroups
            else f"{len(ordered)} goals in {', '.join(subgroups)}",
            "forward_ms": goal_ms(FORWARD, names),
            "backward_ms": goal_backward(names),
            "reevaluation_ms": goal_ms(REEVAL, names),
        }

    def through(key: str) -> float:
        return backward_ms * float(split["shares"][key]) if split else 0.0

    decoder_all = ms_of(FORWARD, DECODER) + ms_of(REEVAL, DECODER) + through("decoder")
    disc_all = (
        ms_of(FORWARD, DISCRIMINATOR)
        + ms_of(REEVAL, DISCRIMINATOR)
        + through("discriminator")
        + phases[DISC]
        + ms_of(ROLLBACK, DISC_GUARD)
        + sum(
            (g["forward_ms"] + g["reevaluation_ms"] + (g["backward_ms"] or 0.0))
            for name, g in groups.items()
            if name == "realism"
        )
    )
    goals_all = ms_of(FORWARD, GOALS) + ms_of(REEVAL, GOALS) + through("goals")
    components = {
        "the re-evaluation after the optimizer step (no graph; the encoder alone)": phases[REEVAL],
        "the discriminator, all told (in the goals, its update, its rollback)": disc_all,
        "the decoder, all told (its decodes with the graph, their backward)": decoder_all,
        "the goals' metrics, all told (with the graph, their backward, again)": goals_all,
        "a full forward's backward through the groups other than the bottleneck (zero gradient; "
        "the step's backward skips it)": (
            zeros["full_ms"] - zeros["bottleneck_ms"] if zeros else 0.0
        ),
        "the rollback's snapshots and restores": phases[ROLLBACK],
        "the schedulers' bookkeeping": phases[SCHEDULERS],
    }
    return {
        "pairs": pairs,
        "per": per,
        "step_ms": step_ms,
        "bare_step_ms": bare_ms,
        "plain_step_ms": plain_ms,
        "ratio_bare_over_plain": bare_ms / plain_ms if plain_ms else 0.0,
        "ratio_timed_over_plain": step_ms / plain_ms if plain_ms else 0.0,
        "timer_overhead": step_ms / bare_ms - 1 if bare_ms else 0.0,
        "parts": parts,
        "parts_sum_ms": sum(r["ms"] for r in parts),
        "phases_ms": phases,
        "plain_parts_ms": plain_parts,
        "backward_ms": backward_ms,
        "goal_groups": groups,
        "goals_ms": goals,
        "components_ms": components,
    }


def profile_once(
    config: TrainConfig, steps: int, warmup: int, profile_pairs: int, out: Path
) -> dict[str, Any]:
    """A fresh run of ``config``: warm up, time ``steps`` steps per arm, split the backward."""
    run = Run(config, out, print_=lambda _: None, progress=False)
    batches = Batches(run)
    warmed = warm_up(run, batches, warmup)
    plain = Plain(run)
    clock = Clock()
    timers = Timers(run, clock)
    raw = time_pairs(run, plain, timers, clock, batches, max(1, steps // round_steps(config)))
    raw["paths"] = {g.name: tuple(g.group) for g in run.goals}
    split = backward_split(run, timers, clock, batches, profile_pairs) if profile_pairs else None
    zeros = (
        zero_gradient_backward(run, batches, ZERO_REPS * profile_pairs) if profile_pairs else None
    )
    groups = list(dict.fromkeys(g.group[0] for g in run.goals))
    figures = summarise(raw, split, zeros, groups)
    return {
        "threads": torch.get_num_threads(),
        "warmup_steps": warmed,
        "kl_phase": run.collection["kl"].phase.name,
        "vae_parameters": sum(p.numel() for p in run.vae.parameters()),
        "disc_parameters": sum(p.numel() for p in run.disc.parameters()),
        "goals": len(run.goals),
        "skipped_wrappers": timers.skipped,
        "backward_split": split,
        "zero_gradient_backward": zeros,
        "rejected": raw["rejected"],
        "times_s": {k: raw[k] for k in ("plain", "bare", "timed")},
        **figures,
    }


# -- reporting -----------------------------------------------------------------------------------


def _x(value: float) -> str:
    return f"{value:.2f}x"


def part_name(row: dict[str, Any]) -> str:
    """A part's name in the table (``~`` marks the backward's estimated split)."""
    return f"~ {row['part']}" if row["estimated"] else row["part"]


def main_table(runs: list[dict[str, Any]]) -> list[str]:
    """The parts, one column group per thread count: ms per step, share, multiple of plain."""
    head = "| phase | part |"
    rule = "|:---|:---|"
    for run in runs:
        t = run["threads"]
        head += f" ms ({t} thr) | share | x plain |"
        rule += "---:|---:|---:|"
    lines = [head, rule]
    last = None
    for i, row in enumerate(runs[0]["parts"]):
        phase = row["phase"] if row["phase"] != last else ""
        last = row["phase"]
        line = f"| {phase} | {part_name(row)} |"
        for run in runs:
            r = run["parts"][i]
            line += f" {r['ms']:.2f} | {r['share']:.1%} | {_x(r['x_plain'])} |"
        lines.append(line)
    line = "| **step** | **sum of the parts** |"
    for run in runs:
        line += (
            f" **{run['parts_sum_ms']:.1f}** | {run['parts_sum_ms'] / run['step_ms']:.1%} | "
            f"**{_x(run['parts_sum_ms'] / run['plain_step_ms'])}** |"
        )
    lines.append(line)
    for label, key in (
        ("timed step (median)", "step_ms"),
        ("step without timers (median)", "bare_step_ms"),
        ("plain beta-VAE step (median)", "plain_step_ms"),
    ):
        line = f"| | {label} |"
        for run in runs:
            ms = run[key]
            line += f" {ms:.1f} | {ms / run['step_ms']:.1%} | {_x(ms / run['plain_step_ms'])} |"
        lines.append(line)
    return lines


def phase_table(runs: list[dict[str, Any]]) -> list[str]:
    """The phases' subtotals and the components summed across phases."""
    head = "| what | " + " | ".join(f"ms ({r['threads']} thr) | x plain" for r in runs) + " |"
    rule = "|:---|" + "---:|---:|" * len(runs)
    lines = [head, rule]
    for phase in PHASES:
        cells = " | ".join(
            f"{r['phases_ms'][phase]:.1f} | {_x(r['phases_ms'][phase] / r['plain_step_ms'])}"
            for r in runs
        )
        lines.append(f"| phase: {phase} | {cells} |")
    for name in runs[0]["components_ms"]:
        cells = " | ".join(
            f"{r['components_ms'][name]:.1f} | {_x(r['components_ms'][name] / r['plain_step_ms'])}"
            for r in runs
        )
        lines.append(f"| {name} | {cells} |")
    return lines


def goals_table(runs: list[dict[str, Any]]) -> list[str]:
    """Each goal group's metrics: forward, backward (estimated), re-evaluation, in ms per step."""
    head = (
        "| group | goals | "
        + " | ".join(f"fwd / ~bwd / re-eval ms ({r['threads']} thr) | x plain" for r in runs)
        + " |"
    )
    rule = "|:---|:---|" + "---:|---:|" * len(runs)
    lines = [head, rule]
    for group, info in runs[0]["goal_groups"].items():
        line = f"| {group} | {info['shown']} |"
        for run in runs:
            g = run["goal_groups"][group]
            bwd = g["backward_ms"]
            total = g["forward_ms"] + g["reevaluation_ms"] + (bwd or 0.0)
            line += (
                f" {g['forward_ms']:.2f} / {'-' if bwd is None else f'{bwd:.2f}'} / "
                f"{g['reevaluation_ms']:.2f} | {_x(total / run['plain_step_ms'])} |"
            )
        lines.append(line)
    return lines


def costliest_goals(runs: list[dict[str, Any]], top: int = 6) -> list[str]:
    """The goals that cost the most, all told (forward, backward, re-evaluation), per run."""
    lines = []
    for run in runs:
        totals = {
            name: g["forward_ms"] + g["reevaluation_ms"] + (g["backward_ms"] or 0.0)
            for name, g in run["goals_ms"].items()
        }
        ranked = sorted(totals, key=totals.__getitem__, reverse=True)[:top]
        shown = ", ".join(
            f"{name} {totals[name]:.1f} ms ({_x(totals[name] / run['plain_step_ms'])})"
            for name in ranked
        )
        lines.append(f"{run['threads']} thread(s), the costliest goals all told: {shown}")
    return lines


def plain_table(runs: list[dict[str, Any]]) -> list[str]:
    """The plain beta-VAE step's own parts."""
    head = "| plain beta-VAE step | " + " | ".join(f"ms ({r['threads']} thr)" for r in runs) + " |"
    lines = [head, "|:---|" + "---:|" * len(runs)]
    for name in PLAIN_PARTS:
        lines.append(
            f"| {name} | " + " | ".join(f"{r['plain_parts_ms'][name]:.2f}" for r in runs) + " |"
        )
    return lines


def ratio_lines(runs: list[dict[str, Any]]) -> list[str]:
    """The step against the plain step, the timers' overhead, the backward's zeros."""
    lines = []
    for r in runs:
        line = (
            f"{r['threads']} thread(s): a step (no timers) is "
            f"{r['ratio_bare_over_plain']:.2f}x a plain beta-VAE step ({r['bare_step_ms']:.1f} "
            f"against {r['plain_step_ms']:.1f} ms, medians over {r['pairs']} rounds of "
            f"{r.get('per', 2)} steps); "
            f"the timers add {r['timer_overhead']:+.1%}; "
            f"{r['rejected']} of {2 * r.get('per', 2) * r['pairs']} trainer steps rejected"
        )
        zeros = r["zero_gradient_backward"]
        if zeros:
            counts = ", ".join(
                f"{name} {zeros['bottlenecks'].count(name)}"
                for name in dict.fromkeys(zeros["bottlenecks"])
            )
            line += (
                f". The backward of the loss takes {zeros['full_ms']:.1f} ms, that of the "
                f"bottleneck group's -log score alone {zeros['bottleneck_ms']:.1f} ms, the same "
                f"gradient (max difference {zeros['max_grad_diff']:.1e}; bottleneck of "
                f"{zeros['reps']} batches: {counts})"
            )
        lines.append(line)
    return lines


def report(record: dict[str, Any]) -> list[str]:
    """Every table and line of the report, Markdown."""
    runs = record["runs"]
    first = runs[0]
    return [
        *main_table(runs),
        "",
        *(f"- {line}" for line in ratio_lines(runs)),
        "",
        *phase_table(runs),
        "",
        *goals_table(runs),
        "",
        *(f"- {line}" for line in costliest_goals(runs)),
        "",
        *plain_table(runs),
        "",
        f"Medians over {first['pairs']} rounds of {first.get('per', 2)} steps per arm, each "
        "round's time divided by its steps (a round is a whole cycle of the discriminator's "
        "update and of `refresh`); ~: the backward pass split by the forward part it runs back "
        f"through (torch.profiler's shares over {record['profile_pairs']} more rounds, applied "
        "to the backward's timed median).",
    ]


def config_args(config: dict[str, Any]) -> str:
    """The arguments that set ``config``'s step apart from the default ``TrainConfig()``'s."""
    default = TrainConfig()
    return ", ".join(
        f"{key}={config[key]!r}"
        for key in ("recheck", "refresh")
        if key in config and config[key] != getattr(default, key)
    )


def markdown(record: dict[str, Any]) -> str:
    """The Markdown file: the command and the machine, then the report (no title: included)."""
    info = record["machine"]
    config = record["config"]
    lines = [
        f"Command: `{record['command']}`",
        "",
        f"Machine: {info['processor']}, {info['cpu_count']} CPUs, {info['platform']}; "
        f"Python {info['python']}, torch {info['torch']}, constraint_sched "
        f"{info['constraint_sched']}. Config: `TrainConfig({config_args(config)})` on the CPU, "
        "batch "
        f"{config['batch_size']} of {config['image_size']}x{config['image_size']} shapes, "
        f"{record['runs'][0]['goals']} goals; timed in epoch 1 after the calibration.",
        "",
        *report(record),
    ]
    return "\n".join(lines) + "\n"


# -- the command line ----------------------------------------------------------------------------


def _threads(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of thread counts: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be 1 or more: {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    """Profile the default step and print the tables.

    Args:
        argv: Command-line arguments without the program name; None reads ``sys.argv``.

    Returns:
        The exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, help=f"timed steps per arm, in pairs (default {STEPS})"
    )
    parser.add_argument(
        "--threads",
        type=_threads,
        help="torch's CPU threads, or a list (1,2: each in turn, side by side); default torch's",
    )
    parser.add_argument(
        "--profile-pairs",
        type=int,
        help=f"pairs of steps profiled to split the backward (default {PROFILE_PAIRS}; 0: none)",
    )
    parser.add_argument(
        "--warmup", type=int, help=f"steps after the calibration (default {EXTRA_WARMUP})"
    )
    parser.add_argument(
        "--recheck",
        choices=("full", "posterior"),
        default=TrainConfig().recheck,
        help="what a step evaluates again after the optimizer step (TrainConfig.recheck)",
    )
    parser.add_argument(
        "--refresh",
        type=int,
        default=TrainConfig().refresh,
        help="evaluate the costly groups on one step in this many (TrainConfig.refresh)",
    )
    _machine.add_quick_and_json(parser, "a tiny configuration and 4 steps: a smoke test")
    parser.add_argument("--md", type=Path, metavar="PATH", help="also write the Markdown here")
    args = parser.parse_args(argv)

    def pick(given: int | None, quick: int, default: int) -> int:
        return given if given is not None else (quick if args.quick else default)

    steps = pick(args.steps, QUICK_STEPS, STEPS)
    warmup = pick(args.warmup, QUICK_WARMUP, EXTRA_WARMUP)
    profile_pairs = pick(args.profile_pairs, QUICK_PROFILE_PAIRS, PROFILE_PAIRS)
    if steps < 2:
        parser.error("--steps must be at least 2 (one pair)")
    if warmup < 0 or profile_pairs < 0:
        parser.error("--warmup and --profile-pairs must be 0 or more")
    if args.refresh < 1:
        parser.error("--refresh must be 1 or more")
    config = TrainConfig(
        device="cpu", recheck=args.recheck, refresh=args.refresh, **(QUICK if args.quick else {})
    )
    thread_counts = args.threads or (None,)

    info = _machine.describe(torch.device("cpu"))
    record: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/trainer_profile.py", *argv]),
        "machine": info,
        "quick": args.quick,
        "config": attrs.asdict(config),
        "steps": steps,
        "warmup": warmup,
        "profile_pairs": profile_pairs,
        "beta": BETA,
    }
    print("LBO-VAE trainer profile: where a default step's time goes, against a plain step")
    print(
        f"  Python {info['python']}, torch {info['torch']}, "
        f"constraint_sched {info['constraint_sched']}"
    )
    _machine.print_machine(info)
    mode = " (--quick: a smoke test, not a measurement)" if args.quick else ""
    print(
        f"  TrainConfig on the CPU: batch {config.batch_size} of {config.image_size}x"
        f"{config.image_size} shapes; {steps} timed steps per arm (plain, bare, timed), "
        f"interleaved in pairs, after the calibration + {warmup}; backward split over "
        f"{profile_pairs} profiled pair(s){mode}"
    )
    runs = []
    for threads in thread_counts:
        if threads is not None:
            torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory(prefix="trainer-profile-") as folder:
            started = time.perf_counter()
            result = profile_once(config, steps, warmup, profile_pairs, Path(folder))
            result["seconds"] = time.perf_counter() - started
        print(
            f"  {result['threads']} thread(s): {result['seconds']:.1f}s; LBOVAE "
            f"{result['vae_parameters']:,} parameters, PatchDiscriminator "
            f"{result['disc_parameters']:,}; KL phase {result['kl_phase']}"
            + (
                f"; not wrapped: {', '.join(result['skipped_wrappers'])}"
                if result["skipped_wrappers"]
                else ""
            )
        )
        runs.append(result)
    record["runs"] = runs
    print()
    for line in report(record):
        print(line)
    if args.md is not None:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(markdown(record), encoding="utf-8")
        print(f"\nmarkdown written to {args.md}")
    if args.json is not None:
        _machine.write_json(args.json, record, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
