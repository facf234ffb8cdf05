"""The provider's connection pool: autocommit, checked only after sitting idle."""

from __future__ import annotations

import time
import weakref

import psycopg
from psycopg_pool import ConnectionPool

from simulators.payment_provider.settings import ProviderSettings

__all__ = ["open_pool"]

# A connection back in use within this long is handed out unchecked.
_RECENTLY_USED = 1.0


class _CheckIfIdle:
    """A round trip to check a connection only if it idled (as ``saga_runtime.db`` does).

    A check per request would double the round trips of a one-statement charge; after
    a PostgreSQL restart, idle connections are still checked and replaced before use.
    """

    def __init__(self) -> None:
        self._last_used: weakref.WeakKeyDictionary[psycopg.Connection, float] = (
            weakref.WeakKeyDictionary()
        )

    def returned(self, conn: psycopg.Connection) -> None:
        self._last_used[conn] = time.monotonic()

    def check(self, conn: psycopg.Connection) -> None:
        if conn.closed or conn.pgconn.status != psycopg.pq.ConnStatus.OK:
            raise psycopg.OperationalError("connection is closed or broken")
        if time.monotonic() - self._last_used.get(conn, 0.0) > _RECENTLY_USED:
            ConnectionPool.check_connection(conn)


def open_pool(settings: ProviderSettings) -> ConnectionPool:
    """Autocommit: a one-statement charge is its own transaction, with no BEGIN or COMMIT;
    the requests that need more open a transaction of their own (``conn.transaction()``).
    Named ``payment-provider``, so the saga bench counts its backends as the harness's."""
    checker = _CheckIfIdle()
    return ConnectionPool(
        settings.database_url,
        min_size=1,
        max_size=settings.pool_max_size,
        timeout=settings.pool_timeout,
        kwargs={"application_name": "payment-provider", "autocommit": True},
        check=checker.check,
        reset=checker.returned,
        name="payment-provider",
        open=True,
    )
