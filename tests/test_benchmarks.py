"""Smoke test of the observe() overhead benchmark: it runs and reports; no timing is judged."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).parents[1]
SCRIPT = REPO_ROOT / "benchmarks" / "observe_overhead.py"
CASES = ("one spec, max", "two shared specs, max", "one spec, median")

pytestmark = pytest.mark.skipif(
    not SCRIPT.is_file(), reason="benchmarks/observe_overhead.py is not in this tree"
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    workdir = tmp_path_factory.mktemp("bench")
    figures = workdir / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(figures)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout, json.loads(figures.read_text(encoding="utf-8"))


def test_header_names_the_versions_and_machine(quick_run: tuple[str, dict]) -> None:
    out, _ = quick_run
    assert "numpy" in out
    assert "machine:" in out
    assert "CPUs" in out


@pytest.mark.parametrize("case", CASES)
def test_prints_a_ratio_line_per_case(quick_run: tuple[str, dict], case: str) -> None:
    out, _ = quick_run
    assert "ratio (baseline / ours)" in out
    timing = r"[\d.]+ \[\s*[\d.]+\]"
    row = re.compile(rf"^\s*{re.escape(case)}\s+{timing}\s+{timing}\s+[\d.]+x")
    assert any(row.match(line) for line in out.splitlines()), out


def test_prints_memory_lines(quick_run: tuple[str, dict]) -> None:
    out, figures = quick_run
    assert "Peak memory" in out
    sizes = figures["settings"]["memory_sizes"]
    assert len(sizes) == 2
    assert sizes[0] < sizes[1]
    for case in ("one spec, max", "one spec, median"):
        for n in sizes:
            row = re.compile(rf"^\s*{re.escape(case)}\s+{n}\s+[\d.]+ (B|KiB|MiB) \[")
            assert any(row.match(line) for line in out.splitlines()), out
        growth = f"memory growth, {case}, {sizes[0]} -> {sizes[1]} observations"
        assert growth in out


def test_json_holds_the_figures(quick_run: tuple[str, dict]) -> None:
    _, figures = quick_run
    assert [r["case"] for r in figures["timing"]] == list(CASES)
    for record in figures["timing"]:
        for side in ("baseline", "ours"):
            assert record[side]["best_ns"] > 0
            assert record[side]["median_ns"] >= record[side]["best_ns"]
        assert record["ratio_best"] > 0
    assert {"python", "numpy", "processor", "cpu_count"} <= set(figures["machine"])
    for record in figures["memory"]:
        assert record["baseline_peak_bytes"] > 0
        assert record["ours_peak_bytes"] > 0
