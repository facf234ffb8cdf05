"""Orders: the order's life, PENDING to APPROVED to SHIPPED, or CANCELLED with a reason."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from contracts.orders import (
    Address,
    CancelReason,
    OrderApproved,
    OrderCancelled,
    OrderCreated,
    OrderLine,
    OrderShipped,
)
from saga_runtime import Event

Status = Literal["PENDING", "APPROVED", "SHIPPED", "CANCELLED"]
FINAL: frozenset[str] = frozenset({"SHIPPED", "CANCELLED"})


class OrderStateError(Exception):
    """The order is not in a state that allows this (the API answers 409)."""


@dataclass(frozen=True)
class PricedLine:
    sku: str
    quantity: int
    unit_price_cents: int


@dataclass(frozen=True)
class Order:
    id: str
    customer_id: str
    email: str
    status: Status
    lines: tuple[OrderLine, ...]
    card_token: str
    shipping_address: Address
    correlation_id: UUID
    created_at: datetime
    reason_code: CancelReason | None = None
    reason: str | None = None
    priced_lines: tuple[PricedLine, ...] | None = None
    total_cents: int | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL


Decision = tuple[Order, list[Event]]


def place(
    *,
    order_id: str,
    customer_id: str,
    email: str,
    lines: list[OrderLine],
    card_token: str,
    shipping_address: Address,
    correlation_id: UUID,
    now: datetime,
) -> Decision:
    # The same SKU twice is one line: stock reserves per SKU.
    merged: dict[str, int] = {}
    for line in lines:
        merged[line.sku] = merged.get(line.sku, 0) + line.quantity
    order = Order(
        id=order_id,
        customer_id=customer_id,
        email=email,
        status="PENDING",
        lines=tuple(OrderLine(sku=s, quantity=q) for s, q in merged.items()),
        card_token=card_token,
        shipping_address=shipping_address,
        correlation_id=correlation_id,
        created_at=now,
    )
    return order, [
        OrderCreated(
            order_id=order.id,
            customer_id=customer_id,
            email=email,
            lines=list(order.lines),
            card_token=card_token,
            shipping_address=shipping_address,
        )
    ]


def record_pricing(order: Order, lines: list[PricedLine], total_cents: int) -> Decision:
    """Stock priced the order; kept for the customer's view whatever the status."""
    return replace(order, priced_lines=tuple(lines), total_cents=total_cents), []


def approve(order: Order, amount_cents: int) -> Decision:
    """Payment went through. A cancelled order stays cancelled: Payments refunds it."""
    if order.status != "PENDING":
        return order, []
    approved = replace(order, status="APPROVED", total_cents=amount_cents)
    return approved, [
        OrderApproved(
            order_id=order.id,
            customer_id=order.customer_id,
            email=order.email,
            lines=list(order.lines),
            total_cents=amount_cents,
            shipping_address=order.shipping_address,
        )
    ]


def ship(order: Order, *, shipment_id: str, carrier: str) -> Decision:
    """A late ShipmentScheduled for a cancelled order changes nothing: Shipments cancels it."""
    if order.status != "APPROVED":
        return order, []
    return replace(order, status="SHIPPED"), [
        OrderShipped(order_id=order.id, email=order.email, shipment_id=shipment_id, carrier=carrier)
    ]


def cancel(order: Order, reason_code: CancelReason, reason: str) -> Decision:
    """Cancel unless already final; every service undoes its part on OrderCancelled."""
    if order.final:
        return order, []
    previous = order.status
    assert previous in ("PENDING", "APPROVED")
    cancelled = replace(order, status="CANCELLED", reason_code=reason_code, reason=reason)
    return cancelled, [
        OrderCancelled(
            order_id=order.id,
            email=order.email,
            reason_code=reason_code,
            reason=reason,
            previous_status=previous,
        )
    ]


def cancel_by_customer(order: Order) -> Decision:
    """Allowed until the order ships; a final order is refused."""
    if order.final:
        raise OrderStateError(f"order {order.id} is {order.status} and can no longer be cancelled")
    return cancel(order, "customer_request", "cancelled by the customer")


def fail_before_approval(order: Order, reason_code: CancelReason, reason: str) -> Decision:
    """Stock or payment failed: only a PENDING order is affected."""
    if order.status != "PENDING":
        return order, []
    return cancel(order, reason_code, reason)


def fail_shipment(order: Order, reason: str) -> Decision:
    if order.status != "APPROVED":
        return order, []
    return cancel(order, "shipment_failed", reason)


def expire(order: Order, *, now: datetime, timeout: timedelta) -> Decision:
    """A PENDING order past its deadline is cancelled with reason timeout."""
    if order.status != "PENDING" or now - order.created_at < timeout:
        return order, []
    return cancel(order, "timeout", f"not settled within {int(timeout.total_seconds())} s")
