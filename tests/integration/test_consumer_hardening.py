"""The consumer runner against what used to stop it, on the real broker and database.

Poison whose bytes PostgreSQL cannot hold as text, a dead-letter copy the broker cannot
take yet, a dependency down for longer than a few attempts, and a batch in which a
side-effecting handler ran before another message failed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer

from saga_runtime import (
    ConsumerSettings,
    DatabaseSettings,
    DeadLetter,
    DeadLetterStore,
    Envelope,
    KafkaDeadLetterPublisher,
    KafkaSettings,
    RetryableError,
    ServiceRuntime,
    UnitOfWork,
    dead_letter_topic,
    ensure_topics,
    events_topic,
)
from saga_runtime.dead_letters import header_from_stored
from sagactl.ops.dead_letters import REDRIVE_HEADER
from tests.fixtures.kafka import read_topic
from tests.integration.sample_service import EFFECTS_DDL, on_numbered
from tests.support import ThreadedRunner, envelope, wait_until

pytestmark = pytest.mark.integration

Handler = Callable[[UnitOfWork, Envelope], None]
Headers = list[tuple[str, bytes | None]]


@pytest.fixture
def effects(admin_conn: psycopg.Connection) -> Callable[[], list[int]]:
    """The sample service's state: n of each applied event, in apply order."""
    admin_conn.execute("SET ROLE stock")
    admin_conn.execute(EFFECTS_DDL)
    admin_conn.execute("TRUNCATE stock.test_effects")
    admin_conn.execute("RESET ROLE")

    def rows() -> list[int]:
        return [
            r[0] for r in admin_conn.execute("SELECT n FROM stock.test_effects ORDER BY applied_at")
        ]

    return rows


@pytest.fixture
def source(kafka: KafkaSettings) -> str:
    topic = events_topic("orders", kafka.topic_prefix)
    ensure_topics(
        kafka,
        [
            topic,
            dead_letter_topic("stock", kafka.topic_prefix),
            events_topic("stock", kafka.topic_prefix),
        ],
    )
    return topic


def build(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    handlers: dict[str, Handler] | None = None,
    *,
    side_effecting: tuple[str, ...] = (),
    **consumer: Any,
) -> ServiceRuntime:
    settings = ConsumerSettings(**{"backoff_initial": 0.05, "backoff_max": 0.5, **consumer})
    extra: dict[str, Any] = {"side_effecting": side_effecting} if side_effecting else {}
    return ServiceRuntime.build(
        service="stock",
        kafka=kafka,
        database=database,
        consumer=settings,
        handlers=handlers or {"Numbered": on_numbered},
        subscribes_to=["orders"],
        **extra,
    )


def consuming(runtime: ServiceRuntime) -> ThreadedRunner:
    assert runtime.runner is not None

    def run() -> None:
        try:
            runtime.run_consumer(install_signal_handlers=False)
        finally:
            runtime.close()

    return ThreadedRunner(run, runtime.runner.stop)


def produce(
    kafka: KafkaSettings, topic: str, messages: list[tuple[bytes | None, bytes | None, Headers]]
) -> None:
    """Raw messages with headers, up to the broker's size limit (not the client's 1 MB)."""
    producer = Producer(
        {
            **kafka.client_properties(),
            "acks": "all",
            "message.max.bytes": 2_000_000,
        }
    )
    for key, value, headers in messages:
        producer.produce(topic, key=key, value=value, headers=headers)
    assert producer.flush(30) == 0, "test producer could not deliver"


def scalar(conn: psycopg.Connection, query: str) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_poison_postgresql_cannot_hold_as_text_is_dead_lettered_shown_and_redriven_exactly(
    database, kafka, source, effects, admin_conn, operator_cli
):
    """Each used to fail the dead-letter insert (or the copy) and kill the consumer thread,
    or to be stored altered, so that a redrive did not send the original."""
    valid = json.loads(envelope("order-2", 2).to_bytes())
    poison: dict[str, tuple[bytes | None, bytes | None, Headers]] = {
        "NUL in a header value": (
            b"order-1",
            b"not an envelope",
            [("trace", b"a\x00b"), ("event_type", b"Numbered")],
        ),
        "NUL in aggregate_id": (
            b"order-2",
            json.dumps({**valid, "aggregate_id": "order-2\u0000x"}).encode(),
            [("event_type", b"Numbered")],
        ),
        "bytes that are not UTF-8": (
            b"\xff\xfe\x00order-3",
            b"\xc3\x28\x00\xff",
            [("binary", b"\xff\x00\xfe"), ("empty", None), ("latin-1", "café".encode("latin-1"))],
        ),
        # Above the client's 1 MB default, within what the broker takes: its copy to
        # the dead-letter topic cannot be sent as it is.
        "huge value": (b"order-4", b"{" + b"x" * 1_020_000, [("kind", b"huge")]),
    }
    good = envelope("order-5", 5)
    produce(kafka, source, [*poison.values(), (b"order-5", good.to_bytes(), [])])

    with consuming(build(database, kafka)):
        wait_until(
            lambda: scalar(admin_conn, "SELECT count(*) FROM stock.dead_letters") == len(poison),
            timeout=60,
            what="every poison message dead-lettered",
        )
        wait_until(lambda: effects() == [5], what="the good message applied")

    ids = [
        r[0]
        for r in admin_conn.execute(
            "SELECT id FROM stock.dead_letters ORDER BY source_partition, source_offset"
        )
    ]
    shown = [operator_cli("dlq", "show", "stock", str(i)) for i in ids]
    by_kind = {}
    for letter in shown:
        key = base64.b64decode(letter["key"]["base64"])
        value = base64.b64decode(letter["value"]["base64"])
        [kind] = [k for k, (pkey, pvalue, _) in poison.items() if (pkey, pvalue) == (key, value)]
        by_kind[kind] = letter
    assert set(by_kind) == set(poison), "each with its exact key and value bytes"
    for kind, letter in by_kind.items():
        headers = [
            (h["key"], None if "value_base64" not in h and h["value"] is None else _bytes(h))
            for h in letter["headers"]
        ]
        assert headers == poison[kind][2], f"{kind}: headers shown exactly"
    assert by_kind["NUL in aggregate_id"]["error_type"] == "InvalidEnvelopeError"
    assert "NUL" in by_kind["NUL in aggregate_id"]["error"]

    stored = admin_conn.execute(
        "SELECT headers FROM stock.dead_letters WHERE message_key = %s", (b"order-1",)
    ).fetchone()
    assert stored is not None
    assert [header_from_stored(h) for h in stored[0]] == poison["NUL in a header value"][2]

    copies = read_topic(kafka, dead_letter_topic("stock", kafka.topic_prefix), expect=len(poison))
    huge = [c for c in copies if c.key == b"order-4"]
    assert huge and huge[0].value is None, "the copy went without its value"
    assert b"the full message is in the table" in huge[0].headers["dlq.reduced"]

    redriven = operator_cli("dlq", "redrive", "stock", "--all-pending", "--yes", "--reason", "test")
    assert [o["result"] for o in redriven["outcomes"]] == ["redriven"] * len(poison)
    records = read_topic(kafka, source, expect=2 * len(poison) + 1, timeout=60)
    again = [r for r in records if REDRIVE_HEADER in r.headers]
    assert len(again) == len(poison)
    for record in again:
        [(key, value, headers)] = [p for p in poison.values() if p[0] == record.key]
        assert record.value == value, "the exact original value"
        original = {k: v for k, v in record.headers.items() if k != REDRIVE_HEADER}
        assert original == dict(headers), "the exact original headers"


def _bytes(header: dict[str, Any]) -> bytes:
    if "value_base64" in header:
        return base64.b64decode(header["value_base64"])
    return str(header["value"]).encode()


def test_a_row_postgresql_refuses_is_written_reduced_with_the_original_bytes(database, admin_conn):
    store = DeadLetterStore(schema="stock")
    letter = DeadLetter(
        source_topic="t.orders.events",
        source_partition=1,
        source_offset=7,
        key=b"\xff\x00",
        value=b"\x00\xfe value",
        headers=[("trace", b"\x00"), ("event_type", b"Numbered")],
        error_type="PoisonMessageError",
        error="bad \x00 payload \ud800",
        attempts=1,
        event_id="not-a-uuid",  # what the table's uuid column refuses
        event_type="Numbered",
        aggregate_id="order-1",
    )
    with psycopg.connect(database.url) as conn:
        conn.execute("SET ROLE stock")
        with conn.transaction():
            why = store.add(conn, letter)
    assert why is not None and "uuid" in why

    row = admin_conn.execute(
        "SELECT message_key, message_value, headers, error, event_id, aggregate_id"
        " FROM stock.dead_letters"
    ).fetchone()
    assert row is not None
    key, value, headers, error, event_id, aggregate_id = row
    assert (bytes(key), bytes(value)) == (letter.key, letter.value)
    assert [header_from_stored(h) for h in headers] == letter.headers
    assert "bad \\x00 payload \\ud800" in error and "stored reduced" in error
    assert (event_id, aggregate_id) == (None, None)


class Forwarder:
    """A TCP port that refuses connections until ``open``, then forwards to ``target``."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()  # nothing listens there until open()
        self._server: socket.socket | None = None

    def open(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


@pytest.fixture
def forwarder(kafka: KafkaSettings) -> Iterator[Forwarder]:
    forwarding = Forwarder(kafka.bootstrap_servers)
    yield forwarding
    forwarding.close()


def test_a_dead_letter_copy_the_broker_cannot_take_yet_is_retried_not_a_crash(
    database, kafka, source, effects, admin_conn, forwarder
):
    """A real producer whose broker is out of reach: its queue fills (BufferError), then
    the broker comes back. The message waits and is dead-lettered; nothing is skipped."""
    runtime = build(database, kafka)
    assert runtime.runner is not None
    unreachable = Producer(
        {
            **kafka.client_properties(),
            "bootstrap.servers": f"127.0.0.1:{forwarder.port}",
            "queue.buffering.max.messages": 1,  # the second attempt finds the queue full
            "message.timeout.ms": 120_000,
            "reconnect.backoff.max.ms": 200,
        }
    )
    runtime.runner._dead_lettering.publisher = KafkaDeadLetterPublisher(
        unreachable,
        topic=dead_letter_topic("stock", kafka.topic_prefix),
        service="stock",
        timeout=0.3,
    )
    after = envelope("order-1", 2)
    produce(kafka, source, [(b"order-1", b"poison", []), (b"order-1", after.to_bytes(), [])])

    with consuming(runtime) as running:
        wait_until(
            lambda: scalar(admin_conn, "SELECT count(*) FROM stock.dead_letters") == 1,
            what="the dead-letter row written",
        )
        time.sleep(3.0)  # several attempts at the copy, the queue full after the first
        assert running.thread.is_alive(), "the consumer thread survived the failing copies"
        assert effects() == [], "the partition waits: the poison is not skipped"
        forwarder.open()
        wait_until(lambda: effects() == [2], timeout=60, what="the next message applied")

    copies = read_topic(kafka, dead_letter_topic("stock", kafka.topic_prefix), expect=1)
    assert copies and {c.value for c in copies} == {b"poison"}
    assert scalar(admin_conn, "SELECT count(*) FROM stock.dead_letters") == 1


def test_a_dependency_down_longer_than_the_old_attempts_is_waited_out(
    database, kafka, source, effects, admin_conn
):
    """A provider refusing connections for 8 s: five attempts from 0.2 s used to give up."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    failures: list[float] = []
    provider: list[socket.socket] = []

    def calls_the_provider(uow: UnitOfWork, event: Envelope) -> None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError as exc:
            failures.append(time.monotonic())
            raise RetryableError(f"provider unreachable: {exc}") from exc
        on_numbered(uow, event)

    produce(kafka, source, [(b"order-1", envelope("order-1", 1).to_bytes(), [])])
    runtime = build(database, kafka, {"Numbered": calls_the_provider}, retry_backoff_max=1.0)
    try:
        with consuming(runtime):
            wait_until(lambda: failures, what="the first attempt failed")
            while time.monotonic() < failures[0] + 8.0:
                assert scalar(admin_conn, "SELECT count(*) FROM stock.dead_letters") == 0
                time.sleep(0.2)
            provider.append(socket.create_server(("127.0.0.1", port)))  # back up
            wait_until(lambda: effects() == [1], timeout=30, what="applied once it is back")
    finally:
        for server in provider:
            server.close()

    assert len(failures) > 5, "it kept trying"
    assert scalar(admin_conn, "SELECT count(*) FROM stock.dead_letters") == 0


def test_a_later_failure_in_a_batch_does_not_rerun_an_earlier_side_effecting_handler(
    database, kafka, source, effects, admin_conn
):
    """A mail-sending handler before a failing message used to run (send) twice: the batch
    rolled back and was applied again one message per transaction."""
    sent: list[int] = []

    def mail(uow: UnitOfWork, event: Envelope) -> None:
        sent.append(int(event.payload["n"]))  # the outside world: no rollback undoes it

    def bookkeeping(uow: UnitOfWork, event: Envelope) -> None:
        on_numbered(uow, event)
        if event.payload["n"] == 4:
            raise ValueError("a bug for this one message")

    def mailed(n: int) -> Envelope:
        return envelope("order-1", n).model_copy(update={"event_type": "Mailed"})

    events = [envelope("order-1", 0), mailed(1), envelope("order-1", 2), mailed(3)]
    events += [envelope("order-1", 4), mailed(5), envelope("order-1", 6)]
    # All on one partition, all fetched before the consumer starts: one batch.
    produce(kafka, source, [(b"order-1", e.to_bytes(), []) for e in events])
    runtime = build(
        database,
        kafka,
        {"Numbered": bookkeeping, "Mailed": mail},
        side_effecting=("Mailed",),
        batch_max_seconds=30,
    )
    with consuming(runtime):
        wait_until(lambda: effects() == [0, 2, 6], what="the other messages applied")
        wait_until(lambda: sent == [1, 3, 5], what="every mail sent")
        time.sleep(0.5)

    assert sent == [1, 3, 5], "each mail sent exactly once"
    assert scalar(admin_conn, "SELECT count(*) FROM stock.dead_letters") == 1
    assert scalar(admin_conn, "SELECT count(*) FROM stock.inbox") == 6
