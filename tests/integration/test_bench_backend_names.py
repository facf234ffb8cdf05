"""The saga bench's map of PostgreSQL backends to the application that opened them."""

from __future__ import annotations

import psycopg
import pytest

from saga_harness.bench.cpu_split import BackendNames
from saga_runtime import DatabaseSettings

pytestmark = pytest.mark.integration


def test_backend_names_lists_client_backends_by_application_name(
    database: DatabaseSettings,
) -> None:
    names = BackendNames(database.url)
    try:
        with psycopg.connect(database.url, application_name="payment-provider") as provider:
            provider_pid = provider.info.backend_pid
            found = names()
            assert found[provider_pid] == "payment-provider"
            assert "bench:cpu" in found.values(), "its own backend is named as the harness's"
            assert all(isinstance(pid, int) for pid in found)
    finally:
        names.close()
