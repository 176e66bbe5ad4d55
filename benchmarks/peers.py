"""Sixteen ways to hold a VAE's KL at a target, side by side on one data set, model and budget.

Every arm trains the same small VAE on the same data with the same optimizer,
step budget and tuning budget, in one run of this script:

- **data**: scikit-learn's bundled handwritten digits (1797 images of 8x8
  pixels, scaled to [0, 1]), split once with a fixed permutation into 1197
  training, 240 validation and 360 test images. Every arm trains on the
  training images; tuning reads the validation images only; the table reports
  the test images.
- **model**: an MLP VAE 64-128-16 (encoder 64 -> 128 -> 2x16, ReLU; decoder
  16 -> 128 -> 64, ReLU then a sigmoid), a Gaussian decoder with a *fixed*
  standard deviation ``SIGMA`` = 0.1 per pixel, so that the reconstruction
  term is ``sum((x - x_hat)^2) / (2 SIGMA^2)`` nats per image.
- **optimizer and budget**: Adam (lr 2e-3), batches of 128 (the last partial
  batch of an epoch is dropped), ``--epochs`` epochs; one minibatch forward
  pass and one Adam step per training step.

**Targets.** The ``beta = 1`` arm (the plain ELBO) runs first on every seed;
the KL it *settles at* is the mean over seeds of its last epoch's mean
minibatch KL (training images). The targets are fractions of it (default 20%,
45% and 70%). Every squeezing arm reaches its target by half of the training
(epoch ``E/2``); the second half measures how well it stays there.

**Arms.** With ``nll`` the reconstruction term above, ``kl`` the minibatch mean
KL per image and ``T`` the target:

- ``beta1``: ``nll + kl``, the reference (no target; its rows show how far the
  unconstrained model is from each target).
- ``fixed_beta``: ``nll + beta kl`` with one beta found by the tuning search.
- ``capacity``: capacity annealing (Burgess et al. 2018),
  ``nll + gamma |kl - C(t)|`` with ``C`` rising linearly per step from 0 at the
  start of training to ``T`` at half of it, then ``T``. Tuned: ``gamma``.
- ``geco``: a GECO-style multiplicative multiplier on the KL constraint,
  ``nll + lam kl`` with ``lam <- lam exp(alpha g_ema)`` after every step,
  ``g = kl / b - 1`` and ``g_ema`` its moving average (momentum 0.9);
  ``lam`` starts at 1. Tuned: ``alpha``.
- ``cooper``: the Lagrangian of the constrained problem ``min nll`` s.t.
  ``(kl - b) / b <= 0`` with cooper (``cooper-optim``): a ``DenseMultiplier``
  started at ``b`` (an effective beta of 1), ``SimultaneousOptimizer`` with
  the same Adam for the model and SGD with ``maximize=True`` for the
  multiplier. Tuned: the dual learning rate.
- ``nupi``: as ``cooper``, with cooper's ``nuPI`` dual optimizer (Sohrabi et
  al. 2024; ``Kp = NUPI_KP`` = 1, ``Ki`` = 1, ``ema_nu`` = 0) in place of SGD.
  Tuned: its learning rate.
- ``auglag``: as ``cooper``, with cooper's ``AugmentedLagrangian`` formulation:
  a quadratic penalty of coefficient ``c`` on the relative violation, and the
  multiplier's ascent at the rate ``c`` (the method of multipliers). Tuned:
  ``c``.
- ``pi``: a ControlVAE-style PI controller on beta: ``e = 1 - kl / b``,
  ``beta = Kp / (1 + exp(e)) + I`` with ``I <- I - Ki e`` after every step,
  ``Kp = 1``, ``I`` started so that beta starts at 1, beta clamped to
  ``[0, 1000]`` with the integral frozen at the clamp (anti-windup).
  Tuned: ``Ki``.
- ``lbo`` (ours): the LBO log-barrier through the package's PyTorch adapter.
  Goals: ``kl`` is a ``box_asymmetric`` spec (floor 0, healthy point
  ``T / 2``, steepness 200 beyond the ceiling) whose ceiling a
  ``ConstraintScheduler`` moves: discovered as the max minibatch KL of round
  1 (the loop trains on the plain MSE then), held in round 2, squeezed
  geometrically to ``T`` by round ``R/2``, with ``Backoff`` (reject rate above
  15% after a squeeze: half of it undone). ``mse`` (pixel MSE) is a
  ``minimize_soft`` spec whose scale is ``"auto"``, the median MSE of round 1,
  sharpened by the tuned calibration ``c``: the loss reads its log score
  divided by ``c``, i.e. a scale of ``c`` times the median. A second
  scheduler holds that scale while the ceiling is squeezed, then tightens it
  (``SqueezeSchedule.adaptive``, x0.8 per round whose reject rate is at most
  3%; ``Backoff`` undoes a tightening after which it exceeds 8%), as LBO's
  adaptive tightening does, so that the KL moves up to the ceiling as far as
  the barrier allows. From round 2 the
  loss is ``LBOObjective({"vae": ["mse", "kl"]})`` on log scores
  (``log=True``): ``mse / (c s) - log((b - kl) / (b - T/2))`` (halved), an
  interior-point barrier whose KL settles at a gap below the ceiling ``b``
  that shrinks with ``c``. Every step is checked on the same batch and noise
  after it is taken and undone by ``RollbackGuard.restore_if`` where the
  objective's reject flag is set or where the step took the KL across the
  ceiling. (A round is ``passes`` = 5 passes over the 1197 images, 45 steps:
  one pass is too few steps to discover a ceiling from.) Tuned: ``c``.
- ``chance`` (ours): ``nll + term(kl, main=nll)`` with the package's
  ``TorchConstraintTerm("kl", target=T, squeeze_epochs=R/2 - 2)`` fed the
  per-image KL: its ceiling is discovered as the max of round 1 (while the
  term weighs the KL by 0: the model trains on ``nll`` alone), held in round
  2, squeezed geometrically to ``T`` by round ``R/2``, and a
  chance-constrained multiplier, whose weight is relative to ``nll``'s level,
  keeps the KL under the ceiling in force on all but ``alpha`` = 5% of each
  round's steps. Never tuned: every setting is the package's default.
- ``<peer>_m``, for every set-point peer (capacity, geco, cooper, nupi,
  auglag, pi): the same method aiming at ``MARGIN`` = 0.95 of its bound, so
  that "steps over the bound" is compared at an aim below it, as ours aims.

The peers' "current bound" ``b`` (the set-point of ``geco``, ``cooper`` and
``pi``) is held at the ``beta = 1`` KL in rounds 1 and 2 and then squeezed
geometrically, round by round, to ``T`` by epoch ``E/2``: the same shape as
ours, which starts from its own discovered ceiling instead. The current bound of ``capacity`` is
``C(t)``; that of ``fixed_beta`` and ``beta1`` is ``T`` throughout.

**Zero tuning.** Every arm also runs on every seed with its ``DEFAULTS`` value,
what a user who runs each method once would pick: 1 for every gain or rate
on a relative violation (geco's alpha, the dual rates of cooper and nupi,
auglag's penalty, pi's Ki), ``gamma`` = 1000 for capacity (Burgess et al.
2018), ``beta = 1 / fraction`` for fixed_beta (a KL inversely proportional to
beta), ``c`` = 1 for lbo (no sharpening) and ours as it is.

**Step cost.** After the runs, every method trains a 4-round run alone in
the main process, 3 times in turn after a warm-up; the median wall time per
step divided by beta1's is its cost.

**Tuning rule (the same budget for every arm but beta1 and chance).** For each target,
``K`` (``--trials``, default 4) full-length runs on the first seed, over the
arm's one main hyperparameter; the run chosen is the one with the smallest
*criterion* = ``|validation KL / T - 1|`` + the share of training steps
after ``E/2`` whose minibatch KL is above ``T``. The trials of every arm but
``fixed_beta`` are a fixed log-spaced grid (``GRIDS``; ours: ``c`` in
0.003, 0.006, 0.012, 0.024). ``fixed_beta`` searches: its first trial is
``beta = 1 / fraction`` and each next one solves the secant of
``log KL`` against ``log beta`` through its last two points (the first
through the ``beta = 1`` run) for ``T``, each move limited to a factor of 10.
The chosen trial *is* that arm's first-seed run (the test images played no
part in choosing it); the other seeds rerun the chosen value.

**Equal KL and the Pareto view.** "MSE at T" moves each arm's test MSE to
KL = T along the slope of log MSE against log KL through fixed_beta's runs
(which differ only in beta); ours is compared with the best peer at T among
those within 10% of T. The Pareto view lists every tuned and zero-tuning
row by steps over T after E/2 and test MSE and marks those no other row beats
on both.

**Metrics** (per arm and target; mean and standard deviation over seeds):
final test KL and its relative error to ``T``; the *settling step* (the
first step of the first epoch from which every epoch's mean minibatch KL lies
within 5% of ``T``; the step count when it never settles); the share of
steps whose minibatch KL (the training forward pass, before the step, of the
model the arm keeps) is above the current bound, and above ``T`` after
``E/2``; the largest overshoot ``max (kl - b) / T`` over all steps; test MSE
per pixel and ELBO per image (8 draws of the latent noise, fixed); wall time
per training step (CPU time is shared with whatever else runs on the
machine).

Usage:
    python benchmarks/peers.py [--seeds N] [--epochs E] [--targets 0.2,0.45,0.7]
        [--trials K] [--jobs J] [--threads T] [--quick] [--json PATH] [--md PATH]

Run it against the source tree with ``PYTHONPATH=. python benchmarks/peers.py
--threads 1 --jobs 2`` from the repository root. The full run (16 arms, 5
seeds, 120 epochs, three targets, tuned and zero-tuning: 557 runs) takes about
25 minutes on a 2-core CPU, two runs at a time, and writes
``benchmarks/results/peers.md`` and ``peers.json`` (unless ``--md`` /
``--json`` say where). ``--quick`` (one seed, 12 epochs, the 45% target, 2
trials) is a smoke test, not a result: it writes only the files it is given.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import _machine
import numpy as np
import torch
from torch import nn

from constraint_sched import (
    Backoff,
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    HoldPhase,
    Phase,
    SchedulerCollection,
    SqueezeSchedule,
)
from constraint_sched.adapters.torch import (
    LBOObjective,
    RollbackGuard,
    TorchConstraintTerm,
    TorchScheduler,
)

SET_POINT = ("capacity", "geco", "cooper", "nupi", "auglag", "pi")
"""The peers that aim at a set-point; each also runs as ``<name>_m``, aiming at ``MARGIN`` of it."""

MARGIN = 0.95
"""The margin variants' aim, a fraction of the bound (their bound stays the same)."""

OURS = ("lbo", "chance")
"""Our arms: the LBO barrier, and the chance-constrained multiplier (`TorchConstraintTerm`)."""

ARMS = (
    "beta1",
    "fixed_beta",
    *(name for peer in SET_POINT for name in (peer, f"{peer}_m")),
    *OURS,
)
"""Every arm, in the order of the tables."""


def base(arm: str) -> str:
    """The method of an arm: its name without the margin variant's ``_m``."""
    return arm[:-2] if arm.endswith("_m") else arm


HYPER = {
    "fixed_beta": "beta",
    "capacity": "gamma",
    "geco": "alpha",
    "cooper": "dual_lr",
    "nupi": "dual_lr",
    "auglag": "penalty",
    "pi": "Ki",
    "lbo": "c",
    "chance": "alpha",
}
"""The main hyperparameter of each method (``chance`` is never tuned: alpha is the goal's 5%)."""

GRIDS = {
    "capacity": (5.0, 20.0, 80.0, 320.0),
    "geco": (0.03, 0.1, 0.3, 1.0),
    "cooper": (0.3, 1.0, 3.0, 10.0),
    "nupi": (0.3, 1.0, 3.0, 10.0),
    "auglag": (0.3, 1.0, 3.0, 10.0),
    "pi": (0.03, 0.1, 0.3, 1.0),
    "lbo": (0.003, 0.006, 0.012, 0.024),
}
"""The grids of the tuned methods; ``--trials`` values spread over each grid are tried."""

DEFAULTS = {
    "capacity": 1000.0,
    "geco": 1.0,
    "cooper": 1.0,
    "nupi": 1.0,
    "auglag": 1.0,
    "pi": 1.0,
    "lbo": 1.0,
    "chance": 0.05,
}
"""Each method's value without a tuning run (fixed_beta: ``1 / fraction``); see the docstring."""

NUPI_KP = 1.0
"""The nuPI dual optimizer's proportional gain (its integral gain is 1, its ``ema_nu`` 0)."""

SIGMA = 0.1
"""The decoder's fixed standard deviation per pixel."""

PIXELS, HIDDEN, LATENT = 64, 128, 16
SPLIT = (360, 240)
"""Test and validation images; the rest of the 1797 train."""

KL_HEALTHY = 0.5
"""Ours: the KL's healthy point, a fraction of the target (the barrier's inner edge at the end)."""

KL_STEEPNESS = 200.0
"""Ours: the KL spec's steepness beyond its ceiling (LBO's default is 20)."""

MSE_SCALE_FLOOR = 5e-4
"""Ours: the smallest reconstruction scale (LBO's floor for a soft scale)."""

SHARPEN_FACTOR, SHARPEN_MAX_REJECTS, SHARPEN_BACKOFF = 0.8, 0.03, 0.08
"""Ours, after the squeeze: the scale's factor per round, the reject rate up to which it
tightens, and the reject rate above which the last tightening is undone."""

SETTLE_BAND = 0.05
"""The settling step's band around the target, relative."""

EVAL_DRAWS = 8
"""Latent noise draws per test image for the MSE and the ELBO."""


@dataclass(frozen=True)
class Config:
    """One run's settings."""

    epochs: int = 120
    passes: int = 5
    batch: int = 128
    lr: float = 2e-3
    seeds: int = 5
    targets: tuple[float, ...] = (0.2, 0.45, 0.7)
    trials: int = 4

    @property
    def rounds(self) -> int:
        """Scheduler epochs ("rounds") in the run: ``passes`` passes over the data each."""
        return self.epochs // self.passes

    @property
    def half_round(self) -> int:
        """The round by which every schedule has reached its target."""
        return self.rounds // 2

    @property
    def half(self) -> int:
        """The pass (data epoch) by which every schedule has reached its target."""
        return self.half_round * self.passes

    def round_of(self, epoch: int) -> int:
        """The round (1-based) of a pass (1-based)."""
        return (epoch - 1) // self.passes + 1


QUICK = Config(epochs=12, passes=1, seeds=1, targets=(0.45,), trials=2)
"""``--quick``'s configuration: a smoke test of the script, not a result."""


# -- data and model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    """The fixed split of the digits, as float32 tensors of shape (n, 64) in [0, 1]."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor


def load_data() -> Data:
    """The digits, scaled to [0, 1] and split by one fixed permutation."""
    from sklearn.datasets import load_digits

    pixels = load_digits().data.astype(np.float32) / 16.0
    order = np.random.default_rng(0).permutation(len(pixels))
    n_test, n_val = SPLIT
    test, val, train = np.split(pixels[order], [n_test, n_test + n_val])
    return Data(torch.from_numpy(train), torch.from_numpy(val), torch.from_numpy(test))


class VAE(nn.Module):
    """The MLP VAE 64-128-16 with a sigmoid-mean Gaussian decoder of fixed variance."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(PIXELS, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT)
        )
        self.decoder = nn.Sequential(
            nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, PIXELS), nn.Sigmoid()
        )

    def per_image(self, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's squared error (summed over pixels) and KL, both of shape (n,)."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mu + noise * torch.exp(0.5 * logvar)
        squared = ((self.decoder(z) - x) ** 2).sum(dim=-1)
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(dim=-1)
        return squared, kl

    def forward(
        self, x: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's pixel MSE, KL per image and reconstruction NLL per image (0-d tensors)."""
        squared, kl = self.per_image(x, noise)
        return squared.mean() / PIXELS, kl.mean(), squared.mean() / (2 * SIGMA**2)


def evaluate(model: VAE, images: torch.Tensor) -> dict[str, float]:
    """KL per image, pixel MSE and ELBO per image (nats, constants included) on ``images``."""
    generator = torch.Generator().manual_seed(12345)
    log_norm = PIXELS * math.log(SIGMA * math.sqrt(2 * math.pi))
    mse, kls, elbo = [], [], []
    with torch.no_grad():
        for _ in range(EVAL_DRAWS):
            noise = torch.randn(len(images), LATENT, generator=generator)
            squared, kl = model.per_image(images, noise)
            mse.append(float(squared.mean()) / PIXELS)
            kls.append(float(kl.mean()))
            elbo.append(float((-squared / (2 * SIGMA**2) - log_norm - kl).mean()))
    return {
        "kl": statistics.fmean(kls),
        "mse": statistics.fmean(mse),
        "elbo": statistics.fmean(elbo),
    }


# -- bounds -----------------------------------------------------------------------------------


def squeeze_bound(round_: int, start: float, target: float, half_round: int) -> float:
    """The peers' bound: ``start`` in rounds 1-2, geometric to ``target`` by ``half_round``."""
    squeeze_rounds = max(half_round - 2, 1)
    step = min(max(round_ - 2, 0), squeeze_rounds)
    return start * (target / start) ** (step / squeeze_rounds)


# -- the arms ---------------------------------------------------------------------------------


@dataclass
class Trace:
    """What a run records at every training step, and per epoch."""

    kl: list[float] = field(default_factory=list)
    bound: list[float] = field(default_factory=list)
    epoch_kl: list[float] = field(default_factory=list)
    rejected: int = 0
    notes: list[str] = field(default_factory=list)


class PeerArm:
    """A peer's step rule: its loss and the update of its weight after the step."""

    def __init__(
        self, model: VAE, cfg: Config, target: float, start: float, hp: float, aim: float = 1.0
    ) -> None:
        self.model, self.cfg, self.target, self.start, self.hp = model, cfg, target, start, hp
        self.aim = aim  # the share of the bound the arm aims at (MARGIN for a margin variant)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        self.steps_per_epoch = 1  # set by the loop

    def bound(self, epoch: int, step: int) -> float:
        """The bound in force at ``step`` (0-based) of ``epoch`` (1-based)."""
        return self.target

    def step(self, x: torch.Tensor, noise: torch.Tensor, bound: float) -> float:
        """One training step aimed at ``aim * bound``; the minibatch KL of its forward pass."""
        aim = self.aim * bound
        _, kl, nll = self.model(x, noise)
        loss = self.loss(kl, nll, aim)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        value = float(kl.detach())
        self.update(value, aim)
        return value

    def loss(self, kl: torch.Tensor, nll: torch.Tensor, bound: float) -> torch.Tensor:
        """The step's loss."""
        return nll + self.hp * kl

    def update(self, kl: float, bound: float) -> None:
        """The weight's update after the step (none for a fixed weight)."""


class Beta1(PeerArm):
    """The plain ELBO."""

    def loss(self, kl: torch.Tensor, nll: torch.Tensor, bound: float) -> torch.Tensor:
        """The step's loss."""
        return nll + kl


class FixedBeta(PeerArm):
    """``nll + beta kl`` with the tuned beta."""


class Capacity(PeerArm):
    """``nll + gamma |kl - C(t)|``, ``C`` rising linearly from 0 to the target by ``E/2``."""

    def bound(self, epoch: int, step: int) -> float:
        """The bound in force at ``step`` of ``epoch``."""
        ramp = self.cfg.half * self.steps_per_epoch
        done = (epoch - 1) * self.steps_per_epoch + step
        return self.target * min(1.0, done / ramp)

    def loss(self, kl: torch.Tensor, nll: torch.Tensor, bound: float) -> torch.Tensor:
        """The step's loss."""
        return nll + self.hp * (kl - bound).abs()


class Scheduled(PeerArm):
    """A peer that follows the squeezed set-point ``b``."""

    def bound(self, epoch: int, step: int) -> float:
        """The bound in force at ``step`` of ``epoch``."""
        return squeeze_bound(self.cfg.round_of(epoch), self.start, self.target, self.cfg.half_round)


class Geco(Scheduled):
    """A multiplicative multiplier on the KL: ``lam <- lam exp(alpha * ema(kl / b - 1))``."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.lam, self.ema = 1.0, None

    def loss(self, kl: torch.Tensor, nll: torch.Tensor, bound: float) -> torch.Tensor:
        """The step's loss."""
        return nll + self.lam * kl

    def update(self, kl: float, bound: float) -> None:
        """The weight's update after the step."""
        g = kl / bound - 1.0
        self.ema = g if self.ema is None else 0.9 * self.ema + 0.1 * g
        self.lam = min(max(self.lam * math.exp(self.hp * self.ema), 1e-4), 1e4)


class PI(Scheduled):
    """A ControlVAE-style PI controller on beta, with anti-windup."""

    KP, BETA_MAX = 1.0, 1000.0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.integral = 1.0 - self.KP / 2  # beta = 1 at e = 0
        self.beta = 1.0

    def loss(self, kl: torch.Tensor, nll: torch.Tensor, bound: float) -> torch.Tensor:
        """The step's loss."""
        return nll + self.beta * kl

    def update(self, kl: float, bound: float) -> None:
        """The weight's update after the step."""
        e = 1.0 - kl / bound
        proportional = self.KP / (1.0 + math.exp(e))
        integral = self.integral - self.hp * e
        beta = proportional + integral
        if 0.0 <= beta <= self.BETA_MAX:
            self.integral = integral  # anti-windup: integrate only while unclamped
        self.beta = min(max(proportional + self.integral, 0.0), self.BETA_MAX)


class Cooper(Scheduled):
    """The Lagrangian of ``min nll s.t. (kl - b) / b <= 0``, solved by cooper (gradient ascent)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        import cooper

        arm = self
        formulation, penalty = self.formulation(cooper)

        class Problem(cooper.ConstrainedMinimizationProblem):
            def __init__(self) -> None:
                super().__init__()
                multiplier = cooper.multipliers.DenseMultiplier(init=torch.tensor([arm.start]))
                self.kl_constraint = cooper.Constraint(
                    constraint_type=cooper.ConstraintType.INEQUALITY,
                    formulation_type=formulation,
                    multiplier=multiplier,
                    penalty_coefficient=penalty,
                )

            def compute_cmp_state(
                self, x: torch.Tensor, noise: torch.Tensor, bound: float
            ) -> cooper.CMPState:
                _, kl, nll = arm.model(x, noise)
                violation = ((kl - bound) / bound).reshape(1)
                return cooper.CMPState(
                    loss=nll,
                    observed_constraints={self.kl_constraint: cooper.ConstraintState(violation)},
                    misc={"kl": kl.detach()},
                )

        self.problem = Problem()
        dual = self.dual_optimizer(cooper, self.problem.dual_parameters())
        self.cooper = cooper.optim.SimultaneousOptimizer(
            cmp=self.problem, primal_optimizers=self.optimizer, dual_optimizers=dual
        )

    def formulation(self, cooper: Any) -> tuple[Any, Any]:
        """The formulation and its penalty coefficient (None for the Lagrangian)."""
        return cooper.formulations.Lagrangian, None

    def dual_optimizer(self, cooper: Any, params: Any) -> torch.optim.Optimizer:
        """The multiplier's optimizer: SGD ascent at the tuned rate."""
        return torch.optim.SGD(params, lr=self.hp, maximize=True)

    def step(self, x: torch.Tensor, noise: torch.Tensor, bound: float) -> float:
        """One primal-dual step of cooper aimed at ``aim * bound``; the forward pass's KL."""
        rollout = self.cooper.roll(
            compute_cmp_state_kwargs={"x": x, "noise": noise, "bound": self.aim * bound}
        )
        return float(rollout.cmp_state.misc["kl"])


class NuPI(Cooper):
    """cooper's Lagrangian with its nuPI dual optimizer (Sohrabi et al. 2024)."""

    def dual_optimizer(self, cooper: Any, params: Any) -> torch.optim.Optimizer:
        """NuPI at the tuned rate, ``Kp = NUPI_KP``, ``Ki = 1``."""
        return cooper.optim.nuPI(params, lr=self.hp, Kp=NUPI_KP, Ki=1.0, ema_nu=0.0, maximize=True)


class AugLag(Cooper):
    """cooper's augmented Lagrangian: the multiplier's rate is the penalty coefficient."""

    def formulation(self, cooper: Any) -> tuple[Any, Any]:
        """The augmented Lagrangian, penalty coefficient ``hp``."""
        penalty = cooper.penalty_coefficients.DensePenaltyCoefficient(init=torch.tensor([self.hp]))
        return cooper.formulations.AugmentedLagrangian, penalty


PEERS: dict[str, type[PeerArm]] = {
    "beta1": Beta1,
    "fixed_beta": FixedBeta,
    "capacity": Capacity,
    "geco": Geco,
    "cooper": Cooper,
    "nupi": NuPI,
    "auglag": AugLag,
    "pi": PI,
}


def batches(n: int, size: int) -> list[torch.Tensor]:
    """One epoch's shuffled index batches of ``size``; the last partial batch is dropped."""
    order = torch.randperm(n)
    return [order[i : i + size] for i in range(0, n - size + 1, size)]


def train_peer(
    arm: str, model: VAE, cfg: Config, data: Data, target: float, start: float, hp: float
) -> Trace:
    """Train ``model`` by peer ``arm``; the step-by-step trace."""
    rule = PEERS[base(arm)](model, cfg, target, start, hp, MARGIN if arm.endswith("_m") else 1.0)
    rule.steps_per_epoch = len(data.train) // cfg.batch
    trace = Trace()
    for epoch in range(1, cfg.epochs + 1):
        kls = []
        for i, idx in enumerate(batches(len(data.train), cfg.batch)):
            bound = rule.bound(epoch, i)
            kl = rule.step(data.train[idx], torch.randn(len(idx), LATENT), bound)
            trace.kl.append(kl)
            trace.bound.append(bound)
            kls.append(kl)
        trace.epoch_kl.append(statistics.fmean(kls))
    return trace


def train_chance(model: VAE, cfg: Config, data: Data, target: float, alpha: float) -> Trace:
    """Train ``model`` by ours: ``nll + term(kl)`` with the package's `TorchConstraintTerm`."""
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    term = TorchConstraintTerm(
        "kl",
        target=target,
        squeeze_epochs=max(cfg.half_round - 2, 1),
        alpha=alpha,
        echo=False,
    )
    trace = Trace()
    for epoch in range(1, cfg.epochs + 1):
        kls = []
        for idx in batches(len(data.train), cfg.batch):
            x, noise = data.train[idx], torch.randn(len(idx), LATENT)
            bound = term.bound
            squared, kl = model.per_image(x, noise)
            nll = squared.mean() / (2 * SIGMA**2)
            loss = nll + term(kl, main=nll)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(kl.detach().mean())
            trace.kl.append(value)
            trace.bound.append(bound)
            kls.append(value)
        trace.epoch_kl.append(statistics.fmean(kls))
        if epoch % cfg.passes == 0:
            trace.notes += [e.message for e in term.epoch_end() if e.kind == "backed_off"]
    return trace


def lbo_schedulers(cfg: Config, target: float) -> TorchScheduler:
    """Ours: the KL ceiling (discovered, held, squeezed, backed off) and the auto MSE scale."""
    kl_ceiling = ConstraintScheduler(
        ConstraintSpec(
            "kl",
            "box_asymmetric",
            lower=0.0,
            healthy=KL_HEALTHY * target,
            upper=1e9,
            steepness=KL_STEEPNESS,
        ),
        discovery=DiscoveryPhase(epochs=1, statistic="max"),
        hold=HoldPhase(epochs=1),
        squeeze=SqueezeSchedule.geometric(target=target, epochs=max(cfg.half_round - 2, 1)),
        backoff=Backoff(max_reject_rate=0.15, factor=0.5, cooldown=1),
    )
    mse_scale = ConstraintScheduler(
        ConstraintSpec("mse", "minimize_soft", scale="auto"),
        discovery=DiscoveryPhase(statistic="median"),
        # Held while the ceiling is squeezed, then sharpened while the barrier allows it.
        hold=HoldPhase(epochs=max(cfg.half_round - 1, 1)),
        squeeze=SqueezeSchedule.adaptive(
            target=MSE_SCALE_FLOOR, factor=SHARPEN_FACTOR, max_reject_rate=SHARPEN_MAX_REJECTS
        ),
        backoff=Backoff(max_reject_rate=SHARPEN_BACKOFF, factor=1.0, cooldown=2),
    )
    return TorchScheduler(SchedulerCollection([kl_ceiling, mse_scale]))


def train_lbo(model: VAE, cfg: Config, data: Data, target: float, c: float) -> Trace:
    """Train ``model`` by ours: the LBO barrier with rollback, bounds set by the adapter."""
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = lbo_schedulers(cfg, target)
    guard = RollbackGuard(model, optimizer)
    lbo = LBOObjective({"vae": ["mse", "kl"]})

    def objective(mse: torch.Tensor, kl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if sched.phase_of("mse") is Phase.DISCOVERY:  # epoch 1: plain MSE while the scale is found
            return mse, ~torch.isfinite(mse)
        scores = {"mse": sched.log_score("mse", mse) / c, "kl": sched.log_score("kl", kl)}
        result = lbo(scores, log=True)
        return result.loss, result.reject

    trace = Trace()
    for epoch in range(1, cfg.epochs + 1):
        ceiling = sched.spec("kl").upper
        bound = math.inf if sched.phase_of("kl") is Phase.DISCOVERY else ceiling
        kls = []
        for idx in batches(len(data.train), cfg.batch):
            x, noise = data.train[idx], torch.randn(len(idx), LATENT)
            guard.snapshot()
            mse, kl, _ = model(x, noise)
            before = sched.violation("kl", kl.detach())
            loss, _ = objective(mse, kl)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # the updated model, same batch and noise
                mse_after, kl_after, _ = model(x, noise)
                _, reject = objective(mse_after, kl_after)
                after = sched.violation("kl", kl_after)
                # The barrier's verdict: a step that took the KL across the ceiling.
                reject = reject | ((after > 0) & (before <= 0))
            guard.restore_if(reject)
            sched.observe({"mse": mse_after, "kl": kl_after}, accepted=~reject)
            sched.reject(reject)
            value = float(kl.detach())
            trace.kl.append(value)
            trace.bound.append(bound)
            kls.append(value)
        trace.epoch_kl.append(statistics.fmean(kls))
        if epoch % cfg.passes == 0:  # the end of a round: the scheduler's epoch
            trace.notes += [e.message for e in sched.advance_epoch() if e.kind == "backed_off"]
            last = sched.core["kl"].last_epoch
            trace.rejected += 0 if last is None else last.rejects
    return trace


# -- one run, its figures ---------------------------------------------------------------------


def run(
    arm: str, cfg: Config, data: Data, target: float, start: float, hp: float, seed: int
) -> dict[str, Any]:
    """Train one arm on one seed; its figures against ``target`` (validation and test)."""
    torch.manual_seed(seed)
    model = VAE()
    started = time.perf_counter()
    if arm == "lbo":
        trace = train_lbo(model, cfg, data, target, hp)
    elif arm == "chance":
        trace = train_chance(model, cfg, data, target, hp)
    else:
        trace = train_peer(arm, model, cfg, data, target, start, hp)
    seconds = time.perf_counter() - started
    model.eval()
    val, test = evaluate(model, data.val), evaluate(model, data.test)
    record = {
        "arm": arm,
        "seed": seed,
        "hp": hp,
        "val_kl": val["kl"],
        "test_kl": test["kl"],
        "test_mse": test["mse"],
        "test_elbo": test["elbo"],
        "ms_per_step": 1e3 * seconds / len(trace.kl),
        "rejected": trace.rejected,
        "steps": len(trace.kl),
        "final_train_kl": trace.epoch_kl[-1],
        "notes": trace.notes,
    }
    figures = against(trace, target, cfg)
    return {**record, **figures, "kl_error": test["kl"] / target - 1.0, "trace": trace}


def against(trace: Trace, target: float, cfg: Config) -> dict[str, Any]:
    """The figures of a run that depend on the target.

    Args:
        trace: The run's steps.
        target: The final target ``T``.
        cfg: The run's settings (for ``E/2``).

    Returns:
        The test KL's error is added by the caller; here: the settling step, the
        shares above the bound and above ``T`` after ``E/2``, the largest overshoot.
    """
    kl = np.asarray(trace.kl)
    bound = np.asarray(trace.bound)
    per_epoch = len(kl) // cfg.epochs
    after = slice(cfg.half * per_epoch, len(kl))
    finite = np.isfinite(bound)
    overshoot = (kl[finite] - bound[finite]) / target
    return {
        "target": target,
        "settling_step": settling_step(trace.epoch_kl, target, per_epoch),
        "above_bound": float(np.mean(kl > bound)),
        "above_target_after": float(np.mean(kl[after] > target)),
        "max_overshoot": float(max(overshoot.max(initial=0.0), 0.0)),
    }


def for_target(record: dict[str, Any], target: float, cfg: Config) -> dict[str, Any]:
    """A ``beta1`` run's figures against ``target``: its bound is ``T`` throughout."""
    trace: Trace = record["trace"]
    fixed = replace(trace, bound=[target] * len(trace.kl))
    return {**record, **against(fixed, target, cfg), "kl_error": record["test_kl"] / target - 1}


def settling_step(epoch_kl: Sequence[float], target: float, per_epoch: int) -> int:
    """The first step of the first epoch from which every epoch's mean KL is within the band."""
    settled = len(epoch_kl)
    for i in range(len(epoch_kl) - 1, -1, -1):
        if abs(epoch_kl[i] / target - 1.0) > SETTLE_BAND:
            break
        settled = i
    return settled * per_epoch


def criterion(record: dict[str, Any]) -> float:
    """The tuning criterion: validation KL's relative error plus the share above ``T`` after E/2."""
    return abs(record["val_kl"] / record["target"] - 1.0) + record["above_target_after"]


def grid(arm: str, k: int) -> list[float]:
    """``k`` values spread over the arm's grid (both ends included where ``k`` >= 2)."""
    values = GRIDS[arm]
    if k >= len(values):
        return list(values)
    picks = np.linspace(0, len(values) - 1, k).round().astype(int)
    return [values[i] for i in picks]


def next_beta(points: list[tuple[float, float]], target: float) -> float:
    """The secant of log KL against log beta through the last two points, solved for ``target``."""
    (b0, k0), (b1, k1) = points[-2], points[-1]
    slope = (math.log(k1) - math.log(k0)) / (math.log(b1) - math.log(b0) or 1e-12)
    if not slope < 0 or not math.isfinite(slope):
        slope = -1.0  # KL falls as beta grows; assume KL ~ 1 / beta where the data says nothing
    move = (math.log(target) - math.log(k1)) / slope
    return b1 * math.exp(min(max(move, -math.log(10)), math.log(10)))


def fixed_beta_chain(
    cfg: Config, target: float, fraction: float, start: float, anchor: tuple[float, float]
) -> list[dict[str, Any]]:
    """``fixed_beta``'s trials on seed 0: ``1 / fraction`` first, then the secant of log KL."""
    trials: list[dict[str, Any]] = []
    points = [anchor]
    beta = 1.0 / fraction
    for _ in range(cfg.trials):
        record = run("fixed_beta", cfg, _data(), target, start, beta, seed=0)
        trials.append(record)
        points.append((beta, max(record["val_kl"], 1e-6)))
        beta = next_beta(points, target)
    return trials


# -- running many runs on the CPUs --------------------------------------------------------

_DATA: Data | None = None


def _data() -> Data:
    """The digits, loaded once per process."""
    global _DATA
    if _DATA is None:
        _DATA = load_data()
    return _DATA


def _task(job: tuple[Any, ...]) -> Any:
    """One pool job: ``("run", arm, cfg, target, start, hp, seed)`` or ``("chain", ...)``."""
    torch.set_num_threads(1)
    kind, *args = job
    if kind == "chain":
        return fixed_beta_chain(*args)
    arm, cfg, target, start, hp, seed = args
    return run(arm, cfg, _data(), target, start, hp, seed)


def run_all(jobs: list[tuple[Any, ...]], workers: int) -> list[Any]:
    """Every job, in order; ``workers`` processes (1: in this one)."""
    if workers <= 1:
        return [_task(job) for job in jobs]
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.map(_task, jobs, chunksize=1)


def step_costs(cfg: Config, data: Data, repeats: int) -> dict[str, float]:
    """Each method's wall time per step over its whole run, divided by beta1's, in this process.

    The methods run one after another, ``repeats`` times in turn (the median is
    kept), on 4 rounds each so that every phase of ours is in the count.
    """
    short = replace(cfg, epochs=4 * cfg.passes)
    methods = ("beta1", "fixed_beta", *SET_POINT, *OURS)
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    for turn in range(repeats + 1):  # the first turn warms up and is not counted
        for method in methods:
            hp = DEFAULTS.get(method, 1.0)
            record = run(method, short, data, 5.0, 20.0, hp, seed=0)
            if turn:
                seconds[method].append(record["ms_per_step"])
    plain = statistics.median(seconds["beta1"])
    return {m: statistics.median(v) / plain for m, v in seconds.items()}


# -- tables -----------------------------------------------------------------------------------

METRICS = (
    "test_kl",
    "kl_error",
    "above_bound",
    "above_target_after",
    "max_overshoot",
    "settling_step",
    "test_mse",
    "test_elbo",
    "ms_per_step",
)


def summarise(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over seeds of every metric (sd 0 for one seed)."""
    out = {}
    for name in METRICS:
        values = [float(r[name]) for r in records]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        out[name] = {"mean": statistics.fmean(values), "sd": sd}
    return out


def cell(stat: dict[str, float], scale: float = 1.0, digits: int = 2, sign: bool = False) -> str:
    """``mean ± sd``, scaled."""
    fmt = f"{'+' if sign else ''}.{digits}f"
    return f"{stat['mean'] * scale:{fmt}} ± {stat['sd'] * scale:.{digits}f}"


def kl_slope(rows: dict[str, dict[str, Any]]) -> float:
    """The slope of log(test MSE) against log(test KL) along ``fixed_beta``'s runs at one target.

    Every trial and seed of ``fixed_beta`` differs from the others only in its
    beta, so the least-squares slope through them is the data's own exchange
    rate between KL and reconstruction near the target; the slope is
    -0.5 where they span too little KL to fit one.
    """
    runs = [*rows["fixed_beta"]["trial_records"], *rows["fixed_beta"]["seeds"]]
    x = np.log([r["test_kl"] for r in runs])
    y = np.log([r["test_mse"] for r in runs])
    if len(runs) < 2 or float(np.ptp(x)) < 0.02:
        return -0.5
    slope = float(np.polyfit(x, y, 1)[0])
    return slope if math.isfinite(slope) and slope < 0 else -0.5


def at_target(summary: dict[str, dict[str, float]], target: float, slope: float) -> float:
    """The test MSE moved along the slope from the arm's test KL to ``T``: "at equal KL"."""
    kl = summary["test_kl"]["mean"]
    return summary["test_mse"]["mean"] * (target / kl) ** slope if kl > 0 else math.inf


def hp_text(arm: str, hp: float) -> str:
    """The hyperparameter cell."""
    if arm == "beta1":
        return "-"
    return f"{HYPER[base(arm)]} = {hp:.4g}"


def table(target: float, rows: dict[str, dict[str, Any]], column: str, slope: float) -> list[str]:
    """The markdown table of one target, for ``column`` ``"summary"`` (tuned) or ``"default"``."""
    lines = [
        "| arm | hyperparameter | tuning runs | test KL | KL error % | above bound % "
        "| above T after E/2 % | max overshoot % | test MSE x1e3 | MSE at T x1e3 | test ELBO |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        row = rows[arm]
        s = row[column]
        hp = row["hp"] if column == "summary" else row["default_hp"]
        runs = 0 if column == "default" or arm in ("beta1", "chance") else len(row["trials"])
        name = f"**{arm}** (ours)" if arm in OURS else arm
        lines.append(
            f"| {name} | {hp_text(arm, hp)} | {runs} | {cell(s['test_kl'])} "
            f"| {cell(s['kl_error'], 100, 1, True)} | {cell(s['above_bound'], 100, 1)} "
            f"| {cell(s['above_target_after'], 100, 1)} | {cell(s['max_overshoot'], 100, 1)} "
            f"| {cell(s['test_mse'], 1e3, 2)} | {at_target(s, target, slope) * 1e3:.2f} "
            f"| {cell(s['test_elbo'], 1, 1)} |"
        )
    return lines


def pareto(target: float, rows: dict[str, dict[str, Any]], slope: float) -> list[str]:
    """Steps over ``T`` after E/2 against test MSE, tuned and zero-tuning runs; * on the front."""
    points = []
    for arm in ARMS[1:]:
        for column, label in (("summary", "tuned"), ("default", "zero tuning")):
            if column == "default" and arm == "chance":
                continue  # ours has no tuning: its one row is both
            s = rows[arm][column]
            points.append(
                (
                    arm,
                    label if arm != "chance" else "zero tuning",
                    s["above_target_after"]["mean"],
                    s["test_mse"]["mean"],
                    s["kl_error"]["mean"],
                )
            )
    lines = [
        "| arm | runs | above T after E/2 % | test MSE x1e3 | KL error % | on the front |",
        "|---|---|---|---|---|---|",
    ]
    for arm, label, over, mse, err in sorted(points, key=lambda p: (p[3], p[2])):
        dominated = any(
            (o <= over and m <= mse) and (o < over or m < mse) for _, _, o, m, _ in points
        )
        name = f"**{arm}**" if arm in OURS else arm
        lines.append(
            f"| {name} | {label} | {over * 100:.1f} | {mse * 1e3:.2f} | {err * 100:+.1f} "
            f"| {'' if dominated else '*'} |"
        )
    return lines


def goals(
    arm: str, target: float, rows: dict[str, dict[str, Any]], slope: float, costs: dict[str, float]
) -> dict[str, tuple[bool, str]]:
    """Issue 11's goals for one of our arms at one target: met?, and the figure."""
    ours = rows[arm]["summary"]
    peers = [a for a in ARMS if a not in ("beta1", *OURS)]
    # "At equal KL" is a local comparison: among the peers within 10% of T where there are any.
    near = [a for a in peers if abs(rows[a]["summary"]["kl_error"]["mean"]) <= 0.1] or peers
    best = min(near, key=lambda a: at_target(rows[a]["summary"], target, slope))
    ratio = at_target(ours, target, slope) / at_target(rows[best]["summary"], target, slope)
    err = ours["kl_error"]["mean"]
    above = ours["above_bound"]["mean"]
    runs = 0 if arm == "chance" else len(rows[arm]["trials"])
    cost = costs.get(arm, math.nan)
    return {
        "final KL within 2% of T": (abs(err) <= 0.02, f"{err:+.1%}"),
        "at most 5% of steps over the ceiling in force": (above <= 0.05, f"{above:.1%}"),
        "test MSE at T within 2% of the best peer's": (
            ratio <= 1.02,
            f"{ratio - 1:+.1%} against {best} (tuned)",
        ),
        "zero tuning runs": (runs == 0, f"{runs} runs"),
        "a step at most 1.3x a plain step": (cost <= 1.3, f"{cost:.2f}x"),
    }


def reading(
    target: float,
    fraction: float,
    rows: dict[str, dict[str, Any]],
    slope: float,
    costs: dict[str, float],
) -> list[str]:
    """The "reading the table" lines of one target, from its numbers."""
    lines = [
        f"**Target {fraction:.0%} (T = {target:.3f} nats).** MSE at T uses the slope "
        f"d log MSE / d log KL = {slope:.2f} of fixed_beta's runs."
    ]
    for arm in OURS:
        met = goals(arm, target, rows, slope, costs)
        hit = [f"{g} ({v})" for g, (ok, v) in met.items() if ok]
        miss = [f"{g} ({v})" for g, (ok, v) in met.items() if not ok]
        text = f"- **{arm}**: met: {'; '.join(hit) or 'none'}."
        if miss:
            text += f" Missed: {'; '.join(miss)}."
        lines.append(text)
    return lines


def markdown(
    record: dict[str, Any],
    command: str,
    results: dict[str, dict[str, dict[str, Any]]],
    costs: dict[str, float],
) -> str:
    """The whole markdown report."""
    cfg = record["settings"]
    machine = record["machine"]
    lines = [
        f"# Peers: {len(ARMS)} ways to hold a VAE's KL at a target",
        "",
        "Written by `benchmarks/peers.py`; the method, the arms and the tuning rule are in its "
        "docstring.",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine['processor']}, {machine['cpu_count']} CPUs, {machine['platform']}; "
        f"Python {machine['python']}, torch {machine['torch']} (1 thread per run, "
        f"{record['workers']} run(s) at a time), constraint_sched {machine['constraint_sched']}.",
        "",
        f"Settings: digits (1197 train / 240 validation / 360 test), MLP VAE 64-128-16 with a "
        f"fixed-variance Gaussian decoder (sigma {SIGMA}), Adam lr {cfg['lr']}, batch "
        f"{cfg['batch']}, {cfg['epochs']} epochs ({record['steps_per_run']} steps; every schedule "
        f"ends by epoch {cfg['epochs'] // 2}), {cfg['seeds']} seed(s), {cfg['trials']} tuning "
        f"trial(s) per arm and target. beta = 1 settles at a KL of "
        f"{record['beta1_kl']:.3f} nats (mean over seeds of its last epoch's minibatch KL). "
        f"`_m` arms aim at {MARGIN:g} of their bound.",
        "",
        "Columns: mean ± standard deviation over seeds. *tuning runs*: full runs spent choosing "
        "the hyperparameter. *KL error*: test KL / T - 1. *above bound*: share of steps whose "
        "minibatch KL (the forward pass before the step) is above the arm's bound in force (its "
        "set-point or ceiling, not its aim; T for the fixed betas). *above T after E/2*: the "
        "same against T over the second half. *max overshoot*: the largest (KL - bound) / T. "
        "*MSE at T*: the test MSE moved to KL = T along fixed_beta's slope, to compare arms at "
        "equal KL. MSE per pixel and ELBO per image on the test images.",
        "",
        "## Step cost",
        "",
        "Wall time per training step over a 4-round run, divided by beta1's (the plain step), "
        "median of 3 in one process: " + ", ".join(f"{m} {c:.2f}x" for m, c in costs.items()) + ".",
    ]
    for fraction, target in zip(cfg["targets"], record["target_kls"], strict=True):
        rows = results[f"{fraction:g}"]
        slope = kl_slope(rows)
        lines += ["", f"## Target {fraction:.0%} of the beta = 1 KL: T = {target:.3f} nats", ""]
        lines += [f"Tuned ({cfg['trials']} runs on the first seed's validation images):", ""]
        lines += table(target, rows, "summary", slope)
        lines += ["", "Zero tuning (every arm with its default, `DEFAULTS`):", ""]
        lines += table(target, rows, "default", slope)
        lines += ["", "Pareto view (* : no other run has both fewer steps over T and a lower MSE):"]
        lines += ["", *pareto(target, rows, slope)]
        lines += ["", "Tuning trials (first seed, validation images):", ""]
        for arm in ARMS[1:]:
            if arm == "chance":
                continue
            trials = ", ".join(
                f"{t['hp']:.4g} -> {t['val_kl']:.3f} ({t['criterion']:.3f})"
                + (" *" if t["chosen"] else "")
                for t in rows[arm]["trials"]
            )
            lines.append(f"- {arm} ({HYPER[base(arm)]} -> val KL (criterion), * chosen): {trials}")
    lines += ["", "## Reading the table", ""]
    for fraction, target in zip(cfg["targets"], record["target_kls"], strict=True):
        rows = results[f"{fraction:g}"]
        lines += [*reading(target, fraction, rows, kl_slope(rows), costs), ""]
    return "\n".join(lines).rstrip() + "\n"


# -- main -------------------------------------------------------------------------------------


def parse_targets(text: str) -> tuple[float, ...]:
    """``--targets``: comma-separated fractions in (0, 1)."""
    values = tuple(float(v) for v in text.split(",") if v)
    if not values or not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"fractions in (0, 1) expected, got {text!r}")
    return values


def choose(arm: str, trials: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The trial with the smallest criterion, and every trial's summary."""
    chosen = min(trials, key=criterion)
    summary = [
        {"hp": r["hp"], "val_kl": r["val_kl"], "criterion": criterion(r), "chosen": r is chosen}
        for r in trials
    ]
    return chosen, summary


def main(argv: Sequence[str] | None = None) -> int:
    """Run every arm on every target and seed; print and write the tables.

    Args:
        argv: Command-line arguments without the program name; None reads ``sys.argv``.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, help="seeds per arm (default 5)")
    parser.add_argument("--epochs", type=int, help="epochs per run (default 120)")
    parser.add_argument("--targets", type=parse_targets, help="fractions (default 0.2,0.45,0.7)")
    parser.add_argument("--trials", type=int, help="tuning runs per arm and target (default 4)")
    _machine.add_pool_arguments(parser, "one seed, 12 epochs, one target, 2 trials: a smoke test")
    args = parser.parse_args(argv)
    _machine.set_threads(args.threads, parser)
    cfg = QUICK if args.quick else Config()
    overrides = {
        k: v
        for k, v in {
            "seeds": args.seeds,
            "epochs": args.epochs,
            "targets": args.targets,
            "trials": args.trials,
        }.items()
        if v is not None
    }
    cfg = replace(cfg, **overrides)
    if cfg.seeds < 1 or cfg.trials < 1 or cfg.epochs < 6 or args.jobs < 1:
        parser.error("--seeds, --trials and --jobs must be at least 1, --epochs at least 6")
    results_dir = Path(__file__).parent / "results"
    json_path = args.json or (None if args.quick else results_dir / "peers.json")
    md_path = args.md or (None if args.quick else results_dir / "peers.md")
    command = " ".join(
        ["python benchmarks/peers.py", *(argv if argv is not None else sys.argv[1:])]
    )

    machine = _machine.describe(torch.device("cpu"))
    print(f"Peers: {len(ARMS)} ways to hold a VAE's KL at a target (digits, MLP VAE 64-128-16)")
    _machine.print_machine(machine)
    mode = " (--quick: a smoke test, not a result)" if args.quick else ""
    print(
        f"  settings: {cfg.epochs} epochs, batch {cfg.batch}, Adam lr {cfg.lr}, {cfg.seeds} "
        f"seed(s), targets {', '.join(f'{t:g}' for t in cfg.targets)}, {cfg.trials} trial(s), "
        f"{args.jobs} run(s) at a time{mode}",
        flush=True,
    )

    def echo(line: str) -> None:
        print(line, flush=True)

    data = _data()
    started = time.perf_counter()
    beta1 = run_all(
        [("run", "beta1", cfg, 1.0, 1.0, 1.0, seed) for seed in range(cfg.seeds)], args.jobs
    )
    for record in beta1:
        echo(f"  beta1      seed {record['seed']}  train KL {record['final_train_kl']:.3f}")
    beta1_kl = statistics.fmean(r["final_train_kl"] for r in beta1)
    anchor = (1.0, beta1[0]["val_kl"])
    print(f"  beta = 1 settles at KL {beta1_kl:.3f} nats", flush=True)
    targets = {fraction: fraction * beta1_kl for fraction in cfg.targets}

    # Round 1: every tuning trial (fixed_beta's secant chain is one job per target).
    tuned = [a for a in ARMS if a not in ("beta1", "chance")]
    jobs: list[tuple[Any, ...]] = []
    for fraction, target in targets.items():
        jobs.append(("chain", cfg, target, fraction, beta1_kl, anchor))
        for arm in tuned[1:]:
            jobs += [
                ("run", arm, cfg, target, beta1_kl, hp, 0) for hp in grid(base(arm), cfg.trials)
            ]
    echo(f"  tuning: {len(jobs)} job(s)")
    done = iter(run_all(jobs, args.jobs))
    trials: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for fraction in targets:
        trials[fraction, "fixed_beta"] = next(done)
        for arm in tuned[1:]:
            trials[fraction, arm] = [next(done) for _ in grid(base(arm), cfg.trials)]
    chosen = {key: choose(key[1], runs) for key, runs in trials.items()}
    for (fraction, arm), runs in trials.items():
        for r in runs:
            echo(
                f"  tune {arm:11s} T={targets[fraction]:6.3f} {HYPER[base(arm)]}={r['hp']:<8.4g} "
                f"val KL {r['val_kl']:7.3f}  criterion {criterion(r):.4f}"
            )

    # Round 2: the other seeds of every chosen value, and every seed of every default.
    def default_hp(arm: str, fraction: float) -> float:
        return 1.0 / fraction if arm == "fixed_beta" else DEFAULTS[base(arm)]

    jobs, keys = [], []
    for fraction, target in targets.items():
        for arm in ARMS[1:]:
            if arm != "chance":
                hp = chosen[fraction, arm][0]["hp"]
                for seed in range(1, cfg.seeds):
                    jobs.append(("run", arm, cfg, target, beta1_kl, hp, seed))
                    keys.append((fraction, arm, "tuned"))
            for seed in range(cfg.seeds):
                jobs.append(("run", arm, cfg, target, beta1_kl, default_hp(arm, fraction), seed))
                keys.append((fraction, arm, "default"))
    echo(f"  seeds and defaults: {len(jobs)} job(s)")
    runs_by: dict[tuple[float, str, str], list[dict[str, Any]]] = {}
    for key, record in zip(keys, run_all(jobs, args.jobs), strict=True):
        runs_by.setdefault(key, []).append(record)

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for fraction, target in targets.items():
        rows: dict[str, dict[str, Any]] = {}
        for arm in ARMS:
            if arm == "beta1":
                seeds = [for_target(r, target, cfg) for r in beta1]
                rows[arm] = {"hp": 1.0, "default_hp": 1.0, "trials": [], "seeds": seeds}
                rows[arm]["defaults"] = seeds
            elif arm == "chance":
                seeds = runs_by[fraction, arm, "default"]
                rows[arm] = {"hp": seeds[0]["hp"], "default_hp": seeds[0]["hp"], "trials": []}
                rows[arm].update(seeds=seeds, defaults=seeds)
            else:
                best, summary = chosen[fraction, arm]
                rows[arm] = {
                    "hp": best["hp"],
                    "default_hp": default_hp(arm, fraction),
                    "trials": summary,
                    "trial_records": trials[fraction, arm],
                    "seeds": [best, *runs_by.get((fraction, arm, "tuned"), [])],
                    "defaults": runs_by[fraction, arm, "default"],
                }
            for r in rows[arm]["seeds"]:
                echo(
                    f"  {arm:11s} T={target:6.3f} seed {r['seed']}  test KL {r['test_kl']:7.3f} "
                    f"({r['kl_error']:+.1%})  above bound {r['above_bound']:.1%}  "
                    f"MSE {r['test_mse'] * 1e3:.2f}e-3"
                )
            rows[arm]["summary"] = summarise(rows[arm]["seeds"])
            rows[arm]["default"] = summarise(rows[arm]["defaults"])
        results[f"{fraction:g}"] = rows
    echo("  step cost: every method alone in this process")
    costs = step_costs(cfg, data, repeats=1 if args.quick else 3)
    for margin in SET_POINT:
        costs[f"{margin}_m"] = costs[margin]
    elapsed = time.perf_counter() - started

    record = {
        "command": command,
        "machine": machine,
        "quick": args.quick,
        "workers": args.jobs,
        "settings": {
            "epochs": cfg.epochs,
            "batch": cfg.batch,
            "lr": cfg.lr,
            "seeds": cfg.seeds,
            "targets": list(cfg.targets),
            "trials": cfg.trials,
            "sigma": SIGMA,
            "margin": MARGIN,
            "grids": {k: list(v) for k, v in GRIDS.items()},
            "defaults": dict(DEFAULTS),
        },
        "steps_per_run": beta1[0]["steps"],
        "beta1_kl": beta1_kl,
        "target_kls": list(targets.values()),
        "arms": list(ARMS),
        "step_cost": {k: v for k, v in costs.items() if not k.endswith("_m")},
        "results": {
            fraction: {
                arm: {
                    k: ([without_trace(r) for r in v] if k in ("seeds", "defaults") else v)
                    for k, v in row.items()
                    if k != "trial_records"
                }
                for arm, row in rows.items()
            }
            for fraction, rows in results.items()
        },
        "seconds": elapsed,
    }
    text = markdown(
        record, command, results, {k: v for k, v in costs.items() if not k.endswith("_m")}
    )
    print()
    print(text)
    print(f"total {elapsed:.0f} s")
    if md_path is not None:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(text, encoding="utf-8")
        print(f"markdown written to {md_path}")
    if json_path is not None:
        _machine.write_json(json_path, record)
    return 0


def without_trace(record: dict[str, Any]) -> dict[str, Any]:
    """A run's figures for the JSON: everything but its step-by-step trace."""
    return {k: v for k, v in record.items() if k != "trace"}


if __name__ == "__main__":
    sys.exit(main())
