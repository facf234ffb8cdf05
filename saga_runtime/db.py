"""Database connections: one pool per service, working under the service's own role."""

from __future__ import annotations

import time
import weakref

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from saga_runtime.naming import validate_service_name
from saga_runtime.settings import DatabaseSettings

__all__ = ["TRANSIENT_DB_ERRORS", "connect", "create_pool", "is_transient_db_error"]

# Failures that say "the database is not available right now", not "this
# message is wrong": they are retried forever and the message is never skipped.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    PoolTimeout,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.AdminShutdown,
    psycopg.errors.CannotConnectNow,
)


def is_transient_db_error(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_DB_ERRORS)


def _set_role(role: str | None):  # type: ignore[no-untyped-def]
    def configure(conn: psycopg.Connection) -> None:
        if role is not None:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        conn.commit()

    return configure


# A pooled connection back in use within this long skips the round trip of a check.
_RECENTLY_USED = 1.0


class _CheckIfIdle:
    """The pool's check: a round trip only for connections that sat idle for a while.

    Connections in steady use are handed out as they are (a check per
    transaction would cost as much as a small transaction). One that idled
    longer than a second is checked, so after a PostgreSQL restart the pool
    drops dead connections before anyone gets them; a connection that died
    within the last second fails its transaction, which callers treat like any
    database outage (retry).
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


def create_pool(
    settings: DatabaseSettings, *, role: str | None, name: str, max_size: int | None = None
) -> ConnectionPool:
    """Open a pool whose connections act as ``role`` (the service's own database role).

    Connections idle for more than a second are checked before use, so after a
    PostgreSQL restart the pool hands out a fresh connection instead of a dead one.
    """
    if role is not None:
        validate_service_name(role)
    checker = _CheckIfIdle()
    return ConnectionPool(
        settings.url,
        min_size=settings.pool_min_size,
        max_size=max_size or settings.pool_max_size,
        kwargs={"connect_timeout": int(settings.connect_timeout), "application_name": name},
        configure=_set_role(role),
        check=checker.check,
        reset=checker.returned,
        name=name,
        timeout=settings.connect_timeout,
        open=True,
    )


def connect(
    settings: DatabaseSettings, *, role: str | None, name: str, autocommit: bool = False
) -> psycopg.Connection:
    """One dedicated connection (the relay holds its leadership lock on one)."""
    conn = psycopg.connect(
        settings.url,
        autocommit=autocommit,
        connect_timeout=int(settings.connect_timeout),
        application_name=name,
    )
    if role is not None:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(validate_service_name(role))))
        if not autocommit:
            conn.commit()
    return conn
