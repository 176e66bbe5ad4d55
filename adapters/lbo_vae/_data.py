"""The trainer's images by name: procedural shapes, sklearn's digits, a folder; a held-out split.

`load` is what ``lbo-vae train --dataset NAME`` calls. The image set type is
`ImageSet` (`constraint_sched.adapters.lbo_vae._images`); the shapes, their
rendering and their swap scores are `constraint_sched.adapters.lbo_vae._shapes`.
Both are re-exported here.
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import numpy as np
import torch

from constraint_sched.adapters.lbo_vae._images import _MIN_IMAGE_SIZE, ImageSet, _check_int
from constraint_sched.adapters.lbo_vae._shapes import (
    APPEARANCE_FACTORS,
    SHAPE_KINDS,
    SIZES,
    STRUCTURE_FACTORS,
    render,
    render_mask,
    shape_recovery,
    shapes,
    swap_scores,
)

__all__ = [
    "APPEARANCE_FACTORS",
    "DATASETS",
    "SHAPE_KINDS",
    "SIZES",
    "STRUCTURE_FACTORS",
    "ImageSet",
    "digits",
    "folder",
    "load",
    "render",
    "render_mask",
    "shape_recovery",
    "shapes",
    "split",
    "swap_scores",
]

DATASETS: Final = ("shapes", "digits", "folder")
"""The names `load` accepts."""

_SUFFIXES: Final = frozenset({".png", ".jpg", ".jpeg"})


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


def _optional(module: str, message: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(message) from error
