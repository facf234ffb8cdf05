"""Shipments' reactions to order events, and its decision about the carrier's answers:
plain functions over a unit of work.

The reactions do database work only: approving an order records a ``booking`` shipment
and requests the effect ``book``, which the service's executor makes afterwards
(``book``), out of any transaction; ``on_booked`` then decides what the answer means.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from contracts.orders import OrderApproved, OrderCancelled
from saga_runtime import Effect, EffectOutcome, Envelope, UnitOfWork, get_logger
from shipments import domain
from shipments.carrier import CarrierApi
from shipments.domain import BOOKING_DEADLINE, Booked, BookingFailed, Carrier, Shipment
from shipments.repository import SHIPMENTS

log = get_logger(__name__)


def _today() -> date:
    return datetime.now(UTC).date()


def booking_key(order_id: str) -> str:
    """The booking's idempotency key: one booking per order, whoever asks again."""
    return f"shipments:{order_id}:book"


def _apply(
    uow: UnitOfWork, order_id: str, current: Shipment | None, decision: domain.Decision
) -> None:
    new = decision.shipment
    if new is not None and new != current:
        SHIPMENTS.save(uow, new)
    for event in decision.events:
        uow.emit(event, aggregate_id=order_id)


def on_order_approved(
    uow: UnitOfWork,
    event: Envelope,
    *,
    carrier: Carrier,
    today: Callable[[], date] = _today,
    booking_deadline: timedelta = BOOKING_DEADLINE,
) -> None:
    approved = event.payload_as(OrderApproved)
    uow.lock(approved.order_id)
    current = SHIPMENTS.get(uow, approved.order_id)
    decision = domain.schedule(current, approved, carrier=carrier, today=today())
    _apply(uow, approved.order_id, current, decision)
    if decision.booking is not None:
        uow.request_effect(
            "book",
            aggregate_id=approved.order_id,
            key=booking_key(approved.order_id),
            request=decision.booking.request(),
            deadline=booking_deadline,
        )


def on_order_cancelled(uow: UnitOfWork, event: Envelope) -> None:
    cancelled = event.payload_as(OrderCancelled)
    uow.lock(cancelled.order_id)
    current = SHIPMENTS.get(uow, cancelled.order_id)
    _apply(uow, cancelled.order_id, current, domain.cancel(current, cancelled))


def book(request: dict[str, Any], key: str, *, carrier_api: CarrierApi) -> dict[str, Any]:
    """The effect ``book``: the carrier's booking call, made by the executor."""
    return carrier_api.book(request, key)


def on_booked(uow: UnitOfWork, effect: Effect, outcome: EffectOutcome) -> None:
    """The decision about the carrier's answer (the executor holds the order's lock)."""
    current = SHIPMENTS.get(uow, effect.aggregate_id)
    answer: Booked | BookingFailed
    if outcome.ok:
        answer = Booked(
            shipment_id=str(outcome.result["shipment_id"]),
            estimated_delivery=date.fromisoformat(str(outcome.result["estimated_delivery"])),
        )
    else:
        answer = BookingFailed(reason=f"the carrier did not book: {outcome.error}")
    decision = domain.booked(current, answer)
    if (
        isinstance(answer, Booked)
        and decision.shipment == current
        and (current is None or current.shipment_id != answer.shipment_id)
    ):
        # The carrier booked for a shipment already decided otherwise (an operator
        # retried a failed booking): nothing ships; an operator may call it off.
        log.warning(
            "shipments.booking_not_used",
            shipment_id=answer.shipment_id,
            status=None if current is None else current.status,
        )
    _apply(uow, effect.aggregate_id, current, decision)
