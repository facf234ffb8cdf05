"""Composition root of the stock service: its REST API and its consumer."""

from __future__ import annotations

from fastapi import FastAPI

from saga_runtime import Composition, ServiceRuntime, build_runtime
from stock import api
from stock.settings import StockSettings

Settings = StockSettings


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


def compose(settings: StockSettings) -> Composition:
    return Composition(api=lambda runtime: create_app(runtime, settings))


def build(settings: StockSettings) -> ServiceRuntime:
    from saga_system import SYSTEM

    return build_runtime(SYSTEM, "stock", settings, compose(settings).dependencies)
