"""Two consumers whose batches share aggregates, on the real broker and database.

One service, two consumer threads in one group. Each handler locks a partner aggregate
after its own: the first consumer's events are about order-0 and need order-1, the
second's the other way round, so their batches deadlock, and PostgreSQL ends one of them.
The batches also hold a duplicate and a poison message. Whatever the interleaving, every
event is applied once, no read-modify-write of an aggregate is lost, and the poison is
dead-lettered once. Nothing else is.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from saga_runtime import (
    ConsumerSettings,
    DatabaseSettings,
    Envelope,
    KafkaSettings,
    ServiceRuntime,
    UnitOfWork,
    consumer_group,
    dead_letter_topic,
    ensure_topics,
    events_topic,
)
from tests.support import Numbered, ThreadedRunner, envelope, wait_until

pytestmark = pytest.mark.integration

PARTNER = {"order-0": "order-1", "order-1": "order-0"}

DDL = """
CREATE TABLE IF NOT EXISTS stock.test_totals (aggregate_id text PRIMARY KEY, total int NOT NULL);
CREATE TABLE IF NOT EXISTS stock.test_applied (event_id uuid NOT NULL, aggregate_id text NOT NULL);
TRUNCATE stock.test_totals, stock.test_applied;
"""


def add_to_total(uow: UnitOfWork, event: Envelope) -> None:
    """A read-modify-write of the aggregate's total: correct only under its lock."""
    n = event.payload_as(Numbered).n
    if n <= 2:
        time.sleep(0.3)  # so that the other batch holds its own aggregate by then
    uow.lock(PARTNER[event.aggregate_id])
    row = uow.conn.execute(
        "SELECT total FROM stock.test_totals WHERE aggregate_id = %s", (event.aggregate_id,)
    ).fetchone()
    if row is None:
        uow.conn.execute("INSERT INTO stock.test_totals VALUES (%s, %s)", (event.aggregate_id, n))
    else:
        uow.conn.execute(
            "UPDATE stock.test_totals SET total = %s WHERE aggregate_id = %s",
            (row[0] + n, event.aggregate_id),
        )
    uow.conn.execute(
        "INSERT INTO stock.test_applied VALUES (%s, %s)", (event.event_id, event.aggregate_id)
    )


def members_assigned(kafka: KafkaSettings) -> int:
    """How many members of the stock group hold partitions now."""
    admin = AdminClient(kafka.client_properties())
    group = consumer_group("stock", kafka.topic_prefix)
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return sum(1 for m in described.members if m.assignment.topic_partitions)


def test_two_consumers_whose_batches_share_aggregates_apply_each_event_once(
    database: DatabaseSettings, kafka: KafkaSettings, admin_conn: psycopg.Connection
) -> None:
    admin_conn.execute("SET ROLE stock")
    admin_conn.execute(DDL)
    admin_conn.execute("RESET ROLE")
    topic = events_topic("orders", kafka.topic_prefix)
    ensure_topics(kafka, [topic, dead_letter_topic("stock", kafka.topic_prefix)])
    runtime = ServiceRuntime.build(
        service="stock",
        kafka=kafka,
        database=database,
        consumer=ConsumerSettings(backoff_initial=0.05, backoff_max=0.5),
        handlers={"Numbered": add_to_total},
        subscribes_to=["orders"],
        consumers=2,
    )
    zero = [envelope("order-0", n) for n in range(1, 21)]
    one = [envelope("order-1", n) for n in range(1, 21)]

    def run() -> None:
        try:
            runtime.run_consumer(install_signal_handlers=False)
        finally:
            runtime.close()

    def count(table: str) -> int:
        row = admin_conn.execute(f"SELECT count(*) FROM stock.{table}").fetchone()
        return int(row[0]) if row else 0

    with ThreadedRunner(run, runtime.stop_consumers):
        wait_until(lambda: members_assigned(kafka) == 2, what="both consumers assigned", timeout=60)
        # The range assignor gives the first member partitions 0 and 1, the second 2: each
        # consumer's batch is about one aggregate, and needs the other's.
        producer = Producer({**kafka.client_properties(), "acks": "all"})
        for event in zero[:5]:
            producer.produce(topic, key=b"order-0", value=event.to_bytes(), partition=0)
        producer.produce(topic, key=b"order-0", value=zero[4].to_bytes(), partition=0)  # again
        producer.produce(topic, key=b"poison", value=b"\xff\xfe not an envelope", partition=0)
        for event in zero[5:]:
            producer.produce(topic, key=b"order-0", value=event.to_bytes(), partition=0)
        for event in one:
            producer.produce(topic, key=b"order-1", value=event.to_bytes(), partition=2)
        assert producer.flush(30) == 0
        wait_until(lambda: count("test_applied") >= 40, what="every event applied", timeout=120)
        wait_until(
            lambda: count("dead_letters"),
            what="the poison dead-lettered",
            timeout=60,
        )
        time.sleep(1.0)  # a second copy of the duplicate, had it been applied, would show

    rows = admin_conn.execute(
        "SELECT event_id::text, count(*) FROM stock.test_applied GROUP BY event_id"
    ).fetchall()
    assert sorted(rows) == sorted((str(e.event_id), 1) for e in zero + one)
    totals: dict[str, int] = dict(
        admin_conn.execute("SELECT aggregate_id, total FROM stock.test_totals")
    )
    assert totals == {"order-0": 210, "order-1": 210}, "an update under the lock was lost"
    letters = admin_conn.execute("SELECT error_type FROM stock.dead_letters").fetchall()
    assert letters == [("InvalidEnvelopeError",)]
