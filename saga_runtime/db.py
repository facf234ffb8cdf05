"""Database connections: one pool per service, working under the service's own role."""

from __future__ import annotations

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


def create_pool(
    settings: DatabaseSettings, *, role: str | None, name: str, max_size: int | None = None
) -> ConnectionPool:
    """Open a pool whose connections act as ``role`` (the service's own database role).

    Connections are checked before use, so after a PostgreSQL restart the pool
    hands out a fresh connection instead of a dead one.
    """
    if role is not None:
        validate_service_name(role)
    return ConnectionPool(
        settings.url,
        min_size=settings.pool_min_size,
        max_size=max_size or settings.pool_max_size,
        kwargs={"connect_timeout": int(settings.connect_timeout), "application_name": name},
        configure=_set_role(role),
        check=ConnectionPool.check_connection,
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
