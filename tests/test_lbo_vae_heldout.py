"""The trainer's held-out split, its quality metrics and the steps over the KL ceiling."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

from constraint_sched.adapters.lbo_vae._cli import main  # noqa: E402
from constraint_sched.adapters.lbo_vae._config import TrainConfig  # noqa: E402
from constraint_sched.adapters.lbo_vae._data import (  # noqa: E402
    ImageSet,
    shape_recovery,
    shapes,
    split,
)
from constraint_sched.adapters.lbo_vae._train import METRICS, Run, load_data  # noqa: E402

# Two steps an epoch, as test_lbo_vae_train.py's TINY, and a small held-out set.
TINY = TrainConfig(
    epochs=3, images=64, heldout=40, batch_size=32, calibration_steps=2, kl_squeeze_epochs=2,
    kl_lower=0.05, kl_healthy=0.2, kl_target=0.25, device="cpu",
)  # fmt: skip
NEW_KEYS = (
    "heldout_mse", "heldout_mean_mse", "heldout_ssim", "heldout_kl_core", "heldout_kl_detail",
    "swap_structure", "swap_appearance", "heldout_shape", "steps_over_ceiling",
)  # fmt: skip
# The keys the report prints in its last columns, and those an older trainer's rows lack.
REPORTED = (
    "heldout_mse",
    "heldout_mean_mse",
    "heldout_ssim",
    "heldout_shape",
    "steps_over_ceiling",
)
OLDER_LACKS = (*NEW_KEYS[:5], "heldout_shape", "steps_over_ceiling")


def quiet(message: str) -> None:
    """Swallow the run's messages."""


def numbered(n: int) -> ImageSet:
    """``n`` images, image ``i`` filled with ``i``, its label and its one factor ``i`` too."""
    index = torch.arange(n)
    images = index.float().view(-1, 1, 1, 1).expand(-1, 3, 8, 8).contiguous()
    return ImageSet(images=images, name="numbered", factors={"i": index.clone()}, labels=index)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, list[dict[str, Any]]]:
    torch.set_num_threads(1)
    run = Run(TINY, tmp_path_factory.mktemp("run"), progress=False, print_=quiet)
    run.train()
    rows = [json.loads(line) for line in (run.out / METRICS).read_text().splitlines()]
    return run, rows


# -- the split ---------------------------------------------------------------------------


def test_a_split_is_disjoint_complete_and_deterministic() -> None:
    data = numbered(50)
    train, held = split(data, 7, seed=3)
    assert (len(train), len(held)) == (43, 7)
    ids = [train.labels.tolist(), held.labels.tolist()]  # type: ignore[union-attr]
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == list(range(50))
    for part in (train, held):  # images, factors and labels are sliced together
        assert torch.equal(part.images[:, 0, 0, 0].long(), part.labels)
        assert torch.equal(part.factors["i"], part.labels)  # type: ignore[index]
    again = split(data, 7, seed=3)[1]
    assert torch.equal(again.images, held.images)
    assert not torch.equal(split(data, 7, seed=4)[1].labels, held.labels)
    assert held.labels.tolist() != list(range(43, 50))  # a permutation, not the tail


def test_a_split_that_leaves_too_few_to_train_on_names_heldout() -> None:
    with pytest.raises(ValueError, match=r"heldout=46 leaves 4 of the 50 images"):
        split(numbered(50), 46, min_train=5)
    with pytest.raises(ValueError, match=r"split: heldout must be an integer >= 1, got 0"):
        split(numbered(50), 0)


def test_the_shapes_training_set_is_unchanged_and_the_heldout_set_apart() -> None:
    train, held = load_data(TINY)
    assert torch.equal(train.images, shapes(64, image_size=32, seed=0).images)
    assert len(held) == TINY.heldout
    # No held-out image is a training image.
    distance = torch.cdist(held.images.flatten(1), train.images.flatten(1))
    assert float(distance.min()) > 1.0
    assert torch.equal(load_data(TINY)[1].images, held.images)  # deterministic
    assert not torch.equal(load_data(TINY.replace(seed=1))[1].images, held.images)


def test_a_run_trains_on_the_training_split_only(
    tiny_run: tuple[Run, list[dict[str, Any]]],
) -> None:
    run, _ = tiny_run
    assert torch.equal(run.data.images, shapes(TINY.images, seed=TINY.seed).images)
    assert len(run.heldout) == TINY.heldout


def test_a_heldout_set_too_large_for_digits_is_an_error_naming_heldout(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    config = TrainConfig(dataset="digits", heldout=1797 - 31, batch_size=32, device="cpu")
    with pytest.raises(ValueError, match=r"TrainConfig.heldout=1766 is too large"):
        Run(config, tmp_path, progress=False, print_=quiet)
    train, held = load_data(config.replace(heldout=1797 - 32))  # one batch remains
    assert (len(train), len(held)) == (32, 1765)
    assert held.factors is None
    assert held.labels is not None


# -- the metrics --------------------------------------------------------------------------


def test_every_row_has_the_heldout_metrics_finite(
    tiny_run: tuple[Run, list[dict[str, Any]]],
) -> None:
    run, rows = tiny_run
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for row in rows:
        missing = [k for k in NEW_KEYS if k not in row]
        assert not missing, f"epoch {row['epoch']} lacks {missing}"
        assert all(isinstance(row[k], float) and math.isfinite(row[k]) for k in NEW_KEYS), row
        assert row["heldout_mse"] > 0
        assert -1 <= row["heldout_ssim"] <= 1
        assert 0 <= row["swap_structure"] <= 1
        assert 0 <= row["swap_appearance"] <= 1
        assert 0 <= row["heldout_shape"] <= 1
    # The mean-image baseline, computed once from the training images.
    mean = run.data.images.mean(dim=0)
    baseline = float((run.heldout.images - mean).square().mean())
    assert all(r["heldout_mean_mse"] == pytest.approx(baseline, rel=1e-6) for r in rows)


def test_evaluate_measures_the_heldout_images_not_the_training_ones(
    tiny_run: tuple[Run, list[dict[str, Any]]],
) -> None:
    run, rows = tiny_run
    with torch.no_grad():
        mu, logvar = run.vae.encode(run.heldout.images)
        recon = run.vae.decode(mu)
        mse = float((recon - run.heldout.images).square().mean())
        shape = float(shape_recovery(recon, run.heldout.factors))
        core_mu, _ = run.vae.split(mu)
        core_logvar, _ = run.vae.split(logvar)
        kl_core = float(0.5 * (core_mu**2 + core_logvar.exp() - 1 - core_logvar).sum(1).mean())
    scores = run.evaluate()
    assert scores["heldout_mse"] == pytest.approx(mse, rel=1e-4)
    assert scores["heldout_kl_core"] == pytest.approx(kl_core, rel=1e-4)
    assert scores["heldout_shape"] == pytest.approx(shape, abs=1e-6)
    assert scores["heldout_mse"] == pytest.approx(rows[-1]["heldout_mse"], rel=1e-6)
    assert run.evaluate() == scores  # posterior means: no noise
    # Batched as a whole: a batch smaller than the set gives the same numbers.
    import constraint_sched.adapters.lbo_vae._train as train_module

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "EVAL_BATCH", 16)
        batched = run.evaluate()
    assert batched == pytest.approx(scores, rel=1e-4)


def test_swap_scores_are_nan_without_factors(tiny_run: tuple[Run, list[dict[str, Any]]]) -> None:
    run, _ = tiny_run
    held = run.heldout
    run.heldout = ImageSet(images=held.images, name="no factors")
    try:
        scores = run.evaluate()
    finally:
        run.heldout = held
    assert math.isnan(scores["swap_structure"])
    assert math.isnan(scores["swap_appearance"])
    assert math.isnan(scores["heldout_shape"])
    assert math.isfinite(scores["heldout_mse"])


def test_steps_over_ceiling_is_0_in_discovery_and_a_fraction(
    tiny_run: tuple[Run, list[dict[str, Any]]],
) -> None:
    _, rows = tiny_run
    assert rows[0]["kl_phase"] == "DISCOVERY"
    assert rows[0]["steps_over_ceiling"] == 0.0
    for row in rows:
        assert 0.0 <= row["steps_over_ceiling"] <= 1.0
    for row in rows[1:]:  # a step over the ceiling is one whose KL tops the epoch's max
        assert (row["steps_over_ceiling"] > 0) == (row["kl_max"] > row["kl_ceiling"]), row


def test_steps_over_ceiling_counts_the_accepted_steps_over_the_epochs_ceiling(
    tmp_path: Path,
) -> None:
    run = Run(TINY, tmp_path, progress=False, print_=quiet)
    real, calls = run.stepper, []
    # The KL each call reports (kl_core; kl_detail is 0): epoch 1 has no ceiling to be
    # over, epoch 2 one of its 2 steps, epoch 3 a rejected step (NaN batch) only.
    reported = {1: 1e6, 2: 1e6, 3: 1e6, 4: 0.0, 5: 1e6, 6: 0.0}

    class Reporting:
        """The real stepper, with its result's KL metrics replaced."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def __call__(self, x: Any) -> Any:
            calls.append(len(calls) + 1)
            result = real(torch.full_like(x, math.nan) if len(calls) == 5 else x)
            kl = torch.tensor(reported[len(calls)])
            metrics = {**result.metrics, "kl_core": kl, "kl_detail": torch.zeros(())}
            return result._replace(metrics=metrics)

    run.stepper = Reporting()  # type: ignore[assignment]
    rows = run.train()
    assert [r["rejects"] for r in rows] == [0, 0, 1]
    assert [r["steps_over_ceiling"] for r in rows] == [0.0, 0.5, 0.0]


# -- what is printed ------------------------------------------------------------------------


def test_the_summary_gives_the_heldout_numbers(tmp_path: Path) -> None:
    messages: list[str] = []
    run = Run(TINY.replace(epochs=1), tmp_path, progress=False, print_=messages.append)
    (row,) = run.train()
    (summary,) = [m for m in messages if m.startswith("epoch  1  KL DISCOVERY")]
    assert (
        f"held-out mse {row['heldout_mse']:.4f} (mean {row['heldout_mean_mse']:.4f}) "
        f"ssim {row['heldout_ssim']:.2f} "
        f"swap {row['swap_structure']:.2f}/{row['swap_appearance']:.2f}  over ceiling 0.0%"
    ) in summary
    assert "rejected 0/2 (0.0%)" in summary  # the existing fields stay


def test_the_report_prints_the_new_columns_and_old_rows(
    tiny_run: tuple[Run, list[dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, rows = tiny_run
    old = {k: v for k, v in rows[0].items() if k not in OLDER_LACKS}
    new = rows[1]
    (tmp_path / METRICS).write_text("".join(json.dumps(r) + "\n" for r in (old, new)))
    assert main(["report", str(tmp_path)]) == 0
    header, first, second = capsys.readouterr().out.splitlines()[:3]
    for column in ("held mse", "mean mse", "ssim", "shape", "over"):
        assert column in header
    assert first.split()[-5:] == ["-"] * len(REPORTED)  # an older trainer's row
    assert second.split()[-5:] == [
        f"{new['heldout_mse']:.4f}",
        f"{new['heldout_mean_mse']:.4f}",
        f"{new['heldout_ssim']:.2f}",
        f"{new['heldout_shape']:.2f}",
        f"{new['steps_over_ceiling']:.1%}",
    ]
