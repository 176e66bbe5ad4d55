"""The built documentation site: self-contained, every snippet expanded, every example shown, every link resolves.

The site is built once for the module (``mkdocs build --strict`` from the
repository root, as the docs are published) and the tests read the built HTML,
not the Markdown sources: a snippet marker that a formatter mangled
(``--8<-- "examples/x.py"`` rewritten as ``--8 < --"examples/x.py"``) builds
without a warning, as a code block that shows the marker instead of the example.

Each check is a function over the built files that returns what it found
(:func:`outside_requests`, :func:`examples_not_shown`, :func:`marker_lines`,
:func:`broken_links`); the tests run it over the site, and over small pages
written for the purpose that break the rule, so that a check that finds
nothing is known to be able to find something. The tests over the site skip
where mkdocs or the documentation sources are absent (a source distribution
without ``docs/``, an environment without the docs extra); the others need
neither.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
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

# What makes a browser fetch something when it shows a page: (tag, attribute). "*" is
# any tag; the SVG elements are those that load a file (an SVG is checked as a page).
FETCHING_ATTRIBUTES = {
    ("script", "src"),
    ("img", "src"),
    ("img", "srcset"),
    ("iframe", "src"),
    ("frame", "src"),
    ("source", "src"),
    ("source", "srcset"),
    ("video", "src"),
    ("video", "poster"),
    ("audio", "src"),
    ("track", "src"),
    ("embed", "src"),
    ("object", "data"),
    ("input", "src"),
    ("image", "href"),
    ("image", "xlink:href"),
    ("use", "href"),
    ("use", "xlink:href"),
    ("feimage", "href"),
    ("feimage", "xlink:href"),
    ("*", "background"),
}
# <link rel> values that only name another document: no request. Any other rel
# (stylesheet, icon, preload, modulepreload, preconnect, manifest, ...) is a request.
NAVIGATION_RELS = frozenset(
    {
        "alternate",
        "author",
        "bookmark",
        "canonical",
        "external",
        "help",
        "license",
        "me",
        "next",
        "nofollow",
        "noopener",
        "noreferrer",
        "prev",
        "tag",
    }
)
# A URL a stylesheet loads: url(...) and @import "..." (url(...) is matched by the first).
CSS_URL = re.compile(r"""url\(\s*(["']?)(.*?)\1\s*\)|@import\s+(["'])(.*?)\3""", re.IGNORECASE)
# An absolute URL written as a string in a script.
SCRIPT_URL = re.compile(r"""["'`]((?:https?:)?//[^"'`\s]+)""")
# Libraries the theme's scripts fetch from a CDN at run time when a page uses a
# feature (in mkdocs-material's bundle, as string constants): (the feature, how
# the page shows it, the page's test for it, the URL in the script). The
# ResizeObserver polyfill it fetches for browsers that lack ResizeObserver is no
# feature of the site's and is not listed.
RUNTIME_FETCHES: tuple[tuple[str, str, Callable[[_Page], bool], re.Pattern[str]], ...] = (
    (
        "a mermaid diagram",
        'an element of class "mermaid", from a ```mermaid fence',
        lambda page: "mermaid" in page.classes,
        re.compile(r"""https?://[^"'`\s]*mermaid[^"'`\s]*"""),
    ),
    (
        "the repository's stars and forks",
        'the header\'s repository link (class "md-source", from repo_url)',
        lambda page: "md-source" in page.classes,
        re.compile(r"""https://api\.github\.com/[^"'`\s]*|https://\$\{[^}]*\}/api/v4/[^"'`\s]*"""),
    ),
)


def _missing_docs_packages() -> list[str]:
    return [name for name in DOCS_PACKAGES if importlib.util.find_spec(name) is None]


needs_docs = pytest.mark.skipif(not DOCS.is_dir(), reason="no docs/ beside the tests")


class _Page(HTMLParser):
    """One built page (or SVG): its text, links, ids, classes, and what it makes a browser fetch."""

    def __init__(self) -> None:
        super().__init__()  # convert_charrefs: the text arrives unescaped
        self.chunks: list[str] = []
        # (line, href) of every <a href> and navigation <link href> (prev, next, canonical)
        self.links: list[tuple[int, str]] = []
        # (line, what, URL) of everything the page loads: "<img src>", "<link rel=icon href>"
        self.requests: list[tuple[int, str, str]] = []
        self.styles: list[tuple[int, str]] = []  # (line, CSS) of <style> and style=""
        self.scripts: list[tuple[int, str]] = []  # (line, code) of inline scripts
        self.ids: set[str] = set()
        self.classes: set[str] = set()
        self._raw: tuple[str, int, bool] | None = None  # in <script> or <style>: (tag, line, kept)
        self._raw_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line = self.getpos()[0]
        values = {key: value for key, value in attrs if value is not None}
        element_id, name, href = values.get("id"), values.get("name"), values.get("href")
        if element_id:
            self.ids.add(element_id)
        self.classes.update(values.get("class", "").split())
        if tag == "a":
            if name:  # an <a name> is a fragment's target too
                self.ids.add(name)
            if href is not None:
                self.links.append((line, href))
        if tag == "link" and href is not None:
            rels = set(values.get("rel", "").lower().split())
            if rels and rels <= NAVIGATION_RELS:
                self.links.append((line, href))
            else:
                self.requests.append((line, f"<link rel={' '.join(sorted(rels))} href>", href))
        for attribute, value in values.items():
            if (tag, attribute) in FETCHING_ATTRIBUTES or ("*", attribute) in FETCHING_ATTRIBUTES:
                urls = _srcset(value) if attribute == "srcset" else [value]
                self.requests += [(line, f"<{tag} {attribute}>", url) for url in urls]
        if "style" in values:
            self.styles.append((line, values["style"]))
        if tag in ("script", "style"):
            kind = values.get("type", "").lower()
            executable = kind in ("", "module") or "javascript" in kind or "ecmascript" in kind
            self._raw = (tag, line, tag == "style" or executable)
            self._raw_text = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in ("script", "style"):
            self._raw = None

    def handle_endtag(self, tag: str) -> None:
        if self._raw is not None and tag == self._raw[0]:
            raw_tag, line, kept = self._raw
            if kept:
                (self.styles if raw_tag == "style" else self.scripts).append(
                    (line, "".join(self._raw_text))
                )
            self._raw = None

    def handle_data(self, data: str) -> None:
        if self._raw is not None:
            self._raw_text.append(data)
        else:
            self.chunks.append(data)

    @property
    def text(self) -> str:
        """The page's text, whitespace-normalised: code highlighted into spans reads whole."""
        return _normalise("".join(self.chunks))


def _srcset(value: str) -> list[str]:
    """The URLs of a srcset: ``a.png 1x, b.png 2x``."""
    return [candidate.split()[0] for candidate in value.split(",") if candidate.strip()]


def _normalise(text: str) -> str:
    return " ".join(text.split())


def parse_page(text: str) -> _Page:
    """``text``, an HTML page or an SVG, parsed."""
    page = _Page()
    page.feed(text)
    page.close()
    return page


def parse_site(site: Path) -> dict[Path, _Page]:
    """Every HTML page under ``site``, parsed, by its path."""
    return {
        path: parse_page(path.read_text(encoding="utf-8")) for path in sorted(site.rglob("*.html"))
    }


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
    if not DOCS.is_dir() or not MKDOCS_YML.is_file():
        pytest.skip("no docs/ and mkdocs.yml beside the tests")
    missing = _missing_docs_packages()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (the docs extra)")
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
    parsed = parse_site(site)
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


def marker_lines(site: Path, pages: Iterable[Path]) -> list[str]:
    """Where the ``pages`` show a snippet marker: ``PAGE:LINE (from SOURCE): TEXT``."""
    found = []
    for page in pages:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
            # The text as read (tags stripped: code is highlighted into spans), or as written.
            text = html.unescape(TAG.sub("", line))
            if MARKER.search(text) or MARKER.search(html.unescape(line)):
                shown = text.strip() or line.strip()
                found.append(
                    f"{page.relative_to(site).as_posix()}:{number} "
                    f"(from {_source_page(site, page)}): {shown[:200]}"
                )
    return found


def test_no_snippet_marker_is_left_in_the_built_pages(site: Path, pages: dict[Path, _Page]) -> None:
    found = marker_lines(site, pages)
    assert not found, (
        "pymdownx.snippets markers left unexpanded in the built site (a mangled "
        '`--8<-- "examples/NAME.py"`? keep it between <!-- fmt: off --> and <!-- fmt: on -->):\n'
        + "\n".join(found)
    )


def includes(docs: Path) -> list[tuple[Path, str]]:
    """(Markdown page relative to ``docs``, example path) for each example a page includes."""
    return [
        (source.relative_to(docs), match.group(2))
        for source in sorted(docs.rglob("*.md"))
        for match in INCLUDE.finditer(source.read_text(encoding="utf-8"))
    ]


def _code_lines(example: Path) -> list[str]:
    """The lines of ``example`` that are not blank, whitespace-normalised as a page's text is."""
    lines = example.read_text(encoding="utf-8").splitlines()
    return [_normalise(line) for line in lines if line.strip()]


def examples_not_shown(site: Path, pages: dict[Path, _Page], docs: Path) -> list[str]:
    """Each example a page of ``docs`` includes that its built page does not show whole.

    A page shows an example when every line of it that is not blank is in the
    page's text: the snippet was expanded, and expanded from the file as it is now.
    """
    problems = []
    for source, name in includes(docs):
        example = docs / name
        page = _built_page(site, source)
        if not example.is_file():
            problems.append(f"{source.as_posix()} includes {name}, which does not exist")
            continue
        if page not in pages:
            problems.append(f"{source.as_posix()} includes {name}, but no {page} was built")
            continue
        text = pages[page].text
        lines = _code_lines(example)
        missing = [line for line in lines if line not in text]
        if missing:
            problems.append(
                f"{page.relative_to(site).as_posix()} (from {source.as_posix()}) does not show "
                f"{name}: {len(missing)} of its {len(lines)} lines are not on the page, "
                f"the first {missing[0]!r}"
            )
    return problems


def test_every_included_example_is_shown_on_its_page(site: Path, pages: dict[Path, _Page]) -> None:
    assert includes(DOCS), 'no docs/ page includes an example with --8<-- "examples/NAME.py"'
    problems = examples_not_shown(site, pages, DOCS)
    assert not problems, "examples included but not shown:\n" + "\n".join(problems)


def _site_base() -> str:
    """The path the site is served under (site_url's), for links that start with ``/``."""
    match = re.search(r"^site_url:\s*(\S+)", MKDOCS_YML.read_text(encoding="utf-8"), re.MULTILINE)
    base = urlsplit(match.group(1).strip("'\"")).path if match else "/"
    return base if base.endswith("/") else base + "/"


def _target(site: Path, page: Path, path: str, base: str) -> Path | str:
    """The file or folder ``path`` (a URL's path, unquoted) on ``page`` names, or why none."""
    if path.startswith("/"):
        if not (path + "/").startswith(base):
            return f"outside the site's path {base}"
        target = site / path[len(base) :]
    else:
        target = page.parent / path
    target = Path(os.path.normpath(target))
    if not target.is_relative_to(site):
        return "outside the site"
    return target


def _broken(site: Path, page: Path, href: str, pages: dict[Path, _Page], base: str) -> str | None:
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
    target = _target(site, page, path, base)
    if isinstance(target, str):
        return target
    relative = target.relative_to(site)
    if relative.parts and relative.parts[0] in THEME_FOLDERS:
        return None
    if target.suffix and target.suffix != ".html" and not target.is_dir():
        # A file other than a page: an image, the sitemap.
        return None if target.is_file() else f"no {relative.as_posix()} in the site"
    file = target / "index.html" if path.endswith("/") or target.is_dir() else target
    if not file.is_file():
        return f"no {file.relative_to(site).as_posix()} in the site"
    if fragment:
        ids = pages[file].ids if file in pages else set()
        if fragment not in ids:
            return f'no id="{fragment}" in {file.relative_to(site).as_posix()}'
    return None


def _missing(site: Path, page: Path, url: str, base: str) -> str | None:
    """Why the file ``url`` on ``page`` loads is not in the site, or None (also for other hosts)."""
    split = urlsplit(url)
    if split.scheme or split.netloc or not split.path:
        return None  # data: URLs; other hosts are outside_requests' concern
    target = _target(site, page, unquote(split.path), base)
    if isinstance(target, str):
        return target
    file = target / "index.html" if target.is_dir() else target
    return None if file.is_file() else f"no {target.relative_to(site).as_posix()} in the site"


def broken_links(site: Path, pages: dict[Path, _Page], base: str | None = None) -> list[str]:
    """Every internal link or anchor of ``pages`` that leads nowhere, every file they load that is missing.

    ``PAGE:LINE: HREF: WHY``. A link resolves when its page was built and, with a
    fragment, that page has an element with that id; ``base`` is the path the site
    is served under (site_url's), for links that start with ``/``.
    """
    base = _site_base() if base is None else base
    broken = []
    for page, parsed in pages.items():
        where = page.relative_to(site).as_posix()
        for line, href in parsed.links:
            why = _broken(site, page, href, pages, base)
            if why is not None:
                broken.append(f"{where}:{line}: {href!r}: {why}")
        for line, what, url in parsed.requests:
            why = _missing(site, page, url, base)
            if why is not None:
                broken.append(f"{where}:{line}: {what} {url!r}: {why}")
    return broken


def test_every_internal_link_resolves(site: Path, pages: dict[Path, _Page]) -> None:
    broken = broken_links(site, pages)
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken)


def _outside(url: str) -> bool:
    """Whether a browser fetches ``url`` from a host: http(s), or a protocol-relative ``//host``."""
    split = urlsplit(url.strip())
    return bool(split.netloc) or split.scheme.lower() in ("http", "https", "ftp", "ws", "wss")


def _css_urls(css: str) -> Iterator[tuple[int, str]]:
    """(line, URL) of each ``url(...)`` and ``@import`` of a stylesheet."""
    for match in CSS_URL.finditer(css):
        yield css.count("\n", 0, match.start()) + 1, match.group(2) or match.group(4)


def outside_requests(site: Path, pages: dict[Path, _Page], base: str | None = None) -> list[str]:
    """Everything the site makes a browser fetch from another host: ``FILE:LINE: WHAT URL``.

    The pages' and SVGs' elements that load a file (scripts, stylesheets, icons,
    preloads, images, frames, media), the stylesheets' ``@import`` and ``url()``
    (the site's CSS files, ``<style>`` and ``style=""``), absolute URLs in inline
    scripts, and the libraries the site's scripts fetch at run time for a feature
    a page uses (:data:`RUNTIME_FETCHES`: a mermaid diagram loads mermaid from a
    CDN). Links to other sites (``<a href>``, ``<link rel=canonical>``) are no
    request.
    """
    base = _site_base() if base is None else base
    found: list[str] = []

    def where(path: Path, line: int) -> str:
        return f"{path.relative_to(site).as_posix()}:{line}"

    documents = dict(pages)
    for svg in sorted(site.rglob("*.svg")):
        documents[svg] = parse_page(svg.read_text(encoding="utf-8"))
    for path, page in documents.items():
        found += [
            f"{where(path, line)}: {what} {url}"
            for line, what, url in page.requests
            if _outside(url)
        ]
        for line, css in page.styles:
            found += [
                f"{where(path, line + offset - 1)}: CSS {url}"
                for offset, url in _css_urls(css)
                if _outside(url)
            ]
        for line, code in page.scripts:
            found += [
                f"{where(path, line)}: inline script {url}" for url in SCRIPT_URL.findall(code)
            ]
    for css_file in sorted(site.rglob("*.css")):
        css = css_file.read_text(encoding="utf-8", errors="replace")
        found += [
            f"{where(css_file, line)}: CSS {url}" for line, url in _css_urls(css) if _outside(url)
        ]
    scripts: dict[Path, str] = {}
    for path, page in pages.items():
        used = [fetch for fetch in RUNTIME_FETCHES if fetch[2](page)]
        if not used:
            continue
        for _, _, src in (request for request in page.requests if request[1] == "<script src>"):
            split = urlsplit(src)
            script = _target(site, path, unquote(split.path), base)
            if split.scheme or split.netloc or isinstance(script, str) or not script.is_file():
                continue  # another host's (reported above) or missing (broken_links')
            if script not in scripts:
                scripts[script] = script.read_text(encoding="utf-8", errors="replace")
            for feature, shown, _, pattern in used:
                found += [
                    f"{where(path, 1)}: has {feature} ({shown}), which "
                    f"{script.relative_to(site).as_posix()} shows by fetching {url}"
                    for url in sorted(set(pattern.findall(scripts[script])))
                ]
    return found


def test_no_page_makes_a_request_to_an_outside_host(site: Path, pages: dict[Path, _Page]) -> None:
    found = outside_requests(site, pages)
    assert not found, (
        "the site is not self-contained: these make a browser fetch from another host "
        "(vendor the file into docs/, or commit what it would render):\n" + "\n".join(found)
    )


# The checks, on pages written to break them: each must report what is wrong.


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def _html(body: str, head: str = "") -> str:
    return f"<!doctype html>\n<html><head>{head}</head>\n<body>\n{body}\n</body></html>\n"


# A page of the theme's, with its bundle, that shows a mermaid diagram: the
# bundle loads mermaid from unpkg when a page has an element of class "mermaid".
BUNDLE = (
    'function as(){return typeof mermaid=="undefined"||mermaid instanceof Element?'
    '_t("https://unpkg.com/mermaid@11/dist/mermaid.min.js"):$(void 0)}'
)


@pytest.mark.parametrize(
    ("head", "body", "url"),
    [
        pytest.param(
            "",
            '<script src="https://cdn.example.com/lib.js"></script>',
            "https://cdn.example.com/lib.js",
            id="script",
        ),
        pytest.param(
            '<script src="//cdn.example.com/lib.js" defer></script>',
            "",
            "//cdn.example.com/lib.js",
            id="script-protocol-relative",
        ),
        pytest.param(
            '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">',
            "",
            "https://fonts.googleapis.com/css?family=Roboto",
            id="stylesheet",
        ),
        pytest.param(
            '<link rel="preload" as="font" href="https://fonts.gstatic.com/r.woff2">',
            "",
            "https://fonts.gstatic.com/r.woff2",
            id="preload",
        ),
        pytest.param(
            '<link rel="icon" href="https://example.com/favicon.png">',
            "",
            "https://example.com/favicon.png",
            id="icon",
        ),
        pytest.param(
            "",
            '<img src="https://example.com/logo.png" alt="">',
            "https://example.com/logo.png",
            id="img",
        ),
        pytest.param(
            "",
            '<img srcset="logo.png 1x, https://example.com/logo2.png 2x" alt="">',
            "https://example.com/logo2.png",
            id="srcset",
        ),
        pytest.param(
            "",
            '<iframe src="https://www.youtube.com/embed/x"></iframe>',
            "https://www.youtube.com/embed/x",
            id="iframe",
        ),
        pytest.param(
            "",
            '<picture><source srcset="https://example.com/a.webp"></picture>',
            "https://example.com/a.webp",
            id="source",
        ),
        pytest.param(
            "<style>\n@import url('https://fonts.googleapis.com/css2?family=Roboto');\n</style>",
            "",
            "https://fonts.googleapis.com/css2?family=Roboto",
            id="style-import",
        ),
        pytest.param(
            "",
            '<div style="background: url(https://example.com/bg.png)"></div>',
            "https://example.com/bg.png",
            id="style-attribute",
        ),
        pytest.param(
            "",
            '<script type="module">import("https://esm.sh/mermaid@11")</script>',
            "https://esm.sh/mermaid@11",
            id="inline-script",
        ),
        pytest.param(
            '<script src="assets/bundle.js"></script>',
            '<pre class="mermaid"><code>stateDiagram-v2</code></pre>',
            "https://unpkg.com/mermaid@11/dist/mermaid.min.js",
            id="mermaid-from-the-bundle",
        ),
    ],
)
def test_outside_requests_finds_a_request_to_another_host(
    tmp_path: Path, head: str, body: str, url: str
) -> None:
    site = _write(tmp_path, {"index.html": _html(body, head), "assets/bundle.js": BUNDLE})
    found = outside_requests(site, parse_site(site), base="/")
    assert len(found) == 1, found
    assert found[0].startswith("index.html:")
    assert url in found[0]


def test_outside_requests_finds_an_import_in_the_sites_css(tmp_path: Path) -> None:
    site = _write(
        tmp_path,
        {
            "index.html": _html("", '<link rel="stylesheet" href="assets/extra.css">'),
            "assets/extra.css": 'code { color: red }\n@import "https://fonts.googleapis.com/css";\n',
            "img/d.svg": '<svg xmlns="http://www.w3.org/2000/svg"><image href="https://example.com/x.png"/></svg>',
        },
    )
    found = outside_requests(site, parse_site(site), base="/")
    assert found == [
        "img/d.svg:1: <image href> https://example.com/x.png",
        "assets/extra.css:2: CSS https://fonts.googleapis.com/css",
    ]


def test_outside_requests_lets_links_and_the_sites_own_files_be(tmp_path: Path) -> None:
    site = _write(
        tmp_path,
        {
            "index.html": _html(
                '<a href="https://github.com/cooper-org/cooper">cooper</a>\n'
                '<img src="img/phases.svg" alt=""><img src="data:image/png;base64,AAAA" alt="">\n'
                '<svg xmlns="http://www.w3.org/2000/svg"><path d="M0,0"/></svg>\n'
                '<pre><code>mermaid = "https://unpkg.com/mermaid"</code></pre>\n'
                '<script src="assets/bundle.js"></script>',
                '<link rel="canonical" href="https://constraint-sched.readthedocs.io/">'
                '<link rel="stylesheet" href="assets/main.css"><style>a { color: red }</style>',
            ),
            # The theme's bundle names mermaid's URL, but no page has a diagram.
            "assets/bundle.js": BUNDLE,
            "assets/main.css": ".x{background:url(\"data:image/svg+xml;charset=utf-8,<svg xmlns='http://www.w3.org/2000/svg'/>\")}",
            "img/phases.svg": '<svg xmlns="http://www.w3.org/2000/svg"><text>DISCOVERY</text></svg>',
        },
    )
    assert outside_requests(site, parse_site(site), base="/") == []


EXAMPLE = 'print("the whole example")\nbound = 51.9\n\nprint(f"ceiling {bound}")\n'


@pytest.mark.parametrize(
    ("shown", "problem"),
    [
        pytest.param("<p>No code here.</p>", "3 of its 3 lines", id="absent"),
        pytest.param(
            '<pre><code>--8 &lt; --"examples/demo.py"</code></pre>', "3 of its 3 lines", id="marker"
        ),
        pytest.param(
            '<pre><code>print("the whole example")\nbound = 51.9</code></pre>',
            "1 of its 3 lines",
            id="part",
        ),
        pytest.param(
            '<pre><code><span>print</span>("the whole example")\nbound = 51.9\n\nprint(f"ceiling {bound}")</code></pre>',
            None,
            id="shown",
        ),
    ],
)
def test_examples_not_shown_finds_an_example_a_page_names_but_does_not_show(
    tmp_path: Path, shown: str, problem: str | None
) -> None:
    docs = _write(
        tmp_path / "docs",
        {
            "demo.md": '# Demo\n\n<!-- fmt: off -->\n```python\n--8<-- "examples/demo.py"\n```\n<!-- fmt: on -->\n',
            "examples/demo.py": EXAMPLE,
        },
    )
    site = _write(tmp_path / "site", {"demo/index.html": _html(shown)})
    found = examples_not_shown(site, parse_site(site), docs)
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1, found
        assert found[0].startswith("demo/index.html (from demo.md) does not show examples/demo.py")
        assert problem in found[0]


def test_examples_not_shown_finds_an_example_that_does_not_exist(tmp_path: Path) -> None:
    docs = _write(tmp_path / "docs", {"demo.md": '```python\n--8<-- "examples/gone.py"\n```\n'})
    site = _write(tmp_path / "site", {"demo/index.html": _html("<p>Demo</p>")})
    assert examples_not_shown(site, parse_site(site), docs) == [
        "demo.md includes examples/gone.py, which does not exist"
    ]


def test_marker_lines_finds_a_marker_left_on_a_page(tmp_path: Path) -> None:
    site = _write(
        tmp_path,
        {
            "term/index.html": _html(
                '<pre><code><span class="o">--</span><span class="mi">8</span>'
                '<span class="o">&lt;</span> <span class="s2">"examples/x.py"</span></code></pre>'
            ),
            "index.html": _html("<p>8 &lt; 9 -- no marker</p>"),
        },
    )
    assert marker_lines(site, parse_site(site)) == [
        'term/index.html:4 (from term.md): --8< "examples/x.py"'
    ]


def test_broken_links_finds_links_and_anchors_that_lead_nowhere(tmp_path: Path) -> None:
    site = _write(
        tmp_path,
        {
            "index.html": _html(
                '<h2 id="top">Top</h2>\n'
                '<a href="other/#here">ok</a> <a href="#top">ok</a> <a href="/other/">ok</a>\n'
                '<a href="other/#nowhere">x</a>\n'
                '<a href="#missing">x</a>\n'
                '<a href="gone/">x</a>\n'
                '<img src="img/none.png" alt="">\n'
                '<a href="https://example.com/#whatever">other site</a>'
            ),
            "other/index.html": _html('<p id="here">Here</p>'),
        },
    )
    assert broken_links(site, parse_site(site), base="/") == [
        "index.html:6: 'other/#nowhere': no id=\"nowhere\" in other/index.html",
        "index.html:7: '#missing': no id=\"missing\" on this page",
        "index.html:8: 'gone/': no gone/index.html in the site",
        "index.html:9: <img src> 'img/none.png': no img/none.png in the site",
    ]


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_docs
def test_the_phases_diagram_is_its_scripts_output(tmp_path: Path) -> None:
    script, committed = DOCS / "_ext" / "phases_svg.py", DOCS / "img" / "phases.svg"
    out = tmp_path / "phases.svg"
    done = subprocess.run(
        [sys.executable, str(script), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == committed.read_bytes(), (
        f"{committed.relative_to(ROOT)} is not what {script.relative_to(ROOT)} draws: "
        f"run python {script.relative_to(ROOT)}"
    )
    # The page says in words what the picture shows.
    description = _load(script).DESCRIPTION
    concepts = (DOCS / "concepts.md").read_text(encoding="utf-8")
    assert f"![{description}](img/phases.svg)" in concepts
