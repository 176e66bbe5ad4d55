"""DCI, MIG and the split score on synthetic codes whose answer is known, and on a model."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from constraint_sched.adapters.lbo_vae import _disentanglement  # noqa: E402
from constraint_sched.adapters.lbo_vae._config import TrainConfig  # noqa: E402
from constraint_sched.adapters.lbo_vae._disentanglement import (  # noqa: E402
    SPLIT_KEYS,
    completeness,
    dci,
    disentanglement,
    evaluate_split,
    factor_matrix,
    importance_matrix,
    mig,
    split_scores,
)
from constraint_sched.adapters.lbo_vae._model import LBOVAE, ModelConfig  # noqa: E402
from constraint_sched.adapters.lbo_vae._shapes import shapes  # noqa: E402
from constraint_sched.adapters.lbo_vae._train import METRICS, Run  # noqa: E402

N = 800
CATEGORICAL = (0,)
STRUCTURE = (0, 1)  # factors 0 (a category, as the shapes' shape) and 1: structure
CORE = 2  # codes 0 and 1: the core half; 2 and 3: the detail half


@pytest.fixture(scope="module")
def factors() -> np.ndarray:
    """Four independent factors: a category of 4 values, then three uniform ones."""
    rng = np.random.default_rng(0)
    return np.c_[rng.integers(0, 4, N), rng.uniform(size=(N, 3))]


def measure(codes: np.ndarray, factors: np.ndarray) -> dict[str, float]:
    scores = dci(codes, factors, categorical=CATEGORICAL)
    core, detail = split_scores(scores.importance, core=CORE, structure=STRUCTURE)
    return {
        "D": scores.disentanglement,
        "C": scores.completeness,
        "I": scores.informativeness,
        "MIG": mig(codes, factors, categorical=CATEGORICAL),
        "core": core,
        "detail": detail,
    }


def test_codes_that_are_the_factors_score_perfectly(factors: np.ndarray) -> None:
    got = measure(factors, factors)
    assert got["D"] > 0.95
    assert got["C"] > 0.95
    assert got["I"] > 0.95
    assert got["MIG"] > 0.8
    assert got["core"] == pytest.approx(1.0, abs=0.02)
    assert got["detail"] == pytest.approx(1.0, abs=0.02)


def test_a_rotation_that_mixes_the_factors_lowers_disentanglement_and_mig(
    factors: np.ndarray,
) -> None:
    rng = np.random.default_rng(1)
    rotation, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    standard = (factors - factors.mean(axis=0)) / factors.std(axis=0)
    mixed = measure(standard @ rotation, factors)
    perfect = measure(factors, factors)
    assert mixed["D"] < 0.6 < perfect["D"]
    assert mixed["C"] < 0.6 < perfect["C"]
    assert mixed["MIG"] < 0.3 < perfect["MIG"]
    assert mixed["I"] > 0.8  # still every factor, only mixed: informative all the same


def test_codes_swapped_between_the_halves_score_a_reversed_split(factors: np.ndarray) -> None:
    got = measure(factors[:, [2, 3, 0, 1]], factors)
    assert got["core"] < 0.05
    assert got["detail"] < 0.05
    assert got["D"] > 0.95  # still one factor per code: only the halves are wrong


def test_noise_codes_are_not_informative(factors: np.ndarray) -> None:
    noise = np.random.default_rng(2).normal(size=(N, 4))
    got = measure(noise, factors)
    assert got["I"] < 0.1
    assert got["MIG"] < 0.05
    assert got["D"] < 0.2


def test_dci_is_deterministic_and_leaves_the_global_generators_alone(
    factors: np.ndarray,
) -> None:
    np.random.seed(5)
    torch.manual_seed(5)
    before = (np.random.get_state()[1].copy(), torch.get_rng_state())
    first = dci(factors[:, ::-1], factors, categorical=CATEGORICAL, seed=3)
    second = dci(factors[:, ::-1], factors, categorical=CATEGORICAL, seed=3)
    np.testing.assert_array_equal(first.importance, second.importance)
    assert first[:3] == second[:3]
    assert np.array_equal(np.random.get_state()[1], before[0])
    assert torch.equal(torch.get_rng_state(), before[1])


def test_importance_is_one_column_per_factor_summing_to_one(factors: np.ndarray) -> None:
    importance, informed = importance_matrix(factors, factors, categorical=CATEGORICAL)
    assert importance.shape == (4, 4)
    assert informed.shape == (4,)
    np.testing.assert_allclose(importance.sum(axis=0), 1.0)
    assert np.argmax(importance, axis=0).tolist() == [0, 1, 2, 3]


def test_a_constant_factor_is_left_out(factors: np.ndarray) -> None:
    with_constant = np.c_[factors, np.ones(N)]
    scores = dci(factors, with_constant, categorical=CATEGORICAL)
    assert np.all(scores.importance[:, 4] == 0)
    assert np.isnan(scores.factor_informativeness[4])
    assert scores.informativeness > 0.95  # the mean of the other four
    assert mig(factors, with_constant, categorical=CATEGORICAL) > 0.8


def test_the_entropy_scores_of_known_matrices() -> None:
    assert disentanglement(np.eye(4)) == 1.0
    assert completeness(np.eye(4)) == 1.0
    assert disentanglement(np.ones((4, 3))) == pytest.approx(0.0, abs=1e-12)
    assert completeness(np.ones((4, 3))) == pytest.approx(0.0, abs=1e-12)
    # A code that explains nothing does not count against disentanglement.
    assert disentanglement(np.r_[np.eye(2), np.zeros((1, 2))]) == 1.0
    # One factor spread over two of four codes: 1 - log(2)/log(4) = 0.5.
    assert completeness([[0.5], [0.5], [0.0], [0.0]]) == pytest.approx(0.5)
    assert disentanglement(np.zeros((3, 2))) == 0.0
    assert completeness(np.zeros((3, 2))) == 0.0


def test_split_scores_of_known_matrices() -> None:
    r = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    assert split_scores(r, core=2, structure=[0, 1]) == (1.0, 1.0)
    assert split_scores(r, core=2, structure=[2]) == (0.0, 0.0)
    even = np.ones((4, 3))
    assert split_scores(even, core=2, structure=[0]) == (0.5, 0.5)
    core, detail = split_scores(even, core=2, structure=[0, 1, 2])
    assert core == 0.5
    assert np.isnan(detail)  # no appearance factors


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: dci(np.zeros((10, 1)), np.zeros((10, 2))), "at least 2 codes"),
        (lambda: dci(np.zeros((10, 2)), np.zeros((9, 2))), "10 rows, factors 9"),
        (lambda: dci(np.zeros(10), np.zeros((10, 2))), "2-d array"),
        (lambda: dci(np.full((4, 2), np.nan), np.zeros((4, 2))), "NaN"),
        (lambda: dci(np.zeros((4, 2)), np.zeros((4, 2)), categorical=[2]), "categorical"),
        (lambda: dci(np.zeros((4, 2)), np.zeros((4, 2)), test_fraction=1.0), "test_fraction"),
        (lambda: mig(np.zeros((4, 2)), np.zeros((4, 2)), bins=1), "bins"),
        (lambda: split_scores(np.ones((4, 2)), core=4, structure=[0]), "core"),
        (lambda: split_scores(np.ones((4, 2)), core=2, structure=[5]), "structure"),
        (lambda: split_scores(-np.ones((4, 2)), core=2, structure=[0]), "non-negative"),
        (lambda: completeness(np.ones((1, 2))), "at least 2 codes"),
    ],
)
def test_bad_arguments_are_named(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


def test_without_scikit_learn_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = _disentanglement.importlib.import_module

    def missing(name: str) -> object:
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real(name)

    monkeypatch.setattr(_disentanglement.importlib, "import_module", missing)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        dci(np.eye(4), np.eye(4))
    assert mig(np.eye(4), np.eye(4)) >= 0  # numpy alone


def test_the_shapes_factors_lay_out_as_ten_columns() -> None:
    data = shapes(12, image_size=16, seed=3)
    matrix = factor_matrix(data.factors)
    assert matrix.names == (
        "shape", "size", "x", "y", "fg[0]", "fg[1]", "fg[2]", "bg[0]", "bg[1]", "bg[2]",
    )  # fmt: skip
    assert matrix.categorical == (0,)
    assert matrix.structure == (0, 1, 2, 3)
    np.testing.assert_array_equal(matrix.values[:, 0], data.factors["shape"].numpy())
    np.testing.assert_allclose(matrix.values[:, 7:], data.factors["bg"].numpy())
    with pytest.raises(ValueError, match="rows"):
        factor_matrix({"a": np.zeros(3), "b": np.zeros(4)})


def test_evaluate_split_encodes_posterior_means_and_restores_the_mode() -> None:
    torch.manual_seed(0)
    vae = LBOVAE(ModelConfig(image_size=16, width=4, core_dims=2, detail_dims=3))
    vae.train()
    data = shapes(48, image_size=16, seed=1)
    state = torch.get_rng_state()
    scores = evaluate_split(vae, data.images, data.factors, batch_size=20)
    assert torch.equal(torch.get_rng_state(), state)  # no noise drawn
    assert vae.training
    assert list(scores) == list(SPLIT_KEYS)
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    # The same as the functions on the codes themselves.
    vae.eval()
    with torch.no_grad():
        codes = vae.encode(data.images)[0].double().numpy()
    matrix = factor_matrix(data.factors)
    expected = dci(codes, matrix.values, categorical=matrix.categorical)
    assert scores["dci_disentanglement"] == pytest.approx(expected.disentanglement)
    assert scores["mig"] == pytest.approx(mig(codes, matrix.values, categorical=(0,)))
    with pytest.raises(ValueError, match="describe 48 images"):
        evaluate_split(vae, data.images[:10], data.factors)


def test_the_last_epoch_row_gains_the_split_metrics(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = TrainConfig(
        epochs=2, images=64, heldout=32, batch_size=32, calibration_steps=2, image_size=16,
        width=4, disc_width=4, core_dims=2, detail_dims=2, kl_lower=0.05, kl_healthy=0.2,
        kl_target=0.25,
    )  # fmt: skip
    messages: list[str] = []
    run = Run(config, tmp_path, progress=False, print_=messages.append)
    run.train()
    rows = [json.loads(line) for line in (tmp_path / METRICS).read_text().splitlines()]
    assert not set(SPLIT_KEYS) & set(rows[0])
    assert set(SPLIT_KEYS) <= set(rows[1])
    assert all(0.0 <= rows[1][k] <= 1.0 for k in SPLIT_KEYS)
    assert sum(m.strip().startswith("split: DCI disentanglement") for m in messages) == 1
    # Too few held-out images: not measured, and said so.
    messages.clear()
    few = Run(config.replace(heldout=8, epochs=1), tmp_path / "few", progress=False,
              print_=messages.append)  # fmt: skip
    assert not set(SPLIT_KEYS) & set(few.train()[0])
    assert any("[split] not measured: 8 held-out images" in m for m in messages)


def test_doctests() -> None:
    result = doctest.testmod(
        _disentanglement, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    assert result.failed == 0
    assert result.attempted >= 10
