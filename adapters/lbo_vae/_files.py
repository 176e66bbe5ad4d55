"""What a run writes to its ``--out`` folder: the file names, and the tag of its checkpoints.

One place for the names that the trainer (`Run` writes them), the plots (they
read them back) and the command line (``--overwrite``, ``report``) share. It
imports nothing, so that ``lbo-vae report`` stays light.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "METRICS",
]

METRICS: Final = "metrics.jsonl"
"""The run's history, one JSON row per finished epoch."""

CHECKPOINT: Final = "checkpoint.pt"
"""The run's checkpoint, rewritten at the end of every epoch (``--resume`` reads it)."""

CHECKPOINT_FORMAT: Final = "constraint_sched.lbo_vae.Run"
"""The ``"format"`` entry of every checkpoint.

Stored in the file: it is a tag, not an import path, and never changes (the
trainer's package moved, the tag did not), so that every checkpoint written
so far still loads.
"""

CHECKPOINT_VERSION: Final = 1
"""The ``"version"`` entry of every checkpoint: the layout of its parts."""
