"""Composition root of the payments service (consumer only: it has no API)."""

from __future__ import annotations

from functools import partial

from payments import handlers
from payments.provider import HttpPaymentProvider, PaymentProvider, RetryPolicy
from payments.settings import PaymentsSettings
from saga_runtime import ServiceRuntime, configure_logging

SERVICE = "payments"


def http_provider(settings: PaymentsSettings) -> HttpPaymentProvider:
    return HttpPaymentProvider(
        settings.provider_url,
        timeout=settings.provider_timeout,
        connect_timeout=settings.provider_connect_timeout,
    )


def build(settings: PaymentsSettings, provider: PaymentProvider | None = None) -> ServiceRuntime:
    """Wire the handlers to ``provider`` (by default the HTTP provider the settings name)."""
    provider = provider or http_provider(settings)
    retry = RetryPolicy(attempts=settings.provider_attempts, backoff=settings.provider_backoff)
    return ServiceRuntime.build(
        service=SERVICE,
        kafka=settings.kafka,
        database=settings.database,
        consumer=settings.consumer,
        handlers={
            "OrderCreated": partial(handlers.on_order_created, provider=provider, retry=retry),
            "StockReserved": partial(handlers.on_stock_reserved, provider=provider, retry=retry),
            "OrderCancelled": partial(handlers.on_order_cancelled, provider=provider, retry=retry),
        },
        subscribes_to=["orders", "stock"],
        consumers=settings.consumers,
    )


def main() -> int:
    settings = PaymentsSettings()
    configure_logging(settings.log, service=SERVICE)
    provider = http_provider(settings)
    runtime = build(settings, provider)
    try:
        return runtime.run_consumer(
            health_host=settings.health_host, health_port=settings.health_port
        )
    finally:
        runtime.close()
        provider.close()
