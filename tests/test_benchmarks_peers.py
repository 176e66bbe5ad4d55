"""Smoke test of the peer benchmark: its --quick mode runs every arm and writes both reports."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from benchmark_run import run_quick

REPO_ROOT = Path(__file__).parents[1]
SCRIPT = REPO_ROOT / "benchmarks" / "peers.py"
SET_POINT = ("capacity", "geco", "cooper", "nupi", "auglag", "pi")
ARMS = ("beta1", "fixed_beta", *(a for p in SET_POINT for a in (p, f"{p}_m")), "lbo", "chance")
METRICS = (
    "test_kl",
    "kl_error",
    "above_bound",
    "above_target_after",
    "max_overshoot",
    "settling_step",
    "test_mse",
    "test_elbo",
    "ms_per_step",
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, str]:
    """Run ``peers.py --quick`` once; its stdout, its JSON and its markdown."""
    if not SCRIPT.is_file():
        pytest.skip("benchmarks/peers.py is not in this tree")
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    pytest.importorskip("cooper")
    workdir = tmp_path_factory.mktemp("peers")
    md = workdir / "peers.md"
    # One thread: on a shared CPU, torch's threads wait for each other at every operator.
    out, figures = run_quick(SCRIPT, workdir, "--threads", "1", "--md", str(md))
    return out, figures, md.read_text(encoding="utf-8")


def test_json_holds_every_arm_with_finite_numbers(quick_run: tuple[str, dict, str]) -> None:
    _, figures, _ = quick_run
    assert figures["quick"] is True
    assert figures["arms"] == list(ARMS)
    assert math.isfinite(figures["beta1_kl"])
    assert figures["beta1_kl"] > 0
    (target,) = figures["target_kls"]
    assert target == pytest.approx(figures["settings"]["targets"][0] * figures["beta1_kl"])
    (rows,) = figures["results"].values()
    assert set(rows) == set(ARMS)
    for arm in ARMS:
        summary = rows[arm]["summary"]
        for name in METRICS:
            for stat in ("mean", "sd"):
                assert math.isfinite(summary[name][stat]), (arm, name, stat)
        assert 0 <= summary["above_bound"]["mean"] <= 1
        assert summary["test_mse"]["mean"] > 0
        seeds = rows[arm]["seeds"]
        assert len(seeds) == figures["settings"]["seeds"]
        assert all(r["steps"] == figures["steps_per_run"] for r in seeds)
        assert math.isfinite(rows[arm]["default"]["test_mse"]["mean"])  # the zero-tuning column
        if arm not in ("beta1", "chance"):
            trials = rows[arm]["trials"]
            assert len(trials) == figures["settings"]["trials"]
            assert sum(t["chosen"] for t in trials) == 1
            assert rows[arm]["hp"] == next(t["hp"] for t in trials if t["chosen"])


def test_markdown_has_the_table_and_the_machine(quick_run: tuple[str, dict, str]) -> None:
    out, figures, md = quick_run
    assert "| arm | hyperparameter | tuning runs | test KL | KL error % |" in md
    for arm in ARMS:
        assert f"| {arm} |" in md or f"| **{arm}** (ours) |" in md
    assert figures["machine"]["processor"] in md
    assert "Command: `python benchmarks/peers.py --quick" in md
    assert "## Reading the table" in md
    assert "Zero tuning (every arm with its default" in md
    assert "Pareto view" in md
    assert set(figures["step_cost"]) >= {"beta1", "chance", "lbo", "nupi", "auglag"}
    assert figures["step_cost"]["beta1"] == 1.0
    assert "(--quick: a smoke test, not a result)" in out
