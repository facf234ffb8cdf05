"""The shipments service's public contract: the events it emits."""

from __future__ import annotations

from datetime import date
from typing import Literal

from saga_runtime import Event


class ShipmentScheduled(Event):
    event_type = "ShipmentScheduled"

    order_id: str
    shipment_id: str
    carrier: str
    estimated_delivery: date


class ShipmentFailed(Event):
    """No shipment: the carrier cannot serve the address (known before asking it), or
    its booking failed (it refused, or could not be reached before the deadline)."""

    event_type = "ShipmentFailed"

    order_id: str
    reason_code: Literal["unserviceable_address", "booking_failed"]
    reason: str


class ShipmentCancelled(Event):
    """A scheduled shipment was called off because the order was cancelled."""

    event_type = "ShipmentCancelled"

    order_id: str
    shipment_id: str
