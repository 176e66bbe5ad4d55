"""The README's promises: its example runs, and CI runs exactly its test command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"

pytestmark = pytest.mark.skipif(not README.exists(), reason="no README.md beside the tests")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def test_readme_example_runs_and_converges(tmp_path: Path) -> None:
    (example,) = _blocks("python")
    assert len(example.splitlines()) <= 16
    done = subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    last = done.stdout.splitlines()[-1].split()
    assert last[1:3] == ["CONVERGED", "3000"]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    commands = [b.strip() for b in _blocks("bash") if "pytest" in b]
    assert len(commands) == 1
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[0] in ci.splitlines()


def test_main_command_runs_the_walkthrough(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "constraint_sched", "--epochs", "15", "--steps", "100"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = done.stdout
    for expected in ("discovered ceiling", "holding ceiling", "squeezed ceiling 13,000 -> 11,000",
                     "converged, ceiling 3,000", "Final: phase CONVERGED, ceiling 3,000.0"):  # fmt: skip
        assert expected in out


@pytest.mark.parametrize("table", ["term_scale_summary.md", "term_scale_settle.md"])
def test_the_readme_shows_the_scale_benchmark_tables_as_written(table: str) -> None:
    """One source: the README's tables are the ones the benchmark last wrote (rerun, then copy)."""
    path = ROOT / "benchmarks" / "results" / table
    if not path.is_file():
        pytest.skip(f"benchmarks/results/{table} is not in this tree")
    assert path.read_text(encoding="utf-8").strip() in README.read_text(encoding="utf-8")
