"""Helpers shared by integration, e2e and chaos tests (not fixtures: plain functions)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from saga_runtime import (
    DatabaseSettings,
    Envelope,
    Event,
    KafkaSettings,
    Outbox,
    events_topic,
)

REPO = Path(__file__).resolve().parents[1]


class Numbered(Event):
    """A test event: the n-th event of one aggregate."""

    event_type = "Numbered"
    n: int


def envelope(aggregate_id: str, n: int, *, producer: str = "orders") -> Envelope:
    return Envelope.new(Numbered(n=n), aggregate_id=aggregate_id, producer=producer)


def insert_outbox_rows(
    database: DatabaseSettings,
    kafka: KafkaSettings,
    envelopes: list[Envelope],
    *,
    schema: str = "orders",
) -> None:
    """Commit each envelope in its own transaction, as a service would."""
    outbox = Outbox(schema=schema, topic=events_topic(schema, kafka.topic_prefix))
    with psycopg.connect(database.url) as conn:
        for env in envelopes:
            with conn.transaction():
                outbox.add(conn, env)


def wait_until(
    condition: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def pending_rows(database: DatabaseSettings, schema: str = "orders") -> int:
    with psycopg.connect(database.url, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL"
        ).fetchone()
        assert row is not None
        return int(row[0])


def kafka_login_env(settings: KafkaSettings) -> dict[str, str]:
    """The ``KAFKA_*`` variables that make a process log in as ``settings`` do (none: plain)."""
    if not settings.security_protocol.startswith("SASL_"):
        return {}
    assert settings.sasl_username and settings.sasl_password
    return {
        "KAFKA_SECURITY_PROTOCOL": settings.security_protocol,
        "KAFKA_SASL_MECHANISM": settings.sasl_mechanism,
        "KAFKA_SASL_USERNAME": settings.sasl_username,
        "KAFKA_SASL_PASSWORD": settings.sasl_password.get_secret_value(),
    }


def service_env(database: DatabaseSettings, kafka: KafkaSettings, **extra: str) -> dict[str, str]:
    """Environment for a child process that talks to the test's database and topics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "SAGA_"))}
    env.update(
        DATABASE_URL=database.url,
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        KAFKA_TOPIC_PREFIX=kafka.topic_prefix,
        **kafka_login_env(kafka),
        PYTHONPATH=str(REPO),
        LOG_LEVEL="INFO",
        **extra,
    )
    return env


@contextmanager
def relay_process(
    database: DatabaseSettings, kafka: KafkaSettings, log_path: Path, **extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m outbox_relay`` as its own OS process (so it can be SIGKILLed)."""
    env = service_env(
        database,
        kafka,
        RELAY_POLL_INTERVAL="0.5",
        RELAY_LOCK_RETRY_INTERVAL="0.3",
        **extra,
    )
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "outbox_relay"], env=env, stdout=log, stderr=log, cwd=REPO
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def relay_leader_name(database: DatabaseSettings, schema: str = "orders") -> str | None:
    """application_name of the connection holding an outbox's relay lock (None: no leader)."""
    with psycopg.connect(database.url, autocommit=True) as conn:
        row = conn.execute(
            """
            SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()
              AND a.application_name LIKE %s
            """,
            (f"%:{schema}",),
        ).fetchone()
    return None if row is None else row[0]


class ThreadedRunner:
    """Runs something with ``run``/``stop`` in a thread, for in-process tests."""

    def __init__(self, target: Callable[[], None], stop: Callable[[], None]) -> None:
        self._stop = stop
        self._errors: list[BaseException] = []

        def wrapped() -> None:
            try:
                target()
            except BaseException as exc:  # surfaced by join()
                self._errors.append(exc)

        self.thread = threading.Thread(target=wrapped, daemon=True)

    def __enter__(self) -> ThreadedRunner:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.join()

    def join(self, timeout: float = 30.0) -> None:
        self._stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "runner did not stop"
        if self._errors:
            raise self._errors[0]
