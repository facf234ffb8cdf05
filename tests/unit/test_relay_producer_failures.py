"""The relay's handling of a failed producer, as confluent-kafka reports it (fakes only).

The integration test fences a real transactional producer; there the fatal error
reaches the relay from ``poll()``. These cover the other two ways the client
reports it, which the real run does not produce in a fixed order: ``produce()``
raising ``_FATAL`` once the producer has failed, and delivery reports of the
messages that were in flight (``INVALID_PRODUCER_EPOCH``), both with
``fatal()`` false. Neither may mark a row failed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from prometheus_client import REGISTRY

from saga_runtime import DatabaseSettings, OutboxRelay, ProducerFatalError, RelaySettings

ROWS = [
    # The last two columns: the envelope's traceparent, the row's age when selected (s).
    (n, "orders.events", "order-1", f'{{"n": {n}}}', f"e{n}", "Numbered", "c1", None, 0.01)
    for n in (1, 2, 3)
]


class FakeSession:
    """The leader's connection: answers the select with ``ROWS``, records every write."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, Any]] = []

    def execute(self, statement: str, params: Any = None) -> FakeSession:
        if statement.lstrip().startswith("UPDATE"):
            self.writes.append((statement, params))
        self._select = "SELECT id, topic" in statement
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(ROWS) if self._select else []

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield


class FakeProducer:
    """Reports each message with ``report(n)``; ``produce`` raises ``refuse_from`` on."""

    def __init__(
        self,
        report: Callable[[int], KafkaError | None],
        refuse_from: int | None = None,
        refusal: KafkaError | None = None,
    ) -> None:
        self._report = report
        self._refuse_from = refuse_from
        self._refusal = refusal
        self._queued: list[tuple[Callable[[Any, Any], None], int]] = []
        self.produced = 0

    def list_topics(self, topic: str, timeout: float) -> Any:
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None)})

    def produce(self, topic: str, *, on_delivery: Callable[[Any, Any], None], **_: Any) -> None:
        self.produced += 1
        if self._refuse_from is not None and self.produced >= self._refuse_from:
            raise KafkaException(self._refusal)
        self._queued.append((on_delivery, self.produced))

    def poll(self, timeout: float) -> int:
        queued, self._queued = self._queued, []
        for on_delivery, n in queued:
            on_delivery(self._report(n), None)
        return len(queued)


def relay() -> OutboxRelay:
    return OutboxRelay(
        schema="orders",
        database=DatabaseSettings(url="postgresql://unused/unused"),
        settings=RelaySettings(),
        producer_factory=lambda: pytest.fail("the relay must use the producer it is given"),
    )


def test_produce_refused_because_the_producer_failed_marks_nothing():
    session = FakeSession()
    producer = FakeProducer(
        report=lambda n: None, refuse_from=2, refusal=KafkaError(KafkaError._FATAL)
    )
    with pytest.raises(ProducerFatalError):
        relay().publish_batch(session, producer, threading.Event())  # type: ignore[arg-type]
    assert session.writes == [], "no row failed, none marked: all stay pending"


def test_in_flight_messages_of_a_fenced_producer_are_not_marked_failed():
    session = FakeSession()
    fenced = KafkaError(KafkaError.INVALID_PRODUCER_EPOCH)
    assert not fenced.fatal()  # as confluent-kafka reports them
    producer = FakeProducer(report=lambda n: None if n == 1 else fenced)
    with pytest.raises(ProducerFatalError):
        relay().publish_batch(session, producer, threading.Event())  # type: ignore[arg-type]
    assert session.writes == []


def test_a_row_the_broker_refuses_for_itself_is_still_marked_failed():
    session = FakeSession()
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    producer = FakeProducer(report=lambda n: too_large if n == 2 else None)
    result = relay().publish_batch(session, producer, threading.Event())  # type: ignore[arg-type]
    assert (result.published, result.failed) == (2, 1)
    marked_failed = [params for statement, params in session.writes if "failed_at" in statement]
    assert [params[1] for params in marked_failed] == [2]


def test_metrics_count_each_acknowledged_row_with_its_latency_and_each_refused_one():
    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"service": "orders"}) or 0.0

    before = {
        name: sample(name)
        for name in (
            "saga_relay_rows_published_total",
            "saga_relay_rows_failed_total",
            "saga_relay_publish_latency_seconds_count",
            "saga_relay_publish_latency_seconds_sum",
        )
    }
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    producer = FakeProducer(report=lambda n: too_large if n == 2 else None)
    relay().publish_batch(FakeSession(), producer, threading.Event())  # type: ignore[arg-type]

    def grew(name: str) -> float:
        return sample(name) - before[name]

    assert grew("saga_relay_rows_published_total") == 2
    assert grew("saga_relay_rows_failed_total") == 1
    assert grew("saga_relay_publish_latency_seconds_count") == 2
    # Each row's age when selected (0.01 s), plus the time until its ack.
    assert grew("saga_relay_publish_latency_seconds_sum") >= 0.02
