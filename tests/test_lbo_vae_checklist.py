"""The seed's checklist, end to end, on a CI-sized run of the trainer's default configuration.

The run is the default one with fewer images and epochs (a few tens of seconds
on two cores): the same model, goals, KL box and target, the geometric
squeeze over four epochs instead of five. What the seed's note promised of
its KL ceiling (`../shared/seeds`, "Testing checklist"), item by item.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

from constraint_sched.adapters.lbo_vae._config import TrainConfig  # noqa: E402
from constraint_sched.adapters.lbo_vae._train import METRICS, Run  # noqa: E402

CI_SIZED = TrainConfig(
    images=1024, batch_size=32, epochs=7, kl_squeeze_epochs=4, calibration_steps=16
)
"""The default configuration, smaller: 32 steps an epoch, squeezing in epochs 3 to 6."""

MAX_REJECT_RATE = 0.05
TARGET_LOW = 0.45
"""The least share of the target each KL half reaches in the first epoch at it. The barrier
holds the KL under the ceiling, at about 0.8x the target by the end of a full run; in this
short run's first epoch at the target one half reads 0.495x with torch on two threads and
0.5x and more on one (the order of float reductions differs), hence 0.45."""
"""The mean KL at the target is at least this share of it (and at most all of it)."""
MAX_OVER_CEILING = 2 / 32
"""At most two of an epoch's 32 steps may have a KL over the ceiling.

The issue's 5% is for the default run's 64-step epochs, which
`benchmarks/trainer_quality.py` checks; here 5% would be 1.6 steps.
"""
MEAN_IMAGE_MARGIN = 0.6
"""The held-out MSE at the end is under this share of the mean image's."""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], list[str]]:
    messages: list[str] = []
    out = tmp_path_factory.mktemp("checklist")
    Run(CI_SIZED, out, progress=False, print_=messages.append).train()
    rows = [json.loads(line) for line in (Path(out) / METRICS).read_text().splitlines()]
    return rows, messages


def kl_events(messages: list[str], kind: str) -> list[str]:
    return [m for m in messages if m.strip().startswith(f"[{kind}] kl:")]


def test_epoch_1_has_no_ceiling_to_violate_and_rejects_under_5_percent(
    run: tuple[list[dict[str, Any]], list[str]],
) -> None:
    rows, _ = run
    first = rows[0]
    assert first["kl_phase"] == "DISCOVERY"
    assert first["kl_ceiling"] is None  # no ceiling: initialisation cannot violate one
    assert first["reject_rate"] < MAX_REJECT_RATE
    assert first["min_group"] > 0.3  # the goals start healthy: calibrated, not violated


def test_the_discovery_message_gives_the_max_kl_and_it_becomes_the_ceiling(
    run: tuple[list[dict[str, Any]], list[str]],
) -> None:
    rows, messages = run
    (discovered,) = kl_events(messages, "discovered")
    ceiling = float(re.search(r"discovered ceiling ([\d,.]+)", discovered)[1].replace(",", ""))  # type: ignore[index]
    assert ceiling == pytest.approx(rows[0]["kl_max"], rel=1e-4)
    assert rows[1]["kl_ceiling"] == pytest.approx(ceiling, rel=1e-4)
    assert kl_events(messages, "held")


def test_in_epoch_2_the_mean_kl_is_within_the_ceiling(
    run: tuple[list[dict[str, Any]], list[str]],
) -> None:
    rows, _ = run
    hold = rows[1]
    assert hold["kl_phase"] == "HOLD"
    assert hold["kl_core"] <= hold["kl_ceiling"]
    assert hold["kl_detail"] <= hold["kl_ceiling"]


def test_from_epoch_3_the_ceiling_is_squeezed_and_the_kl_falls(
    run: tuple[list[dict[str, Any]], list[str]],
) -> None:
    rows, messages = run
    squeezes = kl_events(messages, "squeezed")
    assert len(squeezes) >= CI_SIZED.kl_squeeze_epochs
    ceilings = [r["kl_ceiling"] for r in rows[1:]]
    assert all(b <= a for a, b in itertools.pairwise(ceilings))
    assert ceilings[-1] == pytest.approx(CI_SIZED.kl_target)
    # The epoch's largest KL falls with the ceiling, from the discovered max down.
    assert rows[-1]["kl_max"] < rows[0]["kl_max"]


def test_the_kl_is_at_about_the_target_and_under_it_when_the_squeeze_reaches_it(
    run: tuple[list[dict[str, Any]], list[str]],
) -> None:
    # "About the target", from below: the barrier holds each step under the
    # ceiling, so the epoch's mean KL sits under it rather than on it.
    rows, messages = run
    assert kl_events(messages, "converged")
    at_target = [r for r in rows if r["kl_ceiling"] == pytest.approx(CI_SIZED.kl_target)]
    assert at_target, "the squeeze never reached the target"
    for half in ("kl_core", "kl_detail"):
        assert TARGET_LOW * CI_SIZED.kl_target <= at_target[0][half] <= CI_SIZED.kl_target
    assert at_target[0]["steps_over_ceiling"] <= MAX_OVER_CEILING


def test_the_ceiling_holds_per_step_from_epoch_2(
    run: tuple[list[dict[str, Any]], list[str]],
) -> None:
    rows, _ = run
    assert rows[0]["steps_over_ceiling"] == 0.0  # no ceiling while discovering
    over = [r["steps_over_ceiling"] for r in rows[1:]]
    assert all(0.0 <= v <= MAX_OVER_CEILING for v in over), over


def test_the_model_beats_the_mean_image_on_held_out_images(
    run: tuple[list[dict[str, Any]], list[str]],
) -> None:
    rows, _ = run
    last = rows[-1]
    assert last["heldout_mse"] < MEAN_IMAGE_MARGIN * last["heldout_mean_mse"], last
    assert last["heldout_ssim"] > rows[0]["heldout_ssim"]
    assert last["heldout_mse"] < rows[0]["heldout_mse"]


def test_every_epoch_rejects_under_5_percent(run: tuple[list[dict[str, Any]], list[str]]) -> None:
    rows, _ = run
    assert [r["epoch"] for r in rows] == list(range(1, CI_SIZED.epochs + 1))
    assert max(r["reject_rate"] for r in rows) < MAX_REJECT_RATE
