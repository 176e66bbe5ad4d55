"""Smoke test of the observe() overhead benchmark: it runs and reports; no timing is judged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from benchmark_run import run_quick

REPO_ROOT = Path(__file__).parents[1]
SCRIPT = REPO_ROOT / "benchmarks" / "observe_overhead.py"
CASES = ("one spec, max", "two shared specs, max", "one spec, median")

pytestmark = pytest.mark.skipif(
    not SCRIPT.is_file(), reason="benchmarks/observe_overhead.py is not in this tree"
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    return run_quick(SCRIPT, tmp_path_factory.mktemp("bench"))


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


# --- the PyTorch adapter's benchmark: observe() and RollbackGuard against the original ----------

ADAPTER_SCRIPT = REPO_ROOT / "benchmarks" / "adapter_overhead.py"
ADAPTER_OBSERVE_CASES = (
    "step, discovery epoch",
    "step, later epoch",
    "observe only, discovery",
    "observe only, later",
    "VAE training step",
)
ADAPTER_ROLLBACK_CASES = (
    "snapshot only",
    "snapshot + restore",
    "snapshot + restore_if",
    "snapshot + if flag.item()",
)
TIMING = r"[\d.]+ \[[\d.]+\]"
RATIO = r"[\d.]+x \[[\d.]+x\]"


@pytest.fixture(scope="module")
def adapter_quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    if not ADAPTER_SCRIPT.is_file():
        pytest.skip("benchmarks/adapter_overhead.py is not in this tree")
    pytest.importorskip("torch")
    # One thread: on a shared CPU, torch's threads wait for each other at every operator.
    workdir = tmp_path_factory.mktemp("adapter-bench")
    return run_quick(ADAPTER_SCRIPT, workdir, "--device", "cpu", "--threads", "1")


def test_adapter_header_names_torch_device_and_threads(adapter_quick_run: tuple[str, dict]) -> None:
    out, figures = adapter_quick_run
    assert f"torch {figures['machine']['torch']}" in out
    assert "device: cpu (" in out
    assert "torch threads:" in out
    assert "--quick" in out


@pytest.mark.parametrize("case", ADAPTER_OBSERVE_CASES)
def test_adapter_prints_observe_ratios(adapter_quick_run: tuple[str, dict], case: str) -> None:
    out, _ = adapter_quick_run
    # On the CPU: baseline, ours (auto) and its ratio, ours (device) and its ratio.
    row = re.compile(
        rf"^\s*{re.escape(case)}\s+{TIMING}\s+{TIMING}\s+{RATIO}\s+{TIMING}\s+{RATIO}\s*$"
    )
    assert any(row.match(line) for line in out.splitlines()), out


@pytest.mark.parametrize("case", ADAPTER_ROLLBACK_CASES)
def test_adapter_prints_rollback_ratios(adapter_quick_run: tuple[str, dict], case: str) -> None:
    out, _ = adapter_quick_run
    row = re.compile(rf"^\s*{re.escape(case)}\s+{TIMING}\s+{TIMING}\s+{RATIO}\s*$")
    assert any(row.match(line) for line in out.splitlines()), out
    assert re.search(r"[\d,]+ parameters", out), out


def test_adapter_json_holds_both_ratios(adapter_quick_run: tuple[str, dict]) -> None:
    out, figures = adapter_quick_run
    ratios = figures["ratios"]
    for name in ("observe_step_discovery", "rollback_snapshot_restore"):
        assert ratios[name] > 0
        assert f"{ratios[name]:.2f}x" in out
    observe = {r["case"]: r for r in figures["observe"]["records"]}
    assert set(ADAPTER_OBSERVE_CASES) <= set(observe)
    for case in ADAPTER_OBSERVE_CASES:
        for side in ("baseline", "ours", "ours_device"):
            assert observe[case][side]["best_us"] > 0
        assert observe[case]["ratio_ours"]["best"] > 0
    rollback = figures["rollback"]
    assert [r["case"] for r in rollback["records"]] == list(ADAPTER_ROLLBACK_CASES)
    for record in rollback["records"]:
        assert record["ratio"]["best"] > 0
    assert rollback["parameters"] > 0
    assert figures["machine"]["device"] == "cpu"
    assert {"torch", "device_name", "torch_threads"} <= set(figures["machine"])
