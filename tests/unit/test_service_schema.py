"""The runtime-tables helper a new service's migration uses (its DDL runs in test_migrations)."""

from __future__ import annotations

import pytest

from saga_runtime import (
    ConfigurationError,
    create_service_schema,
    drop_service_schema,
    service_schema_statements,
)


def test_a_services_own_tables_are_created_under_its_role_after_the_runtime_tables() -> None:
    own = "CREATE TABLE loyalty.points (order_id text PRIMARY KEY)"
    statements = service_schema_statements("loyalty", own)
    assert "CREATE ROLE loyalty NOLOGIN" in statements[0]
    assert statements[1:3] == [
        "CREATE SCHEMA loyalty AUTHORIZATION loyalty",
        "SET LOCAL ROLE loyalty",
    ]
    assert statements[-3:-1] == [own, "RESET ROLE"]
    # Then the logins, as the admin: the service's own and its relay's, which own nothing.
    assert "current_database() || '_loyalty'" in statements[-1]
    assert "GRANT SELECT, UPDATE, DELETE ON loyalty.outbox TO %I', relay" in statements[-1]
    created = " ".join(statements)
    for table in ("loyalty.outbox", "loyalty.inbox", "loyalty.dead_letters"):
        assert f"CREATE TABLE {table} (" in created
    assert "inbox_processed_at_idx ON loyalty.inbox (processed_at)" in created


def test_create_and_drop_run_through_the_given_executor() -> None:
    ran: list[str] = []
    create_service_schema(ran.append, "loyalty")
    assert ran == service_schema_statements("loyalty")
    ran.clear()
    drop_service_schema(ran.append, "loyalty")
    assert ran == ["DROP SCHEMA IF EXISTS loyalty CASCADE"]


@pytest.mark.parametrize("name", ["Loyalty", "loyalty; DROP SCHEMA orders", "", "1loyalty"])
def test_a_name_that_is_no_plain_identifier_is_refused(name: str) -> None:
    with pytest.raises(ConfigurationError):
        service_schema_statements(name)
    with pytest.raises(ConfigurationError):
        drop_service_schema(print, name)
