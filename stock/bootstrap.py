"""Composition root of the stock service."""

from __future__ import annotations

from fastapi import FastAPI

from saga_runtime import ServiceRuntime, configure_logging
from stock import api, handlers
from stock.settings import StockSettings

SERVICE = "stock"


def build(settings: StockSettings) -> ServiceRuntime:
    return ServiceRuntime.build(
        service=SERVICE,
        kafka=settings.kafka,
        database=settings.database,
        consumer=settings.consumer,
        consumers=settings.consumers,
        handlers={
            "OrderCreated": handlers.on_order_created,
            "OrderApproved": handlers.on_order_approved,
            "OrderCancelled": handlers.on_order_cancelled,
        },
        subscribes_to=["orders"],
    )


def create_app(runtime: ServiceRuntime, settings: StockSettings | None = None) -> FastAPI:
    """The HTTP API over ``runtime``'s pool; the admin token comes from ``settings`` (read from
    the environment when not given, so the API is never left open by accident)."""
    settings = settings if settings is not None else StockSettings()
    token = settings.admin_token
    return api.create_app(
        pool=runtime.pool,
        uow_factory=runtime.uow_factory,
        admin_token=token.get_secret_value() if token is not None else None,
    )


def main() -> int:
    settings = StockSettings()
    configure_logging(settings.log, service=SERVICE)
    runtime = build(settings)
    try:
        return runtime.run_with_api(
            create_app(runtime, settings), host=settings.host, port=settings.port
        )
    finally:
        runtime.close()
