"""Where the trainer lives: ``constraint_sched.adapters.lbo_vae``, a user of the torch adapter.

The trainer sits beside the PyTorch adapter it uses (``adapters/lbo_vae/``),
not inside it; the adapter never imports it. Its old import path,
``constraint_sched.adapters.torch.lbo_vae``, still imports, with a
`DeprecationWarning`, and re-exports every public name; ``python -m`` on it
still runs the command. No other test imports it (warnings are errors in this
suite).
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

import constraint_sched.adapters.lbo_vae as trainer

OLD = "constraint_sched.adapters.torch.lbo_vae"
ADAPTERS = Path(__file__).parents[1] / "adapters"


def test_the_old_path_warns_and_reexports_the_trainer() -> None:
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.startswith(OLD)}
    try:
        with pytest.warns(
            DeprecationWarning, match=r"moved to constraint_sched\.adapters\.lbo_vae"
        ):
            old = importlib.import_module(OLD)
        assert old.__all__ == trainer.__all__
        for name in trainer.__all__:
            assert getattr(old, name) is getattr(trainer, name), name
    finally:
        for k in [k for k in sys.modules if k.startswith(OLD)]:
            del sys.modules[k]
        sys.modules.update(saved)


def test_the_old_path_is_not_a_second_copy_of_the_trainer() -> None:
    import constraint_sched.adapters.torch as adapter

    assert "lbo_vae" not in adapter.__all__
    assert trainer.__name__ == "constraint_sched.adapters.lbo_vae"
    assert trainer.Run.__module__ == "constraint_sched.adapters.lbo_vae._train"


@pytest.mark.slow
def test_python_m_on_the_old_path_still_runs_the_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", OLD, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: lbo-vae"), proc.stdout
    assert "deprecated" in proc.stderr, proc.stderr
    assert "python -m constraint_sched.adapters.lbo_vae" in proc.stderr, proc.stderr


def test_the_torch_adapter_never_imports_the_trainer() -> None:
    alias = ADAPTERS / "torch" / "lbo_vae"
    for path in sorted((ADAPTERS / "torch").rglob("*.py")):
        if alias in path.parents:
            continue
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(from|import) \S*lbo_vae", text, flags=re.MULTILINE), path


def test_the_trainer_reaches_the_core_and_the_adapter_by_their_import_names() -> None:
    for path in sorted((ADAPTERS / "lbo_vae").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for line in re.findall(r"^\s*(?:from|import) (\S+)", text, flags=re.MULTILINE):
            if line.startswith("constraint_sched"):
                assert not line.startswith("constraint_sched.adapters.torch.lbo_vae"), path
            assert not line.startswith(("adapters", ".")), (path, line)
