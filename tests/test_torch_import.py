"""Importing the PyTorch adapter: a clear error without torch, documented public names.

The subprocesses run away from the source tree (in a temporary directory) with
the environment inherited as it is, so they import the installed package.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

INSTALL_HINT = 'pip install "constraint-sched[torch]"'


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc


def test_without_torch_the_adapter_says_how_to_install_it(tmp_path: Path) -> None:
    proc = _run(
        """
        import sys

        sys.modules["torch"] = None  # import torch now raises ImportError

        import constraint_sched
        import constraint_sched.adapters  # the namespace itself needs no framework

        try:
            import constraint_sched.adapters.torch
        except ImportError as error:
            print(error)
            assert isinstance(error.__cause__, ImportError), repr(error.__cause__)
        else:
            raise AssertionError("constraint_sched.adapters.torch imported without torch")
        assert "constraint_sched.adapters.torch" not in sys.modules
        assert constraint_sched.ConstraintScheduler  # the core still works
        """,
        tmp_path,
    )
    assert INSTALL_HINT in proc.stdout, proc.stdout
    assert "constraint_sched.adapters.torch" in proc.stdout, proc.stdout


def test_adapters_namespace_does_not_import_torch(tmp_path: Path) -> None:
    _run(
        """
        import sys

        import constraint_sched.adapters

        assert "torch" not in sys.modules, "import constraint_sched.adapters loaded torch"
        """,
        tmp_path,
    )


def test_adapter_installs_under_the_constraint_sched_namespace(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    proc = _run(
        """
        import sys

        import constraint_sched
        import constraint_sched.adapters.torch as adapter

        assert "adapters" not in sys.modules, "a top-level adapters module was imported"
        assert adapter.__name__ == "constraint_sched.adapters.torch", adapter.__name__
        print(constraint_sched.__file__)
        print(adapter.__file__)
        """,
        tmp_path,
    )
    core, torch_adapter = (Path(line) for line in proc.stdout.split())
    if torch_adapter.parts[-4:] != ("constraint_sched", "adapters", "torch", "__init__.py"):
        # A checkout (PYTHONPATH or an editable install): the top-level adapters/
        # folder beside the core's, which constraint_sched/adapters/ points at.
        assert torch_adapter == core.parent.parent / "adapters" / "torch" / "__init__.py"


def test_public_names_exist_and_are_documented() -> None:
    pytest.importorskip("torch")
    import constraint_sched.adapters.torch as adapter

    assert adapter.__doc__
    assert INSTALL_HINT in adapter.__doc__
    assert adapter.__all__, "the adapter exports nothing"
    assert len(set(adapter.__all__)) == len(adapter.__all__)
    for name in adapter.__all__:
        obj = getattr(adapter, name)  # AttributeError if __all__ names a missing object
        assert inspect.getdoc(obj), f"{name} has no docstring"
        assert obj.__module__.startswith("constraint_sched.adapters.torch"), obj.__module__
        if not inspect.isclass(obj):
            continue
        for attr, member in vars(obj).items():
            if attr.startswith("_"):
                continue
            target = member.fget if isinstance(member, property) else member
            if callable(target) or isinstance(member, property):
                assert inspect.getdoc(target), f"{name}.{attr} has no docstring"


def test_every_public_name_is_exported() -> None:
    pytest.importorskip("torch")
    import constraint_sched.adapters.torch as adapter

    public = {
        name
        for name, obj in vars(adapter).items()
        if not name.startswith("_")
        and not inspect.ismodule(obj)
        and getattr(obj, "__module__", "").startswith("constraint_sched.adapters.torch")
    }
    assert public == set(adapter.__all__)
