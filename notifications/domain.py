"""Notifications: what the customer is told about an order, and under which identity."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from contracts.notifications import NotificationKind
from contracts.orders import Address, OrderApproved, OrderCancelled, OrderShipped

# Fixed namespace so that a notification's delivery id is the same in every process and run.
_DELIVERY_NAMESPACE = uuid.UUID("5b0c7f5e-3c55-4d2a-9a51-6a3f4f0c2b11")


@dataclass(frozen=True)
class Notification:
    order_id: str
    kind: NotificationKind
    recipient: str
    subject: str
    body: str

    @property
    def message_id(self) -> str:
        """Same for every resend of this notification, so a receiver can recognise a resend."""
        return message_id(self.order_id, self.kind)

    @property
    def delivery_id(self) -> str:
        """The webhook's idempotency key: stable across resends, like ``message_id``."""
        return str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{self.order_id}:{self.kind}"))


def message_id(order_id: str, kind: NotificationKind) -> str:
    return f"<{order_id}.{kind}@saga-outbox>"


def format_cents(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def _address(address: Address) -> list[str]:
    lines = [address.name, address.line1]
    if address.line2:
        lines.append(address.line2)
    lines.append(f"{address.postal_code} {address.city}")
    lines.append(address.country.upper())
    return lines


def order_approved(event: OrderApproved) -> Notification:
    items = [f"  {line.quantity} x {line.sku}" for line in event.lines]
    ship_to = [f"  {line}" for line in _address(event.shipping_address)]
    body = "\n".join(
        [
            f"Good news: your order {event.order_id} is confirmed and paid.",
            "",
            "Items:",
            *items,
            f"Total: {format_cents(event.total_cents)}",
            "",
            "It will be shipped to:",
            *ship_to,
            "",
            "We will write again when it is on its way.",
        ]
    )
    return Notification(
        order_id=event.order_id,
        kind="order_approved",
        recipient=event.email,
        subject=f"Your order {event.order_id} is confirmed",
        body=body + "\n",
    )


def order_shipped(event: OrderShipped) -> Notification:
    body = "\n".join(
        [
            f"Your order {event.order_id} is on its way.",
            "",
            f"Carrier: {event.carrier}",
            f"Shipment: {event.shipment_id}",
        ]
    )
    return Notification(
        order_id=event.order_id,
        kind="order_shipped",
        recipient=event.email,
        subject=f"Your order {event.order_id} has shipped",
        body=body + "\n",
    )


def order_cancelled(event: OrderCancelled) -> Notification:
    lines = [
        f"Your order {event.order_id} was cancelled.",
        "",
        f"Reason: {event.reason}",
    ]
    if event.previous_status == "APPROVED":
        # Only an approved order was charged; a pending one never was.
        lines += ["", "The payment for this order will be refunded."]
    else:
        # A charge may still have raced the cancellation; Payments refunds it then.
        lines += ["", "If any payment was taken for it, it will be refunded."]
    return Notification(
        order_id=event.order_id,
        kind="order_cancelled",
        recipient=event.email,
        subject=f"Your order {event.order_id} was cancelled",
        body="\n".join(lines) + "\n",
    )
