"""The split measured as the disentanglement literature measures it: DCI, MIG and a split score.

Plain functions over numpy arrays: ``codes`` of shape ``(n, d)`` (one row per
image, one column per latent code, e.g. the posterior means) and ``factors``
of shape ``(n, k)`` (the known generating factors of the same images, one
column each). `evaluate_split` encodes images with a model and returns all of
them, as the trainer writes them to the last row of ``metrics.jsonl``.

- **DCI** (Eastwood and Williams, "A framework for the quantitative evaluation
  of disentangled representations", ICLR 2018), `dci`: an importance matrix
  ``R`` (``d`` codes x ``k`` factors) from one predictor per factor, then
  disentanglement, completeness and informativeness.
- **MIG** (Chen et al., "Isolating sources of disentanglement in VAEs",
  NeurIPS 2018), `mig`: the gap between the two codes that share the most
  information with a factor, over the factor's entropy.
- **The split score**, `split_scores`: from ``R``, the share of the structure
  factors' importance that falls on the core half's codes, and the share of
  the appearance factors' importance that falls on the detail half's.

The importance matrix comes from scikit-learn's gradient-boosted trees
(`importance_matrix`), as in the large comparison of Locatello et al.
(ICML 2019) and its ``disentanglement_lib``: trees see a code that carries a
factor non-linearly (a position folded into a code, a categorical shape
spread over a range) where a linear model's ``|coef|`` (Lasso) misses it or
depends on a penalty to tune, and their importances are scale-free and sum to
1 per factor. scikit-learn is imported only when an importance matrix is
computed (`importance_matrix`, `dci`, `evaluate_split`); `mig` and the rest
need numpy alone.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from constraint_sched.adapters.lbo_vae._model import LBOVAE
from constraint_sched.adapters.lbo_vae._shapes import STRUCTURE_FACTORS

__all__ = [
    "DCIScores",
    "FactorMatrix",
    "SPLIT_KEYS",
    "completeness",
    "dci",
    "disentanglement",
    "evaluate_split",
    "factor_matrix",
    "importance_matrix",
    "mig",
    "split_scores",
]

SPLIT_KEYS = (
    "dci_disentanglement",
    "dci_completeness",
    "dci_informativeness",
    "mig",
    "split_structure_core",
    "split_appearance_detail",
)
"""The keys of `evaluate_split`'s dict, in order: those ``metrics.jsonl``'s last row gains."""

TEST_FRACTION = 0.25
"""The share of the samples `importance_matrix` holds out to measure informativeness on."""
BINS = 20
"""The equal-width bins `mig` puts each code (and each continuous factor) in."""


class DCIScores(NamedTuple):
    """What `dci` measures: three scores in ``[0, 1]`` (1 is best) and what they come from.

    Attributes:
        disentanglement: How much each code carries one factor only: per code
            ``1 - entropy`` of its row of ``importance`` normalised to sum to
            1 (in base ``k``), weighted by the code's share of the total
            importance (`disentanglement`).
        completeness: How much each factor is carried by one code only: per
            factor ``1 - entropy`` of its column normalised (in base ``d``),
            averaged over the factors (`completeness`).
        informativeness: How well the codes predict the factors on held-out
            samples: the mean of ``factor_informativeness``. Eastwood and
            Williams report the prediction *error*; this is 1 minus a
            normalised error, so that 1 is best here too.
        importance: ``R``, shape ``(d, k)``: the importance of each code for
            predicting each factor (`importance_matrix`).
        factor_informativeness: Shape ``(k,)``: per factor, the held-out
            R² (a continuous factor) or the accuracy above chance (a
            categorical one), clipped to ``[0, 1]``; NaN for a factor that is
            constant where the predictor is trained.
    """

    disentanglement: float
    completeness: float
    informativeness: float
    importance: np.ndarray[Any, np.dtype[np.float64]]
    factor_informativeness: np.ndarray[Any, np.dtype[np.float64]]


class FactorMatrix(NamedTuple):
    """Named factors laid out as one ``(n, k)`` matrix (`factor_matrix`).

    Attributes:
        values: Shape ``(n, k)``, float64: one column per scalar factor.
        names: The ``k`` columns' names: a factor's key, or ``key[i]`` for
            the ``i``-th component of a vector factor (a colour's channels).
        categorical: The columns that hold categories (integer factors, such
            as the shapes' ``"shape"``), for a classifier rather than a regressor.
        structure: The columns of the structure factors (`STRUCTURE_FACTORS`:
            shape, size, x, y); every other column is an appearance factor.
    """

    values: np.ndarray[Any, np.dtype[np.float64]]
    names: tuple[str, ...]
    categorical: tuple[int, ...]
    structure: tuple[int, ...]


def factor_matrix(factors: Mapping[str, Any]) -> FactorMatrix:
    """Lay named factors (an `ImageSet`'s ``factors``) out as one ``(n, k)`` matrix.

    Each factor of shape ``(n,)`` is one column; each of shape ``(n, m)``
    (the shapes' colours, ``(n, 3)``) is ``m`` columns. The columns run in
    the order of the mapping. Integer factors are categorical.

    Args:
        factors: Tensors or arrays with the same first dimension ``n``.

    Returns:
        The `FactorMatrix`.

    Raises:
        ValueError: No factors, factors of different lengths, or one with more
            than two dimensions.

    Examples:
        >>> from constraint_sched.adapters.lbo_vae._shapes import shapes
        >>> matrix = factor_matrix(shapes(5, image_size=16).factors)
        >>> matrix.values.shape, matrix.names[:5], matrix.categorical, matrix.structure
        ((5, 10), ('shape', 'size', 'x', 'y', 'fg[0]'), (0,), (0, 1, 2, 3))
    """
    columns: list[np.ndarray[Any, np.dtype[np.float64]]] = []
    names: list[str] = []
    categorical: list[int] = []
    structure: list[int] = []
    rows: int | None = None
    for key, value in factors.items():
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        array = np.asarray(array)
        if array.ndim not in (1, 2):
            raise ValueError(
                f"factor_matrix: factor {key!r} must have shape (n,) or (n, m), got {array.shape}"
            )
        if rows is not None and len(array) != rows:
            raise ValueError(
                f"factor_matrix: factor {key!r} has {len(array)} rows, the others {rows}"
            )
        rows = len(array)
        parts = [array] if array.ndim == 1 else list(array.T)
        for i, part in enumerate(parts):
            index = len(columns)
            columns.append(part.astype(np.float64))
            names.append(key if array.ndim == 1 else f"{key}[{i}]")
            if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
                categorical.append(index)
            if key in STRUCTURE_FACTORS:
                structure.append(index)
    if not columns:
        raise ValueError("factor_matrix: no factors")
    return FactorMatrix(
        values=np.stack(columns, axis=1),
        names=tuple(names),
        categorical=tuple(categorical),
        structure=tuple(structure),
    )


def importance_matrix(
    codes: Any,
    factors: Any,
    *,
    categorical: Sequence[int] = (),
    seed: int = 0,
    test_fraction: float = TEST_FRACTION,
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]:
    """One gradient-boosted predictor per factor: the codes' importances and its held-out score.

    The samples are split at random (from ``seed``) into a training part and
    a held-out part of ``test_fraction`` (at least one sample each). For each
    factor, scikit-learn's ``GradientBoostingRegressor`` (a categorical
    factor: ``GradientBoostingClassifier``), with its default settings and
    ``random_state=seed``, learns the factor from the codes on the training
    part; its ``feature_importances_`` (summing to 1) are the factor's column
    of ``R``, and its score on the held-out part is the factor's
    informativeness: R² for a regressor, ``(accuracy - base) / (1 - base)``
    for a classifier, ``base`` being the accuracy of always predicting the
    training part's most common category, each clipped to ``[0, 1]``. A
    factor that is constant on the training part has a column of zeros and
    a NaN score. Deterministic for a given ``seed``; no global random state
    is read or changed.

    Args:
        codes: Shape ``(n, d)``.
        factors: Shape ``(n, k)``.
        categorical: The columns of ``factors`` that hold categories.
        seed: The seed of the split and of the trees.
        test_fraction: The share of the samples held out, in ``(0, 1)``.

    Returns:
        ``(R, informativeness)``: shapes ``(d, k)`` and ``(k,)``.

    Raises:
        ValueError: As `dci`.
        ImportError: scikit-learn is not installed.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> factors = rng.uniform(size=(200, 2))
        >>> R, informed = importance_matrix(factors[:, ::-1], factors)  # codes swapped
        >>> np.round(R, 1).tolist(), bool(informed.min() > 0.9)
        ([[0.0, 1.0], [1.0, 0.0]], True)
    """
    x, y = _check(codes, factors, "importance_matrix")
    if not 0 < test_fraction < 1:
        raise ValueError(
            f"importance_matrix: test_fraction must be in (0, 1), got {test_fraction!r}"
        )
    if len(x) < 2:
        raise ValueError(f"importance_matrix: needs at least 2 samples, got {len(x)}")
    _check_categorical(categorical, y.shape[1], "importance_matrix")
    ensemble = _sklearn("sklearn.ensemble", "importance_matrix")
    n = len(x)
    held = min(max(round(n * test_fraction), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[:held], order[held:]
    importance = np.zeros((x.shape[1], y.shape[1]))
    informed = np.full(y.shape[1], math.nan)
    for j in range(y.shape[1]):
        target = y[:, j]
        if np.all(target[train] == target[train][0]):
            continue  # constant where it is learnt: nothing to explain
        if j in categorical:
            labels = target.astype(np.int64)
            model = ensemble.GradientBoostingClassifier(random_state=seed)
            model.fit(x[train], labels[train])
            values, counts = np.unique(labels[train], return_counts=True)
            base = float(np.mean(labels[test] == values[np.argmax(counts)]))
            accuracy = float(np.mean(model.predict(x[test]) == labels[test]))
            score = (accuracy - base) / (1 - base) if base < 1 else 0.0
        else:
            model = ensemble.GradientBoostingRegressor(random_state=seed)
            model.fit(x[train], target[train])
            residual = np.sum((model.predict(x[test]) - target[test]) ** 2)
            spread = np.sum((target[test] - target[test].mean()) ** 2)
            score = 1 - residual / spread if spread > 0 else 0.0
        importance[:, j] = np.asarray(model.feature_importances_, dtype=np.float64)
        informed[j] = min(max(float(score), 0.0), 1.0)
    return importance, informed


def disentanglement(importance: Any) -> float:
    """DCI disentanglement of an importance matrix ``R`` (``d`` codes x ``k`` factors).

    Per code ``i``, ``D_i = 1 - H_k(P_i)`` with ``P_i`` its row normalised to
    sum to 1 and ``H_k`` the entropy in base ``k``; the score is
    ``sum_i rho_i D_i`` with ``rho_i`` the code's share of all the
    importance, so codes that explain nothing do not count. 0 when ``R`` is
    all zeros.

    Args:
        importance: Shape ``(d, k)``, non-negative, ``k`` at least 2.

    Returns:
        The score in ``[0, 1]``: 1 when every code that matters explains one
        factor only.

    Raises:
        ValueError: Not a non-negative ``(d, k)`` matrix with ``k >= 2``.

    Examples:
        >>> disentanglement(np.eye(3)), round(disentanglement(np.ones((3, 3))), 12)
        (1.0, 0.0)
        >>> round(disentanglement([[1.0, 0.0], [1.0, 1.0]]), 3)  # a pure code and a mixed one
        0.333
    """
    r = _check_importance(importance, "disentanglement", axis=1)
    total = r.sum()
    if total <= 0:
        return 0.0
    weights = r.sum(axis=1) / total
    return float(np.clip(np.sum(weights * (1 - _entropy(r, axis=1))), 0.0, 1.0))


def completeness(importance: Any) -> float:
    """DCI completeness of an importance matrix ``R`` (``d`` codes x ``k`` factors).

    Per factor ``j``, ``C_j = 1 - H_d(P_j)`` with ``P_j`` its column
    normalised to sum to 1 and ``H_d`` the entropy in base ``d``; the score
    is the mean over the factors whose column is not all zeros (0 when none
    is).

    Args:
        importance: Shape ``(d, k)``, non-negative, ``d`` at least 2.

    Returns:
        The score in ``[0, 1]``: 1 when every factor is explained by one code.

    Raises:
        ValueError: Not a non-negative ``(d, k)`` matrix with ``d >= 2``.

    Examples:
        >>> completeness(np.eye(3)), completeness(np.ones((4, 2)))
        (1.0, 0.0)
        >>> completeness([[1.0, 0.5], [0.0, 0.5]])  # factor 0 in one code, factor 1 in two
        0.5
    """
    r = _check_importance(importance, "completeness", axis=0)
    used = r.sum(axis=0) > 0
    if not used.any():
        return 0.0
    return float(np.clip(np.mean(1 - _entropy(r[:, used], axis=0)), 0.0, 1.0))


def dci(
    codes: Any,
    factors: Any,
    *,
    categorical: Sequence[int] = (),
    seed: int = 0,
    test_fraction: float = TEST_FRACTION,
) -> DCIScores:
    """DCI (Eastwood and Williams 2018): disentanglement, completeness, informativeness.

    The importance matrix and the per-factor informativeness are
    `importance_matrix`'s (gradient-boosted trees, a held-out share of the
    samples); disentanglement and completeness are `disentanglement` and
    `completeness` of it; informativeness is the mean of the per-factor
    scores (NaN ones left out).

    Args:
        codes: Shape ``(n, d)``, ``d`` at least 2: one row per sample.
        factors: Shape ``(n, k)``, ``k`` at least 2: the known factors of the
            same samples.
        categorical: The columns of ``factors`` that hold categories (a
            classifier predicts them).
        seed: The seed of the train/test split and of the trees.
        test_fraction: The share of the samples held out for informativeness.

    Returns:
        The `DCIScores`.

    Raises:
        ValueError: Arrays of the wrong shapes or lengths, non-finite values,
            fewer than 2 samples, codes or factors, a bad ``categorical`` or
            ``test_fraction``.
        ImportError: scikit-learn is not installed.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> factors = rng.uniform(size=(300, 3))
        >>> perfect = dci(factors, factors)  # each code is one factor
        >>> [round(s, 1) for s in perfect[:3]]
        [1.0, 1.0, 1.0]
        >>> noise = dci(rng.normal(size=(300, 3)), factors)  # codes that know nothing
        >>> noise.informativeness < 0.1
        True
    """
    importance, informed = importance_matrix(
        codes, factors, categorical=categorical, seed=seed, test_fraction=test_fraction
    )
    known = informed[np.isfinite(informed)]
    return DCIScores(
        disentanglement=disentanglement(importance),
        completeness=completeness(importance),
        informativeness=float(known.mean()) if len(known) else math.nan,
        importance=importance,
        factor_informativeness=informed,
    )


def mig(codes: Any, factors: Any, *, bins: int = BINS, categorical: Sequence[int] = ()) -> float:
    """MIG (Chen et al. 2018): the mutual information gap, averaged over the factors.

    Each code is put in ``bins`` equal-width bins between its smallest and
    largest value (a constant code in one bin); so is each continuous factor,
    while a categorical one keeps its categories. For each factor ``v``, with
    ``I_1 >= I_2`` the two largest mutual informations between a code and
    ``v`` and ``H(v)`` the factor's entropy (all from the discrete
    histograms), the gap is ``(I_1 - I_2) / H(v)``; the score is the mean
    over the factors that are not constant. numpy only.

    Args:
        codes: Shape ``(n, d)``, ``d`` at least 2.
        factors: Shape ``(n, k)``, ``k`` at least 1.
        bins: The bins per code and per continuous factor, at least 2.
        categorical: The columns of ``factors`` that hold categories.

    Returns:
        The score in ``[0, 1]`` (1: each factor is in one code and no other
        code knows it); NaN when every factor is constant.

    Raises:
        ValueError: As `dci`, or ``bins`` below 2.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> factors = rng.uniform(size=(2000, 2))
        >>> round(mig(factors, factors), 2)  # each factor in its own code
        0.96
        >>> round(mig(np.c_[factors[:, :1], factors[:, :1]], factors), 1)  # one factor twice
        0.0
    """
    x, y = _check(codes, factors, "mig", min_factors=1)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"mig: bins must be an integer of at least 2, got {bins!r}")
    _check_categorical(categorical, y.shape[1], "mig")
    binned = [_bin(x[:, i], bins) for i in range(x.shape[1])]
    gaps = []
    for j in range(y.shape[1]):
        if j in categorical:
            levels = np.unique(y[:, j], return_inverse=True)[1].reshape(-1)
        else:
            levels = _bin(y[:, j], bins)
        entropy = _discrete_entropy(levels)
        if entropy <= 0:
            continue
        information = sorted((_mutual_information(b, levels) for b in binned), reverse=True)
        gaps.append((information[0] - information[1]) / entropy)
    return float(np.mean(gaps)) if gaps else math.nan


def split_scores(importance: Any, *, core: int, structure: Sequence[int]) -> tuple[float, float]:
    """How the importance of the structure and the appearance factors falls on the two halves.

    With ``R`` the importance matrix (`importance_matrix`), the first
    ``core`` codes the core half and the rest the detail half, the columns
    ``structure`` the structure factors and the others the appearance
    factors:

    - ``structure_core``: the share of the structure factors' importance
      (the sum of their columns) that falls on the core codes;
    - ``appearance_detail``: the share of the appearance factors' importance
      that falls on the detail codes.

    Each is 1 for a perfect split, 0 for one that is exactly reversed, and
    about ``core / d`` (or ``1 - core / d``) when importance falls on the
    codes regardless of the halves. NaN where the factors of that kind have no
    importance at all, or there are none.

    Args:
        importance: Shape ``(d, k)``, non-negative.
        core: How many of the first codes form the core half, ``0 < core < d``.
        structure: The columns of the structure factors.

    Returns:
        ``(structure_core, appearance_detail)``.

    Raises:
        ValueError: A bad ``importance``, ``core`` or ``structure``.

    Examples:
        >>> R = np.array([[0.9, 0.2], [0.1, 0.8]])  # codes: core, detail; factors: shape, colour
        >>> [round(s, 2) for s in split_scores(R, core=1, structure=[0])]
        [0.9, 0.8]
        >>> [round(s, 2) for s in split_scores(R[::-1], core=1, structure=[0])]  # halves swapped
        [0.1, 0.2]
    """
    r = _check_importance(importance, "split_scores", axis=None)
    d, k = r.shape
    if isinstance(core, bool) or not isinstance(core, int) or not 0 < core < d:
        raise ValueError(f"split_scores: core must be an integer in (0, {d}), got {core!r}")
    _check_categorical(structure, k, "split_scores", what="structure")
    chosen = np.zeros(k, dtype=bool)
    chosen[list(structure)] = True

    def share(columns: np.ndarray[Any, np.dtype[np.bool_]], rows: slice) -> float:
        total = r[:, columns].sum()
        return float(r[rows][:, columns].sum() / total) if total > 0 else math.nan

    return share(chosen, slice(0, core)), share(~chosen, slice(core, d))


@torch.no_grad()
def evaluate_split(
    vae: LBOVAE,
    images: torch.Tensor,
    factors: Mapping[str, Any],
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, float]:
    """A model's split of images with known factors: DCI, MIG and the split score, by name.

    The images are encoded to their posterior means (``vae.encode``, in eval
    mode, ``batch_size`` at a time, no noise; the model's mode is restored),
    the codes; the factors are laid out by `factor_matrix` (the shapes' ten
    columns: shape, size, x, y and the two colours' channels; the shape is
    categorical). Then `dci` (``seed``), `mig` (`BINS` bins) and
    `split_scores` with the model's ``core_dims`` first codes as the core half
    and the structure factors (`STRUCTURE_FACTORS`) against the rest.

    Args:
        vae: The model: any `LBOVAE` (a plain beta-VAE of the same
            architecture too, whose halves are an arbitrary index split).
        images: Shape ``(n, C, S, S)``, ``n`` at least 2, not seen in training.
        factors: Their factors (an `ImageSet`'s ``factors``), ``n`` rows each.
        device: Where ``vae`` lives.
        seed: The seed of `dci`'s split and trees.
        batch_size: The images encoded at a time.

    Returns:
        `SPLIT_KEYS`: ``dci_disentanglement``, ``dci_completeness``,
        ``dci_informativeness``, ``mig``, ``split_structure_core``,
        ``split_appearance_detail``, as floats.

    Raises:
        ValueError: Factors that do not describe the images, or as `dci`.
        ImportError: scikit-learn is not installed.

    Examples:
        >>> from constraint_sched.adapters.lbo_vae._model import LBOVAE, ModelConfig
        >>> from constraint_sched.adapters.lbo_vae._shapes import shapes
        >>> _ = torch.manual_seed(0)
        >>> vae = LBOVAE(ModelConfig(image_size=16, width=4, core_dims=2, detail_dims=2))
        >>> data = shapes(64, image_size=16)
        >>> scores = evaluate_split(vae, data.images, data.factors)
        >>> list(scores) == list(SPLIT_KEYS), all(0 <= v <= 1 for v in scores.values())
        (True, True)
    """
    matrix = factor_matrix(factors)
    if len(matrix.values) != len(images):
        raise ValueError(
            f"evaluate_split: the factors describe {len(matrix.values)} images, "
            f"images holds {len(images)}"
        )
    training = vae.training
    vae.eval()
    try:
        parts = [
            vae.encode(images[i : i + batch_size].to(device))[0].float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        vae.train(training)
    codes = torch.cat(parts).double().numpy()
    scores = dci(codes, matrix.values, categorical=matrix.categorical, seed=seed)
    structure_core, appearance_detail = split_scores(
        scores.importance, core=vae.core_dims, structure=matrix.structure
    )
    values = (
        scores.disentanglement,
        scores.completeness,
        scores.informativeness,
        mig(codes, matrix.values, categorical=matrix.categorical),
        structure_core,
        appearance_detail,
    )
    return dict(zip(SPLIT_KEYS, values, strict=True))


# -- helpers ---------------------------------------------------------------------------------


def _sklearn(module: str, where: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{where} needs scikit-learn for the DCI importance matrix; install it with: "
            "pip install scikit-learn"
        ) from error


def _matrix(value: Any, name: str, where: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{where}: {name} must be a 2-d array (n, columns), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{where}: {name} holds NaN or infinite values")
    return array


def _check(
    codes: Any, factors: Any, where: str, *, min_factors: int = 2
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]:
    x, y = _matrix(codes, "codes", where), _matrix(factors, "factors", where)
    if len(x) != len(y):
        raise ValueError(f"{where}: codes has {len(x)} rows, factors {len(y)}: one per sample")
    if x.shape[1] < 2 or y.shape[1] < min_factors:
        raise ValueError(
            f"{where}: needs at least 2 codes and {min_factors} factor(s), got codes of shape "
            f"{x.shape} and factors of shape {y.shape}"
        )
    return x, y


def _check_categorical(
    columns: Sequence[int], k: int, where: str, *, what: str = "categorical"
) -> None:
    for c in columns:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < k:
            raise ValueError(
                f"{where}: {what} must list columns of the {k} factors, got {list(columns)!r}"
            )


def _check_importance(
    importance: Any, where: str, *, axis: int | None
) -> np.ndarray[Any, np.dtype[np.float64]]:
    r = _matrix(importance, "importance", where)
    if np.any(r < 0):
        raise ValueError(f"{where}: importance must be non-negative")
    if axis is not None and r.shape[axis] < 2:
        side = "factors (columns)" if axis == 1 else "codes (rows)"
        raise ValueError(f"{where}: needs at least 2 {side}, got importance of shape {r.shape}")
    return r


def _entropy(r: np.ndarray[Any, np.dtype[np.float64]], *, axis: int) -> Any:
    """The entropy of each row (``axis=1``) or column (``axis=0``) normalised to sum to 1.

    In base ``r.shape[axis]``, so in ``[0, 1]``; an all-zero row or column has 0.
    """
    totals = r.sum(axis=axis, keepdims=True)
    p = np.divide(r, totals, out=np.zeros_like(r), where=totals > 0)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -np.sum(p * logs, axis=axis) / math.log(r.shape[axis])


def _bin(values: np.ndarray[Any, np.dtype[np.float64]], bins: int) -> Any:
    """Equal-width bins ``0..bins-1`` between the smallest and largest value."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(len(values), dtype=np.int64)
    edges = np.linspace(low, high, bins + 1)[1:-1]
    return np.digitize(values, edges)


def _discrete_entropy(labels: np.ndarray[Any, np.dtype[np.int64]]) -> float:
    p = np.bincount(labels) / len(labels)
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def _mutual_information(
    a: np.ndarray[Any, np.dtype[np.int64]], b: np.ndarray[Any, np.dtype[np.int64]]
) -> float:
    """The mutual information of two discrete variables (non-negative integers), in nats."""
    nb = int(b.max()) + 1
    joint = np.bincount(a * nb + b, minlength=(int(a.max()) + 1) * nb).reshape(-1, nb)
    p = joint / len(a)
    pa, pb = p.sum(axis=1, keepdims=True), p.sum(axis=0, keepdims=True)
    outer = pa * pb
    nonzero = p > 0
    return float(max(np.sum(p[nonzero] * np.log(p[nonzero] / outer[nonzero])), 0.0))
