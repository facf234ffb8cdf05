"""Shipments: schedule a shipment for an approved order, call it off if the order is cancelled."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Literal

from contracts.orders import OrderApproved, OrderCancelled
from contracts.shipments import ShipmentCancelled, ShipmentFailed, ShipmentScheduled
from saga_runtime import Event

Status = Literal["scheduled", "failed", "cancelled", "voided"]


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


def schedule(
    current: Shipment | None,
    approved: OrderApproved,
    *,
    carrier: Carrier,
    today: date,
    shipment_id: str,
) -> tuple[Shipment | None, list[Event]]:
    """Decide once per order; an order cancelled first is never shipped."""
    if current is not None:
        return current, []
    address = approved.shipping_address
    refusal = carrier.refusal(address.country, address.postal_code)
    if refusal is not None:
        failed = Shipment(approved.order_id, "failed", carrier=carrier.name, reason=refusal)
        return failed, [
            ShipmentFailed(
                order_id=approved.order_id, reason_code="unserviceable_address", reason=refusal
            )
        ]
    eta = today + timedelta(days=carrier.delivery_days)
    scheduled = Shipment(
        approved.order_id, "scheduled", shipment_id, carrier.name, estimated_delivery=eta
    )
    return scheduled, [
        ShipmentScheduled(
            order_id=approved.order_id,
            shipment_id=shipment_id,
            carrier=carrier.name,
            estimated_delivery=eta,
        )
    ]


def cancel(
    current: Shipment | None, cancelled: OrderCancelled
) -> tuple[Shipment | None, list[Event]]:
    """No live shipment may remain for a cancelled order."""
    if current is None:
        # Remember the cancellation so a late or replayed approval ships nothing.
        return Shipment(cancelled.order_id, "voided", reason=cancelled.reason), []
    if current.live:
        assert current.shipment_id is not None
        return replace(current, status="cancelled", reason=cancelled.reason), [
            ShipmentCancelled(order_id=current.order_id, shipment_id=current.shipment_id)
        ]
    return current, []
