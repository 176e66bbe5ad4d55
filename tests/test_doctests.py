"""Every docstring example in the installed package runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import constraint_sched
import constraint_sched.functional

# The core's modules only: never walk into constraint_sched.adapters (walk_packages
# imports every package it meets, and the adapters import their frameworks).
MODULES = sorted(
    info.name
    for info in pkgutil.iter_modules(constraint_sched.__path__, "constraint_sched.")
    if info.name != "constraint_sched.adapters" and not info.name.endswith("__main__")
) + sorted(
    info.name
    for info in pkgutil.iter_modules(
        constraint_sched.functional.__path__, "constraint_sched.functional."
    )
)


def test_there_are_examples_to_run() -> None:
    total = sum(
        len(t.examples)
        for name in MODULES
        for t in doctest.DocTestFinder().find(importlib.import_module(name))
    )
    assert total >= 30


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name: str) -> None:
    module = importlib.import_module(name)
    # Examples are written as if after `from constraint_sched import *`.
    public = {name: getattr(constraint_sched, name) for name in constraint_sched.__all__}
    result = doctest.testmod(
        module, extraglobs=public, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    assert result.failed == 0
