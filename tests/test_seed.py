"""The seed's walk-through (v17d) and its edge cases, pinned epoch by epoch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from seed_data import KL_TABLE, KL_TARGET, MAX_KL_CORE, MAX_KL_DETAIL, STEPS_PER_EPOCH, kl_specs

from constraint_sched import (
    BackedOff,
    Backoff,
    ConstraintScheduler,
    Converged,
    Discovered,
    DiscoveryExtended,
    Held,
    Phase,
    Squeezed,
    SqueezeSchedule,
)


def seed_scheduler(**kwargs: object) -> ConstraintScheduler:
    return ConstraintScheduler(
        kl_specs(), squeeze=SqueezeSchedule.table(KL_TABLE), backoff=Backoff(), **kwargs
    )


def run_epoch(
    sched: ConstraintScheduler,
    rng: np.random.Generator,
    core_max: float,
    detail_max: float,
    rejects: int = 0,
) -> list:
    """One epoch of the seed: 395 steps, KL values below the given maxima, which occur once."""
    steps = STEPS_PER_EPOCH - rejects
    core = rng.uniform(0.5 * core_max, core_max, steps)
    detail = rng.uniform(0.5 * detail_max, detail_max, steps)
    core[steps // 2], detail[steps // 3] = core_max, detail_max
    for c, d in zip(core, detail, strict=True):
        sched.observe({"kl_core": float(c), "kl_detail": float(d)})
    sched.reject(rejects)
    return sched.advance_epoch()


def test_epoch_one_discovers_the_max_over_both_specs() -> None:
    sched = seed_scheduler()
    rng = np.random.default_rng(0)
    assert (sched.epoch, sched.phase, sched.bound) == (1, Phase.DISCOVERY, 1e9)
    events = run_epoch(sched, rng, MAX_KL_CORE, MAX_KL_DETAIL, rejects=3)

    discovered, held = events
    assert isinstance(discovered, Discovered)
    assert (discovered.epoch, discovered.old, discovered.new) == (2, 1e9, MAX_KL_CORE)
    assert discovered.per_spec == {"kl_core": MAX_KL_CORE, "kl_detail": MAX_KL_DETAIL}
    assert discovered.observations == 2 * (STEPS_PER_EPOCH - 3)
    assert isinstance(held, Held)
    assert (held.epoch, held.new, held.epochs) == (2, MAX_KL_CORE, 1)
    assert "42,358.2" in discovered.message
    assert sched.last_epoch is not None
    assert sched.last_epoch.reject_rate == pytest.approx(3 / 395)
    assert sched.last_epoch.violations == 0  # nothing violated by initialisation


def test_full_walkthrough_hold_squeeze_converge() -> None:
    sched = seed_scheduler()
    rng = np.random.default_rng(1)
    run_epoch(sched, rng, MAX_KL_CORE, MAX_KL_DETAIL)
    assert (sched.epoch, sched.phase, sched.bound) == (2, Phase.HOLD, MAX_KL_CORE)
    assert sched.spec("kl_core").upper == MAX_KL_CORE
    assert sched.spec("kl_detail").upper == MAX_KL_CORE  # one shared ceiling

    bounds = {}
    for epoch in range(2, 16):
        # The model stays inside each ceiling: KL near 90% of the current bound.
        ceiling = sched.bound
        events = run_epoch(sched, rng, 0.9 * ceiling, 0.85 * ceiling)
        bounds[sched.epoch] = sched.bound
        assert sched.epoch == epoch + 1
        squeezes = [e for e in events if isinstance(e, Squeezed)]
        assert len(squeezes) == 1
        assert squeezes[0].old == ceiling
        assert squeezes[0].new == KL_TABLE[epoch + 1]
        if sched.epoch < 15:
            assert sched.phase is Phase.SQUEEZE
        else:
            assert sched.phase is Phase.CONVERGED
            assert isinstance(events[-1], Converged)
            assert not events[-1].early
        if sched.epoch == 15:
            break
    assert bounds == {epoch: KL_TABLE[epoch] for epoch in range(3, 16)}
    assert sched.bound == KL_TARGET
    final = sched.spec("kl_core")
    assert final.upper == KL_TARGET
    # The original divided by zero here (healthy == ceiling == 3000): ours moves healthy down.
    assert final.lower < final.healthy < final.upper
    assert math.isfinite(final.score(2999.0))
    # Converged is final: nothing moves afterwards.
    for _ in range(3):
        assert run_epoch(sched, rng, 2900.0, 2800.0) == []
        assert (sched.phase, sched.bound) == (Phase.CONVERGED, KL_TARGET)


def test_exploding_kl_is_held_then_squeezed_then_backed_off() -> None:
    sched = seed_scheduler()
    rng = np.random.default_rng(2)
    run_epoch(sched, rng, 200_000.0, 150_000.0)
    assert (sched.phase, sched.bound) == (Phase.HOLD, 200_000.0)
    run_epoch(sched, rng, 190_000.0, 150_000.0)
    assert (sched.epoch, sched.phase, sched.bound) == (3, Phase.SQUEEZE, 13_000.0)

    # 200k -> 13k hurts: 80 of 395 steps are rejected (20% > 15%).
    events = run_epoch(sched, rng, 13_000.0, 12_000.0, rejects=80)
    (backoff,) = events
    assert isinstance(backoff, BackedOff)
    assert backoff.rate == pytest.approx(80 / 395)
    assert backoff.limit == 0.15
    assert backoff.old == 13_000.0
    assert backoff.new == pytest.approx(13_000.0 + 0.5 * (200_000.0 - 13_000.0))
    assert 13_000.0 < sched.bound <= 200_000.0  # never past the bound before the squeeze
    assert sched.phase is Phase.SQUEEZE

    # Epoch 4 runs at the relaxed bound, and one more (cooldown=1); then 13k is retried.
    relaxed = sched.bound
    assert run_epoch(sched, rng, 50_000.0, 40_000.0) == []
    assert (sched.epoch, sched.bound) == (5, relaxed)
    (retry,) = run_epoch(sched, rng, 50_000.0, 40_000.0)
    assert retry.epoch == 6
    assert isinstance(retry, Squeezed)
    assert (retry.old, retry.new) == (relaxed, 13_000.0)
    # This time the squeeze holds and the table continues from where it paused.
    (nxt,) = run_epoch(sched, rng, 12_000.0, 11_000.0, rejects=4)
    assert isinstance(nxt, Squeezed)
    assert nxt.new == 11_000.0


def test_backoff_with_factor_one_restores_the_bound_before_the_squeeze() -> None:
    sched = ConstraintScheduler(
        kl_specs(), squeeze=SqueezeSchedule.table(KL_TABLE), backoff=Backoff(factor=1.0)
    )
    rng = np.random.default_rng(3)
    run_epoch(sched, rng, 200_000.0, 150_000.0)
    run_epoch(sched, rng, 190_000.0, 150_000.0)
    run_epoch(sched, rng, 13_000.0, 12_000.0, rejects=100)
    assert sched.bound == 200_000.0


def test_a_squeeze_below_the_limit_is_not_backed_off() -> None:
    sched = seed_scheduler()
    rng = np.random.default_rng(4)
    run_epoch(sched, rng, 200_000.0, 150_000.0)
    run_epoch(sched, rng, 190_000.0, 150_000.0)
    # 59 / 395 = 14.9%: just under the 15% limit.
    events = run_epoch(sched, rng, 13_000.0, 12_000.0, rejects=59)
    assert [type(e) for e in events] == [Squeezed]
    assert sched.bound == 11_000.0


@pytest.mark.parametrize("kl_max", [2_500.0, 3_000.0], ids=["below-target", "at-target"])
def test_kl_already_at_or_below_target_converges_early(kl_max: float) -> None:
    sched = seed_scheduler()
    rng = np.random.default_rng(5)
    discovered, converged = run_epoch(sched, rng, kl_max, kl_max - 100.0)
    assert isinstance(discovered, Discovered)
    assert discovered.value == kl_max
    assert isinstance(converged, Converged)
    assert converged.early
    assert (sched.epoch, sched.phase, sched.bound) == (2, Phase.CONVERGED, KL_TARGET)
    assert sched.discovered == kl_max
    # Never loosens to the table's 13k (or anything else).
    for _ in range(14):
        assert run_epoch(sched, rng, kl_max, kl_max - 100.0) == []
        assert sched.bound == KL_TARGET


def test_an_epoch_with_every_step_rejected_extends_discovery() -> None:
    sched = seed_scheduler()
    sched.reject(STEPS_PER_EPOCH)
    (extended,) = sched.advance_epoch()
    assert isinstance(extended, DiscoveryExtended)
    assert extended.epoch == 2
    assert "no valid observation" in extended.reason
    assert (sched.epoch, sched.phase, sched.bound) == (2, Phase.DISCOVERY, 1e9)
    assert sched.spec("kl_core").upper == 1e9

    rng = np.random.default_rng(6)
    run_epoch(sched, rng, MAX_KL_CORE, MAX_KL_DETAIL)
    assert (sched.epoch, sched.phase, sched.bound) == (3, Phase.HOLD, MAX_KL_CORE)
    run_epoch(sched, rng, 40_000.0, 38_000.0)
    # The table shifts with the late discovery: its epoch-3 entry applies in epoch 4.
    assert (sched.epoch, sched.bound) == (4, 13_000.0)


def test_nonfinite_observations_are_counted_and_never_become_the_bound() -> None:
    sched = seed_scheduler()
    for value in [1_000.0, math.nan, 5_000.0, math.inf, -math.inf, 2_000.0]:
        sched.observe("kl_core", value)
    sched.observe({"kl_detail": np.float32("nan")})
    sched.observe({"kl_detail": np.float64(4_000.0)})
    stats = sched.current_epoch
    assert (stats.nonfinite, stats.observations, stats.steps) == (4, 4, 6)
    discovered = sched.advance_epoch()[0]
    assert isinstance(discovered, Discovered)
    assert discovered.new == 5_000.0
    assert sched.last_epoch is not None
    assert sched.last_epoch.nonfinite == 4


def test_an_epoch_of_only_nonfinite_values_extends_discovery() -> None:
    sched = seed_scheduler()
    for _ in range(10):
        sched.observe({"kl_core": math.nan, "kl_detail": math.inf})
    (event,) = sched.advance_epoch()
    assert isinstance(event, DiscoveryExtended)
    assert sched.bound == 1e9


def test_nonfinite_raise_policy_names_the_spec_and_loses_nothing() -> None:
    sched = seed_scheduler(nonfinite="raise")
    sched.observe({"kl_core": 10.0, "kl_detail": 20.0})
    with pytest.raises(ValueError, match=r"non-finite observation nan of 'kl_detail'"):
        sched.observe("kl_detail", math.nan)
    assert sched.current_epoch.observations == 2
    assert sched.advance_epoch()[0].value == 20.0
