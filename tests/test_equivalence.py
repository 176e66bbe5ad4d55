"""numpy, torch and JAX run the same maths: the same events, bounds and weights, epoch by epoch.

The per-step maths is written once, in `constraint_sched.functional`, over an
array namespace. These properties feed one sequence of steps (NaN, inf,
spikes, values already under the target, rejected steps) through every way
the package runs it, and hold them together:

- the epoch's books: the core `ConstraintScheduler` (Python floats), the torch
  adapter on the host and on the device path (CPU tensors), and the
  functional books on numpy arrays and under ``jax.jit``, each merged into a
  core scheduler at the epoch end;
- the term: the core `ConstraintTerm` (floats), `TorchConstraintTerm` on both
  of its paths, and the JAX term under ``jax.jit`` (float64).
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from constraint_sched import (
    ConstraintScheduler,
    ConstraintSpec,
    ConstraintTerm,
    EpochFeed,
    Relative,
    SqueezeSchedule,
)
from constraint_sched import functional as F

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402

from constraint_sched.adapters.jax import JaxConstraintTerm  # noqa: E402
from constraint_sched.adapters.torch import TorchConstraintTerm, TorchScheduler  # noqa: E402

Step = tuple[float, bool]  # (value, accepted)

special = st.sampled_from([math.nan, math.inf, -math.inf, 1e6, 0.5])
ordinary = st.floats(1.0, 100.0)
accepted_steps = st.lists(st.tuples(st.one_of(ordinary, special), st.booleans()), max_size=12)


def scheduler(side: str) -> ConstraintScheduler:
    spec = ConstraintSpec("kl", side, margin=1e9)  # type: ignore[arg-type]
    target = 20.0 if side == "upper" else 60.0
    return ConstraintScheduler(
        spec,
        squeeze=SqueezeSchedule.geometric(target=target, epochs=2),
        side=side,  # type: ignore[arg-type]
    )


def events(evs: list[Any]) -> list[tuple[str, float]]:
    return [(e.kind, e.new) for e in evs]


# -- the books ---------------------------------------------------------------------


def run_core(epochs: list[list[Step]], side: str) -> list[Any]:
    s = scheduler(side)
    out = []
    for epoch in epochs:
        for value, accepted in epoch:
            if accepted:
                s.observe(value)
            else:
                s.reject()
        out.append((events(s.advance_epoch(log=False)), s.bound))
    return out


def run_torch(epochs: list[list[Step]], side: str, accumulate: str) -> list[Any]:
    s = TorchScheduler(scheduler(side), accumulate=accumulate)  # type: ignore[arg-type]
    out = []
    for epoch in epochs:
        for value, accepted in epoch:
            flag = torch.tensor(accepted)
            s.observe(torch.tensor(value, dtype=torch.float64), accepted=flag)
            s.reject(~flag if accumulate == "device" else int(not accepted))
        out.append((events(s.advance_epoch(log=False)), s.bound))
    return out


def run_functional(epochs: list[list[Step]], side: str, xp: Any, jit: bool) -> list[Any]:
    """The functional books on ``xp`` arrays (under ``jax.jit`` if asked), merged at epoch ends."""
    s = scheduler(side)

    def step(books: Any, value: Any, accepted: Any, above: Any, below: Any) -> Any:
        books = F.update(xp, books, xp.reshape(value, (1,)), above=above, below=below,
                         accepted=accepted)  # fmt: skip
        return F.reject(xp, books, ~accepted)

    run = jax.jit(step) if jit else step
    out = []
    for epoch in epochs:
        books = F.init(xp, 1)
        above = s.bound if side == "upper" else math.inf
        below = -math.inf if side == "upper" else s.bound
        for value, accepted in epoch:
            books = run(books, xp.asarray(value, dtype=xp.float64), xp.asarray(accepted),
                        xp.asarray(above), xp.asarray(below))  # fmt: skip
        (tally,), rejects = F.tallies([float(v) for v in F.pack(xp, books)], 1)
        s.reject(rejects)
        s.merge(tally)
        out.append((events(s.advance_epoch(log=False)), s.bound))
    return out


def run_feed(epochs: list[list[Step]], side: str) -> list[Any]:
    """`EpochFeed` over numpy arrays: values and acceptance counted as arrays on one device."""
    feed = EpochFeed(scheduler(side), xp=np)
    out = []
    for epoch in epochs:
        for value, accepted in epoch:
            flag = np.asarray(accepted)
            feed.observe(feed.items(np.asarray(value)), lambda n, v, w: ("cpu", v), flag)
            feed.reject(~flag, "cpu")
        out.append((events(feed.end_epoch(log=False)), feed.core.bound))
    return out


@settings(deadline=None, max_examples=12)
@given(
    epochs=st.lists(accepted_steps, min_size=1, max_size=5),
    side=st.sampled_from(["upper", "lower"]),
)
def test_the_books_agree_on_numpy_torch_and_jax(epochs: list[list[Step]], side: str) -> None:
    expected = run_core(epochs, side)
    assert run_torch(epochs, side, "host") == expected
    assert run_torch(epochs, side, "device") == expected
    assert run_feed(epochs, side) == expected
    np_xp = array_api_compat.array_namespace(np.zeros(1))
    assert run_functional(epochs, side, np_xp, jit=False) == expected
    with jax.enable_x64(True):
        jax_xp = array_api_compat.array_namespace(jnp.zeros(1))
        assert run_functional(epochs, side, jax_xp, jit=True) == expected


# -- the term -------------------------------------------------------------------------

finite = st.floats(0.5, 40.0)
term_epochs = st.lists(st.lists(finite, min_size=1, max_size=15), min_size=2, max_size=5)


def drive_core(epochs: list[list[float]], side: str) -> list[Any]:
    term = ConstraintTerm("kl", target=Relative(0.5), side=side, squeeze_epochs=2, echo=False)  # type: ignore[arg-type]
    out = []
    for epoch in epochs:
        weights = []
        for v in epoch:
            term([v, v], main=3.0)
            weights.append(term.weight)
        out.append((weights, events(term.epoch_end()), term.bound))
    return out


def drive_torch(epochs: list[list[float]], side: str, accumulate: str) -> list[Any]:
    term = TorchConstraintTerm(
        "kl",
        target=Relative(0.5),
        side=side,
        squeeze_epochs=2,
        echo=False,
        accumulate=accumulate,  # type: ignore[arg-type]
    )
    main = torch.tensor(3.0, dtype=torch.float64)
    out = []
    for epoch in epochs:
        weights = []
        for v in epoch:
            term(torch.tensor([v, v], dtype=torch.float64), main=main)
            weights.append(term.weight)
        out.append((weights, events(term.epoch_end()), term.bound))
    return out


def drive_jax(epochs: list[list[float]], side: str) -> list[Any]:
    term = JaxConstraintTerm("kl", target=Relative(0.5), side=side, squeeze_epochs=2, echo=False)  # type: ignore[arg-type]
    step = jax.jit(term.update)
    state = term.init()
    out = []
    for epoch in epochs:
        weights = []
        for v in epoch:
            weights.append(float(term.weight_of(state)))  # the weight this step applies
            _, state = step(state, jnp.asarray([v, v]), jnp.asarray(3.0))
        state, evs = term.epoch_end(state)
        out.append((weights, events(evs), term.bound))
    return out


def same(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b)
    for (wa, ea, ba), (wb, eb, bb) in zip(a, b, strict=True):
        assert wa == pytest.approx(wb, rel=1e-9, abs=1e-300)
        assert [k for k, _ in ea] == [k for k, _ in eb]
        assert [v for _, v in ea] == pytest.approx([v for _, v in eb], rel=1e-12)
        assert ba == pytest.approx(bb, rel=1e-12) or (math.isinf(ba) and ba == bb)


@settings(deadline=None, max_examples=6)  # each example compiles the JAX step anew
@given(epochs=term_epochs, side=st.sampled_from(["upper", "lower"]))
def test_the_term_agrees_on_numpy_torch_and_jax(epochs: list[list[float]], side: str) -> None:
    expected = drive_core(epochs, side)
    same(drive_torch(epochs, side, "auto"), expected)
    same(drive_torch(epochs, side, "device"), expected)
    with jax.enable_x64(True):
        same(drive_jax(epochs, side), expected)


@settings(deadline=None, max_examples=6)
@given(
    epochs=st.lists(
        st.lists(st.one_of(finite, special), min_size=1, max_size=12), min_size=2, max_size=4
    )
)
def test_non_finite_steps_are_counted_and_leave_the_weight_alike_on_torch_and_jax(
    epochs: list[list[float]],
) -> None:
    reference = drive_torch(epochs, "upper", "auto")
    same(drive_torch(epochs, "upper", "device"), reference)
    with jax.enable_x64(True):
        same(drive_jax(epochs, "upper"), reference)
