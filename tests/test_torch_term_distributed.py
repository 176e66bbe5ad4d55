"""TorchConstraintTerm under torch.distributed: every rank applies the same weight at every step.

Two fresh Python processes run this file as a script (`_worker` at the bottom),
rank 0 and rank 1 of a gloo process group on the loopback interface. The ranks
see different KLs and different main losses; each writes the weight its term
applied at every step to a JSON file, and the test compares the ranks.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import torch.distributed as dist  # noqa: E402

from constraint_sched import Relative  # noqa: E402
from constraint_sched.adapters.torch import TorchConstraintTerm  # noqa: E402

if __name__ != "__main__" and not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

EPOCHS, STEPS = 4, 25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(tmp_path: Path, accumulate: str) -> list[dict[str, list[float]]]:
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": "2",
        "OUT": str(tmp_path),
        "ACCUMULATE": accumulate,
    }
    procs = [
        subprocess.Popen(
            [sys.executable, __file__],
            env={**env, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in range(2)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out.decode()
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("accumulate", ["auto", "device"])
def test_both_ranks_apply_the_same_weight_at_every_step(tmp_path: Path, accumulate: str) -> None:
    rank0, rank1 = _run(tmp_path, accumulate)
    assert rank0["kl"] != rank1["kl"]  # the ranks saw different values
    assert rank0["weights"] == rank1["weights"]  # ... and applied the same weights, exactly
    assert rank0["bounds"] == rank1["bounds"]
    assert max(rank0["weights"]) > 0.0  # the weight moved once the bound was found
    assert len(set(rank0["weights"])) > EPOCHS  # it followed the (agreed) values step by step


def _worker() -> None:
    accumulate = os.environ["ACCUMULATE"]
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank = dist.get_rank()
    term = TorchConstraintTerm(
        "kl",
        target=Relative(0.5),
        squeeze_epochs=2,
        echo=False,
        accumulate=accumulate,  # type: ignore[arg-type]
    )
    g = torch.Generator().manual_seed(rank)
    level = 10.0 + 4.0 * rank  # rank 1's KL runs higher than rank 0's
    seen: dict[str, list[float]] = {"kl": [], "weights": [], "bounds": []}
    for _ in range(EPOCHS):
        for _ in range(STEPS):
            w = term.weight
            level += (12.0 + 4.0 * rank) / (1.0 + w) ** 0.7 - level
            kl = level + 0.5 * torch.randn(8, generator=g, dtype=torch.float64)
            main = torch.tensor(2.0 + rank, dtype=torch.float64)
            term(kl, main=main)
            seen["kl"].append(float(kl.mean()))
            seen["weights"].append(term.weight)
        term.epoch_end()
        seen["bounds"].append(term.bound if math.isfinite(term.bound) else -1.0)
    Path(os.environ["OUT"], f"rank{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


if __name__ == "__main__":
    _worker()
