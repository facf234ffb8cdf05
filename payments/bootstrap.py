"""Composition root of the payments service (consumer only: it has no API)."""

from __future__ import annotations

from payments.provider import HttpPaymentProvider, PaymentProvider, RetryPolicy
from payments.settings import PaymentsSettings
from saga_runtime import Composition, ServiceRuntime, build_runtime

Settings = PaymentsSettings


def http_provider(settings: PaymentsSettings) -> HttpPaymentProvider:
    return HttpPaymentProvider(
        settings.provider_url,
        timeout=settings.provider_timeout,
        connect_timeout=settings.provider_connect_timeout,
    )


def compose(settings: PaymentsSettings, provider: PaymentProvider | None = None) -> Composition:
    """The handlers' provider (by default the HTTP provider the settings name) and retries."""
    owned = provider is None
    provider = provider or http_provider(settings)
    retry = RetryPolicy(attempts=settings.provider_attempts, backoff=settings.provider_backoff)
    close = getattr(provider, "close", None)
    return Composition(
        dependencies={"provider": provider, "retry": retry},
        closers=[close] if owned and close is not None else [],
    )


def build(settings: PaymentsSettings, provider: PaymentProvider | None = None) -> ServiceRuntime:
    """Wire the handlers to ``provider`` (by default the HTTP provider the settings name)."""
    from saga_system import SYSTEM

    return build_runtime(SYSTEM, "payments", settings, compose(settings, provider).dependencies)
