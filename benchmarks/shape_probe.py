r"""Which half of the trainer's VAE keeps the shapes from coming back: each trained on the truth.

The LBO-VAE and a plain beta-VAE of the trainer's default model both draw the
procedural shapes as round blobs after the trainer's 9 epochs. The shapes'
factors are known, so each half of the model can be trained alone, with the
other half replaced by the truth:

- **decoder**: the trainer's decoder (``LBOVAE.decode``, the default
  `ModelConfig` of `TrainConfig`) draws each training image from its true
  factors instead of a sampled latent: the shape one-hot, the size, the
  position and both colours, each scaled to ``[-1, 1]``, padded with zeros to
  the latent's size. The squared error summed over the pixels, averaged over
  the batch, as the beta-VAE's reconstruction term. If it cannot draw the
  shapes from perfect codes, no encoder can make it.
- **encoder**: the trainer's encoder (``LBOVAE.encode``) with a linear head on
  ``(mu, logvar)`` predicts the factors: cross-entropy for the shape, squared
  error for the rest. Its held-out shape accuracy says whether the shape gets
  into the latent at all.
- **beta-vae**: the whole model trained end to end as the quality benchmark's
  beta-VAE (``--beta``, default 0.3, near the KL the LBO-VAE ends at), for
  reference.

Every arm starts from the weights a `Run` of the seed starts from, trains
with AdamW at the config's ``lr`` on the trainer's batches (batch 64) and is
measured on the held-out shapes after each of ``--epochs`` epochs: held-out
MSE and `shape_recovery` (the share of reconstructions whose nearest possible
image is their own shape: 1 is perfect, a round blob about 0.5, a guess
0.25); for the encoder, the held-out shape accuracy. ``--sizes`` repeats the
arms on shapes drawn in other size ranges (`shapes`' ``sizes``), the same
seeds otherwise.

Run from the repository root::

    PYTHONPATH=. .venv/bin/python benchmarks/shape_probe.py --threads 2 \
        --json benchmarks/results/shape_probe.json --markdown benchmarks/results/shape_probe.md

(about 3 minutes on a 2-core CPU; ``--quick`` is a smoke test).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _machine
import torch
from torch import nn

from constraint_sched.adapters.lbo_vae import (
    ImageSet,
    TrainConfig,
    _train,
    build,
    shape_recovery,
    shapes,
)
from constraint_sched.adapters.lbo_vae._data import SHAPE_KINDS
from constraint_sched.adapters.lbo_vae._metrics import kl_divergence
from constraint_sched.adapters.lbo_vae._train import heldout_seed

ARMS = ("decoder", "encoder", "beta-vae")
FACTORS = 4 + 1 + 2 + 6  # shape one-hot, size, x and y, fg and bg


def codes(data: ImageSet, sizes: tuple[float, float], width: int) -> torch.Tensor:
    """The true factors of ``data`` as codes in ``[-1, 1]``, zero-padded to ``width`` columns."""
    f = data.factors
    assert f is not None
    low, high = sizes
    size = (f["size"] - low) / max(high - low, 1e-6) * 2 - 1
    parts = [
        nn.functional.one_hot(f["shape"].long(), len(SHAPE_KINDS)).float() * 2 - 1,
        size[:, None],
        f["x"][:, None] * 2 - 1,
        f["y"][:, None] * 2 - 1,
        f["fg"] * 2 - 1,
        f["bg"] * 2 - 1,
    ]
    out = torch.zeros(len(size), width)
    out[:, :FACTORS] = torch.cat(parts, dim=1)
    return out


def train_arm(
    arm: str,
    config: TrainConfig,
    train: ImageSet,
    heldout: ImageSet,
    sizes: tuple[float, float],
    epochs: Sequence[int],
    beta: float,
) -> list[dict[str, Any]]:
    """Train one arm for ``max(epochs)`` epochs; its held-out figures after each of ``epochs``."""
    _train._seed_everything(config.seed)
    vae, _ = build(_train.model_config(config, int(train.images.shape[1])))
    if vae.latent_dims < FACTORS:
        raise SystemExit(f"shape_probe: the latent has {vae.latent_dims} < {FACTORS} dims")
    head = nn.Linear(2 * vae.latent_dims, FACTORS)
    params = list(vae.parameters()) + (list(head.parameters()) if arm == "encoder" else [])
    optimizer = torch.optim.AdamW(params, lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    train_codes = codes(train, sizes, vae.latent_dims)
    held_codes = codes(heldout, sizes, vae.latent_dims)
    assert train.factors is not None
    kinds = train.factors["shape"].long()

    def loss_of(index: torch.Tensor) -> torch.Tensor:
        x = train.images[index]
        if arm == "decoder":
            return (vae.decode(train_codes[index]) - x).square().flatten(1).sum(1).mean()
        mu, logvar = vae.encode(x)
        if arm == "encoder":
            guess = head(torch.cat([mu, logvar], dim=1))
            k = len(SHAPE_KINDS)
            shape_loss = nn.functional.cross_entropy(guess[:, :k], kinds[index])
            return shape_loss + (guess[:, k:] - train_codes[index, k:FACTORS]).square().mean()
        recon = vae.decode(vae.reparameterize(mu, logvar, None))
        sse = (recon - x).square().flatten(1).sum(1).mean()
        return sse + beta * kl_divergence(mu, logvar)

    rows: list[dict[str, Any]] = []
    started, steps = time.perf_counter(), 0
    for epoch in range(1, max(epochs) + 1):
        vae.train()
        for index in _train.epoch_batches(len(train), config.batch_size, generator):
            loss = loss_of(index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        if epoch in epochs:
            rows.append(
                {
                    "epoch": epoch,
                    "steps": steps,
                    "seconds": time.perf_counter() - started,
                    **measure(arm, vae, head, heldout, held_codes),
                }
            )
    return rows


@torch.no_grad()
def measure(
    arm: str, vae: nn.Module, head: nn.Module, heldout: ImageSet, held_codes: torch.Tensor
) -> dict[str, float]:
    """An arm's held-out figures: MSE and shapes drawn right, or the encoder's shape accuracy."""
    vae.eval()
    assert heldout.factors is not None
    if arm == "encoder":
        mu, logvar = vae.encode(heldout.images)
        guess = head(torch.cat([mu, logvar], dim=1))[:, : len(SHAPE_KINDS)].argmax(dim=1)
        return {"shape_accuracy": float((guess == heldout.factors["shape"]).float().mean())}
    z = held_codes if arm == "decoder" else vae.encode(heldout.images)[0]
    recon = vae.decode(z)
    return {
        "heldout_mse": float((recon - heldout.images).square().mean()),
        "heldout_shape": float(shape_recovery(recon, heldout.factors)),
    }


def sizes_argument(text: str) -> tuple[float, float]:
    """``LOW,HIGH`` as two floats, for ``--sizes``."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not LOW,HIGH: {text!r}") from None
    return low, high


LABELS = {
    "decoder": "decoder from the true factors: shapes drawn right",
    "encoder": "encoder to the factors: shape accuracy",
    "beta-vae": "beta-VAE end to end: shapes drawn right",
}
"""Each arm's row label in the table."""


def table(results: list[dict[str, Any]], epochs: Sequence[int]) -> list[str]:
    """The Markdown table: a row per size range and arm, its shape figure after each epoch.

    The decoder's and the beta-VAE's figure is `shape_recovery` (the held-out
    MSE follows it in brackets), the encoder's the held-out shape accuracy.
    """
    lines = [
        "| sizes | arm | " + " | ".join(f"epoch {e}" for e in epochs) + " |",
        "|:---|:---|" + "---:|" * len(epochs),
    ]
    for r in results:
        cells = []
        for row in r["rows"]:
            if "shape_accuracy" in row:
                cells.append(f"{row['shape_accuracy']:.2f}")
            else:
                cells.append(f"{row['heldout_shape']:.2f} ({row['heldout_mse']:.4f})")
        low, high = r["sizes"]
        lines.append(f"| {low:.2f}-{high:.2f} | {LABELS[r['arm']]} | " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None, print_: Callable[..., None] = print) -> int:
    """Run the probe; print the table; ``--json`` writes the record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, nargs="+", default=[9, 20, 40], help="measure after these epochs"
    )
    parser.add_argument(
        "--sizes",
        type=sizes_argument,
        nargs="+",
        default=[(0.15, 0.30), (0.22, 0.34)],
        metavar="LOW,HIGH",
        help="the shapes' size ranges (default: the trainer's 0.15,0.30 and 0.22,0.34)",
    )
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--beta", type=float, default=0.3, help="the beta-VAE arm's beta")
    parser.add_argument("--seed", type=int, default=0)
    _machine.add_threads_argument(parser)
    _machine.add_quick_and_json(parser, "two epochs of 256 images: a smoke test")
    parser.add_argument(
        "--markdown", type=Path, metavar="PATH", help="also write the table as Markdown here"
    )
    args = parser.parse_args(argv)
    _machine.set_threads(args.threads, parser)
    if any(e < 1 for e in args.epochs):
        parser.error("--epochs must be 1 or more")
    args.epochs = sorted(set(args.epochs))
    config = TrainConfig(seed=args.seed, device="cpu")
    if args.quick:
        config = TrainConfig(seed=args.seed, device="cpu", images=256, heldout=64)
        args.epochs = [1, 2]
    info = _machine.describe(torch.device("cpu"))
    _machine.print_machine(info)
    print_(
        f"  config: TrainConfig(seed={args.seed}) model and batches: {config.images} training "
        f"and {config.heldout} held-out shapes, batch {config.batch_size}, lr {config.lr:g}; "
        f"epochs {', '.join(map(str, args.epochs))}"
    )
    results = []
    for sizes in args.sizes:
        try:
            train = shapes(
                config.images, image_size=config.image_size, seed=config.seed, sizes=sizes
            )
            heldout = shapes(
                config.heldout,
                image_size=config.image_size,
                seed=heldout_seed(config.seed),
                sizes=sizes,
            )
        except ValueError as error:
            parser.error(f"--sizes {sizes[0]:g},{sizes[1]:g}: {error}")
        for arm in args.arms:
            rows = train_arm(arm, config, train, heldout, sizes, args.epochs, args.beta)
            results.append({"sizes": list(sizes), "arm": arm, "rows": rows})
            figure = (
                f"shape accuracy {rows[-1]['shape_accuracy']:.3f}"
                if arm == "encoder"
                else f"shapes drawn right {rows[-1]['heldout_shape']:.3f}, "
                f"MSE {rows[-1]['heldout_mse']:.4f}"
            )
            print_(
                f"[sizes {sizes[0]:g}-{sizes[1]:g} {arm}] epoch {rows[-1]['epoch']}: {figure} "
                f"({rows[-1]['seconds']:.0f} s)",
                flush=True,
            )
    text = "\n".join(table(results, sorted(set(args.epochs))))
    print_()
    print_(text)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n", encoding="utf-8")
        print_(f"\nmarkdown written to {args.markdown}")
    if args.json:
        record = {"machine": info, "quick": args.quick, "epochs": args.epochs, "results": results}
        _machine.write_json(args.json, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
