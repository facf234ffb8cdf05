"""A provider that takes its time: every request that asks for money to move waits first.

Real card networks answer in hundreds of milliseconds. ``PROVIDER_LATENCY_SECONDS`` makes
charges, voids and refunds (every POST) wait that long before they are processed, without
holding a thread or a ledger connection, so a benchmark can show what the provider's
latency costs the saga (it should add latency, never cap throughput).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

__all__ = ["add_latency"]

Sleep = Callable[[float], Awaitable[None]]


def add_latency(app: FastAPI, seconds: float, sleep: Sleep = asyncio.sleep) -> None:
    """Make every POST to ``app`` wait ``seconds`` first (nothing when ``seconds`` is 0)."""
    if seconds <= 0:
        return

    @app.middleware("http")
    async def wait_first(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.method == "POST":
            await sleep(seconds)
        return await call_next(request)
