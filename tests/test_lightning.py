"""The Lightning callback: logged values in, the core's bounds out, checkpoints and DDP agree."""

from __future__ import annotations

import doctest
import importlib
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")

import lightning.pytorch as pl
import torch
from host_reads import host_reads_forbidden
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

import constraint_sched.adapters.lightning as adapter
from constraint_sched import (
    Backoff,
    ConstraintScheduler,
    ConstraintSpec,
    DiscoveryPhase,
    Phase,
    SchedulerCollection,
    SqueezeSchedule,
)
from constraint_sched.adapters.lightning import ConstraintCallback
from constraint_sched.adapters.torch import TorchScheduler

# Lightning's own warnings, expected on any run and none of the callback's doing:
# its use of a torch API deprecated since torch 2.10, and loaders without workers
# (raised on machines with more than two cores).
LIGHTNING_WARNINGS = [
    r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning",
    r"ignore:The '\w+' does not have many workers",
]
pytestmark = [pytest.mark.filterwarnings(w) for w in LIGHTNING_WARNINGS]

ROOT = Path(__file__).parents[1]
API_PAGE = ROOT / "docs" / "api-lightning.md"
BATCHES = 8  # per epoch
KL_TARGET = 5.0

Values = Callable[[int, int, torch.Tensor], dict[str, torch.Tensor]]


def build(*, backoff: bool = False) -> SchedulerCollection:
    """A KL ceiling (max discovery, geometric squeeze) and an MSE scale (median discovery)."""
    kl = ConstraintScheduler(
        ConstraintSpec("kl", "box_asymmetric", lower=0.05, healthy=1.0, upper=1e9),
        squeeze=SqueezeSchedule.geometric(target=KL_TARGET, epochs=3),
        backoff=Backoff(max_reject_rate=0.2, factor=1.0) if backoff else None,
    )
    mse = ConstraintScheduler(
        ConstraintSpec("mse", "minimize_soft", scale="auto"),
        discovery=DiscoveryPhase(statistic="median"),
    )
    return SchedulerCollection([kl, mse])


def default_values(epoch: int, batch: int, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """A KL that depends on the model and the step, well above the target; the loss as MSE."""
    return {"kl": 10.0 + 3.0 * loss + 0.5 * batch - epoch, "mse": loss}


class Probe(pl.LightningModule):
    """A linear regression that logs what ``values`` makes of each step, and notes it on the host."""

    def __init__(self, constraints: ConstraintCallback, values: Values = default_values) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(3, 1)
        self.constraints = constraints
        self.values = values
        self.logged: list[tuple[int, dict[str, float]]] = []  # (epoch, {key: value})
        self.seen_bounds: list[tuple[int, Phase, float]] = []  # at each epoch start
        self.events: list[Any] = []  # every event, read after the callback's epoch end

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = ((self.layer(x) - y) ** 2).mean()
        values = self.values(self.current_epoch, batch_idx, loss.detach())
        for key, value in values.items():
            self.log(key, value)
        self.logged.append((self.current_epoch, {k: v.item() for k, v in values.items()}))
        return loss

    def on_train_epoch_start(self) -> None:
        bound = self.constraints.bound_tensor("kl", dtype=torch.float64)
        self.seen_bounds.append((self.current_epoch, self.constraints.phase_of("kl"), bound.item()))

    def on_train_epoch_end(self) -> None:  # called after the callbacks' own
        self.events.extend(self.constraints.last_events)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def data() -> DataLoader[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4 * BATCHES, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3 * torch.randn(4 * BATCHES, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=4)


def trainer(epochs: int, callbacks: list[pl.Callback], **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {
        "max_epochs": epochs,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        **kwargs,
    }
    return pl.Trainer(callbacks=callbacks, **options)


def replay(
    logged: list[tuple[int, dict[str, float]]], core: SchedulerCollection, **keys: str
) -> Iterator[tuple[int, Phase, float]]:
    """Feed a core collection what the module logged, epoch by epoch; yield each epoch's bound."""
    keys = {"kl": "kl", "mse": "mse", **keys}
    epochs = sorted({epoch for epoch, _ in logged})
    for epoch in epochs:
        yield epoch, core["kl"].phase, core.spec("kl").upper
        for e, values in logged:
            if e != epoch:
                continue
            if values.get("rejected", 0.0):
                core.reject()
            else:
                core.observe({name: values[key] for name, key in keys.items()})
        core.advance_epoch()


# -- what the callback does ------------------------------------------------------------


@pytest.mark.parametrize("accumulate", ["auto", "device"])
def test_bounds_move_as_the_core_says_for_the_logged_values(accumulate: Any) -> None:
    callback = ConstraintCallback(TorchScheduler(build(), accumulate=accumulate))
    model = Probe(callback)
    trainer(6, [callback]).fit(model, data())

    core = build()
    expected = list(replay(model.logged, core))
    assert model.seen_bounds == expected
    assert [phase for _, phase, _ in expected] == [
        Phase.DISCOVERY,
        Phase.HOLD,
        Phase.SQUEEZE,
        Phase.SQUEEZE,
        Phase.CONVERGED,  # the third squeeze reached the target
        Phase.CONVERGED,
    ]
    assert callback.scheduler.epoch == core["kl"].epoch == 7
    assert callback.spec("kl").upper == core.spec("kl").upper == KL_TARGET
    assert callback.spec("mse").scale == core.spec("mse").scale  # the median of epoch 1
    assert callback.scheduler.core["kl"].discovered == core["kl"].discovered
    epoch_1_kl = [v["kl"] for e, v in model.logged if e == 0]
    assert core["kl"].discovered == pytest.approx(max(epoch_1_kl), rel=1e-6)
    assert len(model.logged) == 6 * BATCHES
    assert callback.last_events == []  # nothing moved at the last epoch end


def test_bound_is_one_tensor_on_the_modules_device_updated_in_place() -> None:
    callback = ConstraintCallback(build())
    assert callback.bound_tensor("kl").item() == 1e9  # before any fit: on the CPU
    model = Probe(callback)
    trainer(3, [callback]).fit(model, data())
    ceiling = callback.bound_tensor("kl")
    assert ceiling is callback.bound_tensor("kl")
    assert ceiling.device == model.device
    assert ceiling.item() == pytest.approx(callback.spec("kl").upper, rel=1e-6)
    assert callback.spec("kl").upper > KL_TARGET
    assert callback.bound_tensor("kl", dtype=torch.float64).dtype == torch.float64
    x = torch.tensor(2.0, requires_grad=True)
    score = callback.score("kl", x)
    score.backward()
    assert score.item() == pytest.approx(callback.spec("kl").score(2.0))
    assert callback.violation("kl", torch.tensor(1e6)).item() > 0.0


def test_the_hot_path_reads_nothing_on_the_host() -> None:
    class Guarded(ConstraintCallback):
        def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
            with host_reads_forbidden():
                super().on_train_batch_end(*args, **kwargs)

    def values(epoch: int, batch: int, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        return {**default_values(epoch, batch, loss), "rejected": torch.tensor(float(batch == 3))}

    # "device": CPU tensors go through the device path, as an accelerator's would.
    callback = Guarded(TorchScheduler(build(), accumulate="device"), reject_key="rejected")
    model = Probe(callback, values)
    trainer(2, [callback]).fit(model, data())
    assert callback.scheduler.core["kl"].last_epoch.rejects == 1  # type: ignore[union-attr]
    assert callback.scheduler.last_tallies["kl"].count == BATCHES - 1


def test_rejected_steps_are_counted_and_their_values_skipped_then_backoff_acts() -> None:
    def values(epoch: int, batch: int, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        # Two rejected steps in eight (25%) in epoch 3, the first squeeze: backoff.
        rejected = epoch == 2 and batch in (1, 5)
        return {
            **default_values(epoch, batch, loss),
            "rejected": torch.tensor(float(rejected)),
        }

    callback = ConstraintCallback(build(backoff=True), reject_key="rejected")
    model = Probe(callback, values)
    trainer(5, [callback]).fit(model, data())
    assert model.seen_bounds == list(replay(model.logged, build(backoff=True)))
    assert "backed_off" in [e.kind for e in model.events], "25% rejected after a squeeze"
    assert callback.scheduler.core["kl"].last_epoch.rejects == 0  # type: ignore[union-attr]


def test_nan_values_are_counted_and_skipped_by_the_core() -> None:
    def values(epoch: int, batch: int, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        out = default_values(epoch, batch, loss)
        if batch in (2, 6):
            out["kl"] = torch.tensor(math.nan)
        return out

    callback = ConstraintCallback(build())
    model = Probe(callback, values)
    trainer(1, [callback]).fit(model, data())
    tally = callback.scheduler.last_tallies["kl"]
    assert (tally.count, tally.nonfinite) == (BATCHES, 2)
    finite = [v["kl"] for _, v in model.logged if not math.isnan(v["kl"])]
    assert callback.scheduler.core["kl"].discovered == pytest.approx(max(finite), rel=1e-6)


def test_keys_map_specs_to_logged_names() -> None:
    def values(epoch: int, batch: int, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        out = default_values(epoch, batch, loss)
        return {"train/kl": out["kl"], "mse": out["mse"]}

    callback = ConstraintCallback(build(), keys={"kl": "train/kl"})
    assert callback.keys == {"kl": "train/kl", "mse": "mse"}
    model = Probe(callback, values)
    trainer(2, [callback]).fit(model, data())
    expected = list(replay(model.logged, build(), kl="train/kl"))
    assert model.seen_bounds == expected


def test_a_step_that_does_not_log_a_key_is_not_observed() -> None:
    def values(epoch: int, batch: int, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        out = default_values(epoch, batch, loss)
        return out if batch % 2 == 0 else {"mse": out["mse"]}  # kl in every other step

    callback = ConstraintCallback(build())
    trainer(2, [callback]).fit(Probe(callback, values), data())
    assert callback.scheduler.last_tallies["kl"].count == BATCHES // 2
    assert callback.scheduler.last_tallies["mse"].count == BATCHES


def test_bounds_go_to_the_trainers_loggers(tmp_path: Path) -> None:
    callback = ConstraintCallback(build(), log_prefix="constraints/")
    logger = CSVLogger(tmp_path, name="run", version=0)
    model = Probe(callback)
    trainer(3, [callback], logger=logger, log_every_n_steps=1).fit(model, data())
    text = (tmp_path / "run" / "version_0" / "metrics.csv").read_text()
    header = text.splitlines()[0].split(",")
    assert {"constraints/kl", "constraints/mse"} <= set(header)
    column = header.index("constraints/kl")
    logged = [
        float(row.split(",")[column]) for row in text.splitlines()[1:] if row.split(",")[column]
    ]
    # Nothing while discovering; then the bound after epochs 1, 2, 3 (held, squeezed twice).
    model_bounds = [b for _, _, b in model.seen_bounds[1:]]
    assert logged == pytest.approx([*model_bounds, callback.spec("kl").upper], rel=1e-9)
    assert logged[0] == callback.scheduler.core["kl"].discovered


# -- errors ------------------------------------------------------------------------------


def test_a_key_never_logged_is_named_at_the_first_epoch_end() -> None:
    callback = ConstraintCallback(build(), keys={"kl": "kl_total"})
    model = Probe(callback)
    with pytest.raises(
        ValueError, match=r"\['kl_total'\] were not logged .* epoch 0.*Logged keys: \['kl', 'mse'\]"
    ):
        trainer(3, [callback]).fit(model, data())
    assert len(model.logged) == BATCHES  # the whole first epoch ran, and no more
    assert callback.scheduler.epoch == 1


def test_a_reject_key_never_logged_is_named_too() -> None:
    callback = ConstraintCallback(build(), reject_key="rejected")
    with pytest.raises(ValueError, match=r"\['rejected'\] were not logged"):
        trainer(1, [callback]).fit(Probe(callback), data())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param(
            {"keys": {"klx": "kl"}}, ValueError, r"keys names specs \['klx'\]", id="unknown-spec"
        ),
        pytest.param(
            {"keys": {"kl": "mse"}}, ValueError, r"'mse' and 'kl'|'kl' and 'mse'", id="shared-key"
        ),
        pytest.param(
            {"reject_key": "kl"},
            ValueError,
            r"reject_key 'kl' is also .* 'kl'",
            id="reject-is-a-spec",
        ),
        pytest.param(
            {"keys": {"kl": 3}},
            TypeError,
            r"logged key of 'kl' must be a str, got 3",
            id="key-type",
        ),
        pytest.param(
            {"reject_key": 1},
            TypeError,
            r"logged key of 'reject_key' must be a str",
            id="reject-type",
        ),
    ],
)
def test_bad_arguments_are_refused(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        ConstraintCallback(build(), **kwargs)


def test_a_scheduler_of_another_type_is_refused() -> None:
    with pytest.raises(TypeError, match=r"scheduler must be .* got 'kl'"):
        ConstraintCallback("kl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="process_group goes to the TorchScheduler"):
        ConstraintCallback(TorchScheduler(build()), process_group=object())


# -- checkpoints -------------------------------------------------------------------------


def test_state_dict_round_trip() -> None:
    callback = ConstraintCallback(build())
    trainer(3, [callback]).fit(Probe(callback), data())
    state = callback.state_dict()
    json.dumps(state, allow_nan=False)  # plain data
    fresh = ConstraintCallback(build())
    ceiling = fresh.bound_tensor("kl")
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    assert (fresh.scheduler.epoch, fresh.phase_of("kl")) == (4, Phase.SQUEEZE)
    assert ceiling.item() == pytest.approx(callback.spec("kl").upper, rel=1e-6)  # updated in place
    other = ConstraintCallback(
        SchedulerCollection(
            [
                ConstraintScheduler(
                    ConstraintSpec("kl", "box_asymmetric", lower=0.05, healthy=1.0, upper=1e9),
                    squeeze=SqueezeSchedule.geometric(target=2.0, epochs=3),
                ),
                build()["mse"],
            ]
        )
    )
    with pytest.raises(ValueError, match=r"target was saved as 5\.0 but this scheduler has 2\.0"):
        other.load_state_dict(state)


def test_state_keys_differ_by_spec_names() -> None:
    both = ConstraintCallback(build())
    kl_only = ConstraintCallback(build()["kl"])
    assert both.state_key == "ConstraintCallback{'specs': ['kl', 'mse']}"
    assert kl_only.state_key == "ConstraintCallback{'specs': ['kl']}"
    assert ConstraintCallback(build()).state_key == both.state_key  # stable across runs


def _fit_with_checkpoints(
    epochs: int, directory: Path, *, ckpt_path: Path | None = None
) -> tuple[Probe, list[ConstraintCallback]]:
    """Two callbacks in one trainer (two state keys), last.ckpt saved at every epoch end."""
    kl = ConstraintCallback(build(backoff=True)["kl"], reject_key="rejected")
    mse = ConstraintCallback(build()["mse"])

    def values(epoch: int, batch: int, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        rejected = epoch == 3 and batch in (0, 4)  # 25% after a squeeze: backoff
        return {**default_values(epoch, batch, loss), "rejected": torch.tensor(float(rejected))}

    model = Probe(kl, values)
    checkpoint = ModelCheckpoint(dirpath=directory, save_top_k=0, save_last=True)
    trainer(epochs, [kl, mse, checkpoint], enable_checkpointing=True).fit(
        model, data(), ckpt_path=ckpt_path
    )
    return model, [kl, mse]


def test_resume_from_a_lightning_checkpoint_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    full_model, full = _fit_with_checkpoints(6, tmp_path / "full")
    _fit_with_checkpoints(3, tmp_path / "parts")
    saved = torch.load(tmp_path / "parts" / "last.ckpt", weights_only=True)
    assert set(saved["callbacks"]) >= {full[0].state_key, full[1].state_key}
    assert saved["callbacks"][full[0].state_key]["core"]["state"]["epoch"] == 4  # after the advance

    resumed_model, resumed = _fit_with_checkpoints(
        6, tmp_path / "parts", ckpt_path=tmp_path / "parts" / "last.ckpt"
    )
    assert resumed_model.seen_bounds == full_model.seen_bounds[3:]
    for a, b in zip(resumed, full, strict=True):
        assert a.state_dict() == b.state_dict()
    assert resumed[0].scheduler.epoch == 7
    kinds = [phase for _, phase, _ in full_model.seen_bounds]
    assert kinds[:3] == [Phase.DISCOVERY, Phase.HOLD, Phase.SQUEEZE]
    assert full[0].scheduler.core.last_epoch is not None  # type: ignore[union-attr]


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")  # Lightning's own
def test_a_checkpoint_without_this_callbacks_state_is_refused(tmp_path: Path) -> None:
    _fit_with_checkpoints(1, tmp_path)
    renamed = ConstraintCallback(
        ConstraintScheduler(
            ConstraintSpec("kl_total", "box_asymmetric", lower=0.05, healthy=1.0, upper=1e9)
        ),
        keys={"kl_total": "kl"},
    )
    with pytest.raises(
        ValueError, match=r"no state under \"ConstraintCallback\{'specs': \['kl_total'\]\}\""
    ):
        trainer(2, [renamed], enable_checkpointing=True).fit(
            Probe(renamed), data(), ckpt_path=tmp_path / "last.ckpt"
        )


# -- import, docs ------------------------------------------------------------------------


def test_without_lightning_the_adapter_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "lightning", None)  # import lightning now raises ImportError
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    for name in (
        "constraint_sched.adapters.lightning",
        "constraint_sched.adapters.lightning._callback",
    ):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(
        ImportError, match=re.escape('pip install "constraint-sched[lightning]"')
    ) as caught:
        importlib.import_module("constraint_sched.adapters.lightning")
    assert "constraint_sched.adapters.lightning" in str(caught.value)
    assert isinstance(caught.value.__cause__, ImportError)


def test_public_names_are_documented_and_listed_on_the_api_page() -> None:
    assert adapter.__all__ == sorted(adapter.__all__)
    for name in adapter.__all__:
        assert (getattr(adapter, name).__doc__ or "").strip(), name
    if not API_PAGE.is_file():
        pytest.skip("no docs/ beside the tests")
    listed = re.findall(r"^:::\s*(\S+)\s*$", API_PAGE.read_text(), re.MULTILINE)
    assert sorted(listed) == [f"constraint_sched.adapters.lightning.{n}" for n in adapter.__all__]


def test_docstring_examples_run() -> None:
    module = importlib.import_module("constraint_sched.adapters.lightning._callback")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


# -- DDP ---------------------------------------------------------------------------------

DDP_SCRIPT = """
import json
import sys
import warnings

for message in {warnings!r}:
    warnings.filterwarnings("ignore", message=message)

import lightning.pytorch as pl
import torch

from test_lightning import Probe, build, data, default_values
from constraint_sched.adapters.lightning import ConstraintCallback


def values(epoch, batch, loss):
    out = default_values(epoch, batch, loss)
    rank = torch.distributed.get_rank()
    out["kl"] = out["kl"] + 4.0 * rank  # rank 1's KL runs higher
    out["mse"] = out["mse"] * (1 + rank)
    return out


callback = ConstraintCallback(build())
model = Probe(callback, values)
trainer = pl.Trainer(
    max_epochs=4, accelerator="cpu", devices=2, strategy="ddp", logger=False,
    enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    callbacks=[callback],
)
trainer.fit(model, data())
rank = trainer.global_rank
with open(f"{{sys.argv[1]}}/rank{{rank}}.json", "w") as f:
    json.dump({{"logged": model.logged, "bounds": [(e, p.name, b) for e, p, b in model.seen_bounds],
               "state": callback.state_dict(), "mse_scale": callback.spec("mse").scale}}, f)
print(f"rank {{rank}}: ok")
# Leaving the process group to the interpreter's exit can abort gloo's threads (SIGABRT,
# "terminate called without an active exception") after both ranks are done.
torch.distributed.destroy_process_group()
"""


def test_ddp_ranks_agree_on_every_bound(tmp_path: Path) -> None:
    messages = [w.split(":", 2)[1] for w in LIGHTNING_WARNINGS]
    script = tmp_path / "ddp_fit.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(warnings=messages)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p
        ),
        "PYTHONWARNINGS": "error",
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = f"exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # Each rank saw its own shard and its own values...
    assert ranks[0]["logged"] != ranks[1]["logged"]
    assert len(ranks[0]["logged"]) == len(ranks[1]["logged"]) == 4 * (BATCHES // 2)  # 4 epochs
    # ...and every rank ends every epoch with the same bounds, phases and state.
    assert ranks[0]["bounds"] == ranks[1]["bounds"]
    assert ranks[0]["state"] == ranks[1]["state"]
    assert [p for _, p, _ in ranks[0]["bounds"]] == ["DISCOVERY", "HOLD", "SQUEEZE", "SQUEEZE"]
    # What they agree on is what one core scheduler makes of both ranks' values together.
    core = build()
    logged = [step for rank in ranks for step in rank["logged"]]
    expected = [[e, p.name, b] for e, p, b in replay([(e, v) for e, v in logged], core)]
    assert ranks[0]["bounds"] == expected
    # The MSE scale is the median of both ranks' values of epoch 1.
    assert ranks[0]["mse_scale"] == ranks[1]["mse_scale"] == core.spec("mse").scale
    kl = ranks[0]["state"]["core"]["schedulers"]["kl"]
    assert (
        kl["state"]["discovered"]
        == core["kl"].discovered
        == max(v["kl"] for e, v in logged if e == 0)
    )
