"""The documentation's promises: its examples run, every public name is documented, its nav holds.

The tests import the installed package; the documentation sources are found
from this file's place in the source tree and the tests that need them skip
where they are absent (a source distribution without ``docs/``).
"""

from __future__ import annotations

import ast
import inspect
import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest

import constraint_sched

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
API_PAGE = DOCS / "api.md"
MKDOCS_YML = ROOT / "mkdocs.yml"

needs_docs = pytest.mark.skipif(not DOCS.is_dir(), reason="no docs/ beside the tests")


def _example_params() -> list[object]:
    if not EXAMPLES.is_dir():
        return [pytest.param(None, id="no-examples")]
    return [pytest.param(path, id=path.name) for path in sorted(EXAMPLES.glob("*.py"))]


@pytest.mark.parametrize("script", _example_params())
def test_example_runs(script: Path | None, tmp_path: Path) -> None:
    if script is None:
        pytest.skip("no docs/examples/ beside the tests")
    # -W error: an example that warns fails, as the test suite does.
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (
        f"{script.name} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )
    assert done.stdout.strip(), f"{script.name} printed nothing"


@needs_docs
def test_there_are_examples() -> None:
    assert len(list(EXAMPLES.glob("*.py"))) >= 5


def _attribute_docstring(name: str) -> str | None:
    """The docstring written under ``NAME = ...`` in one of the package's modules."""
    for path in Path(constraint_sched.__file__).parent.glob("*.py"):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for statement, following in itertools.pairwise(body):
            targets = (
                statement.targets
                if isinstance(statement, ast.Assign)
                else [statement.target]
                if isinstance(statement, ast.AnnAssign)
                else []
            )
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                return following.value.value
    return None


@pytest.mark.parametrize("name", constraint_sched.__all__)
def test_public_name_has_a_docstring(name: str) -> None:
    obj = getattr(constraint_sched, name)
    if inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj):
        doc = obj.__doc__  # the object's own, never one inherited from a base class
    else:
        doc = _attribute_docstring(name)  # a constant: its docstring lives in the source
    assert doc is not None, f"constraint_sched.{name} has no docstring"
    assert doc.strip(), f"constraint_sched.{name} has an empty docstring"


@needs_docs
def test_api_page_lists_exactly_the_public_names() -> None:
    listed = re.findall(r"^::: constraint_sched\.(\w+)\s*$", API_PAGE.read_text(), re.MULTILINE)
    missing = sorted(set(constraint_sched.__all__) - set(listed))
    assert not missing, f"docs/api.md lacks `::: constraint_sched.NAME` for {missing}"
    unknown = sorted(set(listed) - set(constraint_sched.__all__))
    assert not unknown, f"docs/api.md documents names not in __all__: {unknown}"
    assert len(listed) == len(set(listed)), "docs/api.md lists a name twice"


def _nav_pages() -> list[str]:
    """The Markdown pages named in mkdocs.yml's ``nav`` (read as text: no YAML needed)."""
    lines = MKDOCS_YML.read_text(encoding="utf-8").splitlines()
    start = lines.index("nav:")
    pages = []
    for line in lines[start + 1 :]:
        if line.strip() and not line.startswith((" ", "-", "#")):
            break  # the next top-level key
        pages += re.findall(r"([\w./-]+\.md)\s*$", line)
    return pages


@needs_docs
def test_every_nav_page_exists_and_every_page_is_in_nav() -> None:
    pages = _nav_pages()
    assert pages, "mkdocs.yml has no nav pages"
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml's nav names missing pages: {missing}"
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert on_disk <= set(pages), f"pages not in the nav: {sorted(on_disk - set(pages))}"
