"""Composition root of the stock service: its REST API and its consumer."""

from __future__ import annotations

from fastapi import FastAPI

from saga_runtime import Composition, ServiceRuntime, TokenVerifier, build_runtime
from stock import api
from stock.settings import StockSettings

Settings = StockSettings


def create_app(runtime: ServiceRuntime, settings: StockSettings | None = None) -> FastAPI:
    """The HTTP API over ``runtime``'s pool; the token keys come from ``settings`` (read from
    the environment when not given). No keys: ``ConfigurationError``, never an open API."""
    settings = settings if settings is not None else StockSettings()
    return api.create_app(
        pool=runtime.pool,
        uow_factory=runtime.uow_factory,
        verifier=TokenVerifier.from_settings(settings.auth),
    )


def compose(settings: StockSettings) -> Composition:
    # The API is made as the service starts: without token keys it refuses to start.
    return Composition(api=lambda runtime: create_app(runtime, settings))


def build(settings: StockSettings) -> ServiceRuntime:
    from saga_system import SYSTEM

    return build_runtime(SYSTEM, "stock", settings, compose(settings).dependencies)
