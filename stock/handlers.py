"""Stock's reactions to order events: plain functions over a unit of work."""

from __future__ import annotations

from collections.abc import Iterable

from contracts.orders import OrderApproved, OrderCancelled, OrderCreated
from saga_runtime import Envelope, UnitOfWork
from stock import domain
from stock.domain import Decision, Product, Reservation
from stock.repository import PRODUCTS, RESERVATIONS


def _apply(uow: UnitOfWork, current: Reservation | None, decision: Decision, order_id: str) -> None:
    if decision.reservation is not None and decision.reservation != current:
        RESERVATIONS.save(uow, decision.reservation)
    for product in decision.products:
        PRODUCTS.save(uow, product)
    for event in decision.events:
        uow.emit(event, aggregate_id=order_id)


def _products(uow: UnitOfWork, skus: Iterable[str]) -> dict[str, Product]:
    """The products of ``skus`` that exist, locked for the rest of the transaction."""
    found = PRODUCTS.get_many(uow, skus)
    return {sku: product for sku, product in found.items() if product is not None}


def on_order_created(uow: UnitOfWork, event: Envelope) -> None:
    created = event.payload_as(OrderCreated)
    uow.lock(created.order_id)
    current = RESERVATIONS.get(uow, created.order_id)
    # Only a first decision needs the products; a replay must not queue behind their locks.
    products = {} if current is not None else _products(uow, domain.skus_to_lock(created))
    _apply(uow, current, domain.reserve(current, created, products), created.order_id)


def on_order_approved(uow: UnitOfWork, event: Envelope) -> None:
    approved = event.payload_as(OrderApproved)
    uow.lock(approved.order_id)
    current = RESERVATIONS.get(uow, approved.order_id)
    products = _products(uow, domain.held_skus(current))
    _apply(uow, current, domain.sell(current, approved, products), approved.order_id)


def on_order_cancelled(uow: UnitOfWork, event: Envelope) -> None:
    cancelled = event.payload_as(OrderCancelled)
    uow.lock(cancelled.order_id)
    current = RESERVATIONS.get(uow, cancelled.order_id)
    products = _products(uow, domain.held_skus(current))
    _apply(uow, current, domain.cancel(current, cancelled, products), cancelled.order_id)
