"""Smoke test of benchmarks/trainer_profile.py: --quick runs, reports every part, and adds up."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from benchmark_run import run_quick

REPO_ROOT = Path(__file__).parents[1]
SCRIPT = REPO_ROOT / "benchmarks" / "trainer_profile.py"


@pytest.fixture(scope="module")
def profile_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], str]:
    if not SCRIPT.is_file():
        pytest.skip("benchmarks/trainer_profile.py is not in this tree")
    pytest.importorskip("torch")
    pytest.importorskip("constraint_sched.adapters.lbo_vae")
    workdir = tmp_path_factory.mktemp("trainer-profile")
    md = workdir / "profile.md"
    # One thread: on a shared CPU, torch's threads wait for each other at every operator.
    out, figures = run_quick(SCRIPT, workdir, "--threads", "1", "--md", str(md))
    return out, figures, md.read_text(encoding="utf-8")


def _script() -> Any:
    """The script as a module, for its table of parts."""
    spec = importlib.util.spec_from_file_location("trainer_profile", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SCRIPT.parent))  # its `import _machine`
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


def test_header_names_the_machine_and_the_mode(profile_run: tuple[str, dict, str]) -> None:
    out, figures, _ = profile_run
    assert f"torch {figures['machine']['torch']}" in out
    assert "machine:" in out
    assert "--quick" in out
    assert figures["quick"] is True
    assert [run["threads"] for run in figures["runs"]] == [1]


def test_every_part_is_reported(profile_run: tuple[str, dict, str]) -> None:
    out, figures, md = profile_run
    script = _script()
    run = figures["runs"][0]
    assert run["skipped_wrappers"] == [], "a part of the step was not wrapped"
    expected = []
    for phase, part in script.ROWS:
        if (phase, part) == (script.UPDATE, script.BACKWARD):
            expected += [(phase, name) for name in script.BACKWARD_THROUGH.values()]
        else:
            expected.append((phase, part))
    assert [(row["phase"], row["part"]) for row in run["parts"]] == expected
    for row in run["parts"]:
        name = re.escape(("~ " if row["estimated"] else "") + row["part"])
        cells = rf"\| {name} \| [\d.]+ \| [\d.]+% \| [\d.]+x \|"
        assert re.search(cells, out), f"no table row for {row['part']!r}:\n{out}"
        assert re.search(cells, md), f"the Markdown lacks {row['part']!r}"
    for phase in script.PHASES:
        assert f"| phase: {phase} |" in out
    assert set(run["goal_groups"]) == {
        "recon", "core", "swap", "realism", "disentangle", "kl", "latent", "health",
    }  # fmt: skip
    assert len(run["goals_ms"]) == run["goals"]


def test_the_parts_add_up_to_the_step(profile_run: tuple[str, dict, str]) -> None:
    out, figures, _ = profile_run
    run = figures["runs"][0]
    parts = run["parts"]
    # each part's own time: none is counted twice, so none is negative
    assert all(row["ms"] >= 0 for row in parts), parts
    assert run["parts_sum_ms"] == pytest.approx(sum(row["ms"] for row in parts))
    assert run["parts_sum_ms"] == pytest.approx(run["step_ms"], rel=0.1)
    assert sum(row["share"] for row in parts) == pytest.approx(1.0, abs=0.1)
    for row in parts:
        assert row["x_plain"] == pytest.approx(row["ms"] / run["plain_step_ms"])
    assert sum(run["phases_ms"].values()) == pytest.approx(run["parts_sum_ms"])
    split = run["backward_split"]["shares"]
    assert sum(split.values()) == pytest.approx(1.0)
    backward = sum(row["ms"] for row in parts if row["estimated"])
    assert backward == pytest.approx(run["backward_ms"])
    total = re.search(r"\| \*\*step\*\* \| \*\*sum of the parts\*\* \| \*\*([\d.]+)\*\*", out)
    assert total, out
    assert float(total.group(1)) == pytest.approx(run["parts_sum_ms"], abs=0.06)


def test_the_step_is_compared_with_a_plain_step(profile_run: tuple[str, dict, str]) -> None:
    out, figures, md = profile_run
    run = figures["runs"][0]
    assert run["plain_step_ms"] > 0
    assert run["ratio_bare_over_plain"] == pytest.approx(run["bare_step_ms"] / run["plain_step_ms"])
    line = re.search(r"a step \(no timers\) is ([\d.]+)x a plain beta-VAE step", out)
    assert line, out
    assert float(line.group(1)) == pytest.approx(run["ratio_bare_over_plain"], abs=0.006)
    assert sum(run["plain_parts_ms"].values()) == pytest.approx(run["plain_step_ms"], rel=0.1)
    assert md.startswith("Command: `python benchmarks/trainer_profile.py --quick")


def test_the_bottleneck_alone_has_the_same_gradient(profile_run: tuple[str, dict, str]) -> None:
    _, figures, _ = profile_run
    zeros = figures["runs"][0]["zero_gradient_backward"]
    assert zeros["reps"] == len(zeros["bottlenecks"]) >= 1
    assert zeros["max_grad_diff"] <= 1e-6
    assert zeros["full_ms"] > 0
    assert zeros["bottleneck_ms"] > 0
