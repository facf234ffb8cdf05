"""The orders service's public contract: the events it emits."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from saga_runtime import Event

CancelReason = Literal[
    "out_of_stock",
    "unknown_sku",
    "payment_declined",
    "insufficient_funds",
    "payment_provider_error",
    "shipment_failed",
    "customer_request",
    "timeout",
]


class OrderLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    sku: str
    quantity: int = Field(gt=0)


class Address(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    line1: str
    line2: str | None = None
    city: str
    postal_code: str
    country: str  # ISO 3166-1 alpha-2


class OrderCreated(Event):
    """A customer placed an order; the saga starts here."""

    event_type = "OrderCreated"

    order_id: str
    customer_id: str
    email: str
    lines: list[OrderLine]
    card_token: str
    shipping_address: Address


class OrderApproved(Event):
    """Stock is reserved and payment taken: the order will be fulfilled."""

    event_type = "OrderApproved"

    order_id: str
    customer_id: str
    email: str
    lines: list[OrderLine]
    total_cents: int
    shipping_address: Address


class OrderShipped(Event):
    """The shipment was scheduled with a carrier; the saga ends well."""

    event_type = "OrderShipped"

    order_id: str
    email: str
    shipment_id: str
    carrier: str


class OrderCancelled(Event):
    """The order will not be fulfilled; every service undoes what it did for it."""

    event_type = "OrderCancelled"

    order_id: str
    email: str
    reason_code: CancelReason
    reason: str
    previous_status: Literal["PENDING", "APPROVED"]
