"""A sixth service from three places (its package, its line in the definition, its migration)
runs on the real runtime, broker and database, and every derived view includes it.

The toy is ``tests/toy``: a loyalty service that awards points when an order ships. Its
process is ``python -m tests.toy.loyalty``, which is ``run_service`` like the five
services' ``__main__``; the test stops it with SIGTERM, as a supervisor would.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from confluent_kafka import Producer
from psycopg import sql
from sqlalchemy import create_engine, pool

from contracts.orders import OrderShipped
from migrations import upgrade
from saga_harness.logins import drop_login_roles, login_passwords
from saga_runtime import (
    DatabaseSettings,
    Envelope,
    KafkaSettings,
    OutboxRelay,
    RelaySettings,
    ensure_topics,
    events_topic,
    producer_config,
    relay_login,
)
from saga_system import SYSTEM
from tests.fixtures.database import with_database
from tests.fixtures.kafka import produce, read_topic
from tests.support import REPO, ThreadedRunner, service_env, wait_until
from tests.toy import migration
from tests.toy.definition import SYSTEM_WITH_LOYALTY

pytestmark = pytest.mark.integration


def test_the_definition_derives_the_sixth_services_wiring() -> None:
    system = SYSTEM_WITH_LOYALTY
    assert system.subscriptions("loyalty") == ["orders"]
    assert "loyalty" in system.subscribers("orders")
    assert "loyalty" in system.outboxes()  # the relay publishes its outbox
    assert {"t.loyalty.events", "t.loyalty.dead-letters"} <= set(system.topics("t."))
    assert system.consumer_groups("t.")["loyalty"] == "t.loyalty"
    assert "loyalty" not in SYSTEM.names, "the product's definition does not know the toy"


def run_migration(url: str, step: Callable[[], None]) -> None:
    """Run an Alembic migration function (``upgrade``/``downgrade``) on ``url``, as Alembic
    would: ``op`` bound to a connection, in one transaction."""
    engine = create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=pool.NullPool
    )
    with engine.begin() as conn, Operations.context(MigrationContext.configure(conn)):
        step()
    engine.dispose()


@pytest.fixture
def loyalty_database(infra, monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabaseSettings]:  # type: ignore[no-untyped-def]
    """A fresh database: the product's migrations to head, then the toy's."""
    name = f"saga_toy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(infra.admin_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(infra.admin_database_url, name)
    try:
        upgrade(url)
        run_migration(url, migration.upgrade)
        # Loyalty's logins' passwords, in the environment as the product's are.
        for variable, password in login_passwords(url, ["loyalty", relay_login("loyalty")]).items():
            monkeypatch.setenv(variable, password)
        yield DatabaseSettings(url=url, pool_min_size=1, pool_max_size=4)
    finally:
        with psycopg.connect(infra.admin_database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            drop_login_roles(conn, name, ["loyalty"])


def shipped(order_id: str) -> Envelope:
    event = OrderShipped(
        order_id=order_id, email="a@example.com", shipment_id="shp_1", carrier="Parcelo"
    )
    return Envelope.new(event, aggregate_id=order_id, producer="orders")


def processed(conn: psycopg.Connection, events: list[Envelope]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM loyalty.inbox WHERE event_id = ANY(%s)",
        ([e.event_id for e in events],),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_sixth_service_runs_on_the_real_runtime(
    loyalty_database: DatabaseSettings, kafka: KafkaSettings, tmp_path: Path
) -> None:
    ensure_topics(kafka, SYSTEM_WITH_LOYALTY.topics(kafka.topic_prefix))
    order = shipped("o-1")
    replayed = shipped("o-1")  # the same fact under a new event id: the inbox cannot dedupe it
    # One key, one partition: once ``replayed`` is in the inbox, the two before it were read.
    produce(
        kafka,
        events_topic("orders", kafka.topic_prefix),
        [(b"o-1", e.to_bytes()) for e in (order, order, replayed)],
    )

    log_path = tmp_path / "loyalty.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.toy.loyalty"],
            env=service_env(loyalty_database, kafka, LOYALTY_POINTS_PER_ORDER="25"),
            stdout=log,
            stderr=log,
            cwd=REPO,
        )
    try:
        with psycopg.connect(loyalty_database.url, autocommit=True) as conn:
            wait_until(
                lambda: processed(conn, [order, replayed]) == 2 or process.poll() is not None,
                what="the loyalty service applying both events",
            )
            assert process.poll() is None, log_path.read_text()[-3000:]
            points = conn.execute("SELECT order_id, email, points FROM loyalty.points").fetchall()
            outbox = conn.execute(
                "SELECT event_type, aggregate_id, envelope->>'causation_id' FROM loyalty.outbox"
            ).fetchall()
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0, log_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert points == [("o-1", "a@example.com", 25)], "one award, however often it is delivered"
    assert outbox == [("PointsAwarded", "o-1", str(order.event_id))]
    logged = log_path.read_text()
    assert '"event": "event.duplicate"' in logged, "the second delivery reached the service"
    assert '"event": "service.stopping"' in logged

    relay = OutboxRelay(
        schema="loyalty",
        database=loyalty_database,
        settings=RelaySettings(poll_interval=0.2, lock_retry_interval=0.2),
        producer_factory=lambda: Producer(producer_config(kafka, client_id="test-relay")),
        name="test-relay",
    )
    stop = threading.Event()
    with ThreadedRunner(lambda: relay.run(stop), stop.set):
        records = read_topic(kafka, events_topic("loyalty", kafka.topic_prefix), expect=1)
    assert [(r.key, Envelope.from_bytes(r.value).event_type) for r in records] == [
        (b"o-1", "PointsAwarded")
    ]
