"""Composition root of the payment provider simulator (``sagactl provider``)."""

from __future__ import annotations

import uvicorn

from saga_runtime import DatabaseProbe, DatabaseSettings, Health, add_health_routes
from simulators.payment_provider.api import create_app
from simulators.payment_provider.settings import ProviderSettings


def main() -> int:
    settings = ProviderSettings()
    # uvicorn owns SIGTERM/SIGINT: in-flight requests finish, then the pool closes.
    app = create_app(settings)
    # Liveness: it answers. Readiness: its ledger's database answers too (named as its pool,
    # so the saga bench counts this backend as the harness's too).
    database = DatabaseSettings(url=settings.database_url)
    add_health_routes(
        app, Health(ready={"database": DatabaseProbe(database, role=None, name="payment-provider")})
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
    )
    return 0
