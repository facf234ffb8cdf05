"""The notifications service on the real runtime, database and broker, mailing the real sink.

Its sends are effects: the consumer only claims the notification and requests them; the
service's executor sends, retrying transient failures with the backoff of the system
definition (shortened here, ``FAST``), and decides on each outcome.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from contracts.orders import Address, OrderApproved, OrderCancelled, OrderLine, OrderShipped
from notifications import bootstrap, domain, handlers
from notifications.settings import NotificationsSettings
from notifications.webhook import verify
from saga_runtime import (
    ConsumerSettings,
    DatabaseSettings,
    EffectSettings,
    Envelope,
    Event,
    KafkaSettings,
    RetryPolicy,
    ServiceRuntime,
    System,
    build_runtime,
    dead_letter_topic,
    ensure_topics,
    events_topic,
    faults,
)
from saga_system import SYSTEM
from simulators.smtp_sink import SmtpSink, read_mail
from tests.fixtures.kafka import produce
from tests.support import ThreadedRunner, wait_until

pytestmark = pytest.mark.integration

SECRET = "webhook-test-secret"
SENDER = "Saga Test <shop@saga.test>"
ADDRESS = Address(name="Ada", line1="1 Main St", city="London", postal_code="N1", country="GB")


def approved(order_id: str) -> OrderApproved:
    return OrderApproved(
        order_id=order_id,
        customer_id="c-1",
        email=f"{order_id}@example.com",
        lines=[OrderLine(sku="SKU-1", quantity=2)],
        total_cents=2_000,
        shipping_address=ADDRESS,
    )


def shipped(order_id: str) -> OrderShipped:
    return OrderShipped(
        order_id=order_id, email=f"{order_id}@example.com", shipment_id="shp_1", carrier="Parcelo"
    )


def cancelled(order_id: str, reason: str) -> OrderCancelled:
    return OrderCancelled(
        order_id=order_id,
        email=f"{order_id}@example.com",
        reason_code="payment_declined",
        reason=reason,
        previous_status="PENDING",
    )


def wrap(event: Event, order_id: str) -> Envelope:
    return Envelope.new(event, aggregate_id=order_id, producer="orders")


@pytest.fixture
def mail_file(tmp_path: Path) -> Path:
    return tmp_path / "mail.jsonl"


@pytest.fixture
def sink(mail_file: Path) -> Iterator[SmtpSink]:
    with SmtpSink(path=mail_file) as running:
        yield running


@pytest.fixture
def source(kafka: KafkaSettings) -> str:
    topic = events_topic("orders", kafka.topic_prefix)
    ensure_topics(
        kafka,
        [
            topic,
            events_topic("notifications", kafka.topic_prefix),
            dead_letter_topic("notifications", kafka.topic_prefix),
        ],
    )
    return topic


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int


class Receiver:
    """A webhook endpoint on a free port; answers ``failure`` (503) to the first
    ``failures`` requests, then ``success`` (204)."""

    def __init__(self, failures: int = 0, *, failure: int = 503, success: int = 204) -> None:
        self.failures = failures
        self.failure = failure
        self.success = success
        self.deliveries: list[Delivery] = []
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    failing = len(receiver.deliveries) < receiver.failures
                    status = receiver.failure if failing else receiver.success
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.deliveries.append(Delivery(headers, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/saga"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


# The definition's retry policy (1 s doubling to 30 s between attempts), shortened so that
# an outage of many attempts lasts a second.
FAST = RetryPolicy(
    initial_interval=timedelta(milliseconds=50), maximum_interval=timedelta(milliseconds=200)
)


def fast_retries(system: System) -> System:
    service = system.service("notifications")
    effects = {name: dataclasses.replace(e, retry=FAST) for name, e in service.effects.items()}
    fast = dataclasses.replace(service, effects=effects)
    return dataclasses.replace(
        system, services=tuple(fast if s.name == service.name else s for s in system.services)
    )


FAST_SYSTEM = fast_retries(SYSTEM)


def settings(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    *,
    smtp_port: int,
    webhook_url: str | None = None,
    max_attempts: int = 5,
    lease: float = 10.0,
) -> NotificationsSettings:
    """``max_attempts`` is the consumer's retry budget: before effects, each attempt at an
    event tried to send its mail, so an outage of more attempts dead-lettered it."""
    return NotificationsSettings(
        smtp_port=smtp_port,
        sender=SENDER,
        webhook_url=webhook_url,
        webhook_secret=SECRET if webhook_url else None,  # type: ignore[arg-type]
        kafka=kafka,
        database=database,
        consumer=ConsumerSettings(backoff_initial=0.05, backoff_max=0.3, max_attempts=max_attempts),
        effects=EffectSettings(poll_interval=0.1, lease=lease),
    )


def build(config: NotificationsSettings) -> ServiceRuntime:
    """The service as ``bootstrap.build`` builds it, with ``FAST`` retries."""
    return build_runtime(
        FAST_SYSTEM, "notifications", config, bootstrap.compose(config).dependencies
    )


def consuming(runtime: ServiceRuntime) -> ThreadedRunner:
    """The consumers and the effect executor, until the block ends."""

    def run() -> None:
        try:
            runtime.run_consumer(install_signal_handlers=False)
        finally:
            runtime.close()

    return ThreadedRunner(run, runtime.stop_consumers)


def applied(conn: psycopg.Connection, envelope: Envelope) -> bool:
    """The event's transaction committed (its inbox row exists)."""
    row = conn.execute(
        "SELECT 1 FROM notifications.inbox WHERE event_id = %s", (envelope.event_id,)
    ).fetchone()
    return row is not None


def scalar(conn: psycopg.Connection, query: str) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def notification_rows(conn: psycopg.Connection) -> list[tuple[str, str, str, list[str]]]:
    return [
        (r[0], r[1], r[2], list(r[3]))
        for r in conn.execute(
            "SELECT order_id, kind, recipient, channels FROM notifications.notifications"
            " ORDER BY order_id, kind"
        )
    ]


def outcomes(conn: psycopg.Connection, order_id: str) -> tuple[dict[str, str], bool]:
    """The order's one notification: each channel's outcome, and whether it was announced."""
    [row] = conn.execute(
        "SELECT outcomes, notified_at IS NOT NULL FROM notifications.notifications"
        " WHERE order_id = %s",
        (order_id,),
    ).fetchall()
    return row[0], row[1]


def customer_notified(conn: psycopg.Connection) -> list[tuple[str, dict[str, Any]]]:
    return [
        (r[0], r[1]["payload"])
        for r in conn.execute(
            "SELECT aggregate_id, envelope FROM notifications.outbox"
            " WHERE event_type = 'CustomerNotified' ORDER BY id"
        )
    ]


@dataclass(frozen=True)
class EffectRow:
    id: int
    key: str
    status: str
    attempts: int
    last_error: str | None


def effects(conn: psycopg.Connection) -> list[EffectRow]:
    return [
        EffectRow(*r)
        for r in conn.execute(
            "SELECT id, idempotency_key, status, attempts, last_error FROM notifications.effects"
            " ORDER BY id"
        )
    ]


def dead_letters(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    return [
        (r[0], r[1], r[2])
        for r in conn.execute(
            "SELECT aggregate_id, error_type, error FROM notifications.dead_letters ORDER BY id"
        )
    ]


def test_one_mail_per_order_and_kind_despite_redeliveries_and_a_second_cancellation(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    source: str,
    sink: SmtpSink,
    mail_file: Path,
    admin_conn: psycopg.Connection,
) -> None:
    ok_approved, ok_shipped = wrap(approved("ord-1"), "ord-1"), wrap(shipped("ord-1"), "ord-1")
    shipped_again = wrap(shipped("ord-1"), "ord-1")  # a replay: same fact, new event id
    declined = wrap(cancelled("ord-2", "the card was declined"), "ord-2")
    timed_out = wrap(cancelled("ord-2", "payment took too long"), "ord-2")
    deliveries: list[tuple[bytes | None, bytes | None]] = [
        (b"ord-1", e.to_bytes())
        for e in (ok_approved, ok_approved, ok_shipped, ok_approved, shipped_again)
    ]
    deliveries += [(b"ord-2", e.to_bytes()) for e in (declined, declined, timed_out)]
    produce(kafka, source, deliveries)

    with consuming(build(settings(database, kafka, smtp_port=sink.port))):
        # Each order's events share a partition and are applied in order, so once the last
        # one committed, every redelivery before it has been handled too.
        wait_until(lambda: applied(admin_conn, shipped_again), what="ord-1's last event")
        wait_until(lambda: applied(admin_conn, timed_out), what="ord-2's last event")
        wait_until(lambda: len(customer_notified(admin_conn)) == 3, what="three notified")

    mails = read_mail(mail_file)
    assert sorted(m["message_id"] for m in mails) == [
        "<ord-1.order_approved@saga-outbox>",
        "<ord-1.order_shipped@saga-outbox>",
        "<ord-2.order_cancelled@saga-outbox>",
    ]
    by_id = {m["message_id"]: m for m in mails}
    cancel_mail = by_id["<ord-2.order_cancelled@saga-outbox>"]
    assert cancel_mail["to"] == ["ord-2@example.com"]
    assert cancel_mail["from"] == "shop@saga.test"
    assert cancel_mail["subject"] == "Your order ord-2 was cancelled"
    assert "Reason: the card was declined" in cancel_mail["body"], "the first cancellation told"
    assert (
        cancel_mail["body"]
        == domain.order_cancelled(cancelled("ord-2", "the card was declined")).body
    )
    assert "Total: 20.00" in by_id["<ord-1.order_approved@saga-outbox>"]["body"]

    assert notification_rows(admin_conn) == [
        ("ord-1", "order_approved", "ord-1@example.com", ["email"]),
        ("ord-1", "order_shipped", "ord-1@example.com", ["email"]),
        ("ord-2", "order_cancelled", "ord-2@example.com", ["email"]),
    ]
    assert sorted((order, p["kind"]) for order, p in customer_notified(admin_conn)) == [
        ("ord-1", "order_approved"),
        ("ord-1", "order_shipped"),
        ("ord-2", "order_cancelled"),
    ]
    assert sorted((e.key, e.status, e.attempts) for e in effects(admin_conn)) == [
        ("notifications:ord-1:order_approved:email", "done", 1),
        ("notifications:ord-1:order_shipped:email", "done", 1),
        ("notifications:ord-2:order_cancelled:email", "done", 1),
    ]
    assert scalar(admin_conn, "SELECT count(*) FROM notifications.inbox") == 5
    assert dead_letters(admin_conn) == []


class Said:
    """Stands in for a module's logger: which lines it was asked for, at which level."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **_: self.lines.append((level, event))


def test_a_notification_sent_as_planned_writes_no_info_line_of_its_own(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    source: str,
    sink: SmtpSink,
    admin_conn: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two e-mails a saga: a line each for its request and its sending would be most of
    the service's log. At info the service writes a line per batch
    (``batch.applied``, ``effects.decided``); a notification's own lines are at debug, and
    only what went wrong (a failed channel, an undelivered notification) is above."""
    said = Said()
    monkeypatch.setattr(handlers, "log", said)
    produce(kafka, source, [(b"ord-9", wrap(approved("ord-9"), "ord-9").to_bytes())])
    with consuming(build(settings(database, kafka, smtp_port=sink.port))):
        wait_until(lambda: len(customer_notified(admin_conn)) == 1, what="ord-9 notified")
    assert ("debug", "notification.requested") in said.lines
    assert ("debug", "notification.sent") in said.lines
    assert [line for line in said.lines if line[0] != "debug"] == []


def test_the_webhook_receives_a_correctly_signed_post(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    source: str,
    sink: SmtpSink,
    mail_file: Path,
    admin_conn: psycopg.Connection,
) -> None:
    event = wrap(approved("ord-7"), "ord-7")
    produce(kafka, source, [(b"ord-7", event.to_bytes())])

    with Receiver() as receiver:
        config = settings(database, kafka, smtp_port=sink.port, webhook_url=receiver.url)
        with consuming(build(config)):
            wait_until(lambda: customer_notified(admin_conn), what="the customer notified")

    [delivery] = receiver.deliveries
    signature = delivery.headers["x-saga-signature"]
    assert re.fullmatch(r"t=\d{10},v1=[0-9a-f]{64}", signature)
    signed_at = int(signature[2:12])
    assert verify(delivery.body, SECRET, signature, now=lambda: signed_at + 300)
    assert not verify(delivery.body, SECRET, signature, now=lambda: signed_at + 301), "replay"
    assert not verify(delivery.body, "another secret", signature)
    expected = domain.order_approved(approved("ord-7"))
    assert delivery.headers["x-saga-delivery"] == expected.delivery_id
    assert delivery.headers["content-type"] == "application/json"
    document = json.loads(delivery.body)
    assert (document["order_id"], document["kind"]) == ("ord-7", "order_approved")
    assert document["body"] == expected.body
    assert [m["message_id"] for m in read_mail(mail_file)] == ["<ord-7.order_approved@saga-outbox>"]
    assert notification_rows(admin_conn) == [
        ("ord-7", "order_approved", "ord-7@example.com", ["email", "webhook"])
    ]
    [(_, notified)] = customer_notified(admin_conn)
    assert notified["channels"] == ["email", "webhook"]


def test_a_failing_receiver_is_retried_without_holding_the_event_and_mails_once(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    source: str,
    sink: SmtpSink,
    mail_file: Path,
    admin_conn: psycopg.Connection,
) -> None:
    """The receiver answers 503 four times. The event committed at once: only the webhook's
    send is retried, by the executor; the mail, sent before, does not go again."""
    event = wrap(approved("ord-9"), "ord-9")
    produce(kafka, source, [(b"ord-9", event.to_bytes())])

    with Receiver(failures=4, success=200) as receiver:
        config = settings(database, kafka, smtp_port=sink.port, webhook_url=receiver.url)
        with consuming(build(config)):
            wait_until(lambda: customer_notified(admin_conn), what="the customer notified")

    assert applied(admin_conn, event)
    assert [d.status for d in receiver.deliveries] == [503] * 4 + [200]
    assert len({(d.body, d.headers["x-saga-delivery"]) for d in receiver.deliveries}) == 1
    assert all(verify(d.body, SECRET, d.headers["x-saga-signature"]) for d in receiver.deliveries)
    assert [m["message_id"] for m in read_mail(mail_file)] == ["<ord-9.order_approved@saga-outbox>"]
    assert [(e.key, e.status, e.attempts) for e in effects(admin_conn)] == [
        ("notifications:ord-9:order_approved:email", "done", 1),
        ("notifications:ord-9:order_approved:webhook", "done", 5),
    ]
    [(order, notified)] = customer_notified(admin_conn)
    assert (order, notified["kind"], notified["channels"]) == (
        "ord-9",
        "order_approved",
        ["email", "webhook"],
    )
    assert dead_letters(admin_conn) == []


def test_a_webhook_refused_for_good_is_left_out_and_retried_by_an_operator_without_mailing_again(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    source: str,
    sink: SmtpSink,
    mail_file: Path,
    admin_conn: psycopg.Connection,
    operator_cli: Callable[..., Any],
) -> None:
    """The receiver refuses the first POST (400: the webhook's send fails at once), after
    the mail went out: the customer is told by e-mail. Once the receiver is fixed, the
    operator retries the failed send: the webhook goes, the mail does not go again, and the
    customer is not announced as told a second time."""
    event = wrap(approved("ord-10"), "ord-10")
    produce(kafka, source, [(b"ord-10", event.to_bytes())])

    with Receiver(failures=1, failure=400, success=200) as receiver:
        config = settings(database, kafka, smtp_port=sink.port, webhook_url=receiver.url)
        with consuming(build(config)):
            wait_until(lambda: customer_notified(admin_conn), what="the customer notified")
        email, webhook = effects(admin_conn)
        assert (email.status, webhook.status) == ("done", "failed")
        assert webhook.attempts == 1, "a refusal is not retried"
        assert webhook.last_error is not None and "HTTP 400" in webhook.last_error
        assert outcomes(admin_conn, "ord-10") == ({"email": "delivered", "webhook": "failed"}, True)

        # While the service is stopped: its logs would mix with the command's output.
        retried = operator_cli(
            "effects", "retry", "--service", "notifications", str(webhook.id),
            "--yes", "--reason", "receiver fixed",
        )  # fmt: skip
        assert (retried["dry_run"], retried["was"]) == (False, {str(webhook.id): "failed"})
        with consuming(build(config)):
            wait_until(lambda: effects(admin_conn)[1].status == "done", what="the retry")

    assert [d.status for d in receiver.deliveries] == [400, 200]
    assert [m["message_id"] for m in read_mail(mail_file)] == [
        "<ord-10.order_approved@saga-outbox>"
    ], "mailed once; the retry only called the webhook"
    [(_, notified)] = customer_notified(admin_conn)
    assert notified["channels"] == ["email"], "announced once, with what was delivered then"
    assert outcomes(admin_conn, "ord-10") == ({"email": "delivered", "webhook": "delivered"}, True)
    assert dead_letters(admin_conn) == []


def test_an_smtp_outage_longer_than_the_old_retry_budget_dead_letters_nothing_and_mails_once(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    source: str,
    mail_file: Path,
    admin_conn: psycopg.Connection,
) -> None:
    """The server hangs up on eight attempts in a row, more than the consumer's retry
    budget (five): once the event's transaction sent the mail, that dead-lettered it."""
    event = wrap(cancelled("ord-5", "out of stock"), "ord-5")
    produce(kafka, source, [(b"ord-5", event.to_bytes())])

    # A server that hangs up on every connection, until the real sink takes its port.
    broken = socket.create_server(("127.0.0.1", 0))
    broken.settimeout(60)  # fail rather than hang if the service never connects
    port = broken.getsockname()[1]
    config = settings(database, kafka, smtp_port=port, max_attempts=5)
    with consuming(build(config)):
        for _ in range(8):
            conn, _ = broken.accept()
            conn.close()
        broken.close()
        assert applied(admin_conn, event), "the event committed without waiting for SMTP"
        assert customer_notified(admin_conn) == []
        with SmtpSink(path=mail_file, port=port):
            wait_until(lambda: customer_notified(admin_conn), what="the customer notified")

    [mail] = read_mail(mail_file)
    assert mail["message_id"] == "<ord-5.order_cancelled@saga-outbox>"
    assert "Reason: out of stock" in mail["body"]
    [send] = effects(admin_conn)
    assert send.status == "done" and send.attempts > 8
    assert notification_rows(admin_conn) == [
        ("ord-5", "order_cancelled", "ord-5@example.com", ["email"])
    ]
    assert dead_letters(admin_conn) == []


def test_a_crash_between_the_send_and_its_recording_sends_again_with_the_same_message_id(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    source: str,
    sink: SmtpSink,
    mail_file: Path,
    admin_conn: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The executor dies after the mail went out, before recording it: its lease expires,
    the next executor sends again, and the receiver can tell the copy by its Message-ID."""
    event = wrap(approved("ord-c1"), "ord-c1")
    produce(kafka, source, [(b"ord-c1", event.to_bytes())])

    config = settings(database, kafka, smtp_port=sink.port, lease=1.0)
    monkeypatch.setattr(faults, "_POINTS", {"raise:effects.after_call": 1.0})
    with consuming(build(config)) as crashed:
        # The executor's death takes the service down, as a crash would.
        wait_until(lambda: not crashed.thread.is_alive(), what="the service to stop")
    assert [m["message_id"] for m in read_mail(mail_file)] == [
        "<ord-c1.order_approved@saga-outbox>"
    ]
    [send] = effects(admin_conn)
    assert (send.status, customer_notified(admin_conn)) == ("running", []), "not recorded"

    monkeypatch.setattr(faults, "_POINTS", {})
    with consuming(build(config)):
        wait_until(lambda: customer_notified(admin_conn), what="the customer notified")

    assert [m["message_id"] for m in read_mail(mail_file)] == [
        "<ord-c1.order_approved@saga-outbox>"
    ] * 2
    [send] = effects(admin_conn)
    assert (send.status, send.attempts) == ("done", 2)
    assert len(customer_notified(admin_conn)) == 1


def test_a_batch_in_which_one_message_fails_sends_each_other_mail_exactly_once(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    source: str,
    sink: SmtpSink,
    mail_file: Path,
    admin_conn: psycopg.Connection,
) -> None:
    """ord-1's and ord-2's mails are due (requested) in the batch's transaction when ord-3,
    poison, rolls it back; the batch is applied again one message per transaction. Sent in
    the transaction, as before effects, their mails went twice."""
    bad = wrap(approved("ord-3"), "ord-3")
    bad = bad.model_copy(update={"payload": {**bad.payload, "total_cents": "lots"}})
    events = [wrap(approved(f"ord-{n}"), f"ord-{n}") for n in (1, 2)]
    events += [bad, wrap(approved("ord-4"), "ord-4")]
    # One key: one partition, fetched together before the consumer starts (one batch).
    produce(kafka, source, [(b"one-partition", e.to_bytes()) for e in events])

    config = settings(database, kafka, smtp_port=sink.port)
    # However slow the first handlers are, the batch goes on to the poison.
    config = config.model_copy(
        update={"consumer": config.consumer.model_copy(update={"batch_max_seconds": 30})}
    )
    with consuming(build(config)):
        wait_until(lambda: len(customer_notified(admin_conn)) == 3, what="three notified")
        wait_until(lambda: dead_letters(admin_conn), what="the bad one dead-lettered")

    assert Counter(m["message_id"] for m in read_mail(mail_file)) == {
        "<ord-1.order_approved@saga-outbox>": 1,
        "<ord-2.order_approved@saga-outbox>": 1,
        "<ord-4.order_approved@saga-outbox>": 1,
    }
    assert [(e.key, e.attempts) for e in effects(admin_conn)] == [
        (f"notifications:ord-{n}:order_approved:email", 1) for n in (1, 2, 4)
    ], "requested once each, called once each"
    [(order, error_type, _)] = dead_letters(admin_conn)
    assert order == "ord-3" and error_type != "DeliveryRejected"


IDN_SENDER = "Boutique Zoë Ångström <commandes@boutique-zoë.example>"


def test_internationalized_addresses_and_names_are_notified_as_written(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    source: str,
    sink: SmtpSink,
    mail_file: Path,
    admin_conn: psycopg.Connection,
) -> None:
    zoe = approved("ord-i1").model_copy(
        update={
            "email": "zoë.ångström@example.com",  # UTF-8 local part: SMTPUTF8
            "shipping_address": ADDRESS.model_copy(update={"name": "Zoë Ångström"}),
        }
    )
    ada = shipped("ord-i2").model_copy(update={"email": "ada@bücher.de"})  # IDN domain
    han = cancelled("ord-i3", "缺货").model_copy(update={"email": "用户@例子.广告"})  # both
    events = [wrap(zoe, "ord-i1"), wrap(ada, "ord-i2"), wrap(han, "ord-i3")]
    produce(kafka, source, [(e.aggregate_id.encode(), e.to_bytes()) for e in events])

    config = settings(database, kafka, smtp_port=sink.port).model_copy(
        update={"sender": IDN_SENDER}  # a display name and a domain that are not ASCII
    )
    with consuming(build(config)):
        wait_until(lambda: len(customer_notified(admin_conn)) == 3, what="three notified")

    assert dead_letters(admin_conn) == []
    by_order = {m["headers"]["X-Saga-Order-Id"]: m for m in read_mail(mail_file)}
    assert {order: m["to"] for order, m in by_order.items()} == {
        "ord-i1": ["zoë.ångström@example.com"],
        "ord-i2": ["ada@xn--bcher-kva.de"],
        "ord-i3": ["用户@xn--fsqu00a.xn--4rr70v"],
    }
    assert {order: "SMTPUTF8" in m["mail_options"] for order, m in by_order.items()} == {
        "ord-i1": True,
        "ord-i2": False,
        "ord-i3": True,
    }
    for m in by_order.values():
        assert m["from"] == "commandes@xn--boutique-zo-9bb.example"
        assert m["headers"]["From"] == (
            "Boutique Zoë Ångström <commandes@xn--boutique-zo-9bb.example>"
        )
    assert by_order["ord-i1"]["headers"]["To"] == "zoë.ångström@example.com"
    assert "  Zoë Ångström\n" in by_order["ord-i1"]["body"]
    assert "Reason: 缺货" in by_order["ord-i3"]["body"]
    assert notification_rows(admin_conn) == [
        ("ord-i1", "order_approved", "zoë.ångström@example.com", ["email"]),
        ("ord-i2", "order_shipped", "ada@bücher.de", ["email"]),
        ("ord-i3", "order_cancelled", "用户@例子.广告", ["email"]),
    ]


def test_a_server_without_smtputf8_fails_a_utf8_local_part_for_good_and_delivers_an_idn_domain(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    source: str,
    mail_file: Path,
    admin_conn: psycopg.Connection,
) -> None:
    utf8_local = wrap(approved("ord-u1").model_copy(update={"email": "zoë@example.com"}), "ord-u1")
    idn_domain = wrap(approved("ord-u2").model_copy(update={"email": "ada@bücher.de"}), "ord-u2")
    produce(kafka, source, [(b"ord-u1", utf8_local.to_bytes()), (b"ord-u2", idn_domain.to_bytes())])

    with SmtpSink(path=mail_file, smtputf8=False) as ascii_only:
        config = settings(database, kafka, smtp_port=ascii_only.port)
        with consuming(build(config)):
            wait_until(lambda: customer_notified(admin_conn), what="the IDN one notified")
            wait_until(
                lambda: (
                    [e.status for e in effects(admin_conn)] == ["failed", "done"]
                    or [e.status for e in effects(admin_conn)] == ["done", "failed"]
                ),
                what="the UTF-8 one's send failed",
            )

    [failed] = [e for e in effects(admin_conn) if e.status == "failed"]
    assert failed.key == "notifications:ord-u1:order_approved:email"
    assert failed.attempts == 1, "at once, not after retries"
    assert failed.last_error is not None
    assert "does not offer SMTPUTF8" in failed.last_error and "zoë@example.com" in failed.last_error
    assert [(m["message_id"], *m["to"]) for m in read_mail(mail_file)] == [
        ("<ord-u2.order_approved@saga-outbox>", "ada@xn--bcher-kva.de")
    ]
    assert outcomes(admin_conn, "ord-u1") == ({"email": "failed"}, False), "nobody was told"
    assert [order for order, _ in customer_notified(admin_conn)] == ["ord-u2"]
    assert dead_letters(admin_conn) == []


class _RefusesGone:
    """An SMTP server that refuses mailboxes starting with "gone" for good (550)."""

    def __init__(self, mail_file: Path) -> None:
        self.mail_file = mail_file

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("gone"):
            return "550 5.1.1 <" + address + ">: no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with open(self.mail_file, "a", encoding="utf-8") as f:
            f.write(json.dumps({"to": envelope.rcpt_tos}) + "\n")
        return "250 OK"


def test_a_recipient_the_server_refuses_for_good_fails_its_send_with_the_reason(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    source: str,
    mail_file: Path,
    admin_conn: psycopg.Connection,
) -> None:
    from aiosmtpd.controller import Controller

    gone = wrap(approved("ord-g1").model_copy(update={"email": "gone@example.com"}), "ord-g1")
    fine = wrap(approved("ord-g2"), "ord-g2")
    produce(kafka, source, [(b"ord-g1", gone.to_bytes()), (b"ord-g2", fine.to_bytes())])

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    server = Controller(_RefusesGone(mail_file), hostname="127.0.0.1", port=port)
    server.start()
    try:
        with consuming(build(settings(database, kafka, smtp_port=port))):
            wait_until(lambda: customer_notified(admin_conn), what="the other order notified")
            wait_until(
                lambda: "failed" in [e.status for e in effects(admin_conn)],
                what="the refused one's send failed",
            )
    finally:
        server.stop()

    [failed] = [e for e in effects(admin_conn) if e.status == "failed"]
    assert (failed.key, failed.attempts) == ("notifications:ord-g1:order_approved:email", 1)
    assert failed.last_error is not None
    assert "550" in failed.last_error and "no such mailbox" in failed.last_error
    assert [json.loads(line)["to"] for line in mail_file.read_text().splitlines()] == [
        ["ord-g2@example.com"]
    ]
    assert outcomes(admin_conn, "ord-g1") == ({"email": "failed"}, False)
    assert dead_letters(admin_conn) == []
