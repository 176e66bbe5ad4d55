"""What the LBO-VAE trainer's images are worth: held-out shapes, against a KL-matched beta-VAE.

Every seed (``--seeds``, default 0,1,2) runs four arms on the same training
images, and measures them on held-out shapes images that training never sees
(`load_data`: ``config.heldout`` images drawn from a stream of their own):

- **lbo-vae**: the bundled trainer as it is,
  ``Run(TrainConfig(seed=s, **overrides), out, print_=..., progress=False).train()``;
  its figures are the last metrics row's (``run.history[-1]``): the held-out
  MSE, SSIM, swap scores and KL of each latent half (`Run.evaluate`), and
  the split measured on the shapes' known factors (`Run.evaluate_split`:
  DCI disentanglement, completeness and informativeness, MIG, and the
  shares of the structure factors' importance on the core half and of the
  appearance factors' on the detail half).
- **beta-vae**: a plain beta-VAE of the same architecture (the `LBOVAE` that
  `build` makes from the run's `ModelConfig`, started from the same initial
  weights, the same seed), on the same training images, with the same budget:
  as many epochs as the LBO-VAE trained, the same batches (the same seeded
  order, the last partial batch dropped as the trainer does), AdamW at the
  config's ``lr``. Its loss per batch is the squared error summed over the
  pixels and averaged over the batch, plus ``beta`` times the KL
  (`kl_divergence`: summed over the latent dimensions, averaged over the
  batch), on a reparameterised sample with fresh noise. ``beta`` is searched
  so that its final held-out KL (core + detail) matches the LBO-VAE's (same
  seed) within 10%: the grid ``--betas`` in ascending order (KL falls as
  beta rises) until a trial matches or the KL falls below the target, then up
  to ``--refine`` bisections in ``log(beta)`` between the bracketing trials
  (or steps of x3 past the grid's end when the grid does not bracket the
  target). Every trial has the same budget; the trial closest to the target
  is the arm. Its held-out figures come from the trainer's
  ``evaluate_heldout`` (what `Run.evaluate` runs), and its split from
  ``evaluate_split`` (measured for the chosen trial only): the same
  architecture, so its "halves" are the same index split, arbitrary for it.
- **beta-vae (equal time)**: the same beta-VAE, with the chosen beta, trained
  for the LBO-VAE's wall-clock training time of that seed (its ``seconds``,
  the sum of its epochs' training time) instead of its steps: the same
  initial weights and the same batches, epoch after epoch, until the time is
  used up (checked before every step). Its steps, epochs (steps over the
  batches of an epoch), held-out figures and split as the equal-steps arm's.
- **mean-image**: every held-out image predicted by the per-pixel mean of the
  training images: its MSE, SSIM (`ssim`) and shapes drawn right
  (`shape_recovery`, the mean image against every held-out image's four
  possible shapes); swaps and KL do not apply.

The table puts the arms side by side, per seed and then as the mean ± the
standard deviation over the seeds: held-out MSE, SSIM, swap structure and
appearance, the share of reconstructions that drew the right shape
(`shape_recovery`), KL (core + detail, and each half), DCI, MIG and the split
shares, the share of accepted steps over the KL ceiling (the LBO-VAE's max
and mean over epochs 2 to the last; the beta-VAE has no ceiling), the
LBO-VAE's min group per epoch from epoch 2 to the last, the KL phases its
rows show, the training steps and epochs, and the seconds of training (no
evaluation) in all and per step, per arm. The ratios are against the
beta-VAEs measured in the same run. Then the issue's goals, each PASS or
MISS with its numbers: the LBO-VAE's held-out MSE at most 1.1x the
equal-steps beta-VAE's in every seed; on the means over seeds, its SSIM at
least 0.9x, both swap scores above the beta-VAE's, its DCI disentanglement at
least the beta-VAE's, both split shares above the beta-VAE's (whose halves
are arbitrary), a step at most 4x a beta-VAE step (seconds per step); in
every seed, the min group higher in the last epoch than in epoch 2, every KL
phase (DISCOVERY, HOLD, SQUEEZE, CONVERGED) shown, at most 5% of the accepted
steps over the ceiling in every epoch from epoch 2 on, and a reject rate
under 5% in every epoch.

Usage:
    python benchmarks/trainer_quality.py [--seeds 0,1,2] [--betas 0.01,0.02,...]
        [--refine N] [--epochs N] [--images N] [--device auto|cpu|cuda]
        [--threads T] [--out DIR] [--quiet] [--quick] [--json PATH]
        [--markdown PATH]

Run it against the source tree with ``PYTHONPATH=. python benchmarks/trainer_quality.py``
from the repository root, or with ``constraint-sched[trainer]`` installed.
The committed results (``benchmarks/results/trainer_quality.json``) come from::

    python benchmarks/trainer_quality.py --threads 2 --json benchmarks/results/trainer_quality.json

with ``--markdown benchmarks/results/trainer_quality.md`` for the Markdown
tables (the command and the machine on top).

``--quick`` runs a tiny configuration (16x16 images, 64 of them and 32
held out, batch 16, 3 epochs, a narrow model with 2+2 latents), one seed and
a 2-point beta grid: a smoke test of the script, not a result (its split
metrics, on 32 images, are noise). On a CPU that
other work shares, ``--threads 1``: torch's intra-op threads wait for each
other at every operator.
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _machine
import attrs
import torch

from constraint_sched.adapters.lbo_vae import (
    LBOVAE,
    ImageSet,
    Run,
    TrainConfig,
    _train,
    build,
    evaluate_split,
    shape_recovery,
)
from constraint_sched.adapters.lbo_vae._disentanglement import SPLIT_KEYS
from constraint_sched.adapters.lbo_vae._metrics import kl_divergence, ssim
from constraint_sched.adapters.lbo_vae._train import load_data

EQUAL_TIME = "beta-vae (equal time)"
"""The beta-VAE arm trained for the LBO-VAE's wall-clock time."""
ARMS = ("lbo-vae", "beta-vae", EQUAL_TIME, "mean-image")
"""The arms, in the table's order."""

SEEDS = (0, 1, 2)
BETAS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
"""The beta grid the search starts from."""
REFINE = 4
"""The most trainings the search adds after the grid."""
KL_TOLERANCE = 0.1
"""The beta-VAE's held-out KL matches the LBO-VAE's within this relative error."""
EXTEND = 3.0
"""The factor of a step past the grid's end when the grid does not bracket the target KL."""

PHASES = ("DISCOVERY", "HOLD", "SQUEEZE", "CONVERGED")
"""The KL phases every seed's rows should show."""

QUICK: dict[str, Any] = {
    "image_size": 16,
    "images": 64,
    "heldout": 32,
    "batch_size": 16,
    "epochs": 3,
    "width": 4,
    "disc_width": 4,
    "core_dims": 2,
    "detail_dims": 2,
    "calibration_steps": 2,
    "kl_squeeze_epochs": 1,
}
"""``--quick``'s tiny configuration (a smoke test of the script, not a result)."""
QUICK_SEEDS = (0,)
QUICK_BETAS = (0.05, 0.5)
QUICK_REFINE = 2

MSE_RATIO = 1.1
"""Goal: the LBO-VAE's held-out MSE at most this times the beta-VAE's, in every seed."""
STEP_RATIO = 4.0
"""Goal: an LBO-VAE step at most this times a beta-VAE step (seconds per step, same run)."""
SSIM_RATIO = 0.9
"""Goal: its SSIM at least this times the beta-VAE's."""
OVER_CEILING = 0.05
"""Goal: at most this share of accepted steps over the KL ceiling, every epoch from epoch 2."""
REJECT_RATE = 0.05
"""Goal: a reject rate under this in every epoch."""

NAN = float("nan")

Printer = Callable[[str], None]

# -- evaluation ----------------------------------------------------------------------------------


# -- the arms ------------------------------------------------------------------------------------


def value(row: dict[str, Any], key: str) -> float:
    """``row[key]`` as a float; NaN when the row has no such key (yet) or it is None."""
    got = row.get(key)
    return NAN if got is None else float(got)


def kl_sum(metrics: dict[str, Any]) -> float:
    """The held-out KL of both latent halves together."""
    return value(metrics, "heldout_kl_core") + value(metrics, "heldout_kl_detail")


def run_lbo(config: TrainConfig, out: Path, echo: Printer) -> dict[str, Any]:
    """Train the LBO-VAE arm; its figures, from its metrics rows.

    Args:
        config: The seed's configuration.
        out: The run's folder.
        echo: Where the run's epoch lines go.

    Returns:
        The held-out figures and the split metrics (`SPLIT_KEYS`) of the last
        row, plus what the goals read from every row (``min_group``,
        ``steps_over_ceiling``, ``reject_rate`` and ``kl_phase`` per epoch),
        the steps and seconds of training, and the rows themselves.
    """
    started = time.perf_counter()
    run = Run(config, out, print_=echo, progress=False)
    run.train()
    wall = time.perf_counter() - started
    rows = list(run.history)
    last = rows[-1]
    later = rows[1:]  # epochs 2..last
    over = [value(r, "steps_over_ceiling") for r in later]
    finite_over = [v for v in over if math.isfinite(v)]
    min_groups = [value(r, "min_group") for r in later]
    heldout_kl = kl_sum(last)
    steps = int(sum(value(r, "steps") for r in rows))
    seconds = sum(value(r, "seconds") for r in rows)
    return {
        "heldout_mse": value(last, "heldout_mse"),
        "heldout_ssim": value(last, "heldout_ssim"),
        "swap_structure": value(last, "swap_structure"),
        "swap_appearance": value(last, "swap_appearance"),
        "heldout_shape": value(last, "heldout_shape"),
        "heldout_kl": heldout_kl,
        "heldout_kl_core": value(last, "heldout_kl_core"),
        "heldout_kl_detail": value(last, "heldout_kl_detail"),
        "train_kl": value(last, "kl_core") + value(last, "kl_detail"),
        "heldout_mean_mse": value(last, "heldout_mean_mse"),
        **{key: value(last, key) for key in SPLIT_KEYS},
        "steps_over_ceiling": over,
        "steps_over_ceiling_max": max(finite_over) if finite_over else NAN,
        "steps_over_ceiling_mean": statistics.fmean(finite_over) if finite_over else NAN,
        "min_group": min_groups,
        "min_group_rising": len(min_groups) >= 2 and min_groups[-1] > min_groups[0],
        "kl_phases": sorted({str(r.get("kl_phase", "?")) for r in rows}, key=_phase_order),
        "reject_rate": [value(r, "reject_rate") for r in rows],
        "epochs": len(rows),
        "steps_per_epoch": int(rows[0].get("steps", 0)),
        "steps": steps,
        "seconds": seconds,
        "seconds_per_step": seconds / steps if steps else NAN,
        "wall_seconds": wall,
        "rows": rows,
    }


def _phase_order(phase: str) -> int:
    return PHASES.index(phase) if phase in PHASES else len(PHASES)


def train_beta_vae(
    config: TrainConfig,
    train: ImageSet,
    heldout: ImageSet,
    *,
    beta: float,
    epochs: int | None = None,
    seconds: float | None = None,
    device: torch.device,
    mean_mse: float,
    split: bool = True,
    models: dict[float, LBOVAE] | None = None,
) -> dict[str, Any]:
    """Train one plain beta-VAE of the run's architecture; its held-out figures.

    The VAE starts from the weights a `Run` of ``config`` starts from (the
    global generators seeded with ``config.seed``, then `build`), and trains
    on the trainer's batches (`epoch_batches`) with AdamW at ``config.lr``:
    per batch the squared error summed over the pixels and averaged over the
    batch, plus ``beta`` times `kl_divergence`, on ``reparameterize`` with
    fresh noise. It trains ``epochs`` epochs (the equal-steps arm), or epoch
    after epoch until ``seconds`` of training have passed, checked before
    every step (the equal-time arm); exactly one of the two is given.

    Args:
        config: The seed's configuration.
        train: The training images.
        heldout: The held-out images.
        beta: The KL's weight.
        epochs: The epochs to train (the LBO-VAE's).
        seconds: The seconds to train for (the LBO-VAE's training time).
        device: Where to train.
        mean_mse: The mean image's held-out MSE, passed to the evaluation.
        split: Also measure the split (`split_figures`).
        models: Where to keep the trained model, under ``beta`` (for the
            split of the trial a search chooses).

    Returns:
        ``beta``, the held-out figures, ``heldout_kl`` (core + detail), with
        ``split`` the split metrics, the steps, the epochs (steps over the
        batches of an epoch), the last epoch's mean loss, the seconds of
        training and per step.
    """
    if (epochs is None) == (seconds is None):
        raise ValueError("train_beta_vae: give epochs or seconds, not both or neither")
    _train._seed_everything(config.seed)
    vae, _ = build(_train.model_config(config, int(train.images.shape[1])))
    vae = vae.to(device)
    vae.train()
    fused = True if device.type == "cuda" else None
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.lr, fused=fused)
    generator = torch.Generator().manual_seed(config.seed)
    steps, epoch_steps, started_epochs = 0, 0, 0
    loss_sum = torch.zeros((), device=device)
    per_epoch = len(_train.epoch_batches(len(train), config.batch_size, torch.Generator()))
    _sync(device)
    started = time.perf_counter()

    def out_of_time() -> bool:
        if seconds is None:
            return False
        _sync(device)
        return time.perf_counter() - started >= seconds

    while (epochs is None or started_epochs < epochs) and not out_of_time():
        loss_sum.zero_()
        epoch_steps = 0
        started_epochs += 1
        batches = _train.epoch_batches(len(train), config.batch_size, generator)
        for index in batches:
            if epoch_steps and out_of_time():
                break
            x = train.images[index].to(device, non_blocking=True)
            mu, logvar = vae.encode(x)
            recon = vae.decode(vae.reparameterize(mu, logvar, None))
            sse = (recon - x).square().flatten(1).sum(dim=1).mean()
            loss = sse + beta * kl_divergence(mu, logvar)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            steps += 1
            epoch_steps += 1
    _sync(device)
    took = time.perf_counter() - started
    metrics = dict(_train.evaluate_heldout(vae, heldout, mean_mse=mean_mse, device=device))
    if split:
        metrics.update(split_figures(vae, heldout, seed=config.seed, device=device))
    if models is not None:
        models[beta] = vae
    return {
        "beta": beta,
        **{k: float(v) for k, v in metrics.items()},
        "heldout_kl": kl_sum(metrics),
        "steps": steps,
        "epochs": steps / per_epoch,
        "last_epoch_loss": float(loss_sum) / max(epoch_steps, 1),
        "seconds": took,
        "seconds_per_step": took / steps if steps else NAN,
        "time_budget": seconds,
    }


def split_figures(
    vae: LBOVAE, heldout: ImageSet, *, seed: int, device: torch.device
) -> dict[str, float]:
    """`evaluate_split` of a model on the held-out images, as the trainer's last row has it.

    NaN for every key where the trainer measures nothing: held-out images
    without factors, or fewer than ``SPLIT_MIN_IMAGES``.
    """
    if heldout.factors is None or len(heldout) < _train.SPLIT_MIN_IMAGES:
        return dict.fromkeys(SPLIT_KEYS, NAN)
    return evaluate_split(vae, heldout.images, heldout.factors, device=device, seed=seed)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def relative_error(kl: float, target: float) -> float:
    """``|kl / target - 1|``; infinite when either is not a finite number or target is 0."""
    if not (math.isfinite(kl) and math.isfinite(target)) or target == 0:
        return math.inf
    return abs(kl / target - 1)


def search_beta(
    trial: Callable[[float], dict[str, Any]],
    target: float,
    *,
    grid: Sequence[float] = BETAS,
    refine: int = REFINE,
    tolerance: float = KL_TOLERANCE,
) -> dict[str, Any]:
    """The beta whose trained held-out KL matches ``target`` within ``tolerance``.

    The grid runs in ascending order (KL falls as beta rises) until a trial
    matches or the KL falls below ``target``; then up to ``refine`` more
    trials bisect ``log(beta)`` between the largest beta above the target and
    the smallest below it, or, when the grid does not bracket it, step by
    `EXTEND` past the grid's end. A trial whose KL is not finite counts as
    above the target. The chosen trial is the one closest to the target.

    Args:
        trial: Trains one beta-VAE; its figures, with ``heldout_kl``.
        target: The LBO-VAE's held-out KL.
        grid: The betas to start from.
        refine: The most trials after the grid.
        tolerance: The relative error that counts as a match.

    Returns:
        ``target``, ``trials`` (each trial's figures, in order), ``trainings``,
        ``chosen`` (the closest trial), ``beta``, ``relative_error`` and
        ``matched``.

    Examples:
        >>> fake = lambda beta: {"beta": beta, "heldout_kl": 1.0 / beta}
        >>> found = search_beta(fake, 7.0, grid=(0.01, 0.1, 1.0), refine=4)
        >>> [round(t["beta"], 3) for t in found["trials"]]  # the grid, then 3 bisections
        [0.01, 0.1, 1.0, 0.316, 0.178, 0.133]
        >>> found["matched"], found["trainings"], round(found["relative_error"], 3)
        (True, 6, 0.071)
    """
    trials: list[dict[str, Any]] = []
    above: dict[str, Any] | None = None  # the largest beta whose KL is above the target
    below: dict[str, Any] | None = None  # the smallest beta whose KL is below it

    def place(result: dict[str, Any]) -> bool:
        nonlocal above, below
        trials.append(result)
        kl = result["heldout_kl"]
        if relative_error(kl, target) <= tolerance:
            return True
        if not math.isfinite(kl) or kl > target:
            if above is None or result["beta"] > above["beta"]:
                above = result
        elif below is None or result["beta"] < below["beta"]:
            below = result
        return False

    matched = False
    for beta in sorted(grid):
        if place(trial(beta)):
            matched = True
            break
        if below is not None:  # bracketed (or the grid starts below the target)
            break
    for _ in range(refine if not matched else 0):
        if above is not None and below is not None:
            beta = math.sqrt(above["beta"] * below["beta"])
        elif below is not None:  # even the smallest beta leaves too little KL
            beta = below["beta"] / EXTEND
        else:
            assert above is not None
            beta = above["beta"] * EXTEND
        if place(trial(beta)):
            matched = True
            break
    chosen = min(trials, key=lambda r: relative_error(r["heldout_kl"], target))
    error = relative_error(chosen["heldout_kl"], target)
    return {
        "target": target,
        "tolerance": tolerance,
        "trials": trials,
        "trainings": len(trials),
        "chosen": chosen,
        "beta": chosen["beta"],
        "relative_error": error if math.isfinite(error) else NAN,
        "matched": matched,
    }


def mean_image(train: ImageSet, heldout: ImageSet) -> dict[str, Any]:
    """The mean-image arm: every held-out image predicted by the training images' per-pixel mean.

    Returns:
        ``heldout_mse``, ``heldout_ssim`` (`ssim`), ``heldout_shape``
        (`shape_recovery`; NaN without known factors) and ``seconds``.
    """
    started = time.perf_counter()
    mean = train.images.mean(dim=0, keepdim=True)
    predicted = mean.expand_as(heldout.images).contiguous()
    mse = float((heldout.images - mean).square().mean())
    ssim_ = float(ssim(predicted, heldout.images))
    factors = heldout.factors
    shape = NAN if factors is None else float(shape_recovery(predicted, factors))
    return {
        "heldout_mse": mse,
        "heldout_ssim": ssim_,
        "heldout_shape": shape,
        "seconds": time.perf_counter() - started,
    }


def run_seed(
    config: TrainConfig,
    out: Path,
    *,
    grid: Sequence[float],
    refine: int,
    quiet: bool,
) -> dict[str, Any]:
    """Every arm on one seed: the LBO-VAE, the beta search, the equal-time beta-VAE, the mean.

    Args:
        config: The seed's configuration.
        out: The seed's folder (the LBO-VAE run writes under it).
        grid: The beta grid.
        refine: The most trials the search adds after the grid.
        quiet: Do not print the LBO-VAE's epoch lines.

    Returns:
        ``seed``, ``arms`` (each arm's figures), ``beta_search``, ``ratios``.
    """
    seed = config.seed

    def echo(line: str) -> None:
        if not quiet:
            print(f"[seed {seed} lbo-vae] {line}", flush=True)

    lbo = run_lbo(config, out / "lbo-vae", echo)
    train, heldout = load_data(config)
    mean = mean_image(train, heldout)
    device = _train.pick_device(config.device)
    target = lbo["heldout_kl"]
    target_from = "held-out"
    if not math.isfinite(target):  # the trainer's rows have no held-out KL (yet)
        target, target_from = lbo["train_kl"], "training"

    models: dict[float, LBOVAE] = {}  # every trial's model, for the chosen one's split

    def trial(beta: float) -> dict[str, Any]:
        result = train_beta_vae(
            config,
            train,
            heldout,
            beta=beta,
            epochs=lbo["epochs"],
            device=device,
            mean_mse=mean["heldout_mse"],
            split=False,
            models=models,
        )
        print(
            f"[seed {seed} beta-vae] beta {beta:.4g}: held-out KL {result['heldout_kl']:.3f} "
            f"(target {target:.3f}), MSE {result['heldout_mse']:.4f}, "
            f"{result['steps']} steps in {result['seconds']:.1f}s",
            flush=True,
        )
        return result

    search = search_beta(trial, target, grid=grid, refine=refine)
    search["target_from"] = target_from
    chosen = search["chosen"]
    chosen.update(split_figures(models[chosen["beta"]], heldout, seed=seed, device=device))
    models.clear()
    beta_arm = dict(chosen)
    equal_time = train_beta_vae(
        config,
        train,
        heldout,
        beta=chosen["beta"],
        seconds=lbo["seconds"],
        device=device,
        mean_mse=mean["heldout_mse"],
    )
    print(
        f"[seed {seed} {EQUAL_TIME}] beta {chosen['beta']:.4g}: {equal_time['steps']} steps "
        f"({equal_time['epochs']:.1f} epochs) in {equal_time['seconds']:.1f}s (the LBO-VAE's "
        f"{lbo['seconds']:.1f}s), MSE {equal_time['heldout_mse']:.4f}, "
        f"held-out KL {equal_time['heldout_kl']:.3f}",
        flush=True,
    )
    arms = {
        "lbo-vae": lbo,
        "beta-vae": beta_arm,
        EQUAL_TIME: equal_time,
        "mean-image": {
            **mean,
            "run_heldout_mean_mse": lbo["heldout_mean_mse"],
            "swap_structure": None,
            "swap_appearance": None,
            "heldout_kl": None,
            "heldout_kl_core": None,
            "heldout_kl_detail": None,
        },
    }
    return {
        "seed": seed,
        "epochs": lbo["epochs"],
        "steps_per_epoch": lbo["steps_per_epoch"],
        "arms": arms,
        "beta_search": search,
        "ratios": ratios(lbo, beta_arm, equal_time),
    }


def ratios(
    lbo: dict[str, Any], beta: dict[str, Any], equal_time: dict[str, Any] | None = None
) -> dict[str, float]:
    """The LBO-VAE against the beta-VAEs measured in the same run.

    ``mse`` and ``ssim``: its held-out MSE and SSIM over the equal-steps
    beta-VAE's; ``step_time``: its seconds per step over that arm's;
    ``mse_equal_time``: its MSE over the equal-time arm's (NaN without one).
    """
    return {
        "mse": _ratio(lbo["heldout_mse"], beta["heldout_mse"]),
        "ssim": _ratio(lbo["heldout_ssim"], beta["heldout_ssim"]),
        "step_time": _ratio(lbo.get("seconds_per_step"), beta.get("seconds_per_step")),
        "mse_equal_time": _ratio(
            lbo["heldout_mse"], None if equal_time is None else equal_time["heldout_mse"]
        ),
    }


def _ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None or not b or not (math.isfinite(a) and math.isfinite(b)):
        return NAN
    return a / b


# -- over seeds ----------------------------------------------------------------------------------

SUMMARY_KEYS = (
    "heldout_mse",
    "heldout_ssim",
    "swap_structure",
    "swap_appearance",
    "heldout_shape",
    "heldout_kl",
    "heldout_kl_core",
    "heldout_kl_detail",
    *SPLIT_KEYS,
    "steps_over_ceiling_max",
    "steps_over_ceiling_mean",
    "steps",
    "epochs",
    "seconds",
    "seconds_per_step",
)
"""The arms' figures that the mean ± std table averages over seeds."""


def summarise(seeds: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """The mean and sample standard deviation over seeds of every arm's figures.

    Returns:
        ``{arm: {key: {"mean": m, "std": s}}}``; None where an arm has no such
        figure, ``std`` None with one seed.
    """
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for arm in ARMS:
        out[arm] = {}
        for key in (*SUMMARY_KEYS, "beta", "min_group_epoch_2", "min_group_last"):
            values = [_figure(s["arms"][arm], key) for s in seeds]
            if any(v is None for v in values):
                continue
            floats = [float(v) for v in values if v is not None]
            out[arm][key] = {
                "mean": statistics.fmean(floats),
                "std": statistics.stdev(floats) if len(floats) > 1 else None,
            }
    return out


def _figure(arm: dict[str, Any], key: str) -> float | None:
    if key == "min_group_epoch_2":
        groups = arm.get("min_group")
        return groups[0] if groups else None
    if key == "min_group_last":
        groups = arm.get("min_group")
        return groups[-1] if groups else None
    got = arm.get(key)
    return None if got is None else float(got)


def goal_checks(seeds: list[dict[str, Any]], means: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals, each passed or missed, with the numbers it was decided on.

    Args:
        seeds: Every seed's figures (`run_seed`).
        means: `summarise` of them.

    Returns:
        One ``{"goal", "passed", "detail", "values"}`` per goal: ``detail``
        as printed, ``values`` the numbers behind it.
    """

    def mean(arm: str, key: str) -> float:
        got = means[arm].get(key)
        return NAN if got is None else float(got["mean"])

    lbo_mse, beta_mse = mean("lbo-vae", "heldout_mse"), mean("beta-vae", "heldout_mse")
    lbo_ssim, beta_ssim = mean("lbo-vae", "heldout_ssim"), mean("beta-vae", "heldout_ssim")
    n = len(seeds)
    mse_ratios = {str(s["seed"]): s["ratios"]["mse"] for s in seeds}
    checks = [
        {
            "goal": f"held-out MSE at most {MSE_RATIO:g}x the matched beta-VAE's at equal steps "
            "(every seed)",
            "passed": bool(mse_ratios) and all(r <= MSE_RATIO for r in mse_ratios.values()),
            "detail": "; ".join(
                f"seed {s['seed']}: lbo-vae {value(s['arms']['lbo-vae'], 'heldout_mse'):.4f} vs "
                f"beta-vae {value(s['arms']['beta-vae'], 'heldout_mse'):.4f} "
                f"({_fmt(s['ratios']['mse'], '.2f')}x)"
                for s in seeds
            )
            + f" (at most {MSE_RATIO:g}x in "
            f"{sum(r <= MSE_RATIO for r in mse_ratios.values())}/{n}; mean "
            f"{_fmt(_ratio(lbo_mse, beta_mse), '.2f')}x)",
            "values": {
                "lbo-vae": lbo_mse,
                "beta-vae": beta_mse,
                "ratio": _ratio(lbo_mse, beta_mse),
                "ratios": mse_ratios,
            },
        },
        {
            "goal": f"SSIM at least {SSIM_RATIO:g}x the beta-VAE's",
            "passed": lbo_ssim >= SSIM_RATIO * beta_ssim,
            "detail": f"lbo-vae {lbo_ssim:.3f} vs {SSIM_RATIO:g} x beta-vae {beta_ssim:.3f} = "
            f"{SSIM_RATIO * beta_ssim:.3f} (ratio {_ratio(lbo_ssim, beta_ssim):.2f}x)",
            "values": {
                "lbo-vae": lbo_ssim,
                "beta-vae": beta_ssim,
                "ratio": _ratio(lbo_ssim, beta_ssim),
            },
        },
    ]
    swap = {
        k: (mean("lbo-vae", k), mean("beta-vae", k)) for k in ("swap_structure", "swap_appearance")
    }
    checks.append(
        {
            "goal": "both swap scores above the beta-VAE's",
            "passed": all(a > b for a, b in swap.values()),
            "detail": "; ".join(
                f"{k.removeprefix('swap_')} lbo-vae {a:.3f} vs beta-vae {b:.3f}"
                for k, (a, b) in swap.items()
            ),
            "values": {k: {"lbo-vae": a, "beta-vae": b} for k, (a, b) in swap.items()},
        }
    )
    checks += split_checks(mean)
    lbo_step, beta_step = mean("lbo-vae", "seconds_per_step"), mean("beta-vae", "seconds_per_step")
    step_ratio = _ratio(lbo_step, beta_step)
    checks.append(
        {
            "goal": f"an LBO-VAE step at most {STEP_RATIO:g}x a beta-VAE step (same model, "
            "batch and run)",
            "passed": step_ratio <= STEP_RATIO,
            "detail": f"lbo-vae {_fmt(lbo_step * 1000, '.1f')} ms vs beta-vae "
            f"{_fmt(beta_step * 1000, '.1f')} ms per step (ratio {_fmt(step_ratio, '.2f')}x; "
            "per seed "
            + ", ".join(_fmt(s["ratios"].get("step_time", NAN), ".2f") + "x" for s in seeds)
            + ")",
            "values": {"lbo-vae": lbo_step, "beta-vae": beta_step, "ratio": step_ratio},
        }
    )
    lbo = [s["arms"]["lbo-vae"] for s in seeds]
    rising = [a["min_group_rising"] for a in lbo]
    checks.append(
        {
            "goal": "the min group rises from epoch 2 to the last epoch (every seed)",
            "passed": all(rising),
            "detail": "; ".join(
                f"seed {s['seed']}: {_fmt(a['min_group'][0] if a['min_group'] else None, '.3f')}"
                f" -> {_fmt(a['min_group'][-1] if a['min_group'] else None, '.3f')}"
                for s, a in zip(seeds, lbo, strict=True)
            )
            + f" (rising in {sum(rising)}/{n})",
            "values": {str(s["seed"]): a["min_group"] for s, a in zip(seeds, lbo, strict=True)},
        }
    )
    shown = [set(PHASES) <= set(a["kl_phases"]) for a in lbo]
    checks.append(
        {
            "goal": "every KL phase shown (every seed)",
            "passed": all(shown),
            "detail": "; ".join(
                f"seed {s['seed']}: {', '.join(a['kl_phases'])}"
                for s, a in zip(seeds, lbo, strict=True)
            )
            + f" (all four in {sum(shown)}/{n})",
            "values": {str(s["seed"]): a["kl_phases"] for s, a in zip(seeds, lbo, strict=True)},
        }
    )
    over = [v for a in lbo for v in a["steps_over_ceiling"]]
    rejects = [v for a in lbo for v in a["reject_rate"]]
    worst_over = max((v for v in over if math.isfinite(v)), default=NAN)
    worst_reject = max((v for v in rejects if math.isfinite(v)), default=NAN)
    lacking = not all(math.isfinite(v) for v in (*over, *rejects))
    checks.append(
        {
            "goal": f"at most {OVER_CEILING:.0%} of accepted steps over the ceiling from epoch 2 "
            f"on and a reject rate under {REJECT_RATE:.0%} (every epoch, every seed)",
            "passed": bool(over)
            and all(v <= OVER_CEILING for v in over)
            and bool(rejects)
            and all(v < REJECT_RATE for v in rejects),
            "detail": f"max over the ceiling {_fmt(worst_over, '.1%')}, "
            f"max reject rate {_fmt(worst_reject, '.1%')}"
            + (" (some epochs' rows lack the figure)" if lacking else ""),
            "values": {"max_steps_over_ceiling": worst_over, "max_reject_rate": worst_reject},
        }
    )
    return checks


def split_checks(mean: Callable[[str, str], float]) -> list[dict[str, Any]]:
    """The split's goals: DCI disentanglement at least the beta-VAE's, both shares above its.

    Against the equal-steps beta-VAE (whose halves are an arbitrary index
    split); the equal-time arm's figures are in the details, not judged.

    Args:
        mean: The mean over seeds of an arm's figure: ``mean(arm, key)``.
    """
    arms = ("lbo-vae", "beta-vae", EQUAL_TIME)
    d = {arm: mean(arm, "dci_disentanglement") for arm in arms}
    words = {
        "split_structure_core": "structure on core",
        "split_appearance_detail": "appearance on detail",
    }
    shares = {key: {arm: mean(arm, key) for arm in arms} for key in words}
    return [
        {
            "goal": "DCI disentanglement at least the beta-VAE's",
            "passed": d["lbo-vae"] >= d["beta-vae"],
            "detail": f"lbo-vae {_fmt(d['lbo-vae'], '.3f')} vs beta-vae "
            f"{_fmt(d['beta-vae'], '.3f')} (equal time: {_fmt(d[EQUAL_TIME], '.3f')})",
            "values": d,
        },
        {
            "goal": "the core half's share of the structure factors' importance and the detail "
            "half's share of the appearance factors' both above the beta-VAE's",
            "passed": all(v["lbo-vae"] > v["beta-vae"] for v in shares.values()),
            "detail": "; ".join(
                f"{words[key]} lbo-vae {_fmt(v['lbo-vae'], '.3f')} vs beta-vae "
                f"{_fmt(v['beta-vae'], '.3f')} (equal time: {_fmt(v[EQUAL_TIME], '.3f')})"
                for key, v in shares.items()
            ),
            "values": shares,
        },
    ]


# -- output --------------------------------------------------------------------------------------


def _fmt(x: float | None, spec: str) -> str:
    """A number for the table; '-' for None, 'n/a' for NaN."""
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    return format(x, spec)


def _pm(stat: dict[str, float | None] | None, spec: str) -> str:
    """``mean ± std`` (the mean alone with one seed), or '-'."""
    if stat is None:
        return "-"
    text = _fmt(stat["mean"], spec)
    return text if stat["std"] is None else f"{text} ± {_fmt(stat['std'], spec)}"


ROWS = (
    ("held-out MSE", "heldout_mse", ".4f"),
    ("held-out SSIM", "heldout_ssim", ".3f"),
    ("swap structure", "swap_structure", ".3f"),
    ("swap appearance", "swap_appearance", ".3f"),
    ("shapes drawn right", "heldout_shape", ".3f"),
    ("KL core + detail", "heldout_kl", ".2f"),
    ("KL core", "heldout_kl_core", ".2f"),
    ("KL detail", "heldout_kl_detail", ".2f"),
    ("DCI disentanglement", "dci_disentanglement", ".3f"),
    ("DCI completeness", "dci_completeness", ".3f"),
    ("DCI informativeness", "dci_informativeness", ".3f"),
    ("MIG", "mig", ".3f"),
    ("structure importance on core", "split_structure_core", ".3f"),
    ("appearance importance on detail", "split_appearance_detail", ".3f"),
)
"""The table's rows of plain figures: label, key, format."""

HEAD = [f"| | {' | '.join(ARMS)} |", "|:---|" + "---:|" * len(ARMS)]

LBO_ONLY = " | -" * (len(ARMS) - 1) + " |"
"""The cells after the LBO-VAE's in a row of its figures only."""


def seed_table(seed: dict[str, Any]) -> list[str]:
    """One seed's table, the arms side by side."""
    arms = seed["arms"]
    lines = list(HEAD)

    def cells(key: str, spec: str) -> str:
        return " | ".join(_fmt(_figure(arms[a], key), spec) for a in ARMS)

    for label, key, spec in ROWS:
        lines.append(f"| {label} | {cells(key, spec)} |")
    lbo = arms["lbo-vae"]
    beta = f"{arms['beta-vae']['beta']:.4g}"
    lines += [
        f"| steps over the ceiling, epochs 2-{lbo['epochs']} (max / mean) | "
        f"{_fmt(lbo['steps_over_ceiling_max'], '.1%')} / "
        f"{_fmt(lbo['steps_over_ceiling_mean'], '.1%')}{LBO_ONLY}",
        f"| min group, epochs 2-{lbo['epochs']} | "
        f"{' -> '.join(_fmt(v, '.3f') for v in lbo['min_group']) or '-'} "
        f"({'rising' if lbo['min_group_rising'] else 'not rising'}){LBO_ONLY}",
        f"| KL phases | {', '.join(lbo['kl_phases'])}{LBO_ONLY}",
        f"| beta (KL-matched) | - | {beta} | {beta} | - |",
        f"| training steps | {cells('steps', '.0f')} |",
        f"| epochs | {cells('epochs', '.1f')} |",
        f"| seconds of training | {cells('seconds', '.1f')} |",
        f"| milliseconds per step | {' | '.join(_ms(arms[a]) for a in ARMS)} |",
    ]
    return lines


def _ms(arm: dict[str, Any]) -> str:
    """An arm's seconds per step in milliseconds; '-' where it has none."""
    seconds = _figure(arm, "seconds_per_step")
    return _fmt(None if seconds is None else 1000 * seconds, ".2f")


def mean_table(seeds: list[dict[str, Any]], means: dict[str, Any]) -> list[str]:
    """The mean ± std over seeds, the arms side by side."""
    lines = list(HEAD)
    n = len(seeds)

    def cells(key: str, spec: str) -> str:
        return " | ".join(_pm(means[a].get(key), spec) for a in ARMS)

    for label, key, spec in ROWS:
        lines.append(f"| {label} | {cells(key, spec)} |")
    lbo = means["lbo-vae"]
    arms = [s["arms"]["lbo-vae"] for s in seeds]
    phases = sorted({p for a in arms for p in a["kl_phases"]}, key=_phase_order)
    shown = sum(set(PHASES) <= set(a["kl_phases"]) for a in arms)
    rising = sum(a["min_group_rising"] for a in arms)
    worst = max((v for a in arms for v in a["steps_over_ceiling"]), default=NAN)
    beta = _pm(means["beta-vae"].get("beta"), ".4g")
    lines += [
        "| steps over the ceiling, epochs 2-last (max over seeds / mean) | "
        f"{_fmt(worst, '.1%')} / {_pm(_scaled(lbo.get('steps_over_ceiling_mean')), '.1f')}%"
        f"{LBO_ONLY}",
        f"| min group, epoch 2 -> last | {_pm(lbo.get('min_group_epoch_2'), '.3f')} -> "
        f"{_pm(lbo.get('min_group_last'), '.3f')} (rising in {rising}/{n} seeds){LBO_ONLY}",
        f"| KL phases | {', '.join(phases)} (all four in {shown}/{n} seeds){LBO_ONLY}",
        f"| beta (KL-matched) | - | {beta} | {beta} | - |",
        f"| training steps | {cells('steps', '.0f')} |",
        f"| epochs | {cells('epochs', '.1f')} |",
        f"| seconds of training | {cells('seconds', '.1f')} |",
        "| milliseconds per step | "
        + " | ".join(_pm(_scaled(means[a].get("seconds_per_step"), 1000), ".2f") for a in ARMS)
        + " |",
    ]
    return lines


def _scaled(
    stat: dict[str, float | None] | None, factor: float = 100
) -> dict[str, float | None] | None:
    """A mean ± std times ``factor``: a share in percent, seconds in milliseconds."""
    if stat is None:
        return None
    return {k: None if v is None else factor * v for k, v in stat.items()}


def search_line(seed: dict[str, Any]) -> str:
    """One seed's beta search: the target, every trial, the choice and whether it matched."""
    search = seed["beta_search"]
    trials = ", ".join(f"{t['beta']:.4g} -> {t['heldout_kl']:.3f}" for t in search["trials"])
    return (
        f"beta search (seed {seed['seed']}): target KL {search['target']:.3f} (the LBO-VAE's "
        f"{search['target_from']} core + detail); trials (beta -> held-out KL): {trials}; "
        f"chosen beta {search['beta']:.4g} ({_fmt(search['relative_error'], '.1%')} off), "
        f"{search['trainings']} trainings, matched within {search['tolerance']:.0%}: "
        f"{'yes' if search['matched'] else 'no'}"
    )


def ratio_line(r: dict[str, float]) -> str:
    """The ratios against the beta-VAEs measured in the same run."""
    return (
        f"ratios against the matched beta-VAE of this run: MSE lbo/beta "
        f"{_fmt(r['mse'], '.2f')}x, SSIM lbo/beta {_fmt(r['ssim'], '.2f')}x, "
        f"seconds per step lbo/beta {_fmt(r.get('step_time', NAN), '.2f')}x; "
        f"MSE lbo/beta at equal time {_fmt(r.get('mse_equal_time', NAN), '.2f')}x"
    )


def goal_lines(checks: list[dict[str, Any]]) -> list[str]:
    """Each goal as ``PASS`` or ``MISS`` with its numbers."""
    return [
        f"{'PASS' if c['passed'] else 'MISS'}  {i}. {c['goal']}: {c['detail']}"
        for i, c in enumerate(checks, 1)
    ]


def header_lines(info: dict[str, Any], config: TrainConfig, record: dict[str, Any]) -> list[str]:
    """The settings the tables come from (without the versions and machine lines)."""
    changed = {
        f.name: getattr(config, f.name)
        for f in attrs.fields(TrainConfig)
        if f.name not in ("device", "seed")
        and getattr(config, f.name) != getattr(TrainConfig(), f.name)
    }
    mode = " (--quick: a smoke test, not a result)" if record["quick"] else ""
    config_text = ", ".join(f"{k}={v}" for k, v in changed.items())
    return [
        f"config: TrainConfig(seed=s{', ' + config_text if config_text else ''}): "
        f"{config.images} training and {config.heldout} held-out {config.dataset} images of "
        f"{config.image_size}x{config.image_size}, batch {config.batch_size}, "
        f"up to {config.epochs} epochs, lr {config.lr:g}{mode}",
        f"seeds: {', '.join(map(str, record['seeds']))}; beta grid "
        f"{', '.join(f'{b:g}' for b in record['betas'])}, up to {record['refine']} refinements, "
        f"KL matched within {KL_TOLERANCE:.0%}; the equal-time arm trains the chosen beta for "
        "the LBO-VAE's seconds of training; every arm evaluated by the trainer's "
        "evaluate_heldout and evaluate_split",
    ]


def markdown(record: dict[str, Any], body: list[str]) -> str:
    """The Markdown report: the command and machine on top, then the tables and goals."""
    info = record["machine"]
    extra = f", {info['accelerator']}" if info.get("accelerator") else ""
    lines = [
        "# LBO-VAE trainer quality: held-out shapes against a KL-matched beta-VAE",
        "",
        "The beta-VAE at equal steps and at equal wall-clock time; the split measured by DCI, "
        "MIG and the split score on the shapes' known factors.",
        "",
        "Written by `benchmarks/trainer_quality.py`; the arms and the search are in its docstring.",
        "",
        f"Command: `{record['command']}`",
        "",
        f"Machine: {info['processor']}, {info['cpu_count']} CPUs, {info['platform']}; "
        f"device {info['device']} ({info['device_name']}{extra}); Python {info['python']}, "
        f"torch {info['torch']} ({info['torch_threads']} thread(s)), numpy {info['numpy']}, "
        f"constraint_sched {info['constraint_sched']}.",
        "",
        *body,
    ]
    return "\n".join(lines) + "\n"


def strict(x: Any) -> Any:
    """``x`` for strict JSON: non-finite floats as None, tuples as lists, recursively."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: strict(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [strict(v) for v in x]
    return x


# -- the command line ----------------------------------------------------------------------------


def _numbers(kind: type, text: str) -> tuple[Any, ...]:
    try:
        values = tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"an empty list: {text!r}")
    return values


def parse_seeds(text: str) -> tuple[int, ...]:
    """``0,1,2`` -> ``(0, 1, 2)``."""
    return _numbers(int, text)


def parse_betas(text: str) -> tuple[float, ...]:
    """``0.01,0.1`` -> ``(0.01, 0.1)``; each positive and finite."""
    betas = _numbers(float, text)
    if not all(b > 0 and math.isfinite(b) for b in betas):
        raise argparse.ArgumentTypeError(f"betas must be positive: {text!r}")
    return betas


def main(argv: Sequence[str] | None = None) -> int:
    """Run every arm on every seed; print the tables, the ratios and the goal checks.

    Args:
        argv: Command-line arguments without the program name; None reads ``sys.argv``.

    Returns:
        The exit status (0: a missed goal is a result, not a failure).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=parse_seeds, help="comma-separated seeds (default 0,1,2; --quick: 0)"
    )
    parser.add_argument(
        "--betas",
        type=parse_betas,
        help="the beta grid the search starts from (default 0.01,0.02,0.05,0.1,0.2,0.5; "
        "--quick: 0.05,0.5)",
    )
    parser.add_argument(
        "--refine",
        type=int,
        help=f"the most trainings after the grid (default {REFINE}; --quick: {QUICK_REFINE})",
    )
    parser.add_argument("--epochs", type=int, help="epochs per run (default: the config's)")
    parser.add_argument("--images", type=int, help="training images (default: the config's)")
    _machine.add_device_argument(parser)
    _machine.add_threads_argument(parser)
    parser.add_argument("--out", type=Path, help="keep the runs' folders here (default: a temp)")
    parser.add_argument("--quiet", action="store_true", help="do not print the runs' epoch lines")
    parser.add_argument(
        "--markdown", type=Path, metavar="PATH", help="also write the tables as Markdown here"
    )
    _machine.add_quick_and_json(parser, "a tiny configuration, one seed: a smoke test")
    args = parser.parse_args(argv)
    _machine.set_threads(args.threads, parser)
    device = _machine.pick_device(args.device, parser)
    overrides: dict[str, Any] = {"device": device, **(QUICK if args.quick else {})}
    for key in ("epochs", "images"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    try:
        base = TrainConfig(**overrides)
    except ValueError as error:
        parser.error(str(error))
    if base.epochs < 2:
        parser.error("--epochs must be at least 2: the goals read epochs 2 to the last")
    seeds = args.seeds or (QUICK_SEEDS if args.quick else SEEDS)
    betas = args.betas or (QUICK_BETAS if args.quick else BETAS)
    refine = args.refine if args.refine is not None else (QUICK_REFINE if args.quick else REFINE)
    if refine < 0:
        parser.error("--refine must be at least 0")

    info = _machine.describe(torch.device(device))
    record: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/trainer_quality.py", *argv]),
        "machine": info,
        "quick": args.quick,
        "config": attrs.asdict(base),
        "seeds": list(seeds),
        "betas": list(betas),
        "refine": refine,
        "kl_tolerance": KL_TOLERANCE,
        "arms": list(ARMS),
    }
    print(
        "LBO-VAE trainer quality: held-out shapes, against a KL-matched beta-VAE (equal steps "
        "and equal time) and the mean"
    )
    print(
        f"  Python {info['python']}, torch {info['torch']}, numpy {info['numpy']}, "
        f"constraint_sched {info['constraint_sched']}"
    )
    _machine.print_machine(info)
    settings = header_lines(info, base, record)
    for line in settings:
        print(f"  {line}")
    print()

    results: list[dict[str, Any]] = []
    with _machine.output(args.out, "trainer-quality-") as folder:
        for seed in seeds:
            config = TrainConfig(seed=seed, **overrides)
            results.append(
                run_seed(
                    config, folder / f"seed{seed}", grid=betas, refine=refine, quiet=args.quiet
                )
            )

    body: list[str] = []
    for seed in results:
        body += [
            f"## Seed {seed['seed']} ({seed['epochs']} epochs of {seed['steps_per_epoch']} steps)",
            "",
            *seed_table(seed),
            "",
            search_line(seed),
            "",
            ratio_line(seed["ratios"]),
            "",
        ]
    means = summarise(results)
    mean_ratios = ratios(
        *(
            {k: v["mean"] for k, v in means[arm].items()}
            for arm in ("lbo-vae", "beta-vae", EQUAL_TIME)
        )
    )
    checks = goal_checks(results, means)
    body += [
        f"## Mean ± standard deviation over {len(results)} seed(s)",
        "",
        *mean_table(results, means),
        "",
        ratio_line(mean_ratios) + " (of the means)",
        "",
        f"## Goal checks (means over {len(results)} seed(s))",
        "",
    ]
    goals = goal_lines(checks)
    print()
    for line in [*body, *goals]:
        print(line)

    record.update({"per_seed": results, "summary": means, "ratios": mean_ratios, "goals": checks})
    if args.markdown is not None:
        text = markdown(record, [*(f"- {line}" for line in settings), "", *body])
        text += "".join(f"- {line}\n" for line in goals)
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text, encoding="utf-8")
        print(f"\nmarkdown written to {args.markdown}")
    if args.json is not None:
        _machine.write_json(args.json, strict(record), default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
