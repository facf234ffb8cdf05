"""The leader's session as a lease: every round trip on it renews it, no wait outlasts it."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from saga_runtime.settings import RelaySettings

__all__ = ["Lease"]


class Lease:
    """What the relay knows of its lease on the lock: when a round trip last confirmed it.

    The leader's session runs with ``idle_session_timeout = lease``, so the
    server ends it (and frees the lock) once it has sent nothing for that long;
    ``OutboxRelay``'s docstring has the reasoning window by window. Every
    statement on the leader's session goes through ``query``.
    """

    def __init__(self, settings: RelaySettings) -> None:
        self._settings = settings
        # When the last successful round trip on the leader's session was sent.
        self.confirmed_at = 0.0

    def query(
        self, conn: psycopg.Connection, statement: str, params: Any = None
    ) -> psycopg.Cursor[Any]:
        """Run a statement on the leader's session; its success renews the lease."""
        sent = time.monotonic()
        cursor = conn.execute(statement, params)
        self.confirmed_at = sent
        return cursor

    def heartbeat(self, conn: psycopg.Connection) -> None:
        """Keep the session from idling into the lease's end while we wait."""
        if time.monotonic() - self.confirmed_at > self._settings.lease / 3:
            self.query(conn, "SELECT 1")

    def ensure(self, conn: psycopg.Connection) -> None:
        """Return only if the lock is certainly still ours (see ``OutboxRelay``)."""
        if time.monotonic() - self.confirmed_at >= self._settings.lease / 2:
            self.query(conn, "SELECT 1")

    def wait(self, conn: psycopg.Connection, seconds: float, stop: threading.Event) -> None:
        """Wait ``seconds`` (or until ``stop``), with heartbeats: the lease outlives the wait."""
        deadline = time.monotonic() + seconds
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            stop.wait(min(left, self._settings.lease / 3))
            self.heartbeat(conn)
