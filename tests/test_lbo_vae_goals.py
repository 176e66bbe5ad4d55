"""The LBO-VAE goal table: LBO.md section 6 as built, metric values, gradients, no host reads."""

from __future__ import annotations

import contextlib
import doctest
import math
import types
import warnings
from collections.abc import Iterator, Mapping
from typing import Any
from unittest import mock

import pytest

torch = pytest.importorskip("torch")

import attrs  # noqa: E402
from host_reads import host_reads_forbidden  # noqa: E402

from constraint_sched import ConstraintKind, ConstraintSpec  # noqa: E402
from constraint_sched.adapters.lbo_vae import _goals, _metrics  # noqa: E402
from constraint_sched.adapters.lbo_vae._goals import (  # noqa: E402
    KL_NO_CEILING,
    OBJECTIVE_GOALS,
    Goal,
    GoalInputs,
    colour_histogram,
    compute,
    contribution_ratio,
    covariance_energy,
    default_goals,
    effective_dims_gap,
    group_tree,
    histogram_distance,
    kl_divergence,
    low_variance_fraction,
    mean_colour,
    met_levels,
    realism,
    sobel_edges,
    specs,
    ssim,
)
from constraint_sched.adapters.torch import LBOObjective  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

AUTO = ("minimize_soft", {"scale": "auto"})


def soft(scale: float) -> tuple[str, dict[str, Any]]:
    return ("minimize_soft", {"scale": scale})


def box(lower: float, upper: float) -> tuple[str, dict[str, Any]]:
    return ("box", {"lower": lower, "upper": upper})


KL = ("box_asymmetric", {"lower": 100.0, "healthy": 3000.0, "upper": 1e9})

# LBO.md, section 6, as the table must hold it: name -> (group path, kind, parameters).
EXPECTED: dict[str, tuple[tuple[str, ...], tuple[str, dict[str, Any]]]] = {
    "pixel": (("recon",), AUTO),
    "edge": (("recon",), AUTO),
    "core_pixel": (("core",), AUTO),
    "core_edge": (("core",), AUTO),
    "swap_edge": (("swap",), AUTO),
    "swap_colour": (("swap",), AUTO),
    "swap_hist": (("swap",), AUTO),
    "real_recon": (("realism",), AUTO),
    "real_swap": (("realism",), AUTO),
    "core_colour_leak": (("disentangle",), AUTO),
    "detail_edge_leak": (("disentangle",), AUTO),
    "kl_core": (("kl",), KL),
    "kl_detail": (("kl",), KL),
    "logvar_core": (("latent", "logvar"), box(-15.0, 10.0)),
    "logvar_detail": (("latent", "logvar"), box(-15.0, 10.0)),
    "core_cov": (("latent", "structure"), AUTO),
    "core_low_var": (("latent", "structure"), soft(0.1)),
    "core_aug": (("latent", "structure"), AUTO),
    "inactive_core": (("latent", "capacity"), soft(0.4)),
    "inactive_detail": (("latent", "capacity"), soft(0.4)),
    "entropy_core": (("latent", "capacity"), soft(0.4)),
    "entropy_detail": (("latent", "capacity"), soft(0.4)),
    "detail_mean": (("latent", "detail"), box(-30.0, 30.0)),
    "detail_var": (("latent", "detail"), box(0.0, 500.0)),
    "detail_cov": (("latent", "detail"), soft(1.0)),
    "detail_ratio": (("health",), box(0.0, 0.7)),
    "median_var_core": (("health",), box(0.0, 1200.0)),
    "median_var_detail": (("health",), box(0.0, 1200.0)),
    "max_var": (("health",), soft(100.0)),
}
PERCEPTUAL = (("recon",), AUTO)
TOP_GROUPS = ["recon", "core", "swap", "realism", "disentangle", "kl", "latent", "health"]
LATENT_GROUPS = ["logvar", "structure", "capacity", "detail"]
TENSOR_FIELDS = [f.name for f in attrs.fields(GoalInputs) if f.name != "core_dims"]


def make_inputs(
    *,
    batch: int = 16,
    size: int = 16,
    latent: int = 8,
    core: int = 4,
    dtype: Any = torch.float32,
    requires_grad: bool = False,
    seed: int = 0,
    features: bool = True,
) -> GoalInputs:
    """A random bundle: images in [0, 1], a standard-normal latent, PatchGAN-shaped logits."""
    gen = torch.Generator().manual_seed(seed)

    def leaf(*shape: int, kind: str = "rand") -> Any:
        draw = torch.rand if kind == "rand" else torch.randn
        return draw(*shape, generator=gen, dtype=dtype).requires_grad_(requires_grad)

    images = {
        name: leaf(batch, 3, size, size)
        for name in ("x", "recon", "recon_core", "swap", "x2", "core_perturbed", "detail_perturbed")
    }
    extra: dict[str, Any] = {}
    if features:
        extra = {
            "features_x": leaf(batch, 5, 2, 2, kind="n"),
            "features_recon": leaf(batch, 5, 2, 2, kind="n"),
        }
    return GoalInputs(
        **images,
        mu=leaf(batch, latent, kind="n"),
        logvar=(0.3 * torch.randn(batch, latent, generator=gen, dtype=dtype)).requires_grad_(
            requires_grad
        ),
        core_dims=core,
        mu_augmented_core=leaf(batch, core, kind="n"),
        d_recon=leaf(batch, 1, 3, 3, kind="n"),
        d_swap=leaf(batch, 1, 3, 3, kind="n"),
        **extra,
    )


@pytest.fixture
def inputs() -> GoalInputs:
    return make_inputs()


ALL_GOALS = default_goals(perceptual=True)


# --- the table ---------------------------------------------------------------------------


def test_the_table_holds_every_goal_of_lbo_md_in_group_order() -> None:
    assert [g.name for g in default_goals()] == list(EXPECTED)
    names = [g.name for g in ALL_GOALS]
    assert names == ["pixel", "edge", "perceptual", *list(EXPECTED)[2:]]


@pytest.mark.parametrize("name", [*EXPECTED, "perceptual"])
def test_each_goal_has_its_documented_spec_and_group(name: str) -> None:
    goal = {g.name: g for g in ALL_GOALS}[name]
    group, (kind, params) = EXPECTED.get(name, PERCEPTUAL)
    assert goal.group == group
    assert goal.spec == ConstraintSpec(name, kind, **params)
    assert goal.spec.kind is ConstraintKind[kind.upper()]
    assert goal.reads, "every goal says which fields it reads"


def test_the_perceptual_goal_is_off_by_default() -> None:
    assert "perceptual" not in specs(default_goals())
    assert "perceptual" in specs(default_goals(perceptual=True))


def test_kl_floor_and_healthy_point_are_parameters() -> None:
    table = specs(default_goals(kl_lower=10.0, kl_healthy=400.0))
    for name in ("kl_core", "kl_detail"):
        spec = table[name]
        assert (spec.lower, spec.healthy, spec.upper) == (10.0, 400.0, KL_NO_CEILING)
        assert spec.with_bound(2000.0).upper == 2000.0  # the ceiling is the scheduled bound


@pytest.mark.parametrize(
    ("lower", "healthy"),
    [
        pytest.param(3000.0, 100.0, id="healthy-below-floor"),
        pytest.param(100.0, 2e9, id="healthy-above-no-ceiling"),
        pytest.param(math.nan, 3000.0, id="nan-floor"),
    ],
)
def test_an_invalid_kl_setting_is_refused(lower: float, healthy: float) -> None:
    with pytest.raises(ValueError, match="kl_core"):
        default_goals(kl_lower=lower, kl_healthy=healthy)


# --- the group tree ----------------------------------------------------------------------


def leaves(tree: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for member in tree.values():
        out += leaves(member) if isinstance(member, Mapping) else list(member)
    return out


@pytest.mark.parametrize("perceptual", [False, True])
def test_the_group_tree_is_lbo_md_and_covers_every_goal_once(perceptual: bool) -> None:
    goals = default_goals(perceptual=perceptual)
    tree = group_tree(goals)
    assert list(tree) == TOP_GROUPS
    assert list(tree["latent"]) == LATENT_GROUPS
    assert tree["kl"] == ["kl_core", "kl_detail"]  # a group of its own: the ceiling is a barrier
    assert tree["latent"]["logvar"] == ["logvar_core", "logvar_detail"]
    assert sorted(leaves(tree)) == sorted(g.name for g in goals)
    objective = LBOObjective(tree)
    assert objective.names == tuple(TOP_GROUPS)
    assert objective.goals == {g.name for g in goals}


def test_met_levels_cover_every_constraint_and_leave_the_objective_alone() -> None:
    goals = default_goals()
    levels = met_levels(goals, met=0.25, by_name={"swap": 0.5, "kl_core": 0.3})
    assert set(levels) == {g.name for g in goals} - set(OBJECTIVE_GOALS)
    assert levels["swap_edge"] == levels["swap_hist"] == 0.5  # by group
    assert levels["kl_core"] == 0.3  # by goal
    assert levels["kl_detail"] == 0.25  # else the default


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"met": 0.0}, "'met' must lie in"),
        ({"met": 1.5}, "'met' must lie in"),
        ({"met": 0.25, "by_name": {"swap": True}}, "'swap' must lie in"),
        ({"met": 0.25, "by_name": {"nonesuch": 0.5}}, "nonesuch"),
    ],
)
def test_met_levels_refuse_bad_levels_and_unknown_names(kwargs: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        met_levels(default_goals(), **kwargs)


def test_group_tree_refuses_duplicate_names_and_mixed_groups() -> None:
    goal = default_goals()[0]
    with pytest.raises(ValueError, match="two goals are called 'pixel'"):
        group_tree([goal, goal])
    other = Goal(
        "other", goal.metric, ConstraintSpec("other", "minimize_soft", scale=1.0), ("recon", "sub")
    )
    with pytest.raises(ValueError, match="'recon' would hold both goals and sub-groups"):
        group_tree([goal, other])
    with pytest.raises(ValueError, match="'recon' would hold both goals and sub-groups"):
        group_tree([other, goal])


# --- Goal and GoalInputs validation ------------------------------------------------------


def test_goal_validation_names_the_field() -> None:
    spec = ConstraintSpec("a", "minimize_soft", scale=1.0)
    with pytest.raises(ValueError, match=r"spec\.name must be the goal's name"):
        Goal("b", realism, spec, "g")
    with pytest.raises(ValueError, match="group must be a non-empty path"):
        Goal("a", realism, spec, ())
    with pytest.raises(ValueError, match=r"reads names \['nope'\]"):
        Goal("a", realism, spec, "g", reads=("nope",))
    with pytest.raises(TypeError, match="metric must be callable"):
        Goal("a", 3, spec, "g")  # type: ignore[arg-type]
    assert Goal("a", realism, spec, "g").group == ("g",)


def bundle(**changes: Any) -> dict[str, Any]:
    fields = attrs.asdict(make_inputs(batch=4, size=8), recurse=False)
    return {**fields, **changes}


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        pytest.param({"x": torch.zeros(4, 8, 8)}, ValueError, r"GoalInputs.x must be \(B, C, H, W\)", id="x-3d"),
        pytest.param({"swap": torch.zeros(4, 3, 8, 9)}, ValueError, "GoalInputs.swap must have x's shape", id="swap-shape"),
        pytest.param({"mu": torch.zeros(3, 8)}, ValueError, "GoalInputs.mu must be", id="mu-batch"),
        pytest.param({"logvar": torch.zeros(4, 7)}, ValueError, "GoalInputs.logvar must have mu's shape", id="logvar-shape"),
        pytest.param({"core_dims": 8}, ValueError, "GoalInputs.core_dims must lie strictly between", id="core-all"),
        pytest.param({"core_dims": 0}, ValueError, "GoalInputs.core_dims must lie strictly between", id="core-none"),
        pytest.param({"core_dims": 2.0}, TypeError, "GoalInputs.core_dims must be an int", id="core-float"),
        pytest.param({"mu_augmented_core": torch.zeros(4, 3)}, ValueError, "GoalInputs.mu_augmented_core", id="aug-shape"),
        pytest.param({"d_swap": torch.zeros(())}, ValueError, "GoalInputs.d_swap must be", id="d-0d"),
        pytest.param({"d_recon": torch.zeros(5)}, ValueError, "GoalInputs.d_recon must be", id="d-batch"),
        pytest.param({"recon": 1.0}, TypeError, "GoalInputs.recon must be a torch.Tensor", id="not-a-tensor"),
        pytest.param({"features_x": None}, ValueError, "given together", id="one-feature"),
        pytest.param({"features_x": torch.zeros(4, 2)}, ValueError, "features_recon must have", id="feature-shape"),
    ],
)  # fmt: skip
def test_goal_inputs_check_shapes_and_name_the_field(
    changes: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        GoalInputs(**bundle(**changes))


def test_the_perceptual_goal_without_features_says_so() -> None:
    plain = make_inputs(features=False)
    with pytest.raises(ValueError, match="perceptual=False"):
        compute(ALL_GOALS, plain)
    assert set(compute(default_goals(), plain)) == set(EXPECTED)


def test_compute_refuses_a_metric_that_is_not_0d(inputs: GoalInputs) -> None:
    spec = ConstraintSpec("bad", "minimize_soft", scale=1.0)
    with pytest.raises(
        ValueError, match=r"goal 'bad': metric must return a 0-d tensor, got \(16,\)"
    ):
        compute([Goal("bad", lambda i: i.mu[:, 0], spec, "g")], inputs)


# --- every metric --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_every_metric_is_a_finite_0d_tensor(dtype: Any) -> None:
    values = compute(ALL_GOALS, make_inputs(dtype=dtype))
    assert list(values) == [g.name for g in ALL_GOALS]
    for name, value in values.items():
        assert value.shape == (), name
        assert value.dtype == dtype, name
        assert math.isfinite(value.item()), name


def test_metrics_on_a_degenerate_batch_are_finite() -> None:
    """Constant images, identical reconstructions and a collapsed latent: no NaN, no inf."""
    img = torch.full((4, 3, 8, 8), 0.5)
    zeros = torch.zeros(4, 6)
    degenerate = GoalInputs(
        x=img, recon=img, recon_core=img, swap=img, x2=img, core_perturbed=img,
        detail_perturbed=img, mu=zeros, logvar=zeros, core_dims=3,
        mu_augmented_core=zeros[:, :3], d_recon=zeros, d_swap=zeros,
    )  # fmt: skip
    values = compute(default_goals(), degenerate)
    assert all(math.isfinite(v.item()) for v in values.values()), values
    for name in ("pixel", "edge", "core_pixel", "swap_edge", "swap_colour", "swap_hist",
                 "core_colour_leak", "detail_edge_leak", "kl_core", "core_cov", "detail_ratio",
                 "median_var_core", "max_var"):  # fmt: skip
        assert values[name].item() == pytest.approx(0.0, abs=1e-6), name
    assert values["core_low_var"].item() == pytest.approx(1.0)  # every core dim collapsed
    assert values["inactive_detail"].item() == pytest.approx(1.0)


def test_ssim_is_one_for_the_same_image_and_falls_with_noise() -> None:
    gen = torch.Generator().manual_seed(1)
    img = torch.rand(4, 3, 16, 16, generator=gen, dtype=torch.float64)
    assert ssim(img, img).item() == pytest.approx(1.0, abs=1e-12)
    noise = torch.randn(img.shape, generator=gen, dtype=torch.float64)
    values = [ssim(img, img + level * noise).item() for level in (0.01, 0.05, 0.2, 0.5)]
    assert values == sorted(values, reverse=True)
    assert values[0] < 1.0
    assert values[-1] < 0.5


def test_ssim_fits_its_window_to_small_images() -> None:
    small = torch.rand(2, 1, 5, 7)
    assert ssim(small, small).item() == pytest.approx(1.0, abs=1e-6)
    assert ssim(small, 1 - small).item() < 0.5


def test_pixel_is_mse_plus_a_fiftieth_of_one_minus_ssim(inputs: GoalInputs) -> None:
    expected = torch.mean((inputs.recon - inputs.x) ** 2) + 0.02 * (
        1 - ssim(inputs.recon, inputs.x)
    )
    assert compute(default_goals(), inputs)["pixel"].item() == pytest.approx(
        expected.item(), rel=1e-6
    )


def test_sobel_edges_are_zero_on_a_constant_image_and_mark_a_step() -> None:
    assert torch.equal(sobel_edges(torch.full((2, 3, 6, 6), 0.3)), torch.zeros(2, 1, 6, 6))
    step = torch.zeros(1, 3, 6, 6)
    step[..., 3:] = 1.0
    edges = sobel_edges(step)[0, 0]
    assert torch.all(edges[:, 2:4] > 3.9)  # |gx| = 4 on either side of the step
    assert torch.all(edges[:, :2] == 0)
    assert torch.all(edges[:, 4:] == 0)
    # Edges ignore colour: a channel-mean-preserving recolouring keeps them.
    recoloured = step[:, [2, 0, 1]]
    assert torch.equal(sobel_edges(recoloured), sobel_edges(step))


def test_mean_colour_and_soft_histogram() -> None:
    black, white = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    assert torch.equal(mean_colour(white), torch.ones(2, 3))
    hb, hw = colour_histogram(black), colour_histogram(white)
    assert torch.allclose(hb.sum(-1), torch.ones(2, 3))
    assert hb[..., 0].min() > 0.98  # the end bins, mostly
    assert hw[..., -1].min() > 0.98
    assert histogram_distance(hb, hw).item() == pytest.approx(1.0, abs=0.02)
    assert histogram_distance(hb, hb).item() == 0.0
    # Values outside [0, 1] go to the end bins, with no NaN.
    assert torch.allclose(
        colour_histogram(torch.full((1, 1, 2, 2), 5.0))[..., -1], torch.ones(1, 1)
    )


def test_swap_and_leak_metrics_vanish_when_their_images_agree(inputs: GoalInputs) -> None:
    swapped = attrs.evolve(inputs, swap=inputs.x2)
    values = compute(default_goals(), swapped)
    assert values["swap_colour"].item() == 0.0
    assert values["swap_hist"].item() == 0.0
    same = attrs.evolve(
        inputs, swap=inputs.x, core_perturbed=inputs.recon, detail_perturbed=inputs.recon
    )
    values = compute(default_goals(), same)
    assert values["swap_edge"].item() == 0.0
    assert values["core_colour_leak"].item() == 0.0
    assert values["detail_edge_leak"].item() == 0.0


def test_covariance_energy_is_about_zero_for_independent_dims_and_large_for_duplicates() -> None:
    gen = torch.Generator().manual_seed(2)
    independent = torch.randn(4096, 4, generator=gen, dtype=torch.float64)
    assert covariance_energy(independent).item() < 0.01  # about 1 / B
    duplicated = torch.cat([independent[:, :2], independent[:, :2]], dim=1)
    assert covariance_energy(duplicated).item() == pytest.approx(1 / 3, rel=0.05)
    same = independent[:, :1].expand(-1, 4)
    assert covariance_energy(same).item() == pytest.approx(1.0, rel=1e-9)
    # Relative to the diagonal: scaling every dim leaves it unchanged.
    assert covariance_energy(duplicated * 50).item() == pytest.approx(
        covariance_energy(duplicated).item(), rel=1e-9
    )


def test_low_variance_fraction_hard_and_soft() -> None:
    v = torch.tensor([1e-6, 1e-3, 0.05, 0.5, 3.0, 40.0], dtype=torch.float64, requires_grad=True)
    assert low_variance_fraction(v, 0.1, soft=False).item() == pytest.approx(0.5)
    soft_count = low_variance_fraction(v, 0.1)
    assert soft_count.item() == pytest.approx(0.5, abs=0.05)
    assert low_variance_fraction(torch.tensor([0.1]), 0.1).item() == pytest.approx(0.5)
    (grad,) = torch.autograd.grad(soft_count, v)
    assert torch.all(grad <= 0)  # raising a low variance lowers the count
    assert grad[2] < 0
    hard = low_variance_fraction(v, 0.1, soft=False)
    assert not hard.requires_grad  # the hard count has no gradient


def test_effective_dims_gap() -> None:
    assert effective_dims_gap(torch.full((8,), 2.5)).item() == pytest.approx(0.0, abs=1e-6)
    one_hot = torch.tensor([0.0, 0.0, 7.0, 0.0])
    assert effective_dims_gap(one_hot).item() == pytest.approx(0.75, abs=1e-6)
    two = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert effective_dims_gap(two).item() == pytest.approx(0.5, abs=1e-6)


def test_detail_ratio_is_zero_when_the_detail_half_adds_nothing(inputs: GoalInputs) -> None:
    recon = inputs.recon.detach().double().requires_grad_(True)
    core = recon.detach().clone().requires_grad_(True)
    ratio = contribution_ratio(recon, core)
    assert ratio.item() == 0.0
    grads = torch.autograd.grad(ratio, (recon, core))
    assert all(torch.isfinite(g).all() for g in grads)
    assert contribution_ratio(2 * core, core).item() == pytest.approx(1.0)


def test_realism_is_one_half_for_zero_logits() -> None:
    assert realism(torch.zeros(8, 1, 4, 4)).item() == 0.5
    assert realism(torch.full((8,), 50.0)).item() == pytest.approx(0.0, abs=1e-12)


def test_kl_of_each_half_matches_the_closed_form(inputs: GoalInputs) -> None:
    values = compute(default_goals(), inputs)
    normal = torch.distributions.Normal
    for name, half in (("kl_core", slice(0, 4)), ("kl_detail", slice(4, 8))):
        mu, logvar = inputs.mu[:, half], inputs.logvar[:, half]
        reference = torch.distributions.kl_divergence(
            normal(mu, torch.exp(0.5 * logvar)), normal(torch.zeros_like(mu), torch.ones_like(mu))
        )
        assert values[name].item() == pytest.approx(reference.sum(1).mean().item(), rel=1e-5)
        assert values[name.replace("kl", "logvar")].item() == pytest.approx(logvar.mean().item())
    assert kl_divergence(torch.zeros(3, 5), torch.zeros(3, 5)).item() == 0.0


def test_latent_statistics_by_hand(inputs: GoalInputs) -> None:
    values = compute(default_goals(), inputs)
    var = inputs.mu.var(dim=0, correction=0)
    detail = inputs.mu[:, 4:]
    assert values["detail_mean"].item() == pytest.approx(detail.mean(0).abs().mean().item())
    assert values["detail_var"].item() == pytest.approx(var[4:].mean().item())
    assert values["median_var_core"].item() == pytest.approx(var[:4].median().item())
    assert values["median_var_detail"].item() == pytest.approx(var[4:].median().item())
    assert values["max_var"].item() == pytest.approx(var.max().item())
    assert values["core_aug"].item() == pytest.approx(
        ((inputs.mu_augmented_core - inputs.mu[:, :4]) ** 2).mean().item()
    )


# --- gradients ----------------------------------------------------------------------------


@pytest.mark.parametrize("goal", ALL_GOALS, ids=lambda g: g.name)
def test_every_metric_has_a_finite_gradient_for_exactly_what_it_reads(goal: Goal) -> None:
    bundle = make_inputs(batch=8, size=12, dtype=torch.float64, requires_grad=True)
    value = goal.metric(bundle)
    tensors = [getattr(bundle, name) for name in TENSOR_FIELDS]
    grads = dict(
        zip(TENSOR_FIELDS, torch.autograd.grad(value, tensors, allow_unused=True), strict=True)
    )
    for name, grad in grads.items():
        if name in goal.reads:
            assert grad is not None, f"{goal.name}: no gradient for {name}"
            assert torch.isfinite(grad).all(), f"{goal.name}: non-finite gradient for {name}"
            assert grad.abs().sum() > 0, f"{goal.name}: zero gradient for {name}"
        else:
            assert grad is None, f"{goal.name} reads {name} but does not declare it"


def test_no_nan_gradient_on_a_degenerate_batch() -> None:
    img = torch.full((4, 3, 8, 8), 0.5, dtype=torch.float64, requires_grad=True)
    mu = torch.zeros(4, 6, dtype=torch.float64, requires_grad=True)
    logvar = torch.zeros(4, 6, dtype=torch.float64, requires_grad=True)
    d = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    degenerate = GoalInputs(
        x=img, recon=img, recon_core=img, swap=img, x2=img, core_perturbed=img,
        detail_perturbed=img, mu=mu, logvar=logvar, core_dims=3,
        mu_augmented_core=mu[:, :3], d_recon=d, d_swap=d,
    )  # fmt: skip
    for goal in default_goals():
        grads = torch.autograd.grad(
            goal.metric(degenerate), (img, mu, logvar, d), allow_unused=True
        )
        assert all(g is None or torch.isfinite(g).all() for g in grads), goal.name


# --- no host synchronisation ------------------------------------------------------------


@contextlib.contextmanager
def host_data_forbidden() -> Iterator[None]:
    """While inside, building a tensor from host data fails: on CUDA that copy waits for it."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a tensor was built from host data")

    with (
        mock.patch.object(torch, "tensor", forbidden),
        mock.patch.object(torch, "as_tensor", forbidden),
    ):
        yield


def test_computing_and_backpropagating_every_metric_reads_nothing_on_the_host() -> None:
    goals = ALL_GOALS
    bundle = make_inputs(requires_grad=True)
    tensors = [getattr(bundle, name) for name in TENSOR_FIELDS]
    with host_reads_forbidden(), host_data_forbidden():
        checked = GoalInputs(**attrs.asdict(bundle, recurse=False))
        values = compute(goals, checked)
        total = torch.stack(list(values.values())).sum()
        grads = torch.autograd.grad(total, tensors)
    assert len(grads) == len(tensors)


def on(device: str, bundle: GoalInputs) -> GoalInputs:
    return GoalInputs(
        **{
            name: value.to(device) if isinstance(value, torch.Tensor) else value
            for name, value in attrs.asdict(bundle, recurse=False).items()
        }
    )


def test_every_metric_runs_on_the_meta_device() -> None:
    """Meta tensors have no values: a metric that needed one could not run at all."""
    values = compute(ALL_GOALS, on("meta", make_inputs()))
    for name, value in values.items():
        assert value.device.type == "meta", name
        assert value.shape == (), name


@cuda
def test_no_metric_synchronises_on_cuda() -> None:
    bundle = on("cuda", make_inputs())
    reference = compute(ALL_GOALS, make_inputs())
    torch.cuda.synchronize()
    try:
        with warnings.catch_warnings():  # "a prototype feature": it is, and we know
            warnings.filterwarnings("ignore", "Synchronization debug mode", UserWarning)
            torch.cuda.set_sync_debug_mode("error")
        values = compute(ALL_GOALS, bundle)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    for name, value in values.items():
        assert value.device.type == "cuda", name
        assert value.item() == pytest.approx(reference[name].item(), rel=1e-4, abs=1e-6), name


# --- the specs score the metrics ---------------------------------------------------------


def concrete(spec: ConstraintSpec, value: float) -> ConstraintSpec:
    """An auto scale replaced by a value, as calibration would (the median of its samples)."""
    return spec.with_bound(max(value, 5e-4)) if spec.scale == "auto" else spec


def test_every_spec_scores_its_metric_and_the_objective_takes_the_scores() -> None:
    goals = ALL_GOALS
    bundle = make_inputs(requires_grad=True)
    values = compute(goals, bundle)
    scored = {}
    for goal in goals:
        spec = concrete(goal.spec, values[goal.name].item())
        score = spec.score(values[goal.name])
        assert isinstance(score, torch.Tensor), goal.name
        assert score.shape == (), goal.name
        assert 0.0 < score.item() <= 1.0, goal.name
        assert score.item() == pytest.approx(spec.score(values[goal.name].item()), rel=1e-5), (
            goal.name
        )
        scored[goal.name] = score
    result = LBOObjective(group_tree(goals))(scored)
    assert not bool(result.reject)
    assert math.isfinite(result.loss.item())
    result.loss.backward()
    assert all(
        torch.isfinite(getattr(bundle, n).grad).all()
        for n in TENSOR_FIELDS
        if getattr(bundle, n).grad is not None
    )


def test_auto_specs_refuse_to_score_before_calibration(inputs: GoalInputs) -> None:
    values = compute(default_goals(), inputs)
    with pytest.raises(ValueError, match=r"'pixel'.*auto"):
        specs(default_goals())["pixel"].score(values["pixel"])


# --- the module's examples -----------------------------------------------------------------


@pytest.mark.parametrize("module", [_goals, _metrics], ids=lambda m: m.__name__.rpartition(".")[2])
def test_the_module_examples_run(module: types.ModuleType) -> None:
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5
    assert result.failed == 0


def test_the_goal_table_reexports_the_metrics() -> None:
    for name in _metrics.__all__:
        assert getattr(_goals, name) is getattr(_metrics, name), name
        assert name in _goals.__all__, name
