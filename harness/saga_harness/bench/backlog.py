"""Samples the backlog once a second: sagas in flight, outbox rows pending, consumer lag."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from psycopg import sql

from saga_runtime import KafkaSettings, consumer_group, events_topic
from saga_system import SYSTEM

__all__ = ["BacklogSampler", "Sample", "growth"]


@dataclass(frozen=True)
class Sample:
    at: float
    in_flight: int  # accepted orders not yet in a final state
    outbox_pending: int
    consumer_lag: int


@dataclass
class BacklogSampler:
    database_url: str
    kafka: KafkaSettings
    in_flight: Callable[[], int]
    services: Sequence[str] = tuple(SYSTEM.consumers())
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bench-backlog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        pending = sql.SQL(" + ").join(
            sql.SQL(
                "(SELECT count(*) FROM {}.outbox WHERE published_at IS NULL AND failed_at IS NULL)"
            ).format(sql.Identifier(s))
            for s in self.services
        )
        consumers = {
            service: Consumer(
                {
                    "bootstrap.servers": self.kafka.bootstrap_servers,
                    "group.id": consumer_group(service, self.kafka.topic_prefix),
                    "enable.auto.commit": False,
                    **self.kafka.client_config,
                }
            )
            for service in SYSTEM.consumers()
        }
        admin = AdminClient(
            {"bootstrap.servers": self.kafka.bootstrap_servers, **self.kafka.client_config}
        )
        try:
            partitions = self._partitions(admin)
            # Named, so the bench's CPU split counts its backend as the harness's.
            with psycopg.connect(
                self.database_url, autocommit=True, application_name="bench:backlog"
            ) as conn:
                while not self._stop.wait(1.0):
                    row = conn.execute(sql.SQL("SELECT ") + pending).fetchone()
                    self.samples.append(
                        Sample(
                            at=time.time(),
                            in_flight=self.in_flight(),
                            outbox_pending=int(row[0]) if row else 0,
                            consumer_lag=self._lag(admin, consumers, partitions),
                        )
                    )
        finally:
            for consumer in consumers.values():
                consumer.close()

    def _partitions(self, admin: AdminClient) -> dict[str, list[TopicPartition]]:
        """Each service's subscribed partitions (the system's topics exist before the load)."""
        metadata = admin.list_topics(timeout=10)
        partitions: dict[str, list[TopicPartition]] = {}
        for service in SYSTEM.consumers():
            producers = SYSTEM.subscriptions(service)
            topics = [events_topic(p, self.kafka.topic_prefix) for p in producers]
            partitions[service] = [
                TopicPartition(t, p) for t in topics for p in metadata.topics[t].partitions
            ]
        return partitions

    def _lag(
        self,
        admin: AdminClient,
        consumers: dict[str, Consumer],
        partitions: dict[str, list[TopicPartition]],
    ) -> int:
        """Every group's lag: one ListOffsets request for all ends, one OffsetFetch per group.

        (Asking each partition's watermarks one by one was some 60 requests a
        second, about a tenth of a core of the broker's time taken from the
        system under test.)
        """
        every = {(tp.topic, tp.partition) for tps in partitions.values() for tp in tps}
        futures = admin.list_offsets(
            {TopicPartition(t, p): OffsetSpec.latest() for t, p in every},  # type: ignore[no-untyped-call]
            request_timeout=5,
        )
        ends = {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
        lag = 0
        for service, consumer in consumers.items():
            for tp in consumer.committed(partitions[service], timeout=5):
                lag += max(0, ends[(tp.topic, tp.partition)] - max(tp.offset, 0))
        return lag


def growth(samples: Sequence[Sample], attribute: str, start: float, end: float) -> float:
    """Least-squares slope of ``attribute`` over [start, end], in units per second."""
    points = [(s.at, float(getattr(s, attribute))) for s in samples if start <= s.at <= end]
    if len(points) < 3:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var
