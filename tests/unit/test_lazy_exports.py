"""The runtime's exports load on first use: a consumer-only service starts without the web
stack (its restart time is what the chaos suite's crash points pay, every few seconds)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import saga_runtime
from saga_runtime._lazy import exported_names


def test_every_exported_name_resolves_to_its_defining_module() -> None:
    for name in saga_runtime.__all__:
        value = getattr(saga_runtime, name)
        assert value is not None
    assert saga_runtime.Outbox.__module__ == "saga_runtime.outbox"


def test_the_export_list_is_the_type_checking_imports_and_all_matches_it() -> None:
    with open(saga_runtime.__file__, encoding="utf-8") as source:
        names = exported_names(source.read())
    assert sorted(names) == sorted(saga_runtime.__all__)
    assert names["run_service"] == "saga_runtime.lifecycle"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        saga_runtime.nothing_here  # noqa: B018


def test_a_consumer_only_service_imports_neither_the_web_stack_nor_jwt() -> None:
    code = (
        "import sys\n"
        "from saga_runtime import run_service\n"
        "from saga_system import SYSTEM\n"
        "import payments.bootstrap\n"
        "print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn', 'jwt') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
