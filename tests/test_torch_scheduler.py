"""TorchScheduler: the core's schedule from tensors, without host syncs, as tensors, saved."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import statistics
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from seed_data import KL_TABLE, MAX_KL_CORE, MAX_KL_DETAIL, kl_specs  # noqa: E402
from strategies import config_specs, observation_values, scheduler_configs  # noqa: E402
from torch._dynamo.testing import CompileCounter  # noqa: E402

from constraint_sched import (  # noqa: E402
    Backoff,
    ConstraintKind,
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    HoldPhase,
    Phase,
    SchedulerCollection,
    SqueezeSchedule,
)
from constraint_sched.adapters.torch import TorchScheduler  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
from host_reads import host_reads_forbidden  # noqa: E402

# Torch's own warnings while compiling: dynamo traces through array_api_compat's lru_cache
# helpers (2.13), and some torch versions (2.11) still reach torch.jit.script_method.
dynamo_warnings = pytest.mark.filterwarnings(
    "ignore:Dynamo detected a call to a `functools.lru_cache`:UserWarning",
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning",
)

Core = ConstraintScheduler | SchedulerCollection

# Every way a tensor's value reaches the host (a device synchronisation on an accelerator).


# --- helpers ------------------------------------------------------------------------------


def schedulers_of(core: Core) -> list[ConstraintScheduler]:
    return [core] if isinstance(core, ConstraintScheduler) else list(core)


def seed_core() -> ConstraintScheduler:
    return ConstraintScheduler(kl_specs(), squeeze=SqueezeSchedule.table(KL_TABLE))


def assert_same_schedule(sched: TorchScheduler, reference: Core) -> None:
    """Bounds, phases, epochs, specs and the last epoch's statistics all agree."""
    assert sched.epoch == reference.epoch
    for mine, theirs in zip(schedulers_of(sched.core), schedulers_of(reference), strict=True):
        assert (mine.name, mine.epoch, mine.phase) == (theirs.name, theirs.epoch, theirs.phase)
        assert mine.bound == theirs.bound
        assert mine.last_epoch == theirs.last_epoch
        for name in theirs.names:
            assert sched.spec(name) == theirs.spec(name)
            assert sched.phase_of(name) is theirs.phase
            assert sched.bound_tensor(name, dtype=torch.float64).item() == theirs.bound
            assert sched.bound_of(name) == theirs.bound


def kinds_collection() -> SchedulerCollection:
    """One scheduler per kind, each squeezed over a few epochs (floors for LOWER and a box)."""
    return SchedulerCollection(
        [
            ConstraintScheduler(
                ConstraintSpec("up", "upper", margin=1e3),
                squeeze=SqueezeSchedule.table({3: 80.0, 4: 60.0}),
            ),
            ConstraintScheduler(
                ConstraintSpec("lo", "lower", margin=1.0),
                side="lower",
                squeeze=SqueezeSchedule.table({3: 12.0, 4: 14.0}),
            ),
            ConstraintScheduler(
                ConstraintSpec("bx", "box", lower=0.0, upper=100.0),
                squeeze=SqueezeSchedule.linear(target=8.0, epochs=2),
            ),
            ConstraintScheduler(
                ConstraintSpec("bf", "box", lower=-100.0, upper=100.0),
                side="lower",
                squeeze=SqueezeSchedule.linear(target=-4.0, epochs=2),
            ),
            ConstraintScheduler(
                ConstraintSpec("ba", "box_asymmetric", lower=0.0, healthy=2.0, upper=1e9),
                squeeze=SqueezeSchedule.geometric(target=5.0, epochs=2),
            ),
            ConstraintScheduler(
                ConstraintSpec("ms", "minimize_soft", scale="auto"),
                discovery=DiscoveryPhase(statistic="median"),
                squeeze=SqueezeSchedule.geometric(target=0.5, epochs=2),
            ),
            ConstraintScheduler(
                ConstraintSpec("mh", "minimize_hard", scale=100.0),
                squeeze=SqueezeSchedule.table({3: 1.5, 4: 1.0}),
            ),
        ]
    )


# Per spec of `kinds_collection`: what an epoch observes, and points to score.
KIND_VALUES: dict[str, tuple[list[float], list[float]]] = {
    "up": ([40.0, 100.0, 70.0], [-5.0, 10.0, 50.0, 75.0, 90.0, 150.0]),
    "lo": ([15.0, 10.0, 30.0], [5.0, 11.0, 13.0, 19.0, 25.0, 40.0]),
    "bx": ([3.0, 10.0, 6.0], [-1.0, 1.0, 3.0, 7.0, 12.0, 30.0]),
    "bf": ([-10.0, 0.0, 20.0], [-20.0, -8.0, -3.0, 3.0, 30.0, 120.0]),
    "ba": ([3.0, 10.0, 6.0], [-1.0, 1.0, 3.0, 7.0, 12.0, 40.0]),
    "ms": ([1.0, 3.0, 2.0], [-1.0, 0.25, 0.5, 1.0, 3.0, 9.0]),
    "mh": ([1.0, 2.0, 0.5], [-1.0, 0.5, 1.0, 2.0, 3.0, 9.0]),
}


# --- 1. the same schedule as the core -----------------------------------------------------

MAX_EPOCHS = 5
MAX_STEPS = 6


def exact_sample(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration whose median/quantile sample holds every value a drawn run can observe."""
    discovery = config["discovery"]
    reservoir = max(discovery.reservoir, MAX_EPOCHS * MAX_STEPS)
    return {**config, "discovery": attrs.evolve(discovery, reservoir=reservoir)}


def build(configs: list[dict[str, Any]]) -> Core:
    schedulers = [ConstraintScheduler(**c) for c in configs]
    return schedulers[0] if len(schedulers) == 1 else SchedulerCollection(schedulers)


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[list[tuple[Any, ...]]]]:
    """One or two schedulers' configurations, and the steps of a few epochs to feed them."""
    count = draw(st.integers(1, 2))
    configs = [
        exact_sample(draw(scheduler_configs(prefix=f"s{k}", nonfinite="skip")))
        for k in range(count)
    ]
    values = {s.name: observation_values(c) for c in configs for s in config_specs(c)}
    step = st.one_of(
        st.tuples(
            st.just("observe"),
            st.fixed_dictionaries({}, optional=values),
            st.sampled_from([None, True, False]),
            st.sampled_from([torch.float64, torch.float32]),
        ),
        st.tuples(st.just("reject"), st.integers(0, 3)),
    )
    epochs = draw(st.lists(st.lists(step, max_size=MAX_STEPS), min_size=1, max_size=MAX_EPOCHS))
    return configs, epochs


@settings(max_examples=40, deadline=None)
@given(runs())
def test_every_feed_schedules_exactly_as_the_core_observing_the_same_values(
    run: tuple[list[dict[str, Any]], list[list[tuple[Any, ...]]]],
) -> None:
    configs, epochs = run
    reference = build(configs)
    fed = {
        "cpu tensors, auto": TorchScheduler(build(configs)),
        "tensors, device": TorchScheduler(build(configs), accumulate="device"),
        "numbers": TorchScheduler(build(configs)),
    }
    for epoch in epochs:
        for step in epoch:
            if step[0] == "reject":
                count = step[1]
                reference.reject(count)
                fed["numbers"].reject(count)
                fed["cpu tensors, auto"].reject(torch.tensor(count))
                flag = torch.tensor(count == 1) if count <= 1 else torch.tensor(count)
                fed["tensors, device"].reject(flag)
                continue
            _, raw, accepted, dtype = step
            tensors = {n: torch.tensor(v, dtype=dtype) for n, v in raw.items()}
            numbers = {n: float(t) for n, t in tensors.items()}  # what the tensors hold
            if accepted is not False:
                reference.observe(numbers)
            on_device = None if accepted is None else torch.tensor(accepted)
            fed["numbers"].observe(numbers, accepted=accepted)
            fed["cpu tensors, auto"].observe(tensors, accepted=on_device)
            graded = {n: t.clone().requires_grad_() for n, t in tensors.items()}
            fed["tensors, device"].observe(graded, accepted=on_device)
        expected = reference.advance_epoch()
        for label, sched in fed.items():
            assert sched.advance_epoch() == expected, label
            assert_same_schedule(sched, reference)


@pytest.mark.parametrize("feed", ["tensors, device", "cpu tensors, auto", "numbers"])
def test_seed_kl_ceiling_epoch_by_epoch(feed: str) -> None:
    """The seed: two KL specs share a ceiling, discovered, held, squeezed by the table."""
    reference = seed_core()
    sched = TorchScheduler(seed_core(), accumulate="device" if "device" in feed else "auto")
    rng = random.Random(17)
    for epoch in range(1, 17):
        top_core = MAX_KL_CORE if epoch == 1 else 0.9 * reference.bound
        top_detail = MAX_KL_DETAIL if epoch == 1 else 0.8 * reference.bound
        steps = [(top_core, top_detail)] + [
            (rng.uniform(0.3, 1.0) * top_core, rng.uniform(0.3, 1.0) * top_detail)
            for _ in range(30)
        ]
        steps.insert(7, (math.nan, math.inf))
        rng.shuffle(steps)
        for i, (a, b) in enumerate(steps):
            if i % 11 == 5:  # a rejected step: no value is observed
                reference.reject()
                sched.reject(torch.tensor(True) if feed != "numbers" else 1)
            reference.observe({"kl_core": a, "kl_detail": b})
            if feed == "numbers":
                sched.observe({"kl_core": a, "kl_detail": b})
            else:
                kl = torch.tensor([a, b], dtype=torch.float64, requires_grad=True)
                sched.observe({"kl_core": kl[0], "kl_detail": kl[1]})
        events = sched.advance_epoch()
        assert events == reference.advance_epoch()
        assert_same_schedule(sched, reference)
        if epoch == 1:
            assert [e.kind for e in events] == ["discovered", "held"]
            assert events[0].new == MAX_KL_CORE
            assert events[0].per_spec == {"kl_core": MAX_KL_CORE, "kl_detail": MAX_KL_DETAIL}
        elif epoch + 1 in KL_TABLE:
            assert sched.bound_tensor(dtype=torch.float64).item() == KL_TABLE[epoch + 1]
    assert sched.phase_of("kl_core") is Phase.CONVERGED
    assert sched.core.bound == 3000.0


# --- 2. no host synchronisation on the device path ----------------------------------------


def sync_free_core() -> SchedulerCollection:
    return SchedulerCollection(
        [
            seed_core(),
            ConstraintScheduler(
                ConstraintSpec("mse", "minimize_soft", scale="auto"),
                discovery=DiscoveryPhase(statistic="median"),
            ),
        ]
    )


def sync_free_steps(n: int) -> list[tuple[Any, Any, Any, Any]]:
    """Tensors of every dtype for ``n`` steps: (kl_core, kl_detail, mse, accepted)."""
    rng = random.Random(5)
    steps = []
    for i in range(n):
        core = torch.tensor(rng.uniform(1e3, 4e4), dtype=torch.float64, requires_grad=True)
        detail = torch.tensor(math.nan if i % 13 == 4 else rng.uniform(1e3, 4e4))  # float32
        mse = torch.tensor(rng.uniform(0.01, 1.0), dtype=torch.bfloat16)
        steps.append((core * 1.0, detail, mse, torch.tensor(i % 5 != 2)))
    return steps


def feed_sync_free(sched: TorchScheduler, steps: list[tuple[Any, Any, Any, Any]]) -> None:
    for i, (core, detail, mse, accepted) in enumerate(steps):
        sched.observe({"kl_core": core, "kl_detail": detail, "mse": mse}, accepted=accepted)
        sched.reject(~accepted)
        if i % 7 == 0:
            sched.observe("mse", torch.tensor(math.nan, dtype=torch.float64))
        if i % 9 == 0:
            sched.observe("kl_detail", 2.5e4, accepted=accepted)  # a number, on the device


def test_the_device_path_never_reads_a_tensor_on_the_host() -> None:
    steps = sync_free_steps(120)
    sched = TorchScheduler(sync_free_core(), accumulate="device")
    with host_reads_forbidden():
        feed_sync_free(sched, steps)
    reference = sync_free_core()
    for i, (core, detail, mse, accepted) in enumerate(steps):
        if accepted:
            reference.observe({"kl_core": core.item(), "kl_detail": detail.item()})
            reference.observe({"mse": float(mse)})
        else:
            reference.reject()
        if i % 7 == 0:
            reference.observe({"mse": math.nan})
        if i % 9 == 0 and accepted:
            reference.observe({"kl_detail": 2.5e4})
    events = sched.advance_epoch()
    assert events == reference.advance_epoch()
    assert_same_schedule(sched, reference)
    accepted = [bool(a) for _, _, _, a in steps]
    accepted_mse = [float(m) for (_, _, m, _), ok in zip(steps, accepted, strict=True) if ok]
    mse = sched.last_tallies["mse"]
    assert (mse.count, mse.nonfinite) == (len(accepted_mse) + 18, 18)  # NaN at i % 7 == 0
    assert sched.spec("mse").scale == statistics.median(accepted_mse)  # exact: all sampled
    stats = sched.core["kl_core+kl_detail"].last_epoch
    assert stats is not None
    extra = sum(ok for i, ok in enumerate(accepted) if i % 9 == 0)  # the numbers, accepted
    assert (stats.steps, stats.rejects) == (sum(accepted) + extra, accepted.count(False))


@pytest.mark.parametrize("accumulate", ["host", "auto"])
def test_the_host_paths_do_read_tensors_which_the_guard_catches(accumulate: str) -> None:
    """The positive control: CPU tensors read on the host trip `host_reads_forbidden`."""
    sched = TorchScheduler(sync_free_core(), accumulate=accumulate)
    with host_reads_forbidden(), pytest.raises(AssertionError, match="host synchronisation"):
        feed_sync_free(sched, sync_free_steps(3))


def test_a_sampled_device_median_needs_no_host_read_and_estimates_the_median() -> None:
    """Beyond the reservoir the device keeps a uniform sample (Algorithm R), still sync-free."""
    spec = ConstraintSpec("m", "minimize_hard", scale="auto")
    sched = TorchScheduler(
        ConstraintScheduler(spec, discovery=DiscoveryPhase(statistic="median", reservoir=64)),
        accumulate="device",
    )
    values = [float((i * 7919) % 1000) for i in range(2000)]
    tensors = [torch.tensor(v, dtype=torch.float64) for v in values]
    with host_reads_forbidden():
        for t in tensors:
            sched.observe(t)
    (discovered, _held) = sched.advance_epoch()
    assert discovered.observations == 2000
    assert sched.last_tallies["m"].count == 2000
    assert len(sched.last_tallies["m"].samples) == 64
    assert set(sched.last_tallies["m"].samples) <= set(values)
    assert abs(discovered.value - 499.5) < 150.0


# --- 3. accepted steps and rejects --------------------------------------------------------

FLAGS = [True, False, True, True, False, True, False, True, True, True]


@pytest.mark.parametrize("accumulate", ["device", "auto"])
@pytest.mark.parametrize("flag_kind", ["tensor", "bool"])
def test_only_accepted_values_count_and_rejects_give_the_reject_rate(
    accumulate: str, flag_kind: str
) -> None:
    sched = TorchScheduler(
        ConstraintScheduler(ConstraintSpec("m", "upper", margin=1e9)), accumulate=accumulate
    )
    for i, ok in enumerate(FLAGS):
        # A rejected step's value would win the max if it were counted.
        value = 100.0 + i if ok else 1e6 + i
        flag: Any = torch.tensor(ok) if flag_kind == "tensor" else ok
        sched.observe(torch.tensor(value, dtype=torch.float64), accepted=flag)
        sched.observe(value + 0.5, accepted=flag)  # a number too
        sched.reject(torch.tensor(not ok) if flag_kind == "tensor" else not ok)
    sched.advance_epoch()
    tally = sched.last_tallies["m"]
    assert (tally.count, tally.maximum, tally.minimum) == (14, 109.5, 100.0)
    stats = sched.core.last_epoch
    assert stats is not None
    assert (stats.steps, stats.rejects) == (14, 3)
    assert stats.reject_rate == 3 / 17
    assert sched.core.bound == 109.5


def test_reject_counts_int_tensors_and_plain_ints() -> None:
    sched = TorchScheduler(
        ConstraintScheduler(ConstraintSpec("m", "upper", margin=1e9)), accumulate="device"
    )
    sched.observe(1.0)
    sched.reject(torch.tensor(3))
    sched.reject(torch.tensor([True]))
    sched.reject(2)
    sched.reject(True)
    sched.advance_epoch()
    stats = sched.core.last_epoch
    assert stats is not None
    assert (stats.steps, stats.rejects, stats.reject_rate) == (1, 7, 7 / 8)


# --- 4. the last epoch's statistics -------------------------------------------------------


def test_last_tallies_and_means_count_valid_values_only() -> None:
    sched = TorchScheduler(
        ConstraintScheduler(
            [ConstraintSpec(n, "upper", margin=1e9) for n in ("a", "b", "c")],
        ),
        accumulate="device",
    )
    assert sched.last_tallies == {}
    assert sched.last_means == {}
    # a: numbers (host) and tensors (device) mixed; b: only non-finite; c: nothing.
    for v in [2.0, math.nan, 10.0]:
        sched.observe("a", v)
    for v in [4.0, math.inf, -math.inf, 0.0]:
        sched.observe("a", torch.tensor(v, dtype=torch.float32))
    sched.observe("a", torch.tensor(1e6), accepted=torch.tensor(False))
    sched.observe("b", torch.tensor(math.nan))
    sched.observe("b", -math.inf)
    sched.advance_epoch()
    a, b, c = (sched.last_tallies[n] for n in "abc")
    assert (a.count, a.nonfinite, a.valid, a.maximum, a.minimum) == (7, 3, 4, 10.0, 0.0)
    assert sched.last_means["a"] == 4.0  # (2 + 10 + 4 + 0) / 4
    assert (b.count, b.nonfinite, b.maximum, b.minimum) == (2, 2, -math.inf, math.inf)
    assert math.isnan(sched.last_means["b"])
    assert (c.count, c.nonfinite) == (0, 0)
    assert math.isnan(sched.last_means["c"])
    # The next epoch starts empty.
    sched.observe("c", 5.0)
    sched.advance_epoch()
    assert sched.last_means["c"] == 5.0
    assert sched.last_tallies["a"].count == 0
    assert math.isnan(sched.last_means["a"])


# --- 5. bounds, parameters and scores as tensors ------------------------------------------


def test_bound_is_one_tensor_per_device_and_dtype_updated_in_place() -> None:
    sched = TorchScheduler(seed_core())
    ceiling = sched.bound_tensor("kl_core")
    wide = sched.bound_tensor(dtype=torch.float64)
    assert ceiling.dtype == torch.get_default_dtype()
    assert ceiling.shape == ()
    assert sched.bound_tensor("kl_detail") is ceiling  # the specs share one bound
    assert sched.bound_tensor(device="cpu") is ceiling
    assert sched.bound_tensor(device=torch.device("cpu"), dtype=torch.float64) is wide
    assert wide is not ceiling
    assert wide.item() == 1e9  # the specs' own ceiling during discovery
    elsewhere = sched.bound_tensor(device="meta")  # another device: another tensor, there
    assert elsewhere.device.type == "meta"
    assert elsewhere is not ceiling
    sched.observe({"kl_core": MAX_KL_CORE, "kl_detail": MAX_KL_DETAIL})
    for epoch in range(1, 15):
        sched.advance_epoch()
        assert sched.bound_tensor("kl_core") is ceiling
        assert sched.bound_tensor(dtype=torch.float64) is wide
        assert sched.bound_tensor("kl_detail", device=torch.device("meta")) is elsewhere
        assert wide.item() == sched.core.bound
        assert ceiling.item() == pytest.approx(sched.core.bound, rel=1e-6)
        assert wide.item() == (MAX_KL_CORE if epoch == 1 else KL_TABLE[epoch + 1])
        sched.observe({"kl_core": 2000.0, "kl_detail": 2000.0})  # a step: the next epoch counts


def test_bound_needs_a_name_with_several_schedulers_and_a_floating_dtype() -> None:
    sched = TorchScheduler(kinds_collection())
    with pytest.raises(TypeError, match="name the spec"):
        sched.bound_tensor()
    with pytest.raises(TypeError, match="floating dtype"):
        sched.bound_tensor("up", dtype=torch.int64)
    with pytest.raises(KeyError, match="no spec 'nope'"):
        sched.bound_tensor("nope")


def test_parameters_are_cached_tensors_that_follow_the_spec() -> None:
    sched = TorchScheduler(kinds_collection())
    ba = sched.parameters("ba", dtype=torch.float64)
    ms = sched.parameters("ms", dtype=torch.float64)
    assert sorted(ba) == ["healthy", "lower", "upper"]
    assert sorted(ms) == ["scale"]
    assert ms["scale"].item() == math.inf  # "auto", not discovered yet
    assert sched.parameters("ba", dtype=torch.float32) is not ba
    tensors = {f: id(t) for f, t in ba.items()}
    for _epoch in range(4):
        for name, (observed, _points) in KIND_VALUES.items():
            for v in observed:
                sched.observe(name, v)
        sched.advance_epoch()
        assert sched.parameters("ba", dtype=torch.float64) is ba
        assert {f: id(t) for f, t in ba.items()} == tensors
        spec = sched.spec("ba")
        assert {f: t.item() for f, t in ba.items()} == {
            "lower": spec.lower,
            "healthy": spec.healthy,
            "upper": spec.upper,
        }
        assert ms["scale"].item() == sched.spec("ms").scale
    assert sched.spec("ba").upper == 5.0
    assert sched.spec("ms").scale == 0.5


def test_score_equals_the_core_spec_score_after_every_epoch_for_every_kind() -> None:
    sched = TorchScheduler(kinds_collection())
    with pytest.raises(ValueError, match=r"'ms'.*'auto'"):
        sched.score("ms", torch.tensor(1.0))
    kinds = set()
    for _epoch in range(5):
        for name, (_observed, points) in KIND_VALUES.items():
            spec = sched.spec(name)
            kinds.add(spec.kind)
            if spec.scale == "auto":
                continue
            for dtype in (torch.float64, torch.float32):
                x = torch.tensor(points, dtype=dtype)
                got = sched.score(name, x)
                assert got.dtype == dtype
                expected = [spec.score(p) for p in points]
                tolerance = 1e-12 if dtype == torch.float64 else 1e-5
                assert got.tolist() == pytest.approx(expected, rel=tolerance, abs=tolerance)
        for name, (observed, _points) in KIND_VALUES.items():
            for v in observed:
                sched.observe(name, v)
        sched.advance_epoch()
    assert kinds == set(ConstraintKind)
    assert sched.spec("ms").scale == 0.5  # discovered (median 2.0), then squeezed


# Points of each kind away from its kinks, under the bounds `kinds_collection` has in epoch 2.
GRADCHECK_POINTS = {
    "up": [10.0, 50.0, 90.0],  # margin 100
    "lo": [11.0, 15.0, 19.0],  # margin 10: the score is linear on (10, 20)
    "bx": [1.0, 3.0, 7.0, 12.0],  # [0, 10]
    "bf": [-8.0, 3.0, 60.0, 120.0],  # [-10, 100]
    "ba": [1.0, 3.0, 7.0, 12.0],  # lower 0, healthy 2, upper 10
    "ms": [0.5, 1.0, 3.0],  # scale 2
    "mh": [0.5, 1.0, 3.0],  # scale 2
}


@pytest.mark.parametrize("name", sorted(GRADCHECK_POINTS))
def test_score_gradients_are_right_for_every_kind(name: str) -> None:
    sched = TorchScheduler(kinds_collection())
    for spec_name, (observed, _points) in KIND_VALUES.items():
        for v in observed:
            sched.observe(spec_name, v)
    sched.advance_epoch()
    x = torch.tensor(GRADCHECK_POINTS[name], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: sched.score(name, t), (x,))
    (grad,) = torch.autograd.grad(sched.score(name, x).sum(), x)
    assert bool((grad != 0).all())  # every point lies where the score moves


# --- 6. a compiled function reads the bound without recompiling ---------------------------


def compile_case(case: str) -> tuple[TorchScheduler, Callable[[Any], Any], Callable[[], list]]:
    """A scheduler after discovery, a loss reading it, and the loss computed by the core."""
    x = [500.0, 2000.0, 20000.0]
    if case == "bound":
        sched = TorchScheduler(seed_core())
        sched.observe({"kl_core": 40000.0, "kl_detail": 30000.0})

        def loss(t: Any) -> Any:
            return t / sched.bound_tensor("kl_core", dtype=torch.float64)

        return sched, loss, lambda: [v / sched.core.bound for v in x]
    spec = {
        "score-box_asymmetric": kl_specs()[0],
        "score-upper": ConstraintSpec("kl_core", "upper", margin=1e9),
        "score-minimize_soft": ConstraintSpec("kl_core", "minimize_soft", scale="auto"),
    }[case]
    table = {3: 13000.0, 4: 11000.0, 5: 9500.0, 6: 8200.0}
    sched = TorchScheduler(ConstraintScheduler(spec, squeeze=SqueezeSchedule.table(table)))
    sched.observe(40000.0)

    def score(t: Any) -> Any:
        return sched.score("kl_core", t)

    return sched, score, lambda: [sched.spec("kl_core").score(v) for v in x]


@dynamo_warnings
@pytest.mark.parametrize(
    "case", ["bound", "score-box_asymmetric", "score-upper", "score-minimize_soft"]
)
def test_a_compiled_loss_reads_each_new_bound_without_recompiling(case: str) -> None:
    torch._dynamo.reset()
    try:
        sched, loss, expected = compile_case(case)
        sched.advance_epoch()  # discovered: the bound (or "auto" scale) is a number from now on
        counter = CompileCounter()
        compiled = torch.compile(loss, backend=counter)
        x = torch.tensor([500.0, 2000.0, 20000.0], dtype=torch.float64)
        # The first calls may compile twice: the first one creates the cached tensors.
        for _ in range(2):
            assert compiled(x).tolist() == pytest.approx(expected(), rel=1e-12)
        frames = counter.frame_count
        assert frames >= 1
        bounds = {sched.core.bound}
        for _epoch in range(4):
            sched.observe(dict.fromkeys(sched.core.names, 2000.0))  # an epoch counts with a step
            sched.advance_epoch()
            bounds.add(sched.core.bound)
            with torch._dynamo.config.patch(error_on_recompile=True):
                got = compiled(x)
            assert counter.frame_count == frames
            assert got.tolist() == pytest.approx(expected(), rel=1e-12)
        assert len(bounds) == 5  # the bound moved every epoch
    finally:
        torch._dynamo.reset()


@dynamo_warnings
def test_score_traces_into_one_graph() -> None:
    """``fullgraph=True`` (needed for CUDA graphs): score must not break the graph."""
    torch._dynamo.reset()
    try:
        sched, score, expected = compile_case("score-box_asymmetric")
        sched.advance_epoch()
        x = torch.tensor([500.0, 2000.0, 20000.0], dtype=torch.float64)
        sched.score("kl_core", x)  # the cached parameters exist before tracing
        compiled = torch.compile(score, backend="eager", fullgraph=True)
        assert compiled(x).tolist() == pytest.approx(expected(), rel=1e-12)
    finally:
        torch._dynamo.reset()


# --- 7. checkpoints -----------------------------------------------------------------------


def checkpoint_core() -> SchedulerCollection:
    return SchedulerCollection(
        [
            ConstraintScheduler(
                kl_specs(), squeeze=SqueezeSchedule.table(KL_TABLE), backoff=Backoff()
            ),
            ConstraintScheduler(
                ConstraintSpec("mse", "minimize_soft", scale="auto"),
                discovery=DiscoveryPhase(statistic="median", epochs=2),
                squeeze=SqueezeSchedule.geometric(target=0.01, epochs=4),
            ),
        ]
    )


def half_epoch(sched: TorchScheduler, epoch: int, part: int) -> None:
    """Half an epoch of steps (``part`` 0 or 1): numbers, CPU tensors, NaN, rejects, flags."""
    rng = random.Random(epoch * 2 + part)
    ceiling = sched.core["kl_core+kl_detail"].bound
    top = 60000.0 if not math.isfinite(ceiling) or ceiling > 1e8 else ceiling
    for i in range(12):
        core = rng.uniform(0.4, 1.0 if epoch != 3 else 1.2) * top
        values: dict[str, Any] = {
            "kl_core": torch.tensor(core, dtype=torch.float64),
            "kl_detail": rng.uniform(0.3, 0.9) * top,
            "mse": torch.tensor(rng.uniform(0.05, 1.0), dtype=torch.float32),
        }
        if i == 3:
            values["mse"] = torch.tensor(math.nan)
        accepted = not (epoch == 3 and i % 3 == 0) and i != 7
        sched.observe(values, accepted=torch.tensor(accepted))
        sched.reject(torch.tensor(not accepted))


def checkpoint_drive(sched: TorchScheduler, epochs: range, *, skip_first_half: bool) -> list:
    trace = []
    for epoch in epochs:
        if not (skip_first_half and epoch == epochs.start):
            half_epoch(sched, epoch, 0)
        half_epoch(sched, epoch, 1)
        events = sched.advance_epoch()
        # Sums of floats may round differently once split by a checkpoint (means are compared
        # approximately), and a sample's order is no behaviour.
        tallies = {
            n: attrs.evolve(t, total=0.0, samples=sorted(t.samples))
            for n, t in sched.last_tallies.items()
        }
        trace.append((sched.epoch, sched.core.specs, events, tallies, sched.last_means))
    return trace


Transport = Callable[[dict[str, Any], Any], dict[str, Any]]


def through_torch_save(state: dict[str, Any], tmp_path: Any) -> dict[str, Any]:
    path = tmp_path / "scheduler.pt"
    torch.save(state, path)
    return torch.load(path, weights_only=True)


def through_json(state: dict[str, Any], tmp_path: Any) -> dict[str, Any]:
    return json.loads(json.dumps(state, allow_nan=False))


@pytest.mark.parametrize("transport", [through_torch_save, through_json], ids=["torch", "json"])
@pytest.mark.parametrize("accumulate", ["device", "auto"])
@pytest.mark.parametrize(
    ("epochs_done", "mid_epoch"),
    [(0, True), (1, False), (1, True), (2, True), (3, True), (4, False), (6, True)],
)
def test_a_restored_scheduler_behaves_identically_for_the_rest_of_the_run(
    transport: Transport, accumulate: str, epochs_done: int, mid_epoch: bool, tmp_path: Any
) -> None:
    original = TorchScheduler(checkpoint_core(), accumulate=accumulate)
    checkpoint_drive(original, range(1, epochs_done + 1), skip_first_half=False)
    if mid_epoch:
        half_epoch(original, epochs_done + 1, 0)
    state = original.state_dict()
    clone = TorchScheduler(checkpoint_core(), accumulate=accumulate)
    ceiling = clone.bound_tensor("kl_core", dtype=torch.float64)
    clone.load_state_dict(transport(state, tmp_path))
    assert clone.state_dict() == state
    assert ceiling.item() == original.core["kl_core+kl_detail"].bound  # updated in place
    rest = range(epochs_done + 1, 12)
    resumed = checkpoint_drive(clone, rest, skip_first_half=not mid_epoch)
    expected = checkpoint_drive(original, rest, skip_first_half=not mid_epoch)
    assert [epoch[:-1] for epoch in resumed] == [epoch[:-1] for epoch in expected]
    for epoch, (mine, theirs) in enumerate(zip(resumed, expected, strict=True)):
        assert mine[-1] == pytest.approx(theirs[-1], rel=1e-12, nan_ok=True), epoch


def _median_scheduler(accumulate: str, reservoir: int) -> TorchScheduler:
    spec = ConstraintSpec("m", "minimize_soft", scale="auto")
    discovery = DiscoveryPhase(statistic="median", reservoir=reservoir)
    return TorchScheduler(ConstraintScheduler(spec, discovery=discovery), accumulate=accumulate)


def _feed_median(sched: TorchScheduler, values: list[float]) -> None:
    for v in values:
        sched.observe(torch.tensor(v, dtype=torch.float64))  # the device, or the host
        sched.observe(v + 0.5)  # the host


@pytest.mark.parametrize("accumulate", ["device", "auto"])
def test_a_mid_epoch_restore_of_a_median_within_the_reservoir_is_exact(
    accumulate: str, tmp_path: Any
) -> None:
    values = [float((i * 37) % 101) for i in range(80)]  # 160 observations, reservoir 256
    original = _median_scheduler(accumulate, 256)
    _feed_median(original, values[:40])
    clone = _median_scheduler(accumulate, 256)
    clone.load_state_dict(through_torch_save(original.state_dict(), tmp_path))
    _feed_median(original, values[40:])
    _feed_median(clone, values[40:])
    assert clone.advance_epoch() == original.advance_epoch()
    assert clone.core.bound == statistics.median([*values, *(v + 0.5 for v in values)])


@pytest.mark.parametrize("accumulate", ["device", "auto", "host"])
def test_a_checkpoint_at_any_step_of_a_long_median_epoch_resumes_exactly(
    accumulate: str, tmp_path: Any
) -> None:
    """Past the reservoir, a restore keeps the samples and generators: the same median."""
    values = [float((i * 37) % 1001) for i in range(150)]  # 300 observations, reservoir 16
    uninterrupted = _median_scheduler(accumulate, 16)
    _feed_median(uninterrupted, values)
    expected = uninterrupted.advance_epoch()
    assert expected[0].kind == "discovered"
    for stop in range(len(values) + 1):
        original = _median_scheduler(accumulate, 16)
        _feed_median(original, values[:stop])
        clone = _median_scheduler(accumulate, 16)
        clone.load_state_dict(through_json(original.state_dict(), tmp_path))
        _feed_median(clone, values[stop:])
        assert clone.advance_epoch() == expected, stop
        assert clone.state_dict() == uninterrupted.state_dict(), stop


@pytest.mark.parametrize("accumulate", ["device", "auto"])
def test_a_mid_epoch_restore_beyond_the_reservoir_is_exact_through_torch_save(
    accumulate: str, tmp_path: Any
) -> None:
    values = [float((i * 37) % 1001) for i in range(1000)]
    original = _median_scheduler(accumulate, 256)
    _feed_median(original, values[:900])
    clone = _median_scheduler(accumulate, 256)
    clone.load_state_dict(through_torch_save(original.state_dict(), tmp_path))
    tail = [v / 10 for v in values[900:]]
    _feed_median(original, tail)
    _feed_median(clone, tail)
    assert clone.advance_epoch() == original.advance_epoch()
    assert clone.core.bound == original.core.bound


def corrupt(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(state: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = state
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value

    return apply


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        pytest.param(corrupt("format", "optax.Schedule"), "not a .*TorchScheduler", id="format"),
        pytest.param(corrupt("version", 99), "version", id="newer-version"),
        pytest.param(corrupt("names", ["kl_core", "mse"]), "names", id="other-names"),
        pytest.param(corrupt("epoch.host.rejects", -1), "epoch.host.rejects", id="rejects"),
        pytest.param(corrupt("epoch.host.count.0", -1), r"host.count\[0\]", id="count"),
        pytest.param(
            corrupt("epoch.host.violations.0", 10**6), r"epoch.host: slot 0", id="violations"
        ),
        pytest.param(corrupt("epoch.host.reservoirs", None), "host.reservoirs", id="no-sample"),
        pytest.param(
            corrupt("epoch.host.reservoirs.2.rng", "x"), r"reservoirs\[2\].rng", id="host-rng"
        ),
        pytest.param(corrupt("epoch.devices", "x"), "epoch.devices", id="device-list"),
        pytest.param(
            corrupt("epoch.devices.0.books", [[0.0]]), r"devices\[0\].books", id="device-books"
        ),
        pytest.param(
            corrupt("epoch.devices.0.rows", []), r"devices\[0\].rows", id="device-samples"
        ),
        pytest.param(
            corrupt("epoch.devices.0.sampler.rng", "x"),
            r"devices\[0\].sampler.rng",
            id="device-rng",
        ),
        pytest.param(
            corrupt("epoch.devices.0.device", "nowhere"), r"devices\[0\].device", id="device"
        ),
        pytest.param(corrupt("epoch.window_calls", -1), "window_calls", id="window-calls"),
        pytest.param(corrupt("core", None), "core", id="core-missing"),
        pytest.param(corrupt("core.schedulers.mse.state.epoch", 0), "state.epoch", id="core-field"),
    ],
)
def test_a_corrupt_state_raises_naming_the_field_and_changes_nothing(
    damage: Callable[[dict[str, Any]], None], match: str
) -> None:
    source = TorchScheduler(checkpoint_core(), accumulate="device")
    half_epoch(source, 1, 0)
    state = copy.deepcopy(source.state_dict())
    damage(state)
    target = TorchScheduler(checkpoint_core(), accumulate="device")
    checkpoint_drive(target, range(1, 3), skip_first_half=False)
    half_epoch(target, 3, 0)
    ceiling = target.bound_tensor("kl_core", dtype=torch.float64)
    before = target.state_dict()
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(state)
    assert target.state_dict() == before
    assert ceiling.item() == target.core["kl_core+kl_detail"].bound


def test_a_state_saved_with_another_configuration_is_refused() -> None:
    other = SchedulerCollection(
        [
            ConstraintScheduler(
                kl_specs(), squeeze=SqueezeSchedule.table({3: 9000.0, 4: 3000.0}), backoff=Backoff()
            ),
            ConstraintScheduler(
                ConstraintSpec("mse", "minimize_soft", scale="auto"),
                discovery=DiscoveryPhase(statistic="median", epochs=2),
                squeeze=SqueezeSchedule.geometric(target=0.01, epochs=4),
            ),
        ]
    )
    source = TorchScheduler(other)
    half_epoch(source, 1, 0)
    target = TorchScheduler(checkpoint_core())
    half_epoch(target, 1, 1)
    before = target.state_dict()
    with pytest.raises(ValueError, match=r"config\.squeeze"):
        target.load_state_dict(source.state_dict())
    assert target.state_dict() == before


def test_a_state_of_other_specs_is_refused() -> None:
    source = TorchScheduler(ConstraintScheduler(ConstraintSpec("kl", "upper", margin=1e9)))
    target = TorchScheduler(checkpoint_core())
    before = target.state_dict()
    with pytest.raises(ValueError, match=r"names.*\['kl'\]"):
        target.load_state_dict(source.state_dict())
    assert target.state_dict() == before


# --- 8. errors ----------------------------------------------------------------------------


def one() -> TorchScheduler:
    return TorchScheduler(ConstraintScheduler(ConstraintSpec("m", "upper", margin=1e9)))


def two() -> TorchScheduler:
    return TorchScheduler(seed_core(), accumulate="device")


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        pytest.param(
            lambda: TorchScheduler(kl_specs()),
            TypeError,
            "ConstraintScheduler or a SchedulerCollection",
            id="scheduler-type",
        ),
        pytest.param(
            lambda: TorchScheduler(seed_core(), accumulate="gpu"),
            ValueError,
            "accumulate must be .*'gpu'",
            id="accumulate",
        ),
        pytest.param(lambda: two().observe("kl", 1.0), KeyError, "no spec 'kl'", id="unknown-name"),
        pytest.param(
            lambda: two().observe({"kl_core": 1.0, "kl": 2.0}),
            KeyError,
            "no spec 'kl'",
            id="unknown-name-mapping",
        ),
        pytest.param(
            lambda: two().observe("kl_core", torch.ones(2)),
            ValueError,
            "'kl_core' must hold one element.*\\(2,\\)",
            id="two-elements",
        ),
        pytest.param(
            lambda: one().observe(torch.ones(1, 2)),
            ValueError,
            "'m' must hold one element",
            id="two-elements-host",
        ),
        pytest.param(
            lambda: two().observe("kl_core", "ten"),
            TypeError,
            "'kl_core' must be a number or a tensor",
            id="string",
        ),
        pytest.param(
            lambda: two().observe(1.0),
            TypeError,
            "observe\\(value\\) needs exactly one spec",
            id="value-several-specs",
        ),
        pytest.param(
            lambda: one().observe(1.0, accepted=torch.tensor(1)),
            TypeError,
            "accepted must be .*int64",
            id="accepted-int-tensor",
        ),
        pytest.param(
            lambda: one().observe(1.0, accepted=torch.tensor(1.0)),
            TypeError,
            "accepted must be .*float32",
            id="accepted-float-tensor",
        ),
        pytest.param(
            lambda: one().observe(1.0, accepted=torch.tensor([True, False])),
            TypeError,
            "accepted must be .*\\(2,\\)",
            id="accepted-two-flags",
        ),
        pytest.param(
            lambda: one().observe(1.0, accepted=1),
            TypeError,
            "accepted must be a bool",
            id="accepted-int",
        ),
        pytest.param(
            lambda: one().reject(-1),
            ValueError,
            "count must be an int >= 0, got -1",
            id="reject-negative",
        ),
        pytest.param(
            lambda: one().reject(torch.tensor(-1)),
            ValueError,
            "got -1",
            id="reject-negative-cpu-tensor",
        ),
        pytest.param(
            lambda: one().reject(torch.tensor(1.0)),
            TypeError,
            "one-element bool tensor, got a torch.float32",
            id="reject-float-tensor",
        ),
        pytest.param(
            lambda: two().reject(torch.tensor(1.0)),
            TypeError,
            "one-element bool tensor",
            id="reject-float-tensor-device",
        ),
        pytest.param(lambda: one().spec("kl"), KeyError, "no spec 'kl'", id="spec-unknown"),
        pytest.param(lambda: two().spec(), TypeError, "name the spec", id="spec-unnamed"),
    ],
)
def test_errors(call: Callable[[], Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def raising(accumulate: str = "auto") -> TorchScheduler:
    return TorchScheduler(
        SchedulerCollection(
            [
                ConstraintScheduler(ConstraintSpec("loss", "upper", margin=1e9)),
                ConstraintScheduler(
                    ConstraintSpec("kl", "upper", margin=1e9), nonfinite="raise", name="kl"
                ),
            ]
        ),
        accumulate=accumulate,
    )


@pytest.mark.parametrize("value", [math.nan, math.inf, torch.tensor(math.nan)])
def test_nonfinite_raise_refuses_a_host_value_at_observe(value: Any) -> None:
    sched = raising()
    with pytest.raises(ValueError, match=r"non-finite observation .* of 'kl'"):
        sched.observe("kl", value)
    sched.observe("kl", 3.0)
    sched.advance_epoch()
    assert sched.last_tallies["kl"].count == 1


def test_nonfinite_raise_refuses_device_values_once_and_the_epoch_then_ends_without_them() -> None:
    sched = raising(accumulate="device")
    sched.observe({"loss": torch.tensor(2.0), "kl": torch.tensor(5.0)})
    sched.observe({"loss": torch.tensor(math.nan), "kl": torch.tensor(math.nan)})  # no sync: kept
    sched.observe({"loss": torch.tensor(3.0), "kl": torch.tensor(math.inf)})
    ceiling = sched.bound_tensor("kl")
    with pytest.raises(ValueError, match=r"\(2 of 'kl'\) with nonfinite='raise'.*dropped"):
        sched.advance_epoch()
    assert sched.epoch == 1  # the epoch has not ended
    assert ceiling.item() == 1e9
    events = sched.advance_epoch()  # raised once: now it ends, without them
    assert sched.epoch == 2
    assert sched.last_tallies["kl"].count == 1  # the two bad values are gone
    assert sched.last_tallies["kl"].nonfinite == 0
    assert sched.last_tallies["loss"].count == 3  # the other spec's values all stay
    assert [e.new for e in events if e.constraint == "kl" and e.kind == "discovered"] == [5.0]


def test_a_negative_reject_count_is_refused_at_once_and_records_nothing() -> None:
    sched = TorchScheduler(
        ConstraintScheduler(ConstraintSpec("m", "upper", margin=1e9)), accumulate="device"
    )
    sched.observe(torch.tensor(5.0))
    with pytest.raises(ValueError, match="-3"):
        sched.reject(torch.tensor(-3))  # a CPU integer tensor is read on the host
    with pytest.raises(TypeError, match="one-element bool tensor"):
        sched.reject(torch.tensor([1, 2]))
    sched.advance_epoch()
    assert sched.core.last_epoch is not None
    assert (sched.core.last_epoch.steps, sched.core.last_epoch.rejects) == (1, 0)


# --- 9. CUDA: no synchronisation under sync-debug mode ------------------------------------


def cuda_core() -> SchedulerCollection:
    return SchedulerCollection(
        [
            ConstraintScheduler(kl_specs(), squeeze=SqueezeSchedule.table(KL_TABLE)),
            ConstraintScheduler(
                ConstraintSpec("mse", "minimize_soft", scale="auto"),
                discovery=DiscoveryPhase(statistic="median"),
                squeeze=SqueezeSchedule.geometric(target=0.05, epochs=3),
            ),
        ]
    )


@contextlib.contextmanager
def sync_debug_errors() -> Iterator[None]:
    """While inside, any synchronising CUDA operation raises RuntimeError."""
    torch.cuda.synchronize()
    try:
        with warnings.catch_warnings():  # "a prototype feature": it is, and we know
            warnings.filterwarnings("ignore", "Synchronization debug mode", UserWarning)
            torch.cuda.set_sync_debug_mode("error")
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


@cuda
def test_cuda_steps_never_synchronise_and_match_the_core() -> None:
    device = torch.device("cuda")
    rng = random.Random(3)
    n = 150
    reference = cuda_core()
    sched = TorchScheduler(cuda_core())  # accumulate="auto": CUDA tensors stay on the device
    # A first step outside sync-debug mode, in the loop's form: it sets up the device's
    # statistics (see test_cuda_first_observe_and_reject_do_not_synchronise).
    first = torch.tensor([1.0, 1.0, 0.5], device=device)
    sched.observe(
        {"kl_core": first[0], "kl_detail": first[1], "mse": first[2]},
        accepted=torch.tensor(True, device=device),
    )
    sched.reject(torch.tensor(False, device=device))
    reference.observe({"kl_core": 1.0, "kl_detail": 1.0, "mse": 0.5})
    weight = torch.ones((), device=device, requires_grad=True)
    x = torch.tensor([500.0, 2000.0, 20000.0], device=device)
    for epoch in range(1, 4):
        top = 40000.0 if epoch == 1 else reference["kl_core+kl_detail"].bound
        core = [rng.uniform(0.2, 1.0) * top for _ in range(n)]
        detail = [rng.uniform(0.2, 1.0) * top for _ in range(n)]
        mse = [math.nan if i % 17 == 3 else rng.uniform(0.05, 1.0) for i in range(n)]
        flags = [i % 6 != 1 for i in range(n)]
        # Made before sync-debug mode: copying Python data to the GPU synchronises.
        core_t = torch.tensor(core, device=device)
        detail_t = torch.tensor(detail, device=device, dtype=torch.float64)
        mse_t = torch.tensor(mse, device=device, dtype=torch.bfloat16)
        flags_t = torch.tensor(flags, device=device)
        scores, bounds = [], []
        with sync_debug_errors():
            for i in range(n):
                accepted = flags_t[i]
                sched.observe(
                    {"kl_core": core_t[i] * weight, "kl_detail": detail_t[i], "mse": mse_t[i]},
                    accepted=accepted,
                )
                sched.reject(~accepted)
                if i % 50 == 0:
                    scores.append(sched.score("kl_core", x * weight))
                    bounds.append(sched.bound_tensor("kl_core", device=device))
        spec = reference.spec("kl_core")
        for s in scores:
            assert s.device.type == "cuda"
            expected = [spec.score(v) for v in x.tolist()]
            assert s.tolist() == pytest.approx(expected, rel=1e-4, abs=1e-9)
        for b in bounds:
            assert b is bounds[0]
            assert b.device.type == "cuda"
        assert bounds[0].item() == pytest.approx(reference["kl_core+kl_detail"].bound, rel=1e-6)
        for i in range(n):
            if flags[i]:
                reference.observe(
                    {
                        "kl_core": float(core_t[i]),
                        "kl_detail": float(detail_t[i]),
                        "mse": float(mse_t[i]),
                    }
                )
            else:
                reference.reject()
        events = sched.advance_epoch()
        assert events == reference.advance_epoch()
        assert_same_schedule(sched, reference)
        assert bounds[0].item() == pytest.approx(reference["kl_core+kl_detail"].bound, rel=1e-6)
    assert sched.spec("mse").scale == reference.spec("mse").scale


@cuda
def test_cuda_first_observe_and_reject_do_not_synchronise() -> None:
    """Setting up a device's statistics (first observe/reject) must not wait for the GPU either."""
    device = torch.device("cuda")
    sched = TorchScheduler(cuda_core())
    values = torch.tensor([30000.0, 20000.0, 0.25], device=device)
    flag = torch.tensor(True, device=device)
    with sync_debug_errors():
        sched.reject(~flag)
        sched.observe({"kl_core": values[0], "kl_detail": values[1]}, accepted=flag)
        sched.observe({"mse": values[2], "kl_core": values[1]})
    sched.advance_epoch()
    assert sched.core["kl_core+kl_detail"].bound == 30000.0
    assert sched.spec("mse").scale == 0.25


# --- steps discovery: a window that ends inside the first epoch ----------------------------


@pytest.mark.parametrize("accumulate", ["device", "auto"])
def test_a_steps_discovery_ends_inside_the_epoch_like_the_core(accumulate: str) -> None:
    def build() -> ConstraintScheduler:
        return ConstraintScheduler(
            ConstraintSpec("mse", "minimize_soft", scale="auto"),
            discovery=DiscoveryPhase(statistic="median", steps=5, provisional_headroom=0.1),
            squeeze=SqueezeSchedule.geometric(target=0.01, epochs=3),
        )

    core, sched, seen = build(), TorchScheduler(build(), accumulate=accumulate), []
    sched.add_callback(seen.append)
    scale = sched.parameters("mse", dtype=torch.float64)["scale"]
    for _ in range(4):
        for i in range(8):
            value, bad = 0.1 * (i + 1), i == 6
            sched.observe(torch.tensor(value, dtype=torch.float64), accepted=torch.tensor(not bad))
            sched.reject(torch.tensor(bad))
            if bad:
                core.reject()
            else:
                core.observe(value)
            if i == 4 and core.epoch == 1:  # the fifth step closed the window, mid-epoch
                assert sched.phase is Phase.HOLD
                assert float(scale) == pytest.approx(1.1 * 0.3)
        assert sched.advance_epoch() == core.advance_epoch()
        assert (sched.core.phase, sched.core.bound) == (core.phase, core.bound)
        assert float(scale) == pytest.approx(core.bound)
        tally = sched.last_tallies["mse"]
        assert (tally.count, core.last_epoch.rejects) == (7, 1)  # the whole epoch is reported
    assert [e.kind for e in seen] == [
        "discovered", "held", "settled", "squeezed", "squeezed", "squeezed", "converged",
    ]  # fmt: skip


def test_a_state_of_the_earlier_combined_format_still_loads() -> None:
    """Checkpoints written before the exact per-source format (one tally per spec) load."""
    source = TorchScheduler(checkpoint_core(), accumulate="device")
    half_epoch(source, 1, 0)
    tallies, rejects = source._feed._collect(None)
    state = source.state_dict()
    state["epoch"] = {
        "rejects": rejects,
        "tallies": [
            {
                "count": t.count,
                "nonfinite": t.nonfinite,
                "violations": t.violations,
                "total": t.total,
                "maximum": t.maximum,
                "minimum": t.minimum,
                "samples": list(t.samples),
            }
            for t in tallies
        ],
    }
    clone = TorchScheduler(checkpoint_core(), accumulate="device")
    clone.load_state_dict(state)
    again, again_rejects = clone._feed._collect(None)
    assert again_rejects == rejects
    assert [(t.count, t.nonfinite, t.violations, t.maximum) for t in again] == [
        (t.count, t.nonfinite, t.violations, t.maximum) for t in tallies
    ]


@pytest.mark.parametrize("accumulate", ["device", "auto"])
def test_a_checkpoint_at_any_step_of_a_steps_discovery_resumes_exactly(
    accumulate: str, tmp_path: Any
) -> None:
    """The window's progress and what it flushed are saved: it ends at the same step."""

    def build() -> TorchScheduler:
        spec = ConstraintSpec("m", "minimize_soft", scale="auto")
        discovery = DiscoveryPhase(statistic="median", steps=40, reservoir=16)
        core = ConstraintScheduler(spec, discovery=discovery, hold=HoldPhase(epochs=1))
        return TorchScheduler(core, accumulate=accumulate)

    values = [float((i * 53) % 97) + 1.0 for i in range(70)]

    def run(sched: TorchScheduler, part: list[float]) -> list[Any]:
        seen: list[Any] = []
        sched.add_callback(seen.append)
        for v in part:
            sched.observe(torch.tensor(v, dtype=torch.float64))
        return seen

    uninterrupted = build()
    expected = run(uninterrupted, values)
    uninterrupted.advance_epoch()  # its events reach ``expected`` through the callback
    assert [e.kind for e in expected][:2] == ["discovered", "held"]  # inside the epoch
    for stop in range(0, len(values) + 1, 3):
        original = build()
        before = run(original, values[:stop])
        clone = build()
        clone.load_state_dict(through_json(original.state_dict(), tmp_path))
        after = run(clone, values[stop:])
        clone.advance_epoch()
        assert before + after == expected, stop
        assert clone.last_tallies == uninterrupted.last_tallies, stop
        assert clone.state_dict() == uninterrupted.state_dict(), stop
