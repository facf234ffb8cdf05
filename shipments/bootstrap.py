"""Composition root of the shipments service (consumer only: it has no API)."""

from __future__ import annotations

from saga_runtime import Composition, ServiceRuntime, build_runtime
from shipments.carrier import SimulatedCarrier
from shipments.domain import Carrier
from shipments.settings import ShipmentsSettings

Settings = ShipmentsSettings


def compose(settings: ShipmentsSettings) -> Composition:
    carrier = Carrier(
        name=settings.carrier,
        countries=frozenset(c.upper() for c in settings.countries),
        refused_postal_codes=frozenset(settings.refused_postal_codes),
        delivery_days=settings.delivery_days,
    )
    return Composition(
        dependencies={
            "carrier": carrier,
            "carrier_api": SimulatedCarrier(booking_seconds=settings.booking_seconds),
            "booking_deadline": settings.booking_deadline,
        }
    )


def build(settings: ShipmentsSettings) -> ServiceRuntime:
    from saga_system import SYSTEM

    return build_runtime(SYSTEM, "shipments", settings, compose(settings).dependencies)
