"""Composition root of the payment provider simulator (``sagactl provider``)."""

from __future__ import annotations

import uvicorn

from payment_provider.api import create_app
from payment_provider.settings import ProviderSettings


def main() -> int:
    settings = ProviderSettings()
    # uvicorn owns SIGTERM/SIGINT: in-flight requests finish, then the pool closes.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
    )
    return 0
