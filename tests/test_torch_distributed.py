"""TorchScheduler under torch.distributed: two CPU processes (gloo) end every epoch agreeing.

Each run starts two fresh Python processes that execute this very file as a
script (see `_worker_main` at the bottom): rank 0 and rank 1 of a gloo process
group on the loopback interface. The ranks observe different values, call
``advance_epoch`` together and write what they saw to JSON files; the tests
compare the ranks with each other and with a single-process core scheduler fed
the union of both ranks' steps. The processes import the installed package and
inherit the environment as it is: nothing relies on the source tree.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import torch.distributed as dist  # noqa: E402

from constraint_sched import (  # noqa: E402
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    Event,
    SchedulerCollection,
    SqueezeSchedule,
    Tally,
)
from constraint_sched.adapters.torch import TorchScheduler  # noqa: E402

if __name__ != "__main__" and not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

WORKER = Path(__file__).resolve()
WORLD = 2
DIST_TIMEOUT_S = 30  # a collective that waits longer fails instead of hanging
PROCESS_TIMEOUT_S = 90  # the whole pair of processes
NAN, INF = math.nan, math.inf

Step = tuple[dict[str, float], bool]  # ({spec name: value}, accepted)
Core = ConstraintScheduler | SchedulerCollection


# -- the scenarios: schedulers and each rank's steps ---------------------------------------

KL = ("kl_core", "kl_detail")
KL_TABLE = {3: 20000.0, 4: 8000.0, 5: 3000.0}


def kl_scheduler(table: dict[int, float] = KL_TABLE) -> ConstraintScheduler:
    """The seed's shared KL ceiling: discovered by the max, held, squeezed by a table."""
    specs = [
        ConstraintSpec(n, "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9) for n in KL
    ]
    return ConstraintScheduler(specs, squeeze=SqueezeSchedule.table(table))


def kl_steps(rank: int, epoch: int) -> list[Step]:
    """Rank 0 sees small values, rank 1 large ones; both see NaN/inf and rejected steps."""
    if rank == 0:
        if epoch == 5:
            return []  # a rank may see nothing at all in an epoch
        return [
            ({"kl_core": 100.0 + epoch, "kl_detail": 150.0}, True),
            ({"kl_core": NAN, "kl_detail": 120.0 + epoch}, True),
            ({"kl_core": 1e8, "kl_detail": 1e8}, False),
            ({"kl_core": 2000.0, "kl_detail": INF}, True),
        ]
    return [
        ({"kl_core": 40000.0 + 10 * epoch, "kl_detail": 39000.0}, True),
        ({"kl_core": 41000.0 + epoch, "kl_detail": NAN}, True),
        ({"kl_core": 5e8, "kl_detail": 5e8}, False),
        ({"kl_core": -INF, "kl_detail": 9e8}, False),
        ({"kl_core": 9000.0, "kl_detail": 500.0}, True),
    ]


def median_scheduler() -> ConstraintScheduler:
    """An auto scale discovered by the median over two epochs."""
    return ConstraintScheduler(
        ConstraintSpec("mse", "minimize_soft", scale="auto"),
        discovery=DiscoveryPhase(epochs=2, statistic="median"),
    )


MEDIAN_VALUES = {
    (0, 1): [0.25, NAN, 0.5],
    (0, 2): [0.75],
    (1, 1): [4.0, 2.0, 3.0],
    (1, 2): [1.0, INF, 5.0, 6.0],
}


def median_steps(rank: int, epoch: int) -> list[Step]:
    """Per-rank medians 0.5 and 4.0; the median of both ranks' values together is 2.0."""
    steps = [({"mse": v}, True) for v in MEDIAN_VALUES.get((rank, epoch), [0.5 + rank])]
    return [*steps, ({"mse": 1e6}, False)]


def floor_scheduler() -> ConstraintScheduler:
    """A floor discovered by the min, held, then squeezed upwards."""
    return ConstraintScheduler(
        ConstraintSpec("reward", "box", lower=-1e6, upper=1e6),
        side="lower",
        squeeze=SqueezeSchedule.table({3: 0.0, 4: 5.0}),
    )


def floor_steps(rank: int, epoch: int) -> list[Step]:
    """Rank 0 sees large values, rank 1 small ones: the floor comes from rank 1."""
    if rank == 0:
        return [
            ({"reward": 10.0}, True),
            ({"reward": 20.0 + epoch}, True),
            ({"reward": NAN}, True),
            ({"reward": -1e5}, False),
        ]
    return [({"reward": -5.0 - epoch}, True), ({"reward": 3.0}, True)]


def skewed_scheduler() -> ConstraintScheduler:
    """A quantile discovery whose sample (32 values) is far smaller than rank 1's stream."""
    return ConstraintScheduler(
        ConstraintSpec("mse", "minimize_soft", scale="auto"),
        discovery=DiscoveryPhase(statistic="quantile", quantile=0.1, reservoir=32),
    )


def skewed_steps(rank: int, epoch: int) -> list[Step]:
    """Rank 0: 32 values of 0.001; rank 1: 3200 values of 1.0. Their 0.1 quantile is 1.0."""
    return [({"mse": 0.001}, True)] * 32 if rank == 0 else [({"mse": 1.0}, True)] * 3200


def collection() -> SchedulerCollection:
    """The three schedulers above driven as one."""
    return SchedulerCollection([kl_scheduler(), median_scheduler(), floor_scheduler()])


def collection_steps(rank: int, epoch: int) -> list[Step]:
    """Every scenario's steps; a step carries only its own scheduler's specs."""
    return [
        *kl_steps(rank, epoch),
        *median_steps(rank, epoch),
        *floor_steps(rank, epoch),
    ]


SCENARIOS: dict[str, tuple[Callable[[], Core], Callable[[int, int], list[Step]], int]] = {
    "ceiling": (kl_scheduler, kl_steps, 5),
    "median": (median_scheduler, median_steps, 3),
    "floor": (floor_scheduler, floor_steps, 4),
    "collection": (collection, collection_steps, 5),
    "skewed": (skewed_scheduler, skewed_steps, 1),
}
CHECKPOINT_AFTER = 2  # rank 0 saves a checkpoint after this many epochs


def schedulers(core: Core) -> list[ConstraintScheduler]:
    return [core] if isinstance(core, ConstraintScheduler) else list(core)


def event_row(e: Event) -> dict[str, Any]:
    return {
        "kind": e.kind,
        "constraint": e.constraint,
        "epoch": e.epoch,
        "old": e.old,
        "new": e.new,
        "message": e.message,
    }


def tally_row(t: Tally) -> dict[str, Any]:
    return {
        "count": t.count,
        "nonfinite": t.nonfinite,
        "violations": t.violations,
        "maximum": t.maximum,
        "minimum": t.minimum,
        "total": t.total,
    }


def core_row(core: Core) -> dict[str, Any]:
    """What the core schedulers hold after an epoch boundary (the same on every rank)."""
    return {
        "epoch": core.epoch,
        "phases": {s.name: s.phase.name for s in schedulers(core)},
        "bounds": {s.name: s.bound for s in schedulers(core)},
        "stats": {
            s.name: None
            if s.last_epoch is None
            else {
                "steps": s.last_epoch.steps,
                "rejects": s.last_epoch.rejects,
                "observations": s.last_epoch.observations,
                "nonfinite": s.last_epoch.nonfinite,
                "violations": s.last_epoch.violations,
            }
            for s in schedulers(core)
        },
    }


# -- the worker: one rank --------------------------------------------------------------------


def as_value(v: float, how: int) -> Any:
    """A Python float, a float32 tensor, or a float64 tensor that needs a gradient."""
    if how == 0:
        return v
    if how == 1:
        return torch.tensor(v, dtype=torch.float32)
    return torch.tensor(v, dtype=torch.float64, requires_grad=True) * 1.0


def feed(sched: TorchScheduler, steps: list[Step], rank: int, epoch: int) -> None:
    """Hand a rank's steps to the adapter, through every form of observe and reject."""
    for j, (values, accepted) in enumerate(steps):
        how = (j + rank + epoch) % 3
        obs = {n: as_value(v, (how + k) % 3) for k, (n, v) in enumerate(values.items())}
        if accepted:
            if how == 0:
                sched.observe(obs)
            elif how == 1:
                sched.observe(obs, accepted=torch.tensor(True))
            else:
                for name, value in obs.items():
                    sched.observe(name, value)
        elif how == 0:
            flag = torch.tensor(False)
            sched.observe(obs, accepted=flag)  # decided "on the device": not counted
            sched.reject(~flag)
        elif how == 1:
            sched.observe(obs, accepted=False)
            sched.reject(True)
        else:
            sched.reject()  # a rolled-back step whose values are never observed


def run_epochs(rank: int, name: str, mode: str, out: Path) -> dict[str, Any]:
    build, steps, epochs = SCENARIOS[name]
    if mode == "mixed":  # the ranks may accumulate differently
        mode = ("auto", "device")[rank]
    sched = TorchScheduler(build(), accumulate=mode)
    seen: list[str] = []
    for s in schedulers(sched.core):
        s.add_callback(lambda e: seen.append(e.kind))
    cached = {n: sched.bound_tensor(n, dtype=torch.float64) for n in sched.names}
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"rank": rank, "epochs": rows, "callbacks": seen}
    for epoch in range(1, epochs + 1):
        feed(sched, steps(rank, epoch), rank, epoch)
        events = sched.advance_epoch()
        rows.append(
            {
                **core_row(sched.core),
                "events": [event_row(e) for e in events],
                "adapter_epoch": sched.epoch,
                "adapter_phases": {n: p.name for n, p in sched.phases.items()},
                "cached_bounds": {n: float(t) for n, t in cached.items()},
                "fresh_bounds": {n: float(sched.bound_tensor(n)) for n in sched.names},
                "tallies": {n: tally_row(t) for n, t in sched.last_tallies.items()},
                "means": sched.last_means,
                "core_state": sched.core.state_dict(),
            }
        )
        if epoch == CHECKPOINT_AFTER:
            state = sched.state_dict()
            result["checkpoint_state"] = state
            if rank == 0:
                torch.save({"scheduler": state, "epoch": epoch}, out / "checkpoint.pt")
    return result


def run_mismatch(rank: int, mode: str, out: Path) -> dict[str, Any]:
    """Ranks that disagree raise on every rank; then agreeing ones still work."""
    cases: dict[str, Any] = {}

    def attempt(case: str, sched: TorchScheduler) -> None:
        steps = [
            (dict(zip(sched.names, values.values(), strict=True)), accepted)
            for values, accepted in kl_steps(rank, 1)
        ]
        feed(sched, steps, rank, 1)
        before = (sched.epoch, json.dumps(sched.state_dict(), sort_keys=True))
        try:
            sched.advance_epoch()
        except ValueError as error:
            after = (sched.epoch, json.dumps(sched.state_dict(), sort_keys=True))
            cases[case] = {"error": str(error), "unchanged": after == before}
        else:
            cases[case] = {"error": None}

    other_table = {3: 25000.0, 5: 3000.0}
    table = KL_TABLE if rank == 0 else other_table
    attempt("table", TorchScheduler(kl_scheduler(table), accumulate=mode))
    ahead = TorchScheduler(kl_scheduler(), accumulate=mode)
    if rank == 1:
        ahead.core.advance_epoch(log=False)  # rank 1 ended an epoch on its own
    attempt("epoch", ahead)
    names = KL if rank == 0 else ("kl_core", "kl_other")
    specs = [
        ConstraintSpec(n, "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9) for n in names
    ]
    named = TorchScheduler(ConstraintScheduler(specs, name="kl"), accumulate=mode)
    attempt("names", named)
    agreeing = TorchScheduler(kl_scheduler(), accumulate=("auto", "device")[rank])
    attempt("agreeing", agreeing)
    cases["agreeing"]["bound"] = agreeing.core.bound
    return {"rank": rank, "cases": cases}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _worker_main(argv: list[str]) -> None:
    scenario, rank, port, out = argv[0], int(argv[1]), int(argv[2]), Path(argv[3])
    records = _Records()
    logger = logging.getLogger("constraint_sched")
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    dist.init_process_group(
        "gloo",
        rank=rank,
        world_size=WORLD,
        init_method=f"tcp://127.0.0.1:{port}",
        timeout=datetime.timedelta(seconds=DIST_TIMEOUT_S),
    )
    try:
        name, _, mode = scenario.partition(":")
        if name == "mismatch":
            result = run_mismatch(rank, mode, out)
        else:
            result = run_epochs(rank, name, mode, out)
        result["logs"] = records.messages
        (out / f"rank{rank}.json").write_text(json.dumps(result), encoding="utf-8")
    finally:
        dist.destroy_process_group()


# -- the test side: start the ranks, and the single-process reference -------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(scenario: str, out: Path) -> list[dict[str, Any]]:
    """Run ``scenario`` on two ranks; each rank's JSON result, in rank order."""
    env = dict(os.environ)
    loopback = {"linux": "lo", "darwin": "lo0"}.get(sys.platform)
    if loopback:
        env.setdefault("GLOO_SOCKET_IFNAME", loopback)
    for attempt in range(3):  # the port is free when chosen; another process may take it
        run_dir = out / f"attempt{attempt}"
        run_dir.mkdir(parents=True)
        port = free_port()
        procs: list[subprocess.Popen[bytes]] = []
        logs = [run_dir / f"rank{r}.log" for r in range(WORLD)]
        try:
            for r in range(WORLD):
                with logs[r].open("wb") as log:
                    procs.append(
                        subprocess.Popen(
                            [
                                sys.executable,
                                str(WORKER),
                                scenario,
                                str(r),
                                str(port),
                                str(run_dir),
                            ],
                            cwd=run_dir,
                            env=env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        )
                    )
            deadline = time.monotonic() + PROCESS_TIMEOUT_S
            codes = [p.wait(timeout=max(deadline - time.monotonic(), 0.1)) for p in procs]
        except subprocess.TimeoutExpired:
            codes = None
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        output = "\n".join(
            f"--- rank {r} ---\n{log.read_text(errors='replace')}" for r, log in enumerate(logs)
        )
        if codes is None:
            pytest.fail(f"{scenario}: the ranks did not finish in {PROCESS_TIMEOUT_S}s\n{output}")
        if any(codes) and "address already in use" in output.lower() and attempt < 2:
            continue
        if codes != [0] * WORLD:  # pytest.fail, not assert: an xfail must not swallow it
            pytest.fail(f"{scenario}: exit codes {codes}\n{output}")
        return [
            json.loads((run_dir / f"rank{r}.json").read_text(encoding="utf-8"))
            for r in range(WORLD)
        ]
    raise AssertionError("unreachable")


def reference(name: str) -> list[dict[str, Any]]:
    """A single-process core scheduler fed both ranks' steps, and the expected tallies."""
    build, steps, epochs = SCENARIOS[name]
    core = build()
    side = {n: s.side for s in schedulers(core) for n in s.names}
    rows = []
    for epoch in range(1, epochs + 1):
        in_force = {n: s.bound for s in schedulers(core) for n in s.names}
        union = [step for rank in range(WORLD) for step in steps(rank, epoch)]
        seen: dict[str, list[float]] = {n: [] for n in side}
        for values, accepted in union:
            if accepted:
                core.observe(values)
                for n, v in values.items():
                    seen[n].append(v)
            else:
                core.reject()
        events = core.advance_epoch(log=False)
        tallies = {n: Tally.of(seen[n], bound=in_force[n], side=side[n]) for n in side}
        rows.append(
            {
                **core_row(core),
                "events": [event_row(e) for e in events],
                "tallies": {n: tally_row(t) for n, t in tallies.items()},
                "means": {n: t.mean for n, t in tallies.items()},
            }
        )
    return rows


def assert_matches_reference(name: str, ranks: list[dict[str, Any]]) -> None:
    expected = reference(name)
    for r, result in enumerate(ranks):
        assert len(result["epochs"]) == len(expected)
        for got, want in zip(result["epochs"], expected, strict=True):
            where = f"rank {r}, after epoch {want['epoch'] - 1}"
            for key in ("epoch", "phases", "bounds", "stats", "events"):
                assert got[key] == want[key], f"{where}: {key}"
            for n, wanted in want["tallies"].items():
                tally = dict(wanted)
                total = tally.pop("total")
                got_tally = dict(got["tallies"][n])
                assert got_tally.pop("total") == pytest.approx(total, rel=1e-12), where
                assert got_tally == tally, f"{where}: tally of {n!r}"
                mean = pytest.approx(want["means"][n], rel=1e-12, nan_ok=True)
                assert got["means"][n] == mean, where
            assert got["adapter_epoch"] == want["epoch"]
            for n, phase in got["adapter_phases"].items():
                owner = next(s for s in schedulers(SCENARIOS[name][0]()) if n in s.names)
                assert phase == want["phases"][owner.name], where
                assert got["cached_bounds"][n] == want["bounds"][owner.name], where
                assert got["fresh_bounds"][n] == pytest.approx(got["cached_bounds"][n]), where


@pytest.fixture(scope="module", params=["auto", "device", "mixed"])
def ceiling(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp(f"ceiling-{request.param}")
    return out, run_ranks(f"ceiling:{request.param}", out)


# -- the tests ---------------------------------------------------------------------------------


def test_ranks_agree_on_the_global_max_and_counts(ceiling: Any) -> None:
    _, ranks = ceiling
    rank0, rank1 = ranks
    assert rank0["epochs"] == rank1["epochs"]  # bounds, phases, events, tallies, core state
    assert rank0["callbacks"] == rank1["callbacks"]
    assert_matches_reference("ceiling", ranks)

    first = rank0["epochs"][0]
    assert first["bounds"] == {"kl_core+kl_detail": 41001.0}  # rank 1's max, not rank 0's
    core, detail = first["tallies"]["kl_core"], first["tallies"]["kl_detail"]
    # rank 0: 3 accepted steps, rank 1: 3; the rejected steps' values are never counted
    assert (core["count"], core["nonfinite"], core["maximum"], core["minimum"]) == (
        6,
        1,
        41001.0,
        101.0,
    )
    assert (detail["count"], detail["nonfinite"], detail["maximum"], detail["minimum"]) == (
        6,
        2,
        39000.0,
        121.0,
    )
    assert first["stats"]["kl_core+kl_detail"]["rejects"] == 3  # 1 on rank 0, 2 on rank 1
    third = rank0["epochs"][2]  # under the 20000 ceiling: rank 1's 40030 and 41003 violate it
    assert third["tallies"]["kl_core"]["violations"] == 2
    phases = [row["phases"]["kl_core+kl_detail"] for row in rank0["epochs"]]
    bounds = [row["bounds"]["kl_core+kl_detail"] for row in rank0["epochs"]]
    assert phases == ["HOLD", "SQUEEZE", "SQUEEZE", "CONVERGED", "CONVERGED"]
    assert bounds == [41001.0, 20000.0, 8000.0, 3000.0, 3000.0]
    assert rank0["epochs"][4]["tallies"]["kl_core"]["count"] == 3  # rank 0 saw nothing


def test_only_rank_zero_logs_the_events(ceiling: Any) -> None:
    _, (rank0, rank1) = ceiling
    events = [e for row in rank0["epochs"] for e in row["events"]]
    assert len(events) >= 5, "the scenario should cause events"
    assert rank0["logs"] == [e["message"] for e in events]
    assert rank1["logs"] == []
    kinds = [e["kind"] for e in events]
    assert rank0["callbacks"] == rank1["callbacks"] == kinds  # callbacks run on every rank


def test_checkpoint_at_an_epoch_boundary_restores_on_one_process(ceiling: Any) -> None:
    out, (rank0, rank1) = ceiling
    (path,) = out.glob("attempt*/checkpoint.pt")
    saved = torch.load(path, weights_only=True)
    assert saved["scheduler"] == rank0["checkpoint_state"] == rank1["checkpoint_state"]

    fresh = TorchScheduler(kl_scheduler())
    fresh.load_state_dict(saved["scheduler"])
    at = rank0["epochs"][CHECKPOINT_AFTER - 1]
    assert fresh.epoch == at["epoch"] == CHECKPOINT_AFTER + 1
    assert fresh.phase_of("kl_core").name == at["phases"]["kl_core+kl_detail"]
    assert (
        float(fresh.bound_tensor("kl_core", dtype=torch.float64))
        == at["bounds"]["kl_core+kl_detail"]
    )

    # Fed both ranks' later steps, the restored scheduler moves as the ranks did.
    for epoch in range(CHECKPOINT_AFTER + 1, SCENARIOS["ceiling"][2] + 1):
        for rank in range(WORLD):
            for values, accepted in kl_steps(rank, epoch):
                if accepted:
                    fresh.observe(values)
                else:
                    fresh.reject()
        events = fresh.advance_epoch()
        row = rank0["epochs"][epoch - 1]
        assert [event_row(e) for e in events] == row["events"]
        assert fresh.core.bound == row["bounds"]["kl_core+kl_detail"]
        assert fresh.phase_of("kl_detail").name == row["phases"]["kl_core+kl_detail"]


def test_floor_is_the_min_across_ranks(tmp_path: Path) -> None:
    rank0, rank1 = ranks = run_ranks("floor:device", tmp_path)
    assert rank0["epochs"] == rank1["epochs"]
    assert_matches_reference("floor", ranks)
    bounds = [row["bounds"]["reward"] for row in rank0["epochs"]]
    assert bounds == [-6.0, 0.0, 5.0, 5.0]  # -6 is rank 1's; rank 0 saw nothing below 10
    assert rank0["epochs"][0]["tallies"]["reward"]["minimum"] == -6.0
    assert rank0["epochs"][0]["tallies"]["reward"]["maximum"] == 21.0


@pytest.mark.parametrize("mode", ["auto", "device"])
def test_median_is_of_both_ranks_values(tmp_path: Path, mode: str) -> None:
    rank0, rank1 = ranks = run_ranks(f"median:{mode}", tmp_path)
    assert rank0["epochs"] == rank1["epochs"]
    assert_matches_reference("median", ranks)
    valid = [v for values in MEDIAN_VALUES.values() for v in values if math.isfinite(v)]
    median = statistics.median(valid)
    assert median == 2.0
    assert statistics.median([0.25, 0.5, 0.75]) != median != statistics.median([1, 2, 3, 4, 5, 6])
    discovered = [e for e in rank0["epochs"][1]["events"] if e["kind"] == "discovered"]
    assert [e["new"] for e in discovered] == [median]
    assert rank0["epochs"][1]["bounds"] == {"mse": median}
    assert rank0["epochs"][0]["phases"] == {"mse": "DISCOVERY"}  # two epochs of discovery


def test_mismatched_ranks_raise_on_every_rank_and_do_not_hang(tmp_path: Path) -> None:
    ranks = run_ranks("mismatch:device", tmp_path)
    for r, result in enumerate(ranks):
        cases = result["cases"]
        for case in ("table", "epoch", "names"):
            error = cases[case]["error"]
            assert error is not None, f"rank {r}: {case} mismatch did not raise"
            assert f"rank {1 - r} has" in error, error
            assert f"but rank {r} has" in error, error
            assert cases[case]["unchanged"], f"rank {r}: a failed advance_epoch changed state"
        assert cases["agreeing"]["error"] is None
        assert cases["agreeing"]["bound"] == 41001.0


def test_collection_agrees_across_ranks(tmp_path: Path) -> None:
    rank0, rank1 = ranks = run_ranks("collection:mixed", tmp_path)
    assert rank0["epochs"] == rank1["epochs"]
    assert_matches_reference("collection", ranks)
    after_two = rank0["epochs"][1]["bounds"]
    assert after_two == {"kl_core+kl_detail": 20000.0, "mse": 2.0, "reward": 0.0}
    assert rank1["logs"] == []
    assert len(rank0["logs"]) == sum(len(row["events"]) for row in rank0["epochs"])


@pytest.mark.parametrize("mode", ["auto", "device"])
def test_quantile_sample_beyond_the_reservoir_weighs_ranks_by_their_counts(
    tmp_path: Path, mode: str
) -> None:
    rank0, rank1 = run_ranks(f"skewed:{mode}", tmp_path)
    (tally,) = rank0["epochs"][0]["tallies"].values()
    if rank0["epochs"] != rank1["epochs"] or tally["count"] != 3232:
        pytest.fail(f"the ranks disagree or miscount: {rank0['epochs']} {rank1['epochs']}")
    # 3200 of the 3232 values are 1.0: in a uniform sample of 32 of them, the 0.1 quantile
    # is 1.0 unless four or more of rank 0's values get in (p < 0.001). Pooling one sample
    # of 32 per rank with equal weight would give a pool of which half is 0.001.
    assert rank0["epochs"][0]["bounds"]["mse"] == 1.0


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
