"""Watches every events topic and keeps each order's timeline: what happened, and when.

Events topics stamp messages with the broker's append time (``LogAppendTime``), so
for each event there are two clocks on this one machine: ``occurred_at`` (the
producing transaction wrote it to its outbox) and ``appended`` (the broker
acknowledged it). Together they split a saga into hops.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from saga_runtime import KafkaSettings
from saga_runtime.envelope import HEADER_EVENT_TYPE

__all__ = ["FINAL_EVENTS", "Observed", "SagaObserver"]

# The events that put an order in its final state.
FINAL_EVENTS = {"OrderShipped": "SHIPPED", "OrderCancelled": "CANCELLED"}


@dataclass(frozen=True)
class Observed:
    event_type: str
    occurred_at: float  # epoch seconds, written by the producing service
    appended: float  # epoch seconds, the broker's append time


@dataclass
class SagaObserver:
    """A background consumer of ``topics`` from their current end (no consumer group)."""

    kafka: KafkaSettings
    topics: Iterable[str]
    on_final: Callable[[str, str, float], None] | None = None
    timelines: dict[str, list[Observed]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[str] = field(default_factory=list)

    def start(self, timeout: float = 30.0) -> None:
        self._thread = threading.Thread(target=self._run, name="bench-observer", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"observer not assigned within {timeout}s: {self.errors}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def timeline(self, order_id: str) -> list[Observed]:
        with self._lock:
            return list(self.timelines.get(order_id, ()))

    def _run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.kafka.bootstrap_servers,
                "group.id": f"bench-observer-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                # A fetch is answered as soon as a message arrives, whatever this
                # says; it only bounds how long an empty one waits. (10 ms made the
                # broker answer some 100 empty fetches a second, about 7% of a
                # core taken from the system under test.) Times come from the
                # broker's append stamps, not from when the observer reads them.
                "fetch.wait.max.ms": 500,
                **self.kafka.client_config,
            }
        )
        try:
            topics = list(self.topics)
            metadata = consumer.list_topics(timeout=10)
            consumer.assign(
                [
                    TopicPartition(topic, partition, OFFSET_END)
                    for topic in topics
                    for partition in metadata.topics[topic].partitions
                ]
            )
            # The assignment takes effect with the first poll.
            consumer.consume(num_messages=1, timeout=0.5)
            self._ready.set()
            while not self._stop.is_set():
                for msg in consumer.consume(num_messages=1000, timeout=0.2):
                    if msg.error() is None:
                        self._record(msg)
        except Exception as exc:
            self.errors.append(repr(exc))
            raise
        finally:
            consumer.close()

    def _record(self, msg: object) -> None:
        key = msg.key()  # type: ignore[attr-defined]
        headers = dict(msg.headers() or [])  # type: ignore[attr-defined]
        event_type = (headers.get(HEADER_EVENT_TYPE) or b"").decode()
        if not key or not event_type:
            return
        order_id = key.decode()
        _kind, millis = msg.timestamp()  # type: ignore[attr-defined]
        occurred = datetime.fromisoformat(json.loads(msg.value())["occurred_at"]).timestamp()  # type: ignore[attr-defined]
        seen = Observed(event_type, occurred, millis / 1000.0)
        with self._lock:
            self.timelines.setdefault(order_id, []).append(seen)
        final = FINAL_EVENTS.get(event_type)
        if final is not None and self.on_final is not None:
            self.on_final(order_id, final, seen.appended)
