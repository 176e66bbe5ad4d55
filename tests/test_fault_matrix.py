"""The bad-input and fault matrix of the core and the torch adapter: one row per case.

Each row builds an object, does one wrong thing to it, and names the exception
and the words its message must contain (the offending field, name or value).
Rows marked ``unchanged`` also require the object's ``state_dict()`` to be the
same afterwards: a refused call records nothing, so a retry counts nothing
twice. The command line's matrix is in ``test_fault_matrix_cli.py``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import pytest

from constraint_sched import (
    Backoff,
    ConstraintScheduler,
    ConstraintSpec,
    ConstraintTerm,
    HoldPhase,
    Phase,
    SchedulerCollection,
    SqueezeSchedule,
)

torch = pytest.importorskip("torch")

from constraint_sched.adapters.torch import TorchScheduler  # noqa: E402


@attrs.frozen
class Case:
    """One row: ``act(make())`` raises ``error`` with every one of ``words`` in its message."""

    id: str
    make: Callable[[], Any]
    act: Callable[[Any], object]
    error: type[Exception]
    words: tuple[str, ...]
    unchanged: bool = True
    """The object's ``state_dict()`` is the same after the refusal."""


# -- the objects -----------------------------------------------------------------------


def two() -> ConstraintScheduler:
    return ConstraintScheduler(
        [ConstraintSpec("a", "upper", margin=1e9), ConstraintSpec("b", "upper", margin=1e9)],
        nonfinite="raise",
    )


def squeezing() -> ConstraintScheduler:
    return ConstraintScheduler(
        ConstraintSpec("kl", "upper", margin=1e9),
        hold=HoldPhase(epochs=2),
        squeeze=SqueezeSchedule.geometric(target=10.0, epochs=3),
        backoff=Backoff(cooldown=1),
    )


def collection() -> SchedulerCollection:
    return SchedulerCollection(
        [
            ConstraintScheduler(ConstraintSpec("a", "upper", margin=1e9)),
            ConstraintScheduler(ConstraintSpec("b", "upper", margin=1e9), nonfinite="raise"),
        ]
    )


def adapter(accumulate: str = "auto", *, nonfinite: str = "skip") -> TorchScheduler:
    return TorchScheduler(
        ConstraintScheduler(
            [ConstraintSpec("a", "upper", margin=1e9), ConstraintSpec("kl", "upper", margin=1e9)],
            nonfinite=nonfinite,  # type: ignore[arg-type]
        ),
        accumulate=accumulate,  # type: ignore[arg-type]
    )


def observed(sched: Any) -> Any:
    """``sched`` after an epoch's first step, so a refusal has something to leave alone."""
    if isinstance(sched, TorchScheduler):  # tensors: the device path when asked for
        sched.observe({"a": torch.tensor(1.0), "kl": torch.tensor(2.0)})
    else:
        sched.observe({"a": 1.0, "b": 2.0})
    return sched


def _names(sched: Any) -> tuple[str, ...]:
    if isinstance(sched, SchedulerCollection):
        return tuple(n for s in sched for n in s.names)
    return tuple(sched.names)


def loading(change: Callable[[dict[str, Any]], None]) -> Callable[[Any], object]:
    """Load the object's own state dict, changed by ``change``."""

    def act(sched: Any) -> object:
        state = copy.deepcopy(sched.state_dict())
        change(state)
        sched.load_state_dict(state)
        return None

    return act


def at_hold(sched: ConstraintScheduler) -> ConstraintScheduler:
    sched.observe(100.0)
    sched.advance_epoch()  # discovered 100, held
    assert sched.phase is Phase.HOLD
    return sched


def state_field(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(state: dict[str, Any]) -> None:
        state["state"][key] = value

    return change


def without(key: str) -> Callable[[dict[str, Any]], None]:
    def change(state: dict[str, Any]) -> None:
        del state["state"][key]

    return change


def converged_at(bound: float) -> Callable[[dict[str, Any]], None]:
    def change(state: dict[str, Any]) -> None:
        state["state"].update(phase="CONVERGED", bound=bound, hold_left=0)

    return change


def epoch_field(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(state: dict[str, Any]) -> None:
        state["epoch"][key] = value

    return change


def meta(value: float = 1.0) -> Any:
    return torch.tensor(value, device="meta")


CASES = [
    # -- observe: a mapping is checked whole before anything is recorded -------------
    Case(
        "core: observe a mapping with an unknown name",
        lambda: observed(two()),
        lambda s: s.observe({"a": 1.0, "zzz": 2.0}),
        KeyError,
        ("zzz", "'a', 'b'"),
    ),
    Case(
        "core: observe a mapping with a value that is no number",
        lambda: observed(two()),
        lambda s: s.observe({"a": 1.0, "b": "big"}),
        TypeError,
        ("'b'", "'big'", "number"),
    ),
    Case(
        "core: observe a mapping with a NaN under nonfinite='raise'",
        lambda: observed(two()),
        lambda s: s.observe({"a": 1.0, "b": math.nan}),
        ValueError,
        ("non-finite", "'b'", "nothing was recorded"),
    ),
    Case(
        "core: a negative reject count",
        lambda: observed(two()),
        lambda s: s.reject(-1),
        ValueError,
        ("-1",),
    ),
    Case(
        "core: a float reject count",
        lambda: observed(two()),
        lambda s: s.reject(1.5),
        TypeError,
        ("1.5",),
    ),
    Case(
        "collection: observe a mapping with an unknown name",
        lambda: observed(collection()),
        lambda c: c.observe({"a": 1.0, "zzz": 2.0}),
        KeyError,
        ("zzz",),
    ),
    Case(
        "collection: a bad value for the second scheduler records nothing in the first",
        lambda: observed(collection()),
        lambda c: c.observe({"a": 1.0, "b": math.inf}),
        ValueError,
        ("non-finite", "'b'"),
    ),
    Case(
        "adapter: observe a mapping with an unknown name",
        lambda: observed(adapter()),
        lambda s: s.observe({"a": torch.tensor(1.0), "zzz": 2.0}),
        KeyError,
        ("zzz", "'a', 'kl'"),
    ),
    Case(
        "adapter (device path): observe a mapping with an unknown name",
        lambda: observed(adapter("device")),
        lambda s: s.observe({"a": torch.tensor(1.0), "zzz": 2.0}),
        KeyError,
        ("zzz",),
    ),
    Case(
        "adapter: a host NaN after a good value under nonfinite='raise'",
        lambda: observed(adapter(nonfinite="raise")),
        lambda s: s.observe({"a": 1.0, "kl": math.nan}),
        ValueError,
        ("non-finite", "'kl'", "nothing was recorded"),
    ),
    Case(
        "adapter: a value tensor of several elements",
        lambda: observed(adapter()),
        lambda s: s.observe({"a": 1.0, "kl": torch.ones(3)}),
        ValueError,
        ("'kl'", "(3,)", ".mean()"),
    ),
    # -- tensors that hold no real value ------------------------------------------------
    Case(
        "adapter: a meta tensor",
        lambda: observed(adapter()),
        lambda s: s.observe("kl", meta()),
        ValueError,
        ("'kl'", "meta tensor"),
    ),
    Case(
        "adapter (device path): a meta tensor in a mapping",
        lambda: observed(adapter("device")),
        lambda s: s.observe({"a": torch.tensor(1.0), "kl": meta()}),
        ValueError,
        ("'kl'", "meta tensor"),
    ),
    Case(
        "adapter: a meta accepted flag",
        lambda: observed(adapter()),
        lambda s: s.observe("kl", torch.tensor(1.0), accepted=torch.tensor(True, device="meta")),
        ValueError,
        ("accepted", "meta tensor"),
    ),
    Case(
        "adapter: a meta reject flag",
        lambda: observed(adapter()),
        lambda s: s.reject(torch.tensor(True, device="meta")),
        ValueError,
        ("reject", "meta tensor"),
    ),
    Case(
        "adapter (device path): a complex tensor",
        lambda: observed(adapter("device")),
        lambda s: s.observe("kl", torch.tensor(1.0 + 2.0j)),
        TypeError,
        ("'kl'", "real", "complex"),
    ),
    Case(
        "adapter (host path): a complex tensor",
        lambda: observed(adapter("host")),
        lambda s: s.observe("kl", torch.tensor(1.0 + 2.0j)),
        TypeError,
        ("'kl'", "real", "complex"),
    ),
    # -- schedules built directly ---------------------------------------------------------
    Case(
        "SqueezeSchedule: an unknown kind",
        lambda: None,
        lambda _: SqueezeSchedule("bogus", target=1.0),  # type: ignore[arg-type]
        ValueError,
        ("SqueezeSchedule.kind", "'bogus'", "'geometric'"),
        unchanged=False,
    ),
    Case(
        "SqueezeSchedule: geometric without epochs",
        lambda: None,
        lambda _: SqueezeSchedule("geometric", target=1.0),
        ValueError,
        ("epochs", "None"),
        unchanged=False,
    ),
    Case(
        "SqueezeSchedule: linear with 0 epochs",
        lambda: None,
        lambda _: SqueezeSchedule("linear", target=1.0, epochs=0),
        ValueError,
        ("epochs", "0"),
        unchanged=False,
    ),
    Case(
        "SqueezeSchedule: a table without entries",
        lambda: None,
        lambda _: SqueezeSchedule("table", target=1.0),
        ValueError,
        ("table_entries", "SqueezeSchedule.table"),
        unchanged=False,
    ),
    Case(
        "SqueezeSchedule: adaptive without a factor",
        lambda: None,
        lambda _: SqueezeSchedule("adaptive", target=1.0),
        ValueError,
        ("factor", "None"),
        unchanged=False,
    ),
    Case(
        "SqueezeSchedule: a geometric target of 0",
        lambda: None,
        lambda _: SqueezeSchedule("geometric", target=0.0, epochs=2),
        ValueError,
        ("target must not be 0",),
        unchanged=False,
    ),
    # -- state dicts the transitions could never have written -----------------------------
    Case(
        "core state: CONVERGED at a bound that is not the target",
        lambda: at_hold(squeezing()),
        loading(converged_at(50.0)),
        ValueError,
        ("state.bound", "CONVERGED", "10.0", "50.0"),
    ),
    Case(
        "core state: a hold_left of a million",
        lambda: at_hold(squeezing()),
        loading(state_field("hold_left", 10**6)),
        ValueError,
        ("state.hold_left", "1000000", "1 to 3"),
    ),
    Case(
        "core state: hold_left outside a hold",
        lambda: squeezing(),
        loading(state_field("hold_left", 2)),
        ValueError,
        ("state.hold_left", "DISCOVERY"),
    ),
    Case(
        "core state: a wait longer than the cooldown",
        lambda: at_hold(squeezing()),
        loading(state_field("wait", 5)),
        ValueError,
        ("state.wait", "cooldown", "5"),
    ),
    Case(
        "core state: no last_epoch",
        lambda: at_hold(squeezing()),
        loading(without("last_epoch")),
        ValueError,
        ("state", "last_epoch"),
    ),
    Case(
        "core state: a bound below the floor of valid bounds",
        lambda: at_hold(squeezing()),
        loading(state_field("bound", -5.0)),
        ValueError,
        ("state.bound", "-5.0", "'kl'"),
    ),
    Case(
        "core state: an infinite held bound",
        lambda: at_hold(squeezing()),
        loading(state_field("bound", "inf")),
        ValueError,
        ("state.bound", "finite"),
    ),
    Case(
        "adapter state: statistics on a device that is no device",
        lambda: observed(adapter("device")),
        loading(
            lambda state: state["epoch"]["devices"][0].update(device="nowhere"),
        ),
        ValueError,
        ("devices[0].device", "'nowhere'"),
    ),
    Case(
        "adapter state: a negative host count",
        lambda: observed(adapter()),
        loading(lambda state: state["epoch"]["host"]["count"].__setitem__(0, -1)),
        ValueError,
        ("epoch.host.count[0]", "-1"),
    ),
    Case(
        "adapter state: no window_calls",
        lambda: observed(adapter()),
        loading(lambda state: state["epoch"].pop("window_calls")),
        ValueError,
        ("epoch", "window_calls"),
    ),
    # -- the one-line term ----------------------------------------------------------------
    Case(
        "term: a single number without reduction='mean'",
        lambda: ConstraintTerm("kl", target=1.0, echo=False),
        lambda term: term(3.0),
        ValueError,
        ("reduction='mean'",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_is_refused_with_a_message_that_names_it(case: Case) -> None:
    target = case.make()
    before = copy.deepcopy(target.state_dict()) if case.unchanged else None
    with pytest.raises(case.error) as raised:
        case.act(target)
    message = str(raised.value)
    missing = [w for w in case.words if w not in message]
    assert not missing, f"{missing} not in {message!r}"
    if before is not None:
        assert target.state_dict() == before


# -- what a refusal leaves usable ------------------------------------------------------------


@pytest.mark.parametrize("accumulate", ["auto", "device"])
def test_after_a_refused_meta_tensor_the_scheduler_saves_and_ends_its_epochs(
    accumulate: str,
) -> None:
    sched = adapter(accumulate)
    sched.observe({"a": torch.tensor(1.0), "kl": torch.tensor(2.0)})
    with pytest.raises(ValueError, match="meta tensor"):
        sched.observe({"a": torch.tensor(1.0), "kl": meta()})
    sched.state_dict()
    events = sched.advance_epoch()
    assert [(e.kind, e.new) for e in events if e.kind == "discovered"] == [("discovered", 2.0)]
    assert sched.last_tallies["a"].count == 1  # the refused mapping's "a" was not counted


def test_a_retried_mapping_counts_each_value_once_in_the_core_collection_and_adapter() -> None:
    core, group, torch_sched = two(), collection(), adapter()
    for sched in (core, group, torch_sched):
        with pytest.raises(KeyError):
            sched.observe({"a": 5.0, "typo": 1.0})
        names = _names(sched)
        sched.observe({"a": 5.0, names[1]: 1.0})  # the retry, spelled right
    assert core.current_epoch.steps == 1
    assert group["a"].current_epoch.steps == 1
    assert torch_sched._feed.host.count == [1, 1]


@pytest.mark.parametrize(
    "flag",
    [True, np.bool_(True), np.array(True), torch.tensor(True)],
    ids=["bool", "numpy-bool", "numpy-0d", "tensor-0d"],
)
def test_reject_takes_a_bool_flag_alike_in_the_core_and_the_adapter(flag: Any) -> None:
    core = two()
    if not isinstance(flag, torch.Tensor):  # tensors are the adapter's
        core.reject(flag)
        assert core.current_epoch.rejects == 1
    sched = adapter()
    sched.reject(flag)
    sched.observe({"a": 1.0, "kl": 1.0})
    sched.advance_epoch()
    assert sched.core.last_epoch is not None
    assert sched.core.last_epoch.rejects == 1
