"""Composition root of the orders service: REST API, consumer and deadline sweeper."""

from __future__ import annotations

import contextvars
import threading

from orders import handlers
from orders.api import create_app
from orders.deadline import run_sweeper
from orders.settings import OrdersSettings
from saga_runtime import Handler, ServiceRuntime, configure_logging

SERVICE = "orders"

HANDLERS: dict[str, Handler] = {
    "StockReserved": handlers.on_stock_reserved,
    "StockReservationFailed": handlers.on_stock_reservation_failed,
    "PaymentSucceeded": handlers.on_payment_succeeded,
    "PaymentFailed": handlers.on_payment_failed,
    "ShipmentScheduled": handlers.on_shipment_scheduled,
    "ShipmentFailed": handlers.on_shipment_failed,
    **{event_type: handlers.on_other_event for event_type in handlers.TIMELINE_ONLY},
}


def build(settings: OrdersSettings) -> ServiceRuntime:
    return ServiceRuntime.build(
        service=SERVICE,
        kafka=settings.kafka,
        database=settings.database,
        consumer=settings.consumer,
        consumers=settings.consumers,
        handlers=HANDLERS,
        subscribes_to=["stock", "payments", "shipments", "notifications"],
    )


def main() -> int:
    settings = OrdersSettings()
    configure_logging(settings.log, service=SERVICE)
    runtime = build(settings)
    stop = threading.Event()
    sweeper = threading.Thread(
        target=contextvars.copy_context().run,
        args=(run_sweeper, runtime.uow_factory),
        kwargs={
            "timeout": settings.pending_timeout,
            "interval": settings.deadline_check_interval,
            "stop": stop,
        },
        name="orders-deadline",
        daemon=True,
    )
    sweeper.start()
    try:
        runtime.run_with_api(
            create_app(runtime.uow_factory), host=settings.host, port=settings.port
        )
    finally:
        stop.set()
        sweeper.join(timeout=10)
        runtime.close()
    return 0
