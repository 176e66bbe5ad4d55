"""`TorchConstraintTerm`: the one-line term on tensors, with no host sync on the device path."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from host_reads import host_reads_forbidden  # noqa: E402

from constraint_sched import ConstraintTerm, Phase  # noqa: E402
from constraint_sched.adapters.torch import TorchConstraintTerm  # noqa: E402

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def device_maths(term: TorchConstraintTerm) -> TorchConstraintTerm:
    """Run the accelerator's path (0-d tensor state, device tallies) on the CPU."""
    term._device_math = True
    term.torch_scheduler._accumulate = "device"
    return term


def toy(term: TorchConstraintTerm, epochs: int, *, device: str = "cpu", steps: int = 30) -> list:
    """A toy model: a per-example KL that follows ``12 / weight**0.7`` with a lag."""
    g = torch.Generator().manual_seed(0)
    level = torch.tensor(12.0, dtype=torch.float64)
    weights = []
    for _ in range(epochs):
        for _ in range(steps):
            w = term.weight_tensor
            w = torch.tensor(term.weight) if w is None else w.detach().cpu().double()
            level = level + (12.0 / w**0.7 - level) / 10.0
            kl = (level + 0.3 * torch.randn(16, generator=g, dtype=torch.float64)).float()
            term(kl.to(device))
            weights.append(term.weight)
        term.epoch_end()
    return weights


def test_the_term_is_differentiable_with_the_weight_detached() -> None:
    term = TorchConstraintTerm("kl", target=5.0, squeeze_epochs=1, echo=False)
    toy(term, 3)
    mu = torch.zeros(8, 3, requires_grad=True)
    kl = 0.5 * (mu + 2.0).pow(2).sum(dim=-1)
    loss = term(kl)
    weight = term.weight
    loss.backward()
    assert mu.grad is not None
    assert torch.allclose(mu.grad, torch.full((8, 3), weight * 2.0 / 8, dtype=mu.grad.dtype))


def test_the_cpu_path_and_the_device_maths_agree() -> None:
    """The device maths (0-d tensors, no host reads) is the core's maths on floats."""
    host = TorchConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
    device = device_maths(TorchConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False))
    a, b = toy(host, 6), toy(device, 6)
    assert a == pytest.approx(b, rel=1e-6)  # the device path's weight is in the value's float32
    assert host.phase is device.phase is Phase.CONVERGED
    assert a[-1] > 2.0


def test_the_torch_term_matches_the_core_term_on_the_same_values() -> None:
    core = ConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
    tterm = TorchConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        for _ in range(20):
            kl = 8.0 + torch.randn(16, generator=g, dtype=torch.float64)
            assert float(tterm(kl)) == pytest.approx(core(kl.numpy()), rel=1e-12)
        assert [e.kind for e in tterm.epoch_end()] == [e.kind for e in core.epoch_end()]


def test_the_device_path_reads_nothing_on_the_host_between_epochs() -> None:
    term = device_maths(TorchConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False))
    toy(term, 2)
    kl = torch.full((16,), 9.0)
    with host_reads_forbidden():
        for _ in range(20):
            term(kl)
    term.epoch_end()


def test_a_non_finite_value_leaves_the_weight_and_is_counted() -> None:
    for device_math in (False, True):
        term = TorchConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
        if device_math:
            device_maths(term)
        toy(term, 3)
        term(torch.full((4,), 9.0))
        before = term.weight
        term(torch.tensor([1.0, math.nan]))
        term(torch.full((4,), 9.0))
        assert math.isfinite(term.weight)
        assert term.weight == pytest.approx(before, rel=0.2)
        term.epoch_end()
        assert term.last_epoch is not None
        assert term.last_epoch.nonfinite == 1


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (torch.ones(3, dtype=torch.complex64), "real floating tensor"),
        (torch.ones(3, dtype=torch.int64), "real floating tensor"),
        (torch.ones(3, device="meta"), "meta tensor"),
        (torch.ones(3, 2), "shape (3, 2)"),
        (torch.tensor(2.0), "reduction='mean'"),
        (2.0, "reduction='mean'"),
    ],
)
def test_bad_values_are_refused_with_a_clear_error(value: object, words: str) -> None:
    term = TorchConstraintTerm("kl", target=5.0, echo=False)
    with pytest.raises(ValueError, match="TorchConstraintTerm") as info:
        term(value)
    assert words in str(info.value)
    assert term.scheduler.current_epoch.observations == 0  # nothing was recorded


def test_reduction_mean_takes_a_batch_mean_and_numbers() -> None:
    term = TorchConstraintTerm("kl", target=5.0, reduction="mean", echo=False)
    assert float(term(torch.tensor(3.0))) == 3.0
    assert float(term(4.0)) == 4.0


def test_state_dict_resumes_exactly_on_both_paths() -> None:
    for device_math in (False, True):

        def fresh(device_math: bool = device_math) -> TorchConstraintTerm:
            t = TorchConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
            return device_maths(t) if device_math else t

        a = fresh()
        toy(a, 3)
        a(torch.full((4,), 7.0))
        b = fresh()
        b.load_state_dict(a.state_dict())
        for value in (6.0, 4.0, 8.0):
            assert float(a(torch.full((4,), value))) == pytest.approx(
                float(b(torch.full((4,), value))), rel=1e-6
            )
        assert [e.kind for e in a.epoch_end()] == [e.kind for e in b.epoch_end()]


def test_a_checkpoint_of_the_host_path_loads_into_the_core_term() -> None:
    tterm = TorchConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
    toy(tterm, 2)
    state = tterm.state_dict()
    assert isinstance(state["weight"], float)
    with pytest.raises((KeyError, ValueError, TypeError)):
        ConstraintTerm("kl", target=5.0, echo=False).load_state_dict({**state, "steps": "x"})


@CUDA
def test_cuda_steps_do_not_synchronise() -> None:
    term = TorchConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
    toy(term, 2, device="cuda")
    kl = torch.full((16,), 9.0, device="cuda", requires_grad=True)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(20):
            loss = term(kl)
            loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert term.weight_tensor is not None
    assert term.weight_tensor.device.type == "cuda"
    term.epoch_end()
