"""The runtime's Prometheus metrics: what the consumer, the HTTP edge and the switch record."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from saga_runtime import ConsumerRunner, ConsumerSettings, Envelope, Event, UnitOfWork, metrics
from saga_runtime.metrics_http import add_metrics_routes
from tests.unit.fakes import FakeConsumer, FakeDeadLetters, FakeMessage, FakeUnitOfWorkFactory


class Asked(Event):
    event_type = "Asked"
    n: int


def asked(n: int) -> Envelope:
    return Envelope.new(Asked(n=n), aggregate_id="order-1", producer="orders")


def typed(event: Envelope, offset: int, header_type: str) -> FakeMessage:
    return FakeMessage(event.to_bytes(), offset, _headers=[("event_type", header_type.encode())])


class DrainingConsumer(FakeConsumer):
    """Stops its runner once every message was polled (so ``run`` returns)."""

    runner: ConsumerRunner | None = None

    def poll(self, timeout: float) -> FakeMessage | None:
        msg = super().poll(timeout)
        if msg is None and self.runner is not None:
            self.runner.stop()
        return msg


def run(consumer: DrainingConsumer, service: str) -> None:
    uow = FakeUnitOfWorkFactory()
    letters = FakeDeadLetters()

    def nothing(_uow: UnitOfWork, _event: Envelope) -> None:
        pass

    runner = ConsumerRunner(
        service=service,
        topics=["orders.events"],
        handlers={"Asked": nothing},
        consumer=consumer.factory,  # type: ignore[arg-type]
        uow_factory=uow,  # type: ignore[arg-type]
        inbox=uow.inbox,  # type: ignore[arg-type]
        dead_letters=letters,  # type: ignore[arg-type]
        dead_letter_publisher=letters,
        settings=ConsumerSettings(batch_max_seconds=60.0, poll_timeout=0.01),
    )
    consumer.runner = runner
    thread = threading.Thread(target=runner.run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def recording() -> Iterator[None]:
    metrics.set_enabled(True)
    yield
    metrics.set_enabled(True)


def test_the_consumer_counts_each_outcome_by_event_type_once_per_batch(recording: None) -> None:
    first = asked(1)
    consumer = DrainingConsumer(
        [
            FakeMessage(first.to_bytes(), 0),
            FakeMessage(first.to_bytes(), 1),  # redelivered: a duplicate
            typed(asked(2), 2, "Asked"),
            typed(asked(3), 3, "Forged-123"),  # not handled: ignored, under "other"
        ]
    )
    run(consumer, "metrics-a")

    def events(event_type: str, outcome: str) -> float:
        return value(
            "saga_consumer_events_total",
            service="metrics-a",
            event_type=event_type,
            outcome=outcome,
        )

    # Without an event_type header (the relay always sets one) a message counts as "other".
    assert events("other", "applied") == 1
    assert events("other", "duplicate") == 1
    assert events("Asked", "applied") == 1
    assert events("other", "ignored") == 1
    assert value("saga_consumer_batch_size_count", service="metrics-a") == 1
    assert value("saga_consumer_batch_size_sum", service="metrics-a") == 4
    assert value("saga_consumer_batch_duration_seconds_count", service="metrics-a") == 1
    exposed = REGISTRY.get_sample_value
    assert exposed("saga_consumer_events_total", {"event_type": "Forged-123"}) is None


def test_handlers_are_timed_per_handled_event_type_and_rebalances_counted(
    recording: None,
) -> None:
    consumer = DrainingConsumer([typed(asked(n), n, "Asked") for n in range(3)])
    consumer.stats = json.dumps({"cgrp": {"rebalance_cnt": 2}})
    run(consumer, "metrics-f")
    timed = value(
        "saga_consumer_handler_duration_seconds_count", service="metrics-f", event_type="Asked"
    )
    assert timed == 3
    # Reported at every poll, counted once: the count is librdkafka's running total.
    assert value("saga_consumer_rebalances_total", service="metrics-f") == 2


def test_consumer_lag_follows_the_partitions_the_consumer_holds(recording: None) -> None:
    def stats(lags: dict[int, int]) -> str:
        partitions: dict[str, Any] = {str(p): {"consumer_lag": lag} for p, lag in lags.items()}
        partitions["-1"] = {"consumer_lag": -1}  # librdkafka's internal partition
        return json.dumps({"topics": {"orders.events": {"partitions": partitions}}})

    consumer = DrainingConsumer([FakeMessage(asked(1).to_bytes(), 0)])
    consumer.stats = stats({0: 7, 1: 3})
    run(consumer, "metrics-b")

    def lag(partition: str) -> float | None:
        return REGISTRY.get_sample_value(
            "saga_consumer_lag_messages",
            {"service": "metrics-b", "topic": "orders.events", "partition": partition},
        )

    assert (lag("0"), lag("1"), lag("-1")) == (7, 3, None)
    consumer.on_stats(stats({1: 0}))  # partition 0 revoked
    assert (lag("0"), lag("1")) == (None, 0)


def test_nothing_is_recorded_when_metrics_are_off(recording: None) -> None:
    metrics.set_enabled(False)
    run(DrainingConsumer([FakeMessage(asked(1).to_bytes(), 0)]), "metrics-c")
    metrics.effect_called("metrics-c", "charge", "ok", 0.1)
    assert value("saga_consumer_batch_size_count", service="metrics-c") == 0
    assert value("saga_effect_calls_total", service="metrics-c", kind="charge", result="ok") == 0


def test_http_requests_are_counted_by_route_template_never_by_path(recording: None) -> None:
    app = FastAPI()

    @app.get("/things/{thing_id}")
    def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    add_metrics_routes(app, service="metrics-d")
    client = TestClient(app)
    assert client.get("/things/order-42").status_code == 200
    assert client.get("/nowhere/order-43").status_code == 404
    body = client.get("/metrics").text

    def requests(route: str, status: str) -> float:
        return value(
            "saga_http_requests_total",
            service="metrics-d",
            method="GET",
            route=route,
            status=status,
        )

    assert requests("/things/{thing_id}", "200") == 1
    assert requests("unmatched", "404") == 1
    assert 'route="/things/{thing_id}"' in body
    assert "order-42" not in body and "order-43" not in body
    assert "/metrics" not in client.get("/openapi.json").text


def test_effect_calls_and_saga_outcomes_are_counted_with_their_durations(
    recording: None,
) -> None:
    metrics.effect_called("metrics-e", "charge", "retry", 0.2)
    metrics.effect_called("metrics-e", "charge", "ok", 0.1)
    metrics.saga_finished("CANCELLED-TEST", "timeout", 12.0)
    assert value("saga_effect_calls_total", service="metrics-e", kind="charge", result="ok") == 1
    assert value("saga_effect_duration_seconds_count", service="metrics-e", kind="charge") == 2
    assert value("saga_finished_total", state="CANCELLED-TEST", reason="timeout") == 1
    assert value("saga_duration_seconds_sum", state="CANCELLED-TEST") == 12.0
