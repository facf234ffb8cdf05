"""Shipments' reactions to order events: plain functions over a unit of work."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime

from contracts.orders import OrderApproved, OrderCancelled
from saga_runtime import Envelope, Event, UnitOfWork
from shipments import domain
from shipments.domain import Carrier, Shipment
from shipments.repository import ShipmentRepository


def _today() -> date:
    return datetime.now(UTC).date()


def _apply(
    uow: UnitOfWork,
    order_id: str,
    current: Shipment | None,
    new: Shipment | None,
    events: list[Event],
) -> None:
    if new is not None and new != current:
        ShipmentRepository(uow.conn).save(new)
    for event in events:
        uow.emit(event, aggregate_id=order_id)


def on_order_approved(
    uow: UnitOfWork,
    event: Envelope,
    *,
    carrier: Carrier,
    today: Callable[[], date] = _today,
    booking_seconds: float = 0.0,
) -> None:
    approved = event.payload_as(OrderApproved)
    uow.lock(approved.order_id)
    current = ShipmentRepository(uow.conn).get(approved.order_id)
    if current is None and booking_seconds:
        time.sleep(booking_seconds)  # the carrier's booking call
    new, events = domain.schedule(
        current,
        approved,
        carrier=carrier,
        today=today(),
        shipment_id=f"shp_{uuid.uuid4().hex[:16]}",
    )
    _apply(uow, approved.order_id, current, new, events)


def on_order_cancelled(uow: UnitOfWork, event: Envelope) -> None:
    cancelled = event.payload_as(OrderCancelled)
    uow.lock(cancelled.order_id)
    current = ShipmentRepository(uow.conn).get(cancelled.order_id)
    new, events = domain.cancel(current, cancelled)
    _apply(uow, cancelled.order_id, current, new, events)
