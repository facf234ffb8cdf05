"""The shipments service and its carrier bookings (effects).

First on the real database through ``HandlerRunner`` (each test's work rolled back): what an
approval requests, a booking that never comes back, a cancellation while booking, and the
order's cancellation that follows a failed booking. Then the whole service on the real
runtime, broker and database: 200 approvals, each booking held by the carrier, while the
consumer goes on.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any

import psycopg
import pytest

from contracts.orders import Address, OrderApproved, OrderCancelled, OrderLine
from contracts.payments import PaymentSucceeded
from contracts.shipments import ShipmentFailed
from contracts.stock import PricedLine, StockReserved
from orders.handlers import place_order
from orders.repository import OrderRepository
from saga_runtime import (
    ConsumerSettings,
    DatabaseSettings,
    EffectOutcome,
    Envelope,
    KafkaSettings,
    build_runtime,
    dead_letter_topic,
    ensure_topics,
    events_topic,
)
from saga_system import SYSTEM
from shipments.bootstrap import compose
from shipments.carrier import SimulatedCarrier
from shipments.domain import Carrier
from shipments.handlers import booking_key
from shipments.repository import ShipmentRepository
from shipments.settings import ShipmentsSettings
from tests.fixtures.handlers import OpenRunner
from tests.fixtures.kafka import produce
from tests.support import ThreadedRunner, wait_until

pytestmark = pytest.mark.integration

ADDRESS = Address(name="Ada", line1="1 Main St", city="NYC", postal_code="10001", country="US")
TODAY = date(2026, 12, 2)
CARRIER = Carrier("Parcelo", countries=frozenset({"US"}), delivery_days=3)


def dependencies(**more: object) -> dict[str, object]:
    return {"carrier": CARRIER, "carrier_api": SimulatedCarrier(), "today": lambda: TODAY, **more}


def approved(order_id: str, correlation_id: uuid.UUID | None = None) -> Envelope:
    event = OrderApproved(
        order_id=order_id,
        customer_id="c-1",
        email="ada@example.com",
        lines=[OrderLine(sku="SKU-1", quantity=1)],
        total_cents=1000,
        shipping_address=ADDRESS,
    )
    return Envelope.new(
        event, aggregate_id=order_id, producer="orders", correlation_id=correlation_id
    )


def cancelled(order_id: str) -> Envelope:
    event = OrderCancelled(
        order_id=order_id,
        email="ada@example.com",
        reason_code="customer_request",
        reason="changed their mind",
        previous_status="APPROVED",
    )
    return Envelope.new(event, aggregate_id=order_id, producer="orders")


# --- the decisions, on the real database -------------------------------------------------------


def test_an_approval_requests_one_booking_under_the_deadline_of_the_settings(
    handler_runner: OpenRunner,
) -> None:
    deps = dependencies(booking_deadline=timedelta(minutes=7))
    with handler_runner("shipments", deps) as runner:
        approval = approved("o-1")
        delivery = runner.deliver(approval)
        assert delivery.emitted == ()
        [effect] = delivery.effects
        assert (effect.kind, effect.key) == ("book", booking_key("o-1"))
        assert effect.request["estimated_delivery"] == "2026-12-05"
        row = runner.conn.execute("SELECT deadline_at - created_at FROM shipments.effects")
        assert row.fetchone() == (timedelta(minutes=7),)
        shipment = ShipmentRepository(runner.conn).get("o-1")
        assert shipment is not None and shipment.status == "booking"

        [booked] = runner.settle_all()
        [scheduled] = booked.emitted
        assert scheduled.event_type == "ShipmentScheduled"
        assert scheduled.correlation_id == approval.correlation_id
        assert (
            scheduled.payload["shipment_id"]
            == SimulatedCarrier().book(effect.request, effect.key)["shipment_id"]
        ), "the carrier's answer, the same for the same key"


def test_a_booking_past_its_deadline_fails_the_shipment_and_orders_cancels_the_order(
    handler_runner: OpenRunner,
) -> None:
    """The path of a carrier down for longer than the deadline: ShipmentFailed, then the
    order is cancelled (and so refunded and restocked, as for an unserviceable address),
    and the cancellation finds nothing more to call off."""
    with handler_runner("orders", {}) as orders:
        order, _ = orders.run(
            lambda uow: place_order(
                uow,
                customer_id="c-1",
                email="ada@example.com",
                lines=[OrderLine(sku="SKU-1", quantity=1)],
                card_token="tok_visa",
                shipping_address=ADDRESS,
                idempotency_key=None,
                fingerprint=None,
            )
        )
        saga = order.correlation_id
        line = PricedLine(sku="SKU-1", quantity=1, unit_price_cents=1000)
        for event, producer in (
            (StockReserved(order_id=order.id, lines=[line], total_cents=1000), "stock"),
            (PaymentSucceeded(order_id=order.id, amount_cents=1000, charge_id="ch_1"), "payments"),
        ):
            orders.deliver(
                Envelope.new(event, aggregate_id=order.id, producer=producer, correlation_id=saga)
            )
        placed = OrderRepository(orders.conn).get(order.id)
        assert placed is not None and placed.status == "APPROVED"

        with handler_runner("shipments", dependencies()) as shipments:
            shipments.deliver(approved(order.id, saga))
            gave_up = EffectOutcome(ok=False, error="gave up after 14 attempts: timed out")
            [failed] = shipments.settle(outcome=gave_up).emitted
            assert failed.event_type == "ShipmentFailed"
            assert failed.payload_as(ShipmentFailed).reason_code == "booking_failed"
            assert failed.correlation_id == saga

            [cancellation] = orders.deliver(failed).emitted
            assert cancellation.event_type == "OrderCancelled"
            assert cancellation.payload["reason_code"] == "shipment_failed"
            assert cancellation.payload["previous_status"] == "APPROVED"

            assert shipments.deliver(cancellation).emitted == ()
            shipment = ShipmentRepository(shipments.conn).get(order.id)
            assert shipment is not None and shipment.status == "failed"
            assert shipments.due_effects() == []


def test_a_cancellation_while_booking_ships_nothing_whatever_the_carrier_answers(
    handler_runner: OpenRunner,
) -> None:
    answers = {
        "booked": None,  # the call is made: the carrier books
        "refused": EffectOutcome(ok=False, error="timed out"),
    }
    for name, outcome in answers.items():
        order_id = f"o-{name}"
        with handler_runner("shipments", dependencies()) as runner:
            [effect] = runner.deliver(approved(order_id)).effects
            assert runner.deliver(cancelled(order_id)).emitted == ()
            assert runner.settle(outcome=outcome).emitted == (), name
            shipment = ShipmentRepository(runner.conn).get(order_id)
            assert shipment is not None and shipment.status == "cancelled", name
            assert (shipment.shipment_id is not None) == (outcome is None), name
            # A late answer (an operator retried the booking) changes nothing, and an
            # approval delivered again asks for no booking.
            late = EffectOutcome(ok=True, result=SimulatedCarrier().book(effect.request, "x"))
            assert runner.settle(effect, late).emitted == (), name
            assert runner.deliver(approved(order_id)).effects == ()
            assert ShipmentRepository(runner.conn).get(order_id) == shipment, name


# --- the service on the real runtime -----------------------------------------------------------


class HeldCarrier:
    """The simulated carrier, each booking held until ``release`` (then its 2 s): shows how
    many bookings are in flight at once, and lets the test look while they are."""

    def __init__(self, booking_seconds: float) -> None:
        self.carrier = SimulatedCarrier(booking_seconds=booking_seconds)
        self.released = threading.Event()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.calls: list[str] = []

    def book(self, request: dict[str, Any], key: str) -> dict[str, Any]:
        with self._lock:
            self.in_flight += 1
            self.calls.append(key)
        try:
            # Bounded, so that a failing test cannot hang the executor's shutdown.
            self.released.wait(120)
            return self.carrier.book(request, key)
        finally:
            with self._lock:
                self.in_flight -= 1

    def release(self) -> None:
        self.released.set()


@contextmanager
def shipments_service(settings: ShipmentsSettings, carrier: HeldCarrier) -> Iterator[None]:
    """The service (consumer and effect executor) in a thread, as its composition root wires
    it, the carrier excepted."""
    deps = {**compose(settings).dependencies, "carrier_api": carrier}
    runtime = build_runtime(SYSTEM, "shipments", settings, deps)
    assert runtime.runner is not None

    def run() -> None:
        try:
            runtime.run_consumer(install_signal_handlers=False)
        finally:
            runtime.close()

    try:
        with ThreadedRunner(run, runtime.runner.stop):
            yield
    finally:
        carrier.release()


def count(conn: psycopg.Connection, query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_two_hundred_bookings_are_in_flight_at_once_while_the_consumer_goes_on(
    database: DatabaseSettings, kafka: KafkaSettings, admin_conn: psycopg.Connection
) -> None:
    """The issue's target: 200 concurrent 2-second bookings take about 2 s, not 400. Every
    approval is applied while every booking is still with the carrier (the consumer never
    waits for it), with the service's default concurrency and pool."""
    ensure_topics(
        kafka,
        [events_topic(s, kafka.topic_prefix) for s in ("orders", "shipments")]
        + [dead_letter_topic("shipments", kafka.topic_prefix)],
    )
    settings = ShipmentsSettings(
        kafka=kafka,
        database=database,
        consumer=ConsumerSettings(backoff_initial=0.05, backoff_max=0.5),
    )
    carrier = HeldCarrier(booking_seconds=2.0)
    orders = [f"o-{n:03d}" for n in range(200)]
    with shipments_service(settings, carrier):
        published = time.monotonic()
        produce(
            kafka,
            events_topic("orders", kafka.topic_prefix),
            [(o.encode(), approved(o).to_bytes()) for o in orders],
        )
        wait_until(
            lambda: carrier.in_flight == 200, timeout=60, what="200 bookings with the carrier"
        )
        held = time.monotonic() - published
        applied = count(admin_conn, "SELECT count(*) FROM shipments.inbox")
        assert applied == 200, "every approval applied while no booking has come back"
        started = time.monotonic()
        carrier.release()
        wait_until(
            lambda: count(admin_conn, "SELECT count(*) FROM shipments.outbox") == 200,
            timeout=60,
            what="200 ShipmentScheduled",
        )
        elapsed = time.monotonic() - started
    print(
        f"200 approvals applied, their bookings all with the carrier {held:.2f} s after"
        f" publishing (the consumer joining its group included); the carrier answering"
        f" after 2 s each, all 200 scheduled {elapsed:.2f} s after it was let go"
    )
    assert elapsed < 60  # one at a time would take 400 s; the precise figure is a benchmark's
    assert sorted(carrier.calls) == sorted(booking_key(o) for o in orders)
    statuses = admin_conn.execute("SELECT status, count(*) FROM shipments.shipments GROUP BY 1")
    assert statuses.fetchall() == [("scheduled", 200)]
    events = admin_conn.execute("SELECT DISTINCT event_type FROM shipments.outbox").fetchall()
    assert events == [("ShipmentScheduled",)]
