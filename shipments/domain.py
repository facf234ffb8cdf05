"""Shipments: book a shipment for an approved order, call it off if the order is cancelled.

The carrier is asked to book (an effect, made after the deciding transaction); the
shipment is ``booking`` until its answer is decided. A cancellation heard meanwhile
is remembered (``cancelling``), and whatever the carrier answers, that shipment ends
``cancelled``: the order is never shipped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any, Literal

from contracts.orders import Address, OrderApproved, OrderCancelled
from contracts.shipments import ShipmentCancelled, ShipmentFailed, ShipmentScheduled
from saga_runtime import Event

# How long the carrier is tried (transient failures retried with backoff) before a
# booking fails for good and the order is cancelled (``SHIPMENTS_BOOKING_DEADLINE``):
# far longer than an outage of a few minutes, short enough that a customer whose
# order cannot ship hears so, and is refunded, within the hour.
BOOKING_DEADLINE = timedelta(minutes=30)

Status = Literal["booking", "cancelling", "scheduled", "failed", "cancelled", "voided"]


@dataclass(frozen=True)
class Carrier:
    """What the carrier can serve: countries, and postal codes it refuses."""

    name: str
    countries: frozenset[str]
    refused_postal_codes: frozenset[str] = frozenset()
    delivery_days: int = 3

    def refusal(self, country: str, postal_code: str) -> str | None:
        if country.upper() not in self.countries:
            return f"{self.name} does not deliver to {country.upper()}"
        if postal_code.strip().upper() in self.refused_postal_codes:
            return f"{self.name} cannot serve postal code {postal_code}"
        return None


@dataclass(frozen=True)
class Shipment:
    order_id: str
    status: Status
    shipment_id: str | None = None
    carrier: str | None = None
    estimated_delivery: date | None = None
    reason: str | None = None

    @property
    def live(self) -> bool:
        return self.status == "scheduled"


@dataclass(frozen=True)
class Booking:
    """What the carrier is asked to book: the parcel's address and the delivery date
    promised for it (``ship_date`` plus the carrier's delivery days)."""

    order_id: str
    carrier: str
    address: Address
    ship_date: date
    estimated_delivery: date

    def request(self) -> dict[str, Any]:
        """The effect's request (JSON), stored with it and sent as it is on every attempt."""
        return {
            "order_id": self.order_id,
            "carrier": self.carrier,
            "address": self.address.model_dump(mode="json"),
            "ship_date": self.ship_date.isoformat(),
            "estimated_delivery": self.estimated_delivery.isoformat(),
        }


@dataclass(frozen=True)
class Booked:
    """The carrier booked the parcel."""

    shipment_id: str
    estimated_delivery: date


@dataclass(frozen=True)
class BookingFailed:
    """The carrier refused, or could not be reached before the booking's deadline."""

    reason: str


@dataclass(frozen=True)
class Decision:
    shipment: Shipment | None
    events: list[Event]
    booking: Booking | None = None


def schedule(
    current: Shipment | None, approved: OrderApproved, *, carrier: Carrier, today: date
) -> Decision:
    """Decide once per order; an order cancelled first is never shipped."""
    if current is not None:
        return Decision(current, [])
    address = approved.shipping_address
    refusal = carrier.refusal(address.country, address.postal_code)
    if refusal is not None:
        failed = Shipment(approved.order_id, "failed", carrier=carrier.name, reason=refusal)
        return Decision(
            failed,
            [
                ShipmentFailed(
                    order_id=approved.order_id, reason_code="unserviceable_address", reason=refusal
                )
            ],
        )
    # Computed here, not by the carrier: a delivery time no date can hold is a bug in
    # this service's settings, found in its own transaction rather than by the carrier.
    eta = today + timedelta(days=carrier.delivery_days)
    booking = Booking(approved.order_id, carrier.name, address, today, eta)
    return Decision(
        Shipment(approved.order_id, "booking", carrier=carrier.name, estimated_delivery=eta),
        [],
        booking,
    )


def booked(current: Shipment | None, answer: Booked | BookingFailed) -> Decision:
    """The carrier's answer to the booking. Only a shipment still waiting for it changes:
    a late or repeated answer leaves a decided shipment as it is."""
    if current is None or current.status not in ("booking", "cancelling"):
        return Decision(current, [])
    if current.status == "cancelling":
        # Cancelled while the carrier booked: the order is not shipped, and the
        # booking (if one was made) is kept on the row for the record.
        shipment_id = answer.shipment_id if isinstance(answer, Booked) else None
        return Decision(replace(current, status="cancelled", shipment_id=shipment_id), [])
    if isinstance(answer, BookingFailed):
        return Decision(
            replace(current, status="failed", estimated_delivery=None, reason=answer.reason),
            [
                ShipmentFailed(
                    order_id=current.order_id, reason_code="booking_failed", reason=answer.reason
                )
            ],
        )
    scheduled = replace(
        current,
        status="scheduled",
        shipment_id=answer.shipment_id,
        estimated_delivery=answer.estimated_delivery,
    )
    assert scheduled.carrier is not None  # set when the booking was asked for
    return Decision(
        scheduled,
        [
            ShipmentScheduled(
                order_id=current.order_id,
                shipment_id=answer.shipment_id,
                carrier=scheduled.carrier,
                estimated_delivery=answer.estimated_delivery,
            )
        ],
    )


def cancel(current: Shipment | None, cancelled: OrderCancelled) -> Decision:
    """No live shipment may remain for a cancelled order."""
    if current is None:
        # Remember the cancellation so a late or replayed approval ships nothing.
        return Decision(Shipment(cancelled.order_id, "voided", reason=cancelled.reason), [])
    if current.status == "booking":
        # The carrier's answer is still to come; it will find the order cancelled.
        return Decision(replace(current, status="cancelling", reason=cancelled.reason), [])
    if current.live:
        assert current.shipment_id is not None
        return Decision(
            replace(current, status="cancelled", reason=cancelled.reason),
            [ShipmentCancelled(order_id=current.order_id, shipment_id=current.shipment_id)],
        )
    return Decision(current, [])
