"""The local stack: one PostgreSQL and one Kafka broker, provisioned idempotently.

``ensure_stack`` is what ``sagactl up`` and the test fixtures call: it installs whatever is
missing, starts what is not running, waits for readiness and returns the addresses.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from saga_harness.infra.kafka import (
    DEFAULT_CONTROLLER_PORT,
    DEFAULT_KAFKA_PORT,
    DEFAULT_KAFKA_VERSION,
    LocalKafka,
)
from saga_harness.infra.postgres import DEFAULT_PG_PORT, LocalPostgres
from saga_harness.infra.proc import Logger, file_lock

ADDRESSES_FILE = "stack.json"
LOCK_FILE = ".stack.lock"


@dataclass(frozen=True)
class StackAddresses:
    """Where the services and tests find the infrastructure."""

    # The superuser's, with its password: kept out of reprs (a failed test's report).
    database_url: str = field(repr=False)  # the app database, created if missing
    admin_database_url: str = field(repr=False)  # same server, database 'postgres'
    kafka_bootstrap: str
    # How a super user logs in to a secured broker (librdkafka properties), None when it is
    # plain. Never written to the addresses file, never shown.
    kafka_super_user: dict[str, str] | None = field(default=None, repr=False)


class LocalStack:
    """Handles on the two local daemons of one state dir (used by chaos tests directly)."""

    def __init__(
        self,
        *,
        state_dir: Path,
        pg_port: int = DEFAULT_PG_PORT,
        kafka_port: int = DEFAULT_KAFKA_PORT,
        kafka_controller_port: int = DEFAULT_CONTROLLER_PORT,
        database: str = "saga",
        kafka_version: str = DEFAULT_KAFKA_VERSION,
        kafka_heap: str = "512m",
        kafka_secured: bool = False,
        log: Logger = print,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.database = database
        self.postgres = LocalPostgres(state_dir=self.state_dir, port=pg_port, log=log)
        self.kafka = LocalKafka(
            state_dir=self.state_dir,
            port=kafka_port,
            controller_port=kafka_controller_port,
            version=kafka_version,
            heap=kafka_heap,
            log=log,
            secured=kafka_secured,
        )

    @property
    def addresses(self) -> StackAddresses:
        """The addresses this stack serves (whether or not it is running)."""
        return StackAddresses(
            database_url=self.postgres.url(self.database),
            admin_database_url=self.postgres.admin_url,
            kafka_bootstrap=self.kafka.bootstrap,
            kafka_super_user=self.kafka.admin_properties() or None,
        )

    def ensure(self) -> StackAddresses:
        """Install, start and wait for both daemons as needed; safe to call repeatedly.

        Kafka is launched first without waiting so its JVM boots while PostgreSQL starts.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.state_dir / LOCK_FILE):
            self.kafka.install()
            self.postgres.install()
            self.kafka.start(wait=False)
            self.postgres.start()
            self.postgres.create_database(self.database)
            self.kafka.wait_ready()
            addresses = self.addresses
            public = {k: v for k, v in asdict(addresses).items() if k != "kafka_super_user"}
            _write_private(self.state_dir / ADDRESSES_FILE, json.dumps(public, indent=2))
            return addresses

    def stop(self) -> None:
        """Stop Kafka, then PostgreSQL; a daemon that is not running is skipped silently."""
        if not self.state_dir.exists():
            return
        with file_lock(self.state_dir / LOCK_FILE):
            self.kafka.stop()
            self.postgres.stop()

    def status(self) -> dict[str, bool]:
        """Which daemons are running."""
        return {"postgres": self.postgres.is_running(), "kafka": self.kafka.is_running()}


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner only (the admin URL in it holds a password); an
    older file, once world-readable, is made owner-only first."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def ensure_stack(
    *,
    state_dir: Path,
    pg_port: int = DEFAULT_PG_PORT,
    kafka_port: int = DEFAULT_KAFKA_PORT,
    kafka_controller_port: int = DEFAULT_CONTROLLER_PORT,
    database: str = "saga",
    kafka_version: str = DEFAULT_KAFKA_VERSION,
    kafka_heap: str = "512m",
    kafka_secured: bool = False,
    log: Logger = print,
) -> StackAddresses:
    """Make the local PostgreSQL + Kafka stack of ``state_dir`` run and return its addresses.

    Idempotent: what already runs (per the pidfiles) is only checked for readiness, so
    ``sagactl up`` and every test session can call it without restarting anything.
    ``kafka_secured``: the broker requires logins and ACLs (``LocalKafka``).
    """
    return LocalStack(
        state_dir=state_dir,
        pg_port=pg_port,
        kafka_port=kafka_port,
        kafka_controller_port=kafka_controller_port,
        database=database,
        kafka_version=kafka_version,
        kafka_heap=kafka_heap,
        kafka_secured=kafka_secured,
        log=log,
    ).ensure()


def stop_stack(*, state_dir: Path, log: Logger = print) -> None:
    """Stop the daemons recorded in ``state_dir``; no error if nothing runs.

    Ports are not needed: Kafka is found by its pidfile and PostgreSQL by its data dir.
    """
    LocalStack(state_dir=state_dir, log=log).stop()


def stack_status(*, state_dir: Path) -> dict[str, bool]:
    """Report ``{"postgres": bool, "kafka": bool}`` for the daemons of ``state_dir``."""
    return LocalStack(state_dir=state_dir, log=lambda _msg: None).status()


def read_addresses(state_dir: Path) -> StackAddresses | None:
    """Addresses written by the last successful ``ensure_stack`` on ``state_dir``, if any.

    Lets commands such as ``sagactl run`` find the stack that ``sagactl up`` started.
    """
    try:
        data = json.loads((Path(state_dir) / ADDRESSES_FILE).read_text())
        return StackAddresses(**data)
    except (OSError, ValueError, TypeError):
        return None
