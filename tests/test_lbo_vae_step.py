"""The LBO-VAE step's two guards of the objective: met constraints and gradient clipping."""

from __future__ import annotations

import math
from pathlib import Path

import attrs
import pytest

torch = pytest.importorskip("torch")

from constraint_sched.adapters.lbo_vae._config import TrainConfig  # noqa: E402
from constraint_sched.adapters.lbo_vae._goals import OBJECTIVE_GOALS, compute  # noqa: E402
from constraint_sched.adapters.lbo_vae._step import EMA_DECAY, Stepper  # noqa: E402
from constraint_sched.adapters.lbo_vae._train import Run  # noqa: E402

SMALL = TrainConfig(
    epochs=1, images=32, heldout=32, batch_size=16, image_size=16, width=4, disc_width=4,
    core_dims=2, detail_dims=2, calibration_steps=1, device="cpu",
)  # fmt: skip


def quiet(message: str) -> None:
    """Swallow the run's messages."""


@pytest.fixture
def stepper(tmp_path: Path) -> Stepper:
    torch.manual_seed(0)
    return Run(SMALL, tmp_path, progress=False, print_=quiet).stepper


def set_gradients(stepper: Stepper, scale: float) -> list[torch.Tensor]:
    grads = []
    for i, p in enumerate(stepper.vae.parameters()):
        p.grad = torch.full_like(p, scale * (1 + i % 3))
        grads.append(p.grad)
    return grads


def norm(grads: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(g.square().sum()) for g in grads))


def test_an_ordinary_step_is_not_clipped_and_starts_the_running_mean(stepper: Stepper) -> None:
    grads = set_gradients(stepper, 1e-3)
    before = norm(grads)
    stepper._clip_gradients(active=True)
    assert norm(grads) == pytest.approx(before, rel=1e-6)
    assert float(stepper.norm_ema) == pytest.approx(before, rel=1e-6)


def test_a_spike_is_clipped_to_the_clip_times_the_running_mean(stepper: Stepper) -> None:
    set_gradients(stepper, 1e-3)
    stepper._clip_gradients(active=True)
    mean = float(stepper.norm_ema)
    spike = set_gradients(stepper, 1.0)  # a barrier near its bound: a thousand times the norm
    stepper._clip_gradients(active=True)
    assert stepper.clip is not None
    assert norm(spike) == pytest.approx(stepper.clip * mean, rel=1e-5)
    expected = EMA_DECAY * mean + (1 - EMA_DECAY) * stepper.clip * mean
    assert float(stepper.norm_ema) == pytest.approx(expected, rel=1e-5)


def test_calibration_steps_are_left_alone_and_restart_the_running_mean(stepper: Stepper) -> None:
    set_gradients(stepper, 1e-3)
    stepper._clip_gradients(active=True)
    grads = set_gradients(stepper, 1.0)
    stepper._clip_gradients(active=False)
    assert norm(grads) == pytest.approx(norm(set_gradients(stepper, 1.0)), rel=1e-6)
    assert float(stepper.norm_ema) == 0.0


def test_the_levels_leave_the_objective_alone(stepper: Stepper) -> None:
    levels = {n: math.exp(lm) for n, lm in stepper._log_met.items()}
    assert set(levels).isdisjoint(OBJECTIVE_GOALS)
    assert levels["edge"] == pytest.approx(SMALL.met)
    assert levels["swap_hist"] == pytest.approx(SMALL.swap_met)
    assert levels["kl_core"] == pytest.approx(SMALL.kl_met)
    assert levels["core_colour_leak"] == pytest.approx(SMALL.disentangle_met)
    assert levels["detail_edge_leak"] == pytest.approx(SMALL.disentangle_met)
    assert SMALL.disentangle_met != SMALL.met  # the test tells the two levels apart


@pytest.mark.parametrize("share", [0.5, 0.9])
def test_a_constraint_scores_one_once_met_and_keeps_its_gradient_below(
    stepper: Stepper, share: float
) -> None:
    # Before discovery the KL ceiling is 1e9: a KL of share * 1e9 scores about 1 - share.
    value = torch.tensor(share * 1e9, requires_grad=True)
    (log_score,) = stepper.log_scores({"kl_core": value}).values()
    raw = float(stepper.schedulers.log_score("kl_core", value.detach()))
    expected = min(0.0, raw - math.log(SMALL.kl_met))
    (grad,) = torch.autograd.grad(log_score, value)
    got = log_score.item() if not log_score.requires_grad else log_score.detach().item()
    assert got == pytest.approx(expected, abs=1e-5)
    if 1 - share >= SMALL.kl_met:  # met: a score of 1, no pull
        assert got == 0.0
        assert grad.item() == 0.0
    else:  # not met: it pulls the KL down
        assert got < 0.0
        assert grad.item() < 0.0


def batch(stepper: Stepper) -> torch.Tensor:
    return torch.rand(16, 3, 16, 16)


def test_the_check_after_a_step_runs_the_encoder_and_no_decoder(stepper: Stepper) -> None:
    x = batch(stepper)
    noise = stepper.vae.draw_noise(x)
    perm = torch.roll(torch.arange(16), 1)
    inputs = stepper.inputs(x, noise, noise, perm)
    calls = {"encode": 0, "decode": 0}
    for name in calls:
        real = getattr(stepper.vae, name)

        def counted(*a: object, name: str = name, real: object = real) -> object:
            calls[name] += 1
            return real(*a)  # type: ignore[operator]

        setattr(stepper.vae, name, counted)
    with torch.no_grad():
        after, checked = stepper.check(x, noise, noise, perm, inputs)
    assert calls == {"encode": 1, "decode": 0}
    assert set(stepper.barriers) <= set(after)
    reads = {g.name: set(g.reads) for g in stepper.goals}
    assert all(reads[name] <= {"mu", "logvar", "core_dims"} for name in after)
    assert {"kl_core", "kl_detail"} <= set(after)  # scheduled, read the posterior alone
    assert checked.mu is not inputs.mu  # the updated model's posterior


def test_a_step_that_leaves_non_finite_parameters_is_rolled_back(stepper: Stepper) -> None:
    for _ in range(2):  # past the calibration step
        stepper(batch(stepper))
    kept = [p.detach().clone() for p in stepper.vae.parameters()]
    for group in stepper.optimizer.param_groups:
        group["lr"] = math.nan
    result = stepper(batch(stepper))
    assert bool(result.rejected)
    for p, q in zip(stepper.vae.parameters(), kept, strict=True):
        assert torch.equal(p, q)


def test_a_posterior_recheck_rolls_back_non_finite_parameters_too(tmp_path: Path) -> None:
    torch.manual_seed(0)
    stepper = Run(attrs.evolve(SMALL, recheck="posterior"), tmp_path, progress=False,
                  print_=quiet).stepper  # fmt: skip
    assert stepper.recheck == "posterior"
    for _ in range(2):  # past the calibration step
        assert not bool(stepper(batch(stepper)).rejected)
    kept = [p.detach().clone() for p in stepper.vae.parameters()]
    for group in stepper.optimizer.param_groups:
        group["lr"] = math.nan
    assert bool(stepper(batch(stepper)).rejected)
    for p, q in zip(stepper.vae.parameters(), kept, strict=True):
        assert torch.equal(p, q)


def test_recheck_takes_full_or_posterior() -> None:
    with pytest.raises(ValueError, match="recheck"):
        TrainConfig(recheck="half")


def counting(stepper: Stepper, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[object]]:
    """Record the step's full forwards and what the schedulers observe."""
    seen: dict[str, list[object]] = {"full": [], "observed": []}
    inputs, observe = stepper.inputs, stepper.schedulers.observe

    def full(*args: object) -> object:
        seen["full"].append(stepper.steps)
        return inputs(*args)  # type: ignore[arg-type]

    def observed(values: dict[str, object], **kwargs: object) -> None:
        seen["observed"].append(frozenset(values))
        observe(values, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(stepper, "inputs", full)
    monkeypatch.setattr(stepper.schedulers, "observe", observed)
    return seen


def test_the_costly_groups_are_evaluated_one_step_in_refresh(
    stepper: Stepper, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stepper.refresh == 4  # the defaults
    assert stepper.recheck == "posterior"
    stepper(batch(stepper))  # the calibration step
    stepper.start_epoch()
    seen = counting(stepper, monkeypatch)
    start = stepper.steps
    for _ in range(8):
        stepper(batch(stepper))
        if stepper._stale is not None:  # stale goals that always score 1: never the bottleneck
            stepper._stale = {n: torch.zeros_like(v) for n, v in stepper._stale.items()}
    assert seen["full"] == [start, start + 4]
    costly = {"swap_hist", "core_pixel", "real_recon", "detail_edge_leak", "core_aug"}
    for k, names in enumerate(seen["observed"]):
        assert isinstance(names, frozenset)
        assert "kl_core" in names  # a cheap goal, every step
        scheduled = costly & set(stepper.schedulers.names)
        assert scheduled  # the calibrated scales of the costly goals
        assert (scheduled <= names) == (k % 4 == 0)
        assert (scheduled & names == set()) == (k % 4 != 0)


def test_a_stale_group_that_would_be_the_bottleneck_is_evaluated_afresh(
    stepper: Stepper, monkeypatch: pytest.MonkeyPatch
) -> None:
    stepper(batch(stepper))
    stepper.start_epoch()
    stepper(batch(stepper))  # a full step
    seen = counting(stepper, monkeypatch)
    assert stepper._stale is not None
    stepper._stale["swap_hist"] = torch.tensor(1e6)  # far past its scale: the bottleneck
    stepper(batch(stepper))
    assert seen["full"] == [stepper.steps - 1]
    assert float(stepper._stale["swap_hist"]) < 1e6  # afresh


def test_a_lazy_step_sees_the_cheap_goals_as_the_full_forward_does(stepper: Stepper) -> None:
    x = batch(stepper)
    noise = stepper.vae.draw_noise(x)
    perm = torch.roll(torch.arange(16), 1)
    cheap = compute(stepper._cheap_goals, stepper.cheap_inputs(x, noise))
    full = compute(stepper.goals, stepper.inputs(x, noise, noise, perm))
    assert set(cheap) == {"pixel", "edge", "kl_core", "kl_detail"}
    for name, value in cheap.items():
        assert torch.equal(value, full[name]), name


def test_refresh_one_evaluates_every_group_on_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    stepper = Run(attrs.evolve(SMALL, refresh=1), tmp_path, progress=False,
                  print_=quiet).stepper  # fmt: skip
    stepper(batch(stepper))
    seen = counting(stepper, monkeypatch)
    for _ in range(3):
        stepper(batch(stepper))
    assert len(seen["full"]) == 3


@pytest.mark.parametrize("refresh", [0, -1, 1.5, True])
def test_refresh_must_be_a_positive_integer(refresh: object, stepper: Stepper) -> None:
    with pytest.raises((TypeError, ValueError), match="refresh"):
        TrainConfig(refresh=refresh)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="refresh"):
        Stepper(stepper.vae, stepper.disc, stepper.goals, stepper.schedulers, stepper.optimizer,
                stepper.disc_optimizer, refresh=refresh)  # type: ignore[arg-type]  # fmt: skip
