"""Notifications in a fetched batch: another message's failure never sends a mail twice.

The real notifications composition root, runtime, database and broker, mailing the real
SMTP sink. (The rest of the service's tests are in ``test_notifications_service.py``.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from contracts.orders import Address, OrderApproved, OrderLine
from notifications import bootstrap
from notifications.settings import NotificationsSettings
from saga_runtime import (
    ConsumerSettings,
    DatabaseSettings,
    Envelope,
    KafkaSettings,
    dead_letter_topic,
    ensure_topics,
    events_topic,
)
from simulators.smtp_sink import SmtpSink, read_mail
from tests.fixtures.kafka import produce
from tests.support import ThreadedRunner, wait_until

pytestmark = pytest.mark.integration


def approved(order_id: str) -> Envelope:
    event = OrderApproved(
        order_id=order_id,
        customer_id="c-1",
        email=f"{order_id}@example.com",
        lines=[OrderLine(sku="SKU-1", quantity=1)],
        total_cents=1_000,
        shipping_address=Address(
            name="Ada", line1="1 Main St", city="London", postal_code="N1", country="GB"
        ),
    )
    return Envelope.new(event, aggregate_id=order_id, producer="orders")


@pytest.fixture
def mail_file(tmp_path: Path) -> Path:
    return tmp_path / "mail.jsonl"


@pytest.fixture
def sink(mail_file: Path) -> Iterator[SmtpSink]:
    with SmtpSink(path=mail_file) as running:
        yield running


def test_a_bad_message_after_sent_mails_in_one_batch_does_not_send_them_again(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    admin_conn: psycopg.Connection,
    sink: SmtpSink,
    mail_file: Path,
) -> None:
    """Today's failure: the batch rolled back and was applied again one message per
    transaction, so the customers of ord-1 and ord-2 got their mail twice."""
    source = events_topic("orders", kafka.topic_prefix)
    ensure_topics(
        kafka,
        [
            source,
            events_topic("notifications", kafka.topic_prefix),
            dead_letter_topic("notifications", kafka.topic_prefix),
        ],
    )
    bad = approved("ord-3")
    bad = bad.model_copy(update={"payload": {**bad.payload, "total_cents": "lots"}})
    events = [approved("ord-1"), approved("ord-2"), bad, approved("ord-4")]
    # One key: one partition, fetched together before the consumer starts (one batch).
    produce(kafka, source, [(b"one-partition", e.to_bytes()) for e in events])

    settings = NotificationsSettings(
        smtp_port=sink.port,
        sender="Saga Test <shop@saga.test>",
        kafka=kafka,
        database=database,
        consumer=ConsumerSettings(backoff_initial=0.05, backoff_max=0.3, batch_max_seconds=30),
    )
    runtime = bootstrap.build(settings)
    assert runtime.runner is not None

    def run() -> None:
        try:
            runtime.run_consumer(install_signal_handlers=False)
        finally:
            runtime.close()

    with ThreadedRunner(run, runtime.runner.stop):
        wait_until(
            lambda: (
                admin_conn.execute("SELECT count(*) FROM notifications.inbox").fetchone() == (3,)
            ),
            what="the three good events applied",
        )
        wait_until(
            lambda: (
                admin_conn.execute("SELECT count(*) FROM notifications.dead_letters").fetchone()
                == (1,)
            ),
            what="the bad one dead-lettered",
        )

    sent = Counter(m["message_id"] for m in read_mail(mail_file))
    assert sent == {
        "<ord-1.order_approved@saga-outbox>": 1,
        "<ord-2.order_approved@saga-outbox>": 1,
        "<ord-4.order_approved@saga-outbox>": 1,
    }
