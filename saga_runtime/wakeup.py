"""Wakes an outbox's relay after a commit, without serializing the commits themselves."""

from __future__ import annotations

import threading

import psycopg

from saga_runtime.db import connect
from saga_runtime.logs import get_logger
from saga_runtime.naming import notify_channel
from saga_runtime.settings import DatabaseSettings

__all__ = ["RelayWakeup"]

log = get_logger(__name__)


class RelayWakeup:
    """Sends NOTIFY on the outbox's channel after transactions that emitted events commit.

    A NOTIFY inside the writing transaction would make every such commit in
    the cluster queue behind one lock (PostgreSQL holds a cluster-wide lock
    from the notifying transaction's pre-commit through its WAL flush). So the
    unit of work calls ``poke`` after its commit, and one thread sends the
    NOTIFY on a connection of its own: pokes that arrive while it is busy fold
    into the next one. A wakeup lost in a crash or an outage costs at most the
    relay's polling interval, never an event.
    """

    def __init__(self, settings: DatabaseSettings, *, schema: str, name: str) -> None:
        self._settings = settings
        self._schema = schema
        self._channel = notify_channel(schema)
        self._name = name
        self._pending = threading.Event()
        self._closed = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._thread = threading.Thread(target=self._run, name=f"{name}-wakeup", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._pending.set()

    def problem(self) -> str | None:
        """For liveness: None while its thread runs (or after ``close``)."""
        if self._thread.is_alive() or self._closed.is_set():
            return None
        return f"relay wakeup thread {self._thread.name} is not running"

    def close(self) -> None:
        self._closed.set()
        self._pending.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            self._pending.wait()
            if self._closed.is_set():
                break
            self._pending.clear()
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(
                        # As the service: NOTIFY needs no grant, only a login.
                        self._settings,
                        role=self._schema,
                        name=f"{self._name}:wakeup",
                        autocommit=True,
                    )
                self._conn.execute("SELECT pg_notify(%s, '')", (self._channel,))
            except psycopg.Error as exc:
                log.debug("wakeup.failed", error=repr(exc))
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                self._closed.wait(0.5)  # the relay polls meanwhile
        if self._conn is not None:
            self._conn.close()
