"""What the relay benchmark's phases share: the configuration, each phase's database and
topic, and the events the bench writes to the orders outbox."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from saga_harness.bench.relay_process import RelayUnderTest
from saga_runtime import Envelope, Event, KafkaSettings, events_topic

__all__ = [
    "BENCH_PRODUCER",
    "SCHEMA",
    "BenchOrderPlaced",
    "Phase",
    "Progress",
    "RelayBenchConfig",
    "bench_event",
    "pending_rows",
]

SCHEMA = "orders"  # the outbox under test
BENCH_PRODUCER = "orders"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RelayBenchConfig:
    """``sagactl bench relay``'s options (``bench/cli.py`` maps the flags onto these)."""

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


# A backlog is written with COPY in these columns (see ``backlog_row``).
OUTBOX_COPY = sql.SQL(
    "COPY {}.outbox (event_id, event_type, aggregate_id, correlation_id, topic, envelope)"
    " FROM STDIN"
).format(sql.Identifier(SCHEMA))


def backlog_row(
    topic: str,
    rng: random.Random,
    positions: list[int],
    written: dict[str, tuple[str, int]],
) -> tuple[Any, ...]:
    """The next backlog row for ``OUTBOX_COPY``: an event of a random aggregate, its place in
    that aggregate's history noted in ``written`` (event id -> (aggregate, position))."""
    n = rng.randrange(len(positions))
    aggregate = f"bench-order-{n}"
    env = Envelope.new(
        bench_event(aggregate, positions[n], rng), aggregate_id=aggregate, producer=BENCH_PRODUCER
    )
    written[str(env.event_id)] = (aggregate, positions[n])
    positions[n] += 1
    return (
        env.event_id,
        env.event_type,
        env.aggregate_id,
        env.correlation_id,
        topic,
        env.model_dump_json(),
    )


def pending_rows(conn: psycopg.Connection) -> int:
    """Rows the relay still has to publish (an index-only scan of the pending index)."""
    row = conn.execute(
        "SELECT count(*) FROM orders.outbox WHERE published_at IS NULL AND failed_at IS NULL"
    ).fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class Phase:
    """One phase's run: a database and a topic of its own, and the relay's environment."""

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
