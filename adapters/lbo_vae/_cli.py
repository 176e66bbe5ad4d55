"""The ``lbo-vae`` command: ``train`` a run, ``report`` on one."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from constraint_sched.adapters.lbo_vae._config import TrainConfig, load_config
from constraint_sched.adapters.lbo_vae._files import CHECKPOINT, METRICS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lbo-vae",
        description="Train an LBO-VAE whose KL ceiling and scales constraint_sched schedules.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train a run (the default dataset needs no download)",
        description="Train an LBO-VAE; the options override the config file's keys. Under "
        "torchrun --nproc_per_node=N each of the N ranks trains on its share of the batches "
        "(batch_size is per rank) and rank 0 writes the output.",
    )
    train.add_argument("--dataset", choices=("shapes", "digits", "folder"))
    train.add_argument("--data", help="a folder of PNG/JPEG images (implies --dataset folder)")
    train.add_argument(
        "--epochs",
        type=int,
        metavar="N",
        help="how many epochs the run trains in all; with --resume those the checkpoint has "
        "done count too: N must be greater than them (equal: nothing to train, exit 0)",
    )
    train.add_argument("--batch-size", type=int, dest="batch_size")
    train.add_argument(
        "--heldout",
        type=int,
        metavar="N",
        help="how many images are held out of training and measured at each epoch's end, "
        "1 or more (default: the config's heldout, 512); --data and --dataset digits need "
        "at least N + batch size images",
    )
    train.add_argument("--lr", type=float)
    train.add_argument("--device", choices=("auto", "cpu", "cuda"))
    train.add_argument("--seed", type=int)
    train.add_argument(
        "--perceptual-weights",
        dest="perceptual_weights",
        metavar="FILE",
        help="a local torchvision VGG16 weights file: adds the perceptual goal (never downloaded)",
    )
    train.add_argument(
        "--out",
        default="lbo-vae-run",
        help="output folder (default: %(default)s); one that holds a run is refused unless "
        "--resume or --overwrite is given",
    )
    train.add_argument("--config", help="a TOML file of settings (see the docs' trainer page)")
    train.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        help="a checkpoint to continue from, up to --epochs in all (see --epochs)",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace the run that --out holds (its {METRICS} and {CHECKPOINT})",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    report = commands.add_parser("report", help="print a run's summary and redraw its plots")
    report.add_argument("run", help="the run's output folder")
    return parser


class UsageError(Exception):
    """A mistake in what the command was given, reported as ``lbo-vae: error: ...``."""


USER_ERRORS = (
    UsageError,
    ValueError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    ImportError,
)
"""What `main` reports on one line, with exit status 2; anything else is a bug: a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2: a mistake, reported on one line)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        return _report(Path(args.run))
    except USER_ERRORS as error:
        print(f"lbo-vae: error: {error}", file=sys.stderr)
        return 2


def _train(args: argparse.Namespace) -> int:
    """Train a run; under ``torchrun`` (``WORLD_SIZE`` > 1) as one rank of a data-parallel run.

    The settings and ``--out`` are checked before anything is written, and a
    ``--resume`` checkpoint is read whole before ``--out`` changes (`Run.load`).
    """
    from constraint_sched.adapters.lbo_vae import _distributed
    from constraint_sched.adapters.lbo_vae._train import pick_device

    if args.resume and args.overwrite:
        raise UsageError(
            "--resume and --overwrite exclude each other: --resume continues the run of its "
            "checkpoint, --overwrite starts a new one"
        )
    config = _config(args)
    _check_out(Path(args.out), resume=args.resume is not None, overwrite=args.overwrite)
    with _distributed.process_group(pick_device(config.device)):
        return _train_run(args, config)


def _config(args: argparse.Namespace) -> TrainConfig:
    """The run's settings: the ``--config`` file's, then the options over them.

    Raises:
        UsageError: A value of the wrong type (TrainConfig's `TypeError`,
            which names the key, the value and the type it needs), or a
            ``--heldout`` below 1.
    """
    if args.heldout is not None and args.heldout < 1:
        raise UsageError(
            f"--heldout must be 1 or more (the images held out of training to measure the "
            f"model on), got {args.heldout}"
        )
    try:
        config = load_config(args.config) if args.config else TrainConfig()
        dataset = "folder" if args.data is not None else args.dataset
        return config.replace(
            dataset=dataset,
            data=args.data,
            epochs=args.epochs,
            batch_size=args.batch_size,
            heldout=args.heldout,
            lr=args.lr,
            device=args.device,
            seed=args.seed,
            perceptual_weights=args.perceptual_weights,
        )
    except TypeError as error:  # only the settings' own checks: a bug elsewhere still raises
        raise UsageError(str(error)) from None


def _check_out(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, or under one, or holds a run not to be replaced.

    A folder holding ``metrics.jsonl`` or ``checkpoint.pt`` holds a run: it is
    refused unless ``resume`` or ``overwrite``. A missing folder, an empty one
    or one of other files only is fine.

    Raises:
        UsageError: The message says what to pass instead.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file, not a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"--out {str(out)!r}: {str(parent)!r} is a file, not a folder")
            break
    if resume or overwrite or not out.is_dir():
        return
    found = [name for name in (METRICS, CHECKPOINT) if (out / name).is_file()]
    if not found:
        return
    if CHECKPOINT in found:
        hint = f"pass --resume {out / CHECKPOINT} to continue it or --overwrite to replace it"
    else:
        hint = f"pass --overwrite to replace it (it has no {CHECKPOINT} to --resume from)"
    raise UsageError(
        f"--out {str(out)!r} holds a previous run ({', '.join(found)}): {hint}, "
        "or choose another --out"
    )


def _train_run(args: argparse.Namespace, config: TrainConfig) -> int:
    from constraint_sched.adapters.lbo_vae import _distributed
    from constraint_sched.adapters.lbo_vae._train import Run

    run = Run(config, args.out, progress=not args.no_progress)
    say = print if run.main else _quiet  # one rank speaks for all
    if args.resume:
        checkpoint = run.read_checkpoint(args.resume)  # read and checked whole; nothing written
        done, epochs = checkpoint.epochs_done, _epochs(args, config)
        if done > config.epochs:
            raise UsageError(
                f"{epochs} is below the {done} epochs checkpoint {args.resume!r} has done: "
                f"--epochs counts every epoch of the run, those done included; pass --epochs "
                f"greater than {done} to train more (--epochs {done + 1} trains one more)"
            )
        if done == config.epochs:
            say(
                f"lbo-vae: nothing to train: checkpoint {args.resume!r} has done {done} epochs, "
                f"all that {epochs} asks for; pass --epochs greater than {done} to train more"
            )
            return 0
        run.load(checkpoint)
        say(f"resumed from {args.resume} at epoch {run.epoch}")
    ranks = f" on each of {run.world} ranks" if run.world > 1 else ""
    say(
        f"lbo-vae: {config.dataset} ({len(run.data.images)} images of {config.image_size}px), "
        f"{config.epochs} epochs of batch {config.batch_size}{ranks}, lr {config.lr:g}, "
        f"on {run.device}"
    )
    run.train()
    if run.world > 1:
        digest = _distributed.check_replicas(
            [run.vae, run.disc], extra=run.schedulers.state_dict()["core"]
        )
        say(f"replicas: the {run.world} ranks hold the same weights and bounds ({digest})")
    if not run.main:
        return 0
    out = Path(args.out)
    try:
        from constraint_sched.adapters.lbo_vae._plots import draw

        drawn = draw(out, run=run)
        print(f"plots: {', '.join(str(p) for p in drawn)}")
    except ImportError as error:
        print(f"plots skipped: {error}")
    print(f"metrics: {out / METRICS}; checkpoint: {out / CHECKPOINT}")
    return 0


def _epochs(args: argparse.Namespace, config: TrainConfig) -> str:
    """Where the run's ``epochs`` came from, for a message: ``--epochs 3``, or the config's."""
    if args.epochs is not None:
        return f"--epochs {config.epochs}"
    if args.config:
        return f"epochs = {config.epochs} of --config {args.config} (no --epochs given)"
    return f"the default of {config.epochs} epochs (no --epochs given)"


def _quiet(*args: object) -> None:
    """The printer of every rank but rank 0."""


def _cell(row: dict[str, Any], key: str, spec: str, width: int) -> str:
    """``row[key]`` formatted with ``spec`` in ``width`` columns; ``-`` when the row lacks it."""
    if key not in row:
        return f"{'-':>{width}}"
    return f"{row[key]:>{width}{spec}}"


def _report(run: Path) -> int:
    metrics = run / METRICS
    if not metrics.is_file():
        raise FileNotFoundError(f"{str(run)!r} holds no {METRICS}: not an lbo-vae run folder")
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    print(f"{'epoch':>5}  {'KL phase':<9} {'ceiling':>9} {'kl_core':>8} {'kl_detail':>9} "
          f"{'reject':>7} {'min group':>9} {'swap s/a':>9} {'held mse':>9} {'mean mse':>9} "
          f"{'ssim':>5} {'shape':>5} {'over':>6}")  # fmt: skip
    for r in rows:
        # null: no accepted step; a key missing: a row of an older trainer
        r = {k: math.nan if v is None else v for k, v in r.items()}
        ceiling = "none" if math.isnan(r["kl_ceiling"]) else f"{r['kl_ceiling']:,.1f}"
        print(
            f"{r['epoch']:>5}  {r['kl_phase']:<9} {ceiling:>9} {r['kl_core']:>8.1f} "
            f"{r['kl_detail']:>9.1f} {r['reject_rate']:>7.1%} {r['min_group']:>9.3f} "
            f"{r['swap_structure']:>4.2f}/{r['swap_appearance']:.2f} "
            f"{_cell(r, 'heldout_mse', '.4f', 9)} {_cell(r, 'heldout_mean_mse', '.4f', 9)} "
            f"{_cell(r, 'heldout_ssim', '.2f', 5)} {_cell(r, 'heldout_shape', '.2f', 5)} "
            f"{_cell(r, 'steps_over_ceiling', '.1%', 6)}"
        )
    measured = [r for r in rows if "dci_disentanglement" in r]  # the last epoch's, of shapes
    if measured:
        from constraint_sched.adapters.lbo_vae._train import split_line

        for r in measured:
            print(f"split (epoch {r['epoch']}, held-out images): {split_line(r)}")
    try:
        from constraint_sched.adapters.lbo_vae._plots import draw

        drawn = draw(run)
        print(f"plots: {', '.join(str(p) for p in drawn)}")
    except ImportError as error:
        print(f"plots skipped: {error}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
