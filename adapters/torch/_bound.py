"""The deprecated ``bound(...)`` call form: a bound that is a float and may still be called."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NoReturn, cast

import torch

from constraint_sched import Readings

BoundTensor = Callable[..., torch.Tensor]
"""``bound_tensor(name=None, *, device=None, dtype=None)`` of a TorchScheduler or a callback."""


def bound_reading(readings: Readings, tensor: BoundTensor, owner: str) -> float:
    """What a ``bound`` property returns: a callable float for one scheduler, else a refusal.

    Args:
        readings: The schedulers read.
        tensor: The ``bound_tensor`` method that the deprecated call form returns.
        owner: The class name, for the deprecation warning and the refusal.
    """
    schedulers = readings.schedulers
    if len(schedulers) == 1:
        return _CallableBound(schedulers[0].bound, tensor, owner)
    try:
        readings.only("bound", "bound_of")
    except ValueError as error:
        message = str(error).replace(readings.reader, owner, 1)
    return cast(float, _NoSingleBound(tensor, owner, message))


def _deprecated_call(
    tensor: BoundTensor,
    owner: str,
    name: str | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    warnings.warn(
        f"{owner}.bound(...) is deprecated; use bound_tensor(...) for the tensor "
        "(bound is now a float property, and bound_of(name) the float of a spec)",
        DeprecationWarning,
        stacklevel=3,
    )
    return tensor(name, device=device, dtype=dtype)


class _CallableBound(float):
    """A bound as a float that may still be called as the deprecated ``bound(...)`` method.

    Everything a float does, it does (arithmetic gives plain floats); calling
    it warns and returns the tensor of ``bound_tensor``. Pickled or copied, it
    is a plain float.
    """

    __slots__ = ("_owner", "_tensor")
    _owner: str
    _tensor: BoundTensor

    def __new__(cls, value: float, tensor: BoundTensor, owner: str) -> _CallableBound:
        self = super().__new__(cls, value)
        self._tensor, self._owner = tensor, owner
        return self

    def __call__(
        self,
        name: str | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Deprecated: ``bound_tensor(name, device=device, dtype=dtype)``, with a warning."""
        return _deprecated_call(self._tensor, self._owner, name, device, dtype)

    def __reduce__(self) -> tuple[type[float], tuple[float]]:
        return float, (float(self),)


class _NoSingleBound:
    """The ``bound`` of several schedulers: callable the deprecated way, no number.

    Calling it warns and returns ``bound_tensor(...)``, as `_CallableBound`
    does; any use as a number raises the ValueError that says to use
    ``bound_of(name)``.
    """

    __slots__ = ("_message", "_owner", "_tensor")

    def __init__(self, tensor: BoundTensor, owner: str, message: str) -> None:
        self._tensor, self._owner, self._message = tensor, owner, message

    def __call__(
        self,
        name: str | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Deprecated: ``bound_tensor(name, device=device, dtype=dtype)``, with a warning."""
        return _deprecated_call(self._tensor, self._owner, name, device, dtype)

    def _refuse(self, *args: object) -> NoReturn:
        raise ValueError(self._message)

    __float__ = __int__ = __index__ = __bool__ = __format__ = __round__ = _refuse
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _refuse
    __pow__ = __rpow__ = __neg__ = __pos__ = __abs__ = _refuse
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{self._owner}.bound of several schedulers: use bound_of(name)>"
