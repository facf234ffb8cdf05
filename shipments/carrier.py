"""The carrier's booking API, as shipments calls it (from its effect executor, never from a
consumer's transaction).

``SimulatedCarrier`` stands in for a real one: it takes ``booking_seconds`` to answer
(``SHIPMENTS_BOOKING_SECONDS``; ``./dev up`` gives it 2 s, a window in which a
customer can still cancel an approved order) and answers a repeated idempotency key
with its first answer, as a carrier with idempotency keys does: the shipment id is
derived from the key and the delivery date from the request, so a call made again
after a crash books nothing new.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["CarrierApi", "SimulatedCarrier"]


class CarrierApi(Protocol):
    def book(self, request: dict[str, Any], key: str) -> dict[str, Any]:
        """Book the parcel ``request`` describes; ``{"shipment_id", "estimated_delivery"}``.

        Safe to repeat with the same ``key``. Raises ``saga_runtime.RetryableError``
        when the carrier cannot answer now (a timeout, a 5xx), any other error when it
        refuses for good.
        """
        ...


@dataclass(frozen=True)
class SimulatedCarrier:
    booking_seconds: float = 0.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def book(self, request: dict[str, Any], key: str) -> dict[str, Any]:
        if self.booking_seconds:
            self.sleep(self.booking_seconds)
        digest = hashlib.sha256(key.encode()).hexdigest()
        return {
            "shipment_id": f"shp_{digest[:16]}",
            "estimated_delivery": request["estimated_delivery"],
        }
