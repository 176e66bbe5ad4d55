"""A corrupted state dict is refused at load, naming the field, or it keeps working.

For a random valid run of a scheduler, a term or the torch adapter, one
field of its state dict (any leaf, at any depth) is replaced by another value
or removed. Loading it either raises, with the field's name in the message
and the object unchanged, or gives an object that goes on through further
epochs without an error: never a load that succeeds and a failure later.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from strategies import observation_values, scheduler_configs

from constraint_sched import ConstraintScheduler, ConstraintTerm

torch = pytest.importorskip("torch")
from constraint_sched.adapters.torch import TorchConstraintTerm, TorchScheduler  # noqa: E402

Path = tuple[str | int, ...]

REFUSED = (ValueError, KeyError, TypeError)
"""What a refused load raises (the message names the field)."""


def leaves(data: Any, path: Path = ()) -> Iterator[Path]:
    """Every path to a number, string, bool or null in nested dicts and lists."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from leaves(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from leaves(value, (*path, i))
    else:
        yield path


def replaced(data: Any, path: Path, value: Any) -> Any:
    """A deep copy of ``data`` with the leaf at ``path`` replaced (removed if ``value`` is _GONE)."""
    out = json.loads(json.dumps(data))
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    if value is _GONE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


_GONE = object()


def field_name(path: Path) -> str:
    """The innermost key of ``path`` that is a name (not a list index)."""
    return next(str(k) for k in reversed(path) if isinstance(k, str))


@st.composite
def corruptions(draw: st.DrawFn, state: Any) -> tuple[Path, Any]:
    """One leaf of ``state`` and what replaces it."""
    paths = list(leaves(state))
    # The configuration is compared whole (any change is refused): mostly corrupt the rest.
    run = [
        p for p in paths if not {"config", "settings", "format", "version"} & set(p[:-1] + p[-1:])
    ]
    path = draw(st.sampled_from(run if run and draw(st.integers(0, 9)) else paths))
    parent = state
    for key in path[:-1]:
        parent = parent[key]
    old = parent[path[-1]]
    odd = st.sampled_from([None, True, False, "x", "inf", "-inf", "nan", [], {}])
    if isinstance(path[-1], str):
        odd = st.one_of(odd, st.just(_GONE))
    plausible = st.one_of(
        st.integers(-3, 3), st.sampled_from([-1e300, -1.0, 0.0, 1e-300, 0.5, 1e9, 1e300])
    )
    if isinstance(old, (int, float)) and not isinstance(old, bool):
        near = st.sampled_from(
            [-old, old + 1, old * 1e6, old / 3.0, old - 1, old * 0.999, "inf", "-inf"]
        )
        plausible = st.one_of(near, near, plausible)
    # Values of the right kind get past the type checks: they test the reachability checks.
    return path, draw(st.one_of(plausible, plausible, plausible, odd))


def check_refused_or_working(
    fresh: Callable[[], Any],
    saved: dict[str, Any],
    path: Path,
    value: Any,
    go_on: Callable[[Any], None],
) -> None:
    """Load the corrupted state into a fresh object: refused naming the field, or it goes on."""
    bad = replaced(saved, path, value)
    target = fresh()
    before = json.dumps(target.state_dict(), sort_keys=True)
    try:
        target.load_state_dict(bad)
    except REFUSED as error:
        event(f"refused: {type(error).__name__}")
        message = str(error)
        assert field_name(path) in message, f"{path} = {value!r} refused as: {message}"
        assert json.dumps(target.state_dict(), sort_keys=True) == before, (
            "a refused load changed it"
        )
        return
    event("loaded")
    go_on(target)  # loaded: it must keep working, and stay where a run can be
    fresh().load_state_dict(json.loads(json.dumps(target.state_dict())))


SETTINGS = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


# -- the core scheduler ----------------------------------------------------------------


@st.composite
def scheduler_runs(draw: st.DrawFn) -> tuple[dict[str, Any], list[list[Any]]]:
    """A valid configuration and its epochs: each a list of values and rejects ("r")."""
    config = draw(scheduler_configs(nonfinite="skip"))
    if draw(st.booleans()):
        config["discovery"] = attrs.evolve(
            config["discovery"],
            epochs=1,
            plateau=None,
            max_epochs=None,
            steps=draw(st.integers(1, 4)),
        )
    values = observation_values(config)
    step = st.one_of(values, values, st.just("r"))
    epochs = draw(st.lists(st.lists(step, max_size=6), min_size=1, max_size=6))
    return config, epochs


def _feed(sched: Any, epoch: list[Any], names: tuple[str, ...]) -> None:
    for v in epoch:
        if v == "r":
            sched.reject()
        else:
            sched.observe(dict.fromkeys(names, v))


def _go_on(names: tuple[str, ...], values: list[float]) -> Callable[[Any], None]:
    def go_on(sched: Any) -> None:
        for _ in range(4):
            _feed(sched, values, names)
            sched.advance_epoch(log=False)

    return go_on


@SETTINGS
@given(run=scheduler_runs(), data=st.data())
def test_a_corrupted_scheduler_state_is_refused_or_keeps_working(
    run: tuple[dict[str, Any], list[list[Any]]], data: st.DataObject
) -> None:
    config, epochs = run
    sched = ConstraintScheduler(**config)
    names = sched.names
    for k, epoch in enumerate(epochs):
        _feed(sched, epoch, names)
        if k < len(epochs) - 1:  # the last epoch stays open: a mid-epoch state
            sched.advance_epoch(log=False)
    saved = json.loads(json.dumps(sched.state_dict()))
    path, value = data.draw(corruptions(saved))
    later = data.draw(st.lists(observation_values(config, finite=True), min_size=1, max_size=4))
    check_refused_or_working(
        lambda: ConstraintScheduler(**config), saved, path, value, _go_on(names, later)
    )


# -- the term --------------------------------------------------------------------------


@SETTINGS
@given(
    epochs=st.lists(st.lists(st.floats(0.5, 50.0), min_size=1, max_size=5), min_size=1, max_size=5),
    target=st.floats(1.0, 20.0),
    framework=st.sampled_from(["numpy", "torch"]),
    data=st.data(),
)
def test_a_corrupted_term_state_is_refused_or_keeps_working(
    epochs: list[list[float]], target: float, framework: str, data: st.DataObject
) -> None:
    as_array = np.array if framework == "numpy" else torch.tensor
    term_class = ConstraintTerm if framework == "numpy" else TorchConstraintTerm

    def fresh() -> Any:
        return term_class("kl", target=target, squeeze_epochs=2, echo=False)

    term = fresh()
    for k, epoch in enumerate(epochs):
        for v in epoch:
            term(as_array([v, 1.1 * v]), main=0.5 + v / 100)
        if k < len(epochs) - 1:
            term.epoch_end()
    saved = json.loads(json.dumps(term.state_dict()))
    path, value = data.draw(corruptions(saved))

    def go_on(t: Any) -> None:
        for _ in range(4):
            for v in (3.0, 12.0, 40.0):
                out = t(as_array([v]), main=1.0)
                assert math.isfinite(float(out))
                assert 0.0 <= t.weight < math.inf
            t.epoch_end()

    check_refused_or_working(fresh, saved, path, value, go_on)


@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_a_term_loaded_with_a_far_off_track_keeps_a_finite_state(framework: str) -> None:
    # Found by the property above in CI: a constant discovery leaves no spread, so a
    # loaded track of -1e300 gave a squared deviation of inf, and a state no term loads.
    as_array = np.array if framework == "numpy" else torch.tensor
    term_class = ConstraintTerm if framework == "numpy" else TorchConstraintTerm

    def fresh() -> Any:
        return term_class("kl", target=1.0, squeeze_epochs=2, echo=False)

    term = fresh()
    for k in range(2):
        term(as_array([1.0, 1.1]), main=0.51)
        if k == 0:
            term.epoch_end()
    saved = json.loads(json.dumps(term.state_dict()))
    saved["multiplier"]["track"] = -1e300
    loaded = fresh()
    loaded.load_state_dict(saved)
    for v in (3.0, 12.0, 40.0):
        assert math.isfinite(float(loaded(as_array([v]), main=1.0)))
    assert math.isfinite(loaded.state_dict()["multiplier"]["noise"])
    fresh().load_state_dict(json.loads(json.dumps(loaded.state_dict())))


# -- the torch adapter -----------------------------------------------------------------


@SETTINGS
@given(
    run=scheduler_runs(),
    accumulate=st.sampled_from(["auto", "device", "host"]),
    data=st.data(),
)
def test_a_corrupted_torch_scheduler_state_is_refused_or_keeps_working(
    run: tuple[dict[str, Any], list[list[Any]]], accumulate: str, data: st.DataObject
) -> None:
    config, epochs = run
    if data.draw(st.booleans()):
        config["discovery"] = attrs.evolve(config["discovery"], statistic="median", quantile=None)

    def fresh() -> TorchScheduler:
        return TorchScheduler(ConstraintScheduler(**config), accumulate=accumulate)  # type: ignore[arg-type]

    sched = fresh()
    names = sched.names
    for k, epoch in enumerate(epochs):
        for v in epoch:
            if v == "r":
                sched.reject()
            else:
                sched.observe({n: torch.tensor(v, dtype=torch.float64) for n in names})
        if k < len(epochs) - 1:
            sched.advance_epoch(log=False)
    saved = json.loads(json.dumps(sched.state_dict()))
    path, value = data.draw(corruptions(saved))
    later = data.draw(st.lists(observation_values(config, finite=True), min_size=1, max_size=4))
    check_refused_or_working(fresh, saved, path, value, _go_on(names, later))


def test_a_main_level_at_or_under_zero_once_seen_is_refused_at_load() -> None:
    """Found by the corruption property: it loaded, then the next step raised."""
    term = ConstraintTerm("kl", target=1.0, echo=False)
    term(np.array([1.0]), main=1.0)
    state = json.loads(json.dumps(term.state_dict()))
    state["multiplier"]["main_level"] = -0.51
    fresh = ConstraintTerm("kl", target=1.0, echo=False)
    with pytest.raises(ValueError, match="main_level"):
        fresh.load_state_dict(state)


def test_a_far_last_value_keeps_the_noise_and_the_state_finite() -> None:
    """Found by the corruption property: a change of 1e300 made the noise inf, unsaveable."""
    term = ConstraintTerm("kl", target=1.0, echo=False)
    term(np.array([1.0]), main=1.0)
    state = json.loads(json.dumps(term.state_dict()))
    state["multiplier"]["last"] = -1e300
    term.load_state_dict(state)
    term(np.array([1.0]), main=1.0)
    saved = term.state_dict()
    assert math.isfinite(saved["multiplier"]["jump"])
    ConstraintTerm("kl", target=1.0, echo=False).load_state_dict(json.loads(json.dumps(saved)))


def test_a_weight_out_of_range_of_its_unit_names_both_fields() -> None:
    """Found by the corruption property: a corrupt log_unit was reported as log_weight alone."""
    term = ConstraintTerm("kl", target=1.0, squeeze_epochs=2, echo=False)
    for v in (3.0, 5.0, 4.0):
        term(np.array([v, 1.1 * v]), main=0.5)
    term.epoch_end()
    term(np.array([4.0]), main=0.5)
    state = json.loads(json.dumps(term.state_dict()))
    assert state["multiplier"]["scaled"] == 1.0
    state["multiplier"]["log_unit"] = state["multiplier"]["log_weight"] + 30.0
    fresh = ConstraintTerm("kl", target=1.0, squeeze_epochs=2, echo=False)
    with pytest.raises(ValueError, match=r"log_weight.*log_unit") as error:
        fresh.load_state_dict(state)
    assert "log_unit" in str(error.value)
