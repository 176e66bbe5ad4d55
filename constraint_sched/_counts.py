"""The one reading of a step count: an int, a bool, or a numpy bool or integer scalar."""

from __future__ import annotations

import numpy as np


def check_count(count: object, where: str) -> int:
    """``count`` as an int >= 0: from an int, a bool or a numpy bool or integer scalar.

    Raises:
        TypeError: ``count`` is of another type; the message names ``where`` and the type.
        ValueError: ``count`` is negative.
    """
    if type(count) is int:  # the common case first
        value = count
    elif isinstance(count, (int, np.bool_, np.integer)) or (  # bool is an int
        isinstance(count, np.ndarray) and count.shape == () and count.dtype.kind in "biu"
    ):
        value = int(count)
    else:
        kind = type(count).__name__
        if isinstance(count, np.ndarray):
            kind = f"numpy array of dtype {count.dtype} and shape {count.shape}"
        raise TypeError(
            f"{where}: count must be an int >= 0, a bool, or a numpy bool or integer scalar, "
            f"got {kind} {count!r}"
        )
    if value < 0:
        raise ValueError(f"{where}: count must be an int >= 0, got {count!r}")
    return value
