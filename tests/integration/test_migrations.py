"""Migrations on a real, empty PostgreSQL database: up to head, back down, up again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from migrations import downgrade, upgrade
from tests.fixtures.database import RUNTIME_TABLES, SERVICES, with_database

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_database(infra) -> Iterator[str]:  # type: ignore[no-untyped-def]
    name = f"saga_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(infra.admin_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield with_database(infra.admin_database_url, name)
    with psycopg.connect(infra.admin_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def tables(url: str) -> set[tuple[str, str, str]]:
    """(schema, table, owner) of every table outside the system schemas."""
    with psycopg.connect(url) as conn:
        return {
            (r[0], r[1], r[2])
            for r in conn.execute(
                "SELECT schemaname, tablename, tableowner FROM pg_tables"
                " WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'public')"
            )
        }


def test_empty_database_to_head_and_back_down(empty_database: str) -> None:
    upgrade(empty_database)
    at_head = tables(empty_database)
    assert {(s, t, s) for s in SERVICES for t in RUNTIME_TABLES} <= at_head, (
        "each service owns its own outbox, inbox and dead_letters"
    )
    assert {
        ("orders", "orders", "orders"),
        ("stock", "products", "stock"),
        ("notifications", "deliveries", "notifications"),
    } <= at_head
    assert all(schema == owner for schema, _, owner in at_head), "a service owns all its tables"

    downgrade(empty_database, "0001")
    assert tables(empty_database) == {(s, t, s) for s in SERVICES for t in RUNTIME_TABLES}
    downgrade(empty_database, "base")
    assert tables(empty_database) == set()

    upgrade(empty_database)  # and the round trip is repeatable
    assert tables(empty_database) == at_head


def test_a_service_role_cannot_touch_another_services_tables(empty_database: str) -> None:
    upgrade(empty_database)
    with psycopg.connect(empty_database) as conn:
        conn.execute("SET ROLE stock")
        conn.execute("SELECT count(*) FROM stock.outbox")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM orders.outbox")
