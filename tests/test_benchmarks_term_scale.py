"""Smoke tests of the scale benchmark: its --quick mode on the MLP cases, and the conv case's parts."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest
from benchmark_run import run_quick

REPO_ROOT = Path(__file__).parents[1]
BENCHMARKS = REPO_ROOT / "benchmarks"
SCRIPT = BENCHMARKS / "term_scale.py"
SCALINGS = ("sum x1e-3", "sum x1", "sum x1e3", "pixel x1e-3", "pixel x1", "pixel x1e3")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, Path]:
    """Run ``term_scale.py --quick`` on cases (a) and (c) once (the conv case is minutes)."""
    if not SCRIPT.is_file():
        pytest.skip("benchmarks/term_scale.py is not in this tree")
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    workdir = tmp_path_factory.mktemp("term_scale")
    md = workdir / "scale.md"
    args = ("--cases", "a,c", "--trials", "1", "--jobs", "1", "--threads", "1", "--md", str(md))
    out, figures = run_quick(SCRIPT, workdir, *args)
    return out, figures, md


def test_every_scaling_and_case_runs_with_finite_figures(quick_run: tuple[str, dict, Path]) -> None:
    _, figures, _ = quick_run
    assert figures["quick"] is True
    assert set(figures["summary"]) == {f"a {s}" for s in SCALINGS} | {"c sum x1"}
    for row in figures["summary"].values():
        assert math.isfinite(row["test_kl"]["mean"])
        assert row["test_kl"]["mean"] > 0
        assert 0 <= row["max_share"] <= 1
        assert math.isfinite(row["mse_gap"])
    terms = [r for r in figures["runs"] if r["kind"] == "term"]
    # The term discovers at weight 0: every scaling's discovery sees the same first epoch.
    assert all(r["discovered"] == pytest.approx(r["round1_max_kl"]) for r in terms)
    assert {r["alpha"] for r in terms} == {0.05, 0.5}


def test_the_weight_scales_with_main_and_the_kl_does_not(quick_run: tuple[str, dict, Path]) -> None:
    """The six forms of ``main`` give weights in proportion to their factor, the same KL."""
    _, figures, _ = quick_run
    runs = {
        r["scaling"]: r
        for r in figures["runs"]
        if r["kind"] == "term" and r["case"] == "a" and r["alpha"] == 0.05
    }
    base = runs["sum x1"]
    for scaling, factor in (("sum x1e3", 1e3), ("pixel x1", 1 / 64), ("pixel x1e3", 1e3 / 64)):
        assert runs[scaling]["weight"] == pytest.approx(factor * base["weight"], rel=0.1)
        assert runs[scaling]["test_kl"] == pytest.approx(base["test_kl"], rel=0.05)


def test_the_reports_hold_the_goals_and_the_tables_the_docs_include(
    quick_run: tuple[str, dict, Path],
) -> None:
    out, figures, md = quick_run
    text = md.read_text(encoding="utf-8")
    assert "(`--quick`: a smoke test, not a result)" in text
    assert "| **overall** |" in text
    assert "## Where the KL settles" in text
    settle = md.with_name("scale_settle.md").read_text(encoding="utf-8")
    summary = md.with_name("scale_summary.md").read_text(encoding="utf-8")
    assert settle.startswith("| case | T | alpha |")
    assert "| (a) scale | 8 | 0.05 |" in settle
    assert "| (a) scale | 8 | 0.5 |" in settle
    assert summary.startswith("| case | rise of the free KL")
    assert "(a) scale, 6 scalings" in summary
    assert "total" in out
    assert set(figures["goals"]) == set(figures["summary"])


def test_the_conv_case_cuts_patches_and_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    """Case (b)'s data and model, on a few steps (the full case takes minutes)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("skimage")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    patches = importlib.import_module("_patches")
    data = patches.load_patches()
    assert tuple(data.train.shape[1:]) == tuple(data.test.shape[1:]) == (3, 32, 32)
    assert len(data.train) > 20 * len(data.test) > 0
    assert float(data.train.min()) >= -1.0
    assert float(data.train.max()) <= 1.0
    torch.manual_seed(0)
    model = patches.ConvVAE()
    recon, kl = model(data.train[:8])
    assert tuple(recon.shape) == (8, 3, 32, 32)
    assert tuple(kl.shape) == (8,)
    figures = patches.evaluate(model, data.test[:16])
    assert all(math.isfinite(v) and v >= 0 for v in figures.values())
    assert patches.mean_image_mse(data) > 0
    sys.modules.pop("_patches", None)
