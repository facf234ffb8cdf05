"""Notifications: what the customer is told about an order, under which identity, and
when a notification counts as told (each channel's outcome, decided once)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from contracts.notifications import CustomerNotified, NotificationKind
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

    def to_request(self) -> dict[str, str]:
        """What an effect sending this notification stores: everything the call needs."""
        return {
            "order_id": self.order_id,
            "kind": self.kind,
            "recipient": self.recipient,
            "subject": self.subject,
            "body": self.body,
        }

    @classmethod
    def from_request(cls, request: Mapping[str, Any]) -> Notification:
        kind = request["kind"]
        if kind not in get_args(NotificationKind):
            raise ValueError(f"not a notification kind: {kind!r}")
        return cls(
            order_id=str(request["order_id"]),
            kind=kind,
            recipient=str(request["recipient"]),
            subject=str(request["subject"]),
            body=str(request["body"]),
        )


def effect_key(order_id: str, kind: NotificationKind, channel: str) -> str:
    """The idempotency key of sending one notification on one channel."""
    return f"notifications:{order_id}:{kind}:{channel}"


ChannelOutcome = Literal["delivered", "failed"]


@dataclass(frozen=True)
class Delivery:
    """Where one notification stands: each channel's outcome, and whether it was announced.

    A channel is ``delivered`` for good once it was; ``failed`` (failed for good, or
    its deadline passed) until a later attempt, which an operator may start, delivers
    it. CustomerNotified is announced once, when every channel has an outcome and at
    least one was delivered, listing those delivered; a notification that no channel
    delivered is not announced (nobody was told) unless a later attempt delivers it.
    """

    order_id: str
    kind: NotificationKind
    channels: tuple[str, ...]
    outcomes: Mapping[str, ChannelOutcome] = field(default_factory=dict)
    notified: bool = False

    @property
    def delivered(self) -> list[str]:
        return [c for c in self.channels if self.outcomes.get(c) == "delivered"]

    @property
    def settled(self) -> bool:
        """Every channel has an outcome."""
        return all(c in self.outcomes for c in self.channels)

    def record(self, channel: str, *, delivered: bool) -> tuple[Delivery, CustomerNotified | None]:
        """This delivery with ``channel``'s outcome, and the event to emit (None: none now)."""
        if channel not in self.channels:
            raise ValueError(
                f"{channel!r} is not among the channels of {self.order_id}'s {self.kind}"
                f" notification ({', '.join(self.channels)})"
            )
        was = self.outcomes.get(channel)
        outcome: ChannelOutcome = "delivered" if delivered or was == "delivered" else "failed"
        after = replace(self, outcomes={**self.outcomes, channel: outcome})
        if self.notified or not after.settled or not after.delivered:
            return after, None
        told = CustomerNotified(order_id=self.order_id, kind=self.kind, channels=after.delivered)
        return replace(after, notified=True), told


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
