"""Plain-data encoding of configurations and states, and checked reading of them back.

State dicts are strict JSON: non-finite floats are written as the strings
``"inf"``, ``"-inf"`` and ``"nan"``. Every read names the path of the field
it could not accept.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

import attrs

FORMAT_VERSION = 1
"""The version of the state-dict format this release writes and reads."""

_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def encode_float(value: float) -> float | str:
    """A float as strict-JSON data: finite floats stay, others become strings."""
    if math.isfinite(value):
        return float(value)
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def to_plain(value: Any) -> Any:
    """Configuration objects (attrs classes, enums, tuples) as JSON-ready data."""
    if attrs.has(type(value)):
        return {f.name: to_plain(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, float):
        return encode_float(value)
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


def first_difference(saved: Any, here: Any, path: str) -> str | None:
    """The path of the first place where two plain structures differ, or None."""
    if isinstance(saved, Mapping) and isinstance(here, Mapping):
        for key in sorted(set(saved) | set(here), key=str):
            if key not in saved or key not in here:
                return f"{path}.{key}"
            found = first_difference(saved[key], here[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(saved, list) and isinstance(here, list):
        if len(saved) != len(here):
            return path
        for i, (a, b) in enumerate(zip(saved, here, strict=True)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    if type(saved) is not type(here) or saved != here:
        return path
    return None


def resolve(data: Any, path: str) -> Any:
    """The value at a dotted/indexed ``path`` made by `first_difference`, or ``<missing>``."""
    current = data
    for part in path.replace("[", ".[").split(".")[1:]:
        try:
            current = current[int(part[1:-1])] if part.startswith("[") else current[part]
        except (KeyError, IndexError, TypeError, ValueError):
            return "<missing>"
    return current


class Reader:
    """Reads typed fields out of untrusted plain data, naming the path on failure.

    Examples:
        >>> Reader({"epoch": 3}, "state").integer("epoch", least=1)
        3
    """

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a mapping, got {type(data).__name__}")
        self.data = data
        self.path = path

    def _get(self, key: str) -> Any:
        if key not in self.data:
            raise ValueError(f"{self.path}: missing key {key!r}")
        return self.data[key]

    def integer(self, key: str, *, least: int = 0) -> int:
        """An int >= ``least``."""
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{self.path}.{key}: expected an int >= {least}, got {value!r}")
        return value

    def flag(self, key: str) -> bool:
        """A bool."""
        value = self._get(key)
        if not isinstance(value, bool):
            raise ValueError(f"{self.path}.{key}: expected true or false, got {value!r}")
        return value

    def number(self, key: str, *, allow_nan: bool = False) -> float:
        """A float, possibly encoded as ``"inf"``/``"-inf"``."""
        return decode_float(self._get(key), f"{self.path}.{key}", allow_nan=allow_nan)

    def optional_number(self, key: str) -> float | None:
        """A float or None."""
        value = self._get(key)
        return None if value is None else decode_float(value, f"{self.path}.{key}")

    def member(self, key: str, kind: type[enum.Enum]) -> Any:
        """A member of ``kind``, by name."""
        value = self._get(key)
        if not isinstance(value, str) or value not in kind.__members__:
            names = ", ".join(kind.__members__)
            raise ValueError(f"{self.path}.{key}: expected one of {names}, got {value!r}")
        return kind[value]

    def items(self, key: str, length: int | None = None) -> list[Any]:
        """A list, of exactly ``length`` items if given."""
        value = self._get(key)
        if not isinstance(value, list) or (length is not None and len(value) != length):
            size = f" of {length} items" if length is not None else ""
            raise ValueError(f"{self.path}.{key}: expected a list{size}, got {value!r}")
        return value

    def numbers(self, key: str, length: int | None = None) -> list[float]:
        """A list of floats."""
        return [
            decode_float(v, f"{self.path}.{key}[{i}]")
            for i, v in enumerate(self.items(key, length))
        ]

    def integers(self, key: str, length: int | None = None, *, least: int = 0) -> list[int]:
        """A list of ints >= ``least``."""
        values = self.items(key, length)
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(
                    f"{self.path}.{key}[{i}]: expected an int >= {least}, got {value!r}"
                )
        return values

    def child(self, key: str) -> Reader:
        """A reader of the mapping at ``key``."""
        return Reader(self._get(key), f"{self.path}.{key}")


def decode_float(value: Any, path: str, *, allow_nan: bool = False) -> float:
    """A number or an encoded non-finite string as a float; ValueError naming ``path``."""
    if isinstance(value, str) and value in _NONFINITE:
        result = _NONFINITE[value]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    else:
        raise ValueError(f"{path}: expected a number, got {value!r}")
    if math.isnan(result) and not allow_nan:
        raise ValueError(f"{path}: NaN is not a valid value here")
    return result


def check_header(data: Any, fmt: str, path: str) -> None:
    """Check a state dict's format name and version."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping from state_dict(), got {type(data).__name__}")
    found = data.get("format")
    if found != fmt:
        raise ValueError(f"{path}: not a {fmt} state dict (format={found!r})")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{path}.version: expected an int, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path}.version: saved by a newer constraint_sched (format version {version}); "
            f"this release reads up to version {FORMAT_VERSION}"
        )
    if version < 1:
        raise ValueError(f"{path}.version: unknown format version {version}")
