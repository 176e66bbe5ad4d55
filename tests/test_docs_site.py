"""The built documentation site: every snippet expanded, every example shown, every link resolves.

The site is built once for the module (``mkdocs build --strict`` from the
repository root, as the docs are published) and the tests read the built HTML,
not the Markdown sources: a snippet marker that a formatter mangled
(``--8<-- "examples/x.py"`` rewritten as ``--8 < --"examples/x.py"``) builds
without a warning, as a code block that shows the marker instead of the example.
The module skips where mkdocs or the documentation sources are absent (a
source distribution without ``docs/``, an environment without the docs extra).
"""

from __future__ import annotations

import ast
import html
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
MKDOCS_YML = ROOT / "mkdocs.yml"
# The packages the build needs: mkdocs, mkdocs-material, mkdocstrings (the docs extra).
DOCS_PACKAGES = ("mkdocs", "material", "mkdocstrings")
# Links into these folders of the site are the theme's (styles, scripts, the search index).
THEME_FOLDERS = ("assets", "search")

# A pymdownx.snippets marker, as written (--8<--) or as a formatter mangles it
# (--8 <, -- 8<, --8< --, --8 < --): two dashes, an 8, a "<", blanks between.
MARKER = re.compile(r"--[ \t]*8[ \t]*<")
# A Markdown line that includes an example: the marker, then its quoted path.
INCLUDE = re.compile(
    r"""^[ \t]*--[ \t]*8[ \t]*<[ \t]*(?:--)?[ \t]*(["'])(examples/[\w.-]+\.py)\1""",
    re.MULTILINE,
)
TAG = re.compile(r"<[^>]*>")


def _missing_docs_packages() -> list[str]:
    return [name for name in DOCS_PACKAGES if importlib.util.find_spec(name) is None]


pytestmark = [
    pytest.mark.skipif(
        not DOCS.is_dir() or not MKDOCS_YML.is_file(),
        reason="no docs/ and mkdocs.yml beside the tests",
    ),
    pytest.mark.skipif(
        bool(_missing_docs_packages()),
        reason=f"{', '.join(_missing_docs_packages())} not installed (the docs extra)",
    ),
]


class _Page(HTMLParser):
    """One built page: its text (without scripts and styles), its links and its ids."""

    def __init__(self) -> None:
        super().__init__()  # convert_charrefs: the text arrives unescaped
        self.chunks: list[str] = []
        self.links: list[tuple[int, str]] = []  # (line, href) of every <a href>
        self.ids: set[str] = set()
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        element_id, name, href = values.get("id"), values.get("name"), values.get("href")
        if element_id:
            self.ids.add(element_id)
        if tag == "a":
            if name:  # an <a name> is a fragment's target too
                self.ids.add(name)
            if href is not None:
                self.links.append((self.getpos()[0], href))
        if tag in ("script", "style"):
            self._skipping += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in ("script", "style"):
            self._skipping -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.chunks.append(data)

    @property
    def text(self) -> str:
        """The page's text, whitespace-normalised: code highlighted into spans reads whole."""
        return _normalise("".join(self.chunks))


def _normalise(text: str) -> str:
    return " ".join(text.split())


def build_site(root: Path, site_dir: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of the project at ``root`` into ``site_dir``."""
    # From the root: mkdocs.yml's paths (snippets' base_path, griffe's extensions) are
    # relative to the working directory.
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=root,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    done = build_site(ROOT, site_dir)
    if done.returncode != 0:
        pytest.fail(
            f"mkdocs build --strict exited {done.returncode}\n"
            f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
        )
    return site_dir


@pytest.fixture(scope="module")
def pages(site: Path) -> dict[Path, _Page]:
    """Every built HTML page, parsed, by its path in the site."""
    parsed = {}
    for path in sorted(site.rglob("*.html")):
        page = _Page()
        page.feed(path.read_text(encoding="utf-8"))
        page.close()
        parsed[path] = page
    assert parsed, f"the build wrote no HTML page to {site}"
    return parsed


def _built_page(site: Path, source: Path) -> Path:
    """The HTML page built from ``source``, a Markdown page relative to ``docs/``."""
    if source.stem in ("index", "README"):
        return site / source.parent / "index.html"
    flat = site / source.with_suffix(".html")  # use_directory_urls: false
    return flat if flat.is_file() else site / source.parent / source.stem / "index.html"


def _source_page(site: Path, page: Path) -> str:
    """The Markdown page ``page`` was built from, as a hint (``term/index.html``: ``term.md``)."""
    relative = page.relative_to(site)
    if relative.name != "index.html":
        return relative.with_suffix(".md").as_posix()
    if relative.parent == Path():
        return "index.md"
    return relative.parent.with_suffix(".md").as_posix()


def _marker_lines(site: Path, page: Path) -> Iterator[str]:
    """Where ``page`` shows a snippet marker: ``PAGE:LINE (from SOURCE): TEXT``."""
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        # The text as read (tags stripped: code is highlighted into spans), or as written.
        text = html.unescape(TAG.sub("", line))
        if MARKER.search(text) or MARKER.search(html.unescape(line)):
            shown = text.strip() or line.strip()
            yield (
                f"{page.relative_to(site).as_posix()}:{number} "
                f"(from {_source_page(site, page)}): {shown[:200]}"
            )


def test_no_snippet_marker_is_left_in_the_built_pages(site: Path, pages: dict[Path, _Page]) -> None:
    found = [where for page in pages for where in _marker_lines(site, page)]
    assert not found, (
        "pymdownx.snippets markers left unexpanded in the built site (a mangled "
        '`--8<-- "examples/NAME.py"`? keep it between <!-- fmt: off --> and <!-- fmt: on -->):\n'
        + "\n".join(found)
    )


def _includes() -> list[tuple[Path, str]]:
    """(Markdown page relative to docs/, example path) for each example a page includes."""
    return [
        (source.relative_to(DOCS), match.group(2))
        for source in sorted(DOCS.rglob("*.md"))
        for match in INCLUDE.finditer(source.read_text(encoding="utf-8"))
    ]


def _telltale_lines(example: Path) -> list[str]:
    """Lines that show ``example`` is on a page: its first statement's, and its last line."""
    text = example.read_text(encoding="utf-8")
    lines = text.splitlines()
    body = ast.parse(text).body
    statements = [
        statement
        for index, statement in enumerate(body)
        if not (
            index == 0
            and isinstance(statement, ast.Expr)
            and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str)
        )  # the module's docstring
        and not (isinstance(statement, ast.ImportFrom) and statement.module == "__future__")
    ]
    telltales = [lines[statements[0].lineno - 1]] if statements else []
    last = next((line for line in reversed(lines) if line.strip()), None)
    if last is not None and last not in telltales:
        telltales.append(last)
    return [_normalise(line) for line in telltales if line.strip()]


def test_every_included_example_is_shown_on_its_page(site: Path, pages: dict[Path, _Page]) -> None:
    includes = _includes()
    assert includes, 'no docs/ page includes an example with --8<-- "examples/NAME.py"'
    problems = []
    for source, name in includes:
        example = DOCS / name
        page = _built_page(site, source)
        if not example.is_file():
            problems.append(f"{source.as_posix()} includes {name}, which does not exist")
            continue
        if page not in pages:
            problems.append(f"{source.as_posix()} includes {name}, but no {page} was built")
            continue
        text = pages[page].text
        missing = [line for line in _telltale_lines(example) if line not in text]
        if missing:
            problems.append(
                f"{page.relative_to(site).as_posix()} (from {source.as_posix()}) does not show "
                f"{name}: no {' / '.join(repr(line) for line in missing)}"
            )
    assert not problems, "examples included but not shown:\n" + "\n".join(problems)


def _site_base() -> str:
    """The path the site is served under (site_url's), for links that start with ``/``."""
    match = re.search(r"^site_url:\s*(\S+)", MKDOCS_YML.read_text(encoding="utf-8"), re.MULTILINE)
    base = urlsplit(match.group(1).strip("'\"")).path if match else "/"
    return base if base.endswith("/") else base + "/"


def _broken(site: Path, page: Path, href: str, pages: dict[Path, _Page]) -> str | None:
    """Why ``href`` on ``page`` leads nowhere, or None where it resolves (or is not checked)."""
    split = urlsplit(href)
    if split.scheme or split.netloc:
        return None  # external: http, https, mailto
    fragment = unquote(split.fragment)
    if not split.path:
        if fragment and fragment not in pages[page].ids:
            return f'no id="{fragment}" on this page'
        return None
    path = unquote(split.path)
    if path.startswith("/"):
        base = _site_base()
        if not (path + "/").startswith(base):
            return f"outside the site's path {base}"
        target = site / path[len(base) :]
    else:
        target = page.parent / path
    target = Path(os.path.normpath(target))
    if not target.is_relative_to(site):
        return "outside the site"
    relative = target.relative_to(site)
    if relative.parts and relative.parts[0] in THEME_FOLDERS:
        return None
    if target.suffix and target.suffix != ".html" and not target.is_dir():
        return None  # a file other than a page: an image, the sitemap
    file = target / "index.html" if path.endswith("/") or target.is_dir() else target
    if not file.is_file():
        return f"no {file.relative_to(site).as_posix()} in the site"
    if fragment:
        ids = pages[file].ids if file in pages else set()
        if fragment not in ids:
            return f'no id="{fragment}" in {file.relative_to(site).as_posix()}'
    return None


def test_every_internal_link_resolves(site: Path, pages: dict[Path, _Page]) -> None:
    broken = []
    for page, parsed in pages.items():
        for line, href in parsed.links:
            why = _broken(site, page, href, pages)
            if why is not None:
                broken.append(f"{page.relative_to(site).as_posix()}:{line}: {href!r}: {why}")
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken)
