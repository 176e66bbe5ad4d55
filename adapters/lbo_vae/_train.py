"""The LBO-VAE training loop: data -> model -> goals -> steps -> schedulers -> logs, checkpoints."""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from constraint_sched import Converged, Discovered, Event
from constraint_sched.adapters.lbo_vae import _distributed
from constraint_sched.adapters.lbo_vae._config import TrainConfig
from constraint_sched.adapters.lbo_vae._data import load, split
from constraint_sched.adapters.lbo_vae._disentanglement import SPLIT_KEYS, evaluate_split
from constraint_sched.adapters.lbo_vae._files import (
    CHECKPOINT,
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    METRICS,
)
from constraint_sched.adapters.lbo_vae._goals import default_goals, met_levels
from constraint_sched.adapters.lbo_vae._images import ImageSet
from constraint_sched.adapters.lbo_vae._metrics import kl_divergence, ssim
from constraint_sched.adapters.lbo_vae._model import LBOVAE, ModelConfig, build
from constraint_sched.adapters.lbo_vae._perceptual import VGGFeatures, load_vgg_features
from constraint_sched.adapters.lbo_vae._schedules import (
    CALIBRATION_HEADROOM,
    KL_GOALS,
    TIGHTEN_REJECT_RATE,
    box_factor,
    build_schedulers,
    tightened,
)
from constraint_sched.adapters.lbo_vae._shapes import shape_recovery, shapes, swap_scores
from constraint_sched.adapters.lbo_vae._step import Stepper
from constraint_sched.adapters.torch import TorchScheduler

Printer = Callable[[str], None]
"""Where a `Run` sends its messages: a function that takes one line (``print`` by default)."""

CHECKPOINT_PARTS: dict[str, tuple[type, ...]] = {
    "format": (str,), "version": (int,), "config": (dict,), "epoch": (int,),
    "steps": (int,), "norm_ema": (torch.Tensor,), "vae": (dict,), "disc": (dict,),
    "optimizer": (dict,), "disc_optimizer": (dict,), "schedulers": (dict,),
    "history": (list,), "rng": (dict,),
}  # fmt: skip
"""The parts of a checkpoint (`Run.state_dict`) that `Run.load` needs, and their kinds."""
RNG_PARTS: dict[str, tuple[type, ...]] = {
    "torch": (torch.Tensor,), "cuda": (list, tuple), "numpy": (list, tuple),
    "python": (list, tuple), "loader": (torch.Tensor,),
}  # fmt: skip
"""The random generators' states in a checkpoint's ``rng``, and their kinds."""
TIGHTEN_WINDOW = 3
"""LBO.md section 5: the epochs whose mean min group decides whether fixed scales tighten."""
EVAL_BATCH = 256
"""The held-out images `Run.evaluate` encodes and decodes at a time."""
HELDOUT_STREAM = 1
"""The spawn key of the seed of the held-out shapes (`heldout_seed`)."""
SPLIT_MIN_IMAGES = 16
"""The fewest held-out images `Run.evaluate_split` measures DCI, MIG and the split score on."""


def pick_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; ``"cuda"`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but torch sees no CUDA device")
    return torch.device(name)


def heldout_seed(seed: int) -> int:
    """The seed of a run's held-out shapes: a stream of its own, derived from the run's seed.

    `shapes` draws its factors one after another, so the first ``n`` images
    of a larger draw are not ``shapes(n)``: the held-out images are a draw of
    their own, from numpy's `~numpy.random.SeedSequence` of ``seed`` with
    the spawn key ``(HELDOUT_STREAM,)``, which is neither ``seed`` nor a
    nearby run's seed.

    Examples:
        >>> heldout_seed(0) == heldout_seed(0) != heldout_seed(1)
        True
    """
    sequence = np.random.SeedSequence(seed, spawn_key=(HELDOUT_STREAM,))
    return int(sequence.generate_state(1, np.uint64)[0])


def load_data(config: TrainConfig) -> tuple[ImageSet, ImageSet]:
    """A run's training images and the ``config.heldout`` images training never sees.

    For ``"shapes"`` the training images are ``shapes(config.images,
    seed=config.seed, sizes=config.shape_sizes)``, exactly as without a
    held-out set, and the held-out ones a separate draw of ``config.heldout``
    (`heldout_seed`) with the same sizes. The fixed
    sets (``"digits"``, ``"folder"``) are split (`split`) by a permutation
    seeded with ``config.seed``.

    Returns:
        ``(train, heldout)``.

    Raises:
        ValueError: A fixed set would keep fewer than ``config.batch_size``
            images to train on: the message names ``heldout`` (``--heldout``)
            and ``batch_size`` (``--batch-size``), the images found and how
            many the split needs; and what `load` raises.
    """
    if config.dataset == "shapes":
        size, sizes = config.image_size, config.shape_sizes
        data = shapes(config.images, image_size=size, seed=config.seed, sizes=sizes)
        held = shapes(config.heldout, image_size=size, seed=heldout_seed(config.seed), sizes=sizes)
        return data, held
    data = load(config.dataset, data=config.data, image_size=config.image_size)
    found, asked, batch = len(data), config.heldout, config.batch_size
    if found - asked < batch:
        where = f"the folder {config.data!r}" if config.dataset == "folder" else "digits"
        fits = found - batch  # the most a held-out split may take at this batch size
        advice = "give more images"
        if fits >= 1:
            advice = f"pass --heldout {fits} or less, or {advice}"
        elif found >= 2:
            advice = (
                f"pass a --batch-size of at most {found - 1} and a --heldout that leaves one "
                f"batch, or {advice}"
            )
        raise ValueError(
            f"TrainConfig.heldout={asked} is too large for the {found} images of {where}: "
            f"--heldout {asked} held out and one batch of --batch-size {batch} to train on need "
            f"at least {asked + batch} images, {asked + batch - found} more than found; {advice}"
        )
    return split(data, asked, seed=config.seed, min_train=batch)


def model_config(config: TrainConfig, channels: int) -> ModelConfig:
    """The sizes of the networks a run of ``config`` builds, for images of ``channels``."""
    return ModelConfig(
        image_size=config.image_size,
        channels=channels,
        core_dims=config.core_dims,
        detail_dims=config.detail_dims,
        width=config.width,
        disc_width=config.disc_width,
    )


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches of ``n`` images: a random order from ``generator``, in full batches.

    The last, partial batch is dropped, unless there is no full one.
    """
    order = torch.randperm(n, generator=generator)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    return [b for b in batches if len(b) == batch_size] or batches


class Run:
    """An LBO-VAE run: everything it trains and schedules, and what it writes to ``out``.

    Args:
        config: The run's settings.
        out: The output folder: ``metrics.jsonl``, plots, checkpoints.
        print_: Where the run's messages go (the command line prints them).
        progress: Show a progress bar per epoch (tqdm).

    Making a run writes nothing: ``out`` is created, and its ``metrics.jsonl``
    started afresh (from the run's `history`), when the first epoch begins or
    when `load` has read a whole checkpoint, whichever comes first. In an
    ``out`` that holds another run, a run replaces that run's files as it
    writes its own (``lbo-vae train`` refuses such a folder unless given
    ``--resume`` or ``--overwrite``).

    The run trains on ``data`` and measures, at the end of each epoch, its
    reconstructions and swaps of ``heldout`` (`evaluate`), images it never
    trains on (`load_data`); at its last epoch, also the split of their
    known factors over the latent halves (`evaluate_split`: DCI, MIG and the
    split score).

    Under an initialised ``torch.distributed`` process group (``lbo-vae train``
    under ``torchrun``) every rank trains on its own shard of each epoch's
    batches, ``batch_size`` per rank, with averaged gradients and agreed
    rollbacks (see `_distributed`); rank 0 alone prints, shows progress and
    writes ``out``, and its metrics count every rank's steps.

    Raises:
        NotADirectoryError: ``out`` is a file.
        ValueError: What `load_data` raises; the images make fewer batches
            than there are ranks.
    """

    def __init__(
        self,
        config: TrainConfig,
        out: str | Path,
        *,
        print_: Printer = print,
        progress: bool = True,
    ) -> None:
        self.rank, self.world = _distributed.rank(), _distributed.world_size()
        self.main = self.rank == 0  # the rank that prints and writes
        self.config, self.out = config, Path(out)
        self.print: Printer = print_ if self.main else _quiet
        self.progress = progress and self.main
        if self.main and self.out.exists() and not self.out.is_dir():
            raise NotADirectoryError(f"Run: out {str(self.out)!r} is a file, not a folder")
        self._out_started = False
        """Whether ``out`` is created and ``metrics.jsonl`` started (`_start_out`)."""
        self.device = _distributed.rank_device(pick_device(config.device))
        _seed_everything(config.seed)
        self.data: ImageSet
        self.heldout: ImageSet
        self.data, self.heldout = load_data(config)
        # The baseline of the held-out MSE: every image predicted by the training set's mean.
        mean = self.data.images.mean(dim=0, keepdim=True)
        self.heldout_mean_mse = float((self.heldout.images - mean).square().mean())
        if len(self.data.images) // config.batch_size < self.world:
            raise ValueError(
                f"{len(self.data.images)} images make fewer batches of {config.batch_size} than "
                f"the {self.world} ranks: use more images or a smaller batch_size (per rank)"
            )
        vae, disc = build(model_config(config, int(self.data.images.shape[1])))
        self.vae, self.disc = vae.to(self.device), disc.to(self.device)
        # fused: the step state stays on the GPU, so a rollback needs no host sync
        fused = True if self.device.type == "cuda" else None
        self.optimizer = torch.optim.AdamW(self.vae.parameters(), lr=config.lr, fused=fused)
        self.disc_optimizer = torch.optim.AdamW(
            self.disc.parameters(), lr=config.lr / 10, fused=fused
        )
        # The perceptual goal's extractor, from the user's local file only (never downloaded).
        self.features: VGGFeatures | None = None
        if config.perceptual_weights is not None:
            self.features = load_vgg_features(config.perceptual_weights, device=self.device)
        self.goals = default_goals(
            kl_lower=config.kl_lower,
            kl_healthy=config.kl_healthy,
            kl_steepness=config.kl_steepness,
            perceptual=self.features is not None,
        )
        self.collection = build_schedulers(self.goals, config)
        self.schedulers = TorchScheduler(self.collection)
        self.schedulers.add_callback(self._event)
        self.stepper = Stepper(
            self.vae,
            self.disc,
            self.goals,
            self.schedulers,
            self.optimizer,
            self.disc_optimizer,
            barriers=KL_GOALS if config.kl_hard_ceiling else (),
            agree=_distributed.agree_any if self.world > 1 else None,
            features=self.features,
            met=met_levels(
                self.goals,
                met=config.met,
                by_name={"swap": config.swap_met, "disentangle": config.disentangle_met}
                | {name: config.kl_met for name in KL_GOALS},
            ),
            clip=config.gradient_clip,
            recheck=config.recheck,  # type: ignore[arg-type]
            refresh=config.refresh,
        )
        if self.world > 1:  # the replicas start, step and roll back together
            for module in (self.vae, self.disc):
                _distributed.broadcast_module(module)
            _distributed.average_gradients(self.optimizer)
            _distributed.average_gradients(self.disc_optimizer)
        self._events: list[Event] = []
        self._tightened = tightened(self.collection)
        self.stop_after: int | None = None
        """The last epoch to train, once LBO's stop rule has fired."""
        self.epoch = 1
        self.history: list[dict[str, Any]] = []
        self.generator = torch.Generator().manual_seed(config.seed)

    # -- the loop ----------------------------------------------------------------------

    def train(self) -> list[dict[str, Any]]:
        """Train for the configured epochs; returns the metrics of each epoch."""
        rows = []
        while self.epoch <= self.config.epochs and (
            self.stop_after is None or self.epoch <= self.stop_after
        ):
            rows.append(self.train_epoch())
        if self.stop_after is not None and self.epoch <= self.config.epochs:
            self.print(f"stopped after epoch {self.stop_after} (LBO's stop rule)")
        return rows

    def train_epoch(self) -> dict[str, Any]:
        """One epoch: every batch, then the schedulers' epoch boundary, metrics and checkpoint."""
        if not self._out_started:
            self._start_out()
        cfg, stepper = self.config, self.stepper
        kl = self.collection["kl"]
        phase, ceiling = kl.phase.name, kl.bound
        n = len(self.data.images)
        batches = epoch_batches(n, cfg.batch_size, self.generator)
        if self.world > 1:  # this rank's shard; its own noise, a function of the epoch
            batches = _distributed.shard(batches, self.rank, self.world)
            torch.manual_seed(_distributed.rank_seed(cfg.seed, self.epoch, self.rank))
        groups = len(stepper.group_names)
        over = 3 + 2 * groups  # accepted steps whose KL is over the ceiling, the last total
        # loss, min group, rejects, each group's score and bottleneck count, over the ceiling
        totals = torch.zeros(over + 1, device=self.device)
        started = time.perf_counter()
        bar = self._bar(len(batches))
        stepper.start_epoch()  # every group afresh on the epoch's first step
        for i, index in enumerate(batches):
            x = self.data.images[index].to(self.device, non_blocking=True)
            result = stepper(x)
            # A rejected step's values may be NaN: keep them out (where, not a product).
            ok = ~result.rejected
            zero, one = totals.new_zeros(()), totals.new_ones(())
            totals[0] += torch.where(ok, result.loss.detach(), zero)
            totals[1] += torch.where(ok, result.groups.min(), zero)
            totals[2] += result.rejected.to(totals.dtype)
            totals[3 : 3 + groups] += torch.where(ok, result.groups, zero)
            totals[3 + groups : over] += F.one_hot(result.bottleneck, groups) * ok
            kl_step = torch.maximum(result.metrics["kl_core"], result.metrics["kl_detail"])
            totals[over] += torch.where(ok & (kl_step > ceiling), one, zero)
            if bar is not None and (i % 10 == 0 or i == len(batches) - 1):
                t = totals.tolist()  # a progress update reads the device every 10 steps
                done = max(i + 1 - t[2], 1)
                bar.set_postfix(
                    loss=f"{t[0] / done:.3g}",
                    min_group=f"{t[1] / done:.3f}",
                    bottleneck=stepper.group_names[int(np.argmax(t[3 + groups : over]))],
                    rejects=int(t[2]),
                )
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        t = _distributed.all_reduce_sum(totals).tolist()  # every rank's steps
        steps = len(batches) * self.world
        accepted = max(steps - t[2], 1)
        min_group = t[1] / accepted
        self.schedulers.advance_epoch(tighten=self._may_tighten(min_group))
        books = self.collection["kl"].last_epoch  # the epoch's books, across ranks
        rejects = books.rejects if books is not None else int(t[2])
        reject_rate = rejects / steps
        self._print_events()
        means = self.schedulers.last_means
        row: dict[str, Any] = {
            "epoch": self.epoch,
            "kl_phase": phase,
            "kl_ceiling": ceiling if ceiling < 1e9 else None,
            "kl_core": means["kl_core"],
            "kl_detail": means["kl_detail"],
            "kl_max": max(
                self.schedulers.last_tallies["kl_core"].maximum,
                self.schedulers.last_tallies["kl_detail"].maximum,
            ),
            "reject_rate": reject_rate,
            "rejects": rejects,
            "steps": steps,
            "min_group": min_group,
            "loss": t[0] / accepted,
            "groups": {g: t[3 + k] / accepted for k, g in enumerate(stepper.group_names)},
            "bottleneck": {g: int(t[3 + groups + k]) for k, g in enumerate(stepper.group_names)},
            "steps_over_ceiling": t[over] / accepted,
            "seconds": time.perf_counter() - started,
        }
        row.update(self.evaluate())
        if self._last_epoch():  # DCI, MIG and the split score: once, on the final model
            row.update(self.evaluate_split())
        self._summary(row)
        self.history.append(row)
        self._stop_rule(reject_rate)
        self.epoch += 1
        if self.main:
            self.save(self.out / CHECKPOINT)  # the history is in it: a kill loses no row
            with open(self.out / METRICS, "a") as f:
                f.write(json_line(row))
        return row

    # -- checkpoints -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, loadable with ``torch.load(weights_only=True)``."""
        numpy_state = cast(tuple[Any, ...], np.random.get_state())
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": attrs.asdict(self.config),
            "epoch": self.epoch,
            "steps": self.stepper.steps,
            "norm_ema": self.stepper.norm_ema,
            "vae": self.vae.state_dict(),
            "disc": self.disc.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "disc_optimizer": self.disc_optimizer.state_dict(),
            "schedulers": self.schedulers.state_dict(),
            "history": list(self.history),
            "stop_after": self.stop_after,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].copy()),
                          *numpy_state[2:]],
                "python": random.getstate(),
                "loader": self.generator.get_state(),
            },
        }  # fmt: skip

    def save(self, path: Path) -> None:
        """Write a checkpoint atomically (a temporary file, then a rename)."""
        atomic_save(self.state_dict(), path)

    def load(self, path: str | Path | Checkpoint) -> None:
        """Continue from a checkpoint written by `save` (`lbo-vae train --resume`).

        The whole checkpoint is read and checked (its format, its settings,
        every part a run needs and its kind, the networks' shapes) before
        any of it is loaded; only then is ``out`` created and its
        ``metrics.jsonl`` rewritten from the checkpoint's history. A
        checkpoint that is refused leaves ``out`` as it was.

        A checkpoint that has done as many epochs as ``config.epochs``, or
        more, loads: `train` then trains nothing (``lbo-vae train`` says so,
        or refuses it, before it loads it; see `read_checkpoint`).

        Args:
            path: The checkpoint file, or the `Checkpoint` that this run's
                `read_checkpoint` returned (it is not read again).

        Raises:
            FileNotFoundError: No such file.
            IsADirectoryError: ``path`` is a folder.
            ValueError: Not a checkpoint of this trainer (unreadable, with
                the reason, empty, truncated, or lacking a part, each named),
                or one of a run with another configuration (the differing
                keys are named; only ``epochs``, ``device`` and ``out`` may
                change), or a `Checkpoint` read for other settings.
        """
        if isinstance(path, Checkpoint):
            if path.config != self.config:
                raise ValueError(
                    f"checkpoint {str(path.file)!r} was read for a run of other settings: "
                    "read it with this run's read_checkpoint, or pass its path"
                )
            file, state = path.file, path.state
        else:
            file = Path(path)
            state = self._read_checkpoint(file)
        try:
            # The schedulers first: their load checks everything and changes nothing on error.
            self.schedulers.load_state_dict(state["schedulers"])
            self.vae.load_state_dict(state["vae"])
            self.disc.load_state_dict(state["disc"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(f"checkpoint {str(file)!r} does not fit this run: {error}") from None
        self.epoch, self.stepper.steps = state["epoch"], state["steps"]
        self.stepper.norm_ema = state["norm_ema"].to(self.device)
        self.history = list(state["history"])
        self.stop_after = state.get("stop_after")
        if not self._done():  # the split keys move to the new last epoch's row
            self.history = [
                {k: v for k, v in r.items() if k not in SPLIT_KEYS} for r in self.history
            ]
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() for t in rng["cuda"]])
        kind, keys, *rest = rng["numpy"]
        np.random.set_state((kind, keys.cpu().numpy(), *rest))
        random.setstate(_tuples(rng["python"]))
        self.generator.set_state(rng["loader"].cpu())
        self._start_out()  # rows of epochs after the checkpoint go

    def read_checkpoint(self, path: str | Path) -> Checkpoint:
        """The checkpoint in ``path``, read and checked whole for this run, not loaded.

        For a look at it before `load` (which takes what this returns, and
        does not read the file again): ``lbo-vae train --resume`` reads how
        many epochs it has done, to refuse an ``--epochs`` below them. Nothing
        is loaded, and nothing is written.

        Raises:
            FileNotFoundError: No such file.
            IsADirectoryError: ``path`` is a folder.
            ValueError: Not a checkpoint of this trainer, or one of a run with
                other settings (as `load`).
        """
        file = Path(path)
        return Checkpoint(file=file, state=self._read_checkpoint(file), config=self.config)

    def _read_checkpoint(self, file: Path) -> dict[str, Any]:
        """The checkpoint in ``file``, checked whole for this run; nothing is loaded yet.

        Raises:
            The errors of `load`.
        """
        name = repr(str(file))
        if file.is_dir():
            raise IsADirectoryError(f"checkpoint {name} is a folder, not a checkpoint file")
        if not file.is_file():
            raise FileNotFoundError(f"checkpoint {name} does not exist")
        size = file.stat().st_size
        if size == 0:
            raise ValueError(
                f"checkpoint {name} cannot be read: the file is empty (0 bytes), not a checkpoint"
            )
        try:
            state = torch.load(file, map_location=self.device, weights_only=True)
        except Exception as error:  # torch raises several kinds for a corrupt file
            raise ValueError(
                f"checkpoint {name} cannot be read: {_unreadable(error)} ({size:,} bytes)"
            ) from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{name} is not an lbo-vae checkpoint")
        _check_parts(state, CHECKPOINT_PARTS, f"checkpoint {name}")
        if state["version"] != CHECKPOINT_VERSION:
            raise ValueError(
                f"checkpoint {name} is of version {state['version']!r}; this trainer reads "
                f"version {CHECKPOINT_VERSION}"
            )
        _check_parts(state["rng"], RNG_PARTS, f"checkpoint {name}: rng")
        numpy_state = state["rng"]["numpy"]
        if len(numpy_state) != 5 or not isinstance(numpy_state[1], torch.Tensor):
            raise ValueError(f"checkpoint {name}: rng.numpy is not numpy's generator state")
        stop_after = state.get("stop_after")
        if stop_after is not None and (
            isinstance(stop_after, bool) or not isinstance(stop_after, int)
        ):
            raise ValueError(
                f"checkpoint {name}: stop_after must be an int or None, got {stop_after!r}"
            )
        if state["epoch"] < 1:
            raise ValueError(f"checkpoint {name}: epoch must be 1 or more, got {state['epoch']}")
        saved, here = state["config"], attrs.asdict(self.config)
        differ = sorted(
            k for k in here if k not in ("epochs", "device") and saved.get(k) != here[k]
        )
        if differ:
            raise ValueError(
                f"checkpoint {name} was written by a run with other settings: "
                + ", ".join(f"{k}={saved.get(k)!r} (now {here[k]!r})" for k in differ)
            )
        for part, module in (("vae", self.vae), ("disc", self.disc)):
            _check_weights(state[part], module.state_dict(), f"checkpoint {name}: {part}")
        return state

    def _start_out(self) -> None:
        """Create ``out`` and start ``metrics.jsonl`` afresh: the rows of `history` (rank 0)."""
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / METRICS, "w") as f:
                f.writelines(json_line(row) for row in self.history)
        self._out_started = True

    def evaluate(self) -> dict[str, float]:
        """The model on the held-out images, which training never sees (`evaluate_heldout`)."""
        return evaluate_heldout(
            self.vae, self.heldout, mean_mse=self.heldout_mean_mse, device=self.device
        )

    def evaluate_split(self) -> dict[str, float]:
        """DCI, MIG and the split score of the model on the held-out images (`evaluate_split`).

        What the last epoch's row gains (`SPLIT_KEYS`), with the run's seed;
        every rank measures the same weights, so every rank's row is the same.
        Empty for held-out images without known factors (digits, folders), and
        (with a message saying why) for fewer than `SPLIT_MIN_IMAGES` of them
        or without scikit-learn, which fits the importance matrix.
        """
        held = self.heldout
        if held.factors is None:
            return {}  # nothing to measure against: no message, as the swap test's NaN
        if len(held) < SPLIT_MIN_IMAGES:
            self.print(
                f"  [split] not measured: {len(held)} held-out images, DCI and MIG need at "
                f"least {SPLIT_MIN_IMAGES} (--heldout)"
            )
            return {}
        try:
            return evaluate_split(
                self.vae, held.images, held.factors, device=self.device, seed=self.config.seed
            )
        except ImportError as error:
            self.print(f"  [split] not measured: {error}")
            return {}

    def _last_epoch(self) -> bool:
        """Whether the epoch being trained is the run's last (``epochs``, or LBO's stop rule)."""
        return self.epoch >= self.config.epochs or (
            self.stop_after is not None and self.epoch >= self.stop_after
        )

    def _done(self) -> bool:
        """Whether `train` has nothing left to train."""
        return self.epoch > self.config.epochs or (
            self.stop_after is not None and self.epoch > self.stop_after
        )

    # -- output ----------------------------------------------------------------------

    def _event(self, event: Event) -> None:
        # Kept until the epoch's progress bar is closed; printed by _print_events.
        self._events.append(event)

    def _may_tighten(self, min_group: float) -> set[str]:
        """The schedulers that may take a squeeze step at the end of this epoch.

        The KL ceiling and the calibrated bounds always may; the fixed scales
        (LBO.md section 5) only while the mean min group of the last
        `TIGHTEN_WINDOW` epochs, this one included, is at least
        ``tighten_min_group`` (their adaptive schedule also waits after an
        epoch that rejects 5% or more).
        """
        fixed = set(self._tightened)
        names = {s.name for s in self.collection} - fixed
        if self.epoch < self.config.tighten_from:
            return names
        recent = [r["min_group"] for r in self.history[-(TIGHTEN_WINDOW - 1) :]] + [min_group]
        mean = sum(recent) / len(recent)
        if mean >= self.config.tighten_min_group:
            return names | fixed
        if fixed:
            self.print(
                f"  [tighten] waits: mean min group {mean:.3f} over the last {len(recent)} "
                f"epochs < {self.config.tighten_min_group}"
            )
        return names

    def _stop_rule(self, reject_rate: float) -> None:
        """LBO.md section 5: once an epoch after tightening began rejects 5%: one more, stop."""
        cfg = self.config
        if (
            self.stop_after is None
            and self.epoch > cfg.tighten_from
            and (reject_rate >= TIGHTEN_REJECT_RATE)
        ):
            self.stop_after = self.epoch + 1
            self.print(
                f"  [stop] epoch {self.epoch} rejected {reject_rate:.1%} >= "
                f"{TIGHTEN_REJECT_RATE:.0%} after tightening began: one more epoch, then stop"
            )

    def _print_events(self) -> None:
        """The KL ceiling's events one by one (the seed's messages); the scales' summed up."""
        events, self._events = self._events, []
        scales: dict[tuple[str, bool], list[Event]] = {}  # by (kind, is a box)
        for event in events:
            if event.constraint == "kl":
                self.print(f"  [{event.kind}] {event.message}")
            elif isinstance(event, Discovered) and event.kept:
                scales.setdefault(("kept", event.side == "width"), []).append(event)
            elif not isinstance(event, Converged):  # "converged" (no squeeze) says nothing
                scales.setdefault((event.kind, event.side == "width"), []).append(event)
        calibration = f"{self.config.calibration_steps} steps"
        for (kind, box), group in scales.items():
            what = {
                ("discovered", False): "calibrated scales and boxes from the median of the first "
                f"{calibration}, {CALIBRATION_HEADROOM:.0%} wider until epoch 2",
                ("settled", False): "calibrated scales and boxes: the provisional "
                f"{CALIBRATION_HEADROOM:.0%} removed",
                ("kept", False): "fixed scales as given; from now on they may be tightened",
                ("squeezed", False): f"fixed scales tightened x{self.config.tighten_factor}",
                ("backed_off", False): "fixed scales backed off to before their tightening",
                ("kept", True): "fixed boxes as given (half-widths); from now on they may shrink",
                ("squeezed", True): "fixed boxes shrunk around their centres, half-widths "
                f"x{box_factor(self.config.tighten_factor):g}",
                ("backed_off", True): "fixed boxes backed off to before their shrinking",
            }.get((kind, box), "bounds")
            names = ", ".join(f"{e.constraint} {e.new:.4g}" for e in group)
            self.print(f"  [{kind}] {len(group)} {what}: {names}")

    def _bar(self, total: int) -> Any:
        if not self.progress:
            return None
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        return tqdm(total=total, desc=f"epoch {self.epoch}/{self.config.epochs}", leave=False)

    def _summary(self, row: dict[str, Any]) -> None:
        ceiling = row["kl_ceiling"]
        groups = "  ".join(f"{g} {v:.2f}" for g, v in row["groups"].items())
        self.print(
            f"epoch {row['epoch']:>2}  KL {row['kl_phase']:<9} ceiling "
            f"{'none' if ceiling is None else f'{ceiling:,.1f}':>9}  "
            f"kl_core {row['kl_core']:.1f}  kl_detail {row['kl_detail']:.1f}  "
            f"loss {row['loss']:.3f}  min group {row['min_group']:.3f}  "
            f"rejected {row['rejects']}/{row['steps']} ({row['reject_rate']:.1%})  "
            f"held-out mse {row['heldout_mse']:.4f} (mean {row['heldout_mean_mse']:.4f}) "
            f"ssim {row['heldout_ssim']:.2f} "
            f"swap {row['swap_structure']:.2f}/{row['swap_appearance']:.2f}  "
            f"over ceiling {row['steps_over_ceiling']:.1%}  "
            f"{row['seconds']:.1f}s"
        )
        self.print(f"          groups: {groups}")
        if "dci_disentanglement" in row:
            self.print(f"          split: {split_line(row)}")


def split_line(row: dict[str, Any]) -> str:
    """The split metrics of a ``metrics.jsonl`` row on one line (None or NaN as ``nan``).

    Examples:
        >>> split_line({"dci_disentanglement": 0.31, "dci_completeness": 0.25,
        ...             "dci_informativeness": 0.62, "mig": 0.05,
        ...             "split_structure_core": 0.61, "split_appearance_detail": None})
        'DCI disentanglement 0.31 completeness 0.25 informativeness 0.62  MIG 0.05  structure on core 0.61, appearance on detail nan'
    """  # noqa: E501
    d, c, i, mig, core, detail = (
        math.nan if row.get(key) is None else float(row[key]) for key in SPLIT_KEYS
    )
    return (
        f"DCI disentanglement {d:.2f} completeness {c:.2f} informativeness {i:.2f}  "
        f"MIG {mig:.2f}  structure on core {core:.2f}, appearance on detail {detail:.2f}"
    )


@torch.no_grad()
def evaluate_heldout(
    vae: LBOVAE, heldout: ImageSet, *, mean_mse: float, device: torch.device | str
) -> dict[str, float]:
    """A model on held-out images, which training never sees: the ``metrics.jsonl`` keys.

    Posterior means, no noise, in eval mode, `EVAL_BATCH` images at a time:

    - ``heldout_mse``: the pixel MSE of the reconstructions ``decode(mu)``,
      the mean over every held-out pixel; ``heldout_mean_mse`` is that of
      predicting the training images' per-pixel mean for every image (to
      beat);
    - ``heldout_ssim``: their mean SSIM (`ssim`);
    - ``swap_structure``, ``swap_appearance``: the swap test
      (`swap_scores`), the core of each held-out image decoded with the
      detail of its neighbour (the images rolled by one); NaN without
      known factors (digits, folders);
    - ``heldout_shape``: the share of the reconstructions that drew the
      right shape (`shape_recovery`); NaN without known factors;
    - ``heldout_kl_core``, ``heldout_kl_detail``: the mean KL of each
      latent half (`kl_divergence`).

    Args:
        vae: The model: any `LBOVAE` (the quality benchmark passes a plain
            beta-VAE of the same architecture too).
        heldout: The held-out images.
        mean_mse: ``heldout_mean_mse``, passed through.
        device: Where ``vae`` lives.

    Returns:
        The keys above, as floats (one host synchronisation).
    """
    held, factors = heldout, heldout.factors
    training = vae.training
    vae.eval()
    mu_parts, logvar_parts = [], []
    for i in range(0, len(held), EVAL_BATCH):
        x = held.images[i : i + EVAL_BATCH].to(device, non_blocking=True)
        mu, logvar = vae.encode(x)
        mu_parts.append(mu)
        logvar_parts.append(logvar)
    mu, logvar = torch.cat(mu_parts), torch.cat(logvar_parts)
    core, detail = vae.split(mu)
    logvar_core, logvar_detail = vae.split(logvar)
    partner = torch.roll(torch.arange(len(held)), 1)
    sums = torch.zeros(7, device=device)  # mse, ssim, structure, appearance, kl x2, shape
    for i in range(0, len(held), EVAL_BATCH):
        index = torch.arange(i, min(i + EVAL_BATCH, len(held)))
        x = held.images[index].to(device, non_blocking=True)
        on = index.to(device)
        recon = vae.decode(mu[on])
        b = len(index)
        sums[0] += (recon.float() - x).square().sum() / x[0].numel()
        sums[1] += ssim(recon.float(), x) * b
        sums[4] += kl_divergence(core[on], logvar_core[on]) * b
        sums[5] += kl_divergence(detail[on], logvar_detail[on]) * b
        if factors is not None:
            other = partner[index]
            swapped = vae.decode(vae.join(core[on], detail[other.to(device)]))
            first = {key: v[index] for key, v in factors.items()}
            second = {key: v[other] for key, v in factors.items()}
            scores = swap_scores(swapped.float(), first, second)
            sums[2] += scores[0] * b
            sums[3] += scores[1] * b
            sums[6] += shape_recovery(recon, first) * b
    vae.train(training)
    mse, ssim_, structure, appearance, kl_core, kl_detail, shape = (sums / len(held)).tolist()
    if factors is None:
        structure = appearance = shape = float("nan")
    return {
        "heldout_mse": mse,
        "heldout_mean_mse": mean_mse,
        "heldout_ssim": ssim_,
        "heldout_kl_core": kl_core,
        "heldout_kl_detail": kl_detail,
        "swap_structure": structure,
        "swap_appearance": appearance,
        "heldout_shape": shape,
    }


@attrs.frozen(eq=False)
class Checkpoint:
    """A checkpoint read and checked whole for a run (`Run.read_checkpoint`), not yet loaded.

    Attributes:
        file: The file it was read from.
        state: What it holds (`Run.state_dict`'s parts).
        config: The settings of the run it was checked for: `Run.load` takes
            it only into a run of the same settings.
    """

    file: Path
    state: dict[str, Any] = attrs.field(repr=False)
    config: TrainConfig = attrs.field(repr=False)

    @property
    def epochs_done(self) -> int:
        """How many epochs the run had trained when the checkpoint was written."""
        return int(self.state["epoch"]) - 1


def _unreadable(error: Exception) -> str:
    """Why ``torch.load`` could not read a file: ``error`` on one line, without torch's advice.

    torch's messages run over several lines and advise things that do not
    apply here (loading with ``weights_only=False``, which would run code from
    the file): this keeps what they say about the file.

    Examples:
        >>> _unreadable(EOFError())
        'the file ends too early, torch says: EOFError'
        >>> _unreadable(RuntimeError("failed reading zip archive: no end. An internal error."))
        'it is truncated or corrupted, torch says: failed reading zip archive: no end'
    """
    text = " ".join(str(error).split())
    kind = type(error).__name__
    if isinstance(error, EOFError):
        return f"the file ends too early, torch says: {kind}{': ' + text if text else ''}"
    if isinstance(error, pickle.UnpicklingError):
        detail = text
        if "WeightsUnpickler error:" in text:  # the reason, between torch's advice
            detail = text.split("WeightsUnpickler error:", 1)[1].split(" Check the ", 1)[0]
        return (
            f"it is not a torch checkpoint of tensors and plain data, torch says: {detail.strip()}"
        )
    first = text.split(". ", 1)[0].rstrip(".")
    if "zip archive" in first:
        return f"it is truncated or corrupted, torch says: {first}"
    return f"{kind}: {first}" if first else kind


def _quiet(message: str) -> None:
    """The printer of every rank but rank 0."""


def json_line(row: dict[str, Any]) -> str:
    """One ``metrics.jsonl`` line: strict JSON, a mean with no accepted step (NaN) as null."""

    def strict(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: strict(v) for k, v in value.items()}
        return value

    return json.dumps(strict(row), allow_nan=False) + "\n"


def _check_parts(state: dict[str, Any], parts: dict[str, tuple[type, ...]], what: str) -> None:
    """Every one of ``parts`` is in ``state``, of its kind (an int is never a bool).

    Raises:
        ValueError: Parts are missing (all named) or one is of another kind.
    """
    missing = [key for key in parts if key not in state]
    if missing:
        raise ValueError(
            f"{what} lacks {', '.join(missing)}: not a whole lbo-vae checkpoint "
            "(truncated, or written by something else)"
        )
    for key, kinds in parts.items():
        value = state[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            expected = " or ".join(kind.__name__ for kind in kinds)
            got = type(value).__name__
            raise ValueError(f"{what}: {key} must be of type {expected}, got {got}")


def _check_weights(saved: dict[str, Any], mine: dict[str, torch.Tensor], what: str) -> None:
    """``saved`` holds exactly the tensors of ``mine``, of the same shapes.

    Raises:
        ValueError: A tensor is missing, unexpected or of another shape (named).
    """
    missing, extra = sorted(set(mine) - set(saved)), sorted(set(saved) - set(mine))
    if missing or extra:
        raise ValueError(
            f"{what} does not fit this run's network: missing {missing}, unexpected {extra}"
        )
    for key, tensor in mine.items():
        other = saved[key]
        if not isinstance(other, torch.Tensor) or other.shape != tensor.shape:
            shape = tuple(other.shape) if isinstance(other, torch.Tensor) else type(other).__name__
            raise ValueError(
                f"{what}: {key} is {shape}, this run's network has {tuple(tensor.shape)}"
            )


def _tuples(value: Any) -> Any:
    """Lists back to tuples, as ``random.setstate`` wants them."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename it over ``path``: never half-written."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
