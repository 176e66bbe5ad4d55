"""Running a benchmark script in its --quick mode, as the smoke tests do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_quick(script: Path, workdir: Path, *args: str) -> tuple[str, dict[str, Any]]:
    """Run ``script --quick *args --json FILE`` in ``workdir``; its stdout and its JSON.

    Fails the calling test, with the script's output, when it exits non-zero.
    """
    figures = workdir / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", *args, "--json", str(figures)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout, json.loads(figures.read_text(encoding="utf-8"))
