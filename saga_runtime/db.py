"""Database connections: one pool per service, logged in as the service's own role."""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.adapt import AdaptersMap
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.array import ListBinaryDumper
from psycopg_pool import ConnectionPool, PoolTimeout

from saga_runtime.db_logins import login_credentials
from saga_runtime.settings import DatabaseSettings

__all__ = [
    "ADAPTERS",
    "TRANSIENT_DB_ERRORS",
    "CheckIfIdle",
    "connect",
    "connection_kwargs",
    "create_pool",
    "is_transient_db_error",
]

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
    # The server ended a session that idled too long (``connection_kwargs``); the
    # first is an InternalError by its SQLSTATE class, not an OperationalError.
    psycopg.errors.IdleInTransactionSessionTimeout,
    psycopg.errors.IdleSessionTimeout,
)


# How every connection of ours turns Python values into parameters: psycopg's defaults,
# except that a list goes in binary. A list is how a statement takes a batch
# (``unnest(%s::text[])``, ``= ANY(%s)``); psycopg's text format escapes it character
# by character, which cost a tenth of a consumer's CPU for a batch of envelopes, while
# the binary format copies each element as it is. The values are the same; one type is
# not: a list of str now arrives as ``text[]``, where the text format left its type to
# the server. So cast it where it meets another type (``%s::uuid[]``): ``uuid_col =
# ANY(%s)`` with a list of str would fail (a list of UUID is ``uuid[]`` either way).
ADAPTERS = AdaptersMap(psycopg.adapters)
ADAPTERS.register_dumper(list, ListBinaryDumper)


def is_transient_db_error(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_DB_ERRORS)


def _milliseconds(seconds: float) -> int:
    return round(seconds * 1000)


def connection_kwargs(
    settings: DatabaseSettings, *, name: str, session: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """libpq parameters for every connection: timeouts that drop a vanished peer.

    Client side, libpq's keepalives and ``tcp_user_timeout``: a server that
    vanished fails our statement instead of hanging it for hours. Server side,
    the same settings for the session (``options``), because PostgreSQL only
    ends the session of a client that vanished, and frees its locks, through
    its own ``tcp_keepalives_*`` / ``tcp_user_timeout``; and the session's
    ``idle_in_transaction_session_timeout`` and ``lock_timeout`` (see
    ``DatabaseSettings``). ``session`` adds settings for one connection (in
    milliseconds); ``options`` already in ``DATABASE_URL`` come last, so they win.
    """
    server = {
        "tcp_keepalives_idle": settings.keepalives_idle,
        "tcp_keepalives_interval": settings.keepalives_interval,
        "tcp_keepalives_count": settings.keepalives_count,
        "tcp_user_timeout": _milliseconds(settings.tcp_user_timeout),
        "idle_in_transaction_session_timeout": _milliseconds(settings.idle_in_transaction_timeout),
        "lock_timeout": _milliseconds(settings.lock_timeout),
        **(session or {}),
    }
    options = " ".join(f"-c {key}={value}" for key, value in server.items())
    given = conninfo_to_dict(settings.url).get("options")
    return {
        "connect_timeout": int(settings.connect_timeout),
        "application_name": name,
        "keepalives": 1,
        "keepalives_idle": settings.keepalives_idle,
        "keepalives_interval": settings.keepalives_interval,
        "keepalives_count": settings.keepalives_count,
        "tcp_user_timeout": _milliseconds(settings.tcp_user_timeout),
        "options": f"{options} {given}" if given else options,
    }


def _login(settings: DatabaseSettings, role: str | None) -> dict[str, str]:
    # A login of its own, not SET ROLE, which any statement could undo. None: the URL's
    # own user (the operator's CLI, the harness).
    return {} if role is None else login_credentials(settings.url, role)


# A pooled connection back in use within this long skips the round trip of a check.
_RECENTLY_USED = 1.0


class CheckIfIdle:
    """The pool's check: a round trip only for connections that sat idle for a while.

    Connections in steady use are handed out as they are (a check per
    transaction would cost as much as a small transaction). One last handed out
    more than a second ago is checked, so after a PostgreSQL restart the pool
    drops dead connections before anyone gets them; a connection that died
    within the last second fails its transaction, which callers treat like any
    database outage (retry).

    It measures from when a connection was last handed out, not given back: a
    connection given back moments ago after a long transaction is checked once
    more than it needs, which costs a round trip, but nothing is given back
    through the pool's worker threads, as it would be with a ``reset`` callback.
    """

    def __init__(self) -> None:
        self._handed_out: weakref.WeakKeyDictionary[psycopg.Connection, float] = (
            weakref.WeakKeyDictionary()
        )

    def check(self, conn: psycopg.Connection) -> None:
        if conn.closed or conn.pgconn.status != psycopg.pq.ConnStatus.OK:
            raise psycopg.OperationalError("connection is closed or broken")
        now = time.monotonic()
        if now - self._handed_out.get(conn, 0.0) > _RECENTLY_USED:
            ConnectionPool.check_connection(conn)
        self._handed_out[conn] = now


def create_pool(
    settings: DatabaseSettings, *, role: str | None, name: str, max_size: int | None = None
) -> ConnectionPool:
    """Open a pool whose connections log in as ``role``'s login role (``db_logins``): a
    service's, or ``relay_login(service)``; None logs in as ``DATABASE_URL`` says.

    Connections not handed out for more than a second are checked before use, so after a
    PostgreSQL restart the pool hands out a fresh connection instead of a dead one.
    Every connection drops a vanished peer (``connection_kwargs``).
    """
    checker = CheckIfIdle()
    return ConnectionPool(
        settings.url,
        min_size=settings.pool_min_size,
        max_size=max_size or settings.pool_max_size,
        kwargs={
            **connection_kwargs(settings, name=name),
            **_login(settings, role),
            "context": ADAPTERS,
        },
        check=checker.check,
        name=name,
        timeout=settings.connect_timeout,
        open=True,
    )


def connect(
    settings: DatabaseSettings,
    *,
    role: str | None,
    name: str,
    autocommit: bool = False,
    session: Mapping[str, int] | None = None,
) -> psycopg.Connection:
    """One dedicated connection (the relay holds its leadership lock on one).

    ``role`` as for ``create_pool``. ``session``: server settings for this connection
    only, e.g. the relay's ``idle_session_timeout`` (see ``connection_kwargs``).
    """
    params: dict[str, Any] = {
        **connection_kwargs(settings, name=name, session=session),
        **_login(settings, role),
    }
    return psycopg.connect(settings.url, autocommit=autocommit, context=ADAPTERS, **params)
