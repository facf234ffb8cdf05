"""The local PostgreSQL's credentials: generated once, owner-only, in the URL, in no message."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from saga_harness.infra import InfraError, LocalStack, wait_for_postgres
from saga_harness.infra.postgres import LocalPostgres, postgres_url
from saga_harness.infra.postgres_auth import HBA, redact, superuser_password
from saga_harness.system import free_port


def test_the_superusers_password_is_generated_once_and_owner_only(tmp_path: Path) -> None:
    first = superuser_password(tmp_path)
    assert len(first) >= 32 and superuser_password(tmp_path) == first
    assert stat.S_IMODE((tmp_path / "superuser.password").stat().st_mode) == 0o600
    (tmp_path / "other").mkdir()
    assert superuser_password(tmp_path / "other") != first  # each stack a password of its own


def test_the_admin_url_carries_the_password_and_messages_do_not(tmp_path: Path) -> None:
    postgres = LocalPostgres(state_dir=tmp_path, port=55999, log=lambda _m: None)
    assert conninfo_to_dict(postgres.admin_url).get("password") is None  # none before start
    postgres.link.mkdir()
    password = superuser_password(postgres.home)
    params = conninfo_to_dict(postgres.admin_url)
    assert (params["user"], params["password"], params["dbname"]) == (
        "postgres",
        password,
        "postgres",
    )
    assert password not in redact(postgres.admin_url) and ":***@" in redact(postgres.admin_url)
    assert redact("postgresql://postgres@h:1/db") == "postgresql://postgres@h:1/db"
    # Characters a URL would misread are escaped.
    escaped = postgres_url(port=1, database="d", password="a@b/c:d")
    assert conninfo_to_dict(escaped)["password"] == "a@b/c:d"


def test_a_server_that_does_not_answer_is_reported_without_the_password() -> None:
    url = postgres_url(port=free_port(), database="postgres", password="Zq8-never-shown")
    with pytest.raises(InfraError) as failed:
        wait_for_postgres(url, timeout=0.5)
    assert "Zq8-never-shown" not in str(failed.value) and ":***@" in str(failed.value)


def test_every_hba_line_asks_for_a_scram_password() -> None:
    rules = [line.split() for line in HBA.splitlines() if line and not line.startswith("#")]
    assert rules and all(rule[-1] == "scram-sha-256" for rule in rules)
    assert {rule[1] for rule in rules} == {"all", "replication"}  # Debezium's slot included


def test_the_stacks_addresses_show_no_password_in_their_repr(tmp_path: Path) -> None:
    stack = LocalStack(state_dir=tmp_path, log=lambda _m: None)
    stack.postgres.link.mkdir()
    password = superuser_password(stack.postgres.home)
    assert password in stack.addresses.admin_database_url
    assert password not in repr(stack.addresses)  # a failed test prints its fixtures
