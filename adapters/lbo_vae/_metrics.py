"""The LBO-VAE's metric building blocks: pure, differentiable functions of image and latent tensors.

Each takes tensors (images ``(B, C, H, W)``, latents ``(B, D)``, per-dimension
variances ``(D,)``) and returns a tensor on the same device, never reading a
value on the host, so that a step that must not wait for the accelerator can
call them. The goal table (`constraint_sched.adapters.lbo_vae._goals`) builds
every goal's raw metric from them; the held-out evaluation and the benchmarks
use them directly.
"""

from __future__ import annotations

import math
from typing import Final

import torch
import torch.nn.functional as F

__all__ = [
    "SOFT_COUNT_TEMPERATURE",
    "batch_variance",
    "colour_histogram",
    "contribution_ratio",
    "covariance_energy",
    "effective_dims_gap",
    "histogram_distance",
    "kl_divergence",
    "low_variance_fraction",
    "mean_colour",
    "mse",
    "realism",
    "sobel_edges",
    "ssim",
]

SOFT_COUNT_TEMPERATURE: Final = 0.5
"""The temperature, in natural-log units of variance, of the soft counts of low variances."""

_EPS: Final = 1e-12  # guards divisions and logs; far below any value a metric cares about
_EDGE_EPS: Final = 1e-6  # inside the Sobel magnitude's square root: a finite gradient at 0
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The mean squared difference of two tensors of one shape, a 0-d tensor.

    Examples:
        >>> float(mse(torch.zeros(2, 2), torch.full((2, 2), 3.0)))
        9.0
    """
    return (a - b).square().mean()


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    window = torch.exp(-coords.square() / (2 * sigma**2))
    return window / window.sum()


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
) -> torch.Tensor:
    """The structural similarity of two image batches, averaged over every pixel: 1 when equal.

    The usual SSIM (Wang et al., 2004): local means, variances and covariance
    under a Gaussian window (applied per channel, separably, without padding),
    with ``C1 = (0.01 L)^2`` and ``C2 = (0.03 L)^2``. Images smaller than the
    window use the largest odd window that fits.

    Args:
        a: Images, ``(B, C, H, W)``.
        b: Images of the same shape.
        window: The window's side (odd).
        sigma: The Gaussian's standard deviation, in pixels.
        data_range: ``L``, the range of the pixel values.

    Returns:
        The mean SSIM, a 0-d tensor in ``[-1, 1]``.

    Examples:
        >>> img = torch.rand(1, 3, 16, 16)
        >>> round(float(ssim(img, img)), 5)
        1.0
    """
    channels, height, width = a.shape[1], a.shape[2], a.shape[3]
    size = min(window, height, width)
    size -= 1 - size % 2  # odd
    g = _gaussian_window(size, sigma, a)
    stacked = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    groups = 5 * channels
    stacked = F.conv2d(stacked, g.view(1, 1, size, 1).expand(groups, 1, size, 1), groups=groups)
    stacked = F.conv2d(stacked, g.view(1, 1, 1, size).expand(groups, 1, 1, size), groups=groups)
    mu_a, mu_b, aa, bb, ab = torch.chunk(stacked, 5, dim=1)
    var_a = aa - mu_a.square()
    var_b = bb - mu_b.square()
    cov = ab - mu_a * mu_b
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    denominator = (mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2)
    return (numerator / denominator).mean()


def sobel_edges(images: torch.Tensor) -> torch.Tensor:
    """The Sobel gradient magnitude of each image's channel mean, ``(B, 1, H, W)``.

    Edges are taken on the grey level (the mean over channels), so they carry
    structure, not colour; the border is replicated, so a constant image has
    no edge anywhere. The magnitude is ``sqrt(gx^2 + gy^2 + e) - sqrt(e)``
    with ``e = 1e-6``: exactly 0 on flat regions, with a finite gradient there.

    Args:
        images: ``(B, C, H, W)``.

    Returns:
        The edge maps, non-negative.

    Examples:
        >>> float(sobel_edges(torch.full((1, 3, 5, 5), 0.7)).abs().max())
        0.0
    """
    grey = images.mean(dim=1, keepdim=True)
    # Built on the device (a constant copied from the host would wait for it on CUDA).
    d = torch.arange(-1, 2, dtype=images.dtype, device=images.device)  # [-1, 0, 1]
    kx = (2 - d.abs())[:, None] * d[None, :]  # [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    kernels = torch.stack([kx, kx.T]).unsqueeze(1)  # (2, 1, 3, 3)
    gradients = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    magnitude = torch.sqrt(gradients.square().sum(dim=1, keepdim=True) + _EDGE_EPS)
    return magnitude - math.sqrt(_EDGE_EPS)


def mean_colour(images: torch.Tensor) -> torch.Tensor:
    """Each image's mean colour: the spatial mean per channel, ``(B, C)``.

    Examples:
        >>> mean_colour(torch.ones(2, 3, 4, 4)).shape
        torch.Size([2, 3])
    """
    return images.mean(dim=(2, 3))


def colour_histogram(images: torch.Tensor, bins: int = 8) -> torch.Tensor:
    """A soft, differentiable colour histogram per image and channel, ``(B, C, bins)``.

    Each pixel value spreads one unit of mass over ``bins`` equal bins of
    ``[0, 1]`` with Gaussian weights (bandwidth half a bin, normalised by a
    softmax, so values outside ``[0, 1]`` go to the nearest end bin); the
    histogram is the mean over pixels and sums to 1. Memory: ``bins`` floats
    per pixel and channel.

    Args:
        images: ``(B, C, H, W)``, values in ``[0, 1]``.
        bins: How many bins per channel.

    Returns:
        The histograms.

    Examples:
        >>> h = colour_histogram(torch.rand(2, 3, 4, 4), bins=4)
        >>> h.shape, torch.allclose(h.sum(-1), torch.ones(2, 3))
        (torch.Size([2, 3, 4]), True)
    """
    width = 1.0 / bins
    centres = (torch.arange(bins, dtype=images.dtype, device=images.device) + 0.5) * width
    # Bins before pixels: a softmax over a middle dimension of (B, C, bins, HW)
    # runs about 3x faster on CPU than one over a short last dimension.
    values = images.flatten(2).unsqueeze(2)  # (B, C, 1, HW)
    logits = -0.5 * ((values - centres[:, None]) / (0.5 * width)).square()
    return torch.softmax(logits, dim=2).mean(dim=3)


def histogram_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The mean total-variation distance ``0.5 * sum |a - b|`` of histograms, in ``[0, 1]``.

    Args:
        a: Histograms ``(..., bins)``, each summing to 1.
        b: Histograms of the same shape.

    Returns:
        The distance averaged over every histogram, a 0-d tensor.

    Examples:
        >>> float(histogram_distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])))
        1.0
    """
    return 0.5 * (a - b).abs().sum(dim=-1).mean()


def batch_variance(z: torch.Tensor) -> torch.Tensor:
    """Each dimension's variance over the batch (population variance), ``(D,)``.

    Examples:
        >>> batch_variance(torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
        tensor([1., 0.])
    """
    return z.var(dim=0, correction=0)


def covariance_energy(z: torch.Tensor) -> torch.Tensor:
    """The off-diagonal energy of the batch covariance relative to its diagonal, in ``[0, 1]``.

    With ``S`` the ``(D, D)`` covariance of ``z`` over the batch:
    ``sum_{i != j} S_ij^2 / ((D - 1) sum_i S_ii^2)``, the mean squared
    off-diagonal entry over the mean squared diagonal one. 0 for uncorrelated
    dimensions (about ``1 / B`` for independent ones, from sampling), 1 when
    every dimension is the same (Cauchy-Schwarz bounds it by 1).

    Args:
        z: ``(B, D)``.

    Returns:
        A 0-d tensor.

    Examples:
        >>> a = torch.tensor([[1.0], [-1.0], [2.0], [-2.0]])
        >>> float(covariance_energy(torch.cat([a, a], dim=1)))  # duplicated dims
        1.0
    """
    dims = z.shape[1]
    centred = z - z.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / z.shape[0]
    diagonal = torch.diagonal(cov)
    off = (cov - torch.diag_embed(diagonal)).square().sum()
    return off / (max(dims - 1, 1) * diagonal.square().sum() + _EPS)


def low_variance_fraction(
    variance: torch.Tensor,
    threshold: float,
    *,
    soft: bool = True,
    temperature: float = SOFT_COUNT_TEMPERATURE,
) -> torch.Tensor:
    """The fraction of dimensions whose variance is below ``threshold``.

    The hard count (``soft=False``) has no gradient. The soft count, used by
    the goals, replaces the step with ``sigmoid(log(threshold / v) /
    temperature)``: 1/2 at the threshold, about 0.88 at ``threshold / e^(2
    temperature)``, with a gradient that pushes low variances up; a fully
    collapsed dimension (``v`` far below) still counts 1, with a vanishing
    gradient.

    Args:
        variance: Per-dimension variances, ``(D,)``.
        threshold: The variance below which a dimension counts.
        soft: Whether to use the differentiable soft count.
        temperature: The soft count's width, in natural-log units of variance.

    Returns:
        A 0-d tensor in ``[0, 1]``.

    Examples:
        >>> v = torch.tensor([1e-4, 0.05, 1.0, 2.0])
        >>> float(low_variance_fraction(v, 0.1, soft=False))
        0.5
    """
    if not soft:
        return (variance < threshold).to(variance.dtype).mean()
    log_ratio = math.log(threshold) - torch.log(variance.clamp_min(_EPS))
    return torch.sigmoid(log_ratio / temperature).mean()


def effective_dims_gap(variance: torch.Tensor) -> torch.Tensor:
    """``1 - exp(H(p)) / D`` for ``p`` the variances normalised to sum 1: 0 when all are equal.

    ``exp(H)`` is the effective number of dimensions the variance is spread
    over; the gap is the fraction of dimensions it leaves out, ``1 - 1/D``
    when one dimension holds it all.

    Args:
        variance: Per-dimension variances, ``(D,)``.

    Returns:
        A 0-d tensor in ``[0, 1 - 1/D]``.

    Examples:
        >>> float(effective_dims_gap(torch.ones(4)))
        0.0
    """
    p = variance / (variance.sum() + _EPS)
    entropy = -(p * torch.log(p.clamp_min(_EPS))).sum()
    return 1.0 - torch.exp(entropy) / variance.shape[0]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` summed over dimensions, averaged over the batch.

    Args:
        mu: ``(B, D)``.
        logvar: ``(B, D)``.

    Returns:
        A 0-d tensor.

    Examples:
        >>> float(kl_divergence(torch.ones(3, 2), torch.zeros(3, 2)))  # 0.5 * 2 * 1
        1.0
    """
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()


def realism(logits: torch.Tensor) -> torch.Tensor:
    """``1 - mean(sigmoid(logits))``: 0 when the discriminator is sure the images are real.

    Examples:
        >>> float(realism(torch.zeros(4, 1, 3, 3)))
        0.5
    """
    return 1.0 - torch.sigmoid(logits).mean()


def contribution_ratio(full: torch.Tensor, partial: torch.Tensor) -> torch.Tensor:
    """``mean_b ||full_b - partial_b|| / ||partial_b||``: how much the rest adds to ``partial``.

    Norms are Euclidean over each image (every channel and pixel), the ratio
    is taken per image and averaged over the batch; ``1e-12`` guards the
    denominator. For the detail half's contribution, ``full`` is ``recon``
    and ``partial`` is ``recon_core``.

    Args:
        full: ``(B, ...)``.
        partial: The same shape.

    Returns:
        A 0-d tensor, 0 when ``full == partial``.

    Examples:
        >>> float(contribution_ratio(torch.full((1, 4), 3.0), torch.full((1, 4), 2.0)))
        0.5
    """
    difference: torch.Tensor = torch.linalg.vector_norm((full - partial).flatten(1), dim=1)
    base: torch.Tensor = torch.linalg.vector_norm(partial.flatten(1), dim=1)
    return (difference / (base + _EPS)).mean()
