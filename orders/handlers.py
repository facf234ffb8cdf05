"""Orders' reactions to the other services' events, and its own commands.

Every function takes the order's lock first, loads it, asks the domain what
to do, then saves, emits and records the timeline in the same transaction.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial

from contracts.orders import Address, OrderLine
from contracts.payments import PaymentFailed, PaymentSucceeded
from contracts.shipments import ShipmentFailed, ShipmentScheduled
from contracts.stock import StockReservationFailed, StockReserved
from orders import domain
from orders.domain import Order, OrderStateError, PricedLine
from orders.repository import ORDERS, OrderRepository, record_timeline
from saga_runtime import Envelope, Event, UnitOfWork, get_logger, saga_finished

log = get_logger(__name__)


class OrderNotFound(Exception):
    pass


class IdempotencyKeyReused(Exception):
    """The key was used before for a different request."""


def _commit(uow: UnitOfWork, before: Order | None, after: Order, events: list[Event]) -> None:
    if before is not None and after != before:
        ORDERS.save(uow, after)
        if after.status in domain.FINAL and before.status not in domain.FINAL:
            seconds = (datetime.now(UTC) - after.created_at).total_seconds()
            reason = after.reason_code or "completed"
            uow.committed.append(partial(saga_finished, after.status, reason, seconds))
    for event in events:
        emitted = uow.emit(event, aggregate_id=after.id, correlation_id=after.correlation_id)
        uow.defer(record_timeline, emitted)
    if uow.cause is not None:
        uow.defer(record_timeline, uow.cause)


def _load(uow: UnitOfWork, order_id: str) -> Order | None:
    uow.lock(order_id)
    return ORDERS.get(uow, order_id)


def _react(uow: UnitOfWork, order_id: str, decide) -> None:  # type: ignore[no-untyped-def]
    order = _load(uow, order_id)
    if order is None:
        # Another service's event for an order we never accepted: nothing to undo here.
        log.warning("orders.unknown_order")
        return
    after, events = decide(order)
    _commit(uow, order, after, events)


# Commands (from the API and the deadline sweeper)


def request_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def place_order(
    uow: UnitOfWork,
    *,
    customer_id: str,
    email: str,
    lines: list[OrderLine],
    card_token: str,
    shipping_address: Address,
    idempotency_key: str | None,
    fingerprint: str | None,
) -> tuple[Order, bool]:
    """Accept an order; with an Idempotency-Key, a retry returns the first order.

    Returns the order and whether it was created by this call.
    """
    repo = OrderRepository(uow.conn)
    if idempotency_key is not None:
        # Keys are the customer's own: two customers' equal keys are two orders.
        uow.lock(f"idempotency:{len(customer_id)}:{customer_id}:{idempotency_key}")
        existing = repo.get_by_idempotency_key(customer_id, idempotency_key)
        if existing is not None:
            order, previous_fingerprint = existing
            if previous_fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was already used with a different request body"
                )
            return order, False
    order, events = domain.place(
        order_id=str(uuid.uuid4()),
        customer_id=customer_id,
        email=email,
        lines=lines,
        card_token=card_token,
        shipping_address=shipping_address,
        correlation_id=uuid.uuid4(),
        now=datetime.now(UTC),
    )
    repo.add(order, idempotency_key=idempotency_key, request_hash=fingerprint)
    _commit(uow, None, order, events)
    return order, True


def cancel_order(uow: UnitOfWork, order_id: str, *, customer_id: str | None = None) -> Order:
    """Cancel ``order_id``; with ``customer_id``, only if it is that customer's order (another's
    is not found, as if it did not exist)."""
    order = _load(uow, order_id)
    if order is None or (customer_id is not None and order.customer_id != customer_id):
        raise OrderNotFound(order_id)
    after, events = domain.cancel_by_customer(order)
    _commit(uow, order, after, events)
    return after


def expire_order(uow: UnitOfWork, order_id: str, *, timeout: timedelta, now: datetime) -> bool:
    """Cancel ``order_id`` if it is still PENDING past the deadline at ``now``; True if it was.

    ``now`` is the database's clock, the one the sweeper selected the order by.
    """
    order = _load(uow, order_id)
    if order is None:
        return False
    after, events = domain.expire(order, now=now, timeout=timeout)
    _commit(uow, order, after, events)
    return bool(events)


# Event handlers


def on_stock_reserved(uow: UnitOfWork, event: Envelope) -> None:
    reserved = event.payload_as(StockReserved)
    lines = [PricedLine(line.sku, line.quantity, line.unit_price_cents) for line in reserved.lines]
    _react(uow, reserved.order_id, lambda o: domain.record_pricing(o, lines, reserved.total_cents))


def on_stock_reservation_failed(uow: UnitOfWork, event: Envelope) -> None:
    failed = event.payload_as(StockReservationFailed)
    _react(
        uow,
        failed.order_id,
        lambda o: domain.fail_before_approval(o, failed.reason_code, failed.reason),
    )


def on_payment_succeeded(uow: UnitOfWork, event: Envelope) -> None:
    paid = event.payload_as(PaymentSucceeded)
    _react(uow, paid.order_id, lambda o: domain.approve(o, paid.amount_cents))


def on_payment_failed(uow: UnitOfWork, event: Envelope) -> None:
    failed = event.payload_as(PaymentFailed)
    _react(
        uow,
        failed.order_id,
        lambda o: domain.fail_before_approval(o, failed.reason_code, failed.reason),
    )


def on_shipment_scheduled(uow: UnitOfWork, event: Envelope) -> None:
    scheduled = event.payload_as(ShipmentScheduled)
    _react(
        uow,
        scheduled.order_id,
        lambda o: domain.ship(o, shipment_id=scheduled.shipment_id, carrier=scheduled.carrier),
    )


def on_shipment_failed(uow: UnitOfWork, event: Envelope) -> None:
    failed = event.payload_as(ShipmentFailed)
    _react(uow, failed.order_id, lambda o: domain.fail_shipment(o, failed.reason))


def on_other_event(uow: UnitOfWork, event: Envelope) -> None:
    """Events Orders does not act on still belong in the order's timeline."""
    uow.lock(event.aggregate_id)
    uow.defer(record_timeline, event)


TIMELINE_ONLY = (
    "StockReleased",
    "StockSold",
    "StockRestocked",
    "PaymentRefunded",
    "ShipmentCancelled",
    "CustomerNotified",
)

__all__ = [
    "TIMELINE_ONLY",
    "IdempotencyKeyReused",
    "OrderNotFound",
    "OrderStateError",
    "cancel_order",
    "expire_order",
    "on_other_event",
    "on_payment_failed",
    "on_payment_succeeded",
    "on_shipment_failed",
    "on_shipment_scheduled",
    "on_stock_reservation_failed",
    "on_stock_reserved",
    "place_order",
    "request_hash",
]
