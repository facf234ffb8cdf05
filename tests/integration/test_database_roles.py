"""Least privilege in PostgreSQL, on the real server: each service and each outbox relay logs in
as a role of its own that may touch its own rows and nothing else.

Every denial is tried as an attacker who runs arbitrary SQL on a service's connection would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import psycopg
import pytest
from psycopg import sql

from saga_runtime import (
    ConfigurationError,
    DatabaseProbe,
    DatabaseSettings,
    connect,
    login_credentials,
    password_variable,
    relay_login,
    set_login_passwords,
)
from saga_system import SYSTEM
from sagactl.cli import system_logins
from simulators.payment_provider.ledger import ensure_schema

pytestmark = pytest.mark.integration

SERVICES = tuple(SYSTEM.names)
Denied = psycopg.errors.InsufficientPrivilege


def denied(conn: psycopg.Connection, statement: str) -> bool:
    """Whether the server refuses ``statement`` for lack of privilege (rolled back either way)."""
    try:
        with conn.transaction():
            conn.execute(statement)
    except Denied:
        return True
    return False


def test_a_service_reads_and_writes_its_own_rows_and_nothing_else(
    database: DatabaseSettings, admin_conn: psycopg.Connection
) -> None:
    with admin_conn.transaction():
        ensure_schema(admin_conn)  # the provider simulator's ledger, card tokens and all
    for service in SERVICES:
        with connect(database, role=service, name="test-roles") as conn:
            assert conn.execute("SELECT current_user").fetchone() == (
                f"{conn.info.dbname}_{service}",
            )
            # Its own rows: read, write, delete (inside a transaction that rolls back).
            with conn.transaction(force_rollback=True):
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.dead_letters (source_topic, source_partition,"
                        " source_offset, error_type, error) VALUES ('t', 0, 0, 'e', 'e')"
                    ).format(sql.Identifier(service))
                )
                conn.execute(sql.SQL("DELETE FROM {}.dead_letters").format(sql.Identifier(service)))
            for other in SERVICES:
                if other != service:
                    assert denied(conn, f"SELECT 1 FROM {other}.outbox LIMIT 1"), (service, other)
                    assert denied(conn, f"SET ROLE {other}"), (service, other)
            assert denied(conn, "SELECT 1 FROM provider.charges LIMIT 1"), service
            # Not even its own tables' owner: no DDL, no owner to become.
            assert denied(conn, f"SET ROLE {service}"), service
            assert denied(conn, f"CREATE TABLE {service}.planted (x int)"), service
            assert denied(conn, f"ALTER TABLE {service}.outbox ADD COLUMN planted int"), service
            assert denied(conn, f"DROP TABLE {service}.inbox"), service
            assert denied(conn, "CREATE TABLE public.planted (x int)"), service
            assert denied(conn, "CREATE SCHEMA planted"), service


def test_a_relay_may_only_read_mark_and_purge_its_outbox_and_purge_its_inbox(
    database: DatabaseSettings,
) -> None:
    with connect(database, role=relay_login("orders"), name="test-roles") as conn:
        with conn.transaction(force_rollback=True):
            conn.execute("UPDATE orders.outbox SET attempts = attempts WHERE false")
            conn.execute("DELETE FROM orders.outbox WHERE false")
            conn.execute("DELETE FROM orders.inbox WHERE false")
        assert denied(conn, "INSERT INTO orders.outbox (event_id) VALUES (gen_random_uuid())")
        assert denied(conn, "SELECT 1 FROM orders.orders LIMIT 1"), "the service's own data"
        assert denied(conn, "SELECT 1 FROM stock.outbox LIMIT 1"), "another service's outbox"
        assert denied(conn, "SET ROLE orders")


def _scram_verifies(verifier: str, password: str) -> bool:
    # SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> (RFC 5803), as the server keeps it.
    method, rest = verifier.split("$", 1)
    params, keys = rest.split("$")
    iterations, salt = params.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return method == "SCRAM-SHA-256" and hashlib.sha256(client_key).digest() == base64.b64decode(
        stored_key
    )


def test_each_login_has_the_password_configured_for_it_and_it_is_never_sent_in_clear(
    database: DatabaseSettings, admin_conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    logins = system_logins()
    stored = dict(
        admin_conn.execute(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)",
            ([f"{admin_conn.info.dbname}_{login}" for login in logins],),
        ).fetchall()
    )
    for login in logins:
        password = os.environ[password_variable(login)]
        assert _scram_verifies(stored[f"{admin_conn.info.dbname}_{login}"], password), login
    # Rotation: a new value set again; the statement carries a verifier, never the password.
    new = {password_variable("orders"): "rotated-Zq8-password"}
    sent: list[str] = []
    execute = admin_conn.execute
    monkeypatch.setattr(
        admin_conn, "execute", lambda s, *a: sent.append(s.as_string(admin_conn)) or execute(s, *a)
    )
    try:
        assert set_login_passwords(admin_conn, logins, new) == ["orders"]
        monkeypatch.setattr(admin_conn, "execute", execute)
        assert sent and not any("rotated-Zq8-password" in statement for statement in sent)
        verifier = admin_conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s",
            (f"{admin_conn.info.dbname}_orders",),
        ).fetchone()
        assert verifier and _scram_verifies(verifier[0], "rotated-Zq8-password")
    finally:
        # Back to the session's password: the server checks it, and later tests log in with it.
        monkeypatch.setattr(admin_conn, "execute", execute)
        set_login_passwords(admin_conn, ["orders"])


def test_a_password_appears_in_no_error_and_no_readiness_report(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    password = "Zq8-never-shown"
    monkeypatch.setenv(password_variable("orders"), password)
    closed = DatabaseSettings(url="postgresql://127.0.0.1:1/saga", connect_timeout=1)
    assert login_credentials(closed.url, "orders") == {"user": "saga_orders", "password": password}
    with pytest.raises(psycopg.OperationalError) as failed:
        connect(closed, role="orders", name="test-roles")
    assert password not in str(failed.value) and password not in repr(failed.value)
    problem = DatabaseProbe(closed, role="orders", name="test-roles", timeout=1)()
    assert problem and password not in problem
    # From a file (a container secret): an unreadable one is named, its content never shown.
    secret = tmp_path / "orders-password"
    secret.write_text(password + "\n")
    monkeypatch.delenv(password_variable("orders"))
    monkeypatch.setenv(f"{password_variable('orders')}_FILE", str(secret))
    assert login_credentials(closed.url, "orders")["password"] == password
    monkeypatch.setenv(f"{password_variable('orders')}_FILE", str(tmp_path))  # a directory
    with pytest.raises(ConfigurationError) as unreadable:
        login_credentials(closed.url, "orders")
    assert str(tmp_path) in str(unreadable.value) and password not in str(unreadable.value)


def test_a_login_is_refused_with_a_wrong_password_and_accepted_with_its_own(
    database: DatabaseSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with connect(database, role="orders", name="test-roles") as conn:
        assert conn.execute("SELECT current_user").fetchone() == (f"{conn.info.dbname}_orders",)
    monkeypatch.setenv(password_variable("orders"), "wrong-Zq8-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(database, role="orders", name="test-roles")
    # Nor with none of its own: the admin's password in the URL is not the role's.
    monkeypatch.delenv(password_variable("orders"))
    assert "password" not in login_credentials(database.url, "orders")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(database, role="orders", name="test-roles")
