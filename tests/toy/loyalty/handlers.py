"""Loyalty's reaction to order events: a plain function over a unit of work."""

from __future__ import annotations

from contracts.orders import OrderShipped
from saga_runtime import Envelope, UnitOfWork
from tests.toy.loyalty import domain
from tests.toy.loyalty.repository import AwardRepository


def on_order_shipped(uow: UnitOfWork, event: Envelope, *, points_per_order: int) -> None:
    shipped = event.payload_as(OrderShipped)
    uow.lock(shipped.order_id)
    awards = AwardRepository(uow.conn)
    new, events = domain.award(awards.get(shipped.order_id), shipped, points=points_per_order)
    if new is not None:
        awards.add(new)
    for emitted in events:
        uow.emit(emitted, aggregate_id=shipped.order_id)
