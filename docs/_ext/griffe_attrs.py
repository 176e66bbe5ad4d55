"""A griffe extension for the API reference: the signatures of attrs classes.

griffe reads the source without running it, so it sees no ``__init__`` on an
attrs class and would document ``DiscoveryPhase`` with an empty signature (and
warn that every argument its docstring lists is unknown). This extension gives
each attrs class the ``__init__`` that attrs generates, read from the imported
class with `inspect.signature`, so the reference shows the real signature.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import sys
from typing import Any

import attrs
import griffe

_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: griffe.ParameterKind.positional_only,
    inspect.Parameter.POSITIONAL_OR_KEYWORD: griffe.ParameterKind.positional_or_keyword,
    inspect.Parameter.VAR_POSITIONAL: griffe.ParameterKind.var_positional,
    inspect.Parameter.KEYWORD_ONLY: griffe.ParameterKind.keyword_only,
    inspect.Parameter.VAR_KEYWORD: griffe.ParameterKind.var_keyword,
}


def _runtime_class(cls: griffe.Class) -> type | None:
    module_path = cls.module.path
    if module_path.rsplit(".", 1)[-1] == "__main__":
        return None  # importing it would run the program
    try:
        obj: Any = importlib.import_module(module_path)
    except ImportError:
        return None
    for part in cls.path[len(module_path) + 1 :].split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, type) else None


def _default(field: Any, value: Any) -> str | None:
    if value is inspect.Parameter.empty:
        return None
    if isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
        factory = field.default.factory
        return f"{getattr(factory, '__name__', 'factory')}()"
    if isinstance(value, enum.Enum):  # as written in code, so that a formatter can read it
        return f"{type(value).__name__}.{value.name}"
    return repr(value)


def _set_attrs_init(cls: griffe.Class) -> None:
    runtime = _runtime_class(cls)
    if runtime is None or not attrs.has(runtime) or "__init__" in cls.members:
        return
    fields = {f.alias: f for f in attrs.fields(runtime)}
    parameters = [
        griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword),
    ]
    for name, param in inspect.signature(runtime).parameters.items():
        field = fields.get(name)
        member = cls.all_members.get(field.name if field is not None else name)
        annotation = getattr(member, "annotation", None)
        if annotation is None and param.annotation is not inspect.Parameter.empty:
            annotation = str(param.annotation)
        parameters.append(
            griffe.Parameter(
                name,
                annotation=annotation,
                kind=_KINDS[param.kind],
                default=_default(field, param.default),
            )
        )
    init = griffe.Function(
        "__init__",
        lineno=0,
        endlineno=0,
        parent=cls,
        parameters=griffe.Parameters(*parameters),
        returns="None",
    )
    cls.set_member("__init__", init)
    cls.labels.add("attrs")


def _visit(obj: griffe.Object, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if isinstance(obj, griffe.Class):
        _set_attrs_init(obj)
    for member in list(obj.members.values()):
        if not member.is_alias:
            _visit(member, seen)


class AttrsSignatures(griffe.Extension):
    """Give attrs classes the ``__init__`` that attrs generates."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Visit every object of a loaded package once."""
        # Import the runtime classes from the source tree griffe read, not from
        # whatever copy of the package happens to be installed.
        filepath = pkg.filepath
        if isinstance(filepath, list):  # a namespace package: any of its folders
            filepath = filepath[0] if filepath else None
        root = str(filepath.parent.parent) if filepath is not None else ""
        added = bool(root) and root not in sys.path
        if added:
            sys.path.insert(0, root)
        try:
            _visit(pkg, set())
        finally:
            if added:
                sys.path.remove(root)
