"""The relay on the real broker and database: order, no skips, crashes, failover, outages."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer

from saga_runtime import (
    DatabaseSettings,
    Envelope,
    KafkaSettings,
    Outbox,
    OutboxRelay,
    OutboxUsageError,
    RelaySettings,
    ensure_topics,
    events_topic,
    producer_config,
)
from tests.fixtures.kafka import read_topic
from tests.support import (
    ThreadedRunner,
    envelope,
    insert_outbox_rows,
    pending_rows,
    relay_leader_name,
    relay_process,
    wait_until,
)

pytestmark = pytest.mark.integration


def make_relay(
    database: DatabaseSettings, kafka: KafkaSettings, **overrides: object
) -> OutboxRelay:
    settings = RelaySettings(poll_interval=0.2, lock_retry_interval=0.2, **overrides)  # type: ignore[arg-type]
    return OutboxRelay(
        schema="orders",
        database=database,
        settings=settings,
        producer_factory=lambda: Producer(producer_config(kafka, client_id="test-relay")),
        name="test-relay",
    )


def running(relay: OutboxRelay) -> ThreadedRunner:
    stop = threading.Event()
    return ThreadedRunner(lambda: relay.run(stop), stop.set)


@pytest.fixture
def topic(kafka: KafkaSettings) -> str:
    name = events_topic("orders", kafka.topic_prefix)
    ensure_topics(kafka, [name])
    return name


def values_by_key(records: list) -> dict[bytes, list[int]]:  # type: ignore[type-arg]
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for record in records:
        by_key[record.key].append(Envelope.from_bytes(record.value).payload["n"])
    return by_key


def test_publishes_committed_rows_in_order_with_key_and_headers(database, kafka, topic):
    events = [envelope("order-1", n) for n in range(5)]
    insert_outbox_rows(database, kafka, events)

    with running(make_relay(database, kafka)):
        wait_until(lambda: pending_rows(database) == 0, what="rows published")

    records = read_topic(kafka, topic, expect=5)
    assert [Envelope.from_bytes(r.value) for r in records] == events
    assert {r.key for r in records} == {b"order-1"}
    first = records[0]
    assert first.headers["event_id"] == str(events[0].event_id).encode()
    assert first.headers["event_type"] == b"Numbered"
    assert first.headers["correlation_id"] == str(events[0].correlation_id).encode()


def test_row_that_commits_after_a_higher_id_row_is_still_published(database, kafka, topic):
    outbox = Outbox(schema="orders", topic=topic)
    early, late = envelope("order-a", 1), envelope("order-b", 1)
    with running(make_relay(database, kafka)), psycopg.connect(database.url) as slow:
        slow_tx = slow.transaction()
        slow_tx.__enter__()
        low_id = outbox.add(slow, early)  # lower id, not committed yet
        with psycopg.connect(database.url) as fast, fast.transaction():
            high_id = outbox.add(fast, late)
        assert low_id < high_id
        wait_until(lambda: pending_rows(database) == 1, what="the higher id published first")
        slow_tx.__exit__(None, None, None)  # commit the lower id last
        wait_until(lambda: pending_rows(database) == 0, what="the lower id published too")

    ids = {Envelope.from_bytes(r.value).event_id for r in read_topic(kafka, topic, expect=2)}
    assert ids == {early.event_id, late.event_id}


def test_event_is_emitted_only_if_its_transaction_commits(database, kafka, topic):
    outbox = Outbox(schema="orders", topic=topic)
    rolled_back, committed = envelope("order-1", 1), envelope("order-1", 2)
    with psycopg.connect(database.url) as conn:
        with pytest.raises(RuntimeError), conn.transaction():
            outbox.add(conn, rolled_back)
            raise RuntimeError("the state change failed")
        with conn.transaction():
            outbox.add(conn, committed)

    with running(make_relay(database, kafka)):
        wait_until(lambda: pending_rows(database) == 0, what="rows published")

    records = read_topic(kafka, topic, expect=1)
    assert [Envelope.from_bytes(r.value).event_id for r in records] == [committed.event_id]


def test_outbox_refuses_a_write_outside_a_transaction(database, kafka, topic):
    outbox = Outbox(schema="orders", topic=topic)
    with psycopg.connect(database.url, autocommit=True) as conn, pytest.raises(OutboxUsageError):
        outbox.add(conn, envelope("order-1", 1))
    assert pending_rows(database) == 0


def test_crash_between_publish_and_mark_republishes_and_never_loses(
    database, kafka, topic, tmp_path: Path
):
    events = [envelope(f"order-{i % 2}", i) for i in range(6)]
    insert_outbox_rows(database, kafka, events)

    with relay_process(
        database,
        kafka,
        tmp_path / "crashing-relay.log",
        RELAY_OUTBOXES="orders",
        SAGA_CRASH_POINTS="relay.after_publish",
    ) as crashing:
        assert crashing.wait(60) == -signal.SIGKILL
    assert pending_rows(database) == 6, "nothing may be marked before the crash point"
    assert len(read_topic(kafka, topic, expect=6)) == 6, "but everything was published"

    with running(make_relay(database, kafka)):
        wait_until(lambda: pending_rows(database) == 0, what="republished after restart")

    records = read_topic(kafka, topic, expect=12)
    assert len(records) == 12  # each event twice: at least once, never lost
    assert {Envelope.from_bytes(r.value).event_id for r in records} == {e.event_id for e in events}


def test_hot_standby_takes_over_when_the_active_relay_dies(database, kafka, topic, tmp_path: Path):
    with (
        relay_process(
            database, kafka, tmp_path / "relay-a.log", RELAY_OUTBOXES="orders", RELAY_NAME="relay-a"
        ) as relay_a,
        relay_process(
            database, kafka, tmp_path / "relay-b.log", RELAY_OUTBOXES="orders", RELAY_NAME="relay-b"
        ) as relay_b,
    ):
        leader = wait_until(lambda: relay_leader_name(database), what="a leader")
        insert_outbox_rows(database, kafka, [envelope("order-1", 0)])
        wait_until(lambda: pending_rows(database) == 0, what="the leader publishes")

        active, standby = (
            (relay_a, "relay-b") if leader.startswith("relay-a") else (relay_b, "relay-a")
        )
        active.send_signal(signal.SIGKILL)
        active.wait(10)
        insert_outbox_rows(database, kafka, [envelope("order-1", n) for n in range(1, 4)])

        wait_until(
            lambda: (relay_leader_name(database) or "").startswith(standby),
            timeout=15,
            what="the standby to take the lock",
        )
        wait_until(lambda: pending_rows(database) == 0, timeout=15, what="standby publishes")

    assert values_by_key(read_topic(kafka, topic, expect=4))[b"order-1"] == [0, 1, 2, 3]


def test_broker_restart_mid_publish_loses_nothing_and_keeps_per_key_order(
    database, kafka, topic, local_stack
):
    aggregates = [f"order-{i}" for i in range(8)]
    total = 400
    written: list[Envelope] = []

    def write() -> None:
        for n in range(total):
            env = envelope(aggregates[n % len(aggregates)], n)
            insert_outbox_rows(database, kafka, [env])
            written.append(env)
            time.sleep(0.005)

    with running(make_relay(database, kafka, batch_size=50)):
        writer = threading.Thread(target=write)
        writer.start()
        wait_until(lambda: len(written) > total // 4, what="publishing under way")
        local_stack.kafka.kill()
        time.sleep(3)  # the outage itself, not a wait for readiness
        local_stack.kafka.start()
        writer.join(120)
        wait_until(lambda: pending_rows(database) == 0, timeout=120, what="backlog drained")

    records = read_topic(kafka, topic, expect=total, timeout=60)
    assert {Envelope.from_bytes(r.value).event_id for r in records} == {e.event_id for e in written}
    for key, numbers in values_by_key(records).items():
        first_seen = list(dict.fromkeys(numbers))
        assert first_seen == sorted(first_seen), f"{key!r} out of order: {first_seen}"


def test_relay_reports_its_lag(database, kafka, topic):
    relay = make_relay(database, kafka)
    with psycopg.connect(database.url, autocommit=True) as conn:
        insert_outbox_rows(database, kafka, [envelope("order-1", 1)])
        time.sleep(0.2)
        pending, oldest = relay.report_lag(conn)
    assert pending == 1 and oldest >= 0.2


def test_purge_deletes_old_published_rows_and_never_pending_ones(database, kafka, topic):
    insert_outbox_rows(database, kafka, [envelope("order-1", n) for n in range(4)])
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE orders.outbox SET published_at = now() - interval '8 days',"
            " created_at = now() - interval '8 days' WHERE id <= 2"
        )
        conn.execute(
            "UPDATE orders.outbox SET created_at = now() - interval '30 days' WHERE id = 4"
        )
        deleted = make_relay(database, kafka).purge(conn)
        remaining = [r[0] for r in conn.execute("SELECT id FROM orders.outbox ORDER BY id")]
    assert deleted == 2
    assert remaining == [3, 4]


def test_a_row_the_broker_refuses_is_marked_failed_and_the_rest_goes_on(database, kafka, topic):
    bad_outbox = Outbox(schema="orders", topic="bad topic!")

    def insert_with_bad_topic(n: int) -> None:
        with psycopg.connect(database.url) as conn, conn.transaction():
            bad_outbox.add(conn, envelope("order-bad", n))

    def states() -> tuple[int, int]:
        with psycopg.connect(database.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE published_at IS NOT NULL),"
                " count(*) FILTER (WHERE failed_at IS NOT NULL) FROM orders.outbox"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    with running(make_relay(database, kafka)):
        insert_outbox_rows(database, kafka, [envelope("order-1", 1)])
        insert_with_bad_topic(2)
        wait_until(lambda: states() == (1, 1), what="one published, one failed")
        # A topic refused once is refused again at once: that row fails, the relay goes on.
        insert_with_bad_topic(3)
        insert_outbox_rows(database, kafka, [envelope("order-1", 4)])
        wait_until(lambda: states() == (2, 2), what="the relay kept going")

    with psycopg.connect(database.url, autocommit=True) as conn:
        errors = [
            r[0]
            for r in conn.execute(
                "SELECT last_error FROM orders.outbox WHERE failed_at IS NOT NULL"
            )
        ]
    assert all(errors)
    assert values_by_key(read_topic(kafka, topic, expect=2))[b"order-1"] == [1, 4]


def test_rows_for_a_topic_that_does_not_exist_wait_then_fail(database, kafka, topic):
    """An unknown topic (auto-creation off, or not created yet) holds the rows behind it,
    so nothing overtakes them, and fails them after the grace period."""
    missing = Outbox(schema="orders", topic=f"{kafka.topic_prefix}never.created")
    with psycopg.connect(database.url) as conn, conn.transaction():
        missing.add(conn, envelope("order-1", 1))
    insert_outbox_rows(database, kafka, [envelope("order-1", 2)])
    relay = make_relay(database, kafka, unknown_topic_grace=3.0)
    relay._publisher._good_topics.clear()
    producer_config_no_autocreate = {
        **producer_config(kafka, client_id="t"),
        "allow.auto.create.topics": False,
    }
    relay._producer_factory = lambda: Producer(producer_config_no_autocreate)

    def failed_and_published() -> tuple[int, int]:
        with psycopg.connect(database.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE failed_at IS NOT NULL),"
                " count(*) FILTER (WHERE published_at IS NOT NULL) FROM orders.outbox"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    with running(relay):
        time.sleep(1.5)
        assert failed_and_published() == (0, 0), "held, and nothing overtakes the held row"
        wait_until(
            lambda: failed_and_published() == (1, 1),
            what="failed after the grace, then the next row",
        )


def attempts_per_row(database: DatabaseSettings) -> list[int]:
    """How many times each row was marked (a second mark would mean a second relay marked it)."""
    with psycopg.connect(database.url, autocommit=True) as conn:
        return [int(r[0]) for r in conn.execute("SELECT attempts FROM orders.outbox ORDER BY id")]


def failed_rows(database: DatabaseSettings) -> int:
    with psycopg.connect(database.url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM orders.outbox WHERE failed_at IS NOT NULL")
        return int(row.fetchone()[0])  # type: ignore[index]


def log_events(path: Path) -> list[str]:
    """The ``event`` of every JSON line a relay process wrote, in order."""
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line)["event"])
        except (ValueError, KeyError, TypeError):
            continue
    return events


def events_after(path: Path, marker: int) -> list[str]:
    return log_events(path)[marker:]


def leads(database: DatabaseSettings, relay: str) -> bool:
    return (relay_leader_name(database) or "").startswith(relay)


def is_stopped(proc: subprocess.Popen[bytes]) -> bool:
    stat = Path(f"/proc/{proc.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


@contextmanager
def resumed_at_exit(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """SIGCONT a process the test may have stopped, so that it can be terminated."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_frozen_leader_is_replaced_and_publishes_nothing_when_it_wakes(
    database, kafka, topic, tmp_path: Path
):
    """SIGSTOP the active relay: its sockets stay open and its kernel answers
    keepalives, exactly like a frozen host. The server ends its session after
    RELAY_LEASE (10 s) of silence, the standby takes the lock and publishes; the
    old leader, resumed, finds its session gone and never publishes or marks."""
    log_a, log_b = tmp_path / "relay-a.log", tmp_path / "relay-b.log"
    with (
        relay_process(
            database, kafka, log_a, RELAY_OUTBOXES="orders", RELAY_NAME="relay-a"
        ) as relay_a,
        resumed_at_exit(relay_a),
    ):
        wait_until(lambda: leads(database, "relay-a"), what="a leads")
        with relay_process(
            database, kafka, log_b, RELAY_OUTBOXES="orders", RELAY_NAME="relay-b"
        ) as relay_b:
            wait_until(lambda: "relay.standby" in log_events(log_b), what="b is a standby")
            insert_outbox_rows(database, kafka, [envelope("order-1", 0)])
            wait_until(lambda: pending_rows(database) == 0, what="a publishes")

            relay_a.send_signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            insert_outbox_rows(database, kafka, [envelope("order-1", n) for n in (1, 2, 3)])
            wait_until(
                lambda: pending_rows(database) == 0,
                timeout=20,
                what="the standby publishing within 20 s of the freeze",
            )
            assert leads(database, "relay-b")
            assert time.monotonic() - frozen_at < 20

            marker = len(log_events(log_a))
            relay_a.send_signal(signal.SIGCONT)
            wait_until(
                lambda: "relay.leadership_lost" in events_after(log_a, marker),
                what="the resumed relay to find its session ended",
            )
            wait_until(lambda: "relay.standby" in events_after(log_a, marker), what="a standby")
            insert_outbox_rows(database, kafka, [envelope("order-1", n) for n in (4, 5)])
            wait_until(lambda: pending_rows(database) == 0, what="b publishes the rest")
            assert relay_b.poll() is None
            assert "relay.leadership_acquired" not in events_after(log_a, marker)

    assert attempts_per_row(database) == [1] * 6, "each row marked once, by its one publisher"
    numbers = values_by_key(read_topic(kafka, topic, expect=6))[b"order-1"]
    assert numbers == [0, 1, 2, 3, 4, 5], "each event exactly once, in order"


def test_a_leader_frozen_mid_batch_does_not_publish_its_batch_when_it_wakes(
    database, kafka, topic, tmp_path: Path
):
    """The leader selected rows and froze before producing them (a freeze point
    stops it there with SIGSTOP). The standby takes over and publishes those rows;
    when the old leader resumes, its lease has run out, so it re-checks its
    session before producing, finds it ended, and publishes nothing."""
    log_a, log_b = tmp_path / "relay-a.log", tmp_path / "relay-b.log"
    with (
        relay_process(
            database,
            kafka,
            log_a,
            RELAY_OUTBOXES="orders",
            RELAY_NAME="relay-a",
            SAGA_FREEZE_POINTS="relay.after_select",
        ) as relay_a,
        resumed_at_exit(relay_a),
    ):
        wait_until(lambda: leads(database, "relay-a"), what="a leads")
        with relay_process(database, kafka, log_b, RELAY_OUTBOXES="orders", RELAY_NAME="relay-b"):
            wait_until(lambda: "relay.standby" in log_events(log_b), what="b is a standby")
            insert_outbox_rows(database, kafka, [envelope("order-1", n) for n in range(5)])
            wait_until(lambda: is_stopped(relay_a), what="a frozen after selecting its batch")
            wait_until(
                lambda: pending_rows(database) == 0, timeout=20, what="the standby publishing"
            )
            assert leads(database, "relay-b")

            marker = len(log_events(log_a))
            relay_a.send_signal(signal.SIGCONT)
            wait_until(
                lambda: "relay.leadership_lost" in events_after(log_a, marker),
                what="the resumed relay to find its session ended",
            )
            wait_until(lambda: "relay.standby" in events_after(log_a, marker), what="a standby")

    assert attempts_per_row(database) == [1] * 5
    numbers = values_by_key(read_topic(kafka, topic, expect=5, timeout=15))[b"order-1"]
    assert numbers == [0, 1, 2, 3, 4], "the resumed relay published none of its old batch"


def test_a_leader_that_cannot_reach_the_broker_steps_down(database, kafka, topic, tmp_path: Path):
    """Relay a's bootstrap address is a port nothing listens on; the shared
    broker is left alone. After RELAY_BROKER_STEPDOWN without a delivery report
    it releases the lock and relay b, which reaches the broker, publishes."""
    log_a, log_b = tmp_path / "relay-a.log", tmp_path / "relay-b.log"
    unreachable = kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{unused_port()}"})
    with relay_process(
        database,
        unreachable,
        log_a,
        RELAY_OUTBOXES="orders",
        RELAY_NAME="relay-a",
        RELAY_BROKER_STEPDOWN="3",
    ):
        wait_until(lambda: leads(database, "relay-a"), what="a leads")
        with relay_process(database, kafka, log_b, RELAY_OUTBOXES="orders", RELAY_NAME="relay-b"):
            wait_until(lambda: "relay.standby" in log_events(log_b), what="b is a standby")
            insert_outbox_rows(database, kafka, [envelope(f"order-{n % 2}", n) for n in range(6)])
            wait_until(lambda: "relay.broker_stepdown" in log_events(log_a), what="a steps down")
            wait_until(lambda: pending_rows(database) == 0, what="b publishes")
            assert leads(database, "relay-b")
            stepdown = log_events(log_a).index("relay.broker_stepdown")
            wait_until(
                lambda: "relay.standby" in events_after(log_a, stepdown),
                what="a competing again, as a standby",
            )

    assert attempts_per_row(database) == [1] * 6
    by_key = values_by_key(read_topic(kafka, topic, expect=6))
    assert by_key == {b"order-0": [0, 2, 4], b"order-1": [1, 3, 5]}


def test_a_fatal_producer_error_replaces_the_producer_and_keeps_rows_pending(
    database, kafka, topic
):
    """A real fatal error from the real broker: the relay's producers are
    transactional here, so a second producer with the same transactional.id
    fences the relay's (confluent-kafka then raises _FENCED, fatal, from poll(),
    and reports the messages in flight as INVALID_PRODUCER_EPOCH, not fatal).
    The relay makes a new producer and publishes every row; none is failed."""
    transactional_id = f"{kafka.topic_prefix}relay"
    made: list[Producer] = []

    def transactional_producer() -> Producer:
        producer = Producer(
            {**producer_config(kafka, client_id="test-relay"), "transactional.id": transactional_id}
        )
        producer.init_transactions(30)
        producer.begin_transaction()
        made.append(producer)
        return producer

    relay = make_relay(database, kafka)
    relay._producer_factory = transactional_producer
    with running(relay) as runner:
        insert_outbox_rows(database, kafka, [envelope("order-1", n) for n in range(3)])
        wait_until(lambda: pending_rows(database) == 0, what="the first producer publishes")

        fencer = Producer({**kafka.client_properties(), "transactional.id": transactional_id})
        fencer.init_transactions(30)  # a newer epoch: the relay's producer is fenced
        insert_outbox_rows(database, kafka, [envelope("order-1", n) for n in range(3, 8)])
        wait_until(lambda: pending_rows(database) == 0, timeout=60, what="a new producer publishes")
        assert runner.thread.is_alive()

    assert len(made) >= 2, "the fenced producer was replaced"
    assert failed_rows(database) == 0, "no row failed because its producer did"
