"""The namespace the maths runs on: the array API for arrays, `host` for Python floats."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import array_api_compat

_NORMAL = statistics.NormalDist()


class HostNamespace:
    """The few array functions the maths needs, on Python floats (the fastest host path).

    The same calls as the array API's (``where``, ``clip``, ``log``...), so
    one function body runs on floats here and on numpy, torch or JAX arrays
    through `namespace`.

    Examples:
        >>> host.where(2.0 > 1.0, host.log(1.0), 5.0)
        0.0
    """

    __name__ = "constraint_sched.functional.host"

    @staticmethod
    def exp(x: float) -> float:
        """``e ** x``."""
        return math.exp(x)

    @staticmethod
    def log(x: float) -> float:
        """The natural logarithm."""
        return math.log(x)

    @staticmethod
    def sqrt(x: float) -> float:
        """The square root."""
        return math.sqrt(x)

    @staticmethod
    def abs(x: float) -> float:
        """The absolute value."""
        return abs(x)

    @staticmethod
    def isfinite(x: float) -> bool:
        """Whether ``x`` is neither infinite nor NaN."""
        return math.isfinite(x)

    @staticmethod
    def clip(x: float, min: Any = None, max: Any = None) -> float:
        """``x`` clipped to ``[min, max]`` (either may be None)."""
        if min is not None and x < min:
            x = min
        if max is not None and x > max:
            x = max
        return x

    @staticmethod
    def where(condition: Any, x: Any, y: Any) -> Any:
        """``x`` where ``condition`` holds, else ``y``."""
        return x if condition else y


host = HostNamespace()
"""The namespace of Python floats."""


def namespace(*values: Any) -> Any:
    """The namespace of ``values``: `host` for Python numbers, else the array API's.

    Args:
        values: Python numbers, or arrays of one library (numpy, torch, JAX...)
            mixed with numbers.

    Returns:
        `host`, or ``array_api_compat.array_namespace`` of the arrays.

    Examples:
        >>> import numpy as np
        >>> namespace(1.0, 2) is host, namespace(np.zeros(2), 1.0).__name__
        (True, 'array_api_compat.numpy')
    """
    arrays = [v for v in values if not isinstance(v, (int, float))]
    return array_api_compat.array_namespace(*arrays) if arrays else host


_NDTRI: dict[str, Callable[[Any], Any]] = {}


def register_ndtri(namespace_name: str, function: Callable[[Any], Any]) -> None:
    """Use ``function`` as the normal quantile (`ndtri`) for arrays of a namespace.

    The array API has no special functions; an adapter registers its
    framework's, so that the core never imports a framework: the torch
    adapter registers ``torch.special.ndtri`` for ``"array_api_compat.torch"``,
    the JAX adapter ``jax.scipy.special.ndtri`` for ``"jax.numpy"``.

    Args:
        namespace_name: The namespace's ``__name__``, as ``array_namespace`` returns it.
        function: The elementwise normal quantile of that namespace's arrays.
    """
    _NDTRI[namespace_name] = function


def ndtri(xp: Any, p: Any) -> Any:
    """The standard normal quantile of ``p`` in ``(0, 1)``, on ``xp``'s values.

    Python's ``statistics`` on floats and numpy arrays; the function an
    adapter registered (`register_ndtri`) for its framework's arrays.

    Raises:
        TypeError: Arrays of a namespace no adapter registered a quantile for.
    """
    if xp is host:
        return _NORMAL.inv_cdf(p)
    function = _NDTRI.get(getattr(xp, "__name__", ""))
    if function is not None:
        return function(p)
    if not array_api_compat.is_numpy_namespace(xp):
        raise TypeError(
            f"constraint_sched.functional.ndtri: no normal quantile for arrays of "
            f"{getattr(xp, '__name__', xp)!r}; register one with register_ndtri"
        )
    values = [_NORMAL.inv_cdf(float(v)) for v in xp.reshape(p, (-1,))]
    return xp.reshape(xp.asarray(values, dtype=p.dtype), p.shape)
