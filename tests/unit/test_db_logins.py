"""Which role a process logs in as, and where its password comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from saga_harness.logins import passwords_for, without_user
from saga_runtime import (
    ConfigurationError,
    login_credentials,
    login_role,
    password_variable,
    relay_login,
)

URL = "postgresql://admin:admin-secret@db.internal:5432/saga"


def test_each_service_and_each_outbox_relay_has_a_login_named_after_the_database() -> None:
    assert login_role(URL, "orders") == "saga_orders"
    assert login_role(URL, relay_login("orders")) == "saga_orders_relay"
    assert password_variable("orders") == "DATABASE_PASSWORD_ORDERS"
    assert password_variable(relay_login("stock")) == "DATABASE_PASSWORD_STOCK_RELAY"


def test_the_login_replaces_the_urls_user_and_password() -> None:
    environ = {"DATABASE_PASSWORD_ORDERS": "orders-own"}
    assert login_credentials(URL, "orders", environ) == {
        "user": "saga_orders",
        "password": "orders-own",
    }
    # None configured: libpq's own sources (.pgpass, a certificate), never the admin's.
    assert login_credentials(URL, "stock", environ) == {"user": "saga_stock"}


def test_a_password_file_is_read_and_the_variable_wins_over_it(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    environ = {"DATABASE_PASSWORD_ORDERS_FILE": str(secret)}
    assert login_credentials(URL, "orders", environ)["password"] == "from-file"
    environ["DATABASE_PASSWORD_ORDERS"] = "from-env"
    assert login_credentials(URL, "orders", environ)["password"] == "from-env"


def test_a_url_without_a_database_or_a_bad_name_is_refused(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("PGDATABASE", raising=False)
    with pytest.raises(ConfigurationError, match="names no database"):
        login_role("postgresql://db.internal:5432", "orders")
    with pytest.raises(ConfigurationError):
        login_role(URL, "orders; DROP ROLE x")


def test_the_harness_gives_each_process_only_its_own_passwords() -> None:
    passwords = {
        password_variable(login): f"pw-{login}"
        for service in ("orders", "stock", "payments", "shipments", "notifications")
        for login in (service, relay_login(service))
    }
    assert passwords_for("orders", passwords) == {"DATABASE_PASSWORD_ORDERS": "pw-orders"}
    relay = passwords_for("relay-0", passwords)
    assert set(relay) == {n for n in passwords if n.endswith("_RELAY")}
    assert passwords_for("provider", passwords) == {}
    assert without_user(URL) == "postgresql://db.internal:5432/saga"
