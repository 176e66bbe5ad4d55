"""Does `TorchConstraintTerm` hold a KL ceiling at any loss scale, on a conv VAE, under a warm-up?

One run of this script trains three cases with the package's one-line term,
``loss = main + term(kl, main=main)`` and ``term.epoch_end()`` per epoch, every
one with *no setting changed*: ``TorchConstraintTerm("kl", target=T,
squeeze_epochs=4, echo=None)``. The term discovers a ceiling in epoch 1 (where
the KL weighs 0), holds it in epoch 2, squeezes it geometrically to ``T`` by
epoch 6 and keeps the KL under the ceiling in force on all but 5% of each
epoch's steps.

- **(a) scale**: `peers.py`'s MLP VAE 64-128-16 on the digits (1197 training,
  360 test images; Adam lr 2e-3, batch 128), 12 *rounds* of 10 passes over
  the training images (90 steps a round, 1080 in all); a round is the term's
  epoch. ``T`` = 8 nats per image. The reconstruction loss ``main`` in six
  forms: the per-image sum of squared errors (``sq.mean()``) and the per-pixel
  mean (``sq.mean() / 64``, i.e. ``F.mse_loss``), each times 1e-3, 1 and 1e3.
  The term reads ``main`` to set its weight's unit, so all six should give
  the same run.
- **(b) conv**: a small convolutional VAE (`_patches.ConvVAE`: 3x32x32 to a
  4x8x8 latent) on 32x32 RGB patches of five scikit-image images (3431
  training patches cut at a stride of 16 from the top 5/6 of each image, 154
  test patches side by side from the bottom 1/6; pixels in [-1, 1]; see
  `_patches`), batch 32 (107 steps an epoch), 10 epochs, Adam lr 1e-3,
  ``main = F.mse_loss(recon, x)`` (the per-pixel mean, as diffusers writes
  it). ``T`` = 200 nats per patch.
- **(c) rising**: (a)'s per-image sum at scale 1, with the learning rate
  warmed up linearly over the first 2 rounds (``lr = 2e-3 min(1, step / 180)``):
  the KL the model would reach unconstrained keeps rising long after the
  ceiling is discovered. ``T`` = 8.

**Rise.** For (a) (sum at scale 1), (b) and (c) the same model and seed also
train unconstrained (``loss = main``) for 4 epochs; the *rise* is the max
minibatch KL of epochs 2-4 over that of epoch 1: how far the KL climbs above
what discovery sees.

**Fixed-weight baseline, tuned to the same KL.** Per case, ``loss = main + w
kl.mean()`` with one ``w`` for the whole run (same model, data, steps, seeds).
``w`` is tuned on seed 0: the first trial is the term's final weight on seed
0, each next one solves the secant of log(test KL) against log(w) through the
last two trials (`peers.next_beta`; from one trial, KL ~ 1 / w) for the
term's mean test KL over seeds; ``--trials`` (4) trials, the one whose test
KL is closest is chosen (it *is* the fixed arm's seed-0 run) and reruns on
the other seeds. Reconstruction is compared at equal KL: the fixed arm's
mean test MSE is moved to the term's mean test KL along the slope of log MSE
against log KL fitted through the fixed arm's trials, seeds and two *probe*
runs on seed 0 at half and twice the chosen weight, which give the fit a
span of KL (as `peers.kl_slope` and `peers.at_target`; -0.5 where the fit is
degenerate).

**Where the KL settles.** Per case and seed the term also runs with
``alpha=0.5`` (on (a)'s reference scaling), the setting that aims the KL's
mean at the ceiling instead of under it; a table gives, for both, the final
test KL / T, the mean training KL / T and the share of steps over the
ceiling in the epochs at the target.
(a) tunes ``w`` once, on the per-image sum at scale 1, and compares all six
scalings with it: under Adam, ``c main + (c w) kl`` trains as ``main + w kl``.

**Recorded** per case and seed: per epoch from epoch 2, the share of steps
whose minibatch KL (the mean per-example KL of the training forward pass,
before the step) is above ``term.bound`` in force at that step, and their max;
the discovered ceiling; the final weight; the final test KL and test KL / T
(8 fixed noise draws); the test MSE per pixel; the training wall time.

**Goals** (a ✓/✗ table per case and overall; a miss says by how much):

1. every case and seed: at most 5% of the steps over the ceiling in every
   epoch from 2 on;
2. every seed's final test KL between 0.9 T and T;
3. test MSE within 3% of the fixed weight's at the same KL (means over seeds);
4. (a): the mean test KL differs by at most 5% across the six scalings
   (max / min - 1).

Seeds: ``torch.manual_seed(seed)`` before the model is built; the MLP cases
draw their data order and noise from torch's generator so seeded (as
`peers.py` does), the conv case from its own ``torch.Generator`` seeded with
``seed``, so every run is reproducible and a term run and a fixed run of one
seed see the same batches and noise.

Usage:
    python benchmarks/term_scale.py [--seeds N] [--cases a,b,c] [--trials K]
        [--jobs J] [--threads T] [--quick] [--json PATH] [--md PATH]

Run it against the source tree with ``PYTHONPATH=. python
benchmarks/term_scale.py --jobs 2 --threads 1`` from the repository root.
The full run (3 seeds; 33 term runs, 9 rise runs, 12 fixed trials, 6 fixed
reruns, 6 probes) takes about 6 minutes on a 2-core CPU, two runs at a time
(an MLP run about 1.3 s, a conv run about 33 s), and writes
``benchmarks/results/term_scale.md`` and ``term_scale.json`` (unless ``--md``
/ ``--json`` say where), and beside the markdown ``term_scale_settle.md``
and ``term_scale_summary.md``, the two tables the documentation includes.
``--quick`` (one seed, 6 rounds / 5 conv epochs, squeezed over 2 epochs, 2
trials) is a smoke test, not a result: it writes only the files it is given.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import _machine
import _patches
import numpy as np
import peers
import torch
from torch import nn
from torch.nn import functional as F

from constraint_sched.adapters.torch import TorchConstraintTerm

CASES = {"a": "scale", "b": "conv", "c": "rising"}
"""The cases, by letter."""

TARGET = {"a": 8.0, "b": 200.0, "c": 8.0}
"""Each case's target ``T``: nats per image (a, c) or per patch (b)."""

SCALINGS: dict[str, tuple[str, float]] = {
    "sum x1e-3": ("sum", 1e-3),
    "sum x1": ("sum", 1.0),
    "sum x1e3": ("sum", 1e3),
    "pixel x1e-3": ("pixel", 1e-3),
    "pixel x1": ("pixel", 1.0),
    "pixel x1e3": ("pixel", 1e3),
}
"""Case (a)'s forms of ``main``: the per-image sum or per-pixel mean of squared errors, times c."""

REFERENCE = "sum x1"
"""The scaling of (c), of (a)'s rise run and of (a)'s fixed baseline."""

CONV_MAIN = "F.mse_loss"
"""(b)'s one form of ``main``, the per-pixel mean (its records' ``scaling``)."""


def scalings_of(case: str) -> tuple[str, ...]:
    """The forms of ``main`` a case's term runs in: (a) every one of `SCALINGS`."""
    return tuple(SCALINGS) if case == "a" else (CONV_MAIN if case == "b" else REFERENCE,)


MLP_LR, MLP_BATCH = 2e-3, 128
CONV_LR, CONV_BATCH = 1e-3, 32
WARMUP_STEPS = 180
"""(c): the learning rate rises linearly to ``MLP_LR`` over these steps (2 rounds)."""

MAX_SHARE, KL_FLOOR, MSE_TOLERANCE, SCALE_SPREAD = 0.05, 0.9, 0.03, 0.05
"""The goals: steps over the ceiling per epoch, the lowest KL / T, the MSE gap, (a)'s spread."""

FALLBACK_SLOPE = -0.5
"""d log MSE / d log KL where the fixed arm's runs span too little KL to fit one."""

PROBES = (0.5, 2.0)
"""The fixed arm's extra seed-0 runs, at these multiples of its chosen weight: the slope's span."""

MEAN_ALPHA = 0.5
"""The ``alpha`` of the extra term runs that aim the KL's mean at the ceiling."""


@dataclass(frozen=True)
class Config:
    """One invocation's settings."""

    seeds: int = 3
    rounds: int = 12
    passes: int = 10
    conv_epochs: int = 10
    squeeze_epochs: int = 4
    trials: int = 4
    rise_epochs: int = 4
    cases: tuple[str, ...] = ("a", "b", "c")

    def epochs(self, case: str) -> int:
        """The term's epochs in a run of ``case``: rounds (a, c) or passes over the patches (b)."""
        return self.conv_epochs if case == "b" else self.rounds


QUICK = Config(seeds=1, rounds=6, conv_epochs=5, squeeze_epochs=2, trials=2)
"""``--quick``'s configuration: a smoke test of the script, not a result."""


@dataclass(frozen=True)
class Job:
    """One training run: the term's (``term``), a fixed weight's (``fixed``) or none (``free``)."""

    kind: str
    case: str
    seed: int
    cfg: Config
    scaling: str = REFERENCE
    weight: float = 0.0
    alpha: float | None = None
    """The term's ``alpha`` where it is set (`MEAN_ALPHA`); None: the default."""

    @property
    def epochs(self) -> int:
        """Epochs this run trains (the rise runs: ``rise_epochs``)."""
        return self.cfg.rise_epochs if self.kind == "free" else self.cfg.epochs(self.case)


# -- the problems: model, data, optimizer ---------------------------------------------------------

_DIGITS: peers.Data | None = None
_PATCHES: _patches.Patches | None = None


def mlp_data() -> peers.Data:
    """The digits split of `peers.py`, loaded once per process."""
    global _DIGITS
    if _DIGITS is None:
        _DIGITS = peers.load_data()
    return _DIGITS


def patches() -> _patches.Patches:
    """The image patches, cut once per process."""
    global _PATCHES
    if _PATCHES is None:
        _PATCHES = _patches.load_patches()
    return _PATCHES


Batch = tuple[torch.Tensor, torch.Tensor]
"""A step's inputs and latent noise."""


class Problem:
    """A case's model, optimizer and data for one seed: an epoch's batches and a step's losses."""

    model: nn.Module
    optimizer: torch.optim.Optimizer

    def epoch(self) -> Iterator[Batch]:
        """One epoch's steps: (inputs, noise) pairs."""
        raise NotImplementedError

    def losses(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's ``main`` (0-d) and KL per example (shape (batch,))."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Test KL per example and pixel MSE of the trained model."""
        raise NotImplementedError

    def at_step(self, step: int) -> None:
        """Before step ``step`` (1-based): the learning rate schedule, if any."""


class MlpProblem(Problem):
    """Cases (a) and (c): `peers.VAE` on the digits, ``main`` in one of `SCALINGS`."""

    model: peers.VAE

    def __init__(self, job: Job) -> None:
        torch.manual_seed(job.seed)
        self.model = peers.VAE()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=MLP_LR)
        self.form, self.factor = SCALINGS[job.scaling]
        self.warmup = job.case == "c"
        self.passes = job.cfg.passes
        self.data = mlp_data()

    def epoch(self) -> Iterator[Batch]:
        """``passes`` passes over the training images (torch's seeded generator)."""
        for _ in range(self.passes):
            for idx in peers.batches(len(self.data.train), MLP_BATCH):
                yield self.data.train[idx], torch.randn(len(idx), peers.LATENT)

    def losses(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``c sq.mean()`` (sum) or ``c sq.mean() / 64`` (pixel), and the KL per image."""
        squared, kl = self.model.per_image(x, noise)
        main = squared.mean() if self.form == "sum" else squared.mean() / peers.PIXELS
        return main * self.factor, kl

    def evaluate(self) -> dict[str, float]:
        """`peers.evaluate` on the test images."""
        self.model.eval()
        return peers.evaluate(self.model, self.data.test)

    def at_step(self, step: int) -> None:
        """(c): the linear warm-up of the learning rate."""
        if self.warmup:
            for group in self.optimizer.param_groups:
                group["lr"] = MLP_LR * min(1.0, step / WARMUP_STEPS)


class ConvProblem(Problem):
    """Case (b): `_patches.ConvVAE` on the image patches, ``main = F.mse_loss``."""

    model: _patches.ConvVAE

    def __init__(self, job: Job) -> None:
        torch.manual_seed(job.seed)
        self.model = _patches.ConvVAE()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=CONV_LR)
        self.generator = torch.Generator().manual_seed(job.seed)
        self.data = patches()

    def epoch(self) -> Iterator[Batch]:
        """One shuffled pass over the training patches, the last partial batch dropped."""
        n = len(self.data.train)
        order = torch.randperm(n, generator=self.generator)
        for start in range(0, n - CONV_BATCH + 1, CONV_BATCH):
            idx = order[start : start + CONV_BATCH]
            yield self.data.train[idx], self.model.noise(len(idx), self.generator)

    def losses(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-pixel MSE and the KL per patch."""
        recon, kl = self.model(x, noise)
        return F.mse_loss(recon, x), kl

    def evaluate(self) -> dict[str, float]:
        """`_patches.evaluate` on the test patches."""
        self.model.eval()
        return _patches.evaluate(self.model, self.data.test)


# -- the rules: how a run weighs the KL -----------------------------------------------------------


class Rule:
    """No KL in the loss (the rise runs): ``loss = main``; no ceiling."""

    def bound(self) -> float:
        """The ceiling the step's KL is counted against."""
        return math.inf

    def __call__(self, kl: torch.Tensor, main: torch.Tensor) -> torch.Tensor | None:
        """The term to add to ``main`` (None: nothing)."""
        return None

    def epoch_end(self) -> None:
        """The end of an epoch."""


class TermRule(Rule):
    """The package's term, as a user writes it: nothing but the name, target and squeeze.

    (The runs of `MEAN_ALPHA` set ``alpha`` too: they show where the mean goes then.)
    """

    def __init__(self, target: float, squeeze_epochs: int, alpha: float | None = None) -> None:
        self.term = TorchConstraintTerm(
            "kl", target=target, squeeze_epochs=squeeze_epochs, alpha=alpha, echo=None
        )

    def bound(self) -> float:
        """The ceiling in force (inf in discovery)."""
        return float(self.term.bound)

    def __call__(self, kl: torch.Tensor, main: torch.Tensor) -> torch.Tensor | None:
        """``term(kl, main=main)``."""
        out: torch.Tensor = self.term(kl, main=main)
        return out

    def epoch_end(self) -> None:
        """``term.epoch_end()``."""
        self.term.epoch_end()


class FixedRule(Rule):
    """``w kl.mean()``; its steps are counted against ``T`` (for the record only)."""

    def __init__(self, weight: float, target: float) -> None:
        self.weight, self.target = weight, target

    def bound(self) -> float:
        """``T``."""
        return self.target

    def __call__(self, kl: torch.Tensor, main: torch.Tensor) -> torch.Tensor | None:
        """``w kl.mean()``."""
        return self.weight * kl.mean()


# -- one run --------------------------------------------------------------------------------------


@dataclass
class Trace:
    """Every step's minibatch KL and the ceiling in force, per epoch."""

    kl: list[list[float]]
    bound: list[list[float]]


def train(problem: Problem, rule: Rule, epochs: int) -> Trace:
    """Train ``problem`` for ``epochs`` epochs, the KL weighed by ``rule``."""
    trace = Trace([], [])
    step = 0
    for _ in range(epochs):
        kls, bounds = [], []
        for x, noise in problem.epoch():
            step += 1
            problem.at_step(step)
            main, kl = problem.losses(x, noise)
            bounds.append(rule.bound())
            extra = rule(kl, main)
            loss = main if extra is None else main + extra
            problem.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            problem.optimizer.step()
            kls.append(float(kl.detach().mean()))
        trace.kl.append(kls)
        trace.bound.append(bounds)
        rule.epoch_end()
    return trace


def make(job: Job) -> tuple[Problem, Rule]:
    """The problem and rule of ``job``."""
    problem: Problem = ConvProblem(job) if job.case == "b" else MlpProblem(job)
    target = TARGET[job.case]
    if job.kind == "term":
        return problem, TermRule(target, job.cfg.squeeze_epochs, job.alpha)
    if job.kind == "fixed":
        return problem, FixedRule(job.weight, target)
    return problem, Rule()


def shares(trace: Trace) -> list[float]:
    """Per epoch from epoch 2: the share of steps whose minibatch KL was above the ceiling."""
    return [
        float(np.mean(np.asarray(k) > np.asarray(b)))
        for k, b in zip(trace.kl[1:], trace.bound[1:], strict=True)
    ]


def rise(trace: Trace) -> float:
    """The max minibatch KL after epoch 1 over the max of epoch 1."""
    later = max(max(k) for k in trace.kl[1:]) if len(trace.kl) > 1 else math.nan
    return later / max(trace.kl[0])


def at_target(trace: Trace, target: float) -> dict[str, float]:
    """Over the epochs whose ceiling is the target: the share of steps over it, the mean KL / T."""
    kls = [
        kl
        for ks, bs in zip(trace.kl[1:], trace.bound[1:], strict=True)
        if bs and bs[0] == target
        for kl in ks
    ]
    if not kls:
        return {"target_share": math.nan, "target_mean_ratio": math.nan}
    return {
        "target_share": float(np.mean(np.asarray(kls) > target)),
        "target_mean_ratio": statistics.fmean(kls) / target,
    }


def figures(trace: Trace, target: float) -> dict[str, Any]:
    """What a run's trace says: per-epoch KL and ceilings, the shares over the ceiling."""
    over = shares(trace)
    worst = int(np.argmax(over)) if over else 0
    return {
        **at_target(trace, target),
        "steps": sum(len(k) for k in trace.kl),
        "epoch_mean_kl": [statistics.fmean(k) for k in trace.kl],
        "epoch_max_kl": [max(k) for k in trace.kl],
        "epoch_bound": [b[-1] if math.isfinite(b[-1]) else None for b in trace.bound],
        "shares": over,
        "max_share": max(over, default=0.0),
        "worst_epoch": worst + 2,
        "round1_max_kl": max(trace.kl[0]),
    }


def run(job: Job) -> dict[str, Any]:
    """Train one job; its record."""
    problem, rule = make(job)
    started = time.perf_counter()
    trace = train(problem, rule, job.epochs)
    seconds = time.perf_counter() - started
    test = problem.evaluate()
    target = TARGET[job.case]
    record = {
        "kind": job.kind,
        "alpha": job.alpha,
        "case": job.case,
        "scaling": CONV_MAIN if job.case == "b" else job.scaling,
        "seed": job.seed,
        "weight": job.weight,
        "target": target,
        "test_kl": test["kl"],
        "kl_ratio": test["kl"] / target,
        "test_mse": test["mse"],
        "seconds": seconds,
        **figures(trace, target),
    }
    if job.kind == "free":
        record["rise"] = rise(trace)
    if isinstance(rule, TermRule):
        term = rule.term
        record.update(
            weight=term.weight,
            discovered=term.scheduler.discovered,
            target_bound=term.target_bound,
            alpha=term.settings.alpha,
        )
    return record


# -- running many runs on the CPUs ----------------------------------------------------------------


def _init_worker() -> None:
    """A pool worker: one torch thread."""
    torch.set_num_threads(1)


def _task(item: tuple[int, Job]) -> tuple[int, dict[str, Any]]:
    """One pool job: its index and record."""
    index, job = item
    return index, run(job)


class Runner:
    """Runs jobs ``workers`` at a time in a spawn pool (1: in this process), in order.

    Args:
        workers: Processes at a time.
        echo: Called with each record as its run finishes.
    """

    def __init__(self, workers: int, echo: Callable[[dict[str, Any]], None]) -> None:
        self.workers, self.echo = workers, echo
        self.pool: Any = None

    def __enter__(self) -> Runner:
        if self.workers > 1:
            import multiprocessing

            context = multiprocessing.get_context("spawn")
            self.pool = context.Pool(self.workers, initializer=_init_worker)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()

    def __call__(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """Every job's record, in the order of ``jobs``."""
        items = list(enumerate(jobs))
        done = map(_task, items) if self.pool is None else self.pool.imap_unordered(_task, items)
        records: dict[int, dict[str, Any]] = {}
        for index, record in done:
            records[index] = record
            self.echo(record)
        return [records[i] for i in range(len(jobs))]


def progress(record: dict[str, Any]) -> None:
    """The line printed as a run finishes."""
    r = record
    kind = r["kind"] if r["kind"] != "term" or r["alpha"] == 0.05 else f"a={r['alpha']:g}"
    head = f"  {r['case']} {CASES[r['case']]:6s} {kind:5s} {r['scaling']:11s} seed {r['seed']}"
    if r["kind"] == "free":
        text = f"rise {r['rise']:.2f}x (epoch-1 max KL {r['round1_max_kl']:.4g})"
    else:
        text = (
            f"w {r['weight']:<9.4g} test KL {r['test_kl']:8.3f} ({r['kl_ratio']:.3f} T)  "
            f"MSE {r['test_mse'] * 1e3:7.3f}e-3"
        )
        if r["kind"] == "term":
            text += f"  max share {r['max_share']:5.1%} (epoch {r['worst_epoch']})"
    print(f"{head}  {text}  {r['seconds']:.1f} s", flush=True)


# -- the fixed-weight baseline --------------------------------------------------------------------


def next_weight(points: list[tuple[float, float]], aim: float) -> float:
    """The secant of log KL against log w through the last two trials (one: KL ~ 1 / w)."""
    return peers.next_beta(points if len(points) > 1 else points * 2, aim)


def tune_fixed(
    runner: Runner, cfg: Config, starts: dict[str, float], aims: dict[str, float]
) -> dict[str, list[dict[str, Any]]]:
    """Every case's ``cfg.trials`` fixed-weight trials on seed 0, the cases' trials side by side.

    Args:
        runner: Runs the trials.
        cfg: The settings.
        starts: Per case, the first weight: the term's final weight on seed 0.
        aims: Per case, the test KL to aim at: the term's mean over seeds.

    Returns:
        Per case, the trials' records in order.
    """
    weights = {case: max(w, 1e-12) for case, w in starts.items()}
    trials: dict[str, list[dict[str, Any]]] = {case: [] for case in starts}
    for _ in range(cfg.trials):
        jobs = [Job("fixed", case, 0, cfg, weight=w) for case, w in weights.items()]
        for job, record in zip(jobs, runner(jobs), strict=True):
            trials[job.case].append(record)
            points = [(r["weight"], max(r["test_kl"], 1e-9)) for r in trials[job.case]]
            weights[job.case] = next_weight(points, aims[job.case])
    return trials


def closest(trials: list[dict[str, Any]], aim: float) -> dict[str, Any]:
    """The trial whose test KL is closest to ``aim`` (in log)."""
    return min(trials, key=lambda r: abs(math.log(max(r["test_kl"], 1e-9) / aim)))


def fit_slope(runs: list[dict[str, Any]]) -> float | None:
    """The least-squares slope of log test MSE against log test KL through ``runs``.

    None where they span too little KL (under 2%) to fit one.
    """
    x = np.log([r["test_kl"] for r in runs])
    y = np.log([r["test_mse"] for r in runs])
    if len(runs) < 2 or float(np.ptp(x)) < 0.02:
        return None
    return float(np.polyfit(x, y, 1)[0])


def exchange_slope(runs: list[dict[str, Any]]) -> float:
    """`fit_slope`, or `FALLBACK_SLOPE` where there is none or it is not negative."""
    slope = fit_slope(runs)
    if slope is None or not math.isfinite(slope) or slope >= 0:
        return FALLBACK_SLOPE
    return slope


# -- summaries and goals --------------------------------------------------------------------------


def stat(records: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Mean and standard deviation over seeds (sd 0 for one seed)."""
    values = [float(r[key]) for r in records]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd}


def cell(s: dict[str, float], scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± sd``, scaled."""
    return f"{s['mean'] * scale:.{digits}f} ± {s['sd'] * scale:.{digits}f}"


@dataclass
class Baseline:
    """A case's fixed-weight arm: its trials, chosen weight, seeds and exchange slope."""

    trials: list[dict[str, Any]]
    chosen: dict[str, Any]
    seeds: list[dict[str, Any]]
    probes: list[dict[str, Any]]

    @property
    def runs(self) -> list[dict[str, Any]]:
        """Every run of the arm once: the trials, the probes and the other seeds' reruns."""
        return [*self.trials, *self.probes, *self.seeds[1:]]

    @property
    def slope(self) -> float:
        """The slope of log MSE against log KL through `runs` (`exchange_slope`)."""
        return exchange_slope(self.runs)

    def slope_text(self) -> str:
        """The slope's table cell: the fit, and the fallback where it was used."""
        fitted = fit_slope(self.runs)
        if fitted is not None and fitted == self.slope:
            return f"{fitted:.3f}"
        fit = "too little KL spread" if fitted is None else f"fit {fitted:+.3f}"
        return f"{self.slope:.3f} (fallback; {fit})"

    def mse_at(self, kl: float) -> float:
        """The fixed arm's mean test MSE moved to test KL ``kl`` along `slope`."""
        mean_kl = stat(self.seeds, "test_kl")["mean"]
        return float(stat(self.seeds, "test_mse")["mean"] * (kl / mean_kl) ** self.slope)


def summarise(runs: list[dict[str, Any]], baseline: Baseline) -> dict[str, Any]:
    """A row of term runs (one case, one scaling): means, per-epoch worst shares, the MSE gap."""
    kl = stat(runs, "test_kl")
    fixed_mse = baseline.mse_at(kl["mean"])
    mse = stat(runs, "test_mse")
    worst = max(runs, key=lambda r: r["max_share"])
    return {
        "test_kl": kl,
        "kl_ratio": stat(runs, "kl_ratio"),
        "test_mse": mse,
        "discovered": stat(runs, "discovered"),
        "weight": stat(runs, "weight"),
        "seconds": stat(runs, "seconds"),
        "steps_per_epoch": runs[0]["steps"] // len(runs[0]["epoch_mean_kl"]),
        "epoch_max_share": [max(s) for s in zip(*(r["shares"] for r in runs), strict=True)],
        "max_share": worst["max_share"],
        "worst": {"seed": worst["seed"], "epoch": worst["worst_epoch"]},
        "kl_ratios": {r["seed"]: r["kl_ratio"] for r in runs},
        "fixed_mse_at_kl": fixed_mse,
        "mse_gap": mse["mean"] / fixed_mse - 1.0,
    }


Goal = tuple[bool, str]
"""Met?, and the figure (with the miss, where missed)."""


def goal_share(row: dict[str, Any]) -> Goal:
    """Goal 1: at most 5% of the steps over the ceiling in every epoch from 2, every seed."""
    share, worst = row["max_share"], row["worst"]
    text = f"worst {share:.1%} (seed {worst['seed']}, epoch {worst['epoch']})"
    if share > MAX_SHARE:
        text += f": {100 * (share - MAX_SHARE):.1f} points over 5%"
    return share <= MAX_SHARE, text


def goal_kl(row: dict[str, Any]) -> Goal:
    """Goal 2: every seed's test KL between 0.9 T and T."""
    ratios = row["kl_ratios"]
    misses = []
    for seed, q in ratios.items():
        if q > 1.0:
            misses.append(f"seed {seed} {q:.3f} T ({q - 1:+.1%} over T)")
        elif q < KL_FLOOR:
            misses.append(f"seed {seed} {q:.3f} T ({q / KL_FLOOR - 1:+.1%} under 0.9 T)")
    text = f"{min(ratios.values()):.3f}-{max(ratios.values()):.3f} T"
    return not misses, text + (f": {'; '.join(misses)}" if misses else "")


def goal_mse(row: dict[str, Any]) -> Goal:
    """Goal 3: test MSE within 3% of the fixed weight's at the same KL."""
    gap = row["mse_gap"]
    text = f"{gap:+.1%}"
    if gap > MSE_TOLERANCE:
        text += f": {100 * (gap - MSE_TOLERANCE):.1f} points over 3%"
    return gap <= MSE_TOLERANCE, text


def goal_spread(rows: dict[str, dict[str, Any]]) -> Goal:
    """Goal 4: (a)'s mean test KL within 5% across the scalings (max / min - 1)."""
    kls = [row["test_kl"]["mean"] for row in rows.values()]
    spread = max(kls) / min(kls) - 1.0
    text = f"{spread:.1%} ({min(kls):.3f}-{max(kls):.3f})"
    if spread > SCALE_SPREAD:
        text += f": {100 * (spread - SCALE_SPREAD):.1f} points over 5%"
    return spread <= SCALE_SPREAD, text


GOALS = (
    "1. ≤ 5% of steps over the ceiling, every epoch ≥ 2",
    "2. test KL in [0.9 T, T], every seed",
    "3. MSE within 3% of fixed w at equal KL",
    "4. (a) KL spread across scalings ≤ 5%",
)


def mark(goal: Goal) -> str:
    """A goal's table cell."""
    return f"{'✓' if goal[0] else '✗'} {goal[1]}"


# -- the report -----------------------------------------------------------------------------------


def row_label(case: str, scaling: str) -> str:
    """A row's name: the case, and (a)'s scaling."""
    return f"({case}) {CASES[case]}" + (f", {scaling}" if case == "a" else "")


def term_table(rows: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """The term's runs: one row per case (and scaling)."""
    lines = [
        "| case | T | discovered | final weight | test KL | KL / T | test MSE x1e3 "
        "| fixed MSE at that KL x1e3 | MSE gap % | steps / epoch | max share over ceiling % "
        "| per-epoch max share %, epochs 2.. | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (case, scaling), row in rows.items():
        epochs = " ".join(f"{100 * s:.1f}" for s in row["epoch_max_share"])
        lines.append(
            f"| {row_label(case, scaling)} | {TARGET[case]:g} | {cell(row['discovered'], 1, 1)} "
            f"| {row['weight']['mean']:.4g} | {cell(row['test_kl'])} "
            f"| {cell(row['kl_ratio'], 1, 3)} | {cell(row['test_mse'], 1e3, 3)} "
            f"| {row['fixed_mse_at_kl'] * 1e3:.3f} | {100 * row['mse_gap']:+.1f} "
            f"| {row['steps_per_epoch']} | {100 * row['max_share']:.1f} | {epochs} "
            f"| {row['seconds']['mean']:.1f} |"
        )
    return lines


def fixed_table(baselines: dict[str, Baseline]) -> list[str]:
    """The fixed-weight arms: trials, chosen weight, seeds, slope."""
    lines = [
        "| case | trials on seed 0 (w -> test KL; * chosen) | chosen w | test KL "
        "| KL / T per seed | test MSE x1e3 | slope d log MSE / d log KL |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, base in baselines.items():
        trials = ", ".join(
            f"{t['weight']:.4g} -> {t['test_kl']:.3f}" + (" *" if t is base.chosen else "")
            for t in base.trials
        )
        ratios = ", ".join(f"{r['kl_ratio']:.3f}" for r in base.seeds)
        lines.append(
            f"| ({case}) {CASES[case]} | {trials} | {base.chosen['weight']:.4g} "
            f"| {cell(stat(base.seeds, 'test_kl'))} "
            f"| {ratios} "
            f"| {cell(stat(base.seeds, 'test_mse'), 1e3, 3)} "
            f"| {base.slope_text()} |"
        )
    return lines


def rise_table(free: dict[str, list[dict[str, Any]]], epochs: int) -> list[str]:
    """The unconstrained runs' rise per seed."""
    lines = [
        f"| case | rise per seed (max KL epochs 2-{epochs} / max KL epoch 1) | mean "
        "| epoch-1 max KL (mean) |",
        "|---|---|---|---|",
    ]
    for case, runs in free.items():
        per_seed = ", ".join(f"{r['rise']:.2f}x" for r in runs)
        lines.append(
            f"| ({case}) {CASES[case]} | {per_seed} | {stat(runs, 'rise')['mean']:.2f}x "
            f"| {stat(runs, 'round1_max_kl')['mean']:.4g} |"
        )
    return lines


def goals_table(goals: dict[tuple[str, str], list[Goal | None]]) -> list[str]:
    """✓/✗ per case (and scaling) and goal, and the overall line."""
    lines = ["| case | " + " | ".join(GOALS) + " |", "|---|---|---|---|---|"]
    for (case, scaling), marks in goals.items():
        cells = " | ".join("-" if g is None else mark(g) for g in marks)
        lines.append(f"| {row_label(case, scaling)} | {cells} |")
    overall = []
    for i in range(len(GOALS)):
        met = [g[0] for marks in goals.values() if (g := marks[i]) is not None]
        overall.append("-" if not met else ("✓" if all(met) else f"✗ ({met.count(False)} missed)"))
    lines.append(f"| **overall** | {' | '.join(overall)} |")
    return lines


def settle_table(
    terms: dict[tuple[str, str], Runs], aimed: dict[str, Runs], cfg: Config
) -> list[str]:
    """Where the KL settles with the default ``alpha`` and with `MEAN_ALPHA`, per case."""
    lines = [
        "| case | T | alpha | final test KL / T (seeds) | training KL / T at the target "
        "| steps over the ceiling at the target | worst epoch from 2 |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for case in cfg.cases:
        default = terms[case, REFERENCE if case == "a" else scalings_of(case)[0]]
        for runs in (default, aimed[case]):
            if not runs:
                continue
            ratios = [r["kl_ratio"] for r in runs]
            lines.append(
                f"| ({case}) {CASES[case]} | {TARGET[case]:g} | {runs[0]['alpha']:g} "
                f"| {statistics.fmean(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) "
                f"| {stat(runs, 'target_mean_ratio')['mean']:.3f} "
                f"| {stat(runs, 'target_share')['mean']:.1%} "
                f"| {max(r['max_share'] for r in runs):.1%} |"
            )
    return lines


def summary_table(rows: dict[tuple[str, str], dict[str, Any]], free: dict[str, Runs]) -> list[str]:
    """One line per case ((a)'s six scalings together): the figures the goals read."""
    lines = [
        "| case | rise of the free KL after discovery | worst epoch: steps over the ceiling "
        "| final test KL / T | MSE vs fixed weight at equal KL | KL spread across scalings |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for case in dict.fromkeys(c for c, _ in rows):
        mine = {s: row for (c, s), row in rows.items() if c == case}
        ratios = [q for row in mine.values() for q in row["kl_ratios"].values()]
        gaps = [row["mse_gap"] for row in mine.values()]
        spread_text = goal_spread(mine)[1].split(" (")[0] if len(mine) > 1 else "-"
        gap_text = f"{min(gaps):+.1%} to {max(gaps):+.1%}" if len(gaps) > 1 else f"{gaps[0]:+.1%}"
        label = f"({case}) {CASES[case]}" + (f", {len(mine)} scalings" if len(mine) > 1 else "")
        lines.append(
            f"| {label} | {stat(free[case], 'rise')['mean']:.1f}x "
            f"| {max(row['max_share'] for row in mine.values()):.1%} "
            f"| {min(ratios):.3f}-{max(ratios):.3f} | {gap_text} | {spread_text} |"
        )
    return lines


def header(record: dict[str, Any]) -> list[str]:
    """The report's title, command, machine and settings."""
    cfg, machine = record["settings"], record["machine"]
    quick = " (`--quick`: a smoke test, not a result)" if record["quick"] else ""
    return [
        "# The term at any scale: loss scalings, a conv VAE, a rising KL",
        "",
        "Written by `benchmarks/term_scale.py`; the method is in its docstring.",
        "",
        f"Command: `{record['command']}`{quick}",
        "",
        f"Machine: {machine['processor']}, {machine['cpu_count']} CPUs, {machine['platform']}; "
        f"Python {machine['python']}, torch {machine['torch']} (1 thread per run, "
        f"{record['workers']} run(s) at a time), constraint_sched {machine['constraint_sched']}. "
        f"Total wall time {record['seconds']:.0f} s.",
        "",
        f'Settings: `TorchConstraintTerm("kl", target=T, squeeze_epochs={cfg["squeeze_epochs"]}, '
        f"echo=None)`, nothing else set; cases {', '.join(cfg['cases'])}; {cfg['seeds']} seed(s); "
        f"(a), (c): digits MLP VAE, {cfg['rounds']} rounds of {cfg['passes']} passes (batch "
        f"{MLP_BATCH}, Adam lr {MLP_LR}; (c) warms the lr up over {WARMUP_STEPS} steps); (b): "
        f"conv VAE on image patches, {cfg['conv_epochs']} epochs (batch {CONV_BATCH}, Adam lr "
        f"{CONV_LR}); {cfg['trials']} fixed-weight trial(s) per case; rise runs of "
        f"{cfg['rise_epochs']} epochs.",
    ]


def patches_note(record: dict[str, Any]) -> list[str]:
    """(b)'s data, and the test MSE of predicting the mean training patch."""
    if record["patches"] is None:
        return []
    count, mse = record["patches"], record["mean_image_mse"]
    return [
        "",
        f"(b) has {count['train']} training and {count['test']} test patches; predicting every "
        f"test patch by the mean training patch gives a test MSE of {mse * 1e3:.2f}e-3.",
    ]


def markdown(
    record: dict[str, Any],
    rows: dict[tuple[str, str], dict[str, Any]],
    baselines: dict[str, Baseline],
    free: dict[str, list[dict[str, Any]]],
    goals: dict[tuple[str, str], list[Goal | None]],
) -> str:
    """The whole markdown report."""
    lines = header(record)
    lines += ["", "## The term", ""]
    lines += [
        "Mean ± sd over seeds. *MSE gap*: test MSE / the fixed weight's MSE moved to the same "
        "test KL - 1. *share over ceiling*: share of an epoch's steps whose minibatch KL (the "
        "forward pass before the step) is above `term.bound` in force; the max over epochs ≥ 2 "
        "and seeds, and per epoch the max over seeds. Test MSE per pixel.",
        "",
        *term_table(rows),
    ]
    lines += patches_note(record)
    lines += ["", "## Fixed weight, tuned to the term's KL", ""]
    if "a" in baselines:
        lines += [
            "(a) tunes w once, on the per-image sum at scale 1, and compares all six scalings "
            "with it: under Adam, c main + (c w) kl trains as main + w kl.",
            "",
        ]
    lines += fixed_table(baselines)
    lines += ["", "## Rise of the unconstrained KL (loss = main)", ""]
    lines += rise_table(free, record["settings"]["rise_epochs"])
    lines += ["", "## Goals", "", *goals_table(goals)]
    return "\n".join(lines).rstrip() + "\n"


# -- main -----------------------------------------------------------------------------------------


def parse_cases(text: str) -> tuple[str, ...]:
    """``--cases``: comma-separated letters of `CASES`."""
    cases = tuple(c.strip() for c in text.split(",") if c.strip())
    if not cases or any(c not in CASES for c in cases):
        raise argparse.ArgumentTypeError(f"letters among a, b, c expected, got {text!r}")
    return tuple(c for c in CASES if c in cases)


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Config]:
    """The options, and the settings they give."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, help="seeds per case (default 3)")
    parser.add_argument("--cases", type=parse_cases, help="cases to run (default a,b,c)")
    parser.add_argument("--trials", type=int, help="fixed-weight trials per case (default 4)")
    _machine.add_pool_arguments(
        parser, "one seed, 6 rounds / 5 conv epochs, 2 trials: a smoke test"
    )
    args = parser.parse_args(argv)
    _machine.set_threads(args.threads, parser)
    cfg = QUICK if args.quick else Config()
    given = {"seeds": args.seeds, "cases": args.cases, "trials": args.trials}
    cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None})
    if cfg.seeds < 1 or cfg.trials < 1 or args.jobs < 1:
        parser.error("--seeds, --trials and --jobs must be at least 1")
    return args, cfg


def term_jobs(cfg: Config) -> list[Job]:
    """The term's runs and the rise runs, the long (conv) ones first."""
    jobs: list[Job] = []
    for case in sorted(cfg.cases, key=lambda c: c != "b"):
        for seed in range(cfg.seeds):
            jobs += [Job("term", case, seed, cfg, scaling=s) for s in scalings_of(case)]
            jobs.append(Job("term", case, seed, cfg, alpha=MEAN_ALPHA))
            jobs.append(Job("free", case, seed, cfg))
    return jobs


def baselines_for(
    runner: Runner, cfg: Config, terms: dict[tuple[str, str], list[dict[str, Any]]]
) -> dict[str, Baseline]:
    """Every case's fixed-weight arm: tuned on seed 0, then rerun on the other seeds."""
    reference = {
        case: terms[case, REFERENCE if case == "a" else scalings_of(case)[0]] for case in cfg.cases
    }
    starts = {case: runs[0]["weight"] for case, runs in reference.items()}
    aims = {case: stat(runs, "test_kl")["mean"] for case, runs in reference.items()}
    trials = tune_fixed(runner, cfg, starts, aims)
    chosen = {case: closest(trials[case], aims[case]) for case in cfg.cases}
    jobs = [
        Job("fixed", case, seed, cfg, weight=chosen[case]["weight"])
        for case in sorted(cfg.cases, key=lambda c: c != "b")
        for seed in range(1, cfg.seeds)
    ]
    probes = [
        Job("fixed", case, 0, cfg, weight=chosen[case]["weight"] * factor)
        for case in sorted(cfg.cases, key=lambda c: c != "b")
        for factor in PROBES
    ]
    reruns = runner(jobs + probes)
    out = {}
    for case in cfg.cases:
        seeds = [chosen[case], *(r for r in reruns[: len(jobs)] if r["case"] == case)]
        probed = [r for r in reruns[len(jobs) :] if r["case"] == case]
        out[case] = Baseline(trials[case], chosen[case], seeds, probed)
    return out


def evaluate_goals(
    rows: dict[tuple[str, str], dict[str, Any]],
) -> dict[tuple[str, str], list[Goal | None]]:
    """Every row's goals; goal 4 on (a)'s reference row."""
    scale_rows = {s: row for (case, s), row in rows.items() if case == "a"}
    out: dict[tuple[str, str], list[Goal | None]] = {}
    for (case, scaling), row in rows.items():
        spread = goal_spread(scale_rows) if (case, scaling) == ("a", REFERENCE) else None
        out[case, scaling] = [goal_share(row), goal_kl(row), goal_mse(row), spread]
    return out


def write(
    text: str, record: dict[str, Any], args: argparse.Namespace, parts: dict[str, str]
) -> None:
    """Write the markdown and the JSON where the options (or the defaults) say.

    Beside the markdown go ``parts``: tables the documentation includes as they
    are (``<md stem>_<part>.md``), so that its figures have one source.
    """
    results = Path(__file__).parent / "results"
    md_path = args.md or (None if args.quick else results / "term_scale.md")
    json_path = args.json or (None if args.quick else results / "term_scale.json")
    if md_path is not None:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(text, encoding="utf-8")
        print(f"markdown written to {md_path}")
        for name, part in parts.items():
            path = md_path.with_name(f"{md_path.stem}_{name}.md")
            path.write_text(part, encoding="utf-8")
            print(f"table written to {path}")
    if json_path is not None:
        _machine.write_json(json_path, record)


def announce(args: argparse.Namespace, cfg: Config, machine: dict[str, Any]) -> None:
    """The printed header: title, machine, settings."""
    print("The term at any scale: loss scalings, a conv VAE, a rising KL")
    _machine.print_machine(machine)
    mode = " (--quick: a smoke test, not a result)" if args.quick else ""
    print(
        f"  settings: cases {','.join(cfg.cases)}, {cfg.seeds} seed(s), {cfg.rounds} rounds / "
        f"{cfg.conv_epochs} conv epochs, squeeze_epochs {cfg.squeeze_epochs}, {cfg.trials} "
        f"trial(s), {args.jobs} run(s) at a time{mode}",
        flush=True,
    )


Runs = list[dict[str, Any]]


def group(records: Runs, cfg: Config) -> tuple[dict[tuple[str, str], Runs], dict[str, Runs]]:
    """The term's runs by (case, scaling) in table order, and the rise runs by case."""
    terms: dict[tuple[str, str], Runs] = {}
    for case in cfg.cases:
        for scaling in scalings_of(case):
            terms[case, scaling] = [
                r
                for r in records
                if r["kind"] == "term"
                and r["case"] == case
                and r["scaling"] == scaling
                and r["alpha"] != MEAN_ALPHA
            ]
    free = {c: [r for r in records if r["kind"] == "free" and r["case"] == c] for c in cfg.cases}
    return terms, free


def mean_aimed(records: Runs, cfg: Config) -> dict[str, Runs]:
    """The `MEAN_ALPHA` term runs, by case."""
    return {
        c: [
            r
            for r in records
            if r["kind"] == "term" and r["alpha"] == MEAN_ALPHA and r["case"] == c
        ]
        for c in cfg.cases
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run every case's term, rise and fixed-weight runs; print and write the tables.

    Args:
        argv: Command-line arguments without the program name; None reads ``sys.argv``.

    Returns:
        The exit status.
    """
    args, cfg = parse(argv)
    command = " ".join(
        ["python benchmarks/term_scale.py", *(argv if argv is not None else sys.argv[1:])]
    )
    machine = _machine.describe(torch.device("cpu"))
    announce(args, cfg, machine)
    started = time.perf_counter()
    with Runner(args.jobs, progress) as runner:
        first = runner(term_jobs(cfg))
        terms, free = group(first, cfg)
        baselines = baselines_for(runner, cfg, terms)
    rows = {key: summarise(runs, baselines[key[0]]) for key, runs in terms.items()}
    goals = evaluate_goals(rows)
    record = build_record(args, cfg, command, machine, time.perf_counter() - started)
    record["runs"] = first + [r for b in baselines.values() for r in b.runs]
    record["fixed"] = {
        case: {"weight": b.chosen["weight"], "slope": b.slope, "fitted_slope": fit_slope(b.runs)}
        for case, b in baselines.items()
    }
    record["summary"] = {f"{case} {scaling}": row for (case, scaling), row in rows.items()}
    record["goals"] = {
        f"{case} {scaling}": [None if g is None else {"met": g[0], "figure": g[1]} for g in marks]
        for (case, scaling), marks in goals.items()
    }
    settle = settle_table(terms, mean_aimed(first, cfg), cfg)
    summary = summary_table(rows, free)
    text = markdown(record, rows, baselines, free, goals)
    text += "\n## Where the KL settles\n\n" + "\n".join(settle) + "\n"
    print()
    print(text)
    print(f"total {record['seconds']:.0f} s")
    parts = {"settle": "\n".join(settle) + "\n", "summary": "\n".join(summary) + "\n"}
    write(text, record, args, parts)
    return 0


def build_record(
    args: argparse.Namespace, cfg: Config, command: str, machine: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """The JSON record's head: command, machine, settings, data, time."""
    data = patches() if "b" in cfg.cases else None
    return {
        "command": command,
        "machine": machine,
        "quick": args.quick,
        "workers": args.jobs,
        "settings": {
            **{k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
            "targets": {c: TARGET[c] for c in cfg.cases},
            "scalings": {k: list(v) for k, v in SCALINGS.items()},
            "mlp": {"lr": MLP_LR, "batch": MLP_BATCH, "warmup_steps": WARMUP_STEPS},
            "conv": {"lr": CONV_LR, "batch": CONV_BATCH},
        },
        "patches": {"train": len(data.train), "test": len(data.test)} if data else None,
        "mean_image_mse": _patches.mean_image_mse(data) if data else None,
        "seconds": seconds,
    }


if __name__ == "__main__":
    sys.exit(main())
