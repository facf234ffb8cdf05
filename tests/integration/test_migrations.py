"""Migrations on a real, empty PostgreSQL database: up to head, back down, up again.

Also: the schemas with runtime tables are exactly the services of the definition (a
service declared without its migration fails here), and ``create_service_schema``, which
a new service's migration uses, creates what the historical migrations created.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from migrations import downgrade, upgrade
from migrations.history import FIRST_SERVICES
from saga_harness.logins import drop_login_roles
from saga_runtime import (
    RUNTIME_TABLES,
    create_service_schema,
    drop_service_schema,
    effects_ddl,
)
from saga_system import SYSTEM
from tests.fixtures.database import SERVICES, with_database

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_database(infra) -> Iterator[str]:  # type: ignore[no-untyped-def]
    name = f"saga_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(infra.admin_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield with_database(infra.admin_database_url, name)
    with psycopg.connect(infra.admin_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        drop_login_roles(conn, name, ["runtime_helper_check", "effects_ddl_check"])


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
        ("notifications", "notifications", "notifications"),
    } <= at_head
    assert ("notifications", "deliveries", "notifications") not in at_head, "gone in 0007"
    assert all(schema == owner for schema, _, owner in at_head), "a service owns all its tables"

    downgrade(empty_database, "0001")
    assert tables(empty_database) == {(s, t, s) for s in FIRST_SERVICES for t in RUNTIME_TABLES}
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


def test_the_schemas_with_runtime_tables_are_exactly_the_services_of_the_definition(
    empty_database: str,
) -> None:
    upgrade(empty_database)
    holding = {schema for schema, table, _ in tables(empty_database) if table in RUNTIME_TABLES}
    assert holding == set(SYSTEM.names), (
        "each service of saga_system.SYSTEM needs a migration that creates its schema "
        "(saga_runtime.create_service_schema), and each such schema a service"
    )


def shape(conn: psycopg.Connection, schema: str, table: str) -> dict[str, object]:
    """What the catalog says about ``schema.table``, with the schema's name taken out."""

    def rows(query: str) -> list[tuple[object, ...]]:
        return sorted(
            tuple(str(v).replace(f"{schema}.", "<schema>.") for v in row)
            for row in conn.execute(query, {"schema": schema, "table": table})
        )

    return {
        "columns": rows(
            "SELECT ordinal_position, column_name, data_type, is_nullable, column_default,"
            " is_identity, identity_generation FROM information_schema.columns"
            " WHERE table_schema = %(schema)s AND table_name = %(table)s"
        ),
        "constraints": rows(
            "SELECT c.conname, c.contype, pg_get_constraintdef(c.oid) FROM pg_constraint c"
            " WHERE c.conrelid = format('%%I.%%I', %(schema)s::text, %(table)s::text)::regclass"
        ),
        "storage": rows(
            "SELECT reloptions FROM pg_class"
            " WHERE oid = format('%%I.%%I', %(schema)s::text, %(table)s::text)::regclass"
        ),
        "indexes": rows(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = %(schema)s AND tablename = %(table)s"
        ),
        "owner": rows(
            "SELECT tableowner = schemaname FROM pg_tables"
            " WHERE schemaname = %(schema)s AND tablename = %(table)s"
        ),
    }


def test_the_runtime_helper_creates_the_runtime_tables_the_migrations_created(
    empty_database: str,
) -> None:
    """A later service's tables (from the helper) match the first five's (migrations 0001-0005):
    a migration that changes every service's runtime tables must change the helper too."""
    upgrade(empty_database)
    with psycopg.connect(empty_database) as conn:
        create_service_schema(conn.execute, "runtime_helper_check")
        for table in RUNTIME_TABLES:
            for service in FIRST_SERVICES:
                assert shape(conn, "runtime_helper_check", table) == shape(conn, service, table), (
                    f"{table}: the helper's shape differs from {service}'s"
                )
        drop_service_schema(conn.execute, "runtime_helper_check")
        conn.commit()
    assert "runtime_helper_check" not in {schema for schema, _, _ in tables(empty_database)}


def test_effects_ddl_creates_the_effects_tables_migration_0006_created(
    empty_database: str,
) -> None:
    """0006 keeps a frozen copy of ``effects_ddl``: a change to one must go with a migration."""
    upgrade(empty_database)
    with psycopg.connect(empty_database) as conn:
        create_service_schema(conn.execute, "effects_ddl_check", *effects_ddl("effects_ddl_check"))
        for service in ("payments", "shipments", "notifications"):
            assert shape(conn, "effects_ddl_check", "effects") == shape(conn, service, "effects"), (
                f"effects_ddl's table differs from {service}'s (migration 0006)"
            )
        drop_service_schema(conn.execute, "effects_ddl_check")
        conn.commit()


def test_0007_marks_the_notifications_sent_before_it_as_delivered_and_announced(
    empty_database: str,
) -> None:
    """Before effects, a notification's row committed with every channel sent and
    CustomerNotified emitted; 0007 records it so, and the way back restores the table of
    partial deliveries that the code before it needs."""
    upgrade(empty_database, "0006")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO notifications.notifications (order_id, kind, recipient, subject,"
            " channels, sent_at) VALUES ('o-1', 'order_approved', 'a@example.com', 's',"
            " '{email,webhook}', '2026-01-02T03:04:05Z'), ('o-2', 'order_shipped',"
            " 'b@example.com', 's', '{}', now())"
        )
    upgrade(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT order_id, outcomes, notified_at = sent_at FROM notifications.notifications"
            " ORDER BY order_id"
        ).fetchall()
        assert rows == [
            ("o-1", {"email": "delivered", "webhook": "delivered"}, True),
            ("o-2", {}, True),
        ]
    downgrade(empty_database, "0006")
    assert ("notifications", "deliveries", "notifications") in tables(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = 'notifications' AND table_name = 'notifications'"
            )
        }
    assert not columns & {"outcomes", "notified_at"}


def test_0008_lets_a_shipment_wait_for_the_carrier_and_refuses_to_go_back_while_one_does(
    empty_database: str,
) -> None:
    booking = "INSERT INTO shipments.shipments (order_id, status) VALUES (%s, 'booking')"
    upgrade(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(booking, ("o-1",))
    # Raised through SQLAlchemy, which alembic runs on.
    with pytest.raises(Exception, match="waiting for the carrier"):
        downgrade(empty_database, "0007")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("UPDATE shipments.shipments SET status = 'scheduled'")
    downgrade(empty_database, "0007")
    with (
        psycopg.connect(empty_database, autocommit=True) as conn,
        pytest.raises(psycopg.errors.CheckViolation),
    ):
        conn.execute(booking, ("o-2",))
