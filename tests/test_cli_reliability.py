"""``lbo-vae train``'s smaller failures: each says what is wrong, by its flag, file or key.

- a ``--resume`` file that cannot be read (empty, truncated, not a
  checkpoint) says why, on one line, naming the file;
- a ``--resume`` with ``--epochs`` below the epochs the checkpoint has done
  is refused naming ``--epochs``; equal to them, the run is complete: one line
  says there is nothing to train, and the exit status is 0;
- a KL target at or under the KL floor is refused by the settings' own check,
  naming ``kl_target`` (or the ``kl_table`` entry), the value and the floor;
- ``--heldout N`` sets the held-out split, and a folder too small for the
  split is an error that names ``--heldout``, the images found and how many
  the split needs.

The runs are `TINY_TOML`'s: two steps an epoch on 16-pixel images.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

from cli_runs import no_plots, quiet, trained_run, work_copy  # noqa: E402
from test_fault_matrix_cli import TINY_TOML, files  # noqa: E402

from constraint_sched.adapters.lbo_vae import _plots  # noqa: E402
from constraint_sched.adapters.lbo_vae._cli import main  # noqa: E402
from constraint_sched.adapters.lbo_vae._config import TrainConfig, load_config  # noqa: E402
from constraint_sched.adapters.lbo_vae._train import CHECKPOINT, METRICS, Run  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``tiny.toml`` and ``run/``, a 2-epoch run of it."""
    return trained_run(tmp_path_factory, epochs=2)


@pytest.fixture
def work(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of `trained` to change, where ``lbo-vae train`` draws no plots."""
    return work_copy(trained, tmp_path, monkeypatch)


def train(config: Path, *options: str) -> int:
    return main(["train", "--config", str(config), "--no-progress", "--device", "cpu", *options])


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a refused command printed: ``lbo-vae: error: ...`` and nothing else."""
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err  # one line: no traceback, no torch advice
    assert lines[0].startswith("lbo-vae: error: ")
    return lines[0]


# -- --resume of a file that cannot be read ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "cut", "reason"),
    [
        pytest.param("empty.pt", 0, "the file is empty (0 bytes)", id="empty"),
        pytest.param("truncated.pt", 100, "truncated or corrupted", id="truncated"),
        pytest.param("garbage.pt", None, "not a torch checkpoint", id="garbage"),
    ],
)
def test_a_resume_file_that_cannot_be_read_says_why(
    work: Path, name: str, cut: int | None, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = work / "run"
    data = (run / CHECKPOINT).read_bytes()
    broken = work / name
    broken.write_bytes(b"garbage, not a checkpoint\n" if cut is None else data[:cut])
    before = files(work)
    assert train(work / "tiny.toml", "--out", str(run), "--resume", str(broken)) == 2
    line = one_error_line(capsys)
    assert f"checkpoint {str(broken)!r}" in line
    assert "cannot be read: " in line
    assert reason in line
    assert not line.rstrip().endswith("cannot be read:")  # a reason follows
    assert files(work) == before


def test_run_load_of_an_empty_file_says_it_is_empty(work: Path) -> None:
    (work / "empty.pt").write_bytes(b"")
    config = load_config(work / "tiny.toml").replace(epochs=3, device="cpu")
    run = Run(config, work / "fresh", progress=False, print_=quiet)
    with pytest.raises(ValueError, match=r"'.*empty\.pt' cannot be read: the file is empty"):
        run.load(work / "empty.pt")
    assert not (work / "fresh").exists()


# -- --resume with --epochs at or below the epochs done ----------------------------------


def test_resume_with_epochs_below_those_done_is_refused_naming_epochs(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = work / "run"
    before = files(work)
    code = train(work / "tiny.toml", "--out", str(run), "--resume", str(run / CHECKPOINT),
                 "--epochs", "1")  # fmt: skip
    assert code == 2
    line = one_error_line(capsys)
    for words in ("--epochs 1", "the 2 epochs", f"{str(run / CHECKPOINT)!r}",
                  "pass --epochs greater than 2", "--epochs 3 trains one more"):  # fmt: skip
        assert words in line
    assert files(work) == before  # nothing written, the metrics not rewritten


def test_epochs_of_the_config_file_below_those_done_name_the_file(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (work / "one.toml").write_text(TINY_TOML + "epochs = 1\n")
    run = work / "run"
    assert train(work / "one.toml", "--out", str(run), "--resume", str(run / CHECKPOINT)) == 2
    line = one_error_line(capsys)
    assert f"epochs = 1 of --config {work / 'one.toml'} (no --epochs given)" in line
    assert "pass --epochs greater than 2" in line


def test_resume_with_epochs_equal_to_those_done_says_there_is_nothing_to_train(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = work / "run"
    before = files(work)
    code = train(work / "tiny.toml", "--out", str(run), "--resume", str(run / CHECKPOINT),
                 "--epochs", "2")  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.splitlines() == [
        f"lbo-vae: nothing to train: checkpoint {str(run / CHECKPOINT)!r} has done 2 epochs, "
        "all that --epochs 2 asks for; pass --epochs greater than 2 to train more"
    ]
    assert files(work) == before
    # One more epoch still trains on.
    code = train(work / "tiny.toml", "--out", str(run), "--resume", str(run / CHECKPOINT),
                 "--epochs", "3")  # fmt: skip
    assert code == 0
    assert "resumed from" in capsys.readouterr().out
    assert len((run / METRICS).read_text().splitlines()) == 3


# -- a KL target under the floor -----------------------------------------------------------


def test_a_kl_target_under_the_floor_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"TrainConfig.kl_target must be above the KL floor "
                       r"kl_lower = 1.0, got 0.5"):  # fmt: skip
        TrainConfig(kl_target=0.5)
    with pytest.raises(ValueError, match=r"TrainConfig.kl_target .* kl_lower = 1.0, got 1.0"):
        TrainConfig(kl_target=1.0)  # at the floor: no room either
    with pytest.raises(ValueError, match=r"TrainConfig.kl_table\[4\] .* kl_lower = 1.0, got 0.5"):
        TrainConfig(kl_table={3: 5.0, 4: 0.5})
    # With a table the target is not used: only the table's ceilings are checked.
    assert TrainConfig(kl_table={3: 5.0}, kl_target=0.5).kl_table == {3: 5.0}


@pytest.mark.parametrize(
    ("line", "words"),
    [
        pytest.param("kl_target = 0.01", ("TrainConfig.kl_target", "0.01", "kl_lower = 0.05"),
                     id="below"),
        pytest.param("kl_target = 0.05", ("TrainConfig.kl_target", "got 0.05", "kl_lower = 0.05"),
                     id="at"),
        # Just above the floor, inside the scheduler's least gap: still named by its key.
        pytest.param("kl_target = 0.050000001", ("TrainConfig.kl_target=0.050000001",
                                                 "kl_lower=0.05"), id="inside-the-gap"),
    ],
)  # fmt: skip
def test_the_command_line_names_kl_target_not_the_schedulers_internals(
    tmp_path: Path, line: str, words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "low.toml"
    config.write_text(TINY_TOML.replace("kl_target = 0.25", line))
    assert train(config, "--out", str(tmp_path / "out")) == 2
    error = one_error_line(capsys)
    for word in words:
        assert word in error
    assert not error.startswith("lbo-vae: error: ConstraintScheduler")
    assert not (tmp_path / "out").exists()


# -- --heldout -------------------------------------------------------------------------------


@pytest.fixture
def pictures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of 40 small PNG images, and plots off."""
    pytest.importorskip("PIL")
    from PIL import Image

    monkeypatch.setattr(_plots, "draw", no_plots)
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(40):
        colour = (6 * i, 255 - 6 * i, (37 * i) % 256)
        Image.new("RGB", (20, 20), colour).save(folder / f"{i:02d}.png")
    (tmp_path / "tiny.toml").write_text(TINY_TOML.replace("heldout = 64\n", ""))
    return folder


def test_a_folder_too_small_for_the_heldout_split_names_the_flag_and_the_numbers(
    pictures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, out = pictures.parent / "tiny.toml", pictures.parent / "out"
    assert train(config, "--data", str(pictures), "--out", str(out)) == 2  # the default 512
    line = one_error_line(capsys)
    for words in ("40 images", f"{str(pictures)!r}", "--heldout 512", "--batch-size 32",
                  "at least 544 images", "pass --heldout 8 or less"):  # fmt: skip
        assert words in line
    assert not out.exists()


def test_heldout_sets_the_split_and_a_small_folder_trains(
    pictures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, out = pictures.parent / "tiny.toml", pictures.parent / "out"
    assert train(config, "--data", str(pictures), "--out", str(out), "--heldout", "8",
                 "--epochs", "1") == 0  # fmt: skip
    assert "(32 images of 16px)" in capsys.readouterr().out  # 40 found, 8 held out
    state = torch.load(out / CHECKPOINT, weights_only=True)
    assert state["config"]["heldout"] == 8


@pytest.mark.parametrize("value", ["0", "-3"])
def test_heldout_below_one_is_refused_naming_the_flag(
    tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    assert train(config, "--out", str(tmp_path / "out"), "--heldout", value) == 2
    line = one_error_line(capsys)
    assert "--heldout must be 1 or more" in line
    assert line.endswith(f"got {value}")
    assert not (tmp_path / "out").exists()


def test_heldout_is_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--heldout N" in capsys.readouterr().out
