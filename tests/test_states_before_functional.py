"""State dicts saved by the release before the functional core still load and go on as they did.

``tests/data/states_before_functional/`` holds state dicts written by that
release (a median scheduler, a torch scheduler with device and host books
mid-epoch, the core and torch terms mid-epoch, a multiplier) and, in
``continued.json``, what that release did after loading each one and going on
with the same calls. This release must do the same.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from constraint_sched import (  # noqa: E402
    ChanceMultiplier,
    ConstraintScheduler,
    ConstraintSpec,
    ConstraintTerm,
    DiscoveryPhase,
    Relative,
    SchedulerCollection,
    SqueezeSchedule,
)
from constraint_sched.adapters.torch import TorchConstraintTerm, TorchScheduler  # noqa: E402

DATA = Path(__file__).parent / "data" / "states_before_functional"
EXPECTED = json.loads((DATA / "continued.json").read_text())


def saved(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def kl_specs() -> list[ConstraintSpec]:
    return [
        ConstraintSpec(n, "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
        for n in ("kl_core", "kl_detail")
    ]


def collection() -> SchedulerCollection:
    kl = ConstraintScheduler(
        kl_specs(), squeeze=SqueezeSchedule.table({3: 13000.0, 4: 3000.0}), name="kl"
    )
    rec = ConstraintScheduler(
        ConstraintSpec("rec", "upper", margin=1e9),
        discovery=DiscoveryPhase(statistic="median"),
        squeeze=SqueezeSchedule.geometric(target=0.5, epochs=3),
        name="rec",
    )
    return SchedulerCollection([kl, rec])


def kinds(events: list[Any]) -> list[list[Any]]:
    return [[e.kind, e.new] for e in events]


def test_a_core_scheduler_with_a_median_sample_goes_on_as_before() -> None:
    s = ConstraintScheduler(
        kl_specs(),
        discovery=DiscoveryPhase(epochs=2, statistic="median"),
        squeeze=SqueezeSchedule.table({4: 13000.0, 5: 3000.0}),
    )
    s.load_state_dict(saved("scheduler_median_mid_epoch.json"))
    events = kinds(s.advance_epoch(log=False))
    s.observe({"kl_core": 40000.0, "kl_detail": 39000.0})  # the held epoch counts with a step
    events += kinds(s.advance_epoch(log=False))
    assert events == EXPECTED["scheduler"]


def test_a_torch_scheduler_with_device_books_mid_epoch_goes_on_as_before() -> None:
    t = TorchScheduler(collection(), accumulate="device")
    t.load_state_dict(saved("torch_scheduler_device_mid_epoch.json"))
    t.observe(
        {
            "kl_core": torch.tensor(31000.0),
            "kl_detail": torch.tensor(29000.0),
            "rec": torch.tensor(0.7),
        }
    )
    expected = EXPECTED["torch_scheduler"]
    assert kinds(t.advance_epoch(log=False)) == expected["events"]
    assert {n: t.bound_of(n) for n in t.names} == expected["bounds"]
    tallies = {
        n: [x.count, x.nonfinite, x.violations, x.maximum, x.minimum, x.total]
        for n, x in t.last_tallies.items()
    }
    assert tallies.keys() == expected["tallies"].keys()
    for name, row in tallies.items():
        assert row == pytest.approx(expected["tallies"][name], rel=1e-12)


def test_a_torch_scheduler_with_a_host_median_sample_goes_on_as_before() -> None:
    t = TorchScheduler(
        ConstraintScheduler(
            ConstraintSpec("m", "upper", margin=1e9), discovery=DiscoveryPhase(statistic="median")
        )
    )
    t.load_state_dict(saved("torch_scheduler_host_median_mid_epoch.json"))
    assert kinds(t.advance_epoch(log=False)) == EXPECTED["torch_scheduler_median"]


@pytest.mark.parametrize("cls", [ConstraintTerm, TorchConstraintTerm])
def test_terms_mid_epoch_go_on_as_before(cls: Any) -> None:
    term = cls("kl", target=Relative(0.5), squeeze_epochs=3, echo=False)
    file = "torch_term_mid_epoch.json" if cls is TorchConstraintTerm else "term_mid_epoch.json"
    term.load_state_dict(saved(file))
    weights = []
    for i in range(20):
        v, m = 9.0 + math.sin(i), 2.0 + 0.1 * math.cos(i)
        if cls is TorchConstraintTerm:
            term(torch.tensor([v]), main=torch.tensor(m))
        else:
            term([v], main=m)
        weights.append(term.weight)
    expected = EXPECTED[cls.__name__]
    assert weights == pytest.approx(expected["weights"], rel=1e-12)
    assert kinds(term.epoch_end()) == expected["events"]
    assert term.bound == pytest.approx(expected["bound"], rel=1e-12)


def test_a_multiplier_goes_on_as_before() -> None:
    m = ChanceMultiplier()
    m.load_state_dict(saved("multiplier.json"))
    weights = [m.update(9.0 + 0.1 * i, bound=8.0, main=2.0) for i in range(5)]
    assert weights == pytest.approx(EXPECTED["multiplier"], rel=1e-12)
