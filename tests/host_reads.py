"""A context in which reading any tensor's value on the host fails: the no-sync proof on CPU."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import torch

# Every way a tensor's value reaches the host; on an accelerator each one waits for it.
HOST_READS = (
    "item",
    "tolist",
    "cpu",
    "numpy",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "__complex__",
    "__array__",
)


@contextlib.contextmanager
def host_reads_forbidden() -> Iterator[None]:
    """While inside, reading any tensor's value on the host raises AssertionError."""

    def forbidden(name: str) -> Callable[..., Any]:
        def read(self: Any, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"host synchronisation: Tensor.{name} was called")

        return read

    with contextlib.ExitStack() as stack:
        for name in HOST_READS:
            stack.enter_context(mock.patch.object(torch.Tensor, name, forbidden(name)))
        yield
