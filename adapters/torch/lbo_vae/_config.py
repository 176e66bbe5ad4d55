"""TrainConfig: every setting of an LBO-VAE run, validated, and read from TOML."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"TrainConfig.{attribute.name} must be positive, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"TrainConfig.{attribute.name} must be finite, got {value!r}")


def _image_size(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 16 or value & (value - 1):
        raise ValueError(
            f"TrainConfig.image_size must be a power of two of at least 16, got {value!r}"
        )


def _rate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not 0 < value <= 1:
        raise ValueError(f"TrainConfig.{attribute.name} must lie in (0, 1], got {value!r}")


def _fraction(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not 0 < value < 1:
        raise ValueError(f"TrainConfig.{attribute.name} must lie in (0, 1), got {value!r}")


def _bool(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"TrainConfig.{attribute.name} must be true or false, got {value!r}")


def _optional_path(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(
            f"TrainConfig.{attribute.name} must be a file's path (a non-empty string) or not "
            f"set, got {value!r}"
        )


def _optional_positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _positive(instance, attribute, value)


def _one_of(*choices: str) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ValueError(
                f"TrainConfig.{attribute.name} must be one of {', '.join(map(repr, choices))}, "
                f"got {value!r}"
            )

    return check


def _table(value: Any) -> dict[int, float] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"TrainConfig.kl_table must be a non-empty table, got {value!r}")
    try:
        return {int(k): float(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise ValueError(
            f"TrainConfig.kl_table maps epochs to ceilings, got {dict(value)!r}"
        ) from None


SEED_TABLE = {
    3: 13000.0, 4: 11000.0, 5: 9500.0, 6: 8200.0, 7: 7000.0, 8: 6000.0, 9: 5200.0,
    10: 4600.0, 11: 4100.0, 12: 3700.0, 13: 3400.0, 14: 3200.0, 15: 3000.0,
}  # fmt: skip
"""The seed's absolute KL-ceiling table (LBO.md, section 4), for ``kl_table``."""


@attrs.frozen(kw_only=True)
class TrainConfig:
    """Every setting of an LBO-VAE run; the defaults fit a 2-core CPU in a few minutes.

    The KL ceiling (shared by both latent halves) is discovered in epoch 1 as
    the max KL of the accepted steps, held for ``kl_hold`` epochs and squeezed
    towards ``kl_target``: by default geometrically from the discovered
    ceiling over ``kl_squeeze_epochs`` epochs, or by the absolute ``kl_table``
    (the seed's is `SEED_TABLE`, for CelebA-sized KLs). ``auto`` scales are the
    median of the first ``calibration_steps`` steps, 10% wider until epoch 2.
    From the end of epoch ``tighten_from`` the fixed soft scales are
    tightened by ``tighten_factor`` after each epoch that rejects under 5%
    while the mean min group of the last 3 epochs is at least
    ``tighten_min_group``; once an epoch after that rejects 5% or more, the
    run trains one more epoch and stops (LBO.md section 5).
    ``kl_steepness`` is how fast the KL goals' score decays past the ceiling
    (inside, it falls linearly from 1 at ``kl_healthy`` to 0 at the ceiling);
    ``kl_hard_ceiling`` also rejects any step that crosses it.
    Only the ``pixel`` goal is the objective: every other goal is a
    constraint that counts as fully met once its score reaches ``met``
    (``swap_met`` for the swap group, ``kl_met`` for the two KL goals), and
    ``gradient_clip`` clips each step's gradient norm to that many times the
    running mean of the norms before it; see the trainer page's design notes
    for why.
    ``perceptual_weights``, the path of a local torchvision VGG16 weights
    file, adds the ``perceptual`` goal; unset (the default), the goal is off
    and nothing is loaded or downloaded. ``heldout`` images, which training
    never sees, measure the model at every epoch's end.

    Examples:
        >>> TrainConfig(epochs=3).batch_size
        64
    """

    dataset: str = attrs.field(default="shapes", validator=_one_of("shapes", "digits", "folder"))
    data: str | None = None
    images: int = attrs.field(default=4096, validator=_positive)
    heldout: int = attrs.field(default=512, validator=_positive)
    image_size: int = attrs.field(default=32, validator=_image_size)
    epochs: int = attrs.field(default=9, validator=_positive)
    batch_size: int = attrs.field(default=64, validator=_positive)
    lr: float = attrs.field(default=3e-3, converter=float, validator=_positive)
    device: str = attrs.field(default="auto", validator=_one_of("auto", "cpu", "cuda"))
    seed: int = 0
    core_dims: int = attrs.field(default=8, validator=_positive)
    detail_dims: int = attrs.field(default=8, validator=_positive)
    width: int = attrs.field(default=16, validator=_positive)
    disc_width: int = attrs.field(default=16, validator=_positive)
    calibration_steps: int = attrs.field(default=32, validator=_positive)
    kl_lower: float = attrs.field(default=1.0, converter=float, validator=_positive)
    kl_healthy: float = attrs.field(default=15.0, converter=float, validator=_positive)
    kl_steepness: float = attrs.field(default=20.0, converter=float, validator=_positive)
    kl_hard_ceiling: bool = attrs.field(default=False, validator=_bool)
    kl_target: float = attrs.field(default=20.0, converter=float, validator=_positive)
    kl_hold: int = attrs.field(default=1, validator=_positive)
    kl_squeeze_epochs: int = attrs.field(default=5, validator=_positive)
    kl_table: dict[int, float] | None = attrs.field(default=None, converter=_table)
    max_reject_rate: float = attrs.field(default=0.15, converter=float, validator=_rate)
    tighten_from: int = attrs.field(default=6, validator=_positive)
    tighten_factor: float = attrs.field(default=0.95, converter=float, validator=_fraction)
    tighten_min_group: float = attrs.field(default=0.5, converter=float, validator=_rate)
    perceptual_weights: str | None = attrs.field(default=None, validator=_optional_path)
    met: float = attrs.field(default=0.25, converter=float, validator=_rate)
    swap_met: float = attrs.field(default=0.5, converter=float, validator=_rate)
    kl_met: float = attrs.field(default=0.25, converter=float, validator=_rate)
    gradient_clip: float | None = attrs.field(default=1.5, validator=_optional_positive)

    def __attrs_post_init__(self) -> None:
        if (self.dataset == "folder") != (self.data is not None):
            raise ValueError(
                "TrainConfig: dataset='folder' needs data (a folder of images), and data "
                f"needs dataset='folder'; got dataset={self.dataset!r}, data={self.data!r}"
            )
        if not self.kl_lower < self.kl_healthy:
            raise ValueError(
                f"TrainConfig: kl_lower ({self.kl_lower}) must be below kl_healthy "
                f"({self.kl_healthy})"
            )

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (None values are ignored: unset command-line options)."""
        return attrs.evolve(self, **{k: v for k, v in changes.items() if v is not None})


def load_config(path: str | Path) -> TrainConfig:
    """Read a TOML file of `TrainConfig` keys (a ``[train]`` table or top-level keys).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: It is not valid TOML, or holds a key `TrainConfig` does
            not have (named), or a value out of range (named).
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {str(file)!r} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file {str(file)!r} is not valid TOML: {error}") from None
    table = data.get("train", data)
    known = {f.name for f in attrs.fields(TrainConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(
            f"config file {str(file)!r}: unknown keys {unknown}; the keys are {sorted(known)}"
        )
    return TrainConfig(**table)
