"""The distribution as users get it: the wheel's contents and metadata, and a torch-free core.

These tests look at the installed package, not the source tree: the wheel maps
the top-level ``adapters/`` directory to ``constraint_sched.adapters``. Every
subprocess therefore runs outside the repository root, without the root on
``PYTHONPATH``. Install first with ``pip install .``. One test makes an
editable install of the source tree in a virtual environment of its own.
"""

from __future__ import annotations

import email.message
import email.parser
import importlib.util
import os
import re
import shutil
import site
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).parents[1]
TORCH_EXTRAS = {"torch", "trainer", "lightning"}
"""The extras that install torch: the adapter's, the bundled trainer's and the Lightning callback's."""
CORE_DEPENDENCIES = {"numpy", "attrs", "array-api-compat"}


def _project_version() -> str:
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = text.split("[project]", 1)[1]
    match = re.search(r'^version\s*=\s*"([^"]+)"', project, flags=re.MULTILINE)
    assert match is not None, "pyproject.toml: no version in [project]"
    return match.group(1)


def _run_installed(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``python -c`` in ``cwd``, away from the source tree."""
    env = dict(os.environ)
    root = REPO_ROOT.resolve()
    kept = [
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != root
    ]
    if kept:
        env["PYTHONPATH"] = os.pathsep.join(kept)
    else:
        env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, (
        f"exit {proc.returncode} (is the package installed? `pip install .`)\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc


# -- the wheel ------------------------------------------------------------------------


def _build_wheel(source: Path, out: Path) -> None:
    """``pip wheel`` the project at ``source`` into ``out`` (no build isolation: offline)."""
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    command += ["--disable-pip-version-check", "-w", str(out), str(source)]
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        command, cwd=out, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip(
            "hatchling is not installed (it is in the `test` extra): "
            "the wheel cannot be built without build isolation"
        )
    out = tmp_path_factory.mktemp("wheel")
    _build_wheel(REPO_ROOT, out)
    wheels = sorted(out.glob("*.whl"))
    assert len(wheels) == 1, f"expected one wheel, got {wheels}"
    return wheels[0]


def _metadata(whl: Path) -> email.message.Message:
    with zipfile.ZipFile(whl) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(zf.read(name).decode("utf-8"))


@pytest.mark.slow
def test_wheel_top_level_is_only_the_package(wheel: Path) -> None:
    version = _project_version()
    with zipfile.ZipFile(wheel) as zf:
        top = {name.split("/", 1)[0] for name in zf.namelist()}
    assert top == {"constraint_sched", f"constraint_sched-{version}.dist-info"}
    assert "adapters" not in top


@pytest.mark.slow
def test_wheel_ships_adapters_namespace_and_py_typed(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        adapters_init = zf.read("constraint_sched/adapters/__init__.py")
    assert "constraint_sched/py.typed" in names
    assert "constraint_sched/__init__.py" in names
    # adapters/__init__.py itself, never the source tree's stand-in for it
    assert adapters_init == (REPO_ROOT / "adapters" / "__init__.py").read_bytes()


@pytest.mark.slow
def test_wheel_metadata(wheel: Path) -> None:
    meta = _metadata(wheel)
    assert meta["Name"] == "constraint-sched"
    assert meta["Version"] == _project_version()
    assert "Typing :: Typed" in (meta.get_all("Classifier") or [])
    assert "torch" in (meta.get_all("Provides-Extra") or [])

    requirements = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]
    unconditional = {canonicalize_name(r.name) for r in requirements if r.marker is None}
    assert unconditional == CORE_DEPENDENCIES

    # torch comes only with the extras that need it, never with the core, and
    # never capped (a cap would fight the user's own torch).
    extras = meta.get_all("Provides-Extra") or []
    torch_requirements = [r for r in requirements if canonicalize_name(r.name) == "torch"]
    assert torch_requirements, "the torch extra should require torch"
    for req in torch_requirements:
        assert req.marker is not None, f"{req} is not behind an extra"
        assert not any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier), req
    needing = {e for e in extras for r in torch_requirements if r.marker.evaluate({"extra": e})}
    assert needing == TORCH_EXTRAS
    assert not any(r.marker.evaluate({"extra": ""}) for r in torch_requirements)


# -- the installed core never imports torch -------------------------------------------------


def test_import_does_not_load_torch(tmp_path: Path) -> None:
    _run_installed(
        """
        import sys
        import constraint_sched
        assert "torch" not in sys.modules, "import constraint_sched loaded torch"
        """,
        tmp_path,
    )


def test_every_core_submodule_is_torch_free(tmp_path: Path) -> None:
    proc = _run_installed(
        """
        import importlib
        import pkgutil
        import sys

        import constraint_sched

        # walk_packages imports each package it recurses into: never walk the
        # adapters, whose subpackages import their framework. A __main__ module
        # runs its program when imported: leave it out too.
        def wanted(name):
            return name.rpartition(".")[2] != "__main__"

        names = []
        for info in pkgutil.iter_modules(constraint_sched.__path__, "constraint_sched."):
            if info.name == "constraint_sched.adapters" or not wanted(info.name):
                continue
            names.append(info.name)
            module = importlib.import_module(info.name)
            if info.ispkg:
                names += [
                    sub.name
                    for sub in pkgutil.walk_packages(module.__path__, info.name + ".")
                    if wanted(sub.name)
                ]
        for name in names:
            importlib.import_module(name)
            assert "torch" not in sys.modules, f"importing {name} loaded torch"
        print("\\n".join(names))
        """,
        tmp_path,
    )
    imported = set(proc.stdout.split())
    assert {"constraint_sched._scheduler", "constraint_sched._spec"} <= imported
    assert not any(name.startswith("constraint_sched.adapters") for name in imported)


def test_scoring_floats_and_arrays_is_torch_free(tmp_path: Path) -> None:
    _run_installed(
        """
        import sys

        import numpy as np

        from constraint_sched import ConstraintSpec

        spec = ConstraintSpec("kl", "box_asymmetric", lower=100.0, healthy=3000.0, upper=1e9)
        one = spec.score(2500.0)
        many = spec.score(np.array([50.0, 2500.0, 3000.0, 2e9]))
        assert np.shape(many) == (4,), many
        assert np.isclose(float(one), float(many[1])), (one, many)
        spec.violation(2500.0)
        spec.violation(np.array([50.0, 2e9]))
        assert "torch" not in sys.modules, "scoring loaded torch"
        """,
        tmp_path,
    )


def test_installed_adapters_namespace_imports(tmp_path: Path) -> None:
    proc = _run_installed(
        """
        import sys
        from pathlib import Path

        import constraint_sched
        import constraint_sched.adapters as adapters

        package = Path(constraint_sched.__file__).parent
        # A wheel installs the adapters inside the package; a source tree (an
        # editable install) keeps them beside it, behind the package's stand-in.
        homes = {package / "adapters"}
        if (package.parent / "pyproject.toml").is_file():  # a source tree, not site-packages
            homes.add(package.parent / "adapters")
        assert Path(adapters.__file__).parent in homes, adapters.__file__
        assert adapters.__doc__
        assert "adapters" not in sys.modules, "a top-level adapters module was imported"
        print(adapters.__file__)
        """,
        tmp_path,
    )
    assert Path(proc.stdout.strip()).parts[-2:] == ("adapters", "__init__.py")


# -- the adapters and the trainer in the wheel -----------------------------------------------

TORCH_ADAPTER_FILES = {
    f"constraint_sched/adapters/torch/{name}.py"
    for name in ("__init__", "_scheduler", "_lbo", "_rollback", "_term", "_distributed")
}
TRAINER_FILES = {
    f"constraint_sched/adapters/lbo_vae/{name}.py"
    for name in (
        "__init__", "__main__", "_cli", "_config", "_data", "_files", "_goals", "_images",
        "_metrics", "_model", "_plots", "_shapes", "_step", "_train",
    )
}  # fmt: skip
# The trainer's old import path: a deprecated alias, two files and nothing else.
OLD_TRAINER_FILES = {
    "constraint_sched/adapters/torch/lbo_vae/__init__.py",
    "constraint_sched/adapters/torch/lbo_vae/__main__.py",
}
# What a wheel needs from the source tree.
WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE", ".gitignore")


def _wheel_names(whl: Path) -> list[str]:
    with zipfile.ZipFile(whl) as zf:
        return zf.namelist()


@pytest.mark.slow
def test_wheel_ships_the_torch_adapter_under_the_namespace(wheel: Path) -> None:
    names = _wheel_names(wheel)
    assert set(names) >= TORCH_ADAPTER_FILES, sorted(TORCH_ADAPTER_FILES - set(names))
    assert not [n for n in names if n.startswith("adapters/")]
    assert len(names) == len(set(names)), sorted(n for n in set(names) if names.count(n) > 1)


@pytest.mark.slow
def test_wheel_ships_the_trainer_beside_the_torch_adapter(wheel: Path) -> None:
    names = set(_wheel_names(wheel))
    assert names >= TRAINER_FILES, sorted(TRAINER_FILES - names)
    old = {n for n in names if n.startswith("constraint_sched/adapters/torch/lbo_vae/")}
    assert old == OLD_TRAINER_FILES
    with zipfile.ZipFile(wheel) as zf:
        (entry_points,) = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        scripts = zf.read(entry_points).decode("utf-8")
    assert re.search(r"^lbo-vae = constraint_sched\.adapters\.lbo_vae\._cli:main$", scripts, re.M)


@pytest.mark.slow
def test_developer_link_adds_nothing_to_the_wheel(wheel: Path, tmp_path: Path) -> None:
    # Older checkouts linked constraint_sched/adapters -> ../adapters by hand, where
    # the tracked stand-in folder now is; should such a link be there instead, the
    # wheel (which maps adapters/ itself) must neither ship the files twice nor
    # fail to build, and must come out the same.
    source = tmp_path / "source"
    source.mkdir()
    for name in WHEEL_SOURCES:
        (source / name).write_bytes((REPO_ROOT / name).read_bytes())
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "adapters")
    shutil.copytree(REPO_ROOT / "constraint_sched", source / "constraint_sched", ignore=skip)
    shutil.copytree(
        REPO_ROOT / "adapters", source / "adapters", ignore=shutil.ignore_patterns("__pycache__")
    )
    try:
        (source / "constraint_sched" / "adapters").symlink_to(
            Path("..") / "adapters", target_is_directory=True
        )
    except OSError as error:  # e.g. Windows without the symlink privilege
        pytest.skip(f"cannot create the developer link: {error}")
    out = tmp_path / "out"
    _build_wheel(source, out)
    (linked,) = out.glob("*.whl")
    names = _wheel_names(linked)
    assert len(names) == len(set(names)), sorted(n for n in set(names) if names.count(n) > 1)
    assert set(names) >= TORCH_ADAPTER_FILES
    assert set(names) == set(_wheel_names(wheel))


# -- an editable install of the source tree --------------------------------------------------


def _scripts_dir(env: Path) -> Path:
    return env / ("Scripts" if os.name == "nt" else "bin")


@pytest.mark.slow
def test_editable_install_imports_every_adapter_from_the_source_tree(tmp_path: Path) -> None:
    # A fresh environment (no pip of its own: this interpreter's pip installs into
    # it) that sees this interpreter's packages (torch, lightning, hatchling) after
    # its own, so that nothing is downloaded: --no-deps, no build isolation, no index.
    for name in ("hatchling", "torch", "lightning"):
        pytest.importorskip(name)
    env = tmp_path / "env"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(env)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    python = _scripts_dir(env) / ("python.exe" if os.name == "nt" else "python")
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    ours = [p for p in site.getsitepackages() if Path(p).is_dir()]
    # "zz" sorts after the editable install's own .pth: the source tree comes first.
    (Path(purelib) / "zz_parent_site.pth").write_text("\n".join(ours) + "\n", encoding="utf-8")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
    install += ["--no-build-isolation", "--no-index", "--disable-pip-version-check", "-q"]
    install += ["-e", str(REPO_ROOT)]
    env_vars = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        install,
        cwd=tmp_path,
        env=env_vars,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"pip install -e failed:\n{proc.stdout}\n{proc.stderr}"

    code = textwrap.dedent(
        """
        import sys
        from pathlib import Path

        import constraint_sched
        import constraint_sched.adapters
        import constraint_sched.adapters.lbo_vae
        import constraint_sched.adapters.lightning
        import constraint_sched.adapters.torch

        for name in ("constraint_sched", "constraint_sched.adapters",
                     "constraint_sched.adapters.torch", "constraint_sched.adapters.lightning",
                     "constraint_sched.adapters.lbo_vae"):
            print(name, Path(sys.modules[name].__file__).resolve())
        assert "adapters" not in sys.modules, "a top-level adapters module was imported"
        """
    )
    proc = subprocess.run(
        [str(python), "-c", code],
        cwd=tmp_path,
        env=env_vars,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    found = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    root = REPO_ROOT.resolve()
    assert found == {
        "constraint_sched": str(root / "constraint_sched" / "__init__.py"),
        "constraint_sched.adapters": str(root / "adapters" / "__init__.py"),
        "constraint_sched.adapters.torch": str(root / "adapters" / "torch" / "__init__.py"),
        "constraint_sched.adapters.lightning": str(root / "adapters" / "lightning" / "__init__.py"),
        "constraint_sched.adapters.lbo_vae": str(root / "adapters" / "lbo_vae" / "__init__.py"),
    }

    for command in (
        [str(python), "-m", "constraint_sched.adapters.lbo_vae", "--help"],
        [str(_scripts_dir(env) / "lbo-vae"), "--help"],
    ):
        proc = subprocess.run(
            command,
            cwd=tmp_path,
            env=env_vars,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, f"{command}:\n{proc.stdout}\n{proc.stderr}"
        assert proc.stdout.startswith("usage: lbo-vae"), proc.stdout
