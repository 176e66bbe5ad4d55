"""The trainer's images: procedural shapes with known factors, sklearn's digits, a folder."""

from __future__ import annotations

import importlib
import math
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import attrs
import numpy as np
import torch

__all__ = [
    "APPEARANCE_FACTORS",
    "DATASETS",
    "SHAPE_KINDS",
    "STRUCTURE_FACTORS",
    "ImageSet",
    "digits",
    "folder",
    "load",
    "render",
    "render_mask",
    "shapes",
    "split",
    "swap_scores",
]

SHAPE_KINDS: Final = ("circle", "square", "triangle", "cross")
"""The shapes of `shapes`, in the order of the ``"shape"`` factor's values."""
STRUCTURE_FACTORS: Final = ("shape", "size", "x", "y")
"""The factors of `shapes` that the core half should carry: what is drawn, and where."""
APPEARANCE_FACTORS: Final = ("fg", "bg")
"""The factors of `shapes` that the detail half should carry: the two colours."""
DATASETS: Final = ("shapes", "digits", "folder")
"""The names `load` accepts."""

# Sizes are the circle's radius as a fraction of the image side; every shape
# reaches at most _EXTENT * size from its centre, so centres are drawn in
# [_EXTENT * size, 1 - _EXTENT * size] and no shape is ever cut by the border.
_SIZE_RANGE: Final = (0.15, 0.30)
_EXTENT: Final = 1.35
# Foreground and background colours are at least this far apart (Euclidean, RGB in [0, 1]).
_MIN_CONTRAST: Final = 0.5
# Mean |u - v| of two independent uniform values in [0, 1]: the colour error of a guess.
_CHANCE_ERROR: Final = 1.0 / 3.0
_MIN_IMAGE_SIZE: Final = 8
_SUFFIXES: Final = frozenset({".png", ".jpg", ".jpeg"})


def _check_images(instance: ImageSet, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (
        not isinstance(value, torch.Tensor)
        or value.dtype != torch.float32
        or value.ndim != 4
        or value.shape[1] != 3
        or value.shape[0] < 1
    ):
        got = (
            f"a {value.dtype} tensor of shape {tuple(value.shape)}"
            if isinstance(value, torch.Tensor)
            else repr(value)
        )
        raise ValueError(
            f"ImageSet: {attribute.name} must be a float32 tensor of shape (N >= 1, 3, H, W), "
            f"got {got}"
        )


def _check_factors(instance: ImageSet, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or not value:
        raise ValueError(
            f"ImageSet: {attribute.name} must be None or a non-empty dict of tensors, got {value!r}"
        )
    for key, tensor in value.items():
        _check_rows(f"{attribute.name}[{key!r}]", tensor, len(instance.images))


def _check_labels(instance: ImageSet, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _check_rows(attribute.name, value, len(instance.images))


def _check_rows(where: str, value: Any, rows: int) -> None:
    if not isinstance(value, torch.Tensor) or value.ndim < 1 or value.shape[0] != rows:
        got = f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else repr(value)
        raise ValueError(
            f"ImageSet: {where} must be a tensor with {rows} rows (one per image), got {got}"
        )


@attrs.frozen(kw_only=True, eq=False, repr=False)
class ImageSet:
    """A set of RGB images in ``[0, 1]``, with their generating factors where known.

    Attributes:
        images: A float32 tensor of shape ``(N, 3, H, W)``, values in ``[0, 1]``.
        name: Where the images come from (``"shapes"``, ``"digits"``, ``"folder:<path>"``).
        factors: The generating factors by name, each a tensor with one row per
            image, or None when they are unknown. `shapes` gives
            `STRUCTURE_FACTORS` and `APPEARANCE_FACTORS`: the swap scores
            (`swap_scores`) can be computed exactly when this is not None.
        labels: A class label per image (a long tensor of shape ``(N,)``), or None.

    Raises:
        ValueError: ``images`` is not a float32 ``(N, 3, H, W)`` tensor, or a
            factor or the labels do not have one row per image.

    Examples:
        >>> data = ImageSet(images=torch.zeros(2, 3, 8, 8), name="black")
        >>> len(data), data.image_size, data.factors is None
        (2, 8, True)
        >>> data
        ImageSet(name='black', images=(2, 3, 8, 8), factors=None, labels=None)
    """

    images: torch.Tensor = attrs.field(validator=_check_images)
    name: str = attrs.field(validator=attrs.validators.instance_of(str))
    factors: dict[str, torch.Tensor] | None = attrs.field(default=None, validator=_check_factors)
    labels: torch.Tensor | None = attrs.field(default=None, validator=_check_labels)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> int:
        """The side of the images in pixels (``images.shape[-1]``)."""
        return int(self.images.shape[-1])

    def __repr__(self) -> str:
        factors = None if self.factors is None else sorted(self.factors)
        labels = None if self.labels is None else tuple(self.labels.shape)
        return (
            f"ImageSet(name={self.name!r}, images={tuple(self.images.shape)}, "
            f"factors={factors}, labels={labels})"
        )


# --- procedural shapes -------------------------------------------------------------------


def shapes(n: int, *, image_size: int = 32, seed: int = 0) -> ImageSet:
    """Draw ``n`` images of one anti-aliased shape on a plain background, from a seed.

    Every image is fully described by its factors, drawn independently:

    - structure: ``"shape"`` (long, an index into `SHAPE_KINDS`: circle,
      square, triangle, cross, uniform), ``"size"`` (the circle's radius as a
      fraction of the side, uniform in ``[0.15, 0.30]``; the other shapes have
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

    Returns:
        An `ImageSet` named ``"shapes"`` with images of shape
        ``(n, 3, image_size, image_size)`` and the six factors.

    Raises:
        ValueError: ``n``, ``image_size`` or ``seed`` is invalid.

    Examples:
        >>> data = shapes(6, image_size=16, seed=1)
        >>> data.images.shape, data.images.dtype
        (torch.Size([6, 3, 16, 16]), torch.float32)
        >>> sorted(data.factors)
        ['bg', 'fg', 'shape', 'size', 'x', 'y']
        >>> torch.equal(data.images, shapes(6, image_size=16, seed=1).images)
        True
    """
    _check_int("shapes", "n", n, 1)
    _check_int("shapes", "image_size", image_size, _MIN_IMAGE_SIZE)
    _check_int("shapes", "seed", seed, 0)
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(SHAPE_KINDS), size=n)
    size = rng.uniform(*_SIZE_RANGE, size=n)
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
    if (
        not isinstance(swapped, torch.Tensor)
        or swapped.ndim != 4
        or swapped.shape[1] != 3
        or swapped.shape[2] != swapped.shape[3]
    ):
        got = (
            f"shape {tuple(swapped.shape)}" if isinstance(swapped, torch.Tensor) else repr(swapped)
        )
        raise ValueError(f"swap_scores: swapped must be a tensor of shape (B, 3, S, S), got {got}")
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


# --- scikit-learn's digits ---------------------------------------------------------------


def digits(*, image_size: int = 32) -> ImageSet:
    """The 1797 handwritten digits bundled with scikit-learn, as RGB images.

    The 8x8 greyscale images (white ink on black) are scaled to ``[0, 1]``,
    upsampled bilinearly to ``image_size`` and copied to the three channels.
    Their generating factors are unknown (``factors`` is None, so there is no
    swap score); the digit is kept as ``labels``. Nothing is downloaded.

    Args:
        image_size: The side of the images in pixels (at least 8).

    Returns:
        An `ImageSet` named ``"digits"`` of 1797 images and their labels.

    Raises:
        ImportError: scikit-learn is not installed.
        ValueError: An invalid ``image_size``.

    Examples:
        >>> data = digits(image_size=16)
        >>> len(data), data.images.shape[1:], data.labels[:5].tolist()
        (1797, torch.Size([3, 16, 16]), [0, 1, 2, 3, 4])
    """
    _check_int("digits", "image_size", image_size, _MIN_IMAGE_SIZE)
    datasets = _optional(
        "sklearn.datasets",
        "digits() needs scikit-learn; install it with: pip install scikit-learn "
        '(or pip install "constraint-sched[digits]")',
    )
    bunch = datasets.load_digits()
    small = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).unsqueeze(1)
    large = torch.nn.functional.interpolate(
        small, size=(image_size, image_size), mode="bilinear", align_corners=False
    )
    images = large.clamp(0.0, 1.0).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    return ImageSet(images=images, name="digits", labels=labels)


# --- a folder of images ------------------------------------------------------------------


def folder(path: str | os.PathLike[str], *, image_size: int = 32) -> ImageSet:
    """Every PNG and JPEG image under a folder, resized and centre-cropped to a square.

    Files ending in ``.png``, ``.jpg`` or ``.jpeg`` (any case) are found
    recursively and read in the order of their sorted relative paths, with
    Pillow. Each is turned upright by its EXIF orientation, converted to RGB
    (transparent pixels composited over white, 16-bit grey scaled to 8 bits),
    resized (bicubic) so that its short side is ``image_size``, and cropped to
    the central ``image_size x image_size`` square. Other files are ignored. A file that
    cannot be read is skipped with a `UserWarning` that names it and says why.

    Args:
        path: The folder.
        image_size: The side of the images in pixels (at least 8).

    Returns:
        An `ImageSet` named ``"folder:<path>"`` without factors or labels.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        NotADirectoryError: ``path`` is not a folder.
        ValueError: No image under ``path`` could be read, or an invalid ``image_size``.
        ImportError: Pillow is not installed.

    Examples:
        >>> import tempfile
        >>> from PIL import Image
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     Image.new("RGB", (40, 20), "red").save(f"{tmp}/red.png")
        ...     data = folder(tmp, image_size=16)
        >>> data.images.shape, data.images[0, :, 8, 8].tolist()
        (torch.Size([1, 3, 16, 16]), [1.0, 0.0, 0.0])
    """
    _check_int("folder", "image_size", image_size, _MIN_IMAGE_SIZE)
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"folder: path {str(path)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"folder: path {str(path)!r} is not a directory")
    pil = _optional(
        "PIL.Image", "folder() reads images with Pillow; install it with: pip install Pillow"
    )
    ops = importlib.import_module("PIL.ImageOps")
    files = sorted(
        (f for f in root.rglob("*") if f.suffix.lower() in _SUFFIXES and f.is_file()),
        key=lambda f: f.relative_to(root).as_posix(),
    )
    arrays: list[np.ndarray[Any, np.dtype[np.uint8]]] = []
    skipped = 0
    for file in files:
        try:
            arrays.append(_read(pil, ops, file, image_size))
        except (OSError, SyntaxError, ValueError, pil.DecompressionBombError) as error:
            skipped += 1
            warnings.warn(
                f"folder: skipping {str(file)!r}, which cannot be read as an image: "
                f"{type(error).__name__}: {error}",
                UserWarning,
                stacklevel=2,
            )
    if not arrays:
        raise ValueError(
            f"folder: no readable PNG/JPEG image under {str(path)!r} "
            f"({len(files)} image file(s) found, {skipped} skipped as unreadable)"
        )
    stacked = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    images = stacked.to(torch.float32).div_(255.0).contiguous()
    return ImageSet(images=images, name=f"folder:{path}")


def _read(pil: ModuleType, ops: ModuleType, file: Path, side: int) -> np.ndarray[Any, Any]:
    with pil.open(file) as opened:
        image = ops.exif_transpose(opened)
        if image.mode.startswith("I"):  # 16-bit greyscale: Pillow's RGB conversion clips it
            grey = np.rint(np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255)
            image = pil.fromarray(grey.astype(np.uint8))
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            image = pil.alpha_composite(pil.new("RGBA", rgba.size, "white"), rgba)
        image = image.convert("RGB")
        width, height = image.size
        if width < 1 or height < 1:
            raise ValueError(f"empty image of size {width}x{height}")
        scale = side / min(width, height)
        size = (max(side, round(width * scale)), max(side, round(height * scale)))
        image = image.resize(size, pil.Resampling.BICUBIC)
        left, top = (size[0] - side) // 2, (size[1] - side) // 2
        image = image.crop((left, top, left + side, top + side))
        return np.asarray(image, dtype=np.uint8)


# --- a held-out split -------------------------------------------------------------------


def split(
    data: ImageSet, heldout: int, *, seed: int = 0, min_train: int = 1
) -> tuple[ImageSet, ImageSet]:
    """Hold ``heldout`` images of a fixed set out of training, chosen by a seeded permutation.

    For the fixed sets (`digits`, `folder`); `shapes` draws its held-out
    images apart instead (the trainer's `Run` does). The held-out images are
    the first ``heldout`` of a permutation of the set drawn from ``seed``
    (a `torch.Generator`, not the global one); both parts keep the set's
    order, and their factors and labels are sliced with them.

    Args:
        data: The images.
        heldout: How many to hold out (at least 1).
        seed: The seed of the permutation.
        min_train: The fewest images that must remain to train on.

    Returns:
        ``(train, heldout)``: two `ImageSet` that together hold every image of
        ``data`` once; the held-out one is named ``"<name>:heldout"``.

    Raises:
        ValueError: ``heldout`` is not an integer of at least 1, or it leaves
            fewer than ``min_train`` images to train on.

    Examples:
        >>> data = ImageSet(images=torch.rand(10, 3, 8, 8), name="noise", labels=torch.arange(10))
        >>> train, held = split(data, 3, seed=1)
        >>> len(train), len(held), held.name
        (7, 3, 'noise:heldout')
        >>> sorted(train.labels.tolist() + held.labels.tolist()) == list(range(10))
        True
        >>> torch.equal(held.labels, split(data, 3, seed=1)[1].labels)  # deterministic
        True
        >>> split(data, 8, min_train=4)
        Traceback (most recent call last):
        ...
        ValueError: split: heldout=8 leaves 2 of the 10 images of 'noise' to train on, fewer than 4
    """
    _check_int("split", "heldout", heldout, 1)
    _check_int("split", "min_train", min_train, 1)
    n = len(data)
    if n - heldout < min_train:
        raise ValueError(
            f"split: heldout={heldout} leaves {max(n - heldout, 0)} of the {n} images of "
            f"{data.name!r} to train on, fewer than {min_train}"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held, train = order[:heldout].sort().values, order[heldout:].sort().values
    return _subset(data, train, data.name), _subset(data, held, f"{data.name}:heldout")


def _subset(data: ImageSet, index: torch.Tensor, name: str) -> ImageSet:
    """The images of ``data`` at ``index``, with their factors and labels."""
    factors = None if data.factors is None else {k: v[index] for k, v in data.factors.items()}
    labels = None if data.labels is None else data.labels[index]
    return ImageSet(images=data.images[index], name=name, factors=factors, labels=labels)


# --- by name -----------------------------------------------------------------------------


def load(
    name: str,
    *,
    data: str | os.PathLike[str] | None = None,
    n: int = 4096,
    image_size: int = 32,
    seed: int = 0,
) -> ImageSet:
    """The image set called ``name``: what ``lbo-vae train --dataset NAME [--data DIR]`` trains on.

    Args:
        name: One of `DATASETS`: ``"shapes"`` (`shapes`, the default set),
            ``"digits"`` (`digits`) or ``"folder"`` (`folder`).
        data: The folder of images; required by ``"folder"``, an error with
            the other names.
        n: How many images ``"shapes"`` draws (ignored by the others).
        image_size: The side of the images in pixels.
        seed: The seed of ``"shapes"`` (ignored by the others, which are fixed).

    Returns:
        The `ImageSet`.

    Raises:
        ValueError: An unknown ``name``, or ``data`` missing for ``"folder"``
            or given with another name; and what the chosen loader raises.

    Examples:
        >>> data = load("shapes", n=4, image_size=16)
        >>> data.name, len(data), data.image_size
        ('shapes', 4, 16)
        >>> load("pictures")
        Traceback (most recent call last):
        ...
        ValueError: load: name must be one of ('shapes', 'digits', 'folder'), got 'pictures'
    """
    if name not in DATASETS:
        raise ValueError(f"load: name must be one of {DATASETS}, got {name!r}")
    if name == "folder":
        if data is None:
            raise ValueError("load: the 'folder' dataset needs data, the folder of images")
        return folder(data, image_size=image_size)
    if data is not None:
        raise ValueError(
            f"load: data (a folder of images) goes with name='folder', got data={str(data)!r} "
            f"with name={name!r}"
        )
    if name == "digits":
        return digits(image_size=image_size)
    return shapes(n, image_size=image_size, seed=seed)


def _check_int(caller: str, argument: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{caller}: {argument} must be an integer >= {minimum}, got {value!r}")


def _optional(module: str, message: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(message) from error
