"""The LBO-VAE trainer end to end on a tiny run: metrics, checkpoints, resume, bad batches, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

from constraint_sched import SqueezeSchedule  # noqa: E402
from constraint_sched.adapters.lbo_vae._cli import main  # noqa: E402
from constraint_sched.adapters.lbo_vae._config import (  # noqa: E402
    SEED_TABLE,
    TrainConfig,
    load_config,
)
from constraint_sched.adapters.lbo_vae._data import SIZES, shapes  # noqa: E402
from constraint_sched.adapters.lbo_vae._goals import default_goals  # noqa: E402
from constraint_sched.adapters.lbo_vae._schedules import build_schedulers  # noqa: E402
from constraint_sched.adapters.lbo_vae._train import (  # noqa: E402
    CHECKPOINT,
    METRICS,
    Run,
    load_data,
)

# Two steps an epoch: the KL stays small, so its box and target are small too.
TINY = TrainConfig(
    epochs=4, images=64, heldout=64, batch_size=32, calibration_steps=2, kl_squeeze_epochs=2,
    kl_lower=0.05, kl_healthy=0.2, kl_target=0.25,
)  # fmt: skip
KEYS = {
    "epoch", "kl_phase", "kl_ceiling", "kl_core", "kl_detail", "reject_rate", "min_group",
    "loss", "swap_structure", "swap_appearance", "heldout_mse", "heldout_mean_mse",
    "heldout_ssim", "heldout_kl_core", "heldout_kl_detail", "heldout_shape",
    "steps_over_ceiling",
}  # fmt: skip


def quiet(message: str) -> None:
    """Swallow the run's messages."""


def strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "seconds"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, list[str]]:
    torch.set_num_threads(1)
    messages: list[str] = []
    run = Run(TINY, tmp_path_factory.mktemp("run"), progress=False, print_=messages.append)
    run.train()
    return run, messages


def test_a_run_walks_the_kl_ceiling_through_its_phases(tiny_run: tuple[Run, list[str]]) -> None:
    run, messages = tiny_run
    rows = [json.loads(line) for line in (run.out / METRICS).read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert all(set(r) >= KEYS for r in rows)
    assert [r["kl_phase"] for r in rows] == ["DISCOVERY", "HOLD", "SQUEEZE", "CONVERGED"]
    assert rows[3]["kl_ceiling"] == pytest.approx(TINY.kl_target)
    assert rows[0]["kl_ceiling"] is None
    # The ceiling held in epoch 2 is the max KL of epoch 1's accepted steps.
    assert rows[1]["kl_ceiling"] == pytest.approx(rows[0]["kl_max"])
    assert rows[2]["kl_ceiling"] < rows[1]["kl_ceiling"]
    discovered = [m for m in messages if "[discovered] kl:" in m]
    assert len(discovered) == 1
    assert "max" in discovered[0]
    assert any("[squeezed] kl:" in m for m in messages)
    assert all(0.0 <= r["swap_structure"] <= 1.0 for r in rows)


def test_the_checkpoint_loads_with_weights_only(tiny_run: tuple[Run, list[str]]) -> None:
    run, _ = tiny_run
    state = torch.load(run.out / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 5
    assert {"vae", "disc", "optimizer", "disc_optimizer", "schedulers", "rng"} <= set(state)
    assert not list(run.out.glob("*.tmp"))  # written atomically


def killed_and_resumed(config: TrainConfig, tmp_path: Path) -> tuple[Run, Run]:
    """``config`` trained whole, and trained one epoch short, then resumed from its checkpoint."""
    whole = Run(config, tmp_path / "whole", progress=False, print_=quiet)
    whole.train()
    killed = Run(config.replace(epochs=config.epochs - 1), tmp_path / "resumed", progress=False,
                 print_=quiet)  # fmt: skip
    killed.train()
    resumed = Run(config, tmp_path / "resumed", progress=False, print_=quiet)
    resumed.load(tmp_path / "resumed" / CHECKPOINT)
    resumed.train()
    return whole, resumed


def test_a_resumed_run_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    whole, resumed = killed_and_resumed(TINY.replace(epochs=3), tmp_path)
    assert [strip(r) for r in resumed.history] == [strip(r) for r in whole.history]
    lines = (tmp_path / "resumed" / METRICS).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_a_resumed_run_matches_when_an_epoch_ends_on_a_full_step(tmp_path: Path) -> None:
    # 5 steps an epoch, every other one full: the last step of each epoch evaluates every
    # group and trains the discriminator, so the next epoch's first step must not depend on
    # the step before it (which the checkpoint does not hold).
    config = TINY.replace(epochs=3, images=80, batch_size=16, refresh=2, image_size=16, width=8)
    whole, resumed = killed_and_resumed(config, tmp_path)
    assert [strip(r) for r in resumed.history] == [strip(r) for r in whole.history]
    for a, b in zip(resumed.disc.parameters(), whole.disc.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_checkpoint_of_other_settings_is_refused(
    tmp_path: Path, tiny_run: tuple[Run, list[str]]
) -> None:
    run, _ = tiny_run
    other = Run(TINY.replace(lr=1e-4), tmp_path, progress=False, print_=quiet)
    with pytest.raises(ValueError, match=r"other settings: lr=0.003 \(now 0.0001\)"):
        other.load(run.out / CHECKPOINT)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        other.load(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        other.load(tmp_path / "junk.pt")


def test_bad_batches_are_rejected_and_counted_never_crash(tmp_path: Path) -> None:
    run = Run(TINY.replace(epochs=3, images=128), tmp_path, progress=False, print_=quiet)
    real, calls = run.stepper, []

    class Poisoned:
        """The real stepper, but the 2nd and 7th batches are all NaN."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def __call__(self, x: Any) -> Any:
            calls.append(len(calls) + 1)
            return real(torch.full_like(x, math.nan) if len(calls) in (2, 7) else x)

    run.stepper = Poisoned()  # type: ignore[assignment]
    rows = run.train()
    assert [r["rejects"] for r in rows] == [1, 1, 0]  # 4 steps an epoch
    assert all(torch.isfinite(p).all() for p in run.vae.parameters())
    assert all(math.isfinite(r["kl_core"]) and math.isfinite(r["loss"]) for r in rows)
    assert rows[1]["kl_phase"] == "HOLD"  # the NaN batch did not stop discovery


def test_the_seed_table_is_a_config_option() -> None:
    config = TrainConfig(kl_table=SEED_TABLE, kl_lower=100.0, kl_healthy=3000.0)
    collection = build_schedulers(default_goals(kl_lower=100.0, kl_healthy=3000.0), config)
    squeeze = collection["kl"].discovery, collection["kl"]
    assert squeeze[1].target == 3000.0
    assert collection["kl"].state_dict()["config"]["squeeze"]["kind"] == "table"
    assert isinstance(SqueezeSchedule.table(SEED_TABLE), SqueezeSchedule)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("epochs = 3\nwarp = 9\n", r"unknown keys \['warp'\]"),
        ("epochs = -1\n", r"TrainConfig.epochs must be positive, got -1"),
        ("epochs = [\n", r"is not valid TOML"),
        ("dataset = 'folder'\n", r"dataset='folder' needs data"),
        ("kl_lower = 20.0\nkl_healthy = 10.0\n", r"kl_lower \(20.0\) must be below kl_healthy"),
        ("disentangle_met = 0.0\n", r"TrainConfig.disentangle_met must lie in \(0, 1\], got 0.0"),
        (
            "shape_sizes = [0.2, 0.5]\n",
            r"TrainConfig.shape_sizes must satisfy 0 < low <= high <= 0.370 .*got \[0.2, 0.5\]",
        ),
        (
            "dataset = 'digits'\nshape_sizes = [0.2, 0.3]\n",
            r"TrainConfig.shape_sizes is for dataset='shapes', got dataset='digits'",
        ),
    ],
    ids=[
        "unknown-key", "negative", "bad-toml", "folder-without-data", "kl-box", "met-level",
        "sizes-too-big", "sizes-not-shapes",
    ],
)  # fmt: skip
def test_config_files_are_checked_naming_the_key(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_config(path)


@pytest.mark.parametrize("value", ["0.2", "[0.2]", "['a', 'b']", "[0.1, 0.2, 0.3]"])
def test_shape_sizes_of_the_wrong_kind_is_a_type_error_naming_the_key(
    tmp_path: Path, value: str
) -> None:
    path = tmp_path / "run.toml"
    path.write_text(f"shape_sizes = {value}\n")
    with pytest.raises(
        TypeError, match=r"TrainConfig.shape_sizes must be two numbers \[low, high\]"
    ):
        load_config(path)


def test_shape_sizes_draws_the_training_and_heldout_shapes_in_that_range(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("images = 64\nheldout = 32\nshape_sizes = [0.25, 0.3]\n")
    config = load_config(path)
    assert config.shape_sizes == (0.25, 0.3)
    train, held = load_data(config)
    for data in (train, held):
        assert data.factors is not None
        assert float(data.factors["size"].min()) >= 0.25
        assert float(data.factors["size"].max()) <= 0.3
    default_train, _ = load_data(TrainConfig(images=64, heldout=32))
    assert TrainConfig().shape_sizes == SIZES
    assert torch.equal(default_train.images, shapes(64, seed=0).images)


def test_a_run_with_other_shape_sizes_resumes_and_refuses_another_range(tmp_path: Path) -> None:
    config = TINY.replace(epochs=1, shape_sizes=(0.22, 0.34))
    run = Run(config, tmp_path / "run", progress=False, print_=quiet)
    run.train()
    resumed = Run(config.replace(epochs=2), tmp_path / "resumed", progress=False, print_=quiet)
    resumed.load(run.out / CHECKPOINT)
    other = Run(TINY.replace(epochs=2), tmp_path / "other", progress=False, print_=quiet)
    with pytest.raises(ValueError, match=r"other settings: shape_sizes=\(0.22, 0.34\)"):
        other.load(run.out / CHECKPOINT)


def test_a_config_file_may_use_a_train_table(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[train]\nepochs = 7\nkl_table = { 3 = 50.0, 4 = 20.0 }\n")
    config = load_config(path)
    assert (config.epochs, config.kl_table) == (7, {3: 50.0, 4: 20.0})


def test_the_command_line_trains_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(
        "images = 64\nheldout = 64\nbatch_size = 32\ncalibration_steps = 2\n"
        "kl_lower = 0.05\nkl_healthy = 0.2\nkl_target = 0.25\n"
    )
    out = tmp_path / "out"
    code = main(["train", "--config", str(config), "--epochs", "2", "--out", str(out),
                 "--no-progress", "--device", "cpu"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "discovered ceiling" in printed
    assert (out / METRICS).is_file()
    assert (out / CHECKPOINT).is_file()
    assert main(["report", str(out)]) == 0
    assert "DISCOVERY" in capsys.readouterr().out


def test_the_command_line_reports_errors_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no metrics.jsonl" in capsys.readouterr().err


def test_fixed_scales_are_tightened_only_while_the_min_group_is_healthy(tmp_path: Path) -> None:
    # LBO.md section 5: from the end of epoch `tighten_from`, x0.95 after each good epoch.
    messages: list[str] = []
    config = TINY.replace(epochs=4, tighten_from=2, tighten_min_group=0.01)
    run = Run(config, tmp_path / "open", progress=False, print_=messages.append)
    fixed = [s.name for s in run.collection if s.discovery.statistic == "given"]
    assert fixed
    assert "inactive_core" in fixed
    before = {n: run.collection[n].bound for n in fixed}
    run.train()
    rows = [json.loads(line) for line in (run.out / METRICS).read_text().splitlines()]
    tightened = sum(1 for r in rows[1:] if r["reject_rate"] < 0.05)  # epochs 2, 3 and 4
    boxes = sorted(n for n in fixed if run.collection[n].side == "width")
    assert boxes == ["detail_mean", "detail_ratio", "logvar_core", "logvar_detail"]
    for name in fixed:  # scales x0.95, boxes' half-widths at half the rate
        rate = 0.975 if name in boxes else 0.95
        assert run.collection[name].bound == pytest.approx(before[name] * rate**tightened)
    logvar = run.collection.spec("logvar_core")  # [-15, 10] shrunk around its centre
    assert logvar.lower == pytest.approx(-2.5 - 12.5 * 0.975**tightened)
    assert logvar.upper == pytest.approx(-2.5 + 12.5 * 0.975**tightened)
    assert any(m.startswith("  [squeezed]") and "fixed scales tightened" in m for m in messages)
    assert any(m.startswith("  [squeezed] 4 fixed boxes shrunk around") for m in messages)
    # The same run with the gate closed: the fixed scales stay as given.
    messages.clear()
    shut = Run(config.replace(tighten_min_group=1.0), tmp_path / "shut", progress=False,
               print_=messages.append)  # fmt: skip
    shut.train()
    assert all(shut.collection[n].bound == before[n] for n in fixed)
    assert any("[tighten] waits: mean min group" in m for m in messages)


def test_the_stop_rule_trains_one_more_epoch_after_a_5_percent_reject_rate(
    tmp_path: Path,
) -> None:
    messages: list[str] = []
    config = TINY.replace(epochs=6, images=128, tighten_from=1)
    run = Run(config, tmp_path, progress=False, print_=messages.append)
    real, calls = run.stepper, []

    class Poisoned:
        """The real stepper, but the 6th batch (epoch 2, 4 steps an epoch) is all NaN."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def __call__(self, x: Any) -> Any:
            calls.append(len(calls) + 1)
            return real(torch.full_like(x, math.nan) if len(calls) == 6 else x)

    run.stepper = Poisoned()  # type: ignore[assignment]
    rows = run.train()
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # epoch 2 rejected 25%: one more, stop
    assert run.stop_after == 3
    assert any("[stop] epoch 2 rejected 25.0%" in m for m in messages)
    assert messages[-1] == "stopped after epoch 3 (LBO's stop rule)"
    # A resumed run remembers that it stopped.
    resumed = Run(config, tmp_path / "again", progress=False, print_=quiet)
    resumed.load(tmp_path / CHECKPOINT)
    assert resumed.train() == []
