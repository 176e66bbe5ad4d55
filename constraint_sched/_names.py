"""Looking up a spec or scheduler by name, with the error every owner raises alike."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def find(index: Mapping[str, T], name: Any, owner: str, what: str, names: Iterable[str]) -> T:
    """``index[name]``, or a KeyError saying ``owner`` has no ``what`` ``name`` (with ``names``).

    An unhashable ``name`` is a missing one too.

    Examples:
        >>> find({"kl": 0}, "kl", "ConstraintScheduler 'kl'", "spec", ["kl"])
        0
    """
    try:
        return index[name]
    except (KeyError, TypeError):
        raise KeyError(f"{owner} has no {what} {name!r}; it has {list(names)}") from None
