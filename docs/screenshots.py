"""Screenshots of the built documentation site in headless Chromium, to look at before a release.

Builds the site (``mkdocs build --strict``) into a temporary folder, serves it
on 127.0.0.1 on a free port and takes a screenshot of the home, term, concepts
and API pages with headless Chromium (the Debian package ``chromium``), one PNG
per page, into the output folder (``site-screenshots/`` by default). It prints
the path of each screenshot.

Outside hosts are unreachable while the screenshots are taken (every name but
127.0.0.1 fails to resolve), so the pages look as they do offline: a diagram or
a font the theme would fetch from a CDN shows as missing. ``--online`` lets
Chromium reach them.

Run it from anywhere, with the docs extra installed::

    python docs/screenshots.py                 # into site-screenshots/
    python docs/screenshots.py /tmp/shots --dark --height 4000
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (name of the screenshot, the page's path in the site)
PAGES = (("home", ""), ("term", "term/"), ("concepts", "concepts/"), ("api", "api/"))
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def build(site_dir: Path) -> None:
    """``mkdocs build --strict`` of the repository into ``site_dir``; exits on a failed build."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"mkdocs build --strict exited {done.returncode}:\n{done.stdout}{done.stderr}")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(site_dir: Path) -> Iterator[str]:
    """Serve ``site_dir`` on 127.0.0.1, on a free port, in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(site_dir))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            thread.join()


def find_browser(given: str | None) -> str:
    """The Chromium executable: ``given``, or the first of :data:`BROWSERS` on the PATH."""
    for name in (given,) if given else BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    sys.exit(
        f"no {given or ' / '.join(BROWSERS)} found: install Chromium (Debian: apt install chromium)"
    )


def screenshot(
    browser: str,
    url: str,
    path: Path,
    *,
    size: tuple[int, int],
    dark: bool,
    online: bool,
    profile: Path,
) -> None:
    """One screenshot of ``url`` into ``path`` with headless Chromium; exits if it fails."""
    command = [
        browser,
        "--headless=new",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        f"--window-size={size[0]},{size[1]}",
        # Time for the theme's scripts (and any diagram library) to run before the shot.
        "--virtual-time-budget=5000",
        f"--screenshot={path}",
    ]
    if not online:
        # Every host name but the local server's fails: the page as it renders offline.
        command.append("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    if dark:
        command += ["--force-dark-mode", "--blink-settings=preferredColorScheme=0"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
    command.append(url)
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    if done.returncode != 0 or not path.is_file():
        sys.exit(f"{browser} exited {done.returncode} for {url}:\n{done.stderr[-4000:]}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "out", nargs="?", type=Path, default=Path("site-screenshots"), help="output folder"
    )
    parser.add_argument("--width", type=int, default=1280, help="window width (1280)")
    parser.add_argument("--height", type=int, default=2000, help="window height (2000)")
    parser.add_argument("--dark", action="store_true", help="ask for the dark colour scheme")
    parser.add_argument("--online", action="store_true", help="let the pages reach outside hosts")
    parser.add_argument("--browser", help="the Chromium executable (found on the PATH)")
    args = parser.parse_args(argv)
    browser = find_browser(args.browser)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    suffix = "-dark" if args.dark else ""
    with tempfile.TemporaryDirectory(prefix="constraint-sched-site-") as temp:
        site_dir, profile = Path(temp) / "site", Path(temp) / "profile"
        build(site_dir)
        with serve(site_dir) as base:
            for name, page in PAGES:
                path = out / f"{name}{suffix}.png"
                screenshot(
                    browser,
                    base + page,
                    path,
                    size=(args.width, args.height),
                    dark=args.dark,
                    online=args.online,
                    profile=profile,
                )
                print(path)


if __name__ == "__main__":
    main()
