"""Stock's reactions to order events: plain functions over a unit of work."""

from __future__ import annotations

from contracts.orders import OrderApproved, OrderCancelled, OrderCreated
from saga_runtime import Envelope, UnitOfWork
from stock import domain
from stock.domain import Decision, Reservation
from stock.repository import StockRepository


def _apply(uow: UnitOfWork, order_id: str, current: Reservation | None, decision: Decision) -> None:
    repository = StockRepository(uow.conn)
    if decision.reservation is not None and decision.reservation != current:
        repository.save_reservation(decision.reservation)
    for product in decision.products:
        repository.update_product(product)
    for event in decision.events:
        uow.emit(event, aggregate_id=order_id)


def on_order_created(uow: UnitOfWork, event: Envelope) -> None:
    created = event.payload_as(OrderCreated)
    uow.lock(created.order_id)
    repository = StockRepository(uow.conn)
    current = repository.reservation(created.order_id)
    # Only a first decision needs the products; a replay must not queue behind their locks.
    products = {} if current is not None else repository.lock_products(domain.skus_to_lock(created))
    _apply(uow, created.order_id, current, domain.reserve(current, created, products))


def on_order_approved(uow: UnitOfWork, event: Envelope) -> None:
    approved = event.payload_as(OrderApproved)
    uow.lock(approved.order_id)
    repository = StockRepository(uow.conn)
    current = repository.reservation(approved.order_id)
    products = repository.lock_products(domain.held_skus(current))
    _apply(uow, approved.order_id, current, domain.sell(current, approved, products))


def on_order_cancelled(uow: UnitOfWork, event: Envelope) -> None:
    cancelled = event.payload_as(OrderCancelled)
    uow.lock(cancelled.order_id)
    repository = StockRepository(uow.conn)
    current = repository.reservation(cancelled.order_id)
    products = repository.lock_products(domain.held_skus(current))
    _apply(uow, cancelled.order_id, current, domain.cancel(current, cancelled, products))
