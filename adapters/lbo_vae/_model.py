"""The LBO-VAE's networks: a VAE with a core/detail latent split and a PatchGAN critic."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import attrs
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

_MAX_MULTIPLIER = 4
"""The deepest level of the VAE has at most ``4 * width`` channels."""


def _check_positive_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"ModelConfig.{attribute.name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"ModelConfig.{attribute.name} must be at least 1, got {value!r}")


def _check_image_size(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"ModelConfig.{attribute.name} must be an int, got {value!r}")
    if value < 16 or value & (value - 1):
        raise ValueError(
            f"ModelConfig.{attribute.name} must be a power of two >= 16, got {value!r}"
        )


@attrs.frozen
class ModelConfig:
    """The sizes of the LBO-VAE and its discriminator, validated when made.

    The defaults (32x32 RGB, a 16 + 16-d latent, 32 base channels) keep a
    training step at batch 64 within a few tens of milliseconds on a 2-core
    CPU. Change a field with `attrs.evolve`.

    Args:
        image_size: The side of the square input images; a power of two, at
            least 16. The encoder halves it down to 4x4.
        channels: The image channels (3 for RGB, 1 for grey).
        core_dims: The size of the core (structure) half of the latent.
        detail_dims: The size of the detail (appearance) half of the latent.
        width: The channels of the VAE's first level; each deeper level
            doubles them, up to ``4 * width``.
        disc_width: The channels of the discriminator's first layer; they
            double per layer, up to ``4 * disc_width``.

    Raises:
        TypeError: A field is not an int; the message names it.
        ValueError: A field is out of range; the message names it and the value.

    Examples:
        >>> config = ModelConfig(image_size=64, core_dims=8)
        >>> config.latent_dims, config.levels
        (24, 4)
        >>> ModelConfig(image_size=48)
        Traceback (most recent call last):
        ...
        ValueError: ModelConfig.image_size must be a power of two >= 16, got 48
    """

    image_size: int = attrs.field(default=32, validator=_check_image_size)
    channels: int = attrs.field(default=3, validator=_check_positive_int)
    core_dims: int = attrs.field(default=16, validator=_check_positive_int)
    detail_dims: int = attrs.field(default=16, validator=_check_positive_int)
    width: int = attrs.field(default=32, validator=_check_positive_int)
    disc_width: int = attrs.field(default=32, validator=_check_positive_int)

    @property
    def latent_dims(self) -> int:
        """The size of the whole latent, ``core_dims + detail_dims``."""
        return self.core_dims + self.detail_dims

    @property
    def levels(self) -> int:
        """The number of stride-2 stages from ``image_size`` down to 4x4."""
        return int(math.log2(self.image_size)) - 2


class VAEOutput(NamedTuple):
    """What `LBOVAE.forward` computed for one batch.

    Attributes:
        mu: The posterior means, shape ``(B, latent_dims)``.
        logvar: The posterior log-variances, shape ``(B, latent_dims)``.
        z: The sampled latents, ``mu + exp(logvar / 2) * noise``.
        recon: The decoded images, shape ``(B, C, H, W)``, values in ``[0, 1]``.
    """

    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor
    recon: torch.Tensor


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class LBOVAE(nn.Module):
    """A convolutional VAE whose latent splits into a core and a detail half.

    The encoder halves the image with stride-2 convolutions down to a 4x4 map
    (``image_size`` 32: three stages) and maps it linearly to ``mu`` and
    ``logvar``; the decoder mirrors it with transposed convolutions and ends
    in a sigmoid, so reconstructions lie in ``[0, 1]``. Normalisation is
    GroupNorm, never BatchNorm: the output depends on the sample alone, is the
    same in train and eval mode, and evaluating the same batch with the same
    noise twice gives the same result (what the rollback check needs).

    The first ``core_dims`` latent coordinates are the core (structure), the
    rest the detail (appearance); `split` and `join` convert. Nothing is
    clamped: the LBO goals keep ``logvar`` in range, and the output layer is
    initialised so that ``logvar`` starts near 0 (and ``mu`` small).

    Noise is explicit: `forward` and `reparameterize` take ``noise``, a
    standard normal tensor of ``mu``'s shape, and draw one from the global RNG
    only when it is None. To evaluate a batch again after an optimizer step
    with the same sample, draw the noise once (`draw_noise`) and pass it both
    times.

    Args:
        config: The sizes; `ModelConfig` defaults when None.

    Raises:
        TypeError: ``config`` is not a `ModelConfig`.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> vae = LBOVAE(ModelConfig(image_size=16, width=8))
        >>> x = torch.rand(2, 3, 16, 16)
        >>> out = vae(x)
        >>> out.mu.shape, out.recon.shape
        (torch.Size([2, 32]), torch.Size([2, 3, 16, 16]))
        >>> core, detail = vae.split(out.z)
        >>> core.shape, bool(torch.equal(vae.join(core, detail), out.z))
        (torch.Size([2, 16]), True)
        >>> kl_core, kl_detail = vae.kl_halves(out.mu, out.logvar)
        >>> kl_core.shape, bool(kl_core >= 0)
        (torch.Size([]), True)
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        config = ModelConfig() if config is None else config
        if not isinstance(config, ModelConfig):
            raise TypeError(f"LBOVAE: config must be a ModelConfig, got {config!r}")
        self.config = config
        self.core_dims = config.core_dims
        self.detail_dims = config.detail_dims
        self.latent_dims = config.latent_dims
        widths = [config.width * min(2**i, _MAX_MULTIPLIER) for i in range(config.levels)]
        deepest = widths[-1] * 4 * 4

        down: list[nn.Module] = []
        for c_in, c_out in zip([config.channels, *widths[:-1]], widths, strict=True):
            down += [
                nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
                nn.GroupNorm(_groups(c_out), c_out),
                nn.SiLU(),
            ]
        self.encoder = nn.Sequential(*down, nn.Flatten())
        self.to_posterior = nn.Linear(deepest, 2 * self.latent_dims)

        self.from_latent = nn.Sequential(
            nn.Linear(self.latent_dims, deepest),
            nn.Unflatten(1, (widths[-1], 4, 4)),
            nn.GroupNorm(_groups(widths[-1]), widths[-1]),
            nn.SiLU(),
        )
        up: list[nn.Module] = []
        for c_in, c_out in zip(widths[:0:-1], widths[-2::-1], strict=True):
            up += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1),
                nn.GroupNorm(_groups(c_out), c_out),
                nn.SiLU(),
            ]
        up += [nn.ConvTranspose2d(widths[0], config.channels, 4, stride=2, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*up)

        # logvar starts near 0 (its rows of the default init scaled down, bias 0);
        # mu keeps the default init, so the posterior starts close to the prior.
        with torch.no_grad():
            self.to_posterior.weight[self.latent_dims :].mul_(0.1)
            self.to_posterior.bias[self.latent_dims :].zero_()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior of a batch of images.

        Args:
            x: Images of shape ``(B, channels, image_size, image_size)``,
                values in ``[0, 1]``.

        Returns:
            ``(mu, logvar)``, each of shape ``(B, latent_dims)``; not clamped.

        Raises:
            ValueError: ``x`` has the wrong shape.
        """
        c, s = self.config.channels, self.config.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(
                f"LBOVAE.encode: x must have shape (B, {c}, {s}, {s}), got {tuple(x.shape)}"
            )
        mu, logvar = self.to_posterior(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar

    def draw_noise(
        self, batch: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Standard normal noise for `reparameterize`, one latent per sample of a batch.

        Args:
            batch: The images (or ``mu``) of the batch: the noise has
                ``batch.shape[0]`` rows and takes its dtype and device.
            generator: The random generator to draw from; the global one when None.

        Returns:
            Noise of shape ``(batch.shape[0], latent_dims)``.
        """
        return torch.randn(
            (batch.shape[0], self.latent_dims),
            generator=generator,
            dtype=batch.dtype,
            device=batch.device,
        )

    def reparameterize(
        self, mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """A sample of the posterior, ``mu + exp(logvar / 2) * noise``, differentiable.

        Args:
            mu: The posterior means, shape ``(B, latent_dims)``.
            logvar: The posterior log-variances, the same shape.
            noise: Standard normal noise of ``mu``'s shape; drawn with
                ``torch.randn_like(mu)`` when None. Pass the same tensor to
                get the same sample again.

        Returns:
            The latents ``z``, of ``mu``'s shape.

        Raises:
            ValueError: ``logvar`` or ``noise`` does not have ``mu``'s shape.
        """
        if logvar.shape != mu.shape:
            raise ValueError(
                f"LBOVAE.reparameterize: logvar must have mu's shape {tuple(mu.shape)}, "
                f"got {tuple(logvar.shape)}"
            )
        if noise is None:
            noise = torch.randn_like(mu)
        elif noise.shape != mu.shape:
            raise ValueError(
                f"LBOVAE.reparameterize: noise must have mu's shape {tuple(mu.shape)}, "
                f"got {tuple(noise.shape)}"
            )
        return mu + torch.exp(0.5 * logvar) * noise

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images from latents.

        Args:
            z: Latents of shape ``(B, latent_dims)`` (see `join`).

        Returns:
            Images of shape ``(B, channels, image_size, image_size)`` in ``[0, 1]``.

        Raises:
            ValueError: ``z`` has the wrong shape.
        """
        if z.dim() != 2 or z.shape[1] != self.latent_dims:
            raise ValueError(
                f"LBOVAE.decode: z must have shape (B, {self.latent_dims}), got {tuple(z.shape)}"
            )
        out: torch.Tensor = self.decoder(self.from_latent(z))
        return out

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The core and detail halves of latents (or of ``mu`` or ``logvar``).

        Args:
            z: A tensor whose last dimension is ``latent_dims``.

        Returns:
            ``(core, detail)``: the first ``core_dims`` and the last
            ``detail_dims`` coordinates of the last dimension (views).

        Raises:
            ValueError: The last dimension of ``z`` is not ``latent_dims``.
        """
        if z.dim() == 0 or z.shape[-1] != self.latent_dims:
            raise ValueError(
                f"LBOVAE.split: z must have {self.latent_dims} as its last dimension, "
                f"got shape {tuple(z.shape)}"
            )
        return z[..., : self.core_dims], z[..., self.core_dims :]

    def join(self, core: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
        """Latents from a core and a detail half, the inverse of `split`.

        Args:
            core: Shape ``(..., core_dims)``.
            detail: Shape ``(..., detail_dims)``, the same leading dimensions.

        Returns:
            Shape ``(..., latent_dims)``.

        Raises:
            ValueError: A half has the wrong last dimension, or the leading
                dimensions differ.
        """
        if core.dim() == 0 or core.shape[-1] != self.core_dims:
            raise ValueError(
                f"LBOVAE.join: core must have {self.core_dims} as its last dimension, "
                f"got shape {tuple(core.shape)}"
            )
        if detail.dim() == 0 or detail.shape[-1] != self.detail_dims:
            raise ValueError(
                f"LBOVAE.join: detail must have {self.detail_dims} as its last dimension, "
                f"got shape {tuple(detail.shape)}"
            )
        if core.shape[:-1] != detail.shape[:-1]:
            raise ValueError(
                f"LBOVAE.join: core {tuple(core.shape)} and detail {tuple(detail.shape)} "
                "must have the same leading dimensions"
            )
        return torch.cat([core, detail], dim=-1)

    def kl_halves(
        self, mu: torch.Tensor, logvar: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The KL divergence of each half of the posterior to ``N(0, I)``, in nats.

        Per sample, ``0.5 * sum(mu**2 + exp(logvar) - 1 - logvar)`` over the
        half's dimensions; then the mean over the batch. These are the seed's
        ``kl_core`` and ``kl_detail``, which share the scheduled KL ceiling.

        Args:
            mu: The posterior means, shape ``(B, latent_dims)``.
            logvar: The posterior log-variances, the same shape.

        Returns:
            ``(kl_core, kl_detail)``, two 0-d tensors.

        Raises:
            ValueError: ``mu`` and ``logvar`` differ in shape, or are not
                ``(B, latent_dims)``.
        """
        if mu.dim() != 2 or mu.shape != logvar.shape or mu.shape[1] != self.latent_dims:
            raise ValueError(
                f"LBOVAE.kl_halves: mu and logvar must both have shape (B, {self.latent_dims}), "
                f"got {tuple(mu.shape)} and {tuple(logvar.shape)}"
            )
        per_dim = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)
        core, detail = self.split(per_dim)
        return core.sum(dim=1).mean(), detail.sum(dim=1).mean()

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> VAEOutput:
        """Encode, sample and decode a batch.

        Args:
            x: Images of shape ``(B, channels, image_size, image_size)``.
            noise: Standard normal noise of shape ``(B, latent_dims)`` for the
                sample (see `reparameterize`); drawn from the global RNG when
                None. Pass zeros to decode the posterior means.

        Returns:
            A `VAEOutput` with ``mu``, ``logvar``, ``z`` and ``recon``.
        """
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, noise)
        return VAEOutput(mu, logvar, z, self.decode(z))


class PatchDiscriminator(nn.Module):
    """A PatchGAN critic with spectral norm: one real/fake logit per image patch.

    Stride-2 convolutions (one for ``image_size`` 16, two for 32, three from
    64 on) then two stride-1 ones, each 4x4, spectrally normalised and
    followed by LeakyReLU(0.2); no other normalisation. The output is a map of
    logits of shape ``(B, 1, 6, 6)`` whatever the image size
    (`patch_shape`); ``sigmoid`` of a logit is the probability that its patch
    is real.

    Training (the trainer's job, LBO.md section 6): update it every other step
    at a tenth of the VAE's learning rate. Spectral norm runs one power
    iteration per forward in train mode, which updates its ``u``/``v``
    buffers; put the critic in eval mode while it scores the VAE's outputs
    for the VAE's goals, so that scoring is a pure function of the weights.

    Args:
        config: The sizes (``image_size``, ``channels``, ``disc_width``);
            `ModelConfig` defaults when None.

    Raises:
        TypeError: ``config`` is not a `ModelConfig`.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> disc = PatchDiscriminator(ModelConfig(image_size=16, disc_width=8))
        >>> disc(torch.rand(2, 3, 16, 16)).shape, disc.patch_shape
        (torch.Size([2, 1, 6, 6]), (6, 6))
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        config = ModelConfig() if config is None else config
        if not isinstance(config, ModelConfig):
            raise TypeError(f"PatchDiscriminator: config must be a ModelConfig, got {config!r}")
        self.config = config
        strided = min(3, int(math.log2(config.image_size)) - 3)
        widths = [config.disc_width * min(2**i, _MAX_MULTIPLIER) for i in range(strided + 1)]
        layers: list[nn.Module] = []
        c_in = config.channels
        for i, c_out in enumerate(widths):
            stride = 2 if i < strided else 1
            layers += [
                spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=stride, padding=1)),
                nn.LeakyReLU(0.2),
            ]
            c_in = c_out
        layers.append(spectral_norm(nn.Conv2d(c_in, 1, 4, stride=1, padding=1)))
        self.net = nn.Sequential(*layers)
        side = config.image_size // 2**strided - 2
        self.patch_shape: tuple[int, int] = (side, side)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The patch logits of a batch of images.

        Args:
            x: Images of shape ``(B, channels, image_size, image_size)``.

        Returns:
            Logits of shape ``(B, 1, *patch_shape)``.

        Raises:
            ValueError: ``x`` has the wrong shape.
        """
        c, s = self.config.channels, self.config.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(
                f"PatchDiscriminator: x must have shape (B, {c}, {s}, {s}), got {tuple(x.shape)}"
            )
        out: torch.Tensor = self.net(x)
        return out


def build(config: ModelConfig | None = None) -> tuple[LBOVAE, PatchDiscriminator]:
    """The VAE and its discriminator for one config, initialised from the global RNG.

    Call ``torch.manual_seed`` first for a deterministic initialisation.

    Args:
        config: The sizes; `ModelConfig` defaults when None.

    Returns:
        ``(vae, discriminator)``.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> vae, disc = build(ModelConfig(image_size=16, width=8, disc_width=8))
        >>> type(vae).__name__, type(disc).__name__
        ('LBOVAE', 'PatchDiscriminator')
    """
    config = ModelConfig() if config is None else config
    return LBOVAE(config), PatchDiscriminator(config)


def count_parameters(module: nn.Module) -> int:
    """The number of scalar parameters of a module (a spectral norm's weight once).

    Args:
        module: Any module.

    Returns:
        The sum of ``numel`` over ``module.parameters()``.

    Examples:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in module.parameters())
