"""Composition root of the shipments service."""

from __future__ import annotations

from functools import partial

from saga_runtime import ServiceRuntime, configure_logging
from shipments import handlers
from shipments.domain import Carrier
from shipments.settings import ShipmentsSettings

SERVICE = "shipments"


def build(settings: ShipmentsSettings) -> ServiceRuntime:
    carrier = Carrier(
        name=settings.carrier,
        countries=frozenset(c.upper() for c in settings.countries),
        refused_postal_codes=frozenset(settings.refused_postal_codes),
        delivery_days=settings.delivery_days,
    )
    return ServiceRuntime.build(
        service=SERVICE,
        kafka=settings.kafka,
        database=settings.database,
        consumer=settings.consumer,
        consumers=settings.consumers,
        handlers={
            "OrderApproved": partial(
                handlers.on_order_approved,
                carrier=carrier,
                booking_seconds=settings.booking_seconds,
            ),
            "OrderCancelled": handlers.on_order_cancelled,
        },
        subscribes_to=["orders"],
    )


def main() -> int:
    settings = ShipmentsSettings()
    configure_logging(settings.log, service=SERVICE)
    runtime = build(settings)
    try:
        return runtime.run_consumer(
            health_host=settings.health_host, health_port=settings.health_port
        )
    finally:
        runtime.close()
