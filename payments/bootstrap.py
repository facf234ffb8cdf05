"""Composition root of the payments service (consumer only: it has no API)."""

from __future__ import annotations

from datetime import timedelta

from payments.provider import HttpPaymentProvider, PaymentProvider
from payments.settings import PaymentsSettings
from saga_runtime import Composition, RetryPolicy, ServiceRuntime, build_runtime

Settings = PaymentsSettings


def http_provider(settings: PaymentsSettings) -> HttpPaymentProvider:
    return HttpPaymentProvider(
        settings.provider_url,
        timeout=settings.provider_timeout,
        connect_timeout=settings.provider_connect_timeout,
        api_key=(
            settings.provider_api_key.get_secret_value()
            if settings.provider_api_key is not None
            else None
        ),
    )


def effect_policies(settings: PaymentsSettings) -> dict[str, object]:
    """The deadlines and retry policies the definition's effects name (``charge_deadline``...)."""
    first = timedelta(seconds=settings.retry_initial)
    return {
        "charge_deadline": timedelta(seconds=settings.charge_deadline),
        "charge_retry": RetryPolicy(
            initial_interval=first, maximum_interval=timedelta(seconds=settings.charge_retry_max)
        ),
        "undo_deadline": timedelta(seconds=settings.undo_deadline),
        "undo_retry": RetryPolicy(
            initial_interval=first, maximum_interval=timedelta(seconds=settings.undo_retry_max)
        ),
    }


def compose(settings: PaymentsSettings, provider: PaymentProvider | None = None) -> Composition:
    """The effects' provider (by default the HTTP provider the settings name) and policies."""
    owned = provider is None
    provider = provider or http_provider(settings)
    close = getattr(provider, "close", None)
    return Composition(
        dependencies={"provider": provider, **effect_policies(settings)},
        closers=[close] if owned and close is not None else [],
    )


def build(settings: PaymentsSettings, provider: PaymentProvider | None = None) -> ServiceRuntime:
    """Wire the handlers and effects to ``provider`` (by default the settings' HTTP provider)."""
    from saga_system import SYSTEM

    return build_runtime(SYSTEM, "payments", settings, compose(settings, provider).dependencies)
