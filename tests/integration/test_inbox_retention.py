"""Inbox retention on the real database and broker: the relay's purge, its start-up check,
and ``sagactl inbox purge`` (dry run, deletion, audit, refusal inside a topic's retention)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from saga_runtime import (
    ConfigurationError,
    DatabaseSettings,
    KafkaSettings,
    OutboxRelay,
    RelaySettings,
    connect,
    ensure_topics,
    events_topic,
    purge_inbox,
    topic_retentions,
    verify_inbox_retention,
)
from sagactl.cli import main
from sagactl.ops.connection import SERVICES
from tests.support import kafka_login_env

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)


def applied(conn: psycopg.Connection, service: str, *ages: timedelta) -> list[uuid.UUID]:
    """Inbox rows of events ``service`` applied ``ages`` ago."""
    ids = [uuid.uuid4() for _ in ages]
    for event_id, age in zip(ids, ages, strict=True):
        conn.execute(
            f"INSERT INTO {service}.inbox (event_id, event_type, processed_at)"
            " VALUES (%s, 'OrderCreated', now() - %s)",
            (event_id, age),
        )
    return ids


def kept(conn: psycopg.Connection, service: str) -> set[uuid.UUID]:
    return {r[0] for r in conn.execute(f"SELECT event_id FROM {service}.inbox")}


def test_purge_deletes_inbox_rows_older_than_the_retention_and_keeps_newer_ones(
    database: DatabaseSettings, admin_conn: psycopg.Connection
) -> None:
    old = applied(admin_conn, "payments", 40 * DAY, 31 * DAY, 30 * DAY + timedelta(minutes=1))
    new = applied(admin_conn, "payments", 29 * DAY, timedelta(minutes=1))
    others = applied(admin_conn, "stock", 40 * DAY)
    # As the relay runs it: the service's role, autocommit; batches of 2 to cross a boundary.
    with connect(database, role="payments", name="inbox-purge-test", autocommit=True) as conn:
        assert purge_inbox(conn, "payments", 30 * DAY, batch_size=2) == len(old)
    assert kept(admin_conn, "payments") == set(new)
    assert kept(admin_conn, "stock") == set(others), "another service's inbox is its own"


def test_the_relay_purges_its_services_inbox_with_its_outbox(
    database: DatabaseSettings, admin_conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INBOX_RETENTION", "P10D")
    old = applied(admin_conn, "orders", 11 * DAY)
    new = applied(admin_conn, "orders", 9 * DAY)
    relay = OutboxRelay(
        schema="orders",
        database=database,
        settings=RelaySettings(),
        producer_factory=lambda: pytest.fail("a purge produces nothing"),
    )
    with connect(database, role="orders", name="relay-purge-test", autocommit=True) as conn:
        relay.purge(conn)
    assert kept(admin_conn, "orders") == set(new)
    assert not set(old) & kept(admin_conn, "orders")


def test_a_large_backlog_is_purged_a_bounded_pass_at_a_time(
    database: DatabaseSettings, admin_conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader purges between publish batches: one pass must not delete for minutes."""
    monkeypatch.setenv("INBOX_RETENTION", "P10D")
    admin_conn.execute(
        "INSERT INTO orders.inbox (event_id, event_type, processed_at)"
        " SELECT gen_random_uuid(), 'OrderCreated', now() - interval '11 days'"
        " FROM generate_series(1, 25000)"
    )
    relay = OutboxRelay(
        schema="orders",
        database=database,
        settings=RelaySettings(),
        producer_factory=lambda: pytest.fail("a purge produces nothing"),
    )
    with connect(database, role="orders", name="relay-purge-test", autocommit=True) as conn:
        assert relay._purge.purge_pass(conn), "more is left after one pass"
        assert len(kept(admin_conn, "orders")) == 5000
        assert not relay._purge.purge_pass(conn)
    assert kept(admin_conn, "orders") == set()


def test_the_inbox_has_an_index_for_the_purge(admin_conn: psycopg.Connection) -> None:
    indexed = {
        r[0]
        for r in admin_conn.execute(
            "SELECT schemaname FROM pg_indexes WHERE tablename = 'inbox'"
            " AND indexdef LIKE '%(processed_at)%'"
        )
    }
    assert indexed == set(SERVICES)


def test_an_inbox_retention_the_topics_outlast_is_refused_at_start_up(
    kafka: KafkaSettings,
) -> None:
    topic = events_topic("orders", kafka.topic_prefix)
    admin = AdminClient(kafka.client_properties())
    two_hours = timedelta(hours=2)
    [created] = admin.create_topics(
        [NewTopic(topic, 1, config={"retention.ms": str(int(two_hours.total_seconds() * 1000))})]
    ).values()
    created.result(timeout=30)

    assert topic_retentions(kafka, [topic, f"{kafka.topic_prefix}missing"]) == {topic: two_hours}
    with pytest.raises(ConfigurationError, match="INBOX_RETENTION"):
        verify_inbox_retention(kafka, [topic], timedelta(hours=1))
    with pytest.raises(ConfigurationError):
        verify_inbox_retention(kafka, [topic], two_hours)
    verify_inbox_retention(kafka, [topic], timedelta(hours=3))  # longer: accepted


def sagactl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main([*argv, "--json"])
    out, _ = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None


@pytest.fixture
def operator_env(
    database: DatabaseSettings, kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment of an operator's shell, with the system's topics (broker's retention)."""
    ensure_topics(kafka, [events_topic(s, kafka.topic_prefix) for s in SERVICES])
    monkeypatch.setenv("DATABASE_URL", database.url)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", kafka.topic_prefix)
    for name, value in kafka_login_env(kafka).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SAGACTL_ACTOR", "ada")
    monkeypatch.delenv("INBOX_RETENTION", raising=False)


@pytest.mark.usefixtures("operator_env")
def test_sagactl_inbox_purge_lists_on_a_dry_run_and_deletes_with_yes_audited(
    admin_conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    old_payments = applied(admin_conn, "payments", 45 * DAY, 31 * DAY)
    old_stock = applied(admin_conn, "stock", 60 * DAY)
    new = {
        "payments": applied(admin_conn, "payments", 29 * DAY),
        "stock": applied(admin_conn, "stock", DAY),
    }

    code, dry = sagactl(capsys, "inbox", "purge")
    assert code == 0 and dry["dry_run"] is True
    assert dry["older_than_s"] == (30 * DAY).total_seconds(), "INBOX_RETENTION's default"
    assert {s["service"]: s["rows"] for s in dry["services"]} == {
        "orders": 0,
        "stock": 1,
        "payments": 2,
        "shipments": 0,
        "notifications": 0,
    }
    assert kept(admin_conn, "payments") == set(old_payments + new["payments"]), "dry run"

    code, done = sagactl(capsys, "inbox", "purge", "--yes", "--reason", "INC-7 disk")
    assert code == 0
    assert {s: d["deleted"] for s, d in done["deleted"].items()} == {"payments": 2, "stock": 1}
    assert kept(admin_conn, "payments") == set(new["payments"])
    assert kept(admin_conn, "stock") == set(new["stock"])
    assert not set(old_stock) & kept(admin_conn, "stock")

    audit_id = done["deleted"]["payments"]["audit_id"]
    entry = admin_conn.execute(
        "SELECT actor, action, service, reason, target FROM ops.audit_log WHERE id = %s",
        (audit_id,),
    ).fetchone()
    assert entry is not None
    actor, action, service, reason, target = entry
    assert (actor, action, service, reason) == ("ada", "inbox.purge", "payments", "INC-7 disk")
    assert target["deleted"] == 2
    code, listed = sagactl(capsys, "audit-log", "--action", "inbox.purge")
    assert code == 0 and audit_id in {e["id"] for e in listed}


@pytest.mark.usefixtures("operator_env")
def test_sagactl_inbox_purge_refuses_a_cutoff_inside_a_topics_retention(
    admin_conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = applied(admin_conn, "payments", 2 * DAY)
    # The broker keeps the events topics 7 days (its default): 1 day is inside that window.
    code, _ = sagactl(capsys, "inbox", "purge", "--older-than", "1d", "--yes", "--reason", "x")
    assert code == 2
    assert kept(admin_conn, "payments") == set(rows)
