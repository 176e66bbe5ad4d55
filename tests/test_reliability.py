"""Regressions of a fault audit: states no run reaches, values that are not real numbers.

Each test names the audit's failure it pins. States are corrupted the way a
damaged checkpoint would be, then loaded: a refusal names the field and
changes nothing; the command-line items are in ``test_cli_reliability.py``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from typing import Any

import numpy as np
import pytest

from constraint_sched import (
    ConstraintScheduler,
    ConstraintSpec,
    ConstraintTerm,
    DiscoveryPhase,
    HoldPhase,
    Idle,
    Phase,
    SqueezeSchedule,
)

torch = pytest.importorskip("torch")
from constraint_sched.adapters.torch import TorchConstraintTerm, TorchScheduler  # noqa: E402


def kl_spec() -> ConstraintSpec:
    return ConstraintSpec("kl", "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)


def seed_like() -> ConstraintScheduler:
    return ConstraintScheduler(
        kl_spec(), hold=HoldPhase(epochs=2), squeeze=SqueezeSchedule.geometric(3000.0, epochs=3)
    )


def refused(target: Any, state: dict[str, Any], field: str) -> None:
    """Loading ``state`` raises a ValueError naming ``field`` and leaves ``target`` as it was."""
    before = json.dumps(target.state_dict(), sort_keys=True)
    with pytest.raises(ValueError, match=field):
        target.load_state_dict(state)
    assert json.dumps(target.state_dict(), sort_keys=True) == before


# -- 1. a sample outside what the books recorded -----------------------------------------


def test_a_torch_sample_outside_the_recorded_range_is_refused_at_load() -> None:
    def median() -> TorchScheduler:
        return TorchScheduler(
            ConstraintScheduler(kl_spec(), discovery=DiscoveryPhase(statistic="median"))
        )

    sched = median()
    for v in (5000.0, 6000.0, 7000.0):
        sched.observe(v)
    state = json.loads(json.dumps(sched.state_dict()))
    state["epoch"]["host"]["reservoirs"][0]["values"][0] = 1e9
    fresh = median()
    refused(fresh, state, r"state_dict\.epoch\.host\.reservoirs\[0\]\.values")
    fresh.observe(5000.0)
    assert [e.kind for e in fresh.advance_epoch(log=False)] == ["discovered", "held"]


def test_an_infinite_sample_of_a_steps_window_is_refused_at_load() -> None:
    def windowed() -> ConstraintScheduler:
        return ConstraintScheduler(
            kl_spec(), discovery=DiscoveryPhase(statistic="median", steps=10)
        )

    sched = windowed()
    sched.observe(5000.0)
    sched.observe(6000.0)
    state = sched.state_dict()
    state["state"]["window"][0]["values"][0] = "inf"
    refused(windowed(), state, r"state_dict\.state\.window\[0\]\.values\[0\]: .* finite")


# -- 2. a discovered bound that contradicts the bound in force -----------------------------


@pytest.mark.parametrize("discovered", [-1.0, 50.0, 39_000.0])
def test_a_discovered_bound_other_than_the_one_held_is_refused(discovered: float) -> None:
    sched = seed_like()
    sched.observe(40_000.0)
    sched.advance_epoch(log=False)
    assert (sched.phase, sched.bound) == (Phase.HOLD, 40_000.0)
    state = sched.state_dict()
    state["state"]["discovered"] = discovered
    fresh = seed_like()
    refused(fresh, state, r"state_dict\.state\.(discovered|bound)")


def test_a_squeeze_bound_outside_target_and_discovered_is_refused() -> None:
    sched = seed_like()
    for _ in range(4):
        sched.observe(40_000.0)
        sched.advance_epoch(log=False)
    assert sched.phase is Phase.SQUEEZE
    for bound in (50_000.0, 2_000.0):
        state = sched.state_dict()
        state["state"]["bound"] = bound
        refused(seed_like(), state, r"state_dict\.state\.bound: in phase SQUEEZE")


# -- 3. the multiplier's numbers and settings ------------------------------------------------


def term_after_two_epochs() -> ConstraintTerm:
    term = ConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
    for _ in range(2):
        for _ in range(5):
            term(np.array([10.0, 12.0]), main=1.0)
        term.epoch_end()
    term(np.array([10.0, 12.0]), main=1.0)
    return term


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("log_weight", 1000.0, "log_weight"),
        ("log_weight", 700.0, "log_weight"),
        ("integral", 1e6, "integral"),
        ("noise", -1.0, "noise"),
    ],
)
def test_multiplier_numbers_out_of_range_are_refused(key: str, value: float, field: str) -> None:
    state = term_after_two_epochs().state_dict()
    state["multiplier"][key] = value
    fresh = ConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
    refused(fresh, state, rf"state\['{field}'\]")


def test_numbers_that_move_only_once_the_bound_is_known_are_zero_before() -> None:
    term = ConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
    term(np.array([10.0]), main=1.0)
    for key in ("log_weight", "integral", "track", "noise", "log_unit"):
        state = term.state_dict()
        state["multiplier"][key] = 3.0
        refused(
            ConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False),
            state,
            rf"state\['{key}'\] is out of range: expected 0 before the bound is known",
        )


def test_an_applied_weight_above_max_weight_is_refused() -> None:
    term = term_after_two_epochs()
    state = term.state_dict()
    state["weight"] = 1e9
    refused(ConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False), state, "'weight'")
    torch_term = TorchConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
    with pytest.raises(ValueError, match="'weight'"):
        torch_term.load_state_dict({**state, "scheduler": torch_term.state_dict()["scheduler"]})


def test_a_state_saved_with_other_settings_is_refused() -> None:
    state = term_after_two_epochs().state_dict()
    other = ConstraintTerm("kl", target=5.0, squeeze_epochs=2, alpha=0.2, echo=False)
    refused(other, state, "settings")


# -- 4 and 5. one input rule: real numbers only ----------------------------------------------

NOT_REAL = [
    pytest.param("5000", id="str"),
    pytest.param(True, id="bool"),
    pytest.param(np.bool_(True), id="numpy-bool"),
    pytest.param(1 + 2j, id="complex"),
    pytest.param(np.complex128(3.0), id="numpy-complex"),
    pytest.param(np.array(5.0, dtype=object), id="object-array"),
    pytest.param(np.array(True), id="bool-array"),
    pytest.param(None, id="none"),
]


@pytest.mark.parametrize("value", NOT_REAL)
def test_observe_takes_only_real_numbers_in_every_form(value: Any) -> None:
    sched = ConstraintScheduler(ConstraintSpec("kl", "upper", margin=1.0))
    kind = type(value).__name__
    for call in (
        lambda: sched.observe(value),
        lambda: sched.observe("kl", value),
        lambda: sched.observe({"kl": value}),
    ):
        with pytest.raises(TypeError, match=rf"observation of 'kl' must be a number, .*{kind}"):
            call()
    assert sched.current_epoch.steps == 0


@pytest.mark.parametrize("value", NOT_REAL)
def test_the_torch_scheduler_takes_only_real_numbers(value: Any) -> None:
    sched = TorchScheduler(ConstraintScheduler(ConstraintSpec("kl", "upper", margin=1.0)))
    with pytest.raises(TypeError, match="the value of 'kl' must be a number or a tensor"):
        sched.observe({"kl": value})
    for tensor in (torch.tensor(True), torch.tensor(1 + 1j)):
        with pytest.raises(TypeError, match="must be a real number, got a torch"):
            sched.observe(tensor)
    sched.observe(torch.tensor(5))  # an integer is a real number
    sched.observe(np.float32(2.0))
    assert sched.advance_epoch(log=False)[0].value == 5.0


BAD_TERM_VALUES = [
    pytest.param(np.array([1 + 1j, 2.0]), "complex", id="complex-array"),
    pytest.param(["1", "2"], "str", id="strings"),
    pytest.param(np.array([True, False]), "bool", id="bools"),
    pytest.param(np.array([1.0, 2.0], dtype=object), "object", id="objects"),
]


@pytest.mark.parametrize(("value", "kind"), BAD_TERM_VALUES)
@pytest.mark.parametrize("term_class", [ConstraintTerm, TorchConstraintTerm])
def test_both_terms_refuse_what_is_not_real(value: Any, kind: str, term_class: type) -> None:
    term = term_class("kl", target=5.0, echo=False)
    with pytest.raises(TypeError, match=kind):
        term(value, main=1.0)
    mean = term_class("kl", target=5.0, echo=False, reduction="mean")
    with pytest.raises(TypeError, match="str"):
        mean("5", main=1.0)
    with pytest.raises(TypeError, match="bool"):
        mean(5.0, main=True)
    assert term.scheduler.current_epoch.steps == 0


@pytest.mark.parametrize("dtype", [torch.complex64, torch.bool])
def test_both_terms_refuse_a_tensor_that_is_not_real(dtype: torch.dtype) -> None:
    for term in (
        ConstraintTerm("kl", target=5.0, echo=False),
        TorchConstraintTerm("kl", target=5.0, echo=False),
    ):
        with pytest.raises(TypeError):
            term(torch.ones(2, dtype=dtype), main=1.0)


def test_reject_still_takes_bools_and_counts() -> None:
    sched = ConstraintScheduler(ConstraintSpec("kl", "upper", margin=1.0))
    sched.reject(True)
    sched.reject(np.bool_(True))
    sched.reject(2)
    assert sched.current_epoch.rejects == 4


# -- 6. an epoch without steps ------------------------------------------------------------


def test_epoch_end_twice_neither_squeezes_nor_converges_on_no_data(
    caplog: pytest.LogCaptureFixture,
) -> None:
    term = ConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
    for _ in range(2):  # discovery, then the hold
        for _ in range(5):
            term(np.array([10.0, 12.0]), main=1.0)
        term.epoch_end()
    squeezed = term.bound
    assert term.phase is Phase.SQUEEZE
    with caplog.at_level(logging.WARNING, logger="constraint_sched"):
        for _ in range(3):
            events = term.epoch_end()
            assert [type(e) for e in events] == [Idle]
    assert (term.phase, term.bound) == (Phase.SQUEEZE, squeezed)
    assert "was advance_epoch called twice" in caplog.text
    for _ in range(5):  # the next epoch with steps takes the squeeze's last step
        term(np.array([4.0, 4.5]), main=1.0)
    assert [e.kind for e in term.epoch_end()] == ["squeezed", "converged"]


def test_an_empty_epoch_does_not_count_as_a_held_one() -> None:
    sched = seed_like()
    sched.observe(40_000.0)
    sched.advance_epoch(log=False)
    for _ in range(3):
        sched.advance_epoch(log=False)
    assert (sched.phase, sched.bound) == (Phase.HOLD, 40_000.0)
    for _ in range(2):
        sched.observe(39_000.0)
        events = sched.advance_epoch(log=False)
    assert [e.kind for e in events] == ["squeezed"]


# -- 7. smaller messages ------------------------------------------------------------------------


def test_a_discovery_with_no_valid_bound_says_so() -> None:
    sched = ConstraintScheduler(ConstraintSpec("kl", "upper", margin=1.0))
    for v in (-1.7, -2.5):
        sched.observe(v)
    (found, _) = sched.advance_epoch(log=False)
    assert found.clamped
    assert found.level == "warning"
    assert "max -1.7" in found.message
    assert "no valid ceiling lies there" in found.message


def test_none_is_named_as_none_not_as_a_non_finite_value() -> None:
    sched = ConstraintScheduler(ConstraintSpec("kl", "upper", margin=1.0), nonfinite="raise")
    with pytest.raises(TypeError, match=r"got None \(NoneType"):
        sched.observe(None)


def test_squeeze_epochs_zero_names_the_argument() -> None:
    with pytest.raises(ValueError, match="ConstraintTerm: squeeze_epochs must be >= 1, got 0"):
        ConstraintTerm("kl", target=5.0, squeeze_epochs=0)


def test_states_of_real_runs_still_load() -> None:
    term = term_after_two_epochs()
    clone = ConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
    clone.load_state_dict(copy.deepcopy(term.state_dict()))
    assert math.isclose(clone.weight, term.weight)


def test_a_device_median_whose_small_sample_kept_no_valid_value_still_ends_its_epoch() -> None:
    """The device keeps a sample of steps: with room for one, it can keep a step without a
    valid value of the spec, though the spec had one; the epoch's mean then stands in."""
    spec = ConstraintSpec("a", "upper", margin=0.001)
    sched = TorchScheduler(
        ConstraintScheduler(
            spec,
            discovery=DiscoveryPhase(statistic="median", reservoir=1),
            hold=HoldPhase(epochs=0),
            squeeze=SqueezeSchedule.table({2: 1.0}),
        ),
        accumulate="device",
    )
    sched.observe({"a": torch.tensor(math.nan, dtype=torch.float64)})
    sched.observe({"a": torch.tensor(0.0, dtype=torch.float64)})
    events = sched.advance_epoch(log=False)
    assert events[0].kind == "discovered"
    assert sched.last_tallies["a"].valid == 1
