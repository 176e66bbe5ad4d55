"""The LBO-VAE run's plots: drawn after training, redrawn from a run folder by `lbo-vae report`."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from constraint_sched.adapters.lbo_vae._cli import main  # noqa: E402
from constraint_sched.adapters.lbo_vae._config import TrainConfig  # noqa: E402
from constraint_sched.adapters.lbo_vae._plots import (  # noqa: E402
    METRIC_PLOTS,
    MODEL_PLOTS,
    draw,
)
from constraint_sched.adapters.lbo_vae._train import CHECKPOINT, METRICS, Run  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
ALL = (*METRIC_PLOTS, *MODEL_PLOTS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path]:
    """A tiny 2-epoch run (discovery, then hold), trained once for the module."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        epochs=2, images=128, heldout=64, batch_size=32, calibration_steps=2, device="cpu",
        kl_lower=0.1, kl_healthy=0.5, kl_target=1.0,
    )  # fmt: skip
    run = Run(config, out, progress=False, print_=lambda s: None)
    run.train()
    return run, out


def _copy(out: Path, dest: Path, *names: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(out / name, dest / name)
    return dest


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, after checking its signature and its IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG, f"{path.name} is not a PNG"
    assert head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _check(paths: list[Path], folder: Path, names: tuple[str, ...]) -> None:
    assert [p.name for p in paths] == list(names)
    for path in paths:
        assert path.parent == folder
        assert path.is_file()
        width, height = _png_size(path)
        assert width >= 300, (path.name, width)
        assert height >= 200, (path.name, height)
        assert path.stat().st_size > 5_000, path.name  # drawn, not blank


def test_draw_with_the_run_writes_all_six(trained: tuple[Run, Path], tmp_path: Path) -> None:
    run, out = trained
    folder = _copy(out, tmp_path / "with-run", METRICS)
    before = (out / METRICS).read_text()
    paths = draw(folder, run=run)
    _check(paths, folder, ALL)
    assert (out / METRICS).read_text() == before


def test_draw_into_the_run_folder(trained: tuple[Run, Path]) -> None:
    run, out = trained
    metrics = (out / METRICS).read_text()
    _check(draw(out, run=run), out, ALL)
    assert (out / METRICS).read_text() == metrics  # drawing never touches the metrics


def test_draw_rebuilds_the_model_from_the_checkpoint(
    trained: tuple[Run, Path], tmp_path: Path
) -> None:
    _, out = trained
    folder = _copy(out, tmp_path / "from-checkpoint", METRICS, CHECKPOINT)
    metrics = (folder / METRICS).read_text()
    paths = draw(str(folder))
    _check(paths, folder, ALL)
    # rebuilding does not go through Run, which would truncate metrics.jsonl
    assert (folder / METRICS).read_text() == metrics
    assert len(metrics.splitlines()) == 2


def test_the_rebuilt_model_is_the_trained_one(trained: tuple[Run, Path]) -> None:
    from constraint_sched.adapters.lbo_vae._plots import _read_checkpoint, _rebuild

    run, out = trained
    state = _read_checkpoint(out / CHECKPOINT)
    rebuilt = _rebuild(state, TrainConfig(**state["config"]), out / CHECKPOINT)
    assert rebuilt is not None
    vae, data = rebuilt
    assert torch.equal(data.images, run.heldout.images)  # the plots show held-out images
    x = run.data.images[:8]
    with torch.no_grad():
        assert torch.allclose(vae.encode(x)[0], run.vae.encode(x.to(run.device))[0].cpu())


def test_only_metrics_draws_the_three_metric_plots(
    trained: tuple[Run, Path], tmp_path: Path
) -> None:
    _, out = trained
    folder = _copy(out, tmp_path / "metrics-only", METRICS)
    _check(draw(folder), folder, METRIC_PLOTS)
    assert not any((folder / name).exists() for name in MODEL_PLOTS)


def test_no_metrics_is_an_error_naming_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="empty-run") as info:
        draw(tmp_path / "empty-run")
    assert "metrics.jsonl" in str(info.value)
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(FileNotFoundError, match="empty-run"):
        draw(tmp_path / "empty-run")
    assert list((tmp_path / "empty-run").iterdir()) == []


def test_metrics_without_an_epoch_is_an_error(tmp_path: Path) -> None:
    (tmp_path / METRICS).write_text("\n")
    with pytest.raises(ValueError, match="no epoch"):
        draw(tmp_path)


def test_a_foreign_checkpoint_is_an_error(trained: tuple[Run, Path], tmp_path: Path) -> None:
    _, out = trained
    folder = _copy(out, tmp_path / "foreign", METRICS)
    torch.save({"weights": torch.zeros(2)}, folder / CHECKPOINT)
    with pytest.raises(ValueError, match="not an lbo-vae checkpoint"):
        draw(folder)


def test_missing_matplotlib_says_how_to_install_it(
    trained: tuple[Run, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, out = trained
    folder = _copy(out, tmp_path / "no-matplotlib", METRICS)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        draw(folder)
    assert not list(folder.glob("*.png"))


def _rows(*phases: tuple[str, float | None]) -> list[dict[str, Any]]:
    groups = {"recon": 0.9, "latent": 0.5}
    return [
        {
            "epoch": e,
            "kl_phase": phase,
            "kl_ceiling": ceiling,
            "kl_core": 50.0 / e,
            "kl_detail": 20.0 / e,
            "kl_max": 5000.0 / e**3,
            "reject_rate": 0.1 if e == 3 else 0.0,
            "rejects": 1 if e == 3 else 0,
            "steps": 10,
            "min_group": 0.5,
            "loss": 0.7,
            "groups": groups if e > 1 else {"recon": 0.9},
            "bottleneck": {"latent": 10},
            "seconds": 1.0,
            "swap_structure": float("nan"),
            "swap_appearance": float("nan"),
        }
        for e, (phase, ceiling) in enumerate(phases, start=1)
    ]


def test_every_phase_nan_and_a_wide_range_draw(tmp_path: Path) -> None:
    rows = _rows(
        ("DISCOVERY", None),
        ("HOLD", 5000.0),
        ("SQUEEZE", 300.0),
        ("SQUEEZE", 40.0),
        ("CONVERGED", 15.0),
        ("CONVERGED", 15.0),
    )
    (tmp_path / METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    _check(draw(tmp_path), tmp_path, METRIC_PLOTS)


def test_a_single_epoch_draws(tmp_path: Path) -> None:
    (tmp_path / METRICS).write_text(json.dumps(_rows(("DISCOVERY", None))[0]) + "\n")
    _check(draw(tmp_path), tmp_path, METRIC_PLOTS)


def test_the_figures_are_axes_of_their_own(tmp_path: Path) -> None:
    """No pyplot: drawing leaves no figure open in pyplot's registry."""
    rows = _rows(("DISCOVERY", None), ("HOLD", 100.0))
    (tmp_path / METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    draw(tmp_path)
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or pyplot.get_fignums() == []


def test_report_prints_the_table_and_redraws(
    trained: tuple[Run, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = trained
    folder = _copy(out, tmp_path / "report", METRICS, CHECKPOINT)
    assert main(["report", str(folder)]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0].split()[:3] == ["epoch", "KL", "phase"]
    assert lines[1].split()[:3] == ["1", "DISCOVERY", "none"]
    assert lines[2].split()[:2] == ["2", "HOLD"]
    (plots,) = [line for line in lines[3:] if line.startswith("plots: ")]
    for name in ALL:
        assert str(folder / name) in plots
        _png_size(folder / name)


def test_report_on_an_empty_folder_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err
