"""The one reading of a term's inputs: a step's value and its main loss, checked."""

from __future__ import annotations

import math
from typing import Any, Literal

import array_api_compat
import numpy as np

Reduction = Literal["none", "mean"]
"""How a term reads its value: ``"none"``, per-example values (their mean is
taken); ``"mean"``, a number that is already the per-example mean.
(`constraint_sched.functional.Reduction` is another thing: how a statistic of
the books combines.)"""

REQUIRED: Any = object()
"""The default of a required ``main=`` argument, so that leaving it out says how to pass it."""


def _real_array(value: Any, owner: str, what: str) -> np.ndarray[Any, Any]:
    """``value`` as a float64 array; a TypeError for anything that is not a real number."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):  # pragma: no cover - numpy accepts almost anything
        array = np.asarray(None)
    if array.dtype.kind not in "iuf":
        kind = {"b": "bool", "c": "complex", "U": "str", "S": "bytes"}.get(
            array.dtype.kind, type(value).__name__
        )
        raise TypeError(
            f"{owner}: {what} must be a real number or an array of real numbers, got {kind} "
            f"({value!r:.60})"
        )
    return array.astype(np.float64)


def _dtype_kind(dtype: Any) -> str:
    """Numpy's kind letter of any framework's dtype: ``b``, ``i``, ``u``, ``f``, ``c`` or ``O``."""
    try:
        return str(np.dtype(dtype).kind)
    except TypeError:  # torch's dtypes are not numpy's
        name = str(dtype).rsplit(".", 1)[-1]
        if name == "bool":
            return "b"
        for prefix, kind in (("complex", "c"), ("float", "f"), ("bfloat", "f"), ("half", "f")):
            if name.startswith(prefix):
                return kind
        return "i" if "int" in name else "O"


def real_number(value: Any, what: str, also: str = "") -> float:
    """One observation as a float: the one input rule of every ``observe``.

    Real numbers only: Python and numpy ints and floats, and one-element
    arrays or tensors of a real dtype. Strings, bools, complex numbers,
    None and object arrays are refused, though ``float()`` takes some of
    them. NaN and infinities pass (the non-finite policy decides).

    Args:
        value: The value.
        what: Says whose value it is, for the message.
        also: What else the caller takes, for the message (e.g. ``" or a tensor"``).

    Raises:
        TypeError: Not a real number; the message names ``what`` and the type.

    Examples:
        >>> real_number(3, "x"), real_number(np.float32(0.5), "x")
        (3.0, 0.5)
        >>> real_number("5", "observation of 'kl'")
        Traceback (most recent call last):
        TypeError: observation of 'kl' must be a number, got '5' (str, not a real number)
    """
    kind = type(value)
    if kind is float or kind is int:
        return float(value)
    dtype = getattr(value, "dtype", None)
    refused = isinstance(value, (str, bytes, bool, complex, np.bool_)) or value is None
    if dtype is not None and _dtype_kind(dtype) not in "iuf":
        refused = True
    if not refused:
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    shown = type(value).__name__
    if dtype is not None and str(dtype) != shown:
        shown = f"{shown} of {dtype}"
    raise TypeError(
        f"{what} must be a number{also}, got {value!r:.60} ({shown}, not a real number)"
    )


def per_example_mean(value: Any, reduction: Reduction, owner: str) -> float:
    """The value of one step as the mean per example, checked against its declared form.

    A 1-d array holds one value per example (its mean is taken); a number or
    a 0-d array is accepted only with ``reduction="mean"`` (the caller says it
    is a mean already). Bools, strings and complex numbers are refused.
    """
    x: Any
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        shape: tuple[int, ...] = ()
        x = value
    else:
        array = _real_array(value, owner, "the value")
        shape = array.shape
        if array.ndim == 1 and array.size > 0:
            return float(array.mean())
        if array.ndim > 1 or array.size == 0:
            raise ValueError(
                f"{owner}: expected one value per example, shape (batch,), got shape {shape}; "
                "sum a per-dimension KL over its dimensions first (kl.sum(dim=-1))"
            )
        x = array
    if reduction != "mean":
        raise ValueError(
            f"{owner}: got a single number (shape {shape}) where per-example values, shape "
            "(batch,), are expected. Pass the per-example values (e.g. kl.sum(dim=-1) before "
            "any reduction over the batch); if the number is already the batch mean per "
            "example, build the term with reduction='mean'. A value summed over the batch "
            "must be divided by the batch size first: the target is per example."
        )
    return float(x)


def main_loss(main: Any, owner: str) -> float:
    """The step's main loss as a float: a number, a 0-d array, or per-example losses (mean).

    Raises:
        TypeError: ``main`` was not passed, or is not a real number.
        ValueError: An empty or multi-dimensional array.
    """
    if main is REQUIRED:
        raise TypeError(
            f"{owner}: pass the step's main loss too, term(value, main=loss): the term sets "
            "the value's weight relative to the main loss's size, which makes it work at any "
            "loss scale (a per-pixel mean or a per-example sum alike)"
        )
    if isinstance(main, (int, float)) and not isinstance(main, bool):
        return float(main)
    array = _real_array(main, owner, "main")
    if array.ndim > 1 or array.size == 0:
        raise ValueError(
            f"{owner}: main must be the step's loss, a number or per-example losses of shape "
            f"(batch,), got shape {array.shape}"
        )
    return float(array.mean())


def _kind(array: Any) -> str:
    return "tensor" if type(array).__module__.startswith("torch") else "array"


def array_value(value: Any, reduction: Reduction, owner: str) -> Any:
    """A step's value per example from an array of any namespace, without reading it on the host.

    The mean of per-example values (shape ``(batch,)``), or a 0-d array with
    ``reduction="mean"``, as a 0-d array of the value's own namespace.

    Raises:
        TypeError: Not a real floating array (bools, ints and complex numbers are refused).
        ValueError: The wrong shape (the message says which shape is expected and why).
    """
    xp = array_api_compat.array_namespace(value)
    if not xp.isdtype(value.dtype, "real floating"):
        raise TypeError(
            f"{owner}: the value must be a real floating {_kind(value)}, got dtype {value.dtype}"
        )
    size = math.prod(value.shape)
    if value.ndim == 1 and size > 0:
        return xp.mean(value)
    if value.ndim > 1 or size == 0:
        raise ValueError(
            f"{owner}: expected one value per example, shape (batch,), got shape "
            f"{tuple(value.shape)}; sum a per-dimension KL over its dimensions first "
            "(kl.sum(dim=-1))"
        )
    if reduction != "mean":
        per_example_mean(0.0, "none", owner)  # raises the message that says what to pass
    return value


def array_main(main: Any, owner: str) -> Any:
    """A step's main loss from an array of any namespace, as a 0-d array (a mean if per example).

    Raises:
        TypeError: Not a real floating array.
        ValueError: An empty or multi-dimensional array.
    """
    xp = array_api_compat.array_namespace(main)
    if not xp.isdtype(main.dtype, "real floating"):
        raise TypeError(
            f"{owner}: main must be a real floating {_kind(main)} with values, got dtype "
            f"{main.dtype}"
        )
    if main.ndim > 1 or math.prod(main.shape) == 0:
        raise ValueError(
            f"{owner}: main must be the step's loss, a 0-d {_kind(main)} or per-example losses "
            f"of shape (batch,), got shape {tuple(main.shape)}"
        )
    return xp.mean(main) if main.ndim == 1 else main
