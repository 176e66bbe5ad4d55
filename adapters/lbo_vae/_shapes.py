"""The procedural shapes: factors drawn from a seed, their rendering, the swap scores they allow.

Every image of `shapes` is fully described by its factors, so an image can be
redrawn with the structure of one and the colours of another (`render`), and
a model's swap of two images can be scored against that ideal exactly
(`swap_scores`), and whether a reconstruction drew the right shape can be
checked against every shape it could have been (`shape_recovery`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Final

import numpy as np
import torch

from constraint_sched.adapters.lbo_vae._images import _MIN_IMAGE_SIZE, ImageSet, _check_int

__all__ = [
    "APPEARANCE_FACTORS",
    "SHAPE_KINDS",
    "SIZES",
    "STRUCTURE_FACTORS",
    "render",
    "render_mask",
    "shape_recovery",
    "shapes",
    "swap_scores",
]

SHAPE_KINDS: Final = ("circle", "square", "triangle", "cross")
"""The shapes of `shapes`, in the order of the ``"shape"`` factor's values."""
STRUCTURE_FACTORS: Final = ("shape", "size", "x", "y")
"""The factors of `shapes` that the core half should carry: what is drawn, and where."""
APPEARANCE_FACTORS: Final = ("fg", "bg")
"""The factors of `shapes` that the detail half should carry: the two colours."""

# Sizes are the circle's radius as a fraction of the image side; every shape
# reaches at most _EXTENT * size from its centre, so centres are drawn in
# [_EXTENT * size, 1 - _EXTENT * size] and no shape is ever cut by the border.
SIZES: Final = (0.15, 0.30)
"""The default range of `shapes`' ``"size"``: the circle's radius as a fraction of the side."""
_EXTENT: Final = 1.35
# The largest size whose shape still fits in the image (centred).
_MAX_SIZE: Final = 0.5 / _EXTENT
# Foreground and background colours are at least this far apart (Euclidean, RGB in [0, 1]).
_MIN_CONTRAST: Final = 0.5
# Mean |u - v| of two independent uniform values in [0, 1]: the colour error of a guess.
_CHANCE_ERROR: Final = 1.0 / 3.0


def shapes(
    n: int, *, image_size: int = 32, seed: int = 0, sizes: tuple[float, float] = SIZES
) -> ImageSet:
    """Draw ``n`` images of one anti-aliased shape on a plain background, from a seed.

    Every image is fully described by its factors, drawn independently:

    - structure: ``"shape"`` (long, an index into `SHAPE_KINDS`: circle,
      square, triangle, cross, uniform), ``"size"`` (the circle's radius as a
      fraction of the side, uniform in ``sizes``, by default
      ``[0.15, 0.30]``; the other shapes have
      about the same area), ``"x"`` and ``"y"`` (the centre as fractions of the
      side, uniform over the positions where the shape is not cut by the border);
    - appearance: ``"fg"`` and ``"bg"`` (float ``(n, 3)`` RGB colours in
      ``[0, 1]``, uniform, redrawn until they are at least 0.5 apart, so the
      shape is always visible).

    The images are `render` of those factors; everything is deterministic from
    ``seed`` (a `numpy.random.Generator`), and no file is read or downloaded.

    Args:
        n: How many images (at least 1).
        image_size: The side of the square images in pixels (at least 8).
        seed: The seed of the factors (a non-negative integer).
        sizes: The range of the ``"size"`` factor, ``(low, high)`` with
            ``0 < low <= high <= 0.37`` (the largest shape that fits). With the
            default seed and sizes the images are those the trainer trains on.

    Returns:
        An `ImageSet` named ``"shapes"`` with images of shape
        ``(n, 3, image_size, image_size)`` and the six factors.

    Raises:
        ValueError: ``n``, ``image_size``, ``seed`` or ``sizes`` is invalid.

    Examples:
        >>> data = shapes(6, image_size=16, seed=1)
        >>> data.images.shape, data.images.dtype
        (torch.Size([6, 3, 16, 16]), torch.float32)
        >>> sorted(data.factors)
        ['bg', 'fg', 'shape', 'size', 'x', 'y']
        >>> torch.equal(data.images, shapes(6, image_size=16, seed=1).images)
        True
        >>> big = shapes(6, seed=1, sizes=(0.22, 0.34))  # the same shapes, drawn larger
        >>> bool(big.factors["size"].min() >= 0.22), bool(big.factors["size"].max() <= 0.34)
        (True, True)
        >>> shapes(6, sizes=(0.2, 0.4))
        Traceback (most recent call last):
        ...
        ValueError: shapes: sizes must satisfy 0 < low <= high <= 0.370 (...), got (0.2, 0.4)
    """
    _check_int("shapes", "n", n, 1)
    _check_int("shapes", "image_size", image_size, _MIN_IMAGE_SIZE)
    _check_int("shapes", "seed", seed, 0)
    low_size, high_size = _check_sizes(sizes)
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(SHAPE_KINDS), size=n)
    size = rng.uniform(low_size, high_size, size=n)
    low = _EXTENT * size
    x = low + (1 - 2 * low) * rng.random(n)
    y = low + (1 - 2 * low) * rng.random(n)
    fg = rng.random((n, 3))
    bg = rng.random((n, 3))
    close = np.linalg.norm(fg - bg, axis=1) < _MIN_CONTRAST
    while close.any():
        fg[close] = rng.random((int(close.sum()), 3))
        bg[close] = rng.random((int(close.sum()), 3))
        close = np.linalg.norm(fg - bg, axis=1) < _MIN_CONTRAST
    factors = {
        "shape": torch.from_numpy(kind.astype(np.int64)),
        "size": torch.from_numpy(size.astype(np.float32)),
        "x": torch.from_numpy(x.astype(np.float32)),
        "y": torch.from_numpy(y.astype(np.float32)),
        "fg": torch.from_numpy(fg.astype(np.float32)),
        "bg": torch.from_numpy(bg.astype(np.float32)),
    }
    images = render(factors, factors, image_size)
    return ImageSet(images=images, name="shapes", factors=factors, labels=factors["shape"])


def _check_sizes(sizes: object) -> tuple[float, float]:
    """``sizes`` as two floats, or a ValueError that names it and says what fits."""
    try:
        low, high = (float(v) for v in sizes)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ValueError(f"shapes: sizes must be two numbers (low, high), got {sizes!r}") from None
    _check_size_range(low, high, "shapes: sizes", repr(sizes))
    return low, high


def _check_size_range(low: float, high: float, name: str, shown: str) -> None:
    """A ValueError naming ``name`` (showing ``shown``) unless ``0 < low <= high`` and they fit.

    The one rule for a range of `shapes`' sizes, for `shapes` and for the
    trainer's ``TrainConfig.shape_sizes``: a larger shape than ``0.370`` of
    the side would be cut by the border.
    """
    if not (0 < low <= high <= _MAX_SIZE):
        raise ValueError(
            f"{name} must satisfy 0 < low <= high <= {_MAX_SIZE:.3f} (a larger shape does "
            f"not fit in the image), got {shown}"
        )


def render_mask(factors: Mapping[str, torch.Tensor], image_size: int) -> torch.Tensor:
    """The anti-aliased foreground mask of shapes given by their structure factors.

    A pixel's value is the fraction of it that the shape covers (1 inside, 0
    outside, in between on the edge), from the signed distance to the shape.

    Args:
        factors: At least ``"shape"``, ``"size"``, ``"x"`` and ``"y"`` (see
            `shapes`), each a tensor of shape ``(B,)`` or a 0-d tensor (one
            shape, ``B = 1``); other keys are ignored.
        image_size: The side of the mask in pixels (at least 8).

    Returns:
        A float32 tensor of shape ``(B, image_size, image_size)``, values in
        ``[0, 1]``, on the device of ``factors["size"]``.

    Raises:
        KeyError: A structure factor is missing.
        ValueError: An invalid ``image_size``, factors of different lengths, or
            a ``"shape"`` value that is not an index into `SHAPE_KINDS`.

    Examples:
        >>> mask = render_mask({"shape": torch.tensor(1), "size": torch.tensor(0.25),
        ...                     "x": torch.tensor(0.5), "y": torch.tensor(0.5)}, 16)
        >>> mask.shape, round(float(mask.sum()), 1)  # a square of side 2 * 0.85 * 0.25 * 16
        (torch.Size([1, 16, 16]), 47.0)
    """
    _check_int("render_mask", "image_size", image_size, _MIN_IMAGE_SIZE)
    missing = [key for key in STRUCTURE_FACTORS if key not in factors]
    if missing:
        raise KeyError(f"render_mask: factors lack the structure factors {missing}")
    size = torch.as_tensor(factors["size"]).float().reshape(-1)
    device = size.device
    kind, x, y = (
        torch.as_tensor(factors[key]).to(device).reshape(-1) for key in ("shape", "x", "y")
    )
    if not kind.shape == x.shape == y.shape == size.shape:
        raise ValueError(
            "render_mask: the structure factors must have one value per image each, got "
            f"lengths {[len(t) for t in (kind, size, x, y)]} for {list(STRUCTURE_FACTORS)}"
        )
    if kind.is_floating_point() or bool(((kind < 0) | (kind >= len(SHAPE_KINDS))).any()):
        raise ValueError(
            f"render_mask: factors['shape'] must hold integers in [0, {len(SHAPE_KINDS)}) "
            f"(indices into {SHAPE_KINDS}), got {kind.tolist()}"
        )
    side = float(image_size)
    centres = torch.arange(image_size, device=device, dtype=torch.float32) + 0.5
    dx = centres.view(1, 1, -1) - (x.float() * side).view(-1, 1, 1)
    dy = centres.view(1, -1, 1) - (y.float() * side).view(-1, 1, 1)
    radius = (size * side).view(-1, 1, 1)
    distance = torch.empty(len(size), image_size, image_size, device=device)
    for index, draw in enumerate(_SDF):
        chosen = kind == index
        if bool(chosen.any()):
            distance[chosen] = draw(dx[chosen], dy[chosen], radius[chosen])
    return (0.5 - distance).clamp(0.0, 1.0)


def render(
    structure_from: Mapping[str, torch.Tensor],
    appearance_from: Mapping[str, torch.Tensor],
    image_size: int,
) -> torch.Tensor:
    """Draw shapes with the structure of some factors and the colours of others.

    ``render(f, f, size)`` is how `shapes` draws its images;
    ``render(f1, f2, size)`` is the ideal swap of the core/detail split: the
    shapes of ``f1`` in the colours of ``f2``.

    Args:
        structure_from: The structure factors (see `render_mask`), ``B`` rows.
        appearance_from: ``"fg"`` and ``"bg"``, each of shape ``(B, 3)`` (or
            ``(3,)`` for one image).
        image_size: The side of the images in pixels (at least 8).

    Returns:
        A float32 tensor of shape ``(B, 3, image_size, image_size)`` in ``[0, 1]``.

    Raises:
        KeyError: A factor is missing.
        ValueError: As `render_mask`, or colours of the wrong shape.

    Examples:
        >>> a, b = shapes(2, image_size=16).factors, shapes(2, image_size=16, seed=5).factors
        >>> swap = render(a, b, 16)
        >>> torch.equal(swap[:, :, 0, 0], b["bg"])  # a corner is always background
        True
    """
    return _paint(render_mask(structure_from, image_size), appearance_from)


def swap_scores(
    swapped: torch.Tensor,
    structure_from: Mapping[str, torch.Tensor],
    appearance_from: Mapping[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score a swap ``decode(core(x1), detail(x2))`` of `shapes` images: shape vs x1, colour vs x2.

    With ``m`` the mask of x1's shape (`render_mask` of ``structure_from``) and
    the ideal swap ``t = render(structure_from, appearance_from)``:

    - **structure** is the fraction of the swapped image's colour variance
      that ``m`` explains: the squared correlation between ``m`` and the
      pixels, pooled over the channels,
      ``sum_c cov(m, p_c)^2 / (var(m) * sum_c var(p_c))``. It is 1 when the
      image is any two colours laid out as x1's shape (whatever the colours,
      so x1 itself scores 1), ``corr(m1, m2)^2`` for x2's shape, and 0 for a
      flat image. Blur and noise lower it smoothly.
    - **appearance** compares colours regardless of where they are: the
      per-channel 1-Wasserstein distance between the swapped image's pixel
      values and those of ``t`` (the mean absolute difference of the sorted
      values), averaged over channels and normalised by the chance error 1/3
      (the mean distance of two random values in ``[0, 1]``):
      ``clamp(1 - 3 * W1, 0, 1)``. It is 1 for the colours of x2 in x1's
      proportions, still high for x2 itself (only the areas differ), and about
      0 for unrelated colours such as x1's.

    Each score is the mean over the batch of the per-image scores. The
    factors are moved to the device of ``swapped``; drawing the masks reads a
    few flags back to the host (an evaluation metric, not for every step).

    Args:
        swapped: The decoded swaps, shape ``(B, 3, S, S)``, values in ``[0, 1]``.
        structure_from: The factors of x1 (``B`` rows; see `render_mask`).
        appearance_from: The factors of x2 (``B`` rows; ``"fg"`` and ``"bg"``).

    Returns:
        ``(structure, appearance)``, two 0-d float32 tensors in ``[0, 1]``
        (1 = perfect) on the device of ``swapped``.

    Raises:
        ValueError: ``swapped`` is not a ``(B, 3, S, S)`` tensor, or the factors
            do not have ``B`` rows.
        KeyError: A factor is missing.

    Examples:
        >>> x1, x2 = shapes(8, seed=1).factors, shapes(8, seed=2).factors
        >>> perfect = swap_scores(render(x1, x2, 32), x1, x2)
        >>> [round(float(s), 3) for s in perfect]
        [1.0, 1.0]
        >>> structure, appearance = swap_scores(render(x1, x1, 32), x1, x2)  # x1 back
        >>> float(structure) > 0.99, float(appearance) < 0.5
        (True, True)
    """
    _check_rgb_batch("swap_scores", "swapped", swapped)
    batch, side = swapped.shape[0], swapped.shape[-1]
    structure_from = {k: torch.as_tensor(v).to(swapped.device) for k, v in structure_from.items()}
    appearance_from = {k: torch.as_tensor(v).to(swapped.device) for k, v in appearance_from.items()}
    mask = render_mask(structure_from, side)
    if len(mask) != batch:
        raise ValueError(
            f"swap_scores: structure_from describes {len(mask)} images, swapped holds {batch}"
        )
    target = _paint(mask, appearance_from)
    pixels = swapped.float()
    m = mask - mask.mean(dim=(1, 2), keepdim=True)
    p = pixels - pixels.mean(dim=(2, 3), keepdim=True)
    covariance = (m.unsqueeze(1) * p).mean(dim=(2, 3))
    var_m = m.square().mean(dim=(1, 2))
    var_p = p.square().mean(dim=(2, 3)).sum(dim=1)
    explained = covariance.square().sum(dim=1) / (var_m * var_p).clamp_min(1e-12)
    structure = torch.where(var_p > 1e-8, explained, torch.zeros_like(explained)).clamp(0, 1)
    ours = pixels.flatten(2).sort(dim=2).values
    ideal = target.flatten(2).sort(dim=2).values
    distance = (ours - ideal).abs().mean(dim=(1, 2))
    appearance = (1 - distance / _CHANCE_ERROR).clamp(0, 1)
    return structure.mean(), appearance.mean()


def shape_recovery(recon: torch.Tensor, factors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The share of reconstructions of `shapes` images that drew the right shape.

    Each reconstruction is compared with the four images its factors could
    have drawn: the same size, position and colours, as each of
    `SHAPE_KINDS` in turn (`render`). It counts as recovered when the nearest
    of the four (least squared error) is the true shape. The shapes have
    about the same area, so the score reads the outline, not the amount of
    foreground: a perfect reconstruction scores 1, and a round blob of the
    right colours in the right place scores about 0.5 (the circles, and the
    squares and crosses whose bulk it happens to match best).

    Args:
        recon: The reconstructions, shape ``(B, 3, S, S)``, values in ``[0, 1]``.
        factors: The factors of the images they reconstruct (``B`` rows; see
            `render_mask`, and ``"fg"`` and ``"bg"``).

    Returns:
        A 0-d float32 tensor in ``[0, 1]`` on the device of ``recon``.

    Raises:
        ValueError: ``recon`` is not a ``(B, 3, S, S)`` tensor, or the factors
            do not have ``B`` rows.
        KeyError: A factor is missing.

    Examples:
        >>> data = shapes(16, seed=3)
        >>> float(shape_recovery(data.images, data.factors))
        1.0
        >>> circles = dict(data.factors, shape=torch.zeros(16, dtype=torch.long))
        >>> drawn_as_circles = render(circles, circles, 32)  # right only for the circles
        >>> circle_share = (data.factors["shape"] == 0).float().mean()
        >>> bool(shape_recovery(drawn_as_circles, data.factors) == circle_share)
        True
    """
    _check_rgb_batch("shape_recovery", "recon", recon)
    batch, side = recon.shape[0], recon.shape[-1]
    factors = {k: torch.as_tensor(v).to(recon.device) for k, v in factors.items()}
    kind = factors["shape"].long().reshape(-1)
    if len(kind) != batch:
        raise ValueError(
            f"shape_recovery: factors describe {len(kind)} images, recon holds {batch}"
        )
    pixels = recon.float()
    errors = []
    for k in range(len(SHAPE_KINDS)):
        candidate = dict(factors, shape=torch.full_like(kind, k))
        errors.append((render(candidate, candidate, side) - pixels).square().mean(dim=(1, 2, 3)))
    nearest = torch.stack(errors, dim=1).argmin(dim=1)
    return (nearest == kind).float().mean()


def _check_rgb_batch(caller: str, argument: str, value: object) -> None:
    """A ValueError naming ``argument`` unless ``value`` is a ``(B, 3, S, S)`` tensor."""
    if (
        not isinstance(value, torch.Tensor)
        or value.ndim != 4
        or value.shape[1] != 3
        or value.shape[2] != value.shape[3]
    ):
        got = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else repr(value)
        raise ValueError(f"{caller}: {argument} must be a tensor of shape (B, 3, S, S), got {got}")


def _paint(mask: torch.Tensor, appearance: Mapping[str, torch.Tensor]) -> torch.Tensor:
    fg, bg = (_colours(appearance, key, len(mask), mask.device) for key in APPEARANCE_FACTORS)
    return mask.unsqueeze(1) * fg.view(-1, 3, 1, 1) + (1 - mask.unsqueeze(1)) * bg.view(-1, 3, 1, 1)


def _colours(
    factors: Mapping[str, torch.Tensor], key: str, rows: int, device: torch.device
) -> torch.Tensor:
    if key not in factors:
        raise KeyError(f"render: the appearance factors lack {key!r}")
    colour = torch.as_tensor(factors[key]).to(device=device, dtype=torch.float32).reshape(-1, 3)
    if len(colour) != rows:
        raise ValueError(
            f"render: factors[{key!r}] must hold {rows} RGB colours (shape ({rows}, 3)), "
            f"got shape {tuple(torch.as_tensor(factors[key]).shape)}"
        )
    return colour


def _box(dx: torch.Tensor, dy: torch.Tensor, hx: torch.Tensor, hy: torch.Tensor) -> torch.Tensor:
    qx, qy = dx.abs() - hx, dy.abs() - hy
    outside = torch.hypot(qx.clamp_min(0), qy.clamp_min(0))
    return outside + torch.maximum(qx, qy).clamp_max(0)


def _circle(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return torch.hypot(dx, dy) - r


def _square(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return _box(dx, dy, 0.85 * r, 0.85 * r)


def _triangle(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # An upright equilateral triangle of circumradius 1.4 r centred on its bounding box
    # (half-extents 1.21 r across, 1.05 r up and down): the exact signed distance of
    # I. Quilez's sdEquilateralTriangle, y pointing up from the centroid, 0.35 r lower.
    circumradius = 1.4 * r
    k = math.sqrt(3)
    half = circumradius * k / 2
    px = dx.abs() - half
    py = -dy + 0.25 * circumradius + half / k
    fold = px + k * py > 0
    px, py = torch.where(fold, (px - k * py) / 2, px), torch.where(fold, (-k * px - py) / 2, py)
    px = px - torch.minimum(torch.maximum(px, -2 * half), torch.zeros_like(px))
    return -torch.hypot(px, py) * torch.sign(py)


def _cross(dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    long, thin = 1.1 * r, 0.38 * r
    return torch.minimum(_box(dx, dy, long, thin), _box(dx, dy, thin, long))


_SDF: Final[tuple[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], ...]] = (
    _circle,
    _square,
    _triangle,
    _cross,
)
