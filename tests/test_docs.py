"""The documentation's promises: its examples run, every public name is documented, its nav holds.

The tests import the installed package; the documentation sources are found
from this file's place in the source tree and the tests that need them skip
where they are absent (a source distribution without ``docs/``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import itertools
import os
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
TORCH_API_PAGE = DOCS / "api-torch.md"
MKDOCS_YML = ROOT / "mkdocs.yml"
TORCH_ADAPTER = "constraint_sched.adapters.torch"
# Examples that need a launcher: run by their own test, with every process they need.
DISTRIBUTED_EXAMPLE = "distributed_loop.py"

needs_docs = pytest.mark.skipif(not DOCS.is_dir(), reason="no docs/ beside the tests")
# Found without importing torch: the core's tests run, and stay fast, without it.
needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed"
)


def _example_params() -> list[object]:
    if not EXAMPLES.is_dir():
        return [pytest.param(None, id="no-examples")]
    return [
        pytest.param(path, id=path.name)
        for path in sorted(EXAMPLES.glob("*.py"))
        if path.name != DISTRIBUTED_EXAMPLE
    ]


# Optional packages an example may import (the extras); it is skipped where one is missing.
_OPTIONAL = ("torch", "lightning", "cooper", "sklearn", "jax", "optax")


def _missing_imports(script: Path) -> list[str]:
    text = script.read_text()
    return [
        name
        for name in _OPTIONAL
        if re.search(rf"^\s*(import|from) {name}\b", text, re.MULTILINE)
        and importlib.util.find_spec(name) is None
    ]


@pytest.mark.parametrize("script", _example_params())
def test_example_runs(script: Path | None, tmp_path: Path) -> None:
    if script is None:
        pytest.skip("no docs/examples/ beside the tests")
    missing = _missing_imports(script)
    if missing:
        pytest.skip(f"{script.name} needs {', '.join(missing)}, which is not installed")
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
@needs_torch
def test_distributed_example_runs_on_two_processes(tmp_path: Path) -> None:
    script = EXAMPLES / DISTRIBUTED_EXAMPLE
    # torchrun as a module of this interpreter; --standalone picks a free port itself.
    # PYTHONWARNINGS reaches the workers, which -W would not.
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "error", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    report = f"exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    # Both ranks got to the end; the scheduler logged its events on rank 0 only.
    assert "rank 0: ok" in done.stdout, report
    assert "rank 1: ok" in done.stdout, report
    assert "[rank 0] kl: discovered ceiling" in done.stdout, report
    assert "[rank 1]" not in done.stdout, report


@needs_docs
@needs_torch
def test_distributed_example_refuses_to_run_without_a_launcher(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / DISTRIBUTED_EXAMPLE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "torchrun --nproc_per_node=2" in done.stderr


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


def _torch_adapter() -> object:
    return importlib.import_module(TORCH_ADAPTER)  # with torch installed, it must import


@needs_torch
def test_torch_adapter_public_name_has_a_docstring() -> None:
    adapter = _torch_adapter()
    for name in adapter.__all__:  # type: ignore[attr-defined]
        doc = getattr(adapter, name).__doc__
        assert doc is not None, f"{TORCH_ADAPTER}.{name} has no docstring"
        assert doc.strip(), f"{TORCH_ADAPTER}.{name} has an empty docstring"


@needs_docs
@needs_torch
def test_torch_api_page_lists_exactly_the_adapters_public_names() -> None:
    public = _torch_adapter().__all__  # type: ignore[attr-defined]
    # Every `:::` directive on the page: the core's names belong on docs/api.md.
    listed = re.findall(r"^:::\s*(\S+)\s*$", TORCH_API_PAGE.read_text(), re.MULTILINE)
    expected = {f"{TORCH_ADAPTER}.{name}" for name in public}
    missing = sorted(expected - set(listed))
    assert not missing, f"docs/api-torch.md lacks `::: NAME` for {missing}"
    unknown = sorted(set(listed) - expected)
    assert not unknown, (
        f"docs/api-torch.md documents names not in {TORCH_ADAPTER}.__all__: {unknown}"
    )
    assert len(listed) == len(set(listed)), "docs/api-torch.md lists a name twice"


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
