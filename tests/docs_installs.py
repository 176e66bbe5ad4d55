"""What each docs page's install line installs, and what each example it shows imports.

A page that shows an example (``--8<-- "examples/NAME.py"``) states the line
that installs what the example needs, ``pip install "constraint-sched[torch,digits]"``,
in a block or inline before it. The install line that governs an example is
found in the last block of install lines before the example on its page (a
block lists alternatives: the first of its lines that provides what the
example imports). What a line provides is read from ``pyproject.toml``: the
core's dependencies, each extra's (an extra that names another,
``constraint-sched[torch]``, brings that one's), and the packages the line
adds, as the top-level modules those distributions install.

`GATE` is a script that runs an example as ``python NAME.py`` would, except
that an ``import`` of a third-party module the line does not provide, made
by the example or by constraint_sched on its behalf, raises
``ModuleNotFoundError`` as it would where the module is not installed.
Imports inside the third-party packages are left alone: what they need,
their own dependencies install.
"""

from __future__ import annotations

import ast
import re
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the trainer extra installs tomli on 3.10
    import tomli as tomllib

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
PYPROJECT = ROOT / "pyproject.toml"
PACKAGE = "constraint-sched"
IMPORT_NAME = "constraint_sched"

# Distributions whose top-level modules are not their names with "_" for "-".
MODULES = {
    "array-api-compat": ("array_api_compat",),
    "attrs": ("attr", "attrs"),
    "cooper-optim": ("cooper",),
    "matplotlib": ("matplotlib", "mpl_toolkits"),
    "pillow": ("PIL",),
    "pytorch-lightning": ("pytorch_lightning",),
    "scikit-learn": ("sklearn",),
    "scikit-image": ("skimage",),
}
# The package's modules that need an extra: importing one needs what the extra installs.
ADAPTER_EXTRAS = {
    "constraint_sched.adapters.torch": "torch",
    "constraint_sched.adapters.lightning": "lightning",
    "constraint_sched.adapters.jax": "jax",
    "constraint_sched.adapters.lbo_vae": "trainer",
}
# A line that installs the package: `pip install constraint-sched`, with extras, quoted or not,
# and any further packages, up to the end of the line, a comment or the end of inline code.
INSTALL = re.compile(r"pip install[ \t]+([^`#\n]+)")
INCLUDE = re.compile(r"""^[ \t]*--8<--[ \t]*(["'])examples/([\w.-]+\.py)\1""", re.MULTILINE)


@cache
def _project() -> dict[str, object]:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]


def core_dependencies() -> list[str]:
    """The names of the core's dependencies, in pyproject.toml's order."""
    return [Requirement(text).name for text in _project()["dependencies"]]  # type: ignore[attr-defined]


# A list of the core's dependencies as a page writes it: "numpy, attrs and array-api-compat",
# "numpy and attrs" (any list that names numpy and then attrs).
_DEPENDENCY_LIST = re.compile(r"\bnumpy(?:(?:,| and|, and) [A-Za-z][\w-]*)+")


def stated_dependencies(text: str) -> list[list[str]]:
    """Every list of the core's dependencies in ``text`` (one naming numpy and attrs)."""
    found = []
    for match in _DEPENDENCY_LIST.finditer(text):
        names = re.split(r",? and |, ", match.group(0))
        if "attrs" in names:
            found.append(names)
    return found


def extras() -> dict[str, list[str]]:
    """pyproject.toml's optional dependencies: ``{extra: [requirement, ...]}``."""
    return dict(_project()["optional-dependencies"])  # type: ignore[call-overload]


def distributions(chosen: Iterable[str]) -> set[str]:
    """The distributions the core and the ``chosen`` extras name (markers that hold here)."""
    table = extras()
    names = {canonicalize_name(name) for name in core_dependencies()}
    todo, seen = list(chosen), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        if extra not in table:
            raise ValueError(f"pyproject.toml has no extra {extra!r}")
        seen.add(extra)
        for text in table[extra]:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
            if canonicalize_name(requirement.name) == PACKAGE:
                todo += sorted(requirement.extras)
            else:
                names.add(canonicalize_name(requirement.name))
    return names


def modules(names: Iterable[str]) -> set[str]:
    """The top-level modules the distributions ``names`` install."""
    found: set[str] = set()
    for name in names:
        canonical = canonicalize_name(name)
        found.update(MODULES.get(canonical, (canonical.replace("-", "_"),)))
    return found


@dataclass(frozen=True)
class InstallLine:
    """One ``pip install "constraint-sched[...]" [packages]`` line of a page."""

    text: str
    extras: tuple[str, ...]
    packages: tuple[str, ...]

    @property
    def provides(self) -> set[str]:
        """The top-level modules this line installs (the core's included)."""
        return modules(distributions(self.extras) | set(self.packages))


def parse_install(arguments: str) -> InstallLine | None:
    """The install line of ``pip install ARGUMENTS``; None where it does not install the package."""
    try:
        words = [word for word in shlex.split(arguments) if not word.startswith("-")]
    except ValueError:
        return None
    if not words:
        return None
    match = re.fullmatch(r"constraint-sched(?:\[([\w,\s-]*)\])?", words[0])
    if match is None:
        return None
    chosen = tuple(e.strip() for e in (match.group(1) or "").split(",") if e.strip())
    text = "pip install " + " ".join(shlex.quote(word) for word in words).replace("'", '"')
    return InstallLine(text, chosen, tuple(words[1:]))


def install_blocks(markdown: str) -> list[tuple[int, list[InstallLine]]]:
    """Each block of install lines of a page: (offset, lines); consecutive lines form one block."""
    blocks: list[tuple[int, list[InstallLine]]] = []
    offset, previous = 0, -2
    for number, line in enumerate(markdown.splitlines(keepends=True)):
        parsed = [parse_install(m.group(1)) for m in INSTALL.finditer(line)]
        found = [p for p in parsed if p is not None]
        if found:
            if number == previous + 1 and blocks:
                blocks[-1][1].extend(found)
            else:
                blocks.append((offset, found))
            previous = number
        offset += len(line)
    return blocks


def includes(markdown: str) -> list[tuple[int, str]]:
    """(offset, example file name) of every example the page includes."""
    return [(m.start(), m.group(2)) for m in INCLUDE.finditer(markdown)]


def needs(example: Path) -> set[str]:
    """The third-party top-level modules ``example`` needs: its imports and its adapters' extras."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(example.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            top = name.partition(".")[0]
            for adapter, extra in ADAPTER_EXTRAS.items():
                if name == adapter or name.startswith(adapter + "."):
                    found |= (
                        InstallLine("", (extra,), ()).provides - InstallLine("", (), ()).provides
                    )
            if top != IMPORT_NAME and top not in sys.stdlib_module_names and top != "__future__":
                found.add(top)
    return found


def governing_line(markdown: str, offset: int, example: Path) -> InstallLine | str:
    """The install line that governs the example included at ``offset``, or why there is none."""
    before = [lines for start, lines in install_blocks(markdown) if start < offset]
    if not before:
        return "no install line before it"
    wanted = needs(example)
    for line in before[-1]:
        if wanted <= line.provides:
            return line
    lines = " / ".join(line.text for line in before[-1])
    missing = sorted(wanted - set().union(*(line.provides for line in before[-1])))
    return f"its install line ({lines}) does not provide {', '.join(missing)}"


CORE_LINE = InstallLine(f"pip install {PACKAGE}", (), ())


def example_lines() -> dict[str, InstallLine]:
    """Each example's install line: from the pages that show it; the core's where none does.

    An example shown on several pages runs with the line that provides the
    least. A page whose line does not provide what its example imports is
    left out here (`test_every_example_imports_only_what_its_page_installs`
    reports it).
    """
    lines: dict[str, InstallLine] = {}
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for offset, name in includes(text):
            line = governing_line(text, offset, EXAMPLES / name)
            if isinstance(line, str):
                continue
            if name not in lines or len(line.provides) < len(lines[name].provides):
                lines[name] = line
    return {path.name: lines.get(path.name, CORE_LINE) for path in sorted(EXAMPLES.glob("*.py"))}


GATE = '''\
"""Run an example as `python EXAMPLE` would, with only the modules its install line provides."""

import builtins
import runpy
import sys

allowed = set(sys.argv[1].split(","))
line = sys.argv[2]
example = sys.argv[3]
original = builtins.__import__
# A C extension's import is made with the globals of the Python frame below it, which can
# be this gate's own (named "__main__" too): those are never the example's.
own = globals()


def gated(name, globals=None, locals=None, fromlist=(), level=0):
    importer = "" if globals is own else (globals or {}).get("__name__") or ""
    if level == 0 and (importer == "__main__" or importer.startswith("constraint_sched")):
        top = name.partition(".")[0]
        if top not in allowed and top not in sys.stdlib_module_names:
            raise ModuleNotFoundError(
                f"No module named {top!r} (not installed by `{line}`)", name=top
            )
    return original(name, globals, locals, fromlist, level)


builtins.__import__ = gated
sys.argv = [example]
sys.path[0] = example.rpartition("/")[0] or "."
runpy.run_path(example, run_name="__main__")
'''


def gate_command(python: str, gate: Path, example: Path, line: InstallLine) -> list[str]:
    """The command that runs ``example`` through ``gate`` with what ``line`` provides."""
    allowed = ",".join(sorted(line.provides | {IMPORT_NAME}))
    return [python, "-W", "error", str(gate), allowed, line.text, str(example)]
