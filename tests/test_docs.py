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
import typing
from pathlib import Path

import docs_installs
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
    """Each example runs with exactly what its page's install line installs.

    The example runs through a gate (`docs_installs.GATE`): an import of a
    third-party module its page's line does not install fails as it would
    where the module is missing, so an example that needs more than its page
    says fails here. Examples no page shows get the core's line.
    """
    if script is None:
        pytest.skip("no docs/examples/ beside the tests")
    missing = _missing_imports(script)
    if missing:
        pytest.skip(f"{script.name} needs {', '.join(missing)}, which is not installed")
    line = docs_installs.example_lines()[script.name]
    gate = tmp_path / "gate.py"
    gate.write_text(docs_installs.GATE, encoding="utf-8")
    # -W error: an example that warns fails, as the test suite does.
    done = subprocess.run(
        docs_installs.gate_command(sys.executable, gate, script, line),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (
        f"{script.name} exited {done.returncode} with only `{line.text}` installed\n"
        f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )
    assert done.stdout.strip(), f"{script.name} printed nothing"


@needs_docs
@needs_torch
def test_distributed_example_runs_on_two_processes(tmp_path: Path) -> None:
    script = EXAMPLES / DISTRIBUTED_EXAMPLE
    # Each worker runs the example through the gate: only its page's install line's modules.
    line = docs_installs.example_lines()[DISTRIBUTED_EXAMPLE]
    gate = tmp_path / "gate.py"
    gate.write_text(docs_installs.GATE, encoding="utf-8")
    *_, allowed, line_text, example = docs_installs.gate_command("", gate, script, line)
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
            str(gate),
            allowed,
            line_text,
            example,
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


@pytest.mark.parametrize("name", constraint_sched.__all__)
def test_public_name_has_a_docstring(name: str) -> None:
    obj = getattr(constraint_sched, name)
    # A type alias (`Bound`, `Callback`) is no class, though Python 3.10 calls a
    # subscripted one (`Callable[...]`) a class: its docstring lives in the source.
    is_alias = typing.get_origin(obj) is not None
    if not is_alias and (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)):
        doc = obj.__doc__  # the object's own, never one inherited from a base class
    else:
        # A constant or an alias: its docstring is under its assignment, in the source.
        found = _definition("constraint_sched", name)
        doc = None if found is None else found[1]
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


# Each package with an API reference, and its page. A type alias that a public
# signature names (`side: Bound`) is public API too: exported, with a docstring,
# and on the page, so that the name a reader meets has an entry.
API_PAGES = {
    "constraint_sched": "api.md",
    "constraint_sched.functional": "functional.md",  # one `:::` for the whole module
    "constraint_sched.adapters.torch": "api-torch.md",
    "constraint_sched.adapters.lbo_vae": "api-trainer.md",
    "constraint_sched.adapters.lightning": "api-lightning.md",
}
# Aliases in the torch adapter's signatures that it does not export yet: its own
# tests hold every name in its __all__ to a class or function of the adapter.
UNEXPORTED_ALIASES = {
    "constraint_sched.adapters.torch._lbo.GroupTree",
    "constraint_sched.adapters.torch._noise.Device",
    "constraint_sched.adapters.torch._scheduler.Accumulate",
    "constraint_sched.adapters.torch._scheduler.Observation",
}


def _annotations(obj: object) -> list[tuple[str, str]]:
    """(module, text) of each annotation of a public object, as written (strings: every
    module postpones annotations): its signature's, and for a class its fields' and its
    public methods' and properties'."""
    functions = []
    found = []
    if inspect.isclass(obj):
        found += [(obj.__module__, t) for t in vars(obj).get("__annotations__", {}).values()]
        for attr, member in vars(obj).items():
            if attr.startswith("_") and attr != "__init__":
                continue
            member = member.fget if isinstance(member, property) else member
            functions.append(getattr(member, "__func__", member))  # class and static methods
    else:
        functions.append(obj)
    for function in functions:
        if inspect.isfunction(function):
            found += [(function.__module__, t) for t in function.__annotations__.values()]
    return [(module, text) for module, text in found if isinstance(text, str)]


def _definition(module_name: str, name: str) -> tuple[str, str | None] | None:
    """The module that assigns ``name`` (following ``from X import name`` within the
    package) and the docstring under the assignment; None if the package does not."""
    if not module_name.startswith("constraint_sched"):
        return None
    body = ast.parse(inspect.getsource(importlib.import_module(module_name))).body
    for statement, following in itertools.pairwise([*body, None]):
        if isinstance(statement, ast.ImportFrom) and statement.module:
            for alias in statement.names:
                if (alias.asname or alias.name) == name:
                    return _definition(statement.module, alias.name)
        targets = (
            statement.targets
            if isinstance(statement, ast.Assign)
            else [statement.target]
            if isinstance(statement, ast.AnnAssign)
            else []
        )
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            docstring = (
                following.value.value
                if isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
                else None
            )
            return module_name, docstring
    return None


def _api_package_params() -> list[object]:
    frameworks = {"torch": "torch", "lbo_vae": "torch", "lightning": "lightning"}
    params = []
    for package in API_PAGES:
        needs = frameworks.get(package.rsplit(".", 1)[-1])
        missing = needs is not None and importlib.util.find_spec(needs) is None
        marks = pytest.mark.skipif(missing, reason=f"{needs} is not installed")
        params.append(pytest.param(package, id=package, marks=marks))
    return params


@needs_docs
@pytest.mark.parametrize("package", _api_package_params())
def test_every_alias_in_a_public_signature_has_an_entry(package: str) -> None:
    module = importlib.import_module(package)
    # Where an alias may be exported: this package and those loaded with it (the core).
    exporters = [sys.modules[name] for name in API_PAGES if name in sys.modules]
    pages = {name: (DOCS / page).read_text(encoding="utf-8") for name, page in API_PAGES.items()}
    problems, seen = [], set()
    for public in module.__all__:
        for where, text in _annotations(getattr(module, public)):
            for name in re.findall(r"(?<![\w.])[A-Za-z_]\w*", text):
                value = vars(sys.modules[where]).get(name)
                if typing.get_origin(value) is None:
                    continue  # a class, a module, a constant or nothing: not an alias
                definition = _definition(where, name)
                if definition is None or (definition[0], name) in seen:
                    continue  # typing's own (Mapping), or checked already
                seen.add((definition[0], name))
                alias, docstring = f"{definition[0]}.{name}", definition[1]
                by = [p.__name__ for p in exporters if name in p.__all__ and vars(p)[name] is value]
                if alias in UNEXPORTED_ALIASES:
                    if by:
                        problems.append(f"{alias} is exported now: drop it from UNEXPORTED_ALIASES")
                    continue
                if not by:
                    problems.append(f"{alias} (in {package}.{public}) is exported nowhere")
                if not (docstring or "").strip():
                    problems.append(f"{alias} has no docstring under its assignment")
                for exporter in by:
                    entry = re.compile(
                        rf"^::: {re.escape(exporter)}(\.{name})?\s*$"
                        if exporter == "constraint_sched.functional"
                        else rf"^::: {re.escape(exporter)}\.{name}\s*$",
                        re.MULTILINE,
                    )
                    if not entry.search(pages[exporter]):
                        page = API_PAGES[exporter]
                        problems.append(f"docs/{page} lacks `::: {exporter}.{name}`")
    assert not problems, "\n".join(problems)


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


# -- install lines: every example's page says what to install, and it is enough ---------------


def _example_pages() -> list[tuple[Path, str, int]]:
    """(page, example, offset) for each example a page includes."""
    return [
        (page, name, offset)
        for page in sorted(DOCS.glob("*.md"))
        for offset, name in docs_installs.includes(page.read_text(encoding="utf-8"))
    ]


@needs_docs
def test_every_example_imports_only_what_its_page_installs() -> None:
    """Each page that shows an example states an install line that provides its imports.

    The line is the first of the last block of ``pip install "constraint-sched[...]"``
    lines before the example that provides every third-party module the example
    imports (read from its AST; the standard library and the package itself need
    nothing), counting what the package's adapters it imports need.
    """
    shown = _example_pages()
    assert shown, 'no docs/ page includes an example with --8<-- "examples/NAME.py"'
    problems = []
    for page, name, offset in shown:
        line = docs_installs.governing_line(
            page.read_text(encoding="utf-8"), offset, EXAMPLES / name
        )
        if isinstance(line, str):
            problems.append(f"docs/{page.name} shows {name}: {line}")
    assert not problems, "\n".join(problems)


@needs_docs
def test_every_install_line_names_extras_of_pyproject() -> None:
    """No page or README line asks for an extra pyproject.toml does not define."""
    problems = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        if not page.is_file():
            continue
        for _, lines in docs_installs.install_blocks(page.read_text(encoding="utf-8")):
            for line in lines:
                try:
                    line.provides  # noqa: B018 - reads pyproject's extras
                except ValueError as error:
                    problems.append(f"{page.name}: `{line.text}`: {error}")
    assert not problems, "\n".join(problems)


@needs_docs
def test_the_docs_state_the_core_dependencies_of_pyproject() -> None:
    """Every list of the core's dependencies on a page is pyproject.toml's (home page included)."""
    expected = sorted(docs_installs.core_dependencies())
    stated = {
        page.name: docs_installs.stated_dependencies(page.read_text(encoding="utf-8"))
        for page in sorted(DOCS.glob("*.md"))
    }
    assert stated.get("index.md"), "docs/index.md never lists the core's dependencies"
    wrong = [
        f"docs/{name}: {', '.join(names)}"
        for name, lists in stated.items()
        for names in lists
        if sorted(names) != expected
    ]
    assert not wrong, f"pyproject.toml's core dependencies are {expected}; the pages say:\n" + (
        "\n".join(wrong)
    )


# -- figures: read from benchmarks/results/ when the site is built -----------------------------


def _results_module() -> object:
    path = DOCS / "_ext" / "results.py"
    if not (ROOT / "benchmarks" / "results").is_dir():
        pytest.skip("no benchmarks/results/ beside the tests")
    spec = importlib.util.spec_from_file_location("docs_results", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_docs
def test_every_figure_a_page_names_is_in_the_results() -> None:
    """Each ``{{ NAME }}`` of a page is a figure docs/_ext/results.py reads from the results."""
    results = _results_module()
    problems = []
    used = 0
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        used += len(results.PLACEHOLDER.findall(text))  # type: ignore[attr-defined]
        try:
            results.substitute(text, page.name)  # type: ignore[attr-defined]
        except KeyError as error:
            problems.append(str(error.args[0]))
    assert not problems, "\n".join(problems)
    assert used, "no page reads a figure from the benchmark results"
    assert "docs/_ext/results.py" in MKDOCS_YML.read_text(encoding="utf-8"), (
        "mkdocs.yml does not run the hook that fills the figures in (hooks:)"
    )


@needs_docs
def test_the_trainer_page_prints_the_default_run_of_the_results() -> None:
    """The trainer page's sample output is the default run whose metrics the lr sweep keeps."""
    results = _results_module()
    rows = results.default_run()["rows"]  # type: ignore[attr-defined]
    printed = [
        re.sub(r"\s+\d+\.\d+s$", "", line)
        for line in (DOCS / "trainer.md").read_text(encoding="utf-8").splitlines()
        if re.match(r"epoch +\d+  KL ", line)
    ]
    expected = [results.summary_line(row) for row in rows]  # type: ignore[attr-defined]
    assert printed == expected, (
        "docs/trainer.md's epoch lines are not the default run's (the lr sweep's discovered run "
        "at lr 0.003 in benchmarks/results/lr_sweep_discovered.json)"
    )
