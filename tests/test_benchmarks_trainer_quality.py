"""Smoke test of benchmarks/trainer_quality.py: its --quick mode reports every arm and metric; nothing is judged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from benchmark_run import run_quick

REPO_ROOT = Path(__file__).parents[1]
SCRIPT = REPO_ROOT / "benchmarks" / "trainer_quality.py"
EQUAL_TIME = "beta-vae (equal time)"
ARMS = ("lbo-vae", "beta-vae", EQUAL_TIME, "mean-image")
FIGURES = (
    "heldout_mse", "heldout_ssim", "swap_structure", "swap_appearance", "heldout_shape",
    "heldout_kl",
)  # fmt: skip
SPLIT = (
    "dci_disentanglement", "dci_completeness", "dci_informativeness", "mig",
    "split_structure_core", "split_appearance_detail",
)  # fmt: skip


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


def test_table_puts_the_four_arms_side_by_side(quality_run: tuple[str, dict, Path]) -> None:
    out, _, _ = quality_run
    lines = out.splitlines()
    head = f"| | lbo-vae | beta-vae | {EQUAL_TIME} | mean-image |"
    assert lines.count(head) == 2, out  # the seed's table and the mean over seeds
    number = r"-?[\d.]+(?: ± [\d.]+)?"
    for label in ("held-out MSE", "held-out SSIM", "shapes drawn right", "seconds of training"):
        row = re.compile(rf"^\| {label} \| {number} \| {number} \| {number} \| {number} \|$")
        assert sum(bool(row.match(line)) for line in lines) == 2, out
    for label in (
        "swap structure",
        "swap appearance",
        "KL core \\+ detail",
        "KL core",
        "KL detail",
        "DCI disentanglement",
        "DCI completeness",
        "DCI informativeness",
        "MIG",
        "structure importance on core",
        "appearance importance on detail",
        "training steps",
        "epochs",
        "milliseconds per step",
    ):
        value = rf"(?:{number}|n/a)"
        row = re.compile(rf"^\| {label} \| {value} \| {value} \| {value} \| - \|$")
        assert sum(bool(row.match(line)) for line in lines) == 2, (label, out)
    lbo_only = r"\| - \| - \| - \|$"
    assert any(re.match(rf"^\| steps over the ceiling.* {lbo_only}", line) for line in lines)
    assert any(re.match(rf"^\| min group.*{lbo_only}", line) for line in lines)
    assert any(re.match(rf"^\| KL phases \| DISCOVERY.*{lbo_only}", line) for line in lines)
    beta = re.compile(r"^\| beta \(KL-matched\) \| - \| ([\d.e-]+) \| \1 \| - \|$")
    assert sum(bool(beta.match(line)) for line in lines) == 2, out
    assert re.search(
        r"MSE lbo/beta [\d.]+x, SSIM lbo/beta [\d.]+x, seconds per step lbo/beta [\d.]+x; "
        r"MSE lbo/beta at equal time [\d.]+x",
        out,
    ), out
    assert re.search(rf"^\[seed 0 {re.escape(EQUAL_TIME)}\] beta .* steps", out, re.M), out


def test_json_holds_every_arms_figures_per_seed(quality_run: tuple[str, dict, Path]) -> None:
    _, figures, _ = quality_run
    assert figures["arms"] == list(ARMS)
    assert [s["seed"] for s in figures["per_seed"]] == figures["seeds"] == [0]
    for seed in figures["per_seed"]:
        arms = seed["arms"]
        assert set(arms) == set(ARMS)
        for arm in ("lbo-vae", "beta-vae", EQUAL_TIME):
            for key in (*FIGURES, *SPLIT, "seconds", "seconds_per_step", "steps"):
                assert key in arms[arm], (arm, key)
            for key in SPLIT:
                assert arms[arm][key] is None or 0 <= arms[arm][key] <= 1, (arm, key)
        assert arms["mean-image"]["heldout_mse"] > 0
        assert arms["mean-image"]["swap_structure"] is None
        for arm in ARMS:  # the mean image too: it is one blob for every image
            assert 0 <= arms[arm]["heldout_shape"] <= 1, arm
        lbo = arms["lbo-vae"]
        assert len(lbo["rows"]) == seed["epochs"] == lbo["epochs"]
        assert len(lbo["min_group"]) == len(lbo["steps_over_ceiling"]) == seed["epochs"] - 1
        assert len(lbo["reject_rate"]) == seed["epochs"]
        assert lbo["kl_phases"][0] == "DISCOVERY"
        # the same budget: every epoch the LBO-VAE trained, in batches of the same size
        assert arms["beta-vae"]["steps"] == seed["epochs"] * seed["steps_per_epoch"]
        assert lbo["steps"] == seed["epochs"] * seed["steps_per_epoch"]
        # the equal-time arm: the chosen beta, for the LBO-VAE's seconds of training
        equal = arms[EQUAL_TIME]
        assert equal["beta"] == arms["beta-vae"]["beta"]
        assert equal["time_budget"] == pytest.approx(lbo["seconds"])
        assert equal["seconds"] >= equal["time_budget"]
        assert equal["steps"] >= 1
        assert equal["epochs"] == pytest.approx(equal["steps"] / seed["steps_per_epoch"])
        assert "dci_disentanglement" not in arms["mean-image"]
        assert set(seed["ratios"]) == {"mse", "ssim", "step_time", "mse_equal_time"}
    for arm in ARMS:
        assert "heldout_mse" in figures["summary"][arm]
    for arm in ("lbo-vae", "beta-vae", EQUAL_TIME):
        assert set(SPLIT) <= set(figures["summary"][arm]), arm
    assert set(figures["ratios"]) == {"mse", "ssim", "step_time", "mse_equal_time"}


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
    goals = re.findall(r"^(PASS|MISS)  (\d+)\. ", out, flags=re.MULTILINE)
    assert [int(n) for _, n in goals] == list(range(1, 10)), out
    assert re.search(r"^(PASS|MISS)  4\. DCI disentanglement at least the beta-VAE's", out, re.M)
    assert re.search(r"^(PASS|MISS)  5\. the core half's share .* structure on core", out, re.M)
    assert re.search(r"^(PASS|MISS)  6\. an LBO-VAE step at most 4x", out, re.M)
    assert [g == "PASS" for g, _ in goals] == [c["passed"] for c in figures["goals"]]
    text = md.read_text(encoding="utf-8")
    assert f"Command: `{figures['command']}`" in text
    assert "--quick" in figures["command"]
    assert f"Machine: {figures['machine']['processor']}" in text
    assert f"| | lbo-vae | beta-vae | {EQUAL_TIME} | mean-image |" in text
    assert re.search(r"^- (PASS|MISS)  1\. ", text, flags=re.MULTILINE)
