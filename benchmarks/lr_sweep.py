"""The seed's learning-rate sweep: does the trainer work with any LR? Discovered vs fixed ceiling.

For each learning rate (1e-3, 2e-3, 3e-3 and 5e-3 by default) the bundled
LBO-VAE trainer runs its default configuration (``TrainConfig()`` with only
``lr`` changed; ``--epochs`` and ``--images`` override those two) through
``Run(config, out, print_=..., progress=False).train()``, twice:

- **discovered**: the trainer as it is: the KL ceiling (shared by
  ``kl_core`` and ``kl_detail``) is discovered in epoch 1 as the max KL of the
  accepted steps, held, then squeezed towards ``kl_target``, backed off when a
  squeeze rejects too many steps (`build_schedulers`).
- **fixed**: the original's v17c: a hard-coded ceiling ``FIXED`` from epoch
  1 instead of a discovered one, then the same hold, squeeze and backoff
  (`fix_ceiling` swaps the run's ``kl`` scheduler for one whose discovery is
  ``statistic="given"`` over the KL specs with ``upper=FIXED``, before any
  step; the `Stepper` is rebuilt over it with the run's own parts).

``FIXED`` is the ceiling the 1e-3 run discovered (a guess tuned to one
learning rate, which is the point) unless ``--fixed`` gives one;
``--arms fixed --fixed C`` runs only that arm.

Per run the table shows: the max KL of epoch 1 (the metrics row's
``kl_max``), the ceiling in force in epoch 2 (discovered, or ``FIXED``), the
largest mean KL of either half over its ceiling in epochs 1 and 2 (above 1:
the ceiling is violated from the start, as v17's and v17b's were), the
reject rate of epoch 1, the final mean KL (the mean of ``kl_core`` and
``kl_detail`` in the last row) against ``kl_target``, and the largest reject
rate of any epoch. ``--json PATH`` writes the rows (and every run's metrics
rows) as JSON. A run that raises is reported in its row, and the exit status
is 1.

Usage:
    python benchmarks/lr_sweep.py [--lrs 1e-3,2e-3,3e-3,5e-3] [--epochs N]
        [--images N] [--fixed CEILING] [--device auto|cpu|cuda] [--threads T]
        [--out DIR] [--quiet] [--quick] [--json PATH]

Run it against the source tree with ``PYTHONPATH=. python benchmarks/lr_sweep.py``
from the repository root, or with ``constraint-sched[trainer]`` installed.
The full sweep is 8 runs of the default configuration (10 epochs each).
``--quick`` runs a tiny configuration for 2 epochs (16x16 images, 32 of them,
batch 16, a narrow model, one calibration step): a smoke test of the script,
not a result. On a CPU that other work shares, ``--threads 1``: torch's
intra-op threads wait for each other at every operator, and a step can take
tens of times longer when one of them is descheduled.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _machine
import attrs
import torch

from constraint_sched import (
    Backoff,
    ConstraintScheduler,
    DiscoveryPhase,
    HoldPhase,
    SchedulerCollection,
    SqueezeSchedule,
    __version__,
)
from constraint_sched.adapters.lbo_vae import Run, Stepper, TrainConfig
from constraint_sched.adapters.lbo_vae._schedules import KL_GOALS
from constraint_sched.adapters.torch import TorchScheduler

LRS = (1e-3, 2e-3, 3e-3, 5e-3)
"""The seed's learning rates."""

REFERENCE_LR = 1e-3
"""The run whose discovered ceiling is ``FIXED`` (a guess tuned to it) unless ``--fixed``."""

QUICK = {
    "images": 32,
    "batch_size": 16,
    "image_size": 16,
    "epochs": 2,
    "width": 8,
    "disc_width": 8,
    "calibration_steps": 1,
}
"""``--quick``'s tiny configuration (a smoke test of the script, not a result)."""

ARMS = ("discovered", "fixed")


def fix_ceiling(run: Run, fixed: float) -> None:
    """Replace ``run``'s KL scheduler with the original's v17c: ``fixed`` instead of a discovery.

    The new scheduler has the same two KL specs with ``upper=fixed``, keeps
    that ceiling through epoch 1 (``DiscoveryPhase(statistic="given")``)
    instead of discovering one, then holds and squeezes it exactly as the
    run's own scheduler would (the same hold, geometric squeeze or table, and
    backoff). Call it before training.

    Raises:
        ValueError: The run has already taken a step, or ``fixed`` gives no
            valid KL spec (it must lie above ``kl_healthy``).
    """
    if run.stepper.steps:
        raise ValueError("fix_ceiling: the run has already taken steps")
    cfg = run.config
    kl = run.collection["kl"]
    specs = [attrs.evolve(kl.spec(name), upper=fixed) for name in KL_GOALS]
    scheduler = ConstraintScheduler(
        specs,
        discovery=DiscoveryPhase(statistic="given"),
        hold=HoldPhase(epochs=cfg.kl_hold),
        squeeze=(
            SqueezeSchedule.table(cfg.kl_table)
            if cfg.kl_table is not None
            else SqueezeSchedule.geometric(target=cfg.kl_target, epochs=cfg.kl_squeeze_epochs)
        ),
        backoff=Backoff(max_reject_rate=cfg.max_reject_rate, factor=1.0),
        name="kl",
    )
    scheduler.add_callback(run._event)  # the run prints the kl events it is given
    collection = SchedulerCollection([scheduler, *(s for s in run.collection if s.name != "kl")])
    schedulers = TorchScheduler(collection)
    run.collection, run.schedulers = collection, schedulers
    old = run.stepper  # the same wiring over the new schedulers (barriers, agreement)
    run.stepper = Stepper(
        old.vae,
        old.disc,
        old.goals,
        schedulers,
        old.optimizer,
        old.disc_optimizer,
        barriers=old.barriers,
        agree=old.agree,
        features=old.features,
        met=old.met,
        clip=old.clip,
        recheck=old.recheck,
        refresh=old.refresh,
    )


def summarise(config: TrainConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The table's figures of one run, from its metrics rows."""
    first, last = rows[0], rows[-1]
    second = rows[1] if len(rows) > 1 else None
    final_kl = (last["kl_core"] + last["kl_detail"]) / 2
    return {
        "kl_max_epoch_1": first["kl_max"],
        "ceiling_epoch_2": None if second is None else second["kl_ceiling"],
        "reject_rate_epoch_1": first["reject_rate"],
        "kl_over_ceiling_epochs_1_2": max(
            (
                max(r["kl_core"], r["kl_detail"]) / r["kl_ceiling"]
                for r in rows[:2]
                if r["kl_ceiling"] is not None
            ),
            default=None,
        ),
        "final_kl": final_kl,
        "kl_target": config.kl_target,
        "final_kl_over_target": final_kl / config.kl_target,
        "max_reject_rate": max(r["reject_rate"] for r in rows),
        "epoch_of_max_reject_rate": max(rows, key=lambda r: r["reject_rate"])["epoch"],
        "epochs": len(rows),
    }


def run_one(
    config: TrainConfig, out: Path, arm: str, fixed: float | None, quiet: bool
) -> dict[str, Any]:
    """Train one configuration; its row of the table (an ``error`` if it raised)."""
    tag = f"[lr={config.lr:g} {arm}]"

    def echo(line: str) -> None:
        if not quiet:
            print(f"{tag} {line}", flush=True)

    record: dict[str, Any] = {"lr": config.lr, "arm": arm, "fixed": fixed, "out": str(out)}
    started = time.perf_counter()
    try:
        run = Run(config, out, print_=echo, progress=False)
        if arm == "fixed":
            assert fixed is not None
            fix_ceiling(run, fixed)
        rows = run.train()
    except Exception as error:  # a sweep reports a run that fails, and goes on
        record["error"] = f"{type(error).__name__}: {error}"
        echo(f"failed: {record['error']}")
        return record
    finally:
        record["seconds"] = time.perf_counter() - started
    record.update(summarise(config, rows))
    record["rows"] = rows
    return record


def fmt(value: float | None, spec: str = ".1f") -> str:
    """A number for the table; '-' for None, 'nan' for NaN."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return format(value, spec)


def table(records: list[dict[str, Any]]) -> list[str]:
    """The markdown table: one row per run, the two arms of an LR side by side."""
    lines = [
        "| LR | ceiling | max KL, epoch 1 | ceiling, epoch 2 | mean KL / ceiling, epochs 1-2 | "
        "rejects, epoch 1 | final mean KL / target | max rejects (epoch) |",
        "|---:|:---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        head = f"| {r['lr']:g} | {r['arm']} |"
        if "error" in r:
            lines.append(f"{head} {r['error']} | | | | | |")
            continue
        lines.append(
            f"{head} {fmt(r['kl_max_epoch_1'])} | {fmt(r['ceiling_epoch_2'])} | "
            f"{fmt(r['kl_over_ceiling_epochs_1_2'], '.2f')} | "
            f"{r['reject_rate_epoch_1']:.1%} | {fmt(r['final_kl'])} / {r['kl_target']:g} "
            f"({fmt(r['final_kl_over_target'], '.2f')}x) | "
            f"{r['max_reject_rate']:.1%} ({r['epoch_of_max_reject_rate']}) |"
        )
    return lines


def parse_lrs(text: str) -> tuple[float, ...]:
    """``1e-3,2e-3`` -> ``(0.001, 0.002)``."""
    try:
        lrs = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not lrs or not all(lr > 0 and math.isfinite(lr) for lr in lrs):
        raise argparse.ArgumentTypeError(f"learning rates must be positive: {text!r}")
    return lrs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep and print the table.

    Args:
        argv: Command-line arguments without the program name; None reads ``sys.argv``.

    Returns:
        The exit status: 1 if a run failed.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lrs",
        type=parse_lrs,
        default=LRS,
        help="comma-separated learning rates (default 1e-3,2e-3,3e-3,5e-3)",
    )
    parser.add_argument("--epochs", type=int, help="epochs per run (default: the config's)")
    parser.add_argument("--images", type=int, help="training images (default: the config's)")
    parser.add_argument(
        "--fixed",
        type=float,
        help="the fixed arm's ceiling (default: the ceiling the 1e-3 run discovered)",
    )
    parser.add_argument(
        "--arms",
        type=lambda text: tuple(a for a in text.split(",") if a),
        default=ARMS,
        help="which arms to run: discovered, fixed or both (default discovered,fixed)",
    )
    _machine.add_device_argument(parser)
    _machine.add_threads_argument(parser)
    parser.add_argument("--out", type=Path, help="keep each run's folder here (default: a temp)")
    parser.add_argument("--quiet", action="store_true", help="do not print the runs' epoch lines")
    _machine.add_quick_and_json(parser, "a tiny configuration: a smoke test", what="rows")
    args = parser.parse_args(argv)
    _machine.set_threads(args.threads, parser)
    device = _machine.pick_device(args.device, parser)
    base = TrainConfig(device=device)
    if args.quick:
        base = base.replace(**QUICK)
    try:
        base = base.replace(epochs=args.epochs, images=args.images)
    except ValueError as error:
        parser.error(str(error))
    if base.epochs < 2:
        parser.error("--epochs must be at least 2: epoch 2 is where the discovered ceiling acts")
    if not args.arms or set(args.arms) - set(ARMS):
        parser.error(f"--arms takes {', '.join(ARMS)}, got {','.join(args.arms)}")
    if "discovered" not in args.arms and args.fixed is None:
        parser.error("--arms fixed alone needs --fixed: there is no discovered run to take it from")
    if args.fixed is None and REFERENCE_LR not in args.lrs:
        parser.error(f"--lrs has no {REFERENCE_LR:g} run to take the fixed ceiling from: --fixed")
    if args.fixed is not None and not args.fixed > base.kl_healthy:
        parser.error(f"--fixed must be above kl_healthy ({base.kl_healthy:g})")

    print("LBO-VAE learning-rate sweep: discovered KL ceiling vs one fixed ceiling (v17c)")
    print(
        f"  Python {platform.python_version()}, torch {torch.__version__}, constraint_sched "
        f"{__version__}; device: {device} ({_machine.cpu_model()}), torch threads: "
        f"{torch.get_num_threads()}"
    )
    changed = {
        f.name: getattr(base, f.name)
        for f in attrs.fields(TrainConfig)
        if getattr(base, f.name) != getattr(TrainConfig(), f.name) and f.name != "device"
    }
    mode = " (--quick: a smoke test, not a result)" if args.quick else ""
    print(
        f"  config: TrainConfig() with lr swept"
        f"{', ' + ', '.join(f'{k}={v}' for k, v in changed.items()) if changed else ''}; "
        f"kl_target {base.kl_target:g}{mode}"
    )
    print(f"  learning rates: {', '.join(f'{lr:g}' for lr in args.lrs)}")
    print()

    records: list[dict[str, Any]] = []
    with _machine.output(args.out, "lr-sweep-") as folder:
        discovered = {}
        for lr in args.lrs if "discovered" in args.arms else ():
            config = base.replace(lr=lr)
            record = run_one(
                config, folder / f"lr{lr:g}-discovered", "discovered", None, args.quiet
            )
            discovered[lr] = record
        fixed = args.fixed
        if fixed is None:
            reference = discovered[REFERENCE_LR]
            fixed = reference.get("ceiling_epoch_2")
            if fixed is None:
                print(f"the {REFERENCE_LR:g} run discovered no ceiling: the fixed arm is skipped")
        fixed_runs = {}
        if fixed is not None and "fixed" in args.arms:
            if not fixed > base.kl_healthy:
                print(
                    f"the fixed ceiling {fixed:g} is not above kl_healthy: the fixed arm is skipped"
                )
            else:
                print(
                    f"fixed ceiling: {fixed:.4g}"
                    + ("" if args.fixed else f" (the {REFERENCE_LR:g} run's)")
                )
                for lr in args.lrs:
                    config = base.replace(lr=lr)
                    fixed_runs[lr] = run_one(
                        config, folder / f"lr{lr:g}-fixed", "fixed", fixed, args.quiet
                    )
        for lr in args.lrs:
            if lr in discovered:
                records.append(discovered[lr])
            if lr in fixed_runs:
                records.append(fixed_runs[lr])

    print()
    for line in table(records):
        print(line)
    failed = [r for r in records if "error" in r]
    if args.json is not None:
        payload = {
            "torch": torch.__version__,
            "constraint_sched": __version__,
            "device": device,
            "machine": _machine.describe(),
            "config": attrs.asdict(base),
            "lrs": list(args.lrs),
            "fixed_ceiling": fixed,
            "quick": args.quick,
            "records": records,
        }
        _machine.write_json(args.json, payload, what="rows", default=str)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
