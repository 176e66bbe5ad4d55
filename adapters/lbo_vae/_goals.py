"""The LBO-VAE goal table: the inputs a step gathers, each goal's metric, spec and group.

The trainer runs the model and the discriminator once per step and fills a
`GoalInputs` bundle; `compute` turns the bundle into one raw metric (a 0-d
tensor) per `Goal`; each goal's `constraint_sched.ConstraintSpec` turns its
metric into a score, and `group_tree` gives the nested groups that
`constraint_sched.adapters.torch.LBOObjective` takes. Nothing here calls a
model, and nothing reads a tensor's value on the host: every metric is a pure,
differentiable function of the bundle, built from the building blocks of
`constraint_sched.adapters.lbo_vae._metrics` (re-exported here), safe inside a
step that must not wait for the accelerator.

`default_goals` builds the table of LBO.md, section 6. Its numbers are the
original's, for 64x64 CelebA faces and a 128-d latent; see its docstring for
which of them a trainer on other images should scale.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import attrs
import torch

from constraint_sched import ConstraintSpec
from constraint_sched.adapters.lbo_vae._metrics import (
    SOFT_COUNT_TEMPERATURE,
    batch_variance,
    colour_histogram,
    contribution_ratio,
    covariance_energy,
    effective_dims_gap,
    histogram_distance,
    kl_divergence,
    low_variance_fraction,
    mean_colour,
    mse,
    realism,
    sobel_edges,
    ssim,
)

__all__ = [
    "Goal",
    "GoalInputs",
    "INACTIVE_THRESHOLD",
    "KL_NO_CEILING",
    "LOW_VARIANCE_THRESHOLD",
    "Metric",
    "OBJECTIVE_GOALS",
    "PERTURBATION_STD",
    "SOFT_COUNT_TEMPERATURE",
    "SSIM_WEIGHT",
    "batch_variance",
    "colour_histogram",
    "compute",
    "contribution_ratio",
    "covariance_energy",
    "default_goals",
    "effective_dims_gap",
    "group_tree",
    "histogram_distance",
    "kl_divergence",
    "low_variance_fraction",
    "mean_colour",
    "met_levels",
    "mse",
    "realism",
    "sobel_edges",
    "specs",
    "ssim",
]

PERTURBATION_STD: Final = 0.5
"""The standard deviation of the noise the trainer adds to one latent half for `GoalInputs`."""

SSIM_WEIGHT: Final = 0.02
"""The weight of ``1 - SSIM`` in the ``pixel`` goal: ``MSE + SSIM_WEIGHT * (1 - SSIM)``.

The original weighs it 0.1. On the default shapes, a plain autoencoder trained
on ``MSE + 0.1 (1 - SSIM)`` for the default budget ends at 4x the held-out MSE
of one trained on MSE alone (0.033 against 0.0078); at 0.02 it keeps the MSE
(0.0076) and most of the SSIM gain (0.63 against 0.57). See the trainer's
design notes.
"""

OBJECTIVE_GOALS: Final = ("pixel",)
"""The goals the objective improves without limit; every other goal is a constraint.

A constraint goal counts as fully met once its score reaches its level
(`met_levels`), so it takes the gradient only while it is the group that
holds the objective back; the objective goals never saturate.
"""

KL_NO_CEILING: Final = 1e9
"""The KL goals' ceiling before the KL scheduler discovers one (LBO.md, section 2)."""

LOW_VARIANCE_THRESHOLD: Final = 0.1
"""A core dimension whose batch variance of ``mu`` is below this counts as low-variance."""

INACTIVE_THRESHOLD: Final = 0.01
"""A latent dimension whose batch variance of ``mu`` is below this counts as inactive.

The usual "active units" criterion of VAE papers (a dimension is active when
``Var_x(E[z | x]) > 0.01``).
"""


# -- the bundle ------------------------------------------------------------------------------

_IMAGES = ("x", "recon", "recon_core", "swap", "x2", "core_perturbed", "detail_perturbed")


def _check_tensor(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"GoalInputs.{attribute.name} must be a torch.Tensor, got {type(value).__name__}"
        )


def _check_optional_tensor(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _check_tensor(instance, attribute, value)


def _check_core_dims(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"GoalInputs.core_dims must be an int, got {value!r}")


@attrs.frozen(eq=False)  # tensors have no truth value: compare bundles by identity
class GoalInputs:
    """Every tensor the goals read for one batch, as the trainer computed them.

    Only shapes are checked at construction (never values: that would wait for
    the device). Images are ``(B, C, H, W)`` in ``[0, 1]``; a decoder output
    may stray outside, every metric accepts that. Let ``mu, logvar =
    encode(x)``, ``z = mu + exp(logvar / 2) * eps`` the reparameterised sample
    (``z = mu`` at evaluation), ``core(z)`` its first ``core_dims`` entries,
    ``detail(z)`` the rest, and ``join(core, detail)`` their concatenation.

    Gradients flow wherever the trainer lets them: pass tensors attached to the
    graph for training (and detached ones, or inside ``torch.no_grad()``, for
    evaluation). Compute in float32: the guards of the metrics (``1e-12``)
    vanish in float16.

    Args:
        x: The input batch, ``(B, C, H, W)`` in ``[0, 1]``.
        recon: ``decode(z)``, the reconstruction, same shape as ``x``.
        recon_core: ``decode(join(core(z), zeros))``: the same ``z`` with the
            detail half set to 0.
        swap: ``decode(join(core(z), detail(z)[perm]))``: the core of each
            image with the detail of another; ``perm`` should pair no image
            with itself, e.g. ``torch.roll(torch.arange(B), 1)``.
        x2: ``x[perm]``, the images whose detail ``swap`` used.
        core_perturbed: ``decode(join(core(z) + n, detail(z)))`` with ``n ~
            N(0, PERTURBATION_STD ** 2)``: noise on the core half only.
        detail_perturbed: ``decode(join(core(z), detail(z) + n))``: noise on
            the detail half only.
        mu: The posterior means, ``(B, D)``; every latent statistic (KL
            aside) reads ``mu``, never the noisy ``z``.
        logvar: The posterior log-variances, ``(B, D)``.
        core_dims: How many leading entries of the latent are the core half,
            ``0 < core_dims < D``; the rest is the detail half.
        mu_augmented_core: ``core(encode(augment(x))[0])``, ``(B, core_dims)``:
            the core means of an augmented copy of ``x`` (horizontal flip and
            colour jitter, e.g. brightness, contrast and saturation by up to
            20%, clamped to ``[0, 1]``); structure must not move.
        d_recon: The discriminator's logits for ``recon``, any shape ``(B, ...)``
            (a PatchGAN gives one per patch). For the generator's loss, pass
            them with the graph to ``recon`` (the discriminator's own
            parameters belong to its own optimizer).
        d_swap: The discriminator's logits for ``swap``, likewise.
        features_x: Optional feature maps of ``x`` from a pretrained network
            (for the ``perceptual`` goal only), any shape ``(B, ...)``.
        features_recon: The same network's features of ``recon``, same shape.

    Raises:
        TypeError: A field is not a tensor (``core_dims``: not an int).
        ValueError: A shape does not match; the message names the field.

    Examples:
        >>> img, mu = torch.rand(2, 3, 8, 8), torch.zeros(2, 6)
        >>> inputs = GoalInputs(x=img, recon=img, recon_core=img, swap=img, x2=img,
        ...                     core_perturbed=img, detail_perturbed=img, mu=mu,
        ...                     logvar=mu, core_dims=4, mu_augmented_core=mu[:, :4],
        ...                     d_recon=torch.zeros(2), d_swap=torch.zeros(2))
        >>> inputs.mu_detail.shape
        torch.Size([2, 2])
    """

    x: torch.Tensor = attrs.field(validator=_check_tensor)
    recon: torch.Tensor = attrs.field(validator=_check_tensor)
    recon_core: torch.Tensor = attrs.field(validator=_check_tensor)
    swap: torch.Tensor = attrs.field(validator=_check_tensor)
    x2: torch.Tensor = attrs.field(validator=_check_tensor)
    core_perturbed: torch.Tensor = attrs.field(validator=_check_tensor)
    detail_perturbed: torch.Tensor = attrs.field(validator=_check_tensor)
    mu: torch.Tensor = attrs.field(validator=_check_tensor)
    logvar: torch.Tensor = attrs.field(validator=_check_tensor)
    core_dims: int = attrs.field(validator=_check_core_dims)
    mu_augmented_core: torch.Tensor = attrs.field(validator=_check_tensor)
    d_recon: torch.Tensor = attrs.field(validator=_check_tensor)
    d_swap: torch.Tensor = attrs.field(validator=_check_tensor)
    features_x: torch.Tensor | None = attrs.field(
        default=None, validator=_check_optional_tensor, kw_only=True
    )
    features_recon: torch.Tensor | None = attrs.field(
        default=None, validator=_check_optional_tensor, kw_only=True
    )

    def edges(self, name: str) -> torch.Tensor:
        """`sobel_edges` of the image field ``name``.

        An image outside any graph (the input ``x``, in training) has its
        edges computed once per bundle and shared by the goals that read
        them; one in a graph gets them afresh for each goal, so that each
        goal's metric can be differentiated on its own.
        """
        image = getattr(self, name)
        if image.requires_grad:
            return sobel_edges(image)
        memo = _EDGES.setdefault(self, {})
        found = memo.get(name)
        if found is None:
            found = memo[name] = sobel_edges(image)
        return found

    def __attrs_post_init__(self) -> None:
        shape = tuple(self.x.shape)
        if len(shape) != 4:
            raise ValueError(f"GoalInputs.x must be (B, C, H, W), got shape {shape}")
        for name in _IMAGES[1:]:
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"GoalInputs.{name} must have x's shape {shape}, got {got}")
        batch = shape[0]
        latent = tuple(self.mu.shape)
        if len(latent) != 2 or latent[0] != batch:
            raise ValueError(f"GoalInputs.mu must be (B, D) with B={batch}, got shape {latent}")
        if tuple(self.logvar.shape) != latent:
            raise ValueError(
                f"GoalInputs.logvar must have mu's shape {latent}, got {tuple(self.logvar.shape)}"
            )
        if not 0 < self.core_dims < latent[1]:
            raise ValueError(
                f"GoalInputs.core_dims must lie strictly between 0 and D={latent[1]}, "
                f"got {self.core_dims}"
            )
        augmented = tuple(self.mu_augmented_core.shape)
        if augmented != (batch, self.core_dims):
            raise ValueError(
                f"GoalInputs.mu_augmented_core must be (B, core_dims) = {(batch, self.core_dims)}, "
                f"got {augmented}"
            )
        for name in ("d_recon", "d_swap"):
            got = tuple(getattr(self, name).shape)
            if not got or got[0] != batch:
                raise ValueError(f"GoalInputs.{name} must be (B, ...) with B={batch}, got {got}")
        fx, fr = self.features_x, self.features_recon
        if (fx is None) != (fr is None):
            raise ValueError(
                "GoalInputs.features_x and features_recon must be given together or not at all"
            )
        if fx is not None and fr is not None and fx.shape != fr.shape:
            raise ValueError(
                f"GoalInputs.features_recon must have features_x's shape {tuple(fx.shape)}, "
                f"got {tuple(fr.shape)}"
            )

    @property
    def mu_core(self) -> torch.Tensor:
        """The core half of ``mu``, ``(B, core_dims)``."""
        return self.mu[:, : self.core_dims]

    @property
    def mu_detail(self) -> torch.Tensor:
        """The detail half of ``mu``, ``(B, D - core_dims)``."""
        return self.mu[:, self.core_dims :]

    @property
    def logvar_core(self) -> torch.Tensor:
        """The core half of ``logvar``."""
        return self.logvar[:, : self.core_dims]

    @property
    def logvar_detail(self) -> torch.Tensor:
        """The detail half of ``logvar``."""
        return self.logvar[:, self.core_dims :]


_FIELDS: Final = frozenset(f.name for f in attrs.fields(GoalInputs))

_EDGES: weakref.WeakKeyDictionary[GoalInputs, dict[str, torch.Tensor]] = weakref.WeakKeyDictionary()
"""Each live bundle's Sobel edges by field (`GoalInputs.edges`), gone with the bundle."""

Metric = Callable[[GoalInputs], torch.Tensor]
"""A goal's raw metric: a pure, differentiable function of the batch's tensors to a 0-d tensor."""


# -- the goals' metrics ---------------------------------------------------------------------


def _pixel(i: GoalInputs) -> torch.Tensor:
    return mse(i.recon, i.x) + SSIM_WEIGHT * (1.0 - ssim(i.recon, i.x))


def _edge(i: GoalInputs) -> torch.Tensor:
    return mse(i.edges("recon"), i.edges("x"))


def _perceptual(i: GoalInputs) -> torch.Tensor:
    if i.features_x is None or i.features_recon is None:
        raise ValueError(
            "goal 'perceptual' needs GoalInputs.features_x and features_recon; "
            "build the goals with perceptual=False when no feature extractor is given"
        )
    return mse(i.features_recon, i.features_x)


def _core_pixel(i: GoalInputs) -> torch.Tensor:
    return mse(i.recon_core, i.x)


def _core_edge(i: GoalInputs) -> torch.Tensor:
    return mse(i.edges("recon_core"), i.edges("x"))


def _swap_edge(i: GoalInputs) -> torch.Tensor:
    return mse(i.edges("swap"), i.edges("x"))


def _swap_colour(i: GoalInputs) -> torch.Tensor:
    return mse(mean_colour(i.swap), mean_colour(i.x2))


def _swap_hist(i: GoalInputs) -> torch.Tensor:
    return histogram_distance(colour_histogram(i.swap), colour_histogram(i.x2))


def _real_recon(i: GoalInputs) -> torch.Tensor:
    return realism(i.d_recon)


def _real_swap(i: GoalInputs) -> torch.Tensor:
    return realism(i.d_swap)


def _core_colour_leak(i: GoalInputs) -> torch.Tensor:
    return mse(mean_colour(i.core_perturbed), mean_colour(i.recon))


def _detail_edge_leak(i: GoalInputs) -> torch.Tensor:
    return mse(i.edges("detail_perturbed"), i.edges("recon"))


def _kl_core(i: GoalInputs) -> torch.Tensor:
    return kl_divergence(i.mu_core, i.logvar_core)


def _kl_detail(i: GoalInputs) -> torch.Tensor:
    return kl_divergence(i.mu_detail, i.logvar_detail)


def _logvar_core(i: GoalInputs) -> torch.Tensor:
    return i.logvar_core.mean()


def _logvar_detail(i: GoalInputs) -> torch.Tensor:
    return i.logvar_detail.mean()


def _core_cov(i: GoalInputs) -> torch.Tensor:
    return covariance_energy(i.mu_core)


def _core_low_var(i: GoalInputs) -> torch.Tensor:
    return low_variance_fraction(batch_variance(i.mu_core), LOW_VARIANCE_THRESHOLD)


def _core_aug(i: GoalInputs) -> torch.Tensor:
    return mse(i.mu_augmented_core, i.mu_core)


def _inactive_core(i: GoalInputs) -> torch.Tensor:
    return low_variance_fraction(batch_variance(i.mu_core), INACTIVE_THRESHOLD)


def _inactive_detail(i: GoalInputs) -> torch.Tensor:
    return low_variance_fraction(batch_variance(i.mu_detail), INACTIVE_THRESHOLD)


def _entropy_core(i: GoalInputs) -> torch.Tensor:
    return effective_dims_gap(batch_variance(i.mu_core))


def _entropy_detail(i: GoalInputs) -> torch.Tensor:
    return effective_dims_gap(batch_variance(i.mu_detail))


def _detail_mean(i: GoalInputs) -> torch.Tensor:
    return i.mu_detail.mean(dim=0).abs().mean()


def _detail_var(i: GoalInputs) -> torch.Tensor:
    return batch_variance(i.mu_detail).mean()


def _detail_cov(i: GoalInputs) -> torch.Tensor:
    return covariance_energy(i.mu_detail)


def _detail_ratio(i: GoalInputs) -> torch.Tensor:
    return contribution_ratio(i.recon, i.recon_core)


def _median_var_core(i: GoalInputs) -> torch.Tensor:
    return torch.median(batch_variance(i.mu_core))


def _median_var_detail(i: GoalInputs) -> torch.Tensor:
    return torch.median(batch_variance(i.mu_detail))


def _max_var(i: GoalInputs) -> torch.Tensor:
    return batch_variance(i.mu).max()


# -- the table -------------------------------------------------------------------------------


def _check_name(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"Goal.name must be a non-empty str, got {value!r}")


def _check_metric(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not callable(value):
        raise TypeError(f"Goal {instance.name!r}: metric must be callable, got {value!r}")


def _check_spec(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, ConstraintSpec):
        raise TypeError(f"Goal {instance.name!r}: spec must be a ConstraintSpec, got {value!r}")
    if value.name != instance.name:
        raise ValueError(
            f"Goal {instance.name!r}: spec.name must be the goal's name, got {value.name!r}"
        )


def _check_group(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value or not all(isinstance(part, str) and part for part in value):
        raise ValueError(
            f"Goal {instance.name!r}: group must be a non-empty path of non-empty names, "
            f"got {value!r}"
        )


def _check_reads(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    unknown = sorted(set(value) - _FIELDS)
    if unknown:
        raise ValueError(
            f"Goal {instance.name!r}: reads names {unknown}, which are not GoalInputs fields"
        )


def _to_path(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _to_names(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class Goal:
    """One goal of the LBO objective: a raw metric, the spec that scores it, and its group.

    Args:
        name: The goal's name (the key of `compute`'s result and of the score).
        metric: ``GoalInputs -> 0-d tensor``, pure and differentiable.
        spec: The `constraint_sched.ConstraintSpec` that scores the metric;
            its name must be the goal's.
        group: The path of the group that holds the goal, outermost first,
            e.g. ``("latent", "kl")``; a single string is a one-level path.
        reads: The `GoalInputs` fields the metric reads (documentation, and
            what the tests check gradients against).

    Raises:
        TypeError: A field has the wrong type.
        ValueError: ``spec.name`` differs from ``name``, the group path is
            empty, or ``reads`` names a field `GoalInputs` does not have.

    Examples:
        >>> goal = Goal("kl_core", lambda i: kl_divergence(i.mu_core, i.logvar_core),
        ...             ConstraintSpec("kl_core", "box_asymmetric", lower=100.0,
        ...                            healthy=3000.0, upper=1e9),
        ...             ("latent", "kl"), reads=("mu", "logvar", "core_dims"))
        >>> goal.group
        ('latent', 'kl')
    """

    name: str = attrs.field(validator=_check_name)
    metric: Metric = attrs.field(validator=_check_metric)
    spec: ConstraintSpec = attrs.field(validator=_check_spec)
    group: tuple[str, ...] = attrs.field(converter=_to_path, validator=_check_group)
    reads: tuple[str, ...] = attrs.field(
        default=(), converter=_to_names, validator=_check_reads, kw_only=True
    )


_AUTO: Final[dict[str, Any]] = {"kind": "minimize_soft", "scale": "auto"}


def _soft(scale: float) -> dict[str, Any]:
    return {"kind": "minimize_soft", "scale": scale}


def _box(lower: float, upper: float) -> dict[str, Any]:
    return {"kind": "box", "lower": lower, "upper": upper}


_KL: Final[dict[str, Any]] = {"kind": "box_asymmetric"}  # bounds: default_goals' arguments
_IMG: Final = ("x", "recon")
_LAT: Final = ("mu", "core_dims")
_HALVES: Final = ("mu", "logvar", "core_dims")
_LOGVAR: Final = ("logvar", "core_dims")

# LBO.md, section 6, one goal per row: name, metric, spec (kind and parameters),
# group path, the GoalInputs fields the metric reads.
_TABLE: Final[tuple[tuple[str, Metric, dict[str, Any], tuple[str, ...], tuple[str, ...]], ...]] = (
    ("pixel", _pixel, _AUTO, ("recon",), _IMG),
    ("edge", _edge, _AUTO, ("recon",), _IMG),
    ("perceptual", _perceptual, _AUTO, ("recon",), ("features_x", "features_recon")),
    ("core_pixel", _core_pixel, _AUTO, ("core",), ("x", "recon_core")),
    ("core_edge", _core_edge, _AUTO, ("core",), ("x", "recon_core")),
    ("swap_edge", _swap_edge, _AUTO, ("swap",), ("x", "swap")),
    ("swap_colour", _swap_colour, _AUTO, ("swap",), ("x2", "swap")),
    ("swap_hist", _swap_hist, _AUTO, ("swap",), ("x2", "swap")),
    ("real_recon", _real_recon, _AUTO, ("realism",), ("d_recon",)),
    ("real_swap", _real_swap, _AUTO, ("realism",), ("d_swap",)),
    ("core_colour_leak", _core_colour_leak, _AUTO, ("disentangle",), ("recon", "core_perturbed")),
    ("detail_edge_leak", _detail_edge_leak, _AUTO, ("disentangle",), ("recon", "detail_perturbed")),
    ("kl_core", _kl_core, _KL, ("kl",), _HALVES),
    ("kl_detail", _kl_detail, _KL, ("kl",), _HALVES),
    ("logvar_core", _logvar_core, _box(-15.0, 10.0), ("latent", "logvar"), _LOGVAR),
    ("logvar_detail", _logvar_detail, _box(-15.0, 10.0), ("latent", "logvar"), _LOGVAR),
    ("core_cov", _core_cov, _AUTO, ("latent", "structure"), _LAT),
    ("core_low_var", _core_low_var, _soft(0.1), ("latent", "structure"), _LAT),
    ("core_aug", _core_aug, _AUTO, ("latent", "structure"), (*_LAT, "mu_augmented_core")),
    ("inactive_core", _inactive_core, _soft(0.4), ("latent", "capacity"), _LAT),
    ("inactive_detail", _inactive_detail, _soft(0.4), ("latent", "capacity"), _LAT),
    ("entropy_core", _entropy_core, _soft(0.4), ("latent", "capacity"), _LAT),
    ("entropy_detail", _entropy_detail, _soft(0.4), ("latent", "capacity"), _LAT),
    ("detail_mean", _detail_mean, _box(-30.0, 30.0), ("latent", "detail"), _LAT),
    ("detail_var", _detail_var, _box(0.0, 500.0), ("latent", "detail"), _LAT),
    ("detail_cov", _detail_cov, _soft(1.0), ("latent", "detail"), _LAT),
    ("detail_ratio", _detail_ratio, _box(0.0, 0.7), ("health",), ("recon", "recon_core")),
    ("median_var_core", _median_var_core, _box(0.0, 1200.0), ("health",), _LAT),
    ("median_var_detail", _median_var_detail, _box(0.0, 1200.0), ("health",), _LAT),
    ("max_var", _max_var, _soft(100.0), ("health",), ("mu",)),
)


def default_goals(
    *,
    kl_lower: float = 100.0,
    kl_healthy: float = 3000.0,
    kl_steepness: float = 20.0,
    perceptual: bool = False,
) -> tuple[Goal, ...]:
    """The goal table of LBO.md, section 6, in group order.

    ``MINIMIZE_SOFT`` goals with ``scale="auto"`` get their scale from the
    trainer's calibration (LBO.md, section 3); the fixed scales and the boxes
    are the original's. The two KL goals (``BOX_ASYMMETRIC``) share one
    scheduled ceiling and start at `KL_NO_CEILING`.

    The numbers are the original's, for 64x64 CelebA faces and a 128-d latent.
    The KL of a half is a sum over its dimensions of what the half encodes
    about each image, so a trainer with a smaller latent or smaller images
    should scale ``kl_lower`` and ``kl_healthy`` (the floor that keeps the
    latent in use, and the point the squeeze aims at), e.g. by its latent size
    over 128. The variance boxes (``detail_var``, ``median_var_*``) and
    ``max_var``'s scale are the original's too, and are not scaled here.

    Args:
        kl_lower: The KL goals' floor (both halves).
        kl_healthy: The KL goals' healthy point, where they score 1.
        kl_steepness: The KL goals' steepness: their score falls to
            ``1 / (1 + kl_steepness)`` at the ceiling (a barrier the larger
            it is) and decays at this rate past it.
        perceptual: Whether to add the ``perceptual`` goal (recon group),
            which reads `GoalInputs.features_x` and ``features_recon``: the
            trainer computes them with a feature extractor whose weights the
            user supplies as a local file; nothing is downloaded.

    Returns:
        The goals.

    Raises:
        ValueError: ``kl_lower`` and ``kl_healthy`` leave no valid KL spec
            (``kl_lower < kl_healthy < KL_NO_CEILING`` is needed).

    Examples:
        >>> goals = default_goals()
        >>> len(goals), goals[0].name, goals[0].spec.scale
        (29, 'pixel', 'auto')
        >>> [g.spec.healthy for g in goals if g.name.startswith("kl_")]
        [3000.0, 3000.0]
    """
    kl = {
        "lower": kl_lower,
        "healthy": kl_healthy,
        "upper": KL_NO_CEILING,
        "steepness": kl_steepness,
    }
    return tuple(
        Goal(
            name,
            metric,
            ConstraintSpec(name, **(params | kl if params is _KL else params)),
            group,
            reads=reads,
        )
        for name, metric, params, group, reads in _TABLE
        if perceptual or name != "perceptual"
    )


def met_levels(
    goals: Iterable[Goal], *, met: float, by_name: Mapping[str, float] | None = None
) -> dict[str, float]:
    """The score at which each constraint goal counts as fully met, by goal name.

    Every goal but the `OBJECTIVE_GOALS` gets a level: ``by_name[goal]``, else
    ``by_name[top-level group]``, else ``met``. The trainer scores a goal as
    ``min(1, score / level)``: one at or above its level is met and gives no
    gradient, so a constraint that cannot be met further (a swap whose two
    images have different shapes, a realism goal against a discriminator that
    keeps learning) cannot hold the reconstruction at its own level.

    Args:
        goals: The goal table.
        met: The level of every constraint goal not named in ``by_name``.
        by_name: Levels by goal or by top-level group name.

    Returns:
        ``{goal name: level}`` for every constraint goal, in table order.

    Raises:
        ValueError: A level outside ``(0, 1]``, or ``by_name`` names neither
            a goal nor a group of the table.

    Examples:
        >>> levels = met_levels(default_goals(), met=0.25, by_name={"swap": 0.5})
        >>> "pixel" in levels, levels["edge"], levels["swap_colour"]
        (False, 0.25, 0.5)
    """
    goals = tuple(goals)
    by_name = dict(by_name or {})
    known = {g.name for g in goals} | {g.group[0] for g in goals}
    unknown = sorted(set(by_name) - known)
    if unknown:
        raise ValueError(f"met_levels: by_name names no goal or group of the table: {unknown}")
    for name, level in {"met": met, **by_name}.items():
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level <= 1:
            raise ValueError(f"met_levels: the level of {name!r} must lie in (0, 1], got {level!r}")
    return {
        g.name: float(by_name.get(g.name, by_name.get(g.group[0], met)))
        for g in goals
        if g.name not in OBJECTIVE_GOALS
    }


def group_tree(goals: Iterable[Goal]) -> dict[str, Any]:
    """The nested groups of ``goals``, in the form `LBOObjective` takes.

    Groups appear in the order of their first goal, goals in table order.

    Args:
        goals: The goal table.

    Returns:
        ``{group: [goal, ...] | {subgroup: ...}}``.

    Raises:
        ValueError: Two goals share a name, or a group holds both goals and
            sub-groups.

    Examples:
        >>> tree = group_tree(default_goals())
        >>> list(tree)
        ['recon', 'core', 'swap', 'realism', 'disentangle', 'kl', 'latent', 'health']
        >>> list(tree["latent"]), tree["kl"]
        (['logvar', 'structure', 'capacity', 'detail'], ['kl_core', 'kl_detail'])
    """
    tree: dict[str, Any] = {}
    seen: set[str] = set()
    for goal in goals:
        if goal.name in seen:
            raise ValueError(f"group_tree: two goals are called {goal.name!r}")
        seen.add(goal.name)
        node = tree
        for depth, part in enumerate(goal.group):
            leaf = depth == len(goal.group) - 1
            child = node.setdefault(part, [] if leaf else {})
            if isinstance(child, list) is not leaf:
                path = "/".join(goal.group[: depth + 1])
                raise ValueError(
                    f"group_tree: group {path!r} would hold both goals and sub-groups "
                    f"(at goal {goal.name!r})"
                )
            if leaf:
                child.append(goal.name)
            else:
                node = child
    return tree


def compute(goals: Sequence[Goal], inputs: GoalInputs) -> dict[str, torch.Tensor]:
    """Every goal's raw metric on one batch, by name: 0-d tensors on the inputs' device.

    Args:
        goals: The goal table.
        inputs: The batch's tensors.

    Returns:
        ``{goal name: metric}``, in table order.

    Raises:
        ValueError: A metric did not return a 0-d tensor.

    Examples:
        >>> img, mu = torch.rand(2, 3, 8, 8), torch.randn(2, 6)
        >>> inputs = GoalInputs(x=img, recon=img, recon_core=img, swap=img, x2=img,
        ...                     core_perturbed=img, detail_perturbed=img, mu=mu,
        ...                     logvar=mu * 0, core_dims=4, mu_augmented_core=mu[:, :4],
        ...                     d_recon=torch.zeros(2), d_swap=torch.zeros(2))
        >>> values = compute(default_goals(), inputs)
        >>> round(float(values["pixel"]), 6), float(values["real_recon"])
        (0.0, 0.5)
    """
    values: dict[str, torch.Tensor] = {}
    for goal in goals:
        value = goal.metric(inputs)
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"goal {goal.name!r}: metric must return a 0-d tensor, got {shape}")
        values[goal.name] = value
    return values


def specs(goals: Iterable[Goal]) -> Mapping[str, ConstraintSpec]:
    """Every goal's spec by name, in table order.

    Examples:
        >>> specs(default_goals())["detail_ratio"].upper
        0.7
    """
    return {goal.name: goal.spec for goal in goals}
