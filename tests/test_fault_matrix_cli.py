"""The fault matrix of ``lbo-vae train``: every mistake is one line, exit 2, and changes nothing.

One row per mistake in a settings file, an option or a ``--resume``
checkpoint: the command line, run in-process, must exit with status 2 and
print one line, ``lbo-vae: error: ...``, that names what is wrong (the key,
the value and the type it needs; the file or folder), never a traceback.
And it must leave every file where it ran byte-identical: a refused
``--resume`` into a folder that holds a run leaves its ``metrics.jsonl``
and checkpoint as they were.

Every row fails before training; the one real checkpoint the resume rows need
is trained once, for one epoch of two steps on 16-pixel images.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, NamedTuple

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

from constraint_sched.adapters.lbo_vae._cli import main  # noqa: E402
from constraint_sched.adapters.lbo_vae._config import load_config  # noqa: E402
from constraint_sched.adapters.lbo_vae._train import CHECKPOINT, Run  # noqa: E402

# Two steps an epoch on 16-pixel images with narrow networks: a second or so.
TINY_TOML = """\
images = 64
heldout = 64
batch_size = 32
calibration_steps = 2
image_size = 16
width = 4
disc_width = 4
kl_lower = 0.05
kl_healthy = 0.2
kl_target = 0.25
"""


class Case(NamedTuple):
    """One row: the options after ``train --config {config}``, the file, what must be said."""

    id: str
    argv: tuple[str, ...]
    words: tuple[str, ...]
    toml: str = TINY_TOML
    code: int = 2


# The paths a row may name: {config} the TOML file, {out} a folder that does not exist,
# {run} a folder holding a trained run, {file} a regular file, {folder} an empty folder;
# {run}/truncated.pt, partial.pt, wrong-kind.pt, old-version.pt are broken checkpoints.
OUT = ("--out", "{out}")
MATRIX = [
    # -- the settings file: types, named with the key, the value and the type it needs
    Case("seed-string", OUT, ("TrainConfig.seed", "'abc'", "(str)", "integer"), 'seed = "abc"'),
    Case("seed-float", OUT, ("TrainConfig.seed", "1.5", "(float)", "integer"), "seed = 1.5"),
    Case("seed-bool", OUT, ("TrainConfig.seed", "True", "(bool)", "integer"), "seed = true"),
    Case("batch-size-float", OUT, ("TrainConfig.batch_size", "32.5", "integer"), "batch_size = 32.5"),
    Case("epochs-float", OUT, ("TrainConfig.epochs", "1.5", "(float)", "integer"), "epochs = 1.5"),
    Case("epochs-whole-float", OUT, ("TrainConfig.epochs", "2.0", "(float)"), "epochs = 2.0"),
    Case("lr-bool", OUT, ("TrainConfig.lr", "True", "(bool)", "number"), "lr = true"),
    Case("lr-string", OUT, ("TrainConfig.lr", "'fast'", "(str)", "number"), 'lr = "fast"'),
    Case("clip-string", OUT, ("TrainConfig.gradient_clip", "'1'", "number"), 'gradient_clip = "1"'),
    Case("hard-ceiling-int", OUT, ("TrainConfig.kl_hard_ceiling", "1", "(int)", "true or false"),
         "kl_hard_ceiling = 1"),
    Case("dataset-int", OUT, ("TrainConfig.dataset", "5", "(int)", "'shapes'"), "dataset = 5"),
    Case("data-int", OUT, ("TrainConfig.data", "5", "(int)", "string"),
         'dataset = "folder"\ndata = 5'),
    Case("kl-table-key", OUT, ("TrainConfig.kl_table", "'x'", "(str)", "epochs"),
         "kl_table = { x = 5.0 }"),
    Case("kl-table-value", OUT, ("TrainConfig.kl_table[3]", "'high'", "(str)", "number"),
         'kl_table = { 3 = "high" }'),
    Case("kl-table-bool", OUT, ("TrainConfig.kl_table[3]", "True", "(bool)"),
         "kl_table = { 3 = true }"),
    Case("kl-table-not-a-table", OUT, ("TrainConfig.kl_table", "[1, 2]", "(list)"),
         "kl_table = [1, 2]"),
    # -- the settings file: its shape
    Case("keys-beside-train", OUT, ("['epochs', 'seed']", "beside the [train] table"),
         "epochs = 3\nseed = 1\n[train]\nlr = 0.01"),
    Case("train-not-a-table", OUT, ("train must be a table", "5", "(int)"), "train = 5"),
    Case("unknown-key", OUT, ("unknown keys ['warp']",), "warp = 9"),
    Case("out-of-range", OUT, ("TrainConfig.epochs must be positive, got -1",), "epochs = -1"),
    Case("not-toml", OUT, ("is not valid TOML",), "epochs = [\n"),
    Case("config-missing", ("--config", "{out}/run.toml", *OUT), ("run.toml", "does not exist")),
    Case("config-is-a-folder", ("--config", "{folder}", *OUT),
         ("'{folder}'", "is a folder, not a TOML file")),
    # -- --out
    Case("out-is-a-file", ("--out", "{file}"), ("--out '{file}' is a file, not a folder",)),
    Case("out-under-a-file", ("--out", "{file}/run"), ("'{file}' is a file, not a folder",)),
    Case("out-holds-a-run", ("--out", "{run}"),
         ("--out '{run}' holds a previous run", "--resume {run}/checkpoint.pt", "--overwrite")),
    Case("resume-and-overwrite", ("--out", "{run}", "--resume", "{run}/checkpoint.pt",
                                  "--overwrite"), ("--resume and --overwrite exclude each other",)),
    # -- --resume: refused whole before --out changes
    Case("resume-missing", ("--out", "{run}", "--resume", "{run}/typo.pt"),
         ("'{run}/typo.pt' does not exist",)),
    Case("resume-a-folder", ("--out", "{run}", "--resume", "{folder}"),
         ("'{folder}' is a folder",)),
    Case("resume-truncated", ("--out", "{run}", "--resume", "{run}/truncated.pt"),
         ("'{run}/truncated.pt' cannot be read",)),
    Case("resume-other-config", ("--out", "{run}", "--resume", "{run}/checkpoint.pt",
                                 "--lr", "0.01"), ("other settings", "lr=0.003 (now 0.01)")),
    Case("resume-missing-keys", ("--out", "{run}", "--resume", "{run}/partial.pt"),
         ("'{run}/partial.pt' lacks", "vae", "rng", "not a whole lbo-vae checkpoint")),
    Case("resume-wrong-kind", ("--out", "{run}", "--resume", "{run}/wrong-kind.pt"),
         ("wrong-kind.pt", "epoch must be of type int, got str")),
    Case("resume-other-version", ("--out", "{run}", "--resume", "{run}/old-version.pt"),
         ("old-version.pt", "version 7", "reads version 1")),
    Case("resume-other-network", ("--out", "{run}", "--resume", "{run}/other-network.pt"),
         ("other-network.pt", "vae", "this run's network")),
]  # fmt: skip


def quiet(message: str) -> None:
    """Swallow the run's messages."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a 1-epoch run of `TINY_TOML`, and broken copies of its checkpoint."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("trained")
    (folder / "tiny.toml").write_text(TINY_TOML)
    config = load_config(folder / "tiny.toml").replace(epochs=1, device="cpu")
    Run(config, folder / "run", progress=False, print_=quiet).train()
    checkpoint = folder / "run" / CHECKPOINT
    data = checkpoint.read_bytes()
    broken = folder / "broken"
    broken.mkdir()
    (broken / "truncated.pt").write_bytes(data[: len(data) // 2])
    state: dict[str, Any] = torch.load(checkpoint, weights_only=True)
    partial = {k: state[k] for k in ("format", "version", "config", "epoch")}
    torch.save(partial, broken / "partial.pt")
    torch.save({**state, "epoch": "2"}, broken / "wrong-kind.pt")
    torch.save({**state, "version": 7}, broken / "old-version.pt")
    vae = dict(state["vae"])
    vae.pop(next(iter(vae)))
    torch.save({**state, "vae": vae}, broken / "other-network.pt")
    return folder


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by its path relative to it, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("case", MATRIX, ids=[case.id for case in MATRIX])
def test_a_mistake_is_one_line_exit_2_and_changes_nothing(
    case: Case, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    for broken in (trained / "broken").iterdir():
        shutil.copy(broken, run / broken.name)
    (tmp_path / "run.toml").write_text(case.toml)
    (tmp_path / "notes.txt").write_text("not a folder\n")
    (tmp_path / "folder").mkdir()
    paths = {
        "config": tmp_path / "run.toml",
        "out": tmp_path / "out",
        "run": run,
        "file": tmp_path / "notes.txt",
        "folder": tmp_path / "folder",
    }
    argv = ["train", "--config", "{config}", "--no-progress", "--device", "cpu", *case.argv]
    argv = [arg.format(**paths) for arg in argv]
    before = files(tmp_path)
    assert main(argv) == case.code
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err  # one line: no traceback, no warning
    assert lines[0].startswith("lbo-vae: error: ")
    for word in case.words:
        assert word.format(**paths) in lines[0]
    assert files(tmp_path) == before  # the same files, byte for byte: nothing written
    assert not paths["out"].exists()  # not even the --out folder
