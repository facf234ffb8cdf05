"""The relay benchmark: how fast the outbox relay drains a backlog, and how soon it publishes.

Two phases, each on a database and a topic of its own on the bench stack (both
dropped after):

- **drain**: ``rows`` rows are written to the orders outbox first (one COPY),
  then the real relay starts; the figure is rows / seconds from the moment the
  relay holds its leadership lock to the moment the last row is marked
  published (the marking transaction's ``now()``). A reader of the topic then
  checks that every event id arrived and that each aggregate's events arrived
  in the order they were written.
- **steady**: ``writers`` threads commit one event each per transaction
  through the real write path (``UnitOfWorkFactory`` with a ``RelayWakeup``)
  at ``rate`` per second for ``duration`` seconds, noting the wall-clock time
  right after each commit returns. The topic uses ``LogAppendTime``, so a
  message's timestamp is the broker's append time, and commit-to-ack =
  append time - commit time, for every event.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from saga_harness.bench.relay_figures import (
    DRAIN_TARGET_PER_S,
    STEADY_P99_TARGET_MS,
    check_arrivals,
    commit_to_ack,
    per_second,
)
from saga_harness.bench.relay_process import (
    RELAY_NAME,
    RelayUnderTest,
    effective_settings,
    relay_env,
    relay_running,
)
from saga_harness.bench.stats import summarize
from saga_harness.bench.topic_reader import TopicReader
from saga_runtime import (
    DatabaseSettings,
    Envelope,
    Event,
    KafkaSettings,
    Outbox,
    UnitOfWorkFactory,
    create_pool,
    ensure_topics,
    events_topic,
)
from saga_runtime.wakeup import RelayWakeup

__all__ = ["RelayBenchConfig", "default_steady_warmup", "run_relay_bench"]

SCHEMA = "orders"  # the outbox under test
BENCH_PRODUCER = "orders"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RelayBenchConfig:
    phases: tuple[str, ...] = ("drain", "steady")
    rows: int = 100_000  # drain: rows written before the relay starts
    rate: float = 1000.0  # steady: events per second
    duration: float = 30.0  # steady: seconds of load
    warmup: float = 2.0  # steady: seconds left out of the figures
    writers: int = 4  # steady: writer threads, one transaction per event
    aggregates: int = 10_000  # distinct aggregate ids (Kafka keys)
    partitions: int = 3
    relay_mode: str = "process"  # "process": python -m outbox_relay; "thread": in here
    overrides: tuple[tuple[str, str], ...] = ()  # RELAY_* / KAFKA_CLIENT_CONFIG for the relay
    seed: int = 1
    timeout: float = 600.0  # drain: give up after this many seconds
    profile: Path | None = None  # py-spy output, one file a phase
    samples: Path | None = None  # steady: every event's times as CSV


def default_steady_warmup(*, stack_was_running: bool, phases: tuple[str, ...]) -> float:
    """Seconds of the steady phase left out: 2, or 15 when it would meet a cold broker first.

    A broker that just started compiles its hot paths under the first load
    (the first second of such a run measured commit-to-ack p50 of 600 ms).
    After the drain phase, or on a stack already up, it is warm.
    """
    if stack_was_running or phases[:1] == ("drain",):
        return 2.0
    return 15.0


class BenchOrderPlaced(Event):
    """What the bench writes: shaped like an OrderCreated (about 600 bytes of envelope)."""

    event_type = "BenchOrderPlaced"

    order_id: str
    seq: int
    customer_id: str
    email: str
    lines: list[dict[str, Any]]
    card_token: str
    shipping_address: dict[str, str]


def bench_event(aggregate_id: str, seq: int, rng: random.Random) -> BenchOrderPlaced:
    return BenchOrderPlaced(
        order_id=aggregate_id,
        seq=seq,
        customer_id=f"bench-{rng.randrange(10_000)}",
        email="bench@example.com",
        lines=[
            {"sku": f"BENCH-{rng.randrange(200):03d}", "quantity": rng.randint(1, 3)}
            for _ in range(rng.randint(1, 3))
        ],
        card_token="tok_visa",
        shipping_address={
            "name": "Bench Customer",
            "line1": "1 Load Street",
            "city": "London",
            "postal_code": "EC1A 1BB",
            "country": "GB",
        },
    )


def run_relay_bench(
    config: RelayBenchConfig,
    *,
    admin_database_url: str,
    kafka_bootstrap: str,
    log_dir: Path,
    progress: Progress,
) -> dict[str, Any]:
    """Run the configured phases, each on a fresh database and topic; every figure, JSON-able."""
    env = relay_env(SCHEMA, dict(config.overrides))
    result: dict[str, Any] = {
        "benchmark": "relay",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "targets": {
            "drain_events_per_s": DRAIN_TARGET_PER_S,
            "steady_commit_to_ack_p99_ms": STEADY_P99_TARGET_MS,
        },
        "relay": {
            "mode": config.relay_mode,
            "overrides": dict(config.overrides),
            **effective_settings(env, client_id=f"{RELAY_NAME}-{SCHEMA}"),
        },
        "logs": _shown(log_dir),
    }
    for name in config.phases:
        with (
            _fresh_database(admin_database_url) as database_url,
            _fresh_topic(kafka_bootstrap, config.partitions) as kafka,
        ):
            phase = _Phase(
                database_url=database_url,
                kafka=kafka,
                config=config,
                relay_env=env,
                log_dir=log_dir,
                progress=progress,
            )
            load_before = os.getloadavg()[0]
            result[name] = _run_drain(phase) if name == "drain" else _run_steady(phase)
            # Other work on the machine shows here (the bench's own load is in it too).
            result[name]["load_average_1m"] = {
                "before": round(load_before, 2),
                "after": round(os.getloadavg()[0], 2),
            }
    return result


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is under it (no machine paths in JSON)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def _fresh_database(admin_url: str) -> Iterator[str]:
    """A database of its own, migrated to head (as ``build_system`` does); dropped after."""
    from migrations import upgrade
    from saga_harness.system import drop_system_database, with_database

    name = f"saga_relay_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(admin_url, name)
    try:
        upgrade(url)
        yield url
    finally:
        drop_system_database(admin_url, url)


@contextlib.contextmanager
def _fresh_topic(bootstrap: str, partitions: int) -> Iterator[KafkaSettings]:
    """The outbox's events topic under a prefix of its own; deleted after (as a system's are)."""
    from saga_harness.system import drop_system_topics

    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"r{uuid.uuid4().hex[:8]}.",
        topic_partitions=partitions,
    )
    ensure_topics(kafka, [events_topic(SCHEMA, kafka.topic_prefix)])
    try:
        yield kafka
    finally:
        drop_system_topics(kafka)


def _pending(conn: psycopg.Connection) -> int:
    """Rows the relay still has to publish (an index-only scan of the pending index)."""
    row = conn.execute(
        "SELECT count(*) FROM orders.outbox WHERE published_at IS NULL AND failed_at IS NULL"
    ).fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class _Phase:
    database_url: str
    kafka: KafkaSettings
    config: RelayBenchConfig
    relay_env: dict[str, str]
    log_dir: Path
    progress: Progress

    @property
    def topic(self) -> str:
        return events_topic(SCHEMA, self.kafka.topic_prefix)

    def say(self, line: str) -> None:
        self.progress(f"bench relay: {line}")

    def relay(self, name: str) -> RelayUnderTest:
        profile = self.config.profile
        return RelayUnderTest(
            mode=self.config.relay_mode,
            schema=SCHEMA,
            database_url=self.database_url,
            env={
                **self.relay_env,
                "DATABASE_URL": self.database_url,
                "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
                "KAFKA_TOPIC_PREFIX": self.kafka.topic_prefix,
            },
            log_path=self.log_dir / f"{name}-relay.log",
            profile=None
            if profile is None
            else profile.with_name(f"{profile.stem}-{name}{profile.suffix}"),
        )


def _write_backlog(phase: _Phase, conn: psycopg.Connection) -> dict[str, tuple[str, int]]:
    """COPY the drain's rows into the outbox; event id -> (aggregate, position in it)."""
    config = phase.config
    rng = random.Random(config.seed)
    written: dict[str, tuple[str, int]] = {}
    positions = [0] * config.aggregates
    with conn.cursor().copy(
        sql.SQL(
            "COPY {}.outbox (event_id, event_type, aggregate_id, correlation_id, topic,"
            " envelope) FROM STDIN"
        ).format(sql.Identifier(SCHEMA))
    ) as copy:
        for _ in range(config.rows):
            n = rng.randrange(config.aggregates)
            aggregate = f"bench-order-{n}"
            env = Envelope.new(
                bench_event(aggregate, positions[n], rng),
                aggregate_id=aggregate,
                producer=BENCH_PRODUCER,
            )
            written[str(env.event_id)] = (aggregate, positions[n])
            positions[n] += 1
            copy.write_row(
                (
                    env.event_id,
                    env.event_type,
                    env.aggregate_id,
                    env.correlation_id,
                    phase.topic,
                    env.model_dump_json(),
                )
            )
    # As autovacuum would have done to a backlog that built up over time.
    conn.execute(sql.SQL("VACUUM ANALYZE {}.outbox").format(sql.Identifier(SCHEMA)))
    return written


def _run_drain(phase: _Phase) -> dict[str, Any]:
    config = phase.config
    rows = config.rows
    phase.say(f"drain: writing {rows} rows over {config.aggregates} aggregates")
    started = time.monotonic()
    with psycopg.connect(phase.database_url, autocommit=True) as conn:
        written = _write_backlog(phase, conn)
        insert_s = time.monotonic() - started
        phase.say(f"drain: {rows} rows written in {insert_s:.1f}s; starting the relay")
        relay = phase.relay("drain")
        with relay_running(relay):
            last_report, last_pending = time.monotonic(), rows
            deadline = time.monotonic() + config.timeout
            while (pending := _pending(conn)) > 0:
                relay.check_alive()
                now = time.monotonic()
                if now > deadline:
                    raise RuntimeError(
                        f"drain: {pending} rows still pending after {config.timeout}s"
                    )
                if now - last_report >= 1.0:
                    rate = (last_pending - pending) / (now - last_report)
                    phase.say(f"drain: {rows - pending}/{rows} published ({rate:,.0f}/s)")
                    last_report, last_pending = now, pending
                time.sleep(0.25)
        row = conn.execute(
            "SELECT extract(epoch FROM min(published_at)), extract(epoch FROM max(published_at)),"
            " count(*) FILTER (WHERE failed_at IS NOT NULL),"
            " count(*) FILTER (WHERE published_at IS NOT NULL) FROM orders.outbox"
        ).fetchone()
    assert row is not None
    first_mark, last_mark = float(row[0] or 0), float(row[1] or 0)
    failed, published = int(row[2]), int(row[3])
    elapsed = last_mark - relay.leader_at
    events_per_s = rows / elapsed if elapsed > 0 else 0.0
    phase.say(f"drain: {rows} rows published in {elapsed:.2f}s ({events_per_s:,.0f}/s); reading")

    reader = TopicReader(phase.kafka, phase.topic)
    reader.start()
    try:
        reader.wait_for(rows, timeout=15.0)
        time.sleep(0.5)  # duplicates, if any, come with the rest
    finally:
        reader.stop()
    arrivals = check_arrivals(written, reader.delivered)
    return {
        "rows": rows,
        "aggregates": config.aggregates,
        "insert_s": round(insert_s, 3),
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(events_per_s, 1),
        "first_mark_after_s": round(first_mark - relay.leader_at, 3),
        "published": published,
        "failed": failed,
        "kafka": arrivals.as_dict(),
        "reader_errors": reader.errors[:5],
        "meets_target": events_per_s >= DRAIN_TARGET_PER_S
        and arrivals.missing == 0
        and arrivals.order_violations == 0,
    }


@dataclass
class _Writes:
    """What the steady phase's writers did, shared between their threads."""

    events: list[tuple[str, BenchOrderPlaced]]
    committed: dict[str, float]  # event id -> wall clock right after its commit returned
    commit_seconds: list[float]
    late_seconds: list[float]  # how far behind its schedule each transaction began
    errors: list[str]
    lock: threading.Lock
    next_slot: int = 0

    def take_slot(self) -> int:
        with self.lock:
            slot = self.next_slot
            self.next_slot += 1
            return slot


def _steady_events(config: RelayBenchConfig) -> list[tuple[str, BenchOrderPlaced]]:
    # Made beforehand, so that the writers' time goes to the write path itself.
    rng = random.Random(config.seed)
    events = []
    for slot in range(int(config.rate * config.duration)):
        aggregate = f"bench-order-{rng.randrange(config.aggregates)}"
        events.append((aggregate, bench_event(aggregate, slot, rng)))
    return events


def _writer(factory: UnitOfWorkFactory, writes: _Writes, *, start: float, rate: float) -> None:
    """Commit the event of each slot this thread takes, at its scheduled time."""
    while not writes.errors:
        slot = writes.take_slot()
        if slot >= len(writes.events):
            return
        due = start + slot / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        aggregate, event = writes.events[slot]
        began = time.time()
        try:
            with factory.begin() as uow:
                env = uow.emit(event, aggregate_id=aggregate)
        except Exception as exc:
            writes.errors.append(repr(exc))
            return
        done = time.time()
        with writes.lock:
            writes.committed[str(env.event_id)] = done
            writes.commit_seconds.append(done - began)
            writes.late_seconds.append(max(0.0, began - due))


def _run_steady(phase: _Phase) -> dict[str, Any]:
    config = phase.config
    database = DatabaseSettings(url=phase.database_url, pool_min_size=config.writers)
    pool = create_pool(database, role=SCHEMA, name="bench-writer", max_size=config.writers)
    wakeup = RelayWakeup(database, schema=SCHEMA, name="bench-writer")
    factory = UnitOfWorkFactory(
        pool=pool,
        outbox=Outbox(schema=SCHEMA, topic=phase.topic),
        producer=BENCH_PRODUCER,
        wakeup=wakeup,
    )
    writes = _Writes(
        events=_steady_events(config),
        committed={},
        commit_seconds=[],
        late_seconds=[],
        errors=[],
        lock=threading.Lock(),
    )
    reader = TopicReader(phase.kafka, phase.topic)
    relay = phase.relay("steady")
    try:
        with relay_running(relay):
            reader.start()
            start = time.time() + 0.2
            threads = [
                threading.Thread(
                    target=_writer,
                    args=(factory, writes),
                    kwargs={"start": start, "rate": config.rate},
                    name=f"bench-writer-{n}",
                    daemon=True,
                )
                for n in range(config.writers)
            ]
            phase.say(
                f"steady: {config.rate:g} events/s for {config.duration:g}s with "
                f"{config.writers} writers ({len(writes.events)} events)"
            )
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                relay.check_alive()
                time.sleep(1.0)
                elapsed = time.time() - start
                if 0 < elapsed <= config.duration + 1:
                    phase.say(
                        f"steady: {elapsed:4.0f}s  committed {len(writes.committed)}, "
                        f"read back {len(reader.appended)}"
                    )
            if writes.errors:
                raise RuntimeError(f"steady: a writer failed: {writes.errors[0]}")
            finished = max(writes.committed.values(), default=start)
            phase.say("steady: writers done; waiting for the relay and the reader")
            reader.wait_for(len(writes.committed), timeout=15.0)
            marks, pending, failed = _marks(phase.database_url)
    finally:
        reader.stop()
        wakeup.close()
        pool.close()
    committed, appended = writes.committed, reader.appended
    if config.samples is not None:
        _write_samples(config.samples, committed, appended, marks)
    measured = {k: v for k, v in committed.items() if v >= start + config.warmup}
    ack_summary = summarize(commit_to_ack(measured, appended))
    return {
        "rate": config.rate,
        "duration": config.duration,
        "warmup": config.warmup,
        "writers": config.writers,
        "aggregates": config.aggregates,
        "emitted": len(committed),
        "measured": len(measured),
        "achieved_rate": round(len(committed) / max(1e-9, finished - start), 1),
        "seen": sum(1 for k in committed if k in appended),
        "pending_after": pending,
        "failed": failed,
        "commit_to_ack_ms": ack_summary,
        "commit_to_mark_ms": summarize(commit_to_ack(measured, marks)),
        "commit_to_ack_ms_by_second": per_second(committed, appended, start=start),
        "commit_ms": summarize(writes.commit_seconds),
        "writer_late_ms": summarize(writes.late_seconds),
        "reader_errors": reader.errors[:5],
        "meets_target": bool(ack_summary.get("count"))
        and float(ack_summary["p99"]) <= STEADY_P99_TARGET_MS
        and all(k in appended for k in measured),
    }


def _marks(database_url: str) -> tuple[dict[str, float], int, int]:
    """Once the relay is done (or 30 s): each event's mark time, rows pending, rows failed."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while _pending(conn) and time.monotonic() < deadline:
            time.sleep(0.1)
        marks = {
            str(r[0]): float(r[1])
            for r in conn.execute(
                "SELECT event_id, extract(epoch FROM published_at) FROM orders.outbox"
                " WHERE published_at IS NOT NULL"
            )
        }
        row = conn.execute(
            "SELECT count(*) FROM orders.outbox WHERE failed_at IS NOT NULL"
        ).fetchone()
        return marks, _pending(conn), int(row[0]) if row else 0


def _write_samples(
    path: Path, committed: dict[str, float], appended: dict[str, float], marks: dict[str, float]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        out.write("event_id,committed,appended,marked\n")
        for event_id, at in committed.items():
            out.write(
                f"{event_id},{at:.6f},{appended.get(event_id, '')},{marks.get(event_id, '')}\n"
            )
