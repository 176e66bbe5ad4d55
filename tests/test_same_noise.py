"""SameNoise: replay the noise a model drew inside forward, and leave the random stream alone."""

from __future__ import annotations

import doctest
import importlib

import pytest

torch = pytest.importorskip("torch")

from constraint_sched.adapters.torch import SameNoise  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


class NoisyVAE(torch.nn.Module):
    """Draws its own noise in forward: a reparameterisation and a dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = torch.nn.Linear(6, 4)
        self.decode = torch.nn.Linear(2, 6)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.drop(self.encode(x)).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decode(z)


def model_on(device: str) -> NoisyVAE:
    torch.manual_seed(0)
    return NoisyVAE().to(device)


DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=needs_cuda)]


@pytest.mark.parametrize("device", DEVICES)
def test_replay_gives_bit_identical_outputs(device: str) -> None:
    model, x = model_on(device), torch.randn(8, 6, device=device)
    noise = SameNoise(device)
    with noise.record():
        first = model(x)
    _ = model(x)  # other draws in between: the replay does not depend on them
    with noise.replay():
        again = model(x)
    assert torch.equal(first, again)
    assert not torch.equal(first, model(x))  # without the replay: other noise


@pytest.mark.parametrize("device", DEVICES)
def test_the_stream_after_a_replay_is_the_stream_without_it(device: str) -> None:
    model, x = model_on(device), torch.randn(8, 6, device=device)
    noise = SameNoise(device)

    def run(replay: bool) -> torch.Tensor:
        torch.manual_seed(1)
        with noise.record():
            model(x)
        if replay:
            with noise.replay():
                model(x)
        return torch.cat([model(x).flatten(), torch.rand(3, device=device)])

    assert torch.equal(run(replay=True), run(replay=False))


def test_record_leaves_the_stream_as_it_would_be() -> None:
    model, x = model_on("cpu"), torch.randn(8, 6)
    torch.manual_seed(2)
    with SameNoise().record():
        recorded = model(x)
    after = torch.rand(3)
    torch.manual_seed(2)
    assert torch.equal(model(x), recorded)
    assert torch.equal(torch.rand(3), after)


def test_same_batch_same_noise_after_an_optimizer_step() -> None:
    """The use: is the stepped model better on exactly what the old one saw?"""
    model, x = model_on("cpu"), torch.randn(8, 6)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    noise = SameNoise()
    with noise.record():
        loss = (model(x) - x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    with noise.replay():
        stepped = (model(x) - x).pow(2).mean()
    # The same comparison with the noise drawn by hand, outside the model:
    with noise.replay():
        mu, logvar = model.drop(model.encode(x)).chunk(2, dim=-1)
        by_hand = model.decode(mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)) - x
    assert torch.equal(stepped, by_hand.pow(2).mean())


def test_replay_replays_the_last_record_each_time() -> None:
    noise = SameNoise()
    with noise.record():
        a = torch.rand(4)
    with noise.replay():
        assert torch.equal(torch.rand(4), a)
    with noise.replay():
        assert torch.equal(torch.rand(4), a)
    with noise.record():
        b = torch.rand(4)
    with noise.replay():
        assert torch.equal(torch.rand(4), b)
    assert not torch.equal(a, b)


def test_replay_restores_the_stream_when_its_block_raises() -> None:
    noise = SameNoise()
    with noise.record():
        torch.rand(2)
    state = torch.get_rng_state()

    def failing() -> None:
        with noise.replay():
            torch.rand(5)
            raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        failing()
    assert torch.equal(torch.get_rng_state(), state)


def test_replay_before_record_says_so() -> None:
    noise = SameNoise()
    assert not noise.recorded
    with pytest.raises(RuntimeError, match=r"replay\(\) called before record\(\)"), noise.replay():
        pass
    with noise.record():
        pass
    assert noise.recorded


@pytest.mark.parametrize(
    ("devices", "error", "match"),
    [
        pytest.param(1.5, TypeError, "got float 1.5", id="float"),
        pytest.param([None], TypeError, "got NoneType None", id="none-in-list"),
        pytest.param(True, TypeError, "got bool True", id="bool"),
        pytest.param("meta", ValueError, "CPU or CUDA devices, got 'meta'", id="meta"),
        # Strings torch reads as no device, and a negative index: torch's RuntimeError
        # becomes the documented ValueError, naming the argument and the value.
        pytest.param("tpu", ValueError, r"devices must be .*, got 'tpu'", id="tpu"),
        pytest.param(
            ["cpu", "tpu"], ValueError, r"devices must be .*, got 'tpu'", id="tpu-in-list"
        ),
        pytest.param("cuda:x", ValueError, r"devices must be .*, got 'cuda:x'", id="bad-index"),
        pytest.param("", ValueError, r"devices must be .*, got ''", id="empty"),
        pytest.param(-1, ValueError, r"devices must be .*, got -1", id="negative"),
    ],
)
def test_devices_are_checked_at_construction(devices: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        SameNoise(devices)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_a_cuda_device_without_cuda_is_refused() -> None:
    with pytest.raises(ValueError, match="'cuda:0', but CUDA is not available"):
        SameNoise("cuda:0")


@needs_cuda
def test_a_cuda_index_torch_does_not_see_is_refused() -> None:
    count = torch.cuda.device_count()
    with pytest.raises(ValueError, match=rf"'cuda:{count}', but torch sees {count} CUDA device"):
        SameNoise(count)


def test_the_cpu_generator_is_always_covered() -> None:
    assert SameNoise().devices == (torch.device("cpu"),)
    assert SameNoise(["cpu", torch.device("cpu")]).devices == (torch.device("cpu"),)
    assert "recorded=False" in repr(SameNoise())


@needs_cuda
def test_cuda_record_and_replay_never_synchronise() -> None:
    device = torch.device("cuda", torch.cuda.current_device())
    noise = SameNoise(device)
    assert noise.devices == (torch.device("cpu"), device)
    model, x = model_on("cuda"), torch.randn(8, 6, device=device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with noise.record():
            first = model(x)
        with noise.replay():
            again = model(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(first, again)  # reading back the comparison: after the check


def test_docstring_examples_run() -> None:
    module = importlib.import_module("constraint_sched.adapters.torch._noise")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
