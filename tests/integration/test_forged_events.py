"""Events from the right producer only: an event on another service's topic is forged.

Issue 16, point 4, on the real broker and database: the orders service, built from the
declared system, reads a ``PaymentSucceeded`` only from the payments service's topic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from contracts.payments import PaymentSucceeded
from orders import bootstrap
from orders.api import create_app
from orders.settings import OrdersSettings
from saga_harness.system import order_request
from saga_harness.tokens import Tokens
from saga_runtime import (
    AuthSettings,
    ConsumerSettings,
    DatabaseSettings,
    Envelope,
    KafkaSettings,
    ServiceRuntime,
    TokenVerifier,
    ensure_topics,
    events_topic,
)
from saga_system import SYSTEM
from tests.fixtures.kafka import produce
from tests.support import ThreadedRunner, wait_until

pytestmark = pytest.mark.integration

AUTH = AuthSettings(jwt_secret=SecretStr("forged-events-test-secret-" + "x" * 16))


@pytest.fixture
def orders_service(database: DatabaseSettings, kafka: KafkaSettings) -> Iterator[ServiceRuntime]:
    ensure_topics(kafka, SYSTEM.topics(kafka.topic_prefix))
    settings = OrdersSettings(
        kafka=kafka,
        database=database,
        consumer=ConsumerSettings(backoff_initial=0.05, backoff_max=0.5),
        auth=AUTH,
    )
    runtime = bootstrap.build(settings)
    assert runtime.runner is not None

    def run() -> None:
        try:
            runtime.run_consumer(install_signal_handlers=False)
        finally:
            runtime.close()

    with ThreadedRunner(run, runtime.runner.stop):
        yield runtime


def place_order(runtime: ServiceRuntime) -> str:
    """An order through the API, as a customer places it: PENDING, awaiting its payment."""
    body = order_request()
    app = create_app(runtime.uow_factory, TokenVerifier.from_settings(AUTH))
    with TestClient(app, headers=Tokens(AUTH).customer(body["customer_id"])) as client:
        response = client.post("/orders", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["order_id"])


def paid(order_id: str) -> Envelope:
    event = PaymentSucceeded(order_id=order_id, amount_cents=1_000, charge_id="ch-forged")
    return Envelope.new(event, aggregate_id=order_id, producer="payments")


def status(conn: psycopg.Connection, order_id: str) -> str:
    row = conn.execute("SELECT status FROM orders.orders WHERE id = %s", (order_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_a_payment_written_to_another_services_topic_is_dead_lettered_as_forged(
    orders_service: ServiceRuntime,
    kafka: KafkaSettings,
    admin_conn: psycopg.Connection,
    operator_cli: Callable[..., Any],
) -> None:
    order_id = place_order(orders_service)
    forged = paid(order_id)
    # Whoever may write the stock topic (or any but the payments one) cannot pay an order.
    stock_topic = events_topic("stock", kafka.topic_prefix)
    produce(kafka, stock_topic, [(order_id.encode(), forged.to_bytes())])

    letters = wait_until(
        lambda: operator_cli("dlq", "list", "--service", "orders", "--order", order_id)["rows"],
        what="the forged payment dead-lettered",
    )
    [letter] = letters
    assert (letter["event_type"], letter["error_type"]) == ("PaymentSucceeded", "ForgedEventError")
    assert letter["event_id"] == str(forged.event_id)
    assert letter["source"]["topic"] == stock_topic
    assert events_topic("payments", kafka.topic_prefix) in letter["error"]
    assert status(admin_conn, order_id) == "PENDING"
    assert admin_conn.execute(
        "SELECT count(*) FROM orders.inbox WHERE event_id = %s", (forged.event_id,)
    ).fetchone() == (0,)

    # The same fact from the payments service's own topic is applied: the order is approved.
    genuine = paid(order_id)
    produce(
        kafka,
        events_topic("payments", kafka.topic_prefix),
        [(order_id.encode(), genuine.to_bytes())],
    )
    wait_until(lambda: status(admin_conn, order_id) == "APPROVED", what="the genuine payment")
    assert len(operator_cli("dlq", "list", "--service", "orders", "--order", order_id)["rows"]) == 1
