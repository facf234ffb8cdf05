"""Exports of a package imported on first use (PEP 562 ``__getattr__``).

The package lists its exports once, as ordinary imports under ``if TYPE_CHECKING:``
(so type checkers and readers see them); this reads that block's ``from X import
name`` lines from the package's source and imports a module the first time one of
its names is asked for.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["lazy_exports"]


def exported_names(source: str) -> dict[str, str]:
    """Each name imported under ``if TYPE_CHECKING:`` in ``source``, with its module."""
    names: dict[str, str] = {}
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        ):
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module:
                    for alias in statement.names:
                        names[alias.asname or alias.name] = statement.module
    return names


def lazy_exports(package: str, init_file: str, namespace: dict[str, Any]) -> Callable[[str], Any]:
    """The package's module-level ``__getattr__``: imports the module that defines
    ``name`` and keeps the value in ``namespace``, so the next lookup is a plain one."""
    modules = exported_names(Path(init_file).read_text(encoding="utf-8"))

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
