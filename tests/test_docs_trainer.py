"""The trainer page's promises: its tables are the trainer's, and its examples run.

docs/trainer.md documents the bundled LBO-VAE trainer by hand: its
configuration keys and their defaults, its goal table, its command-line
options and the keys of ``metrics.jsonl``. These tests parse the page and
compare each table with the code, so a new `TrainConfig` field, a changed
default or a changed goal fails here until the page follows. The page's
Python examples run, in page order, on a tiny configuration.

As in test_docs.py, the tests import the installed package and find the page
from this file's place in the source tree; they skip where it is absent.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")  # the trainer extra's TOML reader before 3.11

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
PAGE = DOCS / "trainer.md"
API_PAGE = DOCS / "api-trainer.md"
TRAINER = "constraint_sched.adapters.lbo_vae"

pytestmark = [
    pytest.mark.skipif(not PAGE.is_file(), reason="no docs/trainer.md beside the tests"),
    # Found without importing torch, as in test_docs.py.
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed"),
]

# The example reads lbo-vae.toml from its working directory: this one keeps it to
# two steps an epoch, with a KL box small enough for the KL of so short a run.
TINY_TOML = """\
[train]
images = 64
batch_size = 32
epochs = 2
calibration_steps = 2
kl_lower = 0.05
kl_healthy = 0.2
kl_target = 0.25
kl_squeeze_epochs = 2
"""

TIMES = "\N{MULTIPLICATION SIGN}"
"""The sign of the page's calibrated box ceilings, "[0, 2 TIMES median]", by its name here."""

NOT_SET = "not set"
"""What the configuration table says for a key whose default is None."""


def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


def _trainer() -> Any:
    return importlib.import_module(TRAINER)


def _table(header: str) -> list[list[str]]:
    """The body rows of the page's table whose header row is ``header``, as cells."""
    lines = _page().splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == header]
    assert len(starts) == 1, f"docs/trainer.md has {len(starts)} tables headed {header!r}"
    rows = []
    for line in lines[starts[0] + 2 :]:  # past the header and its |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert rows, f"the table headed {header!r} is empty"
    return rows


def _code(cell: str) -> str:
    """A cell that is one code span, without its backticks."""
    match = re.fullmatch(r"`([^`]*)`", cell)
    assert match, f"expected one `code` span, got {cell!r}"
    return match.group(1)


def _names(cell: str) -> list[str]:
    """Every code span of a cell (``"`a`, `b`"`` -> ``["a", "b"]``)."""
    return re.findall(r"`([^`]+)`", cell)


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", _page(), re.S | re.M)


# -- the configuration table -------------------------------------------------------------


def test_the_config_table_lists_every_trainconfig_field_with_its_default() -> None:
    import attrs

    config_class = _trainer().TrainConfig
    defaults = config_class()
    fields = [f.name for f in attrs.fields(config_class)]
    rows = _table("| key | default | meaning |")
    keys = [_code(row[0]) for row in rows]
    assert len(keys) == len(set(keys)), f"a key is listed twice: {keys}"
    missing = [name for name in fields if name not in keys]
    assert not missing, f"docs/trainer.md's config table lacks TrainConfig fields {missing}"
    unknown = sorted(set(keys) - set(fields))
    assert not unknown, f"docs/trainer.md's config table lists keys TrainConfig lacks: {unknown}"
    for key, default, meaning in rows:
        name = _code(key)
        # The default as TOML would write it; a None default cannot be written.
        shown = None if default == NOT_SET else tomllib.loads(f"v = {_code(default)}")["v"]
        real = getattr(defaults, name)
        if isinstance(real, tuple):  # TOML writes a pair as an array, which it reads as a list
            real = list(real)
        wrong = f"docs/trainer.md gives {name} the default {default}; TrainConfig's is {real!r}"
        assert shown == real, wrong
        assert type(shown) is type(real), wrong
        assert meaning, f"docs/trainer.md does not say what {name} means"


def test_the_pages_config_files_load(tmp_path: Path) -> None:
    trainer = _trainer()
    blocks = _blocks("toml")
    assert blocks, "docs/trainer.md shows no configuration file"
    tables = []
    for i, block in enumerate(blocks):
        path = tmp_path / f"config{i}.toml"
        path.write_text(block)
        tables.append(trainer.load_config(path).kl_table)  # raises on an unknown key
    # The seed's table, written out as TOML, is SEED_TABLE.
    assert trainer.SEED_TABLE in tables


# -- the goal table ------------------------------------------------------------------------


def _schedulers() -> tuple[Any, Any, Any]:
    trainer = _trainer()
    config = trainer.TrainConfig()
    goals = trainer.default_goals(
        kl_lower=config.kl_lower, kl_healthy=config.kl_healthy, kl_steepness=config.kl_steepness
    )
    return goals, trainer.build_schedulers(goals, config), trainer.group_tree(goals)


def _bound(goal: Any, schedulers: Any) -> str:
    """How the goal table writes a goal's bound, from its spec and its scheduler."""
    spec = goal.spec
    if goal.name in schedulers["kl"].names:
        return "[kl_lower, ceiling]"
    try:
        scheduler = schedulers[goal.name]
    except KeyError:
        scheduler = None  # a fixed bound
    if spec.kind.value == "minimize_soft":
        if scheduler is None:
            return f"scale {spec.scale:g}"
        if scheduler.discovery.statistic == "given":  # a fixed scale, tightened later
            return f"scale {spec.scale:g}, tightened"
        assert spec.scale == "auto"
        return "auto"
    assert spec.kind.value == "box", f"{goal.name}: a kind the table does not write"
    if scheduler is None:
        return f"[{spec.lower:g}, {spec.upper:g}]"
    discovery = scheduler.discovery
    if discovery.statistic == "given":  # a fixed box, shrunk around its centre later
        assert scheduler.side == "width", goal.name
        return f"[{spec.lower:g}, {spec.upper:g}], shrunk"
    assert (discovery.statistic, discovery.headroom) == ("median", 1.0), goal.name
    return f"[{spec.lower:g}, 2 {TIMES} median]"


def test_the_goal_table_is_the_trainers() -> None:
    goals, schedulers, _ = _schedulers()
    rows = _table("| group | goal | raw metric | kind | bound |")
    shown = [(_code(g), _code(n), _code(k), _code(b)) for g, n, _, k, b in rows]
    expected = [
        ("/".join(goal.group), goal.name, goal.spec.kind.value, _bound(goal, schedulers))
        for goal in goals
    ]
    assert shown == expected


def test_the_group_table_names_every_group_and_sub_group() -> None:
    _, _, tree = _schedulers()
    rows = _table("| group | what it asks |")
    assert [_code(row[0]) for row in rows] == list(tree)
    for row in rows:
        sub = tree[_code(row[0])]
        if isinstance(sub, dict):  # the latent group: its sub-groups are named
            assert [n for n in _names(row[1]) if n in sub] == list(sub)


def test_the_counts_in_the_text_are_the_trainers() -> None:
    goals, schedulers, _ = _schedulers()
    auto = [g for g in goals if g.spec.scale == "auto"]
    calibrated_boxes = [g for g in goals if _bound(g, schedulers).endswith(f"{TIMES} median]")]
    page = " ".join(_page().split())
    assert f"{len(goals)} goals" in page
    assert f"{len(schedulers)} schedulers" in page
    assert f"The {len(auto)} `auto` scales" in page
    assert len(calibrated_boxes) == 3
    assert "the three variance boxes" in page
    shrunk = [g for g in goals if _bound(g, schedulers).endswith("shrunk")]
    tightened = [g for g in goals if _bound(g, schedulers).endswith("tightened")]
    assert (len(tightened), len(shrunk)) == (7, 4)
    assert "The seven fixed `minimize_soft` scales" in page
    assert "the four fixed boxes (`shrunk`)" in page


# -- the command line and what a run writes ------------------------------------------------


def test_every_option_of_lbo_vae_train_is_on_the_page(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        _trainer().main(["train", "--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out.split("\n\n")[0]  # "usage: lbo-vae train [-h] [--dataset ..."
    options = set(re.findall(r"\[(--[a-z][a-z-]*)", usage))
    assert options, "lbo-vae train --help lists no option"
    rows = _table("| option | sets |")
    documented = {option for row in rows for option in re.findall(r"--[a-z][a-z-]*", row[0])}
    assert sorted(options - documented) == [], "options missing from docs/trainer.md"
    assert sorted(documented - options) == [], "docs/trainer.md lists unknown options"


def test_every_image_the_page_shows_exists() -> None:
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", _page())
    shown = {Path(image).name for image in images}
    assert shown >= {"kl.png", "reject_rate.png", "groups.png", "swaps.png"}
    missing = [i for i in images if not (DOCS / i).is_file()]
    assert not missing, f"docs/trainer.md shows images that do not exist: {missing}"


def test_the_pages_python_examples_run_and_metrics_keys_are_documented(tmp_path: Path) -> None:
    blocks = _blocks("python")
    assert blocks, "docs/trainer.md has no Python example"
    script = tmp_path / "trainer_examples.py"
    script.write_text("\n".join(blocks))  # in page order: a reader's session
    (tmp_path / "lbo-vae.toml").write_text(TINY_TOML)
    # -W error and PYTHONWARNINGS: an example that warns fails, as the test suite does.
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "error", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = f"exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert "[discovered] kl: discovered ceiling" in done.stdout, report
    # The first example trains the configured 2 epochs, the second 2 more of the same run.
    assert done.stdout.splitlines()[-1] == "epochs [1, 2, 3, 4]", report
    run = tmp_path / "runs" / "demo"
    assert (run / "checkpoint.pt").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    assert [row["kl_phase"] for row in rows[:2]] == ["DISCOVERY", "HOLD"]
    documented = {name for row in _table("| key | value |") for name in _names(row[0])}
    written = set().union(*(row.keys() for row in rows))
    assert sorted(written - documented) == [], "metrics.jsonl keys missing from docs/trainer.md"
    assert sorted(documented - written) == [], "docs/trainer.md documents keys never written"


# -- the API reference ---------------------------------------------------------------------


def test_the_api_page_lists_exactly_the_trainers_public_names() -> None:
    public = _trainer().__all__
    listed = re.findall(r"^:::\s*(\S+)\s*$", API_PAGE.read_text(encoding="utf-8"), re.M)
    expected = {f"{TRAINER}.{name}" for name in public}
    missing = sorted(expected - set(listed))
    assert not missing, f"docs/api-trainer.md lacks `::: NAME` for {missing}"
    unknown = sorted(set(listed) - expected)
    assert not unknown, f"docs/api-trainer.md documents names not in {TRAINER}.__all__: {unknown}"
    assert len(listed) == len(set(listed)), "docs/api-trainer.md lists a name twice"
