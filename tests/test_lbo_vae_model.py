"""The LBO-VAE's networks: shapes, ranges, the latent split, the KL, noise, gradients, config."""

from __future__ import annotations

import doctest
import math
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from torch.nn.utils import parametrize  # noqa: E402

from constraint_sched.adapters.lbo_vae import _model  # noqa: E402
from constraint_sched.adapters.lbo_vae._model import (  # noqa: E402
    LBOVAE,
    ModelConfig,
    PatchDiscriminator,
    VAEOutput,
    build,
    count_parameters,
)

# Small widths keep every test in milliseconds; the shapes do not depend on them.
CONFIGS = {
    "16px-8+8": ModelConfig(image_size=16, core_dims=8, detail_dims=8, width=8, disc_width=8),
    "32px-16+16": ModelConfig(width=8, disc_width=8),
    "32px-grey-4+12": ModelConfig(channels=1, core_dims=4, detail_dims=12, width=8, disc_width=8),
    "64px-24+8": ModelConfig(image_size=64, core_dims=24, detail_dims=8, width=4, disc_width=4),
}
SMALL = CONFIGS["16px-8+8"]


def make(config: ModelConfig = SMALL, seed: int = 0) -> tuple[LBOVAE, PatchDiscriminator]:
    torch.manual_seed(seed)
    return build(config)


def images(config: ModelConfig, batch: int = 3, seed: int = 1) -> Any:
    g = torch.Generator().manual_seed(seed)
    size = config.image_size
    return torch.rand(batch, config.channels, size, size, generator=g)


def test_doctests() -> None:
    result = doctest.testmod(_model, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8
    assert result.failed == 0


# --- shapes and ranges -----------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_shapes(config: ModelConfig) -> None:
    vae, disc = make(config)
    x = images(config)
    out = vae(x)
    assert isinstance(out, VAEOutput)
    latent = (3, config.core_dims + config.detail_dims)
    assert out.mu.shape == out.logvar.shape == out.z.shape == latent
    assert out.recon.shape == x.shape
    core, detail = vae.split(out.z)
    assert core.shape == (3, config.core_dims)
    assert detail.shape == (3, config.detail_dims)
    assert vae.decode(out.mu).shape == x.shape
    assert disc(x).shape == (3, 1, *disc.patch_shape) == (3, 1, 6, 6)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_recon_in_unit_interval(config: ModelConfig) -> None:
    vae, _ = make(config)
    recon = vae.decode(20.0 * torch.randn(5, config.latent_dims))
    assert recon.min() >= 0.0
    assert recon.max() <= 1.0


def test_init_is_near_the_prior() -> None:
    vae, _ = make(ModelConfig())
    with torch.no_grad():
        out = vae(images(ModelConfig(), batch=16))
        kl_core, kl_detail = vae.kl_halves(out.mu, out.logvar)
    assert out.logvar.abs().max() < 0.5
    assert 0 < float(kl_core) < 16
    assert 0 < float(kl_detail) < 16


def test_init_is_deterministic_given_the_seed() -> None:
    first, second = make(seed=3), make(seed=3)
    for a, b in zip(first, second, strict=True):
        state_a, state_b = a.state_dict(), b.state_dict()
        assert state_a.keys() == state_b.keys()
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    other = make(seed=4)[0].state_dict()
    assert not all(torch.equal(first[0].state_dict()[k], other[k]) for k in other)


# --- latent split ------------------------------------------------------------------------


def test_split_join_round_trip() -> None:
    vae, _ = make()
    z = torch.randn(4, SMALL.latent_dims)
    core, detail = vae.split(z)
    assert torch.equal(core, z[:, :8])
    assert torch.equal(detail, z[:, 8:])
    assert torch.equal(vae.join(core, detail), z)
    c, d = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    assert torch.equal(torch.cat(vae.split(vae.join(c, d)), -1), torch.cat([c, d], -1))


# --- KL --------------------------------------------------------------------------------


def test_kl_halves_closed_form() -> None:
    vae, _ = make(ModelConfig(image_size=16, core_dims=2, detail_dims=1, width=4))
    mu = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    logvar = torch.tensor([[0.0, 1.0, -1.0], [2.0, -0.5, 0.0]])

    def kl(m: float, lv: float) -> float:
        return 0.5 * (m * m + math.exp(lv) - 1.0 - lv)

    core_by_hand = (kl(1.0, 0.0) + kl(-2.0, 1.0) + kl(0.0, 2.0) + kl(3.0, -0.5)) / 2
    detail_by_hand = (kl(0.5, -1.0) + kl(-1.0, 0.0)) / 2
    kl_core, kl_detail = vae.kl_halves(mu, logvar)
    assert kl_core.shape == kl_detail.shape == ()
    assert float(kl_core) == pytest.approx(core_by_hand, rel=1e-6)
    assert float(kl_detail) == pytest.approx(detail_by_hand, rel=1e-6)


def test_kl_halves_zero_at_the_prior() -> None:
    vae, _ = make()
    zeros = torch.zeros(7, SMALL.latent_dims)
    assert [float(k) for k in vae.kl_halves(zeros, zeros)] == [0.0, 0.0]


# --- noise and determinism ----------------------------------------------------------------


def test_reparameterize_with_noise() -> None:
    vae, _ = make()
    mu, logvar, noise = torch.randn(3, 4, SMALL.latent_dims).unbind(0)
    z = vae.reparameterize(mu, logvar, noise)
    assert torch.equal(z, vae.reparameterize(mu, logvar, noise))
    torch.testing.assert_close(z, mu + torch.exp(logvar / 2) * noise)
    assert torch.equal(vae.reparameterize(mu, logvar, torch.zeros_like(mu)), mu)


def test_reparameterize_without_noise_draws_from_the_global_rng() -> None:
    vae, _ = make()
    mu, logvar = torch.zeros(4, SMALL.latent_dims), torch.zeros(4, SMALL.latent_dims)
    torch.manual_seed(5)
    first = vae.reparameterize(mu, logvar)
    torch.manual_seed(5)
    assert torch.equal(first, vae.reparameterize(mu, logvar))
    assert not torch.equal(first, vae.reparameterize(mu, logvar))


def test_draw_noise() -> None:
    vae, _ = make()
    x = images(SMALL, batch=5).double()
    a = vae.draw_noise(x, generator=torch.Generator().manual_seed(2))
    b = vae.draw_noise(x, generator=torch.Generator().manual_seed(2))
    assert a.shape == (5, SMALL.latent_dims)
    assert a.dtype == torch.float64
    assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_forward_with_the_same_noise_is_identical(mode: str) -> None:
    vae, _ = make()
    vae.train(mode == "train")
    x = images(SMALL, batch=4)
    noise = vae.draw_noise(x)
    first, second = vae(x, noise), vae(x, noise)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_train_and_eval_modes_agree() -> None:
    vae, _ = make()
    x = images(SMALL, batch=4)
    noise = vae.draw_noise(x)
    trained = vae.train()(x, noise)
    evaluated = vae.eval()(x, noise)
    for a, b in zip(trained, evaluated, strict=True):
        assert torch.equal(a, b)


def test_a_sample_does_not_depend_on_the_rest_of_the_batch() -> None:
    vae, _ = make()
    x = images(SMALL, batch=4)
    noise = vae.draw_noise(x)
    whole = vae(x, noise).recon[:1]
    alone = vae(x[:1], noise[:1]).recon
    torch.testing.assert_close(whole, alone)


# --- gradients ---------------------------------------------------------------------------


def test_gradients_reach_every_vae_parameter() -> None:
    vae, _ = make()
    x = images(SMALL, batch=4)
    out = vae(x)
    kl_core, kl_detail = vae.kl_halves(out.mu, out.logvar)
    ((out.recon - x).square().mean() + kl_core + kl_detail).backward()
    for name, p in vae.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gradients_reach_every_discriminator_parameter_and_the_images() -> None:
    _, disc = make()
    x = images(SMALL, batch=4).requires_grad_()
    disc(x).mean().backward()
    for name, p in disc.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    assert x.grad is not None
    assert x.grad.abs().sum() > 0


# --- discriminator -----------------------------------------------------------------------


def test_every_discriminator_conv_is_spectrally_normalised() -> None:
    _, disc = make()
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) >= 3
    for conv in convs:
        assert parametrize.is_parametrized(conv, "weight")
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in disc.modules())


def test_discriminator_in_eval_mode_is_a_pure_function() -> None:
    _, disc = make()
    disc.eval()
    x = images(SMALL, batch=2)
    assert torch.equal(disc(x), disc(x))


def test_discriminator_spectral_norm_bounds_the_weights() -> None:
    _, disc = make()
    x = images(SMALL, batch=2)
    for _ in range(30):  # power iterations run in train mode
        disc(x)
    disc.eval()
    for conv in (m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)):
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert float(sigma) == pytest.approx(1.0, rel=1e-2)


# --- no BatchNorm anywhere -----------------------------------------------------------------


def test_vae_has_no_batchnorm() -> None:
    vae, _ = make(ModelConfig())
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in vae.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in vae.modules())


# --- parameter counts ----------------------------------------------------------------------


def test_parameter_counts_of_the_default_config() -> None:
    vae, disc = make(ModelConfig())
    n_vae, n_disc = count_parameters(vae), count_parameters(disc)
    print(f"default config: LBOVAE {n_vae:,} parameters, PatchDiscriminator {n_disc:,}")
    assert 50_000 <= n_vae <= 3_000_000
    assert 20_000 <= n_disc <= 3_000_000
    assert n_vae == sum(p.numel() for p in vae.parameters())


def test_count_parameters_counts_a_spectral_norm_weight_once() -> None:
    conv = torch.nn.utils.parametrizations.spectral_norm(torch.nn.Conv2d(2, 3, 1))
    assert count_parameters(conv) == 2 * 3 + 3


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"image_size": 8}, ValueError, r"image_size must be a power of two >= 16, got 8"),
        ({"image_size": 48}, ValueError, r"image_size must be a power of two >= 16, got 48"),
        ({"image_size": 0}, ValueError, r"image_size .* got 0"),
        ({"image_size": 32.0}, TypeError, r"image_size must be an int, got 32\.0"),
        ({"image_size": True}, TypeError, r"image_size must be an int, got True"),
        ({"channels": 0}, ValueError, r"channels must be at least 1, got 0"),
        ({"channels": "3"}, TypeError, r"channels must be an int, got '3'"),
        ({"core_dims": 0}, ValueError, r"core_dims must be at least 1, got 0"),
        ({"detail_dims": -4}, ValueError, r"detail_dims must be at least 1, got -4"),
        ({"detail_dims": None}, TypeError, r"detail_dims must be an int, got None"),
        ({"width": 0}, ValueError, r"width must be at least 1, got 0"),
        ({"disc_width": 2.5}, TypeError, r"disc_width must be an int, got 2\.5"),
    ],
    ids=[
        "image_size-small",
        "image_size-not-power",
        "image_size-zero",
        "image_size-float",
        "image_size-bool",
        "channels-zero",
        "channels-str",
        "core_dims-zero",
        "detail_dims-negative",
        "detail_dims-none",
        "width-zero",
        "disc_width-float",
    ],
)
def test_config_validation(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ModelConfig(**kwargs)


def test_config_is_frozen_and_evolves() -> None:
    import attrs

    config = ModelConfig()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.width = 8  # type: ignore[misc]
    assert attrs.evolve(config, width=8).width == 8
    with pytest.raises(ValueError, match="width must be at least 1, got 0"):
        attrs.evolve(config, width=0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda vae: vae.encode(torch.rand(2, 3, 32, 32)),
            r"encode: x must have shape \(B, 3, 16, 16\), got \(2, 3, 32, 32\)",
        ),
        (
            lambda vae: vae.encode(torch.rand(3, 16, 16)),
            r"encode: x must have shape .* got \(3, 16, 16\)",
        ),
        (
            lambda vae: vae.decode(torch.rand(2, 15)),
            r"decode: z must have shape \(B, 16\), got \(2, 15\)",
        ),
        (
            lambda vae: vae.split(torch.rand(2, 17)),
            r"split: z must have 16 as its last dimension, got shape \(2, 17\)",
        ),
        (
            lambda vae: vae.join(torch.rand(2, 7), torch.rand(2, 8)),
            r"join: core must have 8 .* got shape \(2, 7\)",
        ),
        (
            lambda vae: vae.join(torch.rand(2, 8), torch.rand(2, 9)),
            r"join: detail must have 8 .* got shape \(2, 9\)",
        ),
        (
            lambda vae: vae.join(torch.rand(2, 8), torch.rand(3, 8)),
            r"join: core \(2, 8\) and detail \(3, 8\)",
        ),
        (
            lambda vae: vae.reparameterize(
                torch.zeros(2, 16), torch.zeros(2, 16), torch.zeros(3, 16)
            ),
            r"noise must have mu's shape \(2, 16\), got \(3, 16\)",
        ),
        (
            lambda vae: vae.reparameterize(torch.zeros(2, 16), torch.zeros(2, 8)),
            r"logvar must have mu's shape \(2, 16\), got \(2, 8\)",
        ),
        (
            lambda vae: vae.kl_halves(torch.zeros(2, 16), torch.zeros(2, 15)),
            r"kl_halves: mu and logvar must both have shape \(B, 16\)",
        ),
        (
            lambda vae: vae(torch.rand(2, 3, 16, 16), torch.zeros(2, 3)),
            r"noise must have mu's shape",
        ),
    ],
    ids=[
        "encode-size",
        "encode-dims",
        "decode",
        "split",
        "join-core",
        "join-detail",
        "join-batch",
        "noise",
        "logvar",
        "kl",
        "forward-noise",
    ],
)
def test_vae_shape_errors(call: Any, match: str) -> None:
    vae, _ = make()
    with pytest.raises(ValueError, match=match):
        call(vae)


def test_discriminator_shape_error() -> None:
    _, disc = make()
    with pytest.raises(
        ValueError,
        match=r"PatchDiscriminator: x must have shape \(B, 3, 16, 16\), got \(2, 1, 16, 16\)",
    ):
        disc(torch.rand(2, 1, 16, 16))


@pytest.mark.parametrize("cls", [LBOVAE, PatchDiscriminator])
def test_modules_reject_a_config_of_the_wrong_type(cls: type[Any]) -> None:
    with pytest.raises(TypeError, match=r"config must be a ModelConfig, got \{'width': 8\}"):
        cls({"width": 8})


def test_default_config_when_none() -> None:
    torch.manual_seed(0)
    vae, disc = LBOVAE(), PatchDiscriminator()
    assert vae.config == disc.config == ModelConfig()
