"""Smoke test of benchmarks/shape_probe.py: its --quick mode trains every arm and reports it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from benchmark_run import run_quick

REPO_ROOT = Path(__file__).parents[1]
SCRIPT = REPO_ROOT / "benchmarks" / "shape_probe.py"


def test_quick_probe_reports_every_arm_and_size_range(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("constraint_sched.adapters.lbo_vae")
    markdown = str(tmp_path / "probe.md")
    out, figures = run_quick(
        SCRIPT,
        tmp_path,
        "--threads",
        "1",
        "--sizes",
        "0.15,0.3",
        "0.25,0.35",
        "--markdown",
        markdown,
    )
    assert figures["quick"] is True
    assert figures["epochs"] == [1, 2]
    results = figures["results"]
    assert [(r["sizes"], r["arm"]) for r in results] == [
        (sizes, arm)
        for sizes in ([0.15, 0.3], [0.25, 0.35])
        for arm in ("decoder", "encoder", "beta-vae")
    ]
    for r in results:
        assert [row["epoch"] for row in r["rows"]] == [1, 2]
        last = r["rows"][-1]
        if r["arm"] == "encoder":
            assert 0 <= last["shape_accuracy"] <= 1
        else:
            assert 0 < last["heldout_mse"] < 1
            assert 0 <= last["heldout_shape"] <= 1
    table = (tmp_path / "probe.md").read_text(encoding="utf-8")
    assert table.splitlines()[0] == "| sizes | arm | epoch 1 | epoch 2 |"
    assert table.strip() in out
    encoder = next(line for line in table.splitlines() if line.startswith("| 0.25-0.35 | encoder"))
    shown = [cell.strip() for cell in encoder.split("|")[3:5]]
    assert shown == [f"{row['shape_accuracy']:.2f}" for row in results[4]["rows"]]
    decoder = next(line for line in table.splitlines() if line.startswith("| 0.15-0.30 | decoder"))
    last = results[0]["rows"][-1]
    assert f"{last['heldout_shape']:.2f} ({last['heldout_mse']:.4f}) |" in decoder


def test_sizes_that_do_not_fit_are_an_error_naming_the_option(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--sizes", "0.2,0.5"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "--sizes 0.2,0.5: shapes: sizes must satisfy" in proc.stderr
