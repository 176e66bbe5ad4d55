"""LBOObjective / lbo_objective: -log(min group) over geometric means, on the device, no syncs."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from host_reads import host_reads_forbidden  # noqa: E402

from constraint_sched import ConstraintSpec  # noqa: E402
from constraint_sched.adapters.torch import (  # noqa: E402
    LBOObjective,
    LBOResult,
    lbo_objective,
)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FLOOR = 1e-10

# LBO.md section 6: the latent group is the geometric mean of four sub-groups.
LATENT = {
    "kl": ["kl_core", "kl_detail", "logvar_core", "logvar_detail"],
    "structure": ["core_cov", "core_low_var", "core_aug"],
    "capacity": ["inactive_core", "inactive_detail", "entropy_core", "entropy_detail"],
    "detail": ["detail_mean", "detail_var", "detail_cov"],
}
GROUPS: dict[str, Any] = {"recon": ["pixel", "edge"], "latent": LATENT, "realism": ["real"]}
SCORES = {
    "pixel": 0.9,
    "edge": 0.6,
    "kl_core": 0.5,
    "kl_detail": 0.7,
    "logvar_core": 0.95,
    "logvar_detail": 0.9,
    "core_cov": 0.4,
    "core_low_var": 0.8,
    "core_aug": 0.75,
    "inactive_core": 0.6,
    "inactive_detail": 0.65,
    "entropy_core": 0.9,
    "entropy_detail": 0.85,
    "detail_mean": 0.99,
    "detail_var": 0.7,
    "detail_cov": 0.3,
    "real": 0.55,
}


def tensors(scores: Mapping[str, float], **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("dtype", torch.float64)
    return {name: torch.tensor(value, **kwargs) for name, value in scores.items()}


def geometric_mean(values: list[float], floor: float = FLOOR) -> float:
    """The reference: exp(mean(log(max(v, floor)))), in plain Python."""
    return math.exp(math.fsum(math.log(max(v, floor)) for v in values) / len(values))


def reference_group(node: Any, scores: Mapping[str, float], floor: float = FLOOR) -> float:
    if isinstance(node, Mapping):
        return geometric_mean([reference_group(c, scores, floor) for c in node.values()], floor)
    return geometric_mean([scores[name] for name in node], floor)


# --- the loss, by hand --------------------------------------------------------------------


def test_the_loss_is_minus_log_of_the_smallest_group_by_hand() -> None:
    result = LBOObjective(GROUPS)(tensors(SCORES))
    recon = math.sqrt(0.9 * 0.6)
    kl = (0.5 * 0.7 * 0.95 * 0.9) ** (1 / 4)
    structure = (0.4 * 0.8 * 0.75) ** (1 / 3)
    capacity = (0.6 * 0.65 * 0.9 * 0.85) ** (1 / 4)
    detail = (0.99 * 0.7 * 0.3) ** (1 / 3)
    latent = (kl * structure * capacity * detail) ** (1 / 4)
    realism = 0.55
    assert isinstance(result, LBOResult)
    assert result.names == ("recon", "latent", "realism")
    assert result.groups.tolist() == pytest.approx([recon, latent, realism], rel=1e-14)
    assert result.loss.item() == pytest.approx(-math.log(min(recon, latent, realism)), rel=1e-14)
    # Exactly -log of the smallest group: no softmin, no epsilon.
    assert torch.equal(result.loss, -torch.log(result.groups.min()))
    assert result.names[int(result.bottleneck)] == "realism"
    assert result.bottleneck.dtype == torch.long
    assert result.bottleneck.shape == ()
    assert not bool(result.reject)


def test_lbo_objective_is_the_one_shot_form_of_the_objective() -> None:
    scores = tensors(SCORES)
    once = lbo_objective(scores, GROUPS)
    built = LBOObjective(GROUPS)(scores)
    assert torch.equal(once.loss, built.loss)
    assert torch.equal(once.groups, built.groups)
    assert (int(once.bottleneck), once.names) == (int(built.bottleneck), built.names)


def test_the_bottleneck_names_the_smallest_group() -> None:
    objective = LBOObjective(GROUPS)
    for weakest, group in [("edge", "recon"), ("core_cov", "latent"), ("real", "realism")]:
        result = objective(tensors({**SCORES, weakest: 1e-3}))
        assert result.names[int(result.bottleneck)] == group
        assert result.groups[result.bottleneck] == result.groups.min()


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        pytest.param([0.0], FLOOR, id="zero"),
        pytest.param([0.0, 0.0], FLOOR, id="two-zeros"),
        pytest.param([0.0, 0.25], math.sqrt(FLOOR * 0.25), id="zero-and-quarter"),
        pytest.param([1e-30, 1.0], math.sqrt(FLOOR), id="below-the-floor"),
        pytest.param([1e-10, 1.0], math.sqrt(FLOOR), id="at-the-floor"),
        pytest.param([0.25, 1.0], 0.5, id="no-clamp"),
    ],
)
def test_each_member_is_clamped_at_the_floor_before_the_geometric_mean(
    members: list[float], expected: float
) -> None:
    scores = {f"g{i}": v for i, v in enumerate(members)}
    result = lbo_objective(tensors(scores), {"only": list(scores)})
    assert result.groups.item() == pytest.approx(expected, rel=1e-12)
    assert result.loss.item() == pytest.approx(-math.log(expected), rel=1e-12)
    assert not bool(result.reject)  # the default floor keeps every group above 0


def test_nested_groups_clamp_each_level() -> None:
    """A dead sub-group counts as the floor inside its parent's geometric mean."""
    groups = {"latent": {"dead": ["a"], "fine": ["b"]}}
    result = lbo_objective(tensors({"a": 0.0, "b": 0.64}), groups)
    assert result.groups.item() == pytest.approx(math.sqrt(FLOOR * 0.64), rel=1e-12)


# --- gradients ----------------------------------------------------------------------------


def test_only_the_bottleneck_groups_members_get_gradient() -> None:
    leaves = {
        n: torch.tensor(v, dtype=torch.float64, requires_grad=True) for n, v in SCORES.items()
    }
    leaves["detail_cov"] = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)
    result = LBOObjective(GROUPS)(leaves)
    assert result.names[int(result.bottleneck)] == "latent"
    result.loss.backward()
    latent_goals = {goal for members in LATENT.values() for goal in members}
    for name, leaf in leaves.items():
        assert leaf.grad is not None, name
        if name in latent_goals:
            assert leaf.grad.item() < 0.0, name  # raising a bottleneck score lowers the loss
        else:
            assert leaf.grad.item() == 0.0, name
    # d(-log g)/ds for the latent group: -1 / (4 * |sub-group| * s).
    assert leaves["detail_cov"].grad.item() == pytest.approx(-1 / (4 * 3 * 0.01), rel=1e-12)


def test_gradcheck_of_the_loss() -> None:
    names = ["pixel", "edge", "core_cov", "real"]
    objective = LBOObjective({"a": ["pixel", "edge"], "b": {"x": ["core_cov"], "y": ["real"]}})

    def loss(*values: Any) -> Any:
        return objective(dict(zip(names, values, strict=True))).loss

    inputs = tuple(
        torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.3, 0.5, 0.8, 0.9)
    )
    assert torch.autograd.gradcheck(loss, inputs)


# --- the reject flag ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "floor", "reject"),
    [
        pytest.param({}, 1e-10, False, id="all-fine"),
        pytest.param({"edge": math.nan}, 1e-10, True, id="nan-score"),
        pytest.param({"detail_cov": math.nan}, 1e-10, True, id="nan-in-a-nested-group"),
        pytest.param({"edge": 0.0}, 1e-10, False, id="zero-clamped"),
        pytest.param({"edge": 0.0}, 0.0, True, id="zero-with-floor-0"),
        pytest.param({"core_aug": 0.0}, 0.0, True, id="zero-nested-with-floor-0"),
        pytest.param({}, 0.0, False, id="all-fine-floor-0"),
    ],
)
def test_reject_flags_a_non_finite_loss_or_a_group_at_zero(
    scores: dict[str, float], floor: float, reject: bool
) -> None:
    result = LBOObjective(GROUPS, floor=floor)(tensors({**SCORES, **scores}))
    assert result.reject.dtype == torch.bool
    assert result.reject.shape == ()
    assert bool(result.reject) is reject
    assert math.isfinite(result.loss.item()) is not reject


# --- no host synchronisation, and the device ----------------------------------------------


def test_the_objective_never_reads_a_tensor_on_the_host() -> None:
    objective = LBOObjective(GROUPS)
    leaves = {n: torch.tensor(v, requires_grad=True) for n, v in SCORES.items()}
    bad = {**leaves, "edge": torch.tensor(math.nan)}
    with host_reads_forbidden():
        result = objective({n: leaf * 1.0 for n, leaf in leaves.items()})
        flagged = objective(bad)
        result.loss.backward()
        once = lbo_objective(leaves, GROUPS)
    assert not bool(result.reject)
    assert bool(flagged.reject)
    assert leaves["real"].grad is not None
    assert once.loss.item() == pytest.approx(result.loss.item())


def test_the_guard_catches_a_host_read() -> None:
    """The positive control of the test above."""
    with host_reads_forbidden(), pytest.raises(AssertionError, match=r"Tensor\.item"):
        LBOObjective(GROUPS)(tensors(SCORES)).loss.item()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_results_stay_on_the_input_device_and_dtype(dtype: Any) -> None:
    """On the meta device every result is a meta tensor: nothing is made on the CPU."""
    result = LBOObjective(GROUPS)(tensors(SCORES, dtype=dtype, device="meta"))
    for t in (result.loss, result.groups, result.bottleneck, result.reject):
        assert t.device.type == "meta"
    assert result.loss.dtype == result.groups.dtype == dtype
    assert result.groups.shape == (3,)


@cuda
def test_results_stay_on_the_cuda_device() -> None:
    scores = tensors(SCORES, device="cuda")
    torch.cuda.synchronize()
    try:
        with warnings.catch_warnings():  # "a prototype feature": it is, and we know
            warnings.filterwarnings("ignore", "Synchronization debug mode", UserWarning)
            torch.cuda.set_sync_debug_mode("error")
        result = LBOObjective(GROUPS)(scores)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    for t in (result.loss, result.groups, result.bottleneck, result.reject):
        assert t.device.type == "cuda"
    assert result.loss.item() == pytest.approx(-math.log(0.55), rel=1e-12)


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("groups", "floor", "error", "match"),
    [
        pytest.param({}, 1e-10, ValueError, "groups must be a non-empty mapping", id="no-groups"),
        pytest.param(
            {"g": []},
            1e-10,
            ValueError,
            r"groups\['g'\] must be a non-empty sequence",
            id="empty-members",
        ),
        pytest.param(
            {"g": {}},
            1e-10,
            ValueError,
            r"groups\['g'\] must be a non-empty mapping",
            id="empty-subgroups",
        ),
        pytest.param(
            {"g": {"h": []}}, 1e-10, ValueError, r"groups\['g'\]\['h'\]", id="empty-nested-members"
        ),
        pytest.param(
            {"g": ["a", 3]},
            1e-10,
            ValueError,
            r"groups\['g'\] must be a non-empty sequence of goal names.*3",
            id="non-string-member",
        ),
        pytest.param(
            {"g": "abc"},
            1e-10,
            TypeError,
            r"groups\['g'\] must be a sequence of goal names or a mapping",
            id="string-group",
        ),
        pytest.param({"g": 3}, 1e-10, TypeError, r"groups\['g'\]", id="number-group"),
        pytest.param(["a"], 1e-10, ValueError, "non-empty mapping", id="list-of-groups"),
        pytest.param(
            {"g": ["a"]},
            -0.1,
            ValueError,
            r"floor must be a number in \[0, 1\), got -0.1",
            id="negative-floor",
        ),
        pytest.param({"g": ["a"]}, 1.0, ValueError, "floor must be .* got 1.0", id="floor-1"),
        pytest.param(
            {"g": ["a"]}, math.nan, ValueError, "floor must be .* got nan", id="nan-floor"
        ),
        pytest.param({"g": ["a"]}, True, ValueError, "floor must be .* got True", id="bool-floor"),
        pytest.param(
            {"g": ["a"]}, "0.1", ValueError, "floor must be .* got '0.1'", id="string-floor"
        ),
    ],
)
def test_construction_errors(groups: Any, floor: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        LBOObjective(groups, floor=floor)
    with pytest.raises(error, match=match):
        lbo_objective(tensors({"a": 0.5}), groups, floor=floor)


def test_a_missing_score_raises_key_error_naming_the_goals() -> None:
    objective = LBOObjective(GROUPS)
    scores = tensors(SCORES)
    del scores["core_aug"], scores["real"]
    with pytest.raises(KeyError, match=r"no score for goals \['core_aug', 'real'\]"):
        objective(scores)


# --- the property -------------------------------------------------------------------------

GOALS = [f"g{i}" for i in range(8)]
group_names = st.sampled_from(["a", "b", "c", "d", "e"])
leaf_groups = st.lists(st.sampled_from(GOALS), min_size=1, max_size=4)
group_trees = st.dictionaries(
    group_names,
    st.recursive(
        leaf_groups,
        lambda children: st.dictionaries(group_names, children, min_size=1, max_size=3),
        max_leaves=6,
    ),
    min_size=1,
    max_size=4,
)
score_values = st.one_of(
    st.floats(0.0, 1.0),
    st.sampled_from([0.0, 1.0, 1e-10, 1e-12, 5e-324]),
    st.floats(1e-300, 1e-5),
)


@settings(max_examples=60, deadline=None)
@given(group_trees, st.fixed_dictionaries({g: score_values for g in GOALS}))
def test_the_loss_is_minus_log_of_the_smallest_geometric_mean(
    groups: dict[str, Any], scores: dict[str, float]
) -> None:
    result = LBOObjective(groups)(tensors(scores))
    expected = [reference_group(node, scores) for node in groups.values()]
    assert result.names == tuple(groups)
    assert result.groups.tolist() == pytest.approx(expected, rel=1e-12)
    assert result.loss.item() == pytest.approx(-math.log(min(expected)), rel=1e-12, abs=1e-12)
    assert result.loss.item() >= 0.0  # every score lies in [0, 1]
    assert result.groups[result.bottleneck].item() == min(result.groups.tolist())
    assert not bool(result.reject)


# -- log space ---------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1e-8, 1.0), min_size=5, max_size=5))
def test_log_scores_give_the_same_result_where_nothing_underflows(values: list[float]) -> None:
    objective = LBOObjective({"a": ["p", "q"], "b": {"c": ["r"], "d": ["s", "t"]}})
    names = ["p", "q", "r", "s", "t"]
    scores = {n: torch.tensor(v, dtype=torch.float64) for n, v in zip(names, values, strict=True)}
    plain = objective(scores)
    logged = objective({n: torch.log(v) for n, v in scores.items()}, log=True)
    torch.testing.assert_close(logged.loss, plain.loss)
    torch.testing.assert_close(logged.groups, plain.groups)
    assert int(logged.bottleneck) == int(plain.bottleneck)
    assert bool(logged.reject) == bool(plain.reject)


def test_a_member_far_below_the_floor_counts_as_the_floor_and_still_pulls_back() -> None:
    spec = ConstraintSpec("kl", "box_asymmetric", lower=1.0, healthy=10.0, upper=20.0)
    kl = torch.tensor(500.0, dtype=torch.float64, requires_grad=True)  # score underflows to 0
    objective = LBOObjective({"latent": ["kl", "other"]})
    other = torch.tensor(0.5, dtype=torch.float64)
    plain = objective({"kl": spec.score(kl), "other": other})
    logged = objective({"kl": spec.log_score(kl), "other": torch.log(other)}, log=True)
    torch.testing.assert_close(logged.loss, plain.loss)  # same value: the member is the floor
    (plain_grad,) = torch.autograd.grad(plain.loss, kl)
    (log_grad,) = torch.autograd.grad(logged.loss, kl)
    assert float(plain_grad) == 0.0  # clamped: nothing pulls the KL back
    # d loss / d kl = -(1/2) d log s / d kl = steepness / (2 (upper - healthy))
    assert float(log_grad) == pytest.approx(spec.steepness / 2 / 10.0)


def test_a_crossed_margin_is_the_floor_with_no_nan_gradient() -> None:
    spec = ConstraintSpec("m", "upper", margin=1.0)
    x = torch.tensor(2.0, requires_grad=True)
    y = torch.tensor(0.5, requires_grad=True)
    result = LBOObjective({"g": ["m", "n"]})({"m": spec.log_score(x), "n": torch.log(y)}, log=True)
    assert torch.isfinite(result.loss)
    assert not bool(result.reject)
    result.loss.backward()
    assert x.grad is not None
    assert float(x.grad) == 0.0
    assert y.grad is not None
    assert torch.isfinite(y.grad)


def test_with_floor_zero_a_crossed_margin_rejects_in_log_space_too() -> None:
    spec = ConstraintSpec("m", "upper", margin=1.0)
    result = LBOObjective({"g": ["m"]}, floor=0.0)(
        {"m": spec.log_score(torch.tensor(2.0))}, log=True
    )
    assert bool(result.reject)
