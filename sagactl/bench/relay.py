"""``sagactl bench relay``: how fast the outbox relay drains a backlog, and how soon it publishes.

Two phases, each on a database and a topic of its own on the bench stack:

- **drain**: ``--rows`` rows are written to the orders outbox first (one COPY),
  then the real relay starts; the figure is rows / seconds from the moment the
  relay holds its leadership lock to the moment the last row is marked
  published (the marking transaction's ``now()``). A Kafka consumer then
  checks that every event id arrived and that each aggregate's events arrived
  in the order they were written.
- **steady**: ``--writers`` threads commit one event each per transaction
  through the real write path (``UnitOfWorkFactory`` with a ``RelayWakeup``)
  at ``--rate`` per second for ``--duration`` seconds, noting the wall-clock
  time right after each commit returns. The topic uses ``LogAppendTime``, so a
  consumed message's timestamp is the broker's append time, and
  commit-to-ack = append time - commit time, for every event.

The relay runs as ``python -m outbox_relay`` (``--relay process``, the default:
the same process a deployment runs, with a GIL of its own) or as an
``OutboxRelay`` thread in this process (``--relay thread``). Its settings come
from the environment (``RELAY_*``, ``KAFKA_CLIENT_CONFIG``), ``--set NAME=VALUE``
adds to it, and the JSON records what was in effect.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from psycopg import sql

from saga_runtime import (
    DatabaseSettings,
    Envelope,
    Event,
    KafkaSettings,
    LogSettings,
    Outbox,
    OutboxRelay,
    RelaySettings,
    UnitOfWorkFactory,
    configure_logging,
    create_pool,
    ensure_topics,
    events_topic,
    producer_config,
)
from saga_runtime.envelope import HEADER_EVENT_ID
from saga_runtime.wakeup import RelayWakeup
from sagactl.bench.stats import summarize

__all__ = [
    "DRAIN_TARGET_PER_S",
    "STEADY_P99_TARGET_MS",
    "ArrivalCheck",
    "add_relay_parser",
    "check_arrivals",
    "cmd_relay",
    "commit_to_ack",
    "parse_overrides",
    "per_second",
    "relay_summary",
]

DRAIN_TARGET_PER_S = 10_000.0
STEADY_P99_TARGET_MS = 20.0

REPO = Path(__file__).resolve().parents[2]
SCHEMA = "orders"  # the outbox under test
RELAY_NAME = "bench-relay"
BENCH_PRODUCER = "orders"


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


# --- pure parts (unit-tested) ----------------------------------------------------------------


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``NAME=VALUE`` pairs (``--set``) as a dict; only relay and Kafka client settings."""
    overrides: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        if not name.startswith(("RELAY_", "KAFKA_CLIENT_CONFIG")):
            raise ValueError(f"{name}: only RELAY_* and KAFKA_CLIENT_CONFIG can be set")
        overrides[name] = value
    return overrides


@dataclass(frozen=True)
class ArrivalCheck:
    """What a reader of the topic saw, against what was written."""

    expected: int
    messages: int  # every message read, duplicates included
    arrived: int  # distinct expected event ids among them
    duplicates: int  # messages carrying an event id already seen
    unexpected: int  # messages whose event id was never written
    order_violations: int  # first deliveries of an aggregate's events not in written order

    @property
    def missing(self) -> int:
        return self.expected - self.arrived

    def as_dict(self) -> dict[str, int]:
        return {
            "expected": self.expected,
            "messages": self.messages,
            "arrived": self.arrived,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "unexpected": self.unexpected,
            "order_violations": self.order_violations,
        }


def check_arrivals(
    written: Mapping[str, tuple[str, int]], delivered: Iterable[str]
) -> ArrivalCheck:
    """Compare event ids read from the topic (in partition order) with what was written.

    ``written`` maps each event id to (aggregate, its position among that
    aggregate's events). An aggregate's events share a key, hence a partition,
    so their first deliveries must come in written order; a duplicate (at
    least once) may come later and is only counted.
    """
    seen: set[str] = set()
    last: dict[str, int] = {}
    messages = duplicates = unexpected = violations = 0
    for event_id in delivered:
        messages += 1
        where = written.get(event_id)
        if where is None:
            unexpected += 1
            continue
        if event_id in seen:
            duplicates += 1
            continue
        seen.add(event_id)
        aggregate, position = where
        if position < last.get(aggregate, -1):
            violations += 1
        else:
            last[aggregate] = position
    return ArrivalCheck(
        expected=len(written),
        messages=messages,
        arrived=len(seen),
        duplicates=duplicates,
        unexpected=unexpected,
        order_violations=violations,
    )


def commit_to_ack(
    committed: Mapping[str, float], appended: Mapping[str, float], *, since: float = 0.0
) -> list[float]:
    """Seconds from each commit (at or after ``since``) to the broker's first append of it."""
    return [
        appended[event_id] - at
        for event_id, at in committed.items()
        if at >= since and event_id in appended
    ]


def per_second(
    committed: Mapping[str, float], appended: Mapping[str, float], *, start: float
) -> list[dict[str, float | int]]:
    """Commit-to-ack summary for each second of the run (by commit time): where the tail was."""
    seconds: dict[int, list[float]] = {}
    for event_id, at in committed.items():
        if event_id in appended:
            seconds.setdefault(int(at - start), []).append(appended[event_id] - at)
    return [{"second": n, **summarize(values)} for n, values in sorted(seconds.items())]


def _latency_line(name: str, s: Mapping[str, Any]) -> str:
    if not s.get("count"):
        return f"  {name:<34} (no samples)"
    return (
        f"  {name:<34} p50 {s['p50']:7.1f}  p95 {s['p95']:7.1f}  p99 {s['p99']:7.1f}"
        f"  max {s['max']:8.1f} ms  ({s['count']} events)"
    )


def relay_summary(result: Mapping[str, Any]) -> str:
    """The human summary printed to stderr (the JSON has everything)."""
    relay = result["relay"]
    settings = relay["settings"]
    shown = [f"{k}={settings[k]}" for k in sorted(settings) if k in _SHOWN_SETTINGS]
    linger = relay.get("producer_config", {}).get("linger.ms")
    if linger is not None:
        shown.append(f"linger.ms={linger}")
    lines = [f"relay ({relay['mode']}): " + ", ".join(shown)]
    drain = result.get("drain")
    if drain:
        kafka = drain["kafka"]
        verdict = "meets" if drain["meets_target"] else "MISSES"
        lines.append(
            f"drain: {drain['rows']} rows in {drain['elapsed_s']:.2f}s = "
            f"{drain['events_per_s']:,.0f} events/s ({verdict} the {DRAIN_TARGET_PER_S:,.0f}/s "
            f"target); arrived {kafka['arrived']}/{kafka['expected']}, "
            f"{kafka['duplicates']} duplicates, {kafka['order_violations']} out of order, "
            f"{drain['failed']} failed"
        )
    steady = result.get("steady")
    if steady:
        ack = steady["commit_to_ack_ms"]
        verdict = "meets" if steady["meets_target"] else "MISSES"
        lines += [
            f"steady: {steady['emitted']} events at {steady['achieved_rate']:,.0f}/s "
            f"(asked {steady['rate']:g}/s for {steady['duration']:g}s, {steady['writers']} "
            f"writers); seen {steady['seen']}/{steady['emitted']}; p99 {verdict} the "
            f"{STEADY_P99_TARGET_MS:g} ms target",
            _latency_line("commit -> broker append", ack),
            _latency_line("commit -> marked published", steady["commit_to_mark_ms"]),
            _latency_line("writer: commit duration", steady["commit_ms"]),
        ]
    return "\n".join(lines)


_SHOWN_SETTINGS = {
    "batch_size",
    "max_in_flight",
    "select_interval",
    "mark_interval",
    "mark_synchronous_commit",
}


# --- infrastructure --------------------------------------------------------------------------


def _say(line: str) -> None:
    print(f"bench relay: {line}", file=sys.stderr, flush=True)


def _write(result: Mapping[str, Any], path: Path | None) -> None:
    text = json.dumps(result, indent=2)
    if path is None:
        print(text)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        _say(f"results written to {path}")


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A database of its own, migrated to head (as ``build_system`` does); dropped after."""
    from migrations import upgrade
    from sagactl.system import drop_system_database, with_database

    name = f"saga_relay_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(admin_url, name)
    try:
        upgrade(url)
        yield url
    finally:
        drop_system_database(admin_url, url)


def fresh_topic(bootstrap: str, partitions: int) -> KafkaSettings:
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"r{uuid.uuid4().hex[:8]}.",
        topic_partitions=partitions,
    )
    ensure_topics(kafka, [events_topic(SCHEMA, kafka.topic_prefix)])
    return kafka


def _leader_pid(conn: psycopg.Connection) -> int | None:
    row = conn.execute(
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()"
        " AND a.application_name = %s",
        (f"{RELAY_NAME}:{SCHEMA}",),
    ).fetchone()
    return None if row is None else int(row[0])


@dataclass
class RelayUnderTest:
    """The relay being measured: its own process (default) or a thread in this one."""

    mode: str
    database_url: str
    kafka: KafkaSettings
    env: dict[str, str]
    log_path: Path
    profile: Path | None = None  # py-spy's output for the relay process, if wanted
    leader_at: float = 0.0  # wall clock when it was seen holding its leadership lock
    _proc: subprocess.Popen[bytes] | None = None
    _spy: subprocess.Popen[bytes] | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _error: list[BaseException] = field(default_factory=list)

    def start(self, timeout: float = 60.0) -> None:
        if self.mode == "process":
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "outbox_relay"],
                    env=self.env,
                    stdout=log,
                    stderr=log,
                    cwd=REPO,
                    start_new_session=True,
                )
        else:
            relay = OutboxRelay(
                schema=SCHEMA,
                database=DatabaseSettings(url=self.database_url),
                settings=RelaySettings(),
                producer_factory=lambda: Producer(
                    producer_config(self.kafka, client_id=f"{RELAY_NAME}-{SCHEMA}")
                ),
                name=RELAY_NAME,
            )

            def run() -> None:
                try:
                    relay.run(self._stop)
                except BaseException as exc:
                    self._error.append(exc)

            self._thread = threading.Thread(target=run, name="bench-relay", daemon=True)
            self._thread.start()
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while _leader_pid(conn) is None:
                self.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the relay did not lead within {timeout}s")
                time.sleep(0.002)
        self.leader_at = time.time()
        if self.profile is not None:
            self._spy = start_py_spy(self.pid, self.profile)

    def check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"the relay exited ({self._proc.returncode}); see {self.log_path}")
        if self._error:
            raise RuntimeError(f"the relay thread died: {self._error[0]!r}")

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else os.getpid()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._stop.set()
            self._thread.join(20)
        if self._spy is not None:
            if self._proc is None:
                self._spy.send_signal(signal.SIGINT)  # a thread: the process lives on
            try:
                self._spy.wait(60)
            except subprocess.TimeoutExpired:
                self._spy.kill()
            _say(f"py-spy profile of the relay: {self.profile}")


def start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Sample ``pid`` with py-spy until it exits; the format follows ``out``'s suffix.

    ``.svg``: a flame graph; ``.json``: speedscope; anything else: collapsed stacks.
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--gil",
            "--format",
            fmt,
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def relay_running(relay: RelayUnderTest) -> Iterator[RelayUnderTest]:
    try:
        relay.start()
        yield relay
    finally:
        relay.stop()


class TopicReader:
    """Reads one topic from the beginning in a thread: event id -> first broker append time."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self._kafka = kafka
        self._topic = topic
        self.delivered: list[str] = []  # event ids in consumption order (duplicates included)
        self.appended: dict[str, float] = {}  # event id -> first append time (epoch seconds)
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-reader", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"topic reader not assigned within {timeout}s: {self.errors}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def wait_for(self, count: int, timeout: float) -> bool:
        """Until ``count`` distinct event ids were read, or ``timeout`` seconds without progress."""
        last, quiet_since = -1, time.monotonic()
        while len(self.appended) < count:
            if len(self.appended) != last:
                last, quiet_since = len(self.appended), time.monotonic()
            elif time.monotonic() - quiet_since > timeout:
                return False
            time.sleep(0.05)
        return True

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self._kafka.bootstrap_servers,
                "group.id": f"bench-relay-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                **self._kafka.client_config,
            }
        )
        try:
            metadata = consumer.list_topics(self._topic, timeout=10)
            consumer.assign(
                [
                    TopicPartition(self._topic, p, OFFSET_BEGINNING)
                    for p in metadata.topics[self._topic].partitions
                ]
            )
            # The assignment takes effect with the first consume (whose messages count too).
            batch = consumer.consume(num_messages=5000, timeout=0.2)
            self._ready.set()
            while True:
                for msg in batch:
                    error = msg.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            self.errors.append(str(error))
                        continue
                    self._record(msg)
                if self._stop.is_set():
                    break
                batch = consumer.consume(num_messages=5000, timeout=0.1)
        except Exception as exc:
            self.errors.append(repr(exc))
        finally:
            consumer.close()

    def _record(self, msg: Any) -> None:
        event_id = next(
            (v.decode() for k, v in msg.headers() or () if k == HEADER_EVENT_ID and v), None
        )
        if event_id is None:
            return
        self.delivered.append(event_id)
        _kind, millis = msg.timestamp()
        self.appended.setdefault(event_id, millis / 1000.0)


def _pending(conn: psycopg.Connection) -> int:
    """Rows the relay still has to publish (an index-only scan of the pending index)."""
    row = conn.execute(
        "SELECT count(*) FROM orders.outbox WHERE published_at IS NULL AND failed_at IS NULL"
    ).fetchone()
    assert row is not None
    return int(row[0])


# --- the phases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    database_url: str
    kafka: KafkaSettings
    relay_mode: str
    relay_env: dict[str, str]
    log_dir: Path
    profile: Path | None = None

    @property
    def topic(self) -> str:
        return events_topic(SCHEMA, self.kafka.topic_prefix)

    def relay(self, name: str) -> RelayUnderTest:
        env = {
            **self.relay_env,
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": self.kafka.topic_prefix,
        }
        return RelayUnderTest(
            mode=self.relay_mode,
            database_url=self.database_url,
            kafka=self.kafka,
            env=env,
            log_path=self.log_dir / f"{name}-relay.log",
            profile=None
            if self.profile is None
            else self.profile.with_name(f"{self.profile.stem}-{name}{self.profile.suffix}"),
        )


def run_drain(
    phase: Phase,
    *,
    rows: int,
    aggregates: int,
    seed: int,
    timeout: float,
    on_relay: Callable[[RelayUnderTest], None] | None = None,
) -> dict[str, Any]:
    rng = random.Random(seed)
    outbox = Outbox(schema=SCHEMA, topic=phase.topic)
    written: dict[str, tuple[str, int]] = {}
    positions = [0] * aggregates
    _say(f"drain: writing {rows} rows over {aggregates} aggregates")
    started = time.monotonic()
    with psycopg.connect(phase.database_url, autocommit=True) as conn:
        with conn.cursor().copy(
            sql.SQL(
                "COPY {}.outbox (event_id, event_type, aggregate_id, correlation_id, topic,"
                " envelope) FROM STDIN"
            ).format(sql.Identifier(SCHEMA))
        ) as copy:
            for _ in range(rows):
                n = rng.randrange(aggregates)
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
                        outbox.topic,
                        env.model_dump_json(),
                    )
                )
        # As autovacuum would have done to a backlog that built up over time.
        conn.execute(sql.SQL("VACUUM ANALYZE {}.outbox").format(sql.Identifier(SCHEMA)))
        insert_s = time.monotonic() - started
        _say(f"drain: {rows} rows written in {insert_s:.1f}s; starting the relay")

        relay = phase.relay("drain")
        with relay_running(relay):
            if on_relay is not None:
                on_relay(relay)
            last_report, last_pending = time.monotonic(), rows
            deadline = time.monotonic() + timeout
            while True:
                pending = _pending(conn)
                if pending == 0:
                    break
                relay.check_alive()
                now = time.monotonic()
                if now > deadline:
                    raise RuntimeError(f"drain: {pending} rows still pending after {timeout}s")
                if now - last_report >= 1.0:
                    rate = (last_pending - pending) / (now - last_report)
                    _say(f"drain: {rows - pending}/{rows} published ({rate:,.0f}/s)")
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
    _say(f"drain: {rows} rows published in {elapsed:.2f}s ({events_per_s:,.0f}/s); reading them")

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
        "aggregates": aggregates,
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


def run_steady(
    phase: Phase,
    *,
    rate: float,
    duration: float,
    warmup: float,
    writers: int,
    aggregates: int,
    seed: int,
    samples: Path | None = None,
    on_relay: Callable[[RelayUnderTest], None] | None = None,
) -> dict[str, Any]:
    database = DatabaseSettings(url=phase.database_url, pool_min_size=writers)
    pool = create_pool(database, role=SCHEMA, name="bench-writer", max_size=writers)
    wakeup = RelayWakeup(database, schema=SCHEMA, name="bench-writer")
    factory = UnitOfWorkFactory(
        pool=pool,
        outbox=Outbox(schema=SCHEMA, topic=phase.topic),
        producer=BENCH_PRODUCER,
        wakeup=wakeup,
    )
    total = int(rate * duration)
    committed: dict[str, float] = {}
    commit_seconds: list[float] = []
    late_seconds: list[float] = []
    lock = threading.Lock()
    next_slot = [0]
    errors: list[str] = []
    reader = TopicReader(phase.kafka, phase.topic)
    relay = phase.relay("steady")
    try:
        with relay_running(relay):
            if on_relay is not None:
                on_relay(relay)
            reader.start()
            start = time.time() + 0.2

            def write(worker: int) -> None:
                rng = random.Random(seed * 1000 + worker)
                while not errors:
                    with lock:
                        slot = next_slot[0]
                        next_slot[0] += 1
                    if slot >= total:
                        return
                    due = start + slot / rate
                    delay = due - time.time()
                    if delay > 0:
                        time.sleep(delay)
                    aggregate = f"bench-order-{rng.randrange(aggregates)}"
                    began = time.time()
                    try:
                        with factory.begin() as uow:
                            env = uow.emit(
                                bench_event(aggregate, slot, rng), aggregate_id=aggregate
                            )
                    except Exception as exc:
                        errors.append(repr(exc))
                        return
                    done = time.time()
                    with lock:
                        committed[str(env.event_id)] = done
                        commit_seconds.append(done - began)
                        late_seconds.append(max(0.0, began - due))

            threads = [
                threading.Thread(target=write, args=(n,), name=f"bench-writer-{n}", daemon=True)
                for n in range(writers)
            ]
            _say(
                f"steady: {rate:g} events/s for {duration:g}s with {writers} writers "
                f"({total} events)"
            )
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                relay.check_alive()
                time.sleep(1.0)
                elapsed = time.time() - start
                if 0 < elapsed <= duration + 1:
                    _say(
                        f"steady: {elapsed:4.0f}s  committed {len(committed)}, "
                        f"read back {len(reader.appended)}"
                    )
            if errors:
                raise RuntimeError(f"steady: a writer failed: {errors[0]}")
            finished = max(committed.values(), default=start)
            _say("steady: writers done; waiting for the relay and the reader")
            reader.wait_for(len(committed), timeout=15.0)
            with psycopg.connect(phase.database_url, autocommit=True) as conn:
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
                pending = _pending(conn)
                row = conn.execute(
                    "SELECT count(*) FROM orders.outbox WHERE failed_at IS NOT NULL"
                ).fetchone()
                failed = int(row[0]) if row else 0
    finally:
        reader.stop()
        wakeup.close()
        pool.close()
    if samples is not None:
        samples.parent.mkdir(parents=True, exist_ok=True)
        with samples.open("w") as out:
            out.write("event_id,committed,appended,marked\n")
            for event_id, at in committed.items():
                out.write(
                    f"{event_id},{at:.6f},{reader.appended.get(event_id, '')},"
                    f"{marks.get(event_id, '')}\n"
                )
    since = start + warmup
    measured = {k: v for k, v in committed.items() if v >= since}
    ack = commit_to_ack(measured, reader.appended)
    ack_summary = summarize(ack)
    achieved = len(committed) / max(1e-9, finished - start)
    return {
        "rate": rate,
        "duration": duration,
        "warmup": warmup,
        "writers": writers,
        "aggregates": aggregates,
        "emitted": len(committed),
        "measured": len(measured),
        "achieved_rate": round(achieved, 1),
        "seen": sum(1 for k in committed if k in reader.appended),
        "pending_after": pending,
        "failed": failed,
        "commit_to_ack_ms": ack_summary,
        "commit_to_mark_ms": summarize(commit_to_ack(measured, marks)),
        "commit_to_ack_ms_by_second": per_second(committed, reader.appended, start=start),
        "commit_ms": summarize(commit_seconds),
        "writer_late_ms": summarize(late_seconds),
        "reader_errors": reader.errors[:5],
        "meets_target": bool(ack_summary.get("count"))
        and float(ack_summary["p99"]) <= STEADY_P99_TARGET_MS
        and len(measured) == sum(1 for k in measured if k in reader.appended),
    }


# --- the command -----------------------------------------------------------------------------


def _relay_env(overrides: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    env.update(
        PYTHONPATH=str(REPO),
        RELAY_OUTBOXES=SCHEMA,
        RELAY_NAME=RELAY_NAME,
        LOG_LEVEL=env.get("LOG_LEVEL", "INFO"),
        **overrides,
    )
    return env


def _effective_settings(env: Mapping[str, str], kafka: KafkaSettings) -> dict[str, Any]:
    """The relay's settings and producer configuration as the relay will read them."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        settings = RelaySettings().model_dump(mode="json")
        kafka_env = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers)
        config = producer_config(kafka_env, client_id=f"{RELAY_NAME}-{SCHEMA}")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    config.pop("bootstrap.servers", None)
    return {"settings": settings, "producer_config": config}


def cmd_relay(args: argparse.Namespace) -> int:
    from sagactl.bench.spawn import bench_stack

    try:
        overrides = parse_overrides(args.set or [])
    except ValueError as exc:
        print(f"sagactl bench relay: {exc}", file=sys.stderr)
        return 2
    if args.batch_size:
        overrides["RELAY_BATCH_SIZE"] = str(args.batch_size)
    phases = ["drain", "steady"] if args.only is None else [args.only]
    env = _relay_env(overrides)
    if args.relay == "thread":
        os.environ.update(overrides)
        configure_logging(LogSettings(level="WARNING"))
    stack = bench_stack(args.state_dir)
    log_dir = args.state_dir / "bench" / f"relay-{int(time.time())}"
    result: dict[str, Any] = {"benchmark": "relay"}
    try:
        addresses = stack.ensure()
        relay_info = _effective_settings(env, KafkaSettings(bootstrap_servers="-"))
        result.update(
            machine={"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            targets={
                "drain_events_per_s": DRAIN_TARGET_PER_S,
                "steady_commit_to_ack_p99_ms": STEADY_P99_TARGET_MS,
            },
            relay={"mode": args.relay, "overrides": overrides, **relay_info},
            logs=str(log_dir),
        )
        _say(f"stack up (kafka {addresses.kafka_bootstrap}); logs in {log_dir}")
        for name in phases:
            with fresh_database(addresses.admin_database_url) as database_url:
                phase = Phase(
                    database_url=database_url,
                    kafka=fresh_topic(addresses.kafka_bootstrap, args.partitions),
                    relay_mode=args.relay,
                    relay_env=env,
                    log_dir=log_dir,
                    profile=args.py_spy,
                )
                load_before = os.getloadavg()[0]
                if name == "drain":
                    result["drain"] = run_drain(
                        phase,
                        rows=args.rows,
                        aggregates=args.aggregates,
                        seed=args.seed,
                        timeout=args.timeout,
                    )
                else:
                    result["steady"] = run_steady(
                        phase,
                        rate=args.rate,
                        duration=args.duration,
                        warmup=args.warmup,
                        writers=args.writers,
                        aggregates=args.aggregates,
                        seed=args.seed,
                        samples=args.samples,
                    )
                # Other work on the machine shows here (the bench's own load is in it too).
                result[name]["load_average_1m"] = {
                    "before": round(load_before, 2),
                    "after": round(os.getloadavg()[0], 2),
                }
    finally:
        if not args.keep_infra:
            stack.stop()
    _say("\n" + relay_summary(result))
    _write(result, args.json)
    return 0


def add_relay_parser(kinds: Any) -> argparse.ArgumentParser:
    """Add ``relay`` to ``sagactl bench``'s subcommands (``kinds``: its subparsers)."""
    relay: argparse.ArgumentParser = kinds.add_parser(
        "relay",
        help="outbox relay: drain rate of a backlog, and commit-to-ack latency at a steady rate",
        description=(
            "Drain: write --rows outbox rows, start the relay, time until the last is marked "
            f"published (target {DRAIN_TARGET_PER_S:,.0f} events/s). Steady: commit --rate "
            "events/s through the real write path for --duration seconds; commit-to-ack is the "
            f"broker's append time minus the commit time (target p99 {STEADY_P99_TARGET_MS:g} "
            "ms). Runs on the bench stack (SAGA_BENCH_PG_PORT, SAGA_BENCH_KAFKA_PORT), each "
            "phase with a database and a topic of its own."
        ),
    )
    relay.add_argument("--only", choices=("drain", "steady"), help="run one phase (default: both)")
    relay.add_argument("--rows", type=int, default=100_000, help="drain: rows written first")
    relay.add_argument("--rate", type=float, default=1000.0, help="steady: events per second")
    relay.add_argument("--duration", type=float, default=30.0, help="steady: seconds of load")
    relay.add_argument(
        "--warmup", type=float, default=2.0, help="steady: seconds left out of the figures"
    )
    relay.add_argument(
        "--writers", type=int, default=4, help="steady: writer threads (one transaction each)"
    )
    relay.add_argument(
        "--aggregates", type=int, default=10_000, help="distinct aggregate ids (Kafka keys)"
    )
    relay.add_argument("--partitions", type=int, default=3, help="partitions of the topic")
    relay.add_argument(
        "--relay",
        choices=("process", "thread"),
        default="process",
        help="run the relay as `python -m outbox_relay` (default) or as a thread in here",
    )
    relay.add_argument(
        "--batch-size", type=int, help="RELAY_BATCH_SIZE for this run (default: the setting)"
    )
    relay.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="a RELAY_* or KAFKA_CLIENT_CONFIG setting for the relay (repeatable)",
    )
    relay.add_argument(
        "--py-spy",
        type=Path,
        metavar="PATH",
        help="profile the relay with py-spy into PATH-<phase>.<ext> (.svg, .json or .txt)",
    )
    relay.add_argument(
        "--samples",
        type=Path,
        metavar="CSV",
        help="steady: write every event's commit, append and mark times (epoch s) here",
    )
    relay.add_argument("--seed", type=int, default=1)
    relay.add_argument(
        "--timeout", type=float, default=600.0, help="drain: give up after this many seconds"
    )
    relay.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    relay.add_argument("--keep-infra", action="store_true", help="leave the bench stack running")
    relay.set_defaults(func=cmd_relay)
    return relay


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sagactl.bench.relay [--state-dir DIR] relay ...``: the command standalone."""
    from sagactl.cli import default_state_dir

    parser = argparse.ArgumentParser(prog="sagactl bench")
    parser.add_argument("--state-dir", type=Path, default=default_state_dir())
    kinds = parser.add_subparsers(dest="bench", required=True, metavar="KIND")
    add_relay_parser(kinds)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
