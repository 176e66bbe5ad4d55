"""Smoke test of benchmarks/trainer_quality.py: its --quick mode reports every arm; nothing is judged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from benchmark_run import run_quick

REPO_ROOT = Path(__file__).parents[1]
SCRIPT = REPO_ROOT / "benchmarks" / "trainer_quality.py"
ARMS = ("lbo-vae", "beta-vae", "mean-image")
FIGURES = ("heldout_mse", "heldout_ssim", "swap_structure", "swap_appearance", "heldout_kl")


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, Path]:
    if not SCRIPT.is_file():
        pytest.skip("benchmarks/trainer_quality.py is not in this tree")
    pytest.importorskip("torch")
    pytest.importorskip("constraint_sched.adapters.lbo_vae")
    workdir = tmp_path_factory.mktemp("trainer-quality")
    md = workdir / "quality.md"
    # One thread: on a shared CPU, torch's threads wait for each other at every operator.
    out, figures = run_quick(
        SCRIPT, workdir, "--device", "cpu", "--threads", "1", "--quiet", "--markdown", str(md)
    )
    return out, figures, md


def test_header_names_versions_and_machine(quality_run: tuple[str, dict, Path]) -> None:
    out, figures, _ = quality_run
    machine = figures["machine"]
    assert f"Python {machine['python']}" in out
    assert f"torch {machine['torch']}" in out
    assert f"constraint_sched {machine['constraint_sched']}" in out
    assert f"machine: {machine['processor']}" in out
    assert "device: cpu (" in out
    assert "--quick" in out
    assert figures["quick"] is True


def test_table_puts_the_three_arms_side_by_side(quality_run: tuple[str, dict, Path]) -> None:
    out, _, _ = quality_run
    lines = out.splitlines()
    head = "| | lbo-vae | beta-vae | mean-image |"
    assert lines.count(head) == 2, out  # the seed's table and the mean over seeds
    number = r"-?[\d.]+(?: ± [\d.]+)?"
    for label in ("held-out MSE", "held-out SSIM"):
        row = re.compile(rf"^\| {label} \| {number} \| {number} \| {number} \|$")
        assert sum(bool(row.match(line)) for line in lines) == 2, out
    for label in (
        "swap structure",
        "swap appearance",
        "KL core \\+ detail",
        "KL core",
        "KL detail",
    ):
        row = re.compile(rf"^\| {label} \| (?:{number}|n/a) \| (?:{number}|n/a) \| - \|$")
        assert sum(bool(row.match(line)) for line in lines) == 2, out
    assert any(re.match(r"^\| steps over the ceiling.* \| - \| - \|$", line) for line in lines)
    assert any(re.match(r"^\| min group.*\| - \| - \|$", line) for line in lines)
    assert any(re.match(r"^\| KL phases \| DISCOVERY.*\| - \| - \|$", line) for line in lines)
    assert re.search(r"MSE lbo/beta [\d.]+x, SSIM lbo/beta [\d.]+x", out), out


def test_json_holds_every_arms_figures_per_seed(quality_run: tuple[str, dict, Path]) -> None:
    _, figures, _ = quality_run
    assert figures["arms"] == list(ARMS)
    assert [s["seed"] for s in figures["per_seed"]] == figures["seeds"] == [0]
    for seed in figures["per_seed"]:
        arms = seed["arms"]
        assert set(arms) == set(ARMS)
        for arm in ("lbo-vae", "beta-vae"):
            for key in (*FIGURES, "seconds"):
                assert key in arms[arm], (arm, key)
        assert arms["mean-image"]["heldout_mse"] > 0
        assert arms["mean-image"]["swap_structure"] is None
        lbo = arms["lbo-vae"]
        assert len(lbo["rows"]) == seed["epochs"] == lbo["epochs"]
        assert len(lbo["min_group"]) == len(lbo["steps_over_ceiling"]) == seed["epochs"] - 1
        assert len(lbo["reject_rate"]) == seed["epochs"]
        assert lbo["kl_phases"][0] == "DISCOVERY"
        # the same budget: every epoch the LBO-VAE trained, in batches of the same size
        assert arms["beta-vae"]["steps"] == seed["epochs"] * seed["steps_per_epoch"]
    for arm in ARMS:
        assert "heldout_mse" in figures["summary"][arm]
    assert set(figures["ratios"]) == {"mse", "ssim"}


def test_mean_image_mse_matches_an_independent_computation(
    quality_run: tuple[str, dict, Path],
) -> None:
    _, figures, _ = quality_run
    from constraint_sched.adapters.lbo_vae import TrainConfig
    from constraint_sched.adapters.lbo_vae._train import load_data

    config = TrainConfig(**{**figures["config"], "seed": figures["seeds"][0]})
    train, heldout = load_data(config)
    assert len(heldout) == config.heldout == 32
    mean = train.images.mean(dim=0)
    mse = float(((heldout.images - mean) ** 2).mean())
    arm = figures["per_seed"][0]["arms"]["mean-image"]
    assert arm["heldout_mse"] == pytest.approx(mse, rel=1e-6)


def test_beta_search_reports_its_trials(quality_run: tuple[str, dict, Path]) -> None:
    out, figures, _ = quality_run
    search = figures["per_seed"][0]["beta_search"]
    trials = search["trials"]
    assert search["trainings"] == len(trials) >= 2
    assert len(trials) <= len(figures["betas"]) + figures["refine"]
    assert trials[0]["beta"] == min(figures["betas"])
    assert search["chosen"] in trials
    assert search["beta"] == search["chosen"]["beta"]
    assert figures["per_seed"][0]["arms"]["beta-vae"]["beta"] == search["beta"]
    assert isinstance(search["matched"], bool)
    lbo = figures["per_seed"][0]["arms"]["lbo-vae"]
    assert search["target"] == pytest.approx(lbo["heldout_kl"])
    error = abs(search["chosen"]["heldout_kl"] / search["target"] - 1)
    assert error == pytest.approx(search["relative_error"])
    assert search["matched"] == (error <= 0.1)
    match = re.search(
        r"beta search \(seed 0\): .* (\d+) trainings, matched within 10%: (yes|no)", out
    )
    assert match, out
    assert int(match.group(1)) == len(trials)


def test_goal_checks_are_printed_with_pass_or_miss(quality_run: tuple[str, dict, Path]) -> None:
    out, figures, md = quality_run
    goals = re.findall(r"^(PASS|MISS)  (\d)\. ", out, flags=re.MULTILINE)
    assert [int(n) for _, n in goals] == list(range(1, 7)), out
    assert [g == "PASS" for g, _ in goals] == [c["passed"] for c in figures["goals"]]
    text = md.read_text(encoding="utf-8")
    assert f"Command: `{figures['command']}`" in text
    assert "--quick" in figures["command"]
    assert f"Machine: {figures['machine']['processor']}" in text
    assert "| | lbo-vae | beta-vae | mean-image |" in text
    assert re.search(r"^- (PASS|MISS)  1\. ", text, flags=re.MULTILINE)
