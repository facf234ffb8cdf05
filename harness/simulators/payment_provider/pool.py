"""The provider's connection pool: autocommit, checked only after sitting idle."""

from __future__ import annotations

from psycopg_pool import ConnectionPool

from saga_runtime.db import CheckIfIdle
from simulators.payment_provider.settings import ProviderSettings

__all__ = ["open_pool"]


def open_pool(settings: ProviderSettings) -> ConnectionPool:
    """Autocommit: a one-statement charge is its own transaction, with no BEGIN or COMMIT;
    the requests that need more open a transaction of their own (``conn.transaction()``).
    Named ``payment-provider``, so the saga bench counts its backends as the harness's."""
    checker = CheckIfIdle()
    return ConnectionPool(
        settings.database_url,
        min_size=1,
        max_size=settings.pool_max_size,
        timeout=settings.pool_timeout,
        kwargs={"application_name": "payment-provider", "autocommit": True},
        check=checker.check,
        name="payment-provider",
        open=True,
    )
