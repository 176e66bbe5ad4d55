"""`TorchConstraintTerm`: the one-line term on tensors, with no host sync on the device path."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from host_reads import host_reads_forbidden  # noqa: E402

from constraint_sched import ConstraintTerm, Phase, Relative  # noqa: E402
from constraint_sched.adapters.torch import TorchConstraintTerm  # noqa: E402

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def device_maths(**options: object) -> TorchConstraintTerm:
    """A term that runs the accelerator's path (0-d tensor state, device books) on the CPU."""
    return TorchConstraintTerm("kl", target=5.0, echo=False, accumulate="device", **options)


def toy(term: TorchConstraintTerm, epochs: int, *, device: str = "cpu", steps: int = 30) -> list:
    """A toy model: a per-example KL that relaxes to ``12 / (1 + weight / 0.05)**0.7``."""
    g = torch.Generator().manual_seed(0)
    level = torch.tensor(12.0, dtype=torch.float64)
    main = torch.tensor(3.0, device=device)
    weights = []
    for _ in range(epochs):
        for _ in range(steps):
            w = term.weight_tensor
            w = torch.tensor(term.weight) if w is None else w.detach().cpu().double()
            level = level + (12.0 / (1.0 + w / 0.05) ** 0.7 - level) / 5.0
            kl = (level + 0.3 * torch.randn(16, generator=g, dtype=torch.float64)).float()
            term(kl.to(device), main=main)
            weights.append(term.weight)
        term.epoch_end()
    return weights


def test_the_term_is_differentiable_with_the_weight_detached() -> None:
    term = TorchConstraintTerm("kl", target=5.0, squeeze_epochs=1, echo=False)
    toy(term, 3)
    mu = torch.zeros(8, 3, requires_grad=True)
    kl = 0.5 * (mu + 2.0).pow(2).sum(dim=-1)
    loss = term(kl, main=torch.tensor(3.0, requires_grad=True))
    weight = term.weight
    assert weight > 0.0
    loss.backward()
    assert mu.grad is not None
    assert torch.allclose(mu.grad, torch.full((8, 3), weight * 2.0 / 8, dtype=mu.grad.dtype))


def test_the_cpu_path_and_the_device_maths_agree() -> None:
    """The device maths (0-d tensors, no host reads) is the core's maths on floats."""
    host = TorchConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
    device = device_maths(squeeze_epochs=2)
    a, b = toy(host, 6), toy(device, 6)
    assert a == pytest.approx(b, rel=1e-6)  # the device path's weight is in the value's float32
    assert host.phase is device.phase is Phase.CONVERGED
    assert a[-1] > 0.05


def test_the_torch_term_matches_the_core_term_on_the_same_values() -> None:
    core = ConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
    tterm = TorchConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        for _ in range(20):
            kl = 8.0 + torch.randn(16, generator=g, dtype=torch.float64)
            main = 2.0 + torch.rand((), generator=g, dtype=torch.float64)
            assert float(tterm(kl, main=main)) == pytest.approx(
                core(kl.numpy(), main=float(main)), rel=1e-12
            )
        assert [e.kind for e in tterm.epoch_end()] == [e.kind for e in core.epoch_end()]


def test_the_device_path_reads_nothing_on_the_host_between_epochs() -> None:
    term = device_maths(squeeze_epochs=2)
    toy(term, 2)
    kl, main = torch.full((16,), 9.0), torch.tensor(3.0)
    with host_reads_forbidden():
        for _ in range(20):
            term(kl, main=main)
    term.epoch_end()


def test_the_device_path_discovers_and_sets_the_unit_without_host_reads() -> None:
    term = device_maths(squeeze_epochs=2)
    main = torch.tensor(4.0)
    with host_reads_forbidden():
        for _ in range(10):
            term(torch.full((8,), 10.0), main=main)
    term.epoch_end()  # discovery ends: one sync
    with host_reads_forbidden():
        term(torch.full((8,), 9.0), main=main)  # sets the unit: main level / bound, 0.4
        term(torch.full((8,), 9.0), main=main)
    assert term.weight == pytest.approx(4.0 / 10.0, rel=0.01)


def test_a_main_loss_that_is_not_positive_is_refused_at_the_epoch_end_on_the_device() -> None:
    term = device_maths(squeeze_epochs=2)
    for _ in range(5):
        term(torch.full((8,), 10.0), main=torch.tensor(-1.0))
    with pytest.raises(ValueError, match="pass a main loss that is positive"):
        term.epoch_end()


@pytest.mark.parametrize(
    ("main", "error", "words"),
    [
        (None, TypeError, "main=loss"),
        (torch.ones(2, 2), ValueError, "shape (2, 2)"),
        (torch.ones((), dtype=torch.int64), TypeError, "real floating tensor"),
        (torch.ones((), device="meta"), TypeError, "real floating tensor"),
    ],
)
def test_a_bad_main_loss_is_refused(main: object, error: type, words: str) -> None:
    term = TorchConstraintTerm("kl", target=5.0, echo=False)
    kwargs = {} if main is None else {"main": main}
    with pytest.raises(error) as info:
        term(torch.ones(3), **kwargs)
    assert words in str(info.value)
    assert term.scheduler.current_epoch.observations == 0


def test_a_non_finite_value_leaves_the_weight_and_is_counted() -> None:
    for device_math in (False, True):
        term = TorchConstraintTerm(
            "kl",
            target=5.0,
            squeeze_epochs=2,
            echo=False,
            accumulate="device" if device_math else "auto",
        )
        toy(term, 3)
        main = torch.tensor(3.0)
        term(torch.full((4,), 9.0), main=main)
        term(torch.tensor([1.0, math.nan]), main=main)
        after_good = term.weight  # applied by the bad call: the state after the good one
        term(torch.full((4,), 9.0), main=torch.tensor(math.inf))
        assert term.weight == after_good
        term(torch.full((4,), 9.0), main=main)
        assert term.weight == after_good  # neither bad call moved the numbers
        assert math.isfinite(term.weight)
        term.epoch_end()
        assert term.last_epoch is not None
        assert term.last_epoch.nonfinite == 1
        assert term.multiplier.epoch_steps == 0  # every call counted, then the epoch closed


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (torch.ones(3, device="meta"), "meta tensor"),
        (torch.ones(3, 2), "shape (3, 2)"),
        (torch.tensor(2.0), "reduction='mean'"),
        (2.0, "reduction='mean'"),
    ],
)
def test_bad_values_are_refused_with_a_clear_error(value: object, words: str) -> None:
    term = TorchConstraintTerm("kl", target=5.0, echo=False)
    with pytest.raises(ValueError, match="TorchConstraintTerm") as info:
        term(value, main=1.0)
    assert words in str(info.value)
    assert term.scheduler.current_epoch.observations == 0  # nothing was recorded


@pytest.mark.parametrize(
    "dtype", [torch.complex64, torch.int64, torch.bool], ids=["complex", "int", "bool"]
)
def test_a_value_of_another_dtype_is_refused_as_the_core_term_refuses_it(
    dtype: torch.dtype,
) -> None:
    term = TorchConstraintTerm("kl", target=5.0, echo=False)
    with pytest.raises(TypeError, match=r"TorchConstraintTerm 'kl': .*real floating tensor"):
        term(torch.ones(3, dtype=dtype), main=1.0)
    assert term.scheduler.current_epoch.observations == 0  # nothing was recorded


def test_reduction_mean_takes_a_batch_mean_and_numbers() -> None:
    term = TorchConstraintTerm("kl", target=5.0, reduction="mean", echo=False)
    assert float(term(torch.tensor(3.0), main=1.0)) == 0.0
    assert float(term(4.0, main=torch.tensor(1.0))) == 0.0
    term.epoch_end()
    assert term.last_epoch is not None
    assert term.last_epoch.observations == 2


def test_state_dict_resumes_exactly_on_both_paths() -> None:
    for device_math in (False, True):

        def fresh(device_math: bool = device_math) -> TorchConstraintTerm:
            if device_math:
                return device_maths(squeeze_epochs=2)
            return TorchConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)

        a = fresh()
        toy(a, 3)
        main = torch.tensor(3.0)
        a(torch.full((4,), 7.0), main=main)
        b = fresh()
        b.load_state_dict(a.state_dict())
        for value in (6.0, 4.0, 8.0):
            assert float(a(torch.full((4,), value), main=main)) == pytest.approx(
                float(b(torch.full((4,), value), main=main)), rel=1e-6
            )
        assert [e.kind for e in a.epoch_end()] == [e.kind for e in b.epoch_end()]


def test_a_checkpoint_of_the_host_path_loads_into_the_core_term() -> None:
    tterm = TorchConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
    toy(tterm, 2)
    state = tterm.state_dict()
    assert isinstance(state["weight"], float)
    with pytest.raises((KeyError, ValueError, TypeError)):
        ConstraintTerm("kl", target=5.0, echo=False).load_state_dict({**state, "steps": "x"})


def test_a_relative_target_on_tensors() -> None:
    term = TorchConstraintTerm("kl", target=Relative(0.5), squeeze_epochs=2, echo=False)
    toy(term, 6)
    found = term.scheduler.discovered
    assert found is not None
    assert term.phase is Phase.CONVERGED
    assert term.bound == pytest.approx(0.5 * found)


@CUDA
def test_cuda_steps_do_not_synchronise() -> None:
    term = TorchConstraintTerm("kl", target=5.0, squeeze_epochs=2, echo=False)
    toy(term, 2, device="cuda")
    kl = torch.full((16,), 9.0, device="cuda", requires_grad=True)
    main = torch.tensor(3.0, device="cuda", requires_grad=True)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(20):
            loss = main + term(kl, main=main)
            loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert term.weight_tensor is not None
    assert term.weight_tensor.device.type == "cuda"
    term.epoch_end()
