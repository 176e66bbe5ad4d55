"""SameNoise: re-run a model on the noise it drew before, leaving the random stream alone."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

__all__ = ["SameNoise"]

Device = torch.device | str | int
"""A device: a ``torch.device``, its name (``"cuda"``, ``"cuda:1"``) or a CUDA index."""


class SameNoise:
    """Record the random state a model's ``forward`` starts from, and replay it later.

    For "the same batch, same noise" re-evaluation after a step (is the new
    model better on exactly what the old one saw?) when the model draws its
    own noise, for example ``torch.randn_like`` inside ``forward``, rather than
    taking it as an argument. `record` notes the state of the default
    generators when its block starts (the block itself runs as usual and
    advances them); `replay` sets them to the noted state for its block, so
    the model draws the same noise, and restores afterwards the state they
    had before `replay`: the main random stream goes on exactly as if the
    replay had not happened.

    The generators covered are the CPU's, always, and the default generator
    of each CUDA device given. A CUDA generator's state lives on the host,
    so recording and replaying never synchronise with the device. Explicit
    ``torch.Generator`` objects are not covered (a model that takes one can
    be handed the same one again); nor is Python's or numpy's random module.
    Replaying gives the same noise when the model makes the same random
    calls in the same order, on inputs of the same shapes.

    Args:
        devices: The CUDA device whose generator is covered too (``"cuda"``,
            ``"cuda:1"``, a ``torch.device``, an index), or an iterable of
            them; None or CPU devices: the CPU generator only. A bare
            ``"cuda"`` means the current CUDA device at construction.

    Raises:
        TypeError: A device that is neither a ``torch.device``, a string nor an int.
        ValueError: A device that is neither the CPU nor a CUDA device (a
            string torch does not read as a device too, such as ``"tpu"``, and
            a negative index), or a CUDA device while CUDA is not available or
            whose index torch does not see.

    Examples:
        >>> import torch
        >>> from constraint_sched.adapters.torch import SameNoise
        >>> class Noisy(torch.nn.Module):  # draws its own noise, as a VAE's sampling does
        ...     def forward(self, x):
        ...         return x + torch.randn_like(x)
        >>> model, x = Noisy(), torch.zeros(3)
        >>> noise = SameNoise()  # the CPU generator; SameNoise("cuda") adds the GPU's
        >>> _ = torch.manual_seed(0)
        >>> with noise.record():
        ...     before = model(x)
        >>> with noise.replay():  # e.g. after an optimizer step: the same noise again
        ...     again = model(x)
        >>> torch.equal(before, again)
        True
        >>> after = torch.rand(2)  # the stream goes on as if the replay had not happened
        >>> _ = torch.manual_seed(0); _ = model(x)
        >>> torch.equal(after, torch.rand(2))
        True
    """

    def __init__(self, devices: Device | Iterable[Device] | None = None) -> None:
        given: list[Device]
        if devices is None:
            given = []
        elif isinstance(devices, Iterable) and not isinstance(devices, str):
            given = list(devices)
        else:
            given = [devices]  # one device (checked below)
        cuda: list[int] = []
        for device in given:
            if isinstance(device, bool) or not isinstance(device, (torch.device, str, int)):
                raise TypeError(
                    "SameNoise: devices must be a torch.device, a str or an int (or an "
                    f"iterable of them), got {type(device).__name__} {device!r}"
                )
            dev = _device(device)
            if dev.type == "cpu":
                continue
            if dev.type != "cuda":
                raise ValueError(
                    f"SameNoise: devices must be the CPU or CUDA devices, got {str(dev)!r}"
                )
            if not torch.cuda.is_available():
                raise ValueError(
                    f"SameNoise: devices names {str(dev)!r}, but CUDA is not available"
                )
            index = torch.cuda.current_device() if dev.index is None else dev.index
            count = torch.cuda.device_count()
            if index >= count:
                raise ValueError(
                    f"SameNoise: devices names {str(dev)!r}, but torch sees {count} CUDA "
                    f"device{'' if count == 1 else 's'} (indices 0 to {count - 1})"
                )
            if index not in cuda:
                cuda.append(index)
        self._cuda = tuple(cuda)
        self._cpu_state: torch.Tensor | None = None
        self._cuda_states: list[torch.Tensor] = []

    @property
    def devices(self) -> tuple[torch.device, ...]:
        """The devices whose default generator is covered: the CPU, then the CUDA ones."""
        return (torch.device("cpu"), *(torch.device("cuda", i) for i in self._cuda))

    @property
    def recorded(self) -> bool:
        """Whether `record` has been entered, so that there is a state to replay."""
        return self._cpu_state is not None

    @contextmanager
    def record(self) -> Iterator[None]:
        """Note the generators' state now; the block runs as usual.

        Each `record` replaces the state noted by the one before.
        """
        self._cpu_state, self._cuda_states = self._states()
        yield

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block from the recorded state, then put back the state before it.

        The generators are restored also when the block raises. Replaying
        again replays the same recorded state.

        Raises:
            RuntimeError: `record` has not been entered yet.
        """
        if self._cpu_state is None:
            raise RuntimeError(
                "SameNoise.replay() called before record(): there is no recorded noise to "
                "replay; run the first evaluation under `with noise.record():`"
            )
        before = self._states()
        self._set(self._cpu_state, self._cuda_states)
        try:
            yield
        finally:
            self._set(*before)

    def _states(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return torch.get_rng_state(), [torch.cuda.get_rng_state(i) for i in self._cuda]

    def _set(self, cpu: torch.Tensor, cuda: list[torch.Tensor]) -> None:
        torch.set_rng_state(cpu)
        for index, state in zip(self._cuda, cuda, strict=True):
            torch.cuda.set_rng_state(state, index)

    def __repr__(self) -> str:
        names = [str(d) for d in self.devices]
        return f"SameNoise(devices={names}, recorded={self.recorded})"


def _device(device: torch.device | str | int) -> torch.device:
    """``device`` as a ``torch.device``; an int is a CUDA index.

    Raises:
        ValueError: A string torch does not read as a device (``"tpu"``,
            ``"cuda:x"``, ``""``) or a negative index; the message names
            ``devices`` and the value, where torch's own error is a
            ``RuntimeError``.
    """
    if isinstance(device, torch.device):
        return device
    try:
        return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    except RuntimeError as error:
        raise ValueError(
            "SameNoise: devices must be the CPU or CUDA devices ('cpu', 'cuda', 'cuda:1', "
            f"an index of 0 or more), got {device!r}, which torch reads as no device ({error})"
        ) from None
