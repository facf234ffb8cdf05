"""Every service of the definition ships and is type-checked.

``pip install .`` (the production image) packages only what pyproject.toml's package list
includes, and mypy checks only the packages it names: a service missing from either would
run in development and fail to import in its container, or go unchecked. Until those lists
derive from the package layout, they are a place a new service touches; this makes sure
it is not forgotten.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

from saga_system import SYSTEM

REPO = Path(__file__).resolve().parents[2]


def test_every_service_is_packaged_and_type_checked() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    find = config["tool"]["setuptools"]["packages"]["find"]
    packaged = set(
        find_packages(
            where=str(REPO / find.get("where", ["."])[0]),
            include=find.get("include", ["*"]),
            exclude=find.get("exclude", []),
        )
    )
    assert [name for name in SYSTEM.names if name not in packaged] == []
    checked = config["tool"]["mypy"].get("packages")
    if checked is not None:  # else mypy takes its files from elsewhere
        assert [name for name in SYSTEM.names if name not in checked] == []
