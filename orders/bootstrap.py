"""Composition root of the orders service: REST API, consumer and deadline sweeper."""

from __future__ import annotations

import threading
from functools import partial

from fastapi import FastAPI

from orders.api import create_app
from orders.deadline import run_sweeper
from orders.repository import STUCK_ORDERS
from orders.settings import OrdersSettings
from saga_runtime import (
    Composition,
    QueryGauge,
    ServiceRuntime,
    TokenVerifier,
    Worker,
    build_runtime,
)

Settings = OrdersSettings


def sweeper(runtime: ServiceRuntime, settings: OrdersSettings) -> Worker:
    """A watched worker: if the sweeper dies, the whole service exits and is restarted."""
    stop = threading.Event()
    return Worker(
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


def api(runtime: ServiceRuntime, settings: OrdersSettings) -> FastAPI:
    """The REST API, made as the service starts: without token keys (``AUTH_*``) it raises
    ``ConfigurationError`` and the service does not start (never an open API)."""
    return create_app(runtime.uow_factory, TokenVerifier.from_settings(settings.auth))


def stuck(runtime: ServiceRuntime, settings: OrdersSettings) -> list[QueryGauge]:
    """``saga_stuck_sagas``: orders not final ``stuck_after`` seconds after they were placed."""
    return [
        QueryGauge(
            runtime.pool,
            name="saga_stuck_sagas",
            documentation=f"Orders not final {settings.stuck_after_seconds:g} s after placed.",
            query=STUCK_ORDERS,
            params=(settings.stuck_after_seconds,),
        )
    ]


def compose(settings: OrdersSettings) -> Composition:
    return Composition(
        api=partial(api, settings=settings),
        workers=lambda runtime: [sweeper(runtime, settings)],
        collectors=partial(stuck, settings=settings),
    )


def build(settings: OrdersSettings) -> ServiceRuntime:
    from saga_system import SYSTEM

    return build_runtime(SYSTEM, "orders", settings, compose(settings).dependencies)
