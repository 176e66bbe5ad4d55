"""One shape for reading state, one set of accepted flags: core, collection and torch adapter.

The core's cases run without torch; the adapter's are skipped where torch is
not installed.
"""

from __future__ import annotations

import copy
import doctest
import importlib
import importlib.util
import pickle
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from constraint_sched import (
    ConstraintScheduler,
    ConstraintSpec,
    EpochStats,
    Phase,
    SchedulerCollection,
    SqueezeSchedule,
)

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")

KL_MAX = 900.0


def kl_core() -> ConstraintScheduler:
    """One ceiling: discovered in epoch 1, held in epoch 2, squeezed to 300 in epoch 3."""
    spec = ConstraintSpec("kl", "upper", margin=1e9)
    return ConstraintScheduler(spec, squeeze=SqueezeSchedule.table({3: 300.0}))


def two_cores() -> SchedulerCollection:
    mse = ConstraintScheduler(ConstraintSpec("mse", "minimize_soft", scale="auto"))
    return SchedulerCollection([kl_core(), mse])


def torch_of(core: ConstraintScheduler | SchedulerCollection) -> Any:
    from constraint_sched.adapters.torch import TorchScheduler

    return TorchScheduler(core)


# Every object that reads state, with one scheduler: the same answers from each.
ONE: dict[str, Callable[[], Any]] = {
    "core": kl_core,
    "collection-of-one": lambda: SchedulerCollection([kl_core()]),
    "torch": lambda: torch_of(kl_core()),
    "torch-of-collection-of-one": lambda: torch_of(SchedulerCollection([kl_core()])),
}
# With several schedulers: there is no one phase, bound or last epoch.
SEVERAL: dict[str, Callable[[], Any]] = {
    "collection": two_cores,
    "torch": lambda: torch_of(two_cores()),
}


def _params(table: dict[str, Callable[[], Any]]) -> list[Any]:
    return [
        pytest.param(make, id=name, marks=[needs_torch] if "torch" in name else [])
        for name, make in table.items()
    ]


one = pytest.mark.parametrize("make", _params(ONE))
several = pytest.mark.parametrize("make", _params(SEVERAL))


def feed(sched: Any, values: dict[str, float]) -> None:
    """One accepted step and the epoch's end, through the object's own observe."""
    sched.observe(values)
    sched.advance_epoch()


# --- phase, phase_of, phases ------------------------------------------------------------


@one
def test_phase_is_the_phase_itself_at_the_start(make: Callable[[], Any]) -> None:
    sched = make()
    assert sched.phase is Phase.DISCOVERY


@one
def test_phase_follows_the_schedule(make: Callable[[], Any]) -> None:
    sched = make()
    feed(sched, {"kl": KL_MAX})
    assert sched.phase is Phase.HOLD
    feed(sched, {"kl": KL_MAX})
    assert sched.phase is Phase.CONVERGED  # the table's last entry is the target


@one
def test_phase_of_and_phases_read_by_spec_name(make: Callable[[], Any]) -> None:
    sched = make()
    assert sched.phase_of("kl") is Phase.DISCOVERY
    assert sched.phases == {"kl": Phase.DISCOVERY}
    feed(sched, {"kl": KL_MAX})
    assert sched.phase_of("kl") is Phase.HOLD
    assert sched.phases == {"kl": Phase.HOLD}


@several
def test_phase_of_and_phases_with_several_schedulers(make: Callable[[], Any]) -> None:
    sched = make()
    feed(sched, {"kl": KL_MAX, "mse": 0.5})
    assert sched.phase_of("kl") is Phase.HOLD
    assert sched.phase_of("mse") is Phase.HOLD
    assert sched.phases == {"kl": Phase.HOLD, "mse": Phase.HOLD}
    feed(sched, {"kl": KL_MAX, "mse": 0.5})
    assert sched.phases == {"kl": Phase.CONVERGED, "mse": Phase.CONVERGED}


@several
def test_phase_with_several_schedulers_says_to_use_phase_of(make: Callable[[], Any]) -> None:
    sched = make()
    with pytest.raises(ValueError, match=r"use phase_of\(name\).*\['kl', 'mse'\]"):
        _ = sched.phase


@pytest.mark.parametrize("make", _params({**ONE, **{f"{k}-2": v for k, v in SEVERAL.items()}}))
def test_phase_of_an_unknown_spec_names_the_known_ones(make: Callable[[], Any]) -> None:
    sched = make()
    with pytest.raises(KeyError, match=r"no spec 'nope'; it has \[.*'kl'.*\]"):
        sched.phase_of("nope")


# --- epoch, last_epoch, last_epoch_of ------------------------------------------------------


@one
def test_epoch_and_last_epoch_read_the_same_everywhere(make: Callable[[], Any]) -> None:
    sched, reference = make(), kl_core()
    assert (sched.epoch, sched.last_epoch, sched.last_epoch_of("kl")) == (1, None, None)
    sched.observe({"kl": KL_MAX})
    reference.observe({"kl": KL_MAX})
    sched.advance_epoch()
    reference.advance_epoch()
    assert sched.epoch == 2
    assert isinstance(sched.last_epoch, EpochStats)
    assert sched.last_epoch == reference.last_epoch
    assert sched.last_epoch_of("kl") == reference.last_epoch


@several
def test_last_epoch_with_several_schedulers_says_to_use_last_epoch_of(
    make: Callable[[], Any],
) -> None:
    sched = make()
    feed(sched, {"kl": KL_MAX, "mse": 0.5})
    with pytest.raises(ValueError, match=r"use last_epoch_of\(name\)"):
        _ = sched.last_epoch
    kl = sched.last_epoch_of("kl")
    assert kl is not None
    assert (kl.epoch, kl.phase, kl.steps) == (1, Phase.DISCOVERY, 1)


# --- bound, bound_of ----------------------------------------------------------------------


@one
def test_bound_is_a_float_everywhere(make: Callable[[], Any]) -> None:
    sched = make()
    assert isinstance(sched.bound, float)
    assert sched.bound == 1e9  # the spec's own during discovery
    assert sched.bound_of("kl") == 1e9
    feed(sched, {"kl": KL_MAX})
    assert sched.bound == KL_MAX
    assert sched.bound + 1.0 == KL_MAX + 1.0
    assert f"{sched.bound:.1f}" == "900.0"
    assert sched.bound_of("kl") == KL_MAX


@several
def test_bound_of_reads_each_spec_with_several_schedulers(make: Callable[[], Any]) -> None:
    sched = make()
    feed(sched, {"kl": KL_MAX, "mse": 0.5})
    assert sched.bound_of("kl") == KL_MAX
    assert sched.bound_of("mse") == 0.5
    assert isinstance(sched.bound_of("mse"), float)


def test_collection_bound_with_several_schedulers_says_to_use_bound_of() -> None:
    with pytest.raises(ValueError, match=r"use bound_of\(name\).*\['kl', 'mse'\]"):
        _ = two_cores().bound


@needs_torch
@pytest.mark.parametrize(
    "use",
    [
        float,
        int,
        bool,
        lambda b: b + 1.0,
        lambda b: 1.0 - b,
        lambda b: b == 1e9,
        lambda b: b < 2,
        lambda b: f"{b:.3g}",
    ],
    ids=["float", "int", "bool", "add", "rsub", "eq", "lt", "format"],
)
def test_torch_bound_with_several_schedulers_is_no_number(use: Callable[[Any], Any]) -> None:
    bound = torch_of(two_cores()).bound
    with pytest.raises(ValueError, match=r"use bound_of\(name\).*\['kl', 'mse'\]"):
        use(bound)
    assert "bound_of(name)" in repr(bound)


# --- the torch adapter: bound_tensor and the deprecated call forms ---------------------------


@needs_torch
def test_bound_tensor_is_the_cached_tensor_of_the_bound() -> None:
    import torch

    sched = torch_of(kl_core())
    ceiling = sched.bound_tensor("kl", dtype=torch.float64)
    assert ceiling is sched.bound_tensor(dtype=torch.float64)
    feed(sched, {"kl": KL_MAX})
    assert ceiling.item() == sched.bound == KL_MAX


@needs_torch
def test_the_old_bound_call_warns_and_returns_the_tensor() -> None:
    import torch

    sched = torch_of(kl_core())
    with pytest.warns(
        DeprecationWarning,
        match=r"TorchScheduler\.bound\(\.\.\.\) is deprecated; use bound_tensor\(\.\.\.\)",
    ):
        old = sched.bound("kl", device="cpu", dtype=torch.float64)
    assert old is sched.bound_tensor("kl", dtype=torch.float64)
    with pytest.warns(DeprecationWarning, match="use bound_tensor"):
        assert sched.bound() is sched.bound_tensor()


@needs_torch
def test_the_old_bound_call_works_with_several_schedulers_too() -> None:
    sched = torch_of(two_cores())
    with pytest.warns(DeprecationWarning, match="use bound_tensor"):
        old = sched.bound("kl", device="cpu")
    assert old is sched.bound_tensor("kl")


@needs_torch
def test_the_warning_points_at_the_caller() -> None:
    with pytest.warns(DeprecationWarning, match="deprecated") as caught:
        torch_of(kl_core()).bound("kl")
    assert caught[0].filename == __file__


@needs_torch
def test_a_torch_bound_pickles_and_copies_as_a_plain_float() -> None:
    bound = torch_of(kl_core()).bound
    for other in (pickle.loads(pickle.dumps(bound)), copy.copy(bound), copy.deepcopy(bound)):
        assert type(other) is float
        assert other == 1e9


@needs_torch
def test_the_old_phase_call_raises_type_error() -> None:
    sched = torch_of(kl_core())
    with pytest.raises(TypeError, match="not callable"):
        sched.phase("kl")  # the Phase itself now: use phase_of("kl")


@needs_torch
def test_the_lightning_callback_reads_like_the_torch_scheduler() -> None:
    pytest.importorskip("lightning")
    import torch

    from constraint_sched.adapters.lightning import ConstraintCallback

    callback = ConstraintCallback(kl_core())
    assert callback.phase is Phase.DISCOVERY
    assert callback.phase_of("kl") is Phase.DISCOVERY
    assert callback.phases == {"kl": Phase.DISCOVERY}
    assert (callback.bound, callback.bound_of("kl")) == (1e9, 1e9)
    ceiling = callback.bound_tensor("kl", dtype=torch.float64)
    with pytest.warns(
        DeprecationWarning, match=r"ConstraintCallback\.bound\(\.\.\.\) is deprecated"
    ):
        assert callback.bound("kl", dtype=torch.float64) is ceiling


# --- flags: reject and restore_if -----------------------------------------------------------

COUNTS = [
    pytest.param(True, 1, id="True"),
    pytest.param(False, 0, id="False"),
    pytest.param(3, 3, id="int"),
    pytest.param(np.True_, 1, id="numpy-bool"),
    pytest.param(np.int64(2), 2, id="numpy-int64"),
    pytest.param(np.uint8(4), 4, id="numpy-uint8"),
    pytest.param(np.array(True), 1, id="numpy-0d-bool"),
    pytest.param(np.array(5, dtype=np.int32), 5, id="numpy-0d-int"),
]
NOT_COUNTS = [
    pytest.param(1.0, "float", id="float"),
    pytest.param("1", "str", id="str"),
    pytest.param(None, "NoneType", id="None"),
    pytest.param(np.float64(1.0), "float64", id="numpy-float"),
    pytest.param(
        np.array([1, 2]), r"numpy array of dtype int64 and shape \(2,\)", id="numpy-array"
    ),
    pytest.param(np.array(1.0), "numpy array of dtype float64", id="numpy-0d-float"),
]
HOST_REJECTERS = {
    "core": (kl_core, "ConstraintScheduler.reject"),
    "collection": (two_cores, "SchedulerCollection.reject"),
    "torch": (lambda: torch_of(two_cores()), "TorchScheduler.reject"),
}
rejecters = pytest.mark.parametrize(
    ("make", "where"),
    [
        pytest.param(*value, id=name, marks=[needs_torch] if name == "torch" else [])
        for name, value in HOST_REJECTERS.items()
    ],
)


def rejects_of(sched: Any) -> int:
    """The rejected steps the object counted this epoch, after ending it."""
    sched.advance_epoch()
    core = sched.core if hasattr(sched, "core") else sched
    first = core if isinstance(core, ConstraintScheduler) else next(iter(core))
    assert first.last_epoch is not None
    return first.last_epoch.rejects


@rejecters
@pytest.mark.parametrize(("count", "expected"), COUNTS)
def test_reject_takes_ints_bools_and_numpy_scalars(
    make: Callable[[], Any], where: str, count: Any, expected: int
) -> None:
    sched = make()
    sched.reject(count)
    assert rejects_of(sched) == expected


@rejecters
@pytest.mark.parametrize(("count", "kind"), NOT_COUNTS)
def test_reject_refuses_other_types_naming_the_argument_and_type(
    make: Callable[[], Any], where: str, count: Any, kind: str
) -> None:
    sched = make()
    with pytest.raises(
        TypeError, match=rf"{re.escape(where)}: count must be an int >= 0.*got {kind}"
    ):
        sched.reject(count)
    assert rejects_of(sched) == 0


@rejecters
@pytest.mark.parametrize("count", [-1, np.int64(-2), np.array(-3)], ids=["int", "numpy", "0d"])
def test_reject_refuses_a_negative_count(make: Callable[[], Any], where: str, count: Any) -> None:
    sched = make()
    with pytest.raises(ValueError, match=rf"{re.escape(where)}: count must be an int >= 0, got"):
        sched.reject(count)
    assert rejects_of(sched) == 0


@needs_torch
def test_torch_reject_refuses_a_float_tensor() -> None:
    import torch

    with pytest.raises(
        TypeError, match=r"count must be .*one-element bool tensor, got a torch\.float32"
    ):
        torch_of(kl_core()).reject(torch.tensor(1.0))


def _guarded() -> tuple[Any, Any, Any]:
    """A model after one SGD step since its snapshot: (model, guard, the weights before)."""
    import torch

    from constraint_sched.adapters.torch import RollbackGuard

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    guard = RollbackGuard(model, opt)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()  # the momentum buffers exist: restore_if sees the same structure
    guard.snapshot()
    before = model.weight.detach().clone()
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, guard, before


@needs_torch
@pytest.mark.parametrize(
    ("flag", "restores"),
    [
        pytest.param(True, True, id="True"),
        pytest.param(False, False, id="False"),
        pytest.param(np.True_, True, id="numpy-True"),
        pytest.param(np.False_, False, id="numpy-False"),
        pytest.param(np.array(True), True, id="numpy-0d"),
    ],
)
def test_restore_if_takes_a_host_bool(flag: Any, restores: bool) -> None:
    import torch

    model, guard, before = _guarded()
    after = model.weight.detach().clone()
    guard.restore_if(flag)
    assert torch.equal(model.weight, before if restores else after)
    assert guard._host_reads == 0  # nothing to read: the value is on the host already


@needs_torch
def test_restore_if_with_a_host_bool_still_needs_a_snapshot() -> None:
    import torch

    from constraint_sched.adapters.torch import RollbackGuard

    with pytest.raises(RuntimeError, match="before snapshot"):
        RollbackGuard(torch.nn.Linear(2, 1)).restore_if(False)


@needs_torch
@pytest.mark.parametrize(
    ("flag", "match"),
    [
        pytest.param(1, "got int 1", id="int"),
        pytest.param(1.0, "got float 1.0", id="float"),
        pytest.param("yes", "got str 'yes'", id="str"),
        pytest.param(np.int64(1), "got int64", id="numpy-int"),
        pytest.param("float-tensor", "got dtype torch.float32", id="float-tensor"),
    ],
)
def test_restore_if_refuses_anything_but_bools(flag: Any, match: str) -> None:
    import torch

    _, guard, _ = _guarded()
    if flag == "float-tensor":
        flag = torch.tensor(1.0)
    with pytest.raises(TypeError, match=rf"flag must be a torch\.bool tensor.*{re.escape(match)}"):
        guard.restore_if(flag)


# --- per-sample tensors where one number is expected ----------------------------------------


@needs_torch
@pytest.mark.parametrize("how", ["LBOObjective", "lbo_objective"])
def test_lbo_refuses_per_sample_scores_naming_the_goal_and_shape(how: str) -> None:
    import torch

    from constraint_sched.adapters.torch import LBOObjective, lbo_objective

    scores = {"kl": torch.rand(4), "mse": torch.tensor(0.5)}
    groups = {"g": ["mse", "kl"]}
    call = (
        (lambda: LBOObjective(groups)(scores))
        if how == "LBOObjective"
        else (lambda: lbo_objective(scores, groups))
    )
    with pytest.raises(
        ValueError,
        match=r"goal 'kl'.*shape \(4,\).*reduce per-sample scores first \(e\.g\. with \.mean\(\)\) or pass a 0-d score",
    ):
        call()


@needs_torch
def test_lbo_takes_one_element_scores_of_any_shape() -> None:
    import torch

    from constraint_sched.adapters.torch import LBOObjective

    result = LBOObjective({"g": ["a", "b"]})(
        {"a": torch.tensor([0.25]), "b": torch.tensor([[1.0]])}
    )
    assert float(result.groups[0]) == pytest.approx(0.5)


@needs_torch
def test_lbo_refuses_a_score_that_is_not_a_tensor() -> None:
    from constraint_sched.adapters.torch import LBOObjective

    with pytest.raises(TypeError, match=r"score of goal 'a' must be a tensor, got float 0\.5"):
        LBOObjective({"g": ["a"]})({"a": 0.5})  # type: ignore[dict-item]


@needs_torch
def test_torch_observe_refuses_per_sample_values_naming_the_spec_and_shape() -> None:
    import torch

    with pytest.raises(
        ValueError,
        match=r"value of 'kl' must hold one element, got a tensor of shape \(4,\): reduce per-sample values first",
    ):
        torch_of(kl_core()).observe("kl", torch.rand(4))


@needs_torch
def test_torch_scores_and_violations_are_elementwise() -> None:
    import torch

    sched = torch_of(two_cores())
    feed(sched, {"kl": KL_MAX, "mse": 0.5})
    x = torch.tensor([100.0, 2000.0])
    assert sched.score("kl", x).shape == (2,)
    assert sched.log_score("kl", x).shape == (2,)
    assert sched.violation("kl", x).tolist() == [0.0, 1100.0]


# --- the torch adapter's docstring examples --------------------------------------------------


@needs_torch
@pytest.mark.parametrize("module", ["_scheduler", "_lbo", "_rollback"])
def test_torch_adapter_docstring_examples_run(module: str) -> None:
    mod = importlib.import_module(f"constraint_sched.adapters.torch.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
