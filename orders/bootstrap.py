"""Composition root of the orders service: REST API, consumer and deadline sweeper."""

from __future__ import annotations

import threading
from functools import partial

from orders import handlers
from orders.api import create_app
from orders.deadline import run_sweeper
from orders.settings import OrdersSettings
from saga_runtime import Handler, ServiceRuntime, Worker, configure_logging

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
    # A watched worker: if the sweeper dies, the whole service exits and is restarted.
    sweeper = Worker(
        name="orders-deadline",
        run=partial(
            run_sweeper,
            runtime.uow_factory,
            timeout=settings.pending_timeout,
            interval=settings.deadline_check_interval,
            stop=stop,
        ),
        stop=stop.set,
    )
    try:
        return runtime.run_with_api(
            create_app(runtime.uow_factory),
            host=settings.host,
            port=settings.port,
            workers=[sweeper],
        )
    finally:
        runtime.close()
