"""A griffe extension for the API reference: ``constraint_sched.adapters`` read from ``adapters/``.

In the source tree, ``constraint_sched/adapters/__init__.py`` only stands in for
the adapters, which live in the top-level ``adapters/`` folder: at run time it
points the package's ``__path__`` there (the wheel maps the folder in its
place). griffe reads files without running them, so in a checkout (``PYTHONPATH=.``
or ``pip install -e .``) it would find that stand-in and no adapter under it.
This extension reads ``adapters/`` and puts it in the stand-in's place, so that
``constraint_sched.adapters.torch`` and the rest are documented from the tree
the pages are built with. Against an installed wheel it does nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import griffe


def _source_tree(pkg: griffe.Module) -> Path | None:
    """The ``adapters/`` folder beside ``pkg``'s folder when ``pkg`` holds the stand-in."""
    filepath = pkg.filepath
    if not isinstance(filepath, Path) or "adapters" not in pkg.members:
        return None
    tree = filepath.parent.parent / "adapters"
    stand_in = pkg.members["adapters"]
    if stand_in.is_alias or not (tree / "__init__.py").is_file():
        return None
    return tree if stand_in.filepath != tree / "__init__.py" else None


class AdaptersFromSourceTree(griffe.Extension):
    """Document ``constraint_sched.adapters`` from the top-level ``adapters/`` folder."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Replace the stand-in ``constraint_sched.adapters`` with the ``adapters/`` folder."""
        if pkg.name != "constraint_sched":
            return
        tree = _source_tree(pkg)
        if tree is None:
            return
        # A loader of its own, searching the tree's parent only, sharing the main
        # loader's collections: the folder is read as a top-level package, then
        # moved under constraint_sched, where every path in it (and so every alias
        # pointing into it) becomes constraint_sched.adapters.*.
        reader = griffe.GriffeLoader(
            search_paths=[tree.parent],
            docstring_parser=loader.docstring_parser,
            docstring_options=loader.docstring_options,
            lines_collection=loader.lines_collection,
            modules_collection=loader.modules_collection,
            allow_inspection=False,
            store_source=loader.store_source,
        )
        adapters = reader.load("adapters")
        assert isinstance(adapters, griffe.Module)
        del loader.modules_collection.members["adapters"]  # not a top-level package
        pkg.set_member("adapters", adapters)
        loader.expand_exports(pkg)
        loader.expand_wildcards(pkg, external=False)
