"""One order is one trace: the span tree of a whole saga across the five services.

Every service runs in this process (each on its real runtime, broker and database, wired by
its composition root), with the relays of the five outboxes and the SDK's in-memory exporter
in place of OTLP. One order placed through the API must yield one trace whose spans follow
the causation chain: request, emitted event, the relay's publish, each consumption, its
handler, each call to the outside world and the decision on it, and so on to the end.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from notifications import bootstrap as notifications
from notifications.settings import NotificationsSettings
from orders import bootstrap as orders
from orders.api import create_app
from orders.settings import OrdersSettings
from payments import bootstrap as payments
from payments.settings import PaymentsSettings
from saga_harness.system import order_request
from saga_harness.tokens import Tokens
from saga_runtime import (
    AuthSettings,
    ConsumerSettings,
    DatabaseSettings,
    EffectSettings,
    KafkaSettings,
    OutboxRelay,
    RelaySettings,
    ServiceRuntime,
    TokenVerifier,
    ensure_topics,
    producer_config,
    tracing,
)
from saga_system import SYSTEM
from shipments import bootstrap as shipments
from shipments.settings import ShipmentsEffectSettings, ShipmentsSettings
from simulators.smtp_sink import SmtpSink
from stock import bootstrap as stock
from stock.catalogue import seed
from stock.settings import StockSettings
from tests.integration.payment_provider_server import API_KEY, running_provider
from tests.support import ThreadedRunner, wait_until

pytestmark = pytest.mark.integration

AUTH = AuthSettings(jwt_secret=SecretStr("tracing-test-secret-" + "x" * 16))
CONSUMER = ConsumerSettings(backoff_initial=0.05, backoff_max=0.5)
EFFECTS = EffectSettings(poll_interval=0.05, lease=5.0)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """Every span the runtime makes in this test, recorded (sampled) and kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    return exporter


def consuming(runtime: ServiceRuntime) -> ThreadedRunner:
    def run() -> None:
        try:
            runtime.run_consumer(install_signal_handlers=False)
        finally:
            runtime.close()

    return ThreadedRunner(run, runtime.stop_consumers)


def relaying(schema: str, database: DatabaseSettings, kafka: KafkaSettings) -> ThreadedRunner:
    relay = OutboxRelay(
        schema=schema,
        database=database,
        settings=RelaySettings(poll_interval=0.2, lock_retry_interval=0.2),
        producer_factory=lambda: Producer(producer_config(kafka, client_id=f"relay-{schema}")),
        name=f"test-relay-{schema}",
    )
    stop = threading.Event()
    return ThreadedRunner(lambda: relay.run(stop), stop.set)


@pytest.fixture
def the_system(
    database: DatabaseSettings, kafka: KafkaSettings, admin_conn: psycopg.Connection, tmp_path: Path
) -> Iterator[ServiceRuntime]:
    """The five services and their relays in this process; yields the orders runtime."""
    ensure_topics(kafka, SYSTEM.topics(kafka.topic_prefix))
    seed(admin_conn)
    common: dict[str, Any] = {"kafka": kafka, "database": database, "consumer": CONSUMER}
    with ExitStack() as stack:
        provider_url = stack.enter_context(running_provider(database.url))
        sink = stack.enter_context(SmtpSink(path=tmp_path / "mail.jsonl"))
        payments_settings = PaymentsSettings(
            provider_url=provider_url, provider_api_key=API_KEY, effects=EFFECTS, **common
        )
        provider = payments.http_provider(payments_settings)
        stack.callback(provider.close)
        builds = [
            lambda: orders.build(OrdersSettings(auth=AUTH, **common)),
            lambda: stock.build(StockSettings(**common)),
            lambda: payments.build(payments_settings, provider),
            lambda: shipments.build(
                ShipmentsSettings(
                    booking_seconds=0.0,
                    effects=ShipmentsEffectSettings(**EFFECTS.model_dump()),
                    **common,
                )
            ),
            lambda: notifications.build(
                NotificationsSettings(smtp_port=sink.port, effects=EFFECTS, **common)
            ),
        ]
        runtimes = []
        for build in builds:
            runtimes.append(build())
            stack.enter_context(consuming(runtimes[-1]))
        order_runtime = runtimes[0]
        for schema in SYSTEM.outboxes():
            stack.enter_context(relaying(schema, database, kafka))
        yield order_runtime


def place_order(runtime: ServiceRuntime) -> str:
    body = order_request()
    app = create_app(runtime.uow_factory, TokenVerifier.from_settings(AUTH))
    tracing.trace_requests(app)  # as ServiceRuntime.run_with_api serves it
    with TestClient(app, headers=Tokens(AUTH).customer(body["customer_id"])) as client:
        response = client.post("/orders", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["order_id"])


def notified(conn: psycopg.Connection, order_id: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM orders.timeline WHERE order_id = %s"
        " AND event_type = 'CustomerNotified'",
        (order_id,),
    ).fetchone()
    return row is not None and row[0] >= 2  # approved, then shipped


def lineage(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    """``span``'s ancestors' names and its own, root first (service of each consumption)."""
    names: list[str] = []
    current: ReadableSpan | None = span
    while current is not None:
        service = (current.attributes or {}).get("saga.service")
        named = current.name
        if current.name.startswith("consume") and service:
            named += f" @{service}"
        names.append(named)
        parent = current.parent
        current = by_id.get(parent.span_id) if parent is not None else None
        if parent is not None and current is None:
            names.append("<missing parent>")
    return names[::-1]


def test_one_order_is_one_trace_across_the_five_services(
    spans: InMemorySpanExporter, the_system: ServiceRuntime, admin_conn: psycopg.Connection
) -> None:
    order_id = place_order(the_system)
    wait_until(lambda: notified(admin_conn, order_id), timeout=60, what="the saga to finish")
    wait_until(
        lambda: sum(s.name == "consume CustomerNotified" for s in spans.get_finished_spans()) == 2,
        what="orders to record both notifications",
    )

    finished = spans.get_finished_spans()
    [root] = [s for s in finished if s.parent is None]
    assert root.name == "POST /orders"
    assert root.attributes["http.response.status_code"] == 202
    assert {s.context.trace_id for s in finished} == {root.context.trace_id}
    by_id = {s.context.span_id: s for s in finished}
    assert all(s.parent is None or s.parent.span_id in by_id for s in finished)

    # Each hop: emitted by a handler (or the request, or a decision), published by the
    # relay, consumed, handled. Every event the saga made has each of its steps.
    def hop(event: str, service: str) -> list[str]:
        return [f"emit {event}", f"publish {event}", f"consume {event} @{service}"]

    paths = [lineage(s, by_id) for s in finished if s.name == "consume CustomerNotified"]
    [shipped_notice] = [p for p in paths if "consume OrderShipped @notifications" in p]
    # Payments asks for the charge once it knows both the card and the amount: on
    # StockReserved, unless OrderCreated reached it last.
    charged_on = next(p for p in shipped_notice if p.startswith("consume") and "@payments" in p)
    first_hops = (
        [*hop("OrderCreated", "stock"), "handle OrderCreated", *hop("StockReserved", "payments")]
        if charged_on == "consume StockReserved @payments"
        else hop("OrderCreated", "payments")
    )
    assert shipped_notice == [
        "POST /orders",
        *first_hops,
        charged_on.replace("consume", "handle").removesuffix(" @payments"),
        "decide charge",
        *hop("PaymentSucceeded", "orders"),
        "handle PaymentSucceeded",
        *hop("OrderApproved", "shipments"),
        "handle OrderApproved",
        "decide book",
        *hop("ShipmentScheduled", "orders"),
        "handle ShipmentScheduled",
        *hop("OrderShipped", "notifications"),
        "handle OrderShipped",
        "decide email",
        *hop("CustomerNotified", "orders"),
    ]
    # The calls to the outside world are children of the handler that asked for them.
    calls = {(s.name, by_id[s.parent.span_id].name) for s in finished if s.name.startswith("call")}
    assert calls == {
        ("call charge", charged_on.replace("consume", "handle").removesuffix(" @payments")),
        ("call book", "handle OrderApproved"),
        ("call email", "handle OrderApproved"),
        ("call email", "handle OrderShipped"),
    }
    # Every consumption of every event of the order is in the tree, under its publish.
    consumed = {
        (s.name.removeprefix("consume "), s.attributes["saga.service"])
        for s in finished
        if s.name.startswith("consume")
    }
    for event_type, service in [
        ("OrderCreated", "payments"),
        ("StockReserved", "orders"),
        ("OrderApproved", "stock"),
        ("OrderApproved", "notifications"),
        ("StockSold", "orders"),
    ]:
        assert (event_type, service) in consumed
    for s in finished:
        if s.name.startswith("consume"):
            assert by_id[s.parent.span_id].name == s.name.replace("consume", "publish")
