"""TrainConfig: every setting of an LBO-VAE run, validated, and read from TOML."""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from constraint_sched.adapters.lbo_vae._shapes import SIZES, _check_size_range

Validator = Any
"""An attrs field validator: ``(instance, attribute, value) -> None``, raising on a bad value."""


def _kind(value: Any) -> str:
    """``value`` and its type, as the messages show them: ``'abc' (str)``."""
    return f"{value!r} ({type(value).__name__})"


def _to_int(value: Any) -> Any:
    """An integral number (numpy's too) as an int; anything else as it is, for the validator."""
    if isinstance(value, bool):  # an int, and Integral, to Python: refused by the validator
        return value
    return int(value) if isinstance(value, numbers.Integral) else value


def _to_float(value: Any) -> Any:
    """A real number as a float (``lr=1`` is 1.0); anything else, bools too, as it is."""
    if isinstance(value, bool):
        return value
    return float(value) if isinstance(value, numbers.Real) else value


def _integer(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    # bool is an int subclass, and 1.5 or 2.0 in an int field is a mistake: both are refused.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"TrainConfig.{attribute.name} must be an integer, got {_kind(value)}")


def _number(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    # After _to_float every real number is a float: what is left (bools, strings) is refused.
    if not isinstance(value, float):
        raise TypeError(f"TrainConfig.{attribute.name} must be a number, got {_kind(value)}")


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value > 0:
        raise ValueError(f"TrainConfig.{attribute.name} must be positive, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"TrainConfig.{attribute.name} must be finite, got {value!r}")


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value < 0:
        raise ValueError(f"TrainConfig.{attribute.name} must be 0 or more, got {value!r}")


def _image_size(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value < 16 or value & (value - 1):
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
        raise TypeError(f"TrainConfig.{attribute.name} must be true or false, got {_kind(value)}")


def _optional_path(what: str) -> Validator:
    """A validator: the field is ``what``'s path (a non-empty string), or None."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, str):
            raise TypeError(
                f"TrainConfig.{attribute.name} must be the path of {what} (a string) or not "
                f"set, got {_kind(value)}"
            )
        if not value:
            raise ValueError(
                f"TrainConfig.{attribute.name} must be the path of {what} (a non-empty string) "
                "or not set, got ''"
            )

    return check


def _one_of(*choices: str) -> Validator:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        names = ", ".join(map(repr, choices))
        if not isinstance(value, str):
            raise TypeError(
                f"TrainConfig.{attribute.name} must be a string, one of {names}, got {_kind(value)}"
            )
        if value not in choices:
            raise ValueError(f"TrainConfig.{attribute.name} must be one of {names}, got {value!r}")

    return check


def _to_table(value: Any) -> Any:
    """A ``{epoch: ceiling}`` table with int epochs and float ceilings, where they are numbers.

    TOML's keys are strings: ``{ 3 = 50.0 }`` is ``{"3": 50.0}``, so a key of
    digits is an epoch. Anything else stays as it is, for `_table` to name.
    """
    if not isinstance(value, Mapping):
        return value

    def epoch(key: Any) -> Any:
        if isinstance(key, str) and key.strip().isdecimal():
            return int(key)
        return _to_int(key)

    return {epoch(k): _to_float(v) for k, v in value.items()}


def _table(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise TypeError(
            f"TrainConfig.kl_table must be a table of epochs to ceilings, got {_kind(value)}"
        )
    if not value:
        raise ValueError("TrainConfig.kl_table must be a non-empty table, got {}")
    for key, ceiling in value.items():
        if isinstance(key, bool) or not isinstance(key, int):
            raise TypeError(
                f"TrainConfig.kl_table's keys must be epochs (integers), got {_kind(key)}"
            )
        if key < 1:
            raise ValueError(f"TrainConfig.kl_table's epochs must be 1 or more, got {key!r}")
        if not isinstance(ceiling, float):
            raise TypeError(
                f"TrainConfig.kl_table[{key}] must be a number (a ceiling), got {_kind(ceiling)}"
            )
        if not (math.isfinite(ceiling) and ceiling > 0):
            raise ValueError(
                f"TrainConfig.kl_table[{key}] must be a positive, finite ceiling, got {ceiling!r}"
            )


def _to_pair(value: Any) -> Any:
    """A list or tuple of numbers as a tuple of floats (TOML's arrays are lists); else as is."""
    if isinstance(value, (list, tuple)):
        return tuple(_to_float(v) for v in value)
    return value


def _size_range(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    name = f"TrainConfig.{attribute.name}"
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or not all(isinstance(v, float) for v in value)
    ):
        raise TypeError(f"{name} must be two numbers [low, high], got {_kind(value)}")
    _check_size_range(*value, name, repr(list(value)))


def _optional(*validators: Validator) -> Validator:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            for validator in validators:
                validator(instance, attribute, value)

    return check


def _int_field(default: int, *validators: Validator) -> Any:
    """An integer field: numpy's integers become ints; bools, floats and strings are refused."""
    return attrs.field(default=default, converter=_to_int, validator=[_integer, *validators])


def _float_field(default: float, *validators: Validator) -> Any:
    """A number field: ints become floats (``lr=1`` is 1.0); bools and strings are refused."""
    return attrs.field(default=default, converter=_to_float, validator=[_number, *validators])


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
    (``swap_met`` for the swap group, ``disentangle_met`` for the
    disentangle group, ``kl_met`` for the two KL goals), and
    ``gradient_clip`` clips each step's gradient norm to that many times the
    running mean of the norms before it; see the trainer page's design notes
    for why.
    ``recheck`` is what a step evaluates again after the optimizer step:
    ``"posterior"`` (the encoder alone) or ``"full"`` (what the step's
    forward evaluated); ``refresh`` evaluates the costly groups (swap,
    core, realism, disentangle, latent, health) on one step in ``refresh``
    and on a step they would be the bottleneck, the reconstruction and the
    KL on every step (1: every group, every step). See the trainer page's
    design notes for what each costs.
    ``perceptual_weights``, the path of a local torchvision VGG16 weights
    file, adds the ``perceptual`` goal; unset (the default), the goal is off
    and nothing is loaded or downloaded. ``heldout`` images, which training
    never sees, measure the model at every epoch's end. ``shape_sizes`` is the
    range of the procedural shapes' size (`shapes`' ``sizes``), for
    ``dataset="shapes"`` only.

    Every field is checked when the config is made. An integer field takes
    an int, never a bool nor a float (``epochs=1.5`` and ``epochs=2.0`` alike);
    a number field takes a float or an int (``lr=1`` is 1.0), never a bool
    nor a string; ``data`` and ``perceptual_weights`` are paths as strings
    (``str(path)`` for a `~pathlib.Path`: a config is plain data). A value of
    the wrong type is a `TypeError`, one out of range a `ValueError`; each
    names the field, the value (and its type) and what was expected.

    Raises:
        TypeError: A field's value has the wrong type.
        ValueError: A field's value is out of range, or two fields disagree
            (``kl_lower`` must be below ``kl_healthy``, and every ``kl_table``
            ceiling, or without a table ``kl_target``, above ``kl_lower``, the
            KL floor).

    Examples:
        >>> TrainConfig(epochs=3).batch_size
        64
        >>> TrainConfig(lr=1).lr
        1.0
        >>> TrainConfig(seed="abc")
        Traceback (most recent call last):
        ...
        TypeError: TrainConfig.seed must be an integer, got 'abc' (str)
    """

    dataset: str = attrs.field(default="shapes", validator=_one_of("shapes", "digits", "folder"))
    data: str | None = attrs.field(default=None, validator=_optional_path("a folder of images"))
    images: int = _int_field(4096, _positive)
    shape_sizes: tuple[float, float] = attrs.field(
        default=SIZES, converter=_to_pair, validator=_size_range
    )
    heldout: int = _int_field(512, _positive)
    image_size: int = _int_field(32, _image_size)
    epochs: int = _int_field(9, _positive)
    batch_size: int = _int_field(64, _positive)
    lr: float = _float_field(3e-3, _positive)
    device: str = attrs.field(default="auto", validator=_one_of("auto", "cpu", "cuda"))
    seed: int = _int_field(0, _non_negative)
    core_dims: int = _int_field(8, _positive)
    detail_dims: int = _int_field(8, _positive)
    width: int = _int_field(16, _positive)
    disc_width: int = _int_field(16, _positive)
    calibration_steps: int = _int_field(32, _positive)
    kl_lower: float = _float_field(1.0, _positive)
    kl_healthy: float = _float_field(15.0, _positive)
    kl_steepness: float = _float_field(20.0, _positive)
    kl_hard_ceiling: bool = attrs.field(default=False, validator=_bool)
    kl_target: float = _float_field(20.0, _positive)
    kl_hold: int = _int_field(1, _positive)
    kl_squeeze_epochs: int = _int_field(5, _positive)
    kl_table: dict[int, float] | None = attrs.field(
        default=None, converter=_to_table, validator=_table
    )
    max_reject_rate: float = _float_field(0.15, _rate)
    tighten_from: int = _int_field(6, _positive)
    tighten_factor: float = _float_field(0.95, _fraction)
    tighten_min_group: float = _float_field(0.5, _rate)
    perceptual_weights: str | None = attrs.field(
        default=None, validator=_optional_path("a torchvision VGG16 weights file")
    )
    met: float = _float_field(0.25, _rate)
    swap_met: float = _float_field(0.5, _rate)
    kl_met: float = _float_field(0.5, _rate)
    disentangle_met: float = _float_field(0.01, _rate)
    gradient_clip: float | None = attrs.field(
        default=1.5, converter=_to_float, validator=_optional(_number, _positive)
    )
    recheck: str = attrs.field(default="posterior", validator=_one_of("full", "posterior"))
    refresh: int = _int_field(4, _positive)

    def __attrs_post_init__(self) -> None:
        if (self.dataset == "folder") != (self.data is not None):
            raise ValueError(
                "TrainConfig: dataset='folder' needs data (a folder of images), and data "
                f"needs dataset='folder'; got dataset={self.dataset!r}, data={self.data!r}"
            )
        if self.dataset != "shapes" and self.shape_sizes != SIZES:
            raise ValueError(
                f"TrainConfig.shape_sizes is for dataset='shapes', got dataset={self.dataset!r} "
                f"with shape_sizes={list(self.shape_sizes)!r}"
            )
        if not self.kl_lower < self.kl_healthy:
            raise ValueError(
                f"TrainConfig: kl_lower ({self.kl_lower}) must be below kl_healthy "
                f"({self.kl_healthy})"
            )
        # The KL ceiling bounds the KL goals from above and kl_lower from below: a squeeze
        # that ends at or under the floor leaves no valid ceiling (the scheduler's own
        # error names its internals, so the settings are checked here, by their keys).
        if self.kl_table is None and not self.kl_target > self.kl_lower:
            raise ValueError(
                f"TrainConfig.kl_target must be above the KL floor kl_lower = {self.kl_lower}, "
                f"got {self.kl_target}: the squeeze would take the KL ceiling to or under the "
                "floor; raise kl_target or lower kl_lower"
            )
        for epoch, ceiling in (self.kl_table or {}).items():
            if not ceiling > self.kl_lower:
                raise ValueError(
                    f"TrainConfig.kl_table[{epoch}] must be above the KL floor kl_lower = "
                    f"{self.kl_lower}, got {ceiling}: a ceiling at or under the floor leaves "
                    "the KL no room; raise it or lower kl_lower"
                )

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (None values are ignored: unset command-line options)."""
        return attrs.evolve(self, **{k: v for k, v in changes.items() if v is not None})


def load_config(path: str | Path) -> TrainConfig:
    """Read a TOML file of `TrainConfig` keys: a ``[train]`` table, or keys at the top level.

    A file with a ``[train]`` table holds nothing else at its top level: a key
    beside the table would be ignored, so it is an error.

    Raises:
        FileNotFoundError: The file does not exist.
        IsADirectoryError: ``path`` is a folder.
        ValueError: It is not valid TOML (nor text), holds keys beside its
            ``[train]`` table or a key `TrainConfig` does not have (named), or
            a value out of range (named).
        TypeError: A value of the wrong type (the key, the value and the
            expected type are named).
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
    file = Path(path)
    name = repr(str(file))
    if file.is_dir():
        raise IsADirectoryError(f"config file {name} is a folder, not a TOML file")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {name} does not exist") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"config file {name} is not a text file: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file {name} is not valid TOML: {error}") from None
    table: Any = data
    if "train" in data:
        table = data["train"]
        beside = sorted(set(data) - {"train"})
        if beside:
            raise ValueError(
                f"config file {name}: keys {beside} beside the [train] table would be "
                "ignored: move them into it (or drop the [train] header)"
            )
        if not isinstance(table, dict):
            raise TypeError(f"config file {name}: train must be a table, got {_kind(table)}")
    known = {f.name for f in attrs.fields(TrainConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(
            f"config file {name}: unknown keys {unknown}; the keys are {sorted(known)}"
        )
    try:
        return TrainConfig(**table)
    except TypeError as error:
        raise TypeError(f"config file {name}: {error}") from None
    except ValueError as error:
        raise ValueError(f"config file {name}: {error}") from None
