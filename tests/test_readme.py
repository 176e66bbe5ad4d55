"""The README's promises: its example runs, and CI runs exactly its test command."""

from __future__ import annotations

import importlib.util
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


@pytest.mark.parametrize(
    "table", ["term_scale_summary.md", "term_scale_settle.md", "shape_probe.md"]
)
def test_the_readme_shows_the_scale_benchmark_tables_as_written(table: str) -> None:
    """One source: the README's tables are the ones the benchmark last wrote (rerun, then copy)."""
    path = ROOT / "benchmarks" / "results" / table
    if not path.is_file():
        pytest.skip(f"benchmarks/results/{table} is not in this tree")
    assert path.read_text(encoding="utf-8").strip() in README.read_text(encoding="utf-8")


def _figures() -> dict[str, str]:
    """The figures the benchmarks' results give, as docs/_ext/results.py reads them."""
    path = ROOT / "docs" / "_ext" / "results.py"
    if not path.is_file() or not (ROOT / "benchmarks" / "results").is_dir():
        pytest.skip("docs/_ext/results.py or benchmarks/results/ is not in this tree")
    spec = importlib.util.spec_from_file_location("docs_results", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.figures()  # type: ignore[no-any-return]


def _flat(text: str) -> str:
    """Whitespace collapsed and bold markers removed: text as it reads, wherever it wraps."""
    return " ".join(text.replace("**", "").split())


# What the README says with each figure; {name} is a figure of docs/_ext/results.py.
README_FIGURES = (
    # The default run (the lr sweep's run at lr 3e-3) and the trainer against a beta-VAE.
    "({trainer.minutes} minutes of training, the rest the install and the plots)",
    "2-core Xeon CPU, {trainer.minutes} minutes of training)",
    "(predicting the mean image scores an MSE of {trainer.mean_mse})",
    "held-out MSE is {trainer_quality.mse_ratio} the beta-VAE's on the mean"
    " ({trainer_quality.mse_ratios} per seed",
    "has {trainer_quality.max_over} over the ceiling in any epoch",
    "their own shape is {trainer_quality.shape} (1 is perfect, a round blob about 0.5,",
    "A step costs about {trainer_quality.step_ratio} a beta-VAE step"
    " ({trainer_quality.seconds} of training;",
    "DCI disentanglement {trainer_quality.dci}, structure on the core half"
    " {trainer_quality.split_structure}, appearance on the detail half"
    " {trainer_quality.split_appearance}",
    "a beta-VAE takes {trainer_quality.equal_time_steps} steps and reaches a held-out MSE of"
    " {trainer_quality.equal_time_mse}, {trainer_quality.equal_time_ratio} better",
    # The learning-rate sweep.
    "tuned to the 1e-3 run ({lr_sweep.fixed_ceiling}, what that run discovers)",
    "about {lr_sweep.minutes} minutes a run",
    "(held-out MSE {lr_sweep.tuned_mse})",
    "{lr_sweep.mse_ratio} the discovered arm's MSE",
    "epoch 1's KL reaches {lr_sweep.epoch1_ratio} it ({lr_sweep.epoch1})",
    # The term at any loss scale.
    "scores an MSE {term_scale.mean_patch_ratio} times the model's",
    "keeps rising after discovery ({term_scale.rise_c})",
    "about {term_scale.minutes} minutes on a 2-core AMD EPYC; the whole report",
    # The peers.
    "augmented Lagrangian, tuned or not, on {peers.over.lagrangian} of their steps",
    "compares {peers.arms} ways of holding a VAE's KL",
    "{peers.steps} steps, {peers.seeds} seeds, targets {peers.targets} of the KL",
    "tuned with {peers.trials} runs each",
    "about {peers.minutes} minutes on a 2-core AMD EPYC. The whole",
    "({peers.over.chance}); zero tuning runs",
    "(`chance` costs {peers.cost.chance}, measured in the same run; cooper {peers.cost.cooper},"
    " the LBO barrier {peers.cost.lbo})",
    "({peers.chance.mse_gap.t20}, {peers.chance.mse_gap.t45}), exactly at the edge at 70%"
    " ({peers.chance.mse_gap.t70})",
    "final KL within 2% of T ({peers.chance.kl_error.t20}, {peers.chance.kl_error.t45},"
    " {peers.chance.kl_error.t70})",
    "steps over it fell to {peers.over.chance}",
    "aimed at 0.95 T end {peers.under.aimed} under T too, and are still over their bound on"
    " {peers.over.aimed} of their steps",
)


def _fill(template: str, figures: dict[str, str]) -> str:
    return re.sub(r"\{([\w.]+)\}", lambda m: figures[m.group(1)], template)


@pytest.mark.parametrize("template", README_FIGURES)
def test_a_readme_figure_is_the_results_files(template: str) -> None:
    """One source: each benchmark figure in the README is what benchmarks/results/ holds."""
    expected = _flat(_fill(template, _figures()))
    assert expected in _flat(README.read_text(encoding="utf-8")), (
        f"README.md does not say {expected!r} (from benchmarks/results/, through "
        "docs/_ext/results.py): rerun the benchmark or correct the README"
    )


@pytest.mark.parametrize(
    "table", ["table.trainer_default", "table.trainer_quality", "table.lr_sweep", "table.peers"]
)
def test_a_readme_table_is_the_results_files(table: str) -> None:
    """Every row of the README's benchmark tables, computed from the results files."""
    lines = {_flat(line) for line in README.read_text(encoding="utf-8").splitlines()}
    missing = [row for row in _figures()[table].splitlines() if _flat(row) not in lines]
    assert not missing, f"README.md lacks these rows of {table} (from benchmarks/results/):\n" + (
        "\n".join(missing)
    )


def test_the_readme_states_the_core_dependencies_of_pyproject() -> None:
    """The install block's core line names exactly pyproject.toml's dependencies."""
    import docs_installs

    text = README.read_text(encoding="utf-8")
    stated = docs_installs.stated_dependencies(text)
    assert stated, "README.md never lists the core's dependencies"
    expected = docs_installs.core_dependencies()
    wrong = [names for names in stated if sorted(names) != sorted(expected)]
    assert not wrong, f"README.md lists the core's dependencies as {wrong}; pyproject: {expected}"
