"""The trainer's image sets: `ImageSet`, the images of one set with their factors and labels."""

from __future__ import annotations

from typing import Any, Final

import attrs
import numpy as np
import torch

__all__ = [
    "ImageSet",
]

_MIN_IMAGE_SIZE: Final = 8


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


def _check_int(caller: str, argument: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{caller}: {argument} must be an integer >= {minimum}, got {value!r}")
