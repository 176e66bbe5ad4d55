"""`JaxConstraintTerm`: the one-line term as a pytree state and a pure update under ``jax.jit``."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import json
import math
from typing import Any

import attrs
import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

from constraint_sched import (  # noqa: E402
    Backoff,
    ConstraintTerm,
    DiscoveryPhase,
    Phase,
    Relative,
)
from constraint_sched.adapters.jax import JaxConstraintTerm, JaxTermState  # noqa: E402

Values = list[list[np.ndarray]]


def values(seed: int, levels: list[float], *, steps: int = 20, batch: int = 8) -> Values:
    """Per epoch, ``steps`` batches of per-example values around each epoch's level."""
    rng = np.random.default_rng(seed)
    return [[rng.normal(level, 0.5, size=batch) for _ in range(steps)] for level in levels]


def close(got: Any, expected: Any) -> bool:
    """Equal, but for floats within 1e-12 (a batch mean's last bit depends on its library)."""
    if isinstance(expected, float) and isinstance(got, float):
        return got == pytest.approx(expected, rel=1e-12, abs=0.0)
    if isinstance(expected, dict) and isinstance(got, dict):
        return got.keys() == expected.keys() and all(close(got[k], expected[k]) for k in got)
    if attrs.has(type(expected)):
        return type(got) is type(expected) and close(attrs.asdict(got), attrs.asdict(expected))
    if isinstance(expected, list) and isinstance(got, list):
        return len(got) == len(expected) and all(map(close, got, expected))
    return bool(got == expected)


def jitted(term: JaxConstraintTerm) -> Any:
    return jax.jit(term.update)


def feed(term: JaxConstraintTerm, epochs: Values, main: float = 3.0) -> list[float]:
    """Run ``epochs`` through a jitted step; the weight each step applied."""
    step = jitted(term)
    state = term.init()
    applied = []
    for epoch in epochs:
        for v in epoch:
            applied.append(float(term.weight_of(state)))
            _, state = step(state, jnp.asarray(v), main)
        state, _ = term.epoch_end(state)
    return applied


# -- the same run as the core's term ------------------------------------------------------

CASES = {
    "ceiling-backoff": (
        {
            "target": Relative(0.5),
            "squeeze_epochs": 3,
            "backoff": Backoff(max_reject_rate=0.2, metric="violation_rate"),
        },
        [10.0, 10.0, 9.0, 9.0, 8.0, 7.0, 6.0],
    ),
    "floor": ({"side": "lower", "target": Relative(2.0), "squeeze_epochs": 2}, [5, 6, 8, 10, 11]),
    "number-target": ({"target": 6.0, "squeeze_epochs": 2, "alpha": 0.2}, [10.0, 9.0, 8.0, 7.0]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_weights_events_and_bounds_as_the_core_term_in_x64(case: str) -> None:
    options, levels = CASES[case]
    with jax.enable_x64(True):
        core = ConstraintTerm("kl", echo=None, **options)  # type: ignore[arg-type]
        term = JaxConstraintTerm("kl", echo=None, **options)  # type: ignore[arg-type]
        step = jitted(term)
        state = term.init()
        assert state.bound.dtype == jnp.float64
        seen_known = False
        for epoch in values(7, levels):
            for v in epoch:
                main = 3.0 + 0.01 * float(v[0])
                expected = core(v, main=main)
                penalty, state = step(state, jnp.asarray(v), main)
                # The penalty applies the weight before the step, as the core's does.
                assert float(penalty) == pytest.approx(expected, rel=1e-9, abs=0.0)
                after = float(term.weight_of(state))
                assert after == pytest.approx(core.multiplier.weight, rel=1e-9, abs=0.0)
                seen_known |= after > 0
            expected_events = core.epoch_end()
            state, events = term.epoch_end(state)
            assert close(events, expected_events)
            assert close(term.bound, core.bound)
            assert term.phase is core.phase
            assert term.epoch == core.epoch
            assert close(term.last_epoch, core.last_epoch)
            assert term.weight == pytest.approx(core.multiplier.weight, rel=1e-9, abs=0.0)
        assert seen_known
        assert core.phase is Phase.CONVERGED


# -- under jax.jit --------------------------------------------------------------------------


def test_update_runs_under_jit_without_host_transfers_or_recompiles() -> None:
    term = JaxConstraintTerm("kl", target=Relative(0.5), squeeze_epochs=2, echo=None)
    traces = []

    def update(state: JaxTermState, value: Any, main: Any) -> Any:
        traces.append(None)
        return term.update(state, value, main)

    step = jax.jit(update)
    state = term.init()
    batches = [[jnp.asarray(v, dtype=jnp.float32) for v in e] for e in values(0, [10, 10, 9, 8])]
    main = jnp.asarray(3.0)
    _, state = step(state, batches[0][0], main)  # compiles
    for epoch in batches:
        with jax.transfer_guard("disallow"):  # a host transfer in a step would raise
            for v in epoch:
                _, state = step(state, v, main)
        state, _ = term.epoch_end(state)
    assert len(traces) == 1  # a new epoch's state has the same structure: no new trace
    assert term.phase is Phase.CONVERGED
    assert term.weight > 0


def test_the_jitted_step_holds_no_host_callback() -> None:
    term = JaxConstraintTerm("kl", target=5.0, echo=None)
    state, kl, main = term.init(), jnp.ones(4), jnp.asarray(2.0)
    text = str(jax.make_jaxpr(term.update)(state, kl, main))
    assert "callback" not in text

    def with_callback(state: JaxTermState, kl: Any, main: Any) -> Any:
        jax.debug.callback(lambda x: None, kl)
        return term.update(state, kl, main)

    assert "callback" in str(jax.make_jaxpr(with_callback)(state, kl, main))  # the check sees one


def test_state_is_a_pytree_in_the_default_float_dtype() -> None:
    term = JaxConstraintTerm("kl", target=5.0, echo=None)
    state = term.init()
    leaves = jax.tree_util.tree_leaves(state)
    assert all(leaf.shape in ((), (1,)) for leaf in leaves)
    assert state.bound.dtype == jnp.float32
    assert math.isinf(float(state.bound))
    with jax.enable_x64(True):
        assert term.init().chance.log_weight.dtype == jnp.float64


def test_penalty_gradient_is_the_weight_and_main_is_not_differentiated() -> None:
    term = JaxConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=None)
    step = jitted(term)
    state = term.init()
    for v in values(0, [10.0])[0]:
        _, state = step(state, jnp.asarray(v), 3.0)
    state, _ = term.epoch_end(state)
    _, state = step(state, jnp.full(4, 9.0), 3.0)
    weight = float(term.weight_of(state))
    assert weight > 0

    def loss(kl: Any, main: Any) -> Any:
        penalty, _ = term.update(state, kl, main)
        return penalty

    d_kl, d_main = jax.grad(loss, argnums=(0, 1))(jnp.full(4, 9.0), jnp.asarray(3.0))
    np.testing.assert_allclose(np.asarray(d_kl), weight / 4, rtol=1e-6)
    assert float(d_main) == 0.0


def test_a_floor_rewards_the_value() -> None:
    term = JaxConstraintTerm("kl", side="lower", target=Relative(2.0), echo=None)
    step = jitted(term)
    state = term.init()
    for v in values(0, [5.0])[0]:
        _, state = step(state, jnp.asarray(v), 3.0)
    state, _ = term.epoch_end(state)
    penalty, state = step(state, jnp.full(4, 5.0), 3.0)
    weight = float(term.weight_of(state))
    penalty, _ = step(state, jnp.full(4, 5.0), 3.0)
    assert weight > 0
    assert float(penalty) == pytest.approx(-weight * 5.0, rel=1e-6)


# -- non-finite steps -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "main"), [(math.nan, 3.0), (9.0, math.inf)], ids=["value", "main"]
)
def test_a_nonfinite_step_is_counted_and_leaves_the_weight(value: float, main: float) -> None:
    term = JaxConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=None)
    step = jitted(term)
    state = term.init()
    for v in values(0, [10.0])[0]:
        _, state = step(state, jnp.asarray(v), 3.0)
    state, _ = term.epoch_end(state)
    for v in values(1, [9.0], steps=5)[0]:
        _, state = step(state, jnp.asarray(v), 3.0)
    before = state
    _, state = step(state, jnp.full(4, value), main)
    for a, b in zip(before.chance, state.chance, strict=True):
        assert float(a) == float(b)  # the multiplier learned nothing from it
    assert float(state.clock.epoch_steps) == float(before.clock.epoch_steps) + 1  # it counts
    nonfinite = 1 if math.isnan(value) else 0
    assert float(state.books["nonfinite"][0]) == nonfinite
    assert float(state.books["count"][0]) == 6
    weight = float(term.weight_of(state))
    state, _ = term.epoch_end(state)
    assert term.weight == pytest.approx(weight, rel=1e-6)
    stats = term.last_epoch
    assert stats is not None
    assert stats.nonfinite == nonfinite
    assert stats.steps == 6
    assert term.multiplier.last_epoch_steps == 6


def test_a_main_loss_without_a_positive_level_is_refused_at_the_epoch_end() -> None:
    term = JaxConstraintTerm("kl", target=5.0, echo=None)
    step = jitted(term)
    state = term.init()
    for v in values(0, [10.0])[0]:
        _, state = step(state, jnp.asarray(v), -1.0)
    with pytest.raises(ValueError, match="main loss's level at the end of discovery"):
        term.epoch_end(state)


# -- what is refused ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("discovery", "match"),
    [
        (DiscoveryPhase(statistic="median"), r"discovery=DiscoveryPhase\(statistic='median'\)"),
        (
            DiscoveryPhase(statistic="quantile", quantile=0.9),
            r"discovery=DiscoveryPhase\(statistic='quantile'\)",
        ),
        (DiscoveryPhase(steps=50), r"discovery=DiscoveryPhase\(steps=50\)"),
    ],
    ids=["median", "quantile", "steps"],
)
def test_discoveries_that_cannot_run_under_jit_are_refused(
    discovery: DiscoveryPhase, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        JaxConstraintTerm("kl", target=5.0, discovery=discovery, echo=None)


@pytest.mark.parametrize(
    ("options", "value", "error", "match"),
    [
        ({}, jnp.ones((4, 2)), ValueError, r"shape \(batch,\), got shape \(4, 2\)"),
        ({}, jnp.ones(0), ValueError, r"got shape \(0,\)"),
        ({}, jnp.asarray(2.0), ValueError, "reduction='mean'"),
        ({}, jnp.ones(4, dtype=bool), TypeError, "must be a real number"),
        ({}, jnp.ones(4, dtype=jnp.complex64), TypeError, "must be a real number"),
        ({}, "kl", TypeError, "must be a real number"),
    ],
    ids=["2-d", "empty", "0-d", "bool", "complex", "str"],
)
def test_values_of_the_wrong_kind_are_refused(
    options: dict[str, Any], value: Any, error: type[Exception], match: str
) -> None:
    term = JaxConstraintTerm("kl", target=5.0, echo=None, **options)
    with pytest.raises(error, match=match):
        term.update(term.init(), value, 3.0)


def test_main_is_required_and_checked() -> None:
    term = JaxConstraintTerm("kl", target=5.0, echo=None)
    with pytest.raises(TypeError, match="pass the step's main loss too"):
        term.update(term.init(), jnp.ones(4))
    with pytest.raises(ValueError, match=r"main must be the step's loss"):
        term.update(term.init(), jnp.ones(4), jnp.ones((2, 2)))


def test_reduction_mean_takes_the_batch_mean_and_per_example_main() -> None:
    term = JaxConstraintTerm("kl", target=5.0, reduction="mean", echo=None)
    penalty, state = jitted(term)(term.init(), jnp.asarray(7.0), jnp.ones(4))
    assert float(penalty) == 0.0
    assert float(state.books["total"][0]) == 7.0
    assert float(state.chance.main_level) == 1.0


def test_a_stale_state_is_refused() -> None:
    term = JaxConstraintTerm("kl", target=5.0, echo=None)
    step = jitted(term)
    state = term.init()
    _, state = step(state, jnp.ones(4), 3.0)
    new, _ = term.epoch_end(state)
    with pytest.raises(ValueError, match="state is from epoch 1"):
        term.epoch_end(state)
    _, new = step(new, jnp.ones(4), 3.0)
    synced = term.sync(new)
    with pytest.raises(ValueError, match="state holds 1 observations for 0 steps"):
        term.sync(new._replace(clock=synced.clock))


# -- checkpoints ----------------------------------------------------------------------------


def test_state_dict_round_trip_at_an_epoch_boundary_and_after_a_sync() -> None:
    options: dict[str, Any] = {"target": Relative(0.5), "squeeze_epochs": 2, "echo": None}
    epochs = values(3, [10.0, 10.0, 9.0, 8.0, 7.0])
    reference = JaxConstraintTerm("kl", **options)
    expected = feed(reference, epochs)

    # Saved at the end of epoch 2, and again mid-epoch 3 after a sync; restored in new terms.
    first = JaxConstraintTerm("kl", **options)
    feed(first, epochs[:2])
    saved = json.loads(json.dumps(first.state_dict()))  # plain, strict-JSON data
    second = JaxConstraintTerm("kl", **options)
    second.load_state_dict(saved)
    step = jitted(second)
    state = second.init()
    applied = []
    for v in epochs[2][:7]:
        applied.append(float(second.weight_of(state)))
        _, state = step(state, jnp.asarray(v), 3.0)
    state = second.sync(state)
    mid = json.loads(json.dumps(second.state_dict()))
    third = JaxConstraintTerm("kl", **options)
    third.load_state_dict(mid)
    step = jitted(third)
    state = third.init()
    for v in epochs[2][7:]:
        applied.append(float(third.weight_of(state)))
        _, state = step(state, jnp.asarray(v), 3.0)
    state, _ = third.epoch_end(state)
    applied += feed(third, epochs[3:])

    assert applied == expected[2 * 20 :]  # exactly: float32 numbers survive the host's floats
    assert third.bound == reference.bound
    assert third.last_epoch == reference.last_epoch
    assert third.state_dict()["scheduler"] == reference.state_dict()["scheduler"]


def test_sync_changes_nothing() -> None:
    options: dict[str, Any] = {"target": Relative(0.5), "squeeze_epochs": 2, "echo": None}
    epochs = values(4, [10.0, 10.0, 9.0, 8.0])
    expected = feed(JaxConstraintTerm("kl", **options), epochs)
    term = JaxConstraintTerm("kl", **options)
    step = jitted(term)
    state = term.init()
    applied = []
    for epoch in epochs:
        for i, v in enumerate(epoch):
            applied.append(float(term.weight_of(state)))
            _, state = step(state, jnp.asarray(v), 3.0)
            if i % 6 == 5:
                state = term.sync(state)
        state, _ = term.epoch_end(state)
    assert applied == expected
    assert term.last_tally is not None
    assert term.last_tally.count == 20


# -- the docs -------------------------------------------------------------------------------


def test_docstring_examples_run() -> None:
    module = importlib.import_module("constraint_sched.adapters.jax._term")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_public_names_are_documented() -> None:
    adapter = importlib.import_module("constraint_sched.adapters.jax")
    assert adapter.__all__ == ["JaxConstraintTerm", "JaxTermState"]
    for name in adapter.__all__:
        assert (getattr(adapter, name).__doc__ or "").strip(), name
