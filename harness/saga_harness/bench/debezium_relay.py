"""The Debezium relay as the bench runs it: its process, its replication slot, ``wal_level``.

``DebeziumRelay`` has the shape of ``RelayUnderTest`` (start, check_alive, pid, stop,
``leader_at``), so the comparison's workloads drive either. It counts as started once its
replication slot is active: the moment it can read, as our relay's is the moment it holds
its outbox's lock.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from saga_harness.bench.debezium_config import write_properties
from saga_harness.infra.debezium import DebeziumRuntime
from saga_harness.infra.postgres import LocalPostgres

__all__ = ["DebeziumRelay", "logical_wal", "replication_slot", "slot_active"]


def slot_active(conn: psycopg.Connection, slot: str) -> bool:
    """Whether a walsender is reading ``slot``."""
    row = conn.execute(
        "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    ).fetchone()
    return bool(row and row[0])


@dataclass
class DebeziumRelay:
    """``OutboxEventRelay`` (Java) in a process of its own, configured by ``properties``."""

    runtime: DebeziumRuntime
    database_url: str
    slot: str
    properties: Mapping[str, str]
    work_dir: Path  # its properties file and its offsets file
    log_path: Path
    leader_at: float = 0.0  # wall clock when its slot was seen active
    _proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> None:
        """Start the JVM and wait until it streams from the slot."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "relay.properties"
        write_properties(config, self.properties)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.runtime.argv(config),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.work_dir,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not slot_active(conn, self.slot):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Debezium did not read its slot within {timeout}s")
                time.sleep(0.002)
        self.leader_at = time.time()

    def check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(
                f"the Debezium relay exited ({self._proc.returncode}); see {self.log_path}"
            )

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the Debezium relay is not started")
        return self._proc.pid

    def stop(self) -> None:
        """SIGTERM (the engine stops and commits what was acknowledged), SIGKILL after 30 s."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@contextlib.contextmanager
def replication_slot(database_url: str, *, slot: str, table: str) -> Iterator[str]:
    """A publication of ``table`` and a pgoutput slot, both named ``slot``; dropped after.

    Made before any row is written, so the slot holds every insert from then on. The slot
    must go before its database can be dropped, and it holds WAL for as long as it exists.
    """
    schema, _, name = table.partition(".")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}.{}").format(
                sql.Identifier(slot), sql.Identifier(schema), sql.Identifier(name)
            )
        )
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        yield slot
    finally:
        drop_slot(database_url, slot)


def drop_slot(database_url: str, slot: str, *, timeout: float = 30.0) -> None:
    """Drop ``slot``, ending a walsender still reading it first (a relay killed mid-run)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                " WHERE slot_name = %s AND active_pid IS NOT NULL",
                (slot,),
            )
            try:
                conn.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                    " WHERE slot_name = %s",
                    (slot,),
                )
                return
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@contextlib.contextmanager
def logical_wal(postgres: LocalPostgres, *, restore: bool) -> Iterator[None]:
    """``wal_level = logical`` while inside; set back after (restarting only if ``restore``).

    Logical decoding needs it, and it takes a restart. Only this comparison wants it, so the
    bench stack gets it for the run and loses it after; ``restore=False`` (the stack is
    about to stop anyway) leaves the reset to take effect at its next start.
    """
    url = postgres.admin_url
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW wal_level").fetchone()
        already = bool(row and row[0] == "logical")
        if not already:
            conn.execute("ALTER SYSTEM SET wal_level = 'logical'")
    if not already:
        postgres.restart()
    try:
        yield
    finally:
        if not already:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM RESET wal_level")
            if restore:
                postgres.restart()
