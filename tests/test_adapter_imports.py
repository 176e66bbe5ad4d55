"""Adapters use the core's public API only: no module under adapters/ imports a private one."""

from __future__ import annotations

import ast
from pathlib import Path

import constraint_sched

ADAPTERS = Path(__file__).resolve().parent.parent / "adapters"


def private_core_imports(path: Path) -> list[str]:
    """Every import in ``path`` of a ``constraint_sched._*`` module (or a private name from it)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
            modules = [node.module]
            if node.module == "constraint_sched":
                modules += [f"constraint_sched.{alias.name}" for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "constraint_sched" and len(parts) > 1 and parts[1].startswith("_"):
                found.append(f"{path.name}:{node.lineno}: {module}")
    return found


def test_no_adapter_imports_a_private_core_module() -> None:
    files = sorted(ADAPTERS.rglob("*.py"))
    assert files, "no adapter sources found"
    found = [hit for path in files for hit in private_core_imports(path)]
    assert not found, "adapters import private core modules:\n" + "\n".join(found)


def test_the_check_sees_a_private_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from constraint_sched._chance import ChanceState\n"
        "from constraint_sched import _state, functional\n"
        "import constraint_sched._term\n"
        "from constraint_sched.functional import host\n"
    )
    found = private_core_imports(sample)
    assert [hit.split(": ")[1] for hit in found] == [
        "constraint_sched._chance",
        "constraint_sched._state",
        "constraint_sched._term",
    ]


def test_what_adapters_need_is_public() -> None:
    from constraint_sched import functional, state

    assert {"init", "update", "pack", "tallies", "multiplier_step", "plan_step"} <= set(
        functional.__all__
    )
    assert {"Reader", "check_header", "encode_float"} <= set(state.__all__)
    assert "Readings" in constraint_sched.__all__
