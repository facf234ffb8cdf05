"""What one run of the relay comparison needs, whichever relay it measures.

A run is one workload through one relay on a database and a topic of its own. The two
relays differ only in how they are started (``Contender``); the workloads, the reader of
the topic and the CPU accounting are the same code for both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import Consumer, TopicPartition

from saga_harness.bench.cpu import Readings, Target, cpu_figures, read_process_table, take_readings
from saga_runtime import KafkaSettings

__all__ = [
    "Contender",
    "Relay",
    "RunContext",
    "cpu_per_event",
    "freeze",
    "running",
    "snapshot",
    "thaw",
    "topic_total",
]


class Relay(Protocol):
    """What a workload asks of a relay (``RelayUnderTest`` and ``DebeziumRelay`` both are)."""

    leader_at: float

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def check_alive(self) -> None: ...
    @property
    def pid(self) -> int: ...


@dataclass(frozen=True)
class RunContext:
    """One run's database, topic and place for logs; the daemons whose CPU is counted."""

    label: str  # e.g. "round1-steady-1000-debezium": names its logs
    workload: str  # "drain" or "steady-<rate>"
    database_url: str
    kafka: KafkaSettings
    topic: str
    warmup_topic: str  # where the warm-up events go, so that the reader never sees them
    run_dir: Path
    postgres_pid: int | None
    kafka_pid: int | None


@dataclass(frozen=True)
class Contender:
    """A relay under comparison: how to start it on a run's database and topic.

    ``prepare`` wraps the whole run (Debezium's slot and publication, made before any row
    is written); ``wakeup`` says whether writers send our relay's post-commit NOTIFY.
    """

    name: str
    relay: Callable[[RunContext], Relay]
    prepare: Callable[[RunContext], AbstractContextManager[object]]
    wakeup: bool


@contextlib.contextmanager
def running(relay: Relay) -> Iterator[Relay]:
    """Start ``relay`` (returns once it can read), stop it whatever happens."""
    try:
        relay.start()
        yield relay
    finally:
        relay.stop()


def freeze(relay: Relay) -> None:
    """SIGSTOP the relay: it reads nothing, and keeps its JIT-compiled code and connections."""
    os.kill(relay.pid, signal.SIGSTOP)


def thaw(relay: Relay) -> None:
    """SIGCONT a frozen relay."""
    os.kill(relay.pid, signal.SIGCONT)


def _targets(relay_pid: int, ctx: RunContext) -> dict[str, Target]:
    return {
        "relay": Target(relay_pid),
        "postgres": Target(ctx.postgres_pid, tree=True),
        "kafka": Target(ctx.kafka_pid),
    }


def snapshot(relay_pid: int, ctx: RunContext) -> tuple[float, Readings]:
    """The relay's, PostgreSQL's (every backend) and the broker's CPU ticks, now."""
    return time.time(), take_readings(_targets(relay_pid, ctx), read_process_table())


def cpu_per_event(
    first: tuple[float, Readings], last: tuple[float, Readings], *, events: int
) -> dict[str, Any]:
    """CPU seconds, % of a core and CPU ms per event of each process between two snapshots."""
    figures = cpu_figures(
        first[1],
        last[1],
        seconds=last[0] - first[0],
        completed=events,
        ticks_per_second=os.sysconf("SC_CLK_TCK"),
        cores=os.cpu_count(),
    )
    # cpu_figures speaks of sagas; here a unit is one event.
    processes: Mapping[str, dict[str, Any]] = figures["processes"]
    return {
        "seconds": figures["seconds"],
        "events": events,
        "processes": {
            label: {
                "cpu_s": f["cpu_s"],
                "pct_of_core": f["pct_of_core"],
                "ms_per_event": f["ms_per_saga"],
            }
            for label, f in processes.items()
        },
        "unavailable": figures["unavailable"],
    }


@contextlib.contextmanager
def topic_total(kafka: KafkaSettings, topic: str) -> Iterator[Callable[[], int]]:
    """A function giving the number of messages in ``topic`` (the sum of its end offsets).

    Cheap enough to ask four times a second while a relay drains: one ListOffsets a
    partition, no fetching.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": "bench-relay-watermarks",
            "enable.auto.commit": False,
            **kafka.client_config,
        }
    )
    try:
        partitions = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)

        def total() -> int:
            return sum(
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                for p in partitions
            )

        yield total
    finally:
        consumer.close()
