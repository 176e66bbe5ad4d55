"""``lbo-vae train``'s output folder: what it may train into, and what a refused run leaves.

The mistakes themselves (each a one-line error that changes nothing) are the
rows of test_fault_matrix_cli.py; here are the runs that go ahead: a folder
holding a run is replaced with ``--overwrite`` and continued with
``--resume``, a folder holding no run is trained into as it is. And `Run`,
the Python API, writes nothing until a run starts or a checkpoint has been
read whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

from cli_runs import quiet, trained_run, work_copy  # noqa: E402
from test_fault_matrix_cli import files  # noqa: E402

from constraint_sched.adapters.lbo_vae import _cli  # noqa: E402
from constraint_sched.adapters.lbo_vae._config import load_config  # noqa: E402
from constraint_sched.adapters.lbo_vae._train import CHECKPOINT, METRICS, Run  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``tiny.toml`` and ``run/``, a 1-epoch run of it."""
    return trained_run(tmp_path_factory, epochs=1)


@pytest.fixture
def work(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of `trained` to change, where ``lbo-vae train`` draws no plots."""
    return work_copy(trained, tmp_path, monkeypatch)


def train(work: Path, *options: str) -> int:
    config = str(work / "tiny.toml")
    return _cli.main(["train", "--config", config, "--no-progress", "--device", "cpu", *options])


def epochs(out: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (out / METRICS).read_text().splitlines()]


def test_overwrite_replaces_the_run_a_folder_holds(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = work / "run"
    (run / "notes.txt").write_text("mine\n")
    assert train(work, "--out", str(run), "--epochs", "1") == 2  # refused (the matrix's row)
    assert "--overwrite" in capsys.readouterr().err
    assert train(work, "--out", str(run), "--epochs", "1", "--seed", "1", "--overwrite") == 0
    assert epochs(run) == [1]
    assert torch.load(run / CHECKPOINT, weights_only=True)["config"]["seed"] == 1  # the new run
    assert (run / "notes.txt").read_text() == "mine\n"


@pytest.mark.parametrize("others", [(), ("notes.txt", "images/a.png")], ids=["empty", "others"])
def test_a_folder_that_holds_no_run_is_trained_into(work: Path, others: tuple[str, ...]) -> None:
    out = work / "out"
    out.mkdir()
    for name in others:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(name)
    assert train(work, "--out", str(out), "--epochs", "1") == 0
    assert epochs(out) == [1]
    assert all((out / name).read_text() == name for name in others)


def test_resume_continues_the_run_in_its_own_folder(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = work / "run"
    assert train(work, "--out", str(run), "--resume", str(run / CHECKPOINT), "--epochs", "2") == 0
    assert f"resumed from {run / CHECKPOINT} at epoch 2" in capsys.readouterr().out
    assert epochs(run) == [1, 2]


def test_run_writes_nothing_until_a_checkpoint_is_read_whole(work: Path) -> None:
    run = work / "run"
    config = load_config(work / "tiny.toml").replace(epochs=2, device="cpu")
    data = (run / CHECKPOINT).read_bytes()
    (work / "truncated.pt").write_bytes(data[: len(data) // 3])
    before = files(run)
    with pytest.raises(ValueError, match="cannot be read"):
        Run(config, run, progress=False, print_=quiet).load(work / "truncated.pt")
    assert files(run) == before  # metrics.jsonl was not emptied
    fresh = work / "fresh"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Run(config, fresh, progress=False, print_=quiet).load(work / "typo.pt")
    assert not fresh.exists()
    resumed = Run(config, fresh, progress=False, print_=quiet)
    assert not fresh.exists()  # made, not yet started
    resumed.load(run / CHECKPOINT)  # read whole: now the folder and its metrics
    assert epochs(fresh) == [1]
    assert files(run) == before


def test_run_refuses_a_file_as_its_folder(work: Path) -> None:
    config = load_config(work / "tiny.toml").replace(device="cpu")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        Run(config, work / "tiny.toml", progress=False, print_=quiet)


def test_a_bug_is_a_traceback_not_an_error_line(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> int:
        raise TypeError("a bug, not a mistake of the user's")

    monkeypatch.setattr(_cli, "_train_run", broken)
    with pytest.raises(TypeError, match="a bug"):
        train(work, "--out", str(work / "out"))
