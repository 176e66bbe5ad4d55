"""Shared pieces of the ``lbo-vae`` command-line tests: a tiny trained run and a copy to change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from test_fault_matrix_cli import TINY_TOML

from constraint_sched.adapters.lbo_vae import _plots
from constraint_sched.adapters.lbo_vae._config import load_config
from constraint_sched.adapters.lbo_vae._train import Run


def quiet(message: str) -> None:
    """Swallow the run's messages."""


def no_plots(out: object, **kwargs: object) -> list[Path]:
    """`_plots.draw` without matplotlib: these runs are about their folders and messages."""
    raise ImportError("plots are not drawn in these tests")


def trained_run(factory: pytest.TempPathFactory, epochs: int) -> Path:
    """A folder with ``tiny.toml`` and ``run/``, an ``epochs``-epoch run of it."""
    torch.set_num_threads(1)
    folder = factory.mktemp("trained")
    (folder / "tiny.toml").write_text(TINY_TOML)
    config = load_config(folder / "tiny.toml").replace(epochs=epochs, device="cpu")
    Run(config, folder / "run", progress=False, print_=quiet).train()
    return folder


def work_copy(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of ``trained`` to change, where ``lbo-vae train`` draws no plots."""
    monkeypatch.setattr(_plots, "draw", no_plots)
    shutil.copytree(trained, tmp_path, dirs_exist_ok=True)
    return tmp_path
