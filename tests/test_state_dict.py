"""state_dict / load_state_dict: strict JSON, exact restores, loud and harmless failures."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from seed_data import KL_TABLE, kl_specs

from constraint_sched import (
    FORMAT_VERSION,
    Backoff,
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    SchedulerCollection,
    SqueezeSchedule,
)


def seed() -> ConstraintScheduler:
    return ConstraintScheduler(
        kl_specs(), squeeze=SqueezeSchedule.table(KL_TABLE), backoff=Backoff()
    )


def drive(sched: ConstraintScheduler, epochs: int, start: int = 0) -> list[tuple]:
    """Drive an epoch pattern that exercises backoff; return what was observable."""
    trace = []
    for e in range(start, start + epochs):
        top = 60_000.0 if e < 2 else sched.bound * 0.95
        for i in range(50):
            sched.observe({"kl_core": top * (0.5 + i / 100), "kl_detail": top * 0.4})
        sched.observe("kl_core", math.nan)
        sched.reject(15 if e == 2 else 1)
        events = sched.advance_epoch()
        trace.append((sched.epoch, sched.phase, sched.bound, events))
    return trace


def json_roundtrip(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data, allow_nan=False))


@pytest.mark.parametrize("split", [0, 1, 2, 3, 5, 9])
def test_a_restored_clone_behaves_identically_forever_after(split: int) -> None:
    original = seed()
    drive(original, split)
    original.observe({"kl_core": 1234.5, "kl_detail": math.inf})  # mid-epoch state too
    clone = seed()
    clone.load_state_dict(json_roundtrip(original.state_dict()))
    assert clone.state_dict() == original.state_dict()
    assert drive(clone, 16 - split, split) == drive(original, 16 - split, split)


@pytest.mark.parametrize("reservoir", [1024, 16], ids=["exact", "sampled"])
def test_quantile_discovery_state_restores_exactly(reservoir: int) -> None:
    def make() -> ConstraintScheduler:
        spec = ConstraintSpec("mse", "minimize_soft", scale="auto")
        phase = DiscoveryPhase(statistic="median", epochs=2, reservoir=reservoir)
        return ConstraintScheduler(spec, discovery=phase)

    original = make()
    for i in range(137):
        original.observe(float((i * 37) % 101))
    original.advance_epoch()
    for i in range(3):
        original.observe(float(i))
    clone = make()
    clone.load_state_dict(json_roundtrip(original.state_dict()))
    for sched in (original, clone):
        for i in range(50):
            sched.observe(float(i % 7))
    assert clone.advance_epoch() == original.advance_epoch()
    assert clone.bound == original.bound


def test_state_dict_is_strict_json_even_with_infinite_bounds() -> None:
    spec = ConstraintSpec("kl", "box_asymmetric", lower=100.0, healthy=3000.0, upper=math.inf)
    sched = ConstraintScheduler(spec)
    data = sched.state_dict()
    text = json.dumps(data, allow_nan=False)
    assert data["version"] == FORMAT_VERSION
    assert data["state"]["bound"] == "inf"
    assert '"upper": "inf"' in text


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            d = d[key]
        d[last] = value

    return mutate


def _delete(path: str) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            d = d[key]
        del d[last]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        pytest.param(_set("format", "torch.optim.Adam"), "not a constraint_sched.ConstraintScheduler state dict", id="foreign"),
        pytest.param(_set("version", FORMAT_VERSION + 1), "saved by a newer constraint_sched", id="future"),
        pytest.param(_set("version", "1"), r"state_dict.version: expected an int", id="version-type"),
        pytest.param(_delete("state.epoch"), "state_dict.state: missing key 'epoch'", id="missing"),
        pytest.param(_set("state.epoch", 0), r"state_dict.state.epoch: expected an int >= 1", id="epoch-zero"),
        pytest.param(_set("state.phase", "SQUASH"), r"state_dict.state.phase: expected one of", id="phase"),
        pytest.param(_set("state.bound", "lots"), r"state_dict.state.bound: expected a number", id="bound-type"),
        pytest.param(_set("state.bound", "nan"), r"state_dict.state.bound: NaN", id="bound-nan"),
        pytest.param(_set("state.counts", [1]), r"state_dict.state.counts: expected a list of 2", id="counts"),
        pytest.param(_set("state.window", [1.0, "x"]), r"state_dict.state.window\[1\]: expected a number", id="window"),
        pytest.param(_set("state.fresh_squeeze", 1), r"fresh_squeeze: expected true or false", id="flag"),
        pytest.param(_set("state.counts", [1, -1]), r"state_dict.state.counts\[1\]", id="negative-count"),
        pytest.param(_set("state", []), r"state_dict.state: expected a mapping", id="state-type"),
        pytest.param(_set("config.squeeze.target", 2500.0), r"config.squeeze.target was saved as 2500.0 but this scheduler has 3000.0", id="config-target"),
        pytest.param(_set("config.specs", []), r"config.specs was saved as \[\]", id="config-specs"),
        pytest.param(_delete("config.backoff"), r"config.backoff was saved as '<missing>'", id="config-missing"),
    ],
)  # fmt: skip
def test_bad_state_dicts_raise_naming_the_problem_and_change_nothing(
    mutate: Mutation, match: str
) -> None:
    sched = seed()
    drive(sched, 3)
    before = sched.state_dict()
    bad = copy.deepcopy(before)
    mutate(bad)
    with pytest.raises(ValueError, match=match):
        sched.load_state_dict(bad)
    assert sched.state_dict() == before


def test_a_non_mapping_state_dict_is_refused() -> None:
    with pytest.raises(ValueError, match="expected a mapping from state_dict"):
        seed().load_state_dict([1, 2])  # type: ignore[arg-type]


def test_a_finite_bound_is_required_after_discovery() -> None:
    sched = seed()
    drive(sched, 2)
    bad = sched.state_dict()
    bad["state"]["bound"] = "inf"
    with pytest.raises(ValueError, match="a SQUEEZE bound must be finite"):
        sched.load_state_dict(bad)


def test_a_different_configuration_is_never_silently_adopted() -> None:
    saved = seed().state_dict()
    other = ConstraintScheduler(
        kl_specs(), squeeze=SqueezeSchedule.linear(3000.0, epochs=5), backoff=Backoff()
    )
    with pytest.raises(
        ValueError, match=r"config.squeeze.epochs was saved as None but this scheduler has 5"
    ):
        other.load_state_dict(saved)


def make_collection() -> SchedulerCollection:
    return SchedulerCollection(
        [
            ConstraintScheduler(kl_specs(), squeeze=SqueezeSchedule.table(KL_TABLE)),
            ConstraintScheduler(
                ConstraintSpec("mse", "minimize_soft", scale="auto"),
                discovery=DiscoveryPhase(statistic="median"),
            ),
        ]
    )


def test_collection_state_round_trips_through_json() -> None:
    original = make_collection()
    for i in range(20):
        original.observe({"kl_core": 1000.0 + i, "kl_detail": 900.0, "mse": 0.01 * i})
    original.reject(2)
    clone = make_collection()
    clone.load_state_dict(json_roundtrip(original.state_dict()))
    assert clone.advance_epoch() == original.advance_epoch()
    assert clone.specs == original.specs


def test_collection_load_is_all_or_nothing() -> None:
    target = make_collection()
    before = target.state_dict()
    source = make_collection()
    source.observe({"mse": 0.5})
    source.advance_epoch()
    bad = source.state_dict()
    bad["schedulers"]["mse"]["state"]["epoch"] = -3  # the second one fails to load
    with pytest.raises(ValueError, match=r"state_dict.schedulers\['mse'\]: .*epoch"):
        target.load_state_dict(bad)
    assert target.state_dict() == before


def test_collection_refuses_other_scheduler_names() -> None:
    data = make_collection().state_dict()
    data["schedulers"]["extra"] = data["schedulers"].pop("mse")
    with pytest.raises(ValueError, match=r"missing \['mse'\], unexpected \['extra'\]"):
        make_collection().load_state_dict(data)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("rng", "-5", r"window\[0\].rng: expected a 64-bit integer string"),
        ("values", [1.0], r"window\[0\]: 3 observations but 1 values"),
        ("count", -1, r"window\[0\].count: expected an int >= 0"),
    ],
)
def test_a_corrupt_median_sample_is_refused(field: str, value: Any, match: str) -> None:
    def make() -> ConstraintScheduler:
        spec = ConstraintSpec("mse", "minimize_soft", scale="auto")
        return ConstraintScheduler(spec, discovery=DiscoveryPhase(statistic="median"))

    sched = make()
    for v in (0.1, 0.2, 0.3):
        sched.observe(v)
    bad = sched.state_dict()
    bad["state"]["window"][0][field] = value
    target = make()
    before = target.state_dict()
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(bad)
    assert target.state_dict() == before
