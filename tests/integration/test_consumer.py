"""The consumer runner on the real broker and database: exactly once, dead letters, outages."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from saga_runtime import (
    ConsumerSettings,
    DatabaseSettings,
    Envelope,
    KafkaSettings,
    RetryableError,
    ServiceRuntime,
    UnitOfWork,
    consumer_group,
    dead_letter_topic,
    ensure_topics,
    events_topic,
)
from tests.fixtures.kafka import produce, read_topic
from tests.integration.sample_service import EFFECTS_DDL, on_numbered
from tests.support import REPO, ThreadedRunner, envelope, service_env, wait_until

pytestmark = pytest.mark.integration

Handler = Callable[[UnitOfWork, Envelope], None]


@pytest.fixture
def effects(admin_conn: psycopg.Connection) -> Iterator[Callable[[], list[tuple[str, int]]]]:
    """The sample service's state: (event id, n) per applied event, in apply order."""
    admin_conn.execute("SET ROLE stock")
    admin_conn.execute(EFFECTS_DDL)
    admin_conn.execute("TRUNCATE stock.test_effects")
    admin_conn.execute("RESET ROLE")

    def rows() -> list[tuple[str, int]]:
        return [
            (str(r[0]), r[1])
            for r in admin_conn.execute(
                "SELECT event_id, n FROM stock.test_effects ORDER BY applied_at"
            )
        ]

    yield rows


@pytest.fixture
def topics(kafka: KafkaSettings) -> tuple[str, str]:
    source, dlq = (
        events_topic("orders", kafka.topic_prefix),
        dead_letter_topic("stock", kafka.topic_prefix),
    )
    ensure_topics(kafka, [source, dlq, events_topic("stock", kafka.topic_prefix)])
    return source, dlq


def build(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    handler: Handler = on_numbered,
    **consumer: object,
) -> ServiceRuntime:
    settings = ConsumerSettings(backoff_initial=0.05, backoff_max=0.5, **consumer)  # type: ignore[arg-type]
    return ServiceRuntime.build(
        service="stock",
        kafka=kafka,
        database=database,
        consumer=settings,
        handlers={"Numbered": handler},
        subscribes_to=["orders"],
    )


def consuming(runtime: ServiceRuntime) -> ThreadedRunner:
    assert runtime.runner is not None

    def run() -> None:
        try:
            runtime.run_consumer(install_signal_handlers=False)
        finally:
            runtime.close()

    return ThreadedRunner(run, runtime.runner.stop)


def count(conn: psycopg.Connection, query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_duplicate_delivery_is_a_no_op(database, kafka, topics, effects, admin_conn):
    source, _ = topics
    first, second = envelope("order-1", 1), envelope("order-1", 2)
    produce(
        kafka, source, [(b"order-1", e.to_bytes()) for e in (first, first, second, first, second)]
    )

    with consuming(build(database, kafka)):
        wait_until(lambda: len(effects()) >= 2, what="both events applied")
        time.sleep(1.0)  # let the redeliveries behind them be processed too

    assert effects() == [(str(first.event_id), 1), (str(second.event_id), 2)]
    assert count(admin_conn, "SELECT count(*) FROM stock.inbox") == 2
    assert count(admin_conn, "SELECT count(*) FROM stock.outbox") == 2  # one emitted event each
    assert count(admin_conn, "SELECT count(*) FROM stock.dead_letters") == 0


def test_poison_is_dead_lettered_and_later_messages_are_processed(
    database, kafka, topics, effects, admin_conn
):
    source, dlq = topics
    good, bad_payload, buggy, last = (envelope("order-1", n) for n in (1, 2, 3, 4))
    bad_payload = bad_payload.model_copy(update={"payload": {"n": "not a number"}})
    poison = [
        b"\xff\xfe not json",
        json.dumps({"event_type": "Numbered"}).encode(),
        bad_payload.to_bytes(),
        buggy.to_bytes(),
    ]

    def handler(uow: UnitOfWork, event: Envelope) -> None:
        if event.event_id == buggy.event_id:
            raise ZeroDivisionError("a bug in the handler")
        on_numbered(uow, event)

    produce(
        kafka,
        source,
        [
            (b"order-1", good.to_bytes()),
            *((b"order-1", p) for p in poison),
            (b"order-1", last.to_bytes()),
        ],
    )
    with consuming(build(database, kafka, handler)):
        wait_until(lambda: len(effects()) == 2, what="the message after the poison applied")

    assert [n for _, n in effects()] == [1, 4]
    letters = admin_conn.execute(
        "SELECT message_value, error_type, error, status FROM stock.dead_letters"
        " ORDER BY source_offset"
    ).fetchall()
    assert [bytes(r[0]) for r in letters] == poison, "original bytes kept"
    assert [r[1] for r in letters] == [
        "InvalidEnvelopeError",
        "InvalidEnvelopeError",
        "PoisonMessageError",
        "ZeroDivisionError",
    ]
    assert all(r[2] and r[3] == "pending" for r in letters)

    copies = read_topic(kafka, dlq, expect=4)
    assert [r.value for r in copies] == poison
    assert copies[3].headers["dlq.error_type"] == b"ZeroDivisionError"
    assert copies[3].headers["dlq.source_topic"] == source.encode()


def test_an_event_newer_than_the_service_understands_is_dead_lettered_with_the_reason(
    database, kafka, topics, effects, admin_conn
):
    source, dlq = topics
    # The producer was deployed first with Numbered v2; this consumer knows only v1.
    too_new = envelope("order-1", 1).model_copy(update={"schema_version": 2})
    after = envelope("order-1", 2)
    produce(kafka, source, [(b"order-1", e.to_bytes()) for e in (too_new, after)])

    with consuming(build(database, kafka)):
        wait_until(lambda: len(effects()) == 1, what="the message after the too new one applied")

    assert [n for _, n in effects()] == [2]
    letters = admin_conn.execute(
        "SELECT event_id, error_type, error, message_value FROM stock.dead_letters"
    ).fetchall()
    assert [(str(r[0]), r[1], r[2], bytes(r[3])) for r in letters] == [
        (
            str(too_new.event_id),
            "PoisonMessageError",
            "Numbered schema_version 2 is newer than this service understands (1);"
            " deploy its consumers before its producer",
            too_new.to_bytes(),
        )
    ]
    assert [r.value for r in read_topic(kafka, dlq, expect=1)] == [too_new.to_bytes()]


def test_retryable_error_is_retried_then_dead_lettered(
    database, kafka, topics, effects, admin_conn
):
    source, _ = topics
    flaky, stubborn, after = envelope("order-1", 1), envelope("order-1", 2), envelope("order-1", 3)
    calls: dict[str, int] = {}

    def handler(uow: UnitOfWork, event: Envelope) -> None:
        calls[event.aggregate_id + str(event.payload["n"])] = (
            calls.get(event.aggregate_id + str(event.payload["n"]), 0) + 1
        )
        if event.event_id == flaky.event_id and calls["order-11"] < 3:
            raise RetryableError("provider timed out")
        if event.event_id == stubborn.event_id:
            raise RetryableError("provider keeps failing")
        on_numbered(uow, event)

    produce(kafka, source, [(b"order-1", e.to_bytes()) for e in (flaky, stubborn, after)])
    # One message per transaction, so that every handler call is one counted attempt
    # (a batch that fails is applied again one by one: see the batch test below).
    with consuming(build(database, kafka, handler, max_attempts=4, batch_size=1)):
        wait_until(lambda: len(effects()) == 2, what="flaky and last applied")

    assert [n for _, n in effects()] == [1, 3]
    assert calls["order-11"] == 3 and calls["order-12"] == 4
    row = admin_conn.execute("SELECT error_type, attempts FROM stock.dead_letters").fetchall()
    assert row == [("RetryableError", 4)]


def test_a_batch_with_a_failing_message_applies_every_other_one_exactly_once_in_order(
    database, kafka, topics, effects, admin_conn
):
    source, _ = topics
    events = [envelope(f"order-{i % 4}", i) for i in range(40)]
    bad = events[17]
    failures = {"left": 2}

    def handler(uow: UnitOfWork, event: Envelope) -> None:
        on_numbered(uow, event)  # its effect is written, then rolled back with the batch
        if event.event_id == bad.event_id and failures["left"] > 0:
            failures["left"] -= 1
            raise RetryableError("flaky downstream")

    produce(kafka, source, [(e.aggregate_id.encode(), e.to_bytes()) for e in events])
    with consuming(build(database, kafka, handler, batch_size=100, max_attempts=5)):
        wait_until(lambda: len(effects()) == 40, what="all 40 applied")
        time.sleep(0.5)

    applied = effects()
    assert sorted(n for _, n in applied) == list(range(40)), "each exactly once"
    for key in range(4):
        mine = [n for _, n in applied if n % 4 == key]
        assert mine == sorted(mine), "one order's events in the order they were produced"
    assert failures["left"] == 0
    assert count(admin_conn, "SELECT count(*) FROM stock.inbox") == 40
    assert count(admin_conn, "SELECT count(*) FROM stock.outbox") == 40
    assert count(admin_conn, "SELECT count(*) FROM stock.dead_letters") == 0


def test_the_inbox_statement_locks_the_events_order_before_its_handler_runs(
    database, kafka, topics, effects, admin_conn
):
    """The runner takes the aggregate's lock with the inbox row, before the handler runs."""
    source, _ = topics
    events = [envelope("order-7", 1), envelope("order-8", 2)]
    held: list[tuple[str, bool, bool]] = []

    def handler(uow: UnitOfWork, event: Envelope) -> None:
        key = uow.outbox.lock_key(event.aggregate_id)
        with psycopg.connect(database.url, autocommit=True) as other:
            row = other.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)
            ).fetchone()
            free = bool(row and row[0])
            if free:
                other.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
        held.append((event.aggregate_id, free))
        on_numbered(uow, event)

    produce(kafka, source, [(e.aggregate_id.encode(), e.to_bytes()) for e in events])
    with consuming(build(database, kafka, handler)):
        wait_until(lambda: len(effects()) == 2, what="both applied")

    # Two keys, so maybe two partitions: the order between them is not fixed.
    assert sorted(held) == [("order-7", False), ("order-8", False)], (
        "another session could take the order's lock while its event was being applied"
    )


def test_database_outage_is_retried_and_nothing_is_skipped(
    database, kafka, topics, effects, admin_conn, infra
):
    source, _ = topics
    events = [envelope(f"order-{i % 3}", i) for i in range(30)]
    produce(kafka, source, [(e.aggregate_id.encode(), e.to_bytes()) for e in events[:10]])

    with consuming(build(database, kafka)):
        wait_until(lambda: len(effects()) == 10, what="first events applied")
        # The outage: the database refuses new connections for 7 s and every
        # connection the service holds is killed, while new events keep arriving.
        db = admin_conn.info.dbname
        server = psycopg.connect(infra.admin_database_url, autocommit=True)
        server.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
        try:
            produce(kafka, source, [(e.aggregate_id.encode(), e.to_bytes()) for e in events[10:]])
            deadline = time.monotonic() + 7.0  # longer than the pool's wait for a connection
            killed = 0
            while time.monotonic() < deadline:
                killed += count(
                    admin_conn,
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'stock' AND pid <> pg_backend_pid()) t",
                )
                time.sleep(0.05)
        finally:
            server.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
            server.close()
        assert killed > 0, "the outage must actually break the service's connections"
        wait_until(
            lambda: len(effects()) == 30, timeout=60, what="all events applied after the outage"
        )

    assert sorted(n for _, n in effects()) == list(range(30))
    assert count(admin_conn, "SELECT count(*) FROM stock.dead_letters") == 0


def test_sigterm_finishes_the_current_message_commits_and_leaves(
    database, kafka, topics, effects, admin_conn, tmp_path: Path
):
    source, _ = topics
    slow, queued = envelope("order-1", -1), envelope("order-1", 5)
    produce(kafka, source, [(b"order-1", slow.to_bytes()), (b"order-1", queued.to_bytes())])
    log_path = tmp_path / "sample.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.sample_service"],
            env=service_env(database, kafka),
            stdout=log,
            stderr=log,
            cwd=REPO,
        )
    try:
        wait_until(lambda: b"sample.applying" in log_path.read_bytes(), what="handler started")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()

    assert effects() == [(str(slow.event_id), -1)], "the in-flight message committed, nothing more"
    committed = Consumer({**kafka.client_properties(), "group.id": f"{kafka.topic_prefix}stock"})
    try:
        partition = next(r.partition for r in read_topic(kafka, source, expect=2))
        [position] = committed.committed([TopicPartition(source, partition)], timeout=10)
    finally:
        committed.close()
    first_offset = min(r.offset for r in read_topic(kafka, source, expect=2))
    assert position.offset == first_offset + 1, "its offset was committed on the way out"

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    handling = [line for line in lines if line.get("event") in ("sample.applying", "event.applied")]
    assert handling, "the handler logged"
    for line in handling:
        assert line["service"] == "stock"
        assert line["event_id"] == str(slow.event_id)
        assert line["event_type"] == "Numbered"
        assert line["aggregate_id"] == "order-1"
        assert line["correlation_id"] == str(slow.correlation_id)


def test_a_consumer_stuck_outside_its_group_is_replaced_and_nothing_is_missed(
    database, kafka, topics, effects, monkeypatch: pytest.MonkeyPatch
):
    """librdkafka's own statistics reveal the stall; the new consumer applies what waited."""
    from saga_runtime import consumer as consumer_module
    from saga_runtime import service as service_module

    real_factory = service_module._consumer_factory
    made: list[str] = []

    def first_one_stuck(config: dict[str, object]):  # type: ignore[no-untyped-def]
        fast = {**config, "statistics.interval.ms": 200}
        working = real_factory(fast)
        # No broker at all behind this one: its group never comes up.
        stuck = real_factory({**fast, "bootstrap.servers": "127.0.0.1:9"})

        def new_consumer(on_stats):  # type: ignore[no-untyped-def]
            made.append("stuck" if not made else "working")
            return (stuck if len(made) == 1 else working)(on_stats)

        return new_consumer

    monkeypatch.setattr(service_module, "_consumer_factory", first_one_stuck)
    monkeypatch.setattr(consumer_module, "_HEALTH_CHECK_INTERVAL", 0.2)
    source, _ = topics
    waiting = [envelope("order-1", n) for n in (1, 2, 3)]
    produce(kafka, source, [(b"order-1", e.to_bytes()) for e in waiting])

    with consuming(build(database, kafka, stall_seconds=2)):
        wait_until(lambda: len(effects()) >= 3, what="the waiting events applied", timeout=60)

    assert made == ["stuck", "working"]
    assert effects() == [(str(e.event_id), n) for e, n in zip(waiting, (1, 2, 3), strict=True)]


def test_a_fenced_static_member_is_replaced_at_once_and_nothing_is_missed(
    database, kafka, topics, effects
):
    """A static member whose group.instance.id another member registered (as its own rejoin
    does after a broker restart) gets a fatal error: it commits nothing again and, once out
    of its group, fetches nothing (the chaos suite's services stalled so after each broker
    kill). The runner replaces it at once, long before the stall detection would."""
    source, _ = topics
    instance = f"fence-{uuid.uuid4().hex[:8]}"
    first, second = envelope("order-1", 1), envelope("order-1", 2)
    produce(kafka, source, [(b"order-1", first.to_bytes())])
    # Another member with the runner's group.instance.id, polling until the test ends.
    rogue = Consumer(
        {
            **kafka.client_properties(),
            "group.id": consumer_group("stock", kafka.topic_prefix),
            "group.instance.id": f"{instance}-stock-0",
            "enable.auto.commit": False,
        }
    )
    joined, done = threading.Event(), threading.Event()

    def take_its_place() -> None:
        rogue.subscribe([source])
        while not done.is_set():
            rogue.poll(0.2)
            if rogue.assignment():
                joined.set()

    with consuming(build(database, kafka, stall_seconds=600, group_instance_id=instance)):
        wait_until(lambda: len(effects()) >= 1, what="the first event applied", timeout=60)
        polling = threading.Thread(target=take_its_place, daemon=True)
        polling.start()
        try:
            assert joined.wait(60), "the rogue member never joined"
            # The runner's consumer learns it is fenced at its next offset commit (every
            # second) or heartbeat (every 3): only then does the next event go out.
            time.sleep(5)
            produce(kafka, source, [(b"order-1", second.to_bytes())])
            wait_until(lambda: len(effects()) >= 2, what="the event after the fencing", timeout=60)
            # A fenced consumer may still fetch what it holds, but can commit nothing: only
            # a replacement gets the group's offsets to the end (else all comes again).
            wait_until(
                lambda: committed_to_end(kafka, source),
                what="the group's offsets committed past the second event",
                timeout=60,
            )
        finally:
            done.set()
            polling.join(timeout=10)
            rogue.close()

    assert effects() == [(str(first.event_id), 1), (str(second.event_id), 2)]


def committed_to_end(kafka: KafkaSettings, topic: str) -> bool:
    """Whether the stock group has committed every partition of ``topic`` to its end."""
    reader = Consumer(
        {
            **kafka.client_properties(),
            "group.id": consumer_group("stock", kafka.topic_prefix),
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        committed = reader.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        ends = [reader.get_watermark_offsets(tp, timeout=10)[1] for tp in committed]
        # A partition with nothing in it has nothing committed either (OFFSET_INVALID).
        return all(end == 0 or tp.offset == end for tp, end in zip(committed, ends, strict=True))
    finally:
        reader.close()
