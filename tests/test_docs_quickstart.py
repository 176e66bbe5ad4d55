"""The PyTorch quick start on the home page and in the README: its diff is the script's loop.

The home page and the README show the quick start as a diff of a plain VAE
loop against the same loop with the term; the script they point to,
``docs/examples/quickstart_torch.py``, is that loop with the term. The diff's
kept and added lines must be the script's own, in order, its removed lines
must not, and the output the home page shows must be what the script prints.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "docs" / "examples" / "quickstart_torch.py"
PAGES = [ROOT / "docs" / "index.md", ROOT / "README.md"]

pytestmark = pytest.mark.skipif(not SCRIPT.is_file(), reason="no docs/examples beside the tests")


def diff_of(page: Path) -> list[str]:
    """The page's one diff block."""
    blocks = re.findall(r"```diff\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, f"{page.name}: expected one diff block, found {len(blocks)}"
    return blocks[0].splitlines()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_diff_is_the_scripts_loop(page: Path) -> None:
    script = [line.rstrip() for line in SCRIPT.read_text(encoding="utf-8").splitlines()]
    diff = diff_of(page)
    kept = [line[1:] for line in diff if line[:1] in (" ", "+")]
    removed = [line[1:] for line in diff if line[:1] == "-"]
    added = [line for line in diff if line[:1] == "+"]
    assert 1 <= len(removed) <= 2
    assert 2 <= len(added) <= 3, "the term is a few lines"
    start = script.index(kept[0])
    assert script[start : start + len(kept)] == kept, "the diff's lines are the script's, in order"
    assert not set(removed) & set(script)


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "sklearn")),
    reason="the quick start needs the torch and digits extras",
)
def test_the_home_page_shows_what_the_script_prints(tmp_path: Path) -> None:
    text = PAGES[0].read_text(encoding="utf-8")
    after = text.split("```diff", 1)[1]
    (shown,) = re.findall(r"```text\n(.*?)```", after, re.S)[:1]
    done = subprocess.run(
        [sys.executable, str(SCRIPT)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # the term's lines go to stderr, the script's last to stdout
        text=True,
        check=True,
    )
    assert done.stdout.strip() == shown.strip()
