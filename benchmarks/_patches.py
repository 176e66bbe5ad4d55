"""Natural-image patches and a small convolutional VAE, for ``term_scale.py``'s case (b).

The patches are 32x32 RGB crops of five of scikit-image's bundled images
(`IMAGES`: nothing is downloaded), pixels scaled to [-1, 1]. Each image is cut
in two by rows: its top 5/6 gives the training patches (a stride of 16, so
they overlap), its bottom 1/6 the test patches (a stride of 32: side by side),
so that the test patches are parts of the images the model never saw. That
gives 3431 training and 154 test patches.

`ConvVAE` is the model of that case, written as the brief gives it: two
stride-2 convolutions down to a 4x8x8 latent, two transposed ones back up,
SiLU between, a diagonal Gaussian posterior (log-variance clamped to
[-30, 20]).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
"""The scikit-image images (``skimage.data.<name>()``) the patches are cut from."""

PATCH = 32
"""A patch's side in pixels."""

TRAIN_STRIDE, TEST_STRIDE = 16, 32
"""The strides the training (overlapping) and test (side by side) patches are cut at."""

TRAIN_ROWS = 5 / 6
"""The share of each image's rows, from the top, that the training patches come from."""

EVAL_DRAWS = 8
"""Latent noise draws per test patch for the test KL and MSE."""

EVAL_SEED = 12345
"""The seed of the evaluation's noise generator (the same noise for every model)."""


@dataclass(frozen=True)
class Patches:
    """Training and test patches, float32 tensors of shape (n, 3, 32, 32) in [-1, 1]."""

    train: torch.Tensor
    test: torch.Tensor


def cut(image: np.ndarray, stride: int) -> np.ndarray:
    """Every ``PATCH`` x ``PATCH`` crop of ``image`` (H, W, 3) at ``stride``, as (n, 3, 32, 32)."""
    height, width, _ = image.shape
    crops = [
        image[i : i + PATCH, j : j + PATCH]
        for i in range(0, height - PATCH + 1, stride)
        for j in range(0, width - PATCH + 1, stride)
    ]
    return np.moveaxis(np.stack(crops), -1, 1)


def load_patches() -> Patches:
    """The patches of every image in `IMAGES`: top 5/6 for training, bottom 1/6 for testing."""
    from skimage import data

    train, test = [], []
    for name in IMAGES:
        image = getattr(data, name)().astype(np.float32) / 127.5 - 1.0
        top = int(len(image) * TRAIN_ROWS)
        train.append(cut(image[:top], TRAIN_STRIDE))
        test.append(cut(image[top:], TEST_STRIDE))
    return Patches(
        torch.from_numpy(np.concatenate(train)).contiguous(),
        torch.from_numpy(np.concatenate(test)).contiguous(),
    )


class ConvVAE(nn.Module):
    """A small convolutional VAE: 3x32x32 images to a ``z``x8x8 Gaussian latent and back.

    Args:
        channels: The width of the first convolution (the others are twice it).
        latent: The latent's channels.
    """

    def __init__(self, channels: int = 16, latent: int = 4) -> None:
        super().__init__()
        ch, z = channels, latent
        self.latent = latent
        self.encoder = nn.Sequential(
            nn.Conv2d(3, ch, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(ch, 2 * ch, 4, 2, 1),
            nn.SiLU(),
            nn.Conv2d(2 * ch, 2 * ch, 4, 2, 1),
            nn.SiLU(),
            nn.Conv2d(2 * ch, 2 * z, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(z, 2 * ch, 3, padding=1),
            nn.SiLU(),
            nn.ConvTranspose2d(2 * ch, 2 * ch, 4, 2, 1),
            nn.SiLU(),
            nn.ConvTranspose2d(2 * ch, ch, 4, 2, 1),
            nn.SiLU(),
            nn.Conv2d(ch, 3, 3, padding=1),
        )

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal latent noise for ``n`` patches, shape (n, z, 8, 8)."""
        side = PATCH // 4
        return torch.randn(n, self.latent, side, side, generator=generator)

    def forward(
        self, x: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reconstruction of ``x`` and each patch's KL to the prior, shape (n,).

        Args:
            x: Patches, shape (n, 3, 32, 32).
            noise: The latent noise (`noise`); None draws it from torch's generator.

        Returns:
            The decoded sample, shaped as ``x``, and the KL per patch in nats.
        """
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        eps = torch.randn_like(mean) if noise is None else noise
        z = mean + torch.exp(0.5 * logvar) * eps
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3))
        return self.decoder(z), kl


def evaluate(model: ConvVAE, images: torch.Tensor) -> dict[str, float]:
    """KL per patch and pixel MSE on ``images``: the mean over `EVAL_DRAWS` fixed noise draws."""
    generator = torch.Generator().manual_seed(EVAL_SEED)
    kls, mses = [], []
    with torch.no_grad():
        for _ in range(EVAL_DRAWS):
            recon, kl = model(images, model.noise(len(images), generator))
            kls.append(float(kl.mean()))
            mses.append(float(F.mse_loss(recon, images)))
    return {"kl": statistics.fmean(kls), "mse": statistics.fmean(mses)}


def mean_image_mse(patches: Patches) -> float:
    """The test MSE of predicting every test patch by the mean training patch."""
    mean = patches.train.mean(dim=0, keepdim=True)
    return float(F.mse_loss(mean.expand_as(patches.test), patches.test))
