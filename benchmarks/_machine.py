"""What the benchmarks share: the machine they report, their common options, their JSON record.

The scripts in this folder import it as ``import _machine``: run as
``python benchmarks/<script>.py``, a script's folder is on ``sys.path``. Torch
is imported only inside the functions that the torch benchmarks call, so that
``observe_overhead.py`` (the core alone) runs without it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from constraint_sched import __version__

if TYPE_CHECKING:
    import torch

THREADS_HELP = "torch's CPU threads (default: torch's; 1 on a CPU that other work shares)"
"""The ``--threads`` help of the trainer's benchmarks."""


def cpu_model() -> str:
    """The processor's model name, from /proc/cpuinfo where there is one.

    Returns:
        ``"<model name> (<architecture>)"``, else what `platform` knows.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device | None = None) -> dict[str, Any]:
    """The interpreter, libraries and machine the figures come from.

    Args:
        device: The torch device the figures are taken on; None for the core
            alone (no torch entries, and torch is not imported).

    Returns:
        The versions, the processor and the platform; with ``device``, also
        torch's version and threads and the device's name and accelerator.
    """
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "constraint_sched": __version__,
        "processor": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    if device is None:
        return info
    import torch

    cuda = device.type == "cuda"
    return {
        **info,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_model(),
        "accelerator": f"CUDA {torch.version.cuda}" if cuda else None,
    }


def print_machine(info: dict[str, Any]) -> None:
    """The header's ``machine:`` line, and its ``device:`` line when `describe` had a device.

    Args:
        info: What `describe` returned.
    """
    print(f"  machine: {info['processor']}, {info['cpu_count']} CPUs, {info['platform']}")
    if "device" in info:
        extra = f", {info['accelerator']}" if info["accelerator"] else ""
        print(
            f"  device: {info['device']} ({info['device_name']}{extra}), "
            f"torch threads: {info['torch_threads']}"
        )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--device auto|cpu|cuda`` (default ``auto``); `pick_device` reads it."""
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def add_threads_argument(parser: argparse.ArgumentParser, text: str = THREADS_HELP) -> None:
    """Add ``--threads T``; `set_threads` applies it.

    Args:
        parser: The script's parser.
        text: The option's help text.
    """
    parser.add_argument("--threads", type=int, help=text)


def add_quick_and_json(parser: argparse.ArgumentParser, quick: str, what: str = "figures") -> None:
    """Add ``--quick`` (a smoke test) and ``--json PATH`` (where to write the record).

    Args:
        parser: The script's parser.
        quick: ``--quick``'s help text.
        what: What ``--json`` writes, for its help text.
    """
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--json", type=Path, metavar="PATH", help=f"also write the {what} here")


def add_pool_arguments(parser: argparse.ArgumentParser, quick: str) -> None:
    """Add what a script of many training runs takes: ``--jobs``, ``--threads``, the reports.

    ``--jobs J`` (runs at a time, one thread each), `add_threads_argument`,
    `add_quick_and_json` and ``--md PATH``.

    Args:
        parser: The script's parser.
        quick: ``--quick``'s help text.
    """
    parser.add_argument(
        "--jobs", type=int, default=2, help="runs at a time, one thread each (default 2)"
    )
    add_threads_argument(parser)
    add_quick_and_json(parser, quick, what="figures")
    parser.add_argument("--md", type=Path, metavar="PATH", help="also write the markdown here")


def set_threads(threads: int | None, parser: argparse.ArgumentParser) -> None:
    """Apply ``--threads``: torch's intra-op threads; None leaves torch's own choice.

    Args:
        threads: The option's value.
        parser: The script's parser, to report a value below 1.
    """
    if threads is None:
        return
    if threads < 1:
        parser.error("--threads must be at least 1")
    import torch

    torch.set_num_threads(threads)


def pick_device(choice: str, parser: argparse.ArgumentParser) -> str:
    """The device ``--device`` names; ``auto`` is CUDA when there is one.

    Args:
        choice: ``auto``, ``cpu`` or ``cuda``.
        parser: The script's parser, to report ``cuda`` where there is none.

    Returns:
        ``"cpu"`` or ``"cuda"``.
    """
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return choice


def write_json(
    path: Path, record: Any, what: str = "figures", default: Callable[[Any], Any] | None = None
) -> None:
    """Write ``record`` to ``path`` as indented JSON (folders made), and say so.

    Args:
        path: The ``--json`` file.
        record: What to write.
        what: What the closing line calls it (``figures written to PATH``).
        default: `json.dumps`'s ``default`` for values JSON has no type for.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=default) + "\n", encoding="utf-8")
    print(f"\n{what} written to {path}")


@contextlib.contextmanager
def output(folder: Path | None, prefix: str) -> Iterator[Path]:
    """``folder`` (made, and kept), or a temporary folder (deleted) for the runs' outputs.

    Args:
        folder: The ``--out`` folder, or None.
        prefix: The temporary folder's name prefix, e.g. ``"lr-sweep-"``.

    Yields:
        The folder to write the runs into.
    """
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        yield Path(scratch)
