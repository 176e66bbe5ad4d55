"""The LBO-VAE trainer under ``torchrun``: two CPU ranks (gloo) train as one model.

The test starts ``python -m torch.distributed.run --standalone --nproc_per_node=2``
on this very file (see `_worker_main` at the bottom). Each rank runs the
``lbo-vae train`` command line (``main``, as ``python -m
constraint_sched.adapters.lbo_vae`` does) with a `Run` subclass that
records each step's batch and reject flag, and dumps what the rank ended with
(weights, schedulers, metrics) for the test to compare. In one step of epoch 2
rank 1 alone sees its check after the step fail (NaN reconstructions): both
ranks must roll that step back. The processes import the installed package and
inherit the environment as it is.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import torch.distributed as dist  # noqa: E402

if __name__ != "__main__" and not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

pytestmark = pytest.mark.slow  # three Python processes with torch: seconds

WORKER = Path(__file__).resolve()
WORLD = 2
TIMEOUT_S = 240  # the launcher and both ranks, on a busy 2-core machine
EPOCHS = 3
STEPS = 4  # per rank and epoch: 128 images, 8 batches of 16, half each
POISONED = 6  # rank 1's 6th step (epoch 2) fails its check after the step
CONFIG = """\
images = 128
batch_size = 16
image_size = 16
calibration_steps = 2
kl_squeeze_epochs = 2
kl_lower = 0.05
kl_healthy = 0.2
kl_target = 0.25
"""


def launch(out: Path) -> tuple[int, str]:
    """Run the two ranks under torchrun; the exit code and everything they printed."""
    env = dict(os.environ)
    loopback = {"linux": "lo", "darwin": "lo0"}.get(sys.platform)
    if loopback:
        env.setdefault("GLOO_SOCKET_IFNAME", loopback)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port of its own: no clash with a parallel test
        f"--nproc_per_node={WORLD}",
        "--monitor-interval=0.1",
        str(WORKER),
        str(out),
    ]
    try:
        done = subprocess.run(
            command,
            cwd=out,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        printed = (error.stdout or b"").decode(errors="replace")
        pytest.fail(f"the ranks did not finish in {TIMEOUT_S}s\n{printed}")
    return done.returncode, done.stdout.decode(errors="replace")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[dict[str, Any]]]:
    """The run's folder, what it printed, and each rank's dump, in rank order."""
    out = tmp_path_factory.mktemp("ddp")
    started = time.perf_counter()
    code, printed = launch(out)
    seconds = time.perf_counter() - started
    if code != 0:  # pytest.fail, not assert: the whole output is the diagnosis
        pytest.fail(f"torchrun exited with {code} after {seconds:.0f}s\n{printed}")
    dumps = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return out / "run", printed, dumps


def test_every_rank_trains_its_own_shard(ranks: tuple[Path, str, list[dict[str, Any]]]) -> None:
    _, _, dumps = ranks
    assert [d["rank"] for d in dumps] == [0, 1]
    assert all(d["world"] == WORLD for d in dumps)
    assert all(len(d["batches"]) == EPOCHS * STEPS for d in dumps)
    for epoch in range(EPOCHS):
        window = slice(epoch * STEPS, (epoch + 1) * STEPS)
        mine, theirs = (set(d["batches"][window]) for d in dumps)
        assert len(mine) == len(theirs) == STEPS
        assert not mine & theirs  # disjoint shards of the same shuffled order


def test_a_step_rejected_on_one_rank_is_rolled_back_on_all(
    ranks: tuple[Path, str, list[dict[str, Any]]],
) -> None:
    run, _, dumps = ranks
    flags = [d["rejected"] for d in dumps]
    assert flags[0] == flags[1]  # every rank rolled back the same steps
    assert flags[1][POISONED - 1]  # the poisoned one among them
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # Metrics count every rank's steps: the agreed rejection counts once per rank.
    assert [r["steps"] for r in rows] == [WORLD * STEPS] * EPOCHS
    assert [r["rejects"] for r in rows] == [
        WORLD * sum(flags[0][e * STEPS : (e + 1) * STEPS]) for e in range(EPOCHS)
    ]
    assert all(math.isfinite(r["loss"]) for r in rows)


def test_the_ranks_end_with_the_same_weights_and_bounds(
    ranks: tuple[Path, str, list[dict[str, Any]]],
) -> None:
    _, _, (first, second) = ranks
    for part in ("vae", "disc"):
        assert first[part].keys() == second[part].keys()
        for name, tensor in first[part].items():
            assert torch.equal(tensor, second[part][name]), f"{part}.{name} differs"
            assert torch.isfinite(tensor).all(), f"{part}.{name} is not finite"
    assert first["schedulers"] == second["schedulers"]
    assert first["bounds"] == second["bounds"]
    assert [r["kl_phase"] for r in first["history"]] == ["DISCOVERY", "HOLD", "SQUEEZE"]
    ceilings = [r["kl_ceiling"] for r in first["history"]]
    assert ceilings[0] is None  # discovered,
    assert ceilings[2] < ceilings[1]  # held, squeezed
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in d["history"]]
             for d in (first, second)]  # fmt: skip
    assert strip[0] == strip[1]  # the global metrics, on every rank


def test_rank_0_alone_prints_and_writes_what_every_rank_holds(
    ranks: tuple[Path, str, list[dict[str, Any]]],
) -> None:
    run, printed, (_, second) = ranks
    assert printed.count("lbo-vae: shapes (128 images of 16px)") == 1
    assert "on each of 2 ranks" in printed
    assert printed.count("epoch  3  KL SQUEEZE") == 1
    assert printed.count("replicas: the 2 ranks hold the same weights and bounds") == 1
    assert not list(run.glob("*.tmp"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["kl_phase"] for r in rows] == [r["kl_phase"] for r in second["history"]]
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == EPOCHS + 1
    assert all(torch.equal(t, second["vae"][k]) for k, t in saved["vae"].items())
    assert saved["schedulers"] == second["schedulers"]


# -- the worker: one rank, started by torchrun -------------------------------------------


def _worker_main(out: Path) -> None:
    import attrs

    from constraint_sched.adapters.lbo_vae import _cli, _train

    me = int(os.environ["RANK"])
    runs: list[Any] = []
    batches: list[str] = []
    rejected: list[bool] = []

    class Recorded(_train.Run):
        """The real run; each step's batch and reject flag recorded, one check poisoned."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            runs.append(self)
            stepper = self.stepper
            real_step, real_inputs, real_check = stepper.__call__, stepper.inputs, stepper.check

            def inputs(*a: Any) -> Any:
                found = real_inputs(*a)
                if me == 1 and len(batches) == POISONED and not torch.is_grad_enabled():
                    return attrs.evolve(found, recon=torch.full_like(found.recon, math.nan))
                return found  # a calibration step's check after the step runs without grad

            def check(*a: Any) -> Any:
                found, inputs = real_check(*a)
                if me == 1 and len(batches) == POISONED:  # the check after the step alone
                    inputs = attrs.evolve(inputs, mu=torch.full_like(inputs.mu, math.nan))
                return found, inputs

            class Step:
                def __getattr__(self, name: str) -> Any:
                    return getattr(stepper, name)

                def __call__(self, x: Any) -> Any:
                    batches.append(hashlib.sha1(x.numpy().tobytes()).hexdigest())
                    result = real_step(x)
                    rejected.append(bool(result.rejected))
                    return result

            stepper.inputs = inputs  # type: ignore[method-assign]
            stepper.check = check  # type: ignore[method-assign]
            self.stepper = Step()  # type: ignore[assignment]

    _train.Run = Recorded  # type: ignore[misc]
    (out / "run.toml").write_text(CONFIG)
    code = _cli.main(["train", "--config", str(out / "run.toml"), "--epochs", str(EPOCHS),
                      "--device", "cpu", "--out", str(out / "run"), "--no-progress"])  # fmt: skip
    if code != 0:
        raise SystemExit(code)
    (run,) = runs
    torch.save(
        {
            "rank": run.rank,
            "world": run.world,
            "batches": batches,
            "rejected": rejected,
            "vae": run.vae.state_dict(),
            "disc": run.disc.state_dict(),
            "schedulers": run.schedulers.state_dict(),
            "bounds": {s.name: (s.phase.name, s.bound) for s in run.collection},
            "history": run.history,
        },
        out / f"rank{me}.pt",
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    _worker_main(Path(sys.argv[1]))
