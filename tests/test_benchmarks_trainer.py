"""Smoke tests of the trainer's benchmarks: they run in --quick mode and report; nothing is timed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from benchmark_run import run_quick

REPO_ROOT = Path(__file__).parents[1]
STEP_SCRIPT = REPO_ROOT / "benchmarks" / "trainer_step.py"
SWEEP_SCRIPT = REPO_ROOT / "benchmarks" / "lr_sweep.py"
TIMING = r"[\d.]+ \[[\d.]+\]"


def _run(script: Path, workdir: Path, *args: str) -> tuple[str, dict]:
    """Run ``script --quick *args --json`` in ``workdir``; its stdout and its JSON."""
    if not script.is_file():
        pytest.skip(f"benchmarks/{script.name} is not in this tree")
    pytest.importorskip("torch")
    pytest.importorskip("constraint_sched.adapters.lbo_vae")
    # One thread: on a shared CPU, torch's threads wait for each other at every operator.
    return run_quick(script, workdir, "--device", "cpu", "--threads", "1", *args)


@pytest.fixture(scope="module")
def step_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    return _run(STEP_SCRIPT, tmp_path_factory.mktemp("trainer-step"))


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    return _run(SWEEP_SCRIPT, tmp_path_factory.mktemp("lr-sweep"), "--quiet")


def test_step_header_names_torch_device_and_threads(step_run: tuple[str, dict]) -> None:
    out, figures = step_run
    assert f"torch {figures['machine']['torch']}" in out
    assert "device: cpu (" in out
    assert "torch threads:" in out
    assert "--quick" in out


def test_step_prints_both_arms_and_the_ratio(step_run: tuple[str, dict]) -> None:
    out, figures = step_run
    lines = out.splitlines()
    for arm in ("ours", "original"):
        row = re.compile(rf"^\s*{arm}\s+{TIMING}\s+{TIMING}\s+\d+/\d+\s*$")
        assert any(row.match(line) for line in lines), out
    ratio = re.compile(r"ratio \(original / ours\): ([\d.]+)x \[([\d.]+)x\]")
    match = ratio.search(out)
    assert match, out
    assert float(match.group(1)) == pytest.approx(figures["ratio"]["best"], abs=0.006)
    assert figures["cpu_ratio"]["best"] > 0
    for arm in ("ours", "original"):
        assert 0 < figures[arm]["best_s"] <= figures[arm]["median_s"]
        assert len(figures["times_s"][arm]) == figures["settings"]["rounds"]
        assert len(figures["cpu_times_s"][arm]) == figures["settings"]["rounds"]


def test_step_baseline_does_the_same_maths(step_run: tuple[str, dict]) -> None:
    out, figures = step_run
    check = figures["check"]
    assert "same maths" in out
    assert check["ours_rejected"] == check["original_rejected"]
    assert check["loss_abs_diff"] <= 1e-4 * max(1.0, abs(check["ours_loss"]))
    assert check["max_param_abs_diff"] <= 1e-4


def test_sweep_prints_a_row_per_lr_and_arm(sweep_run: tuple[str, dict]) -> None:
    out, figures = sweep_run
    assert "| LR | ceiling |" in out
    assert figures["lrs"] == [1e-3, 2e-3, 3e-3, 5e-3]
    for lr in ("0.001", "0.002", "0.003", "0.005"):
        for arm in ("discovered", "fixed"):
            row = re.compile(
                rf"^\| {lr} \| {arm} \| [\d.na]+ \| [\d.na]+ \| [\d.na-]+ \| [\d.]+% \|"
            )
            assert any(row.match(line) for line in out.splitlines()), out


def test_sweep_fixed_ceiling_is_the_reference_runs(sweep_run: tuple[str, dict]) -> None:
    _, figures = sweep_run
    records = {(r["lr"], r["arm"]): r for r in figures["records"]}
    assert len(records) == 8
    assert all("error" not in r for r in records.values())
    fixed = figures["fixed_ceiling"]
    assert fixed == records[(1e-3, "discovered")]["ceiling_epoch_2"]
    for lr in figures["lrs"]:
        assert records[(lr, "discovered")]["rows"][0]["kl_ceiling"] is None  # epoch 1 discovers
        run = records[(lr, "fixed")]
        # v17c: the fixed ceiling is in force in epoch 1 and held in epoch 2, then squeezed.
        ceilings = [row["kl_ceiling"] for row in run["rows"]]
        assert ceilings[:2] == [fixed] * min(2, run["epochs"])
        assert all(c <= fixed for c in ceilings)
        assert run["ceiling_epoch_2"] == fixed
        assert run["final_kl_over_target"] == pytest.approx(run["final_kl"] / run["kl_target"])


def test_the_fixed_arm_steps_like_the_trainer_but_for_its_ceiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The v17c arm rebuilds the run's Stepper over its own KL scheduler: every
    # other setting of the step (met levels, clipping, features) must be the trainer's.
    pytest.importorskip("torch")
    lbo_vae = pytest.importorskip("constraint_sched.adapters.lbo_vae")
    monkeypatch.syspath_prepend(str(SWEEP_SCRIPT.parent))
    import lr_sweep

    config = lbo_vae.TrainConfig(
        epochs=1, images=32, heldout=32, batch_size=16, image_size=16, width=4, disc_width=4,
        core_dims=2, detail_dims=2, calibration_steps=1, device="cpu",
    )  # fmt: skip
    run = lbo_vae.Run(config, tmp_path, progress=False, print_=lambda _: None)
    before = run.stepper
    lr_sweep.fix_ceiling(run, 50.0)
    after = run.stepper
    assert after is not before
    assert after.met == before.met
    assert after.met  # the constraints have levels
    assert after.clip == before.clip == config.gradient_clip
    assert after.features is before.features
    assert after.barriers == before.barriers
