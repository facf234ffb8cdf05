"""The relay under measurement: ``python -m outbox_relay`` or an ``OutboxRelay`` thread.

Its settings come from the environment (``RELAY_*``, ``KAFKA_CLIENT_CONFIG``) with
``--set NAME=VALUE`` on top; ``effective_settings`` records what was in effect.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from confluent_kafka import Producer

from saga_harness.checkout import PYTHONPATH, REPO
from saga_runtime import (
    DatabaseSettings,
    KafkaSettings,
    OutboxRelay,
    RelaySettings,
    producer_config,
)

__all__ = [
    "RELAY_NAME",
    "RelayUnderTest",
    "effective_settings",
    "parse_overrides",
    "relay_env",
    "relay_running",
]

_T = TypeVar("_T")
RELAY_NAME = "bench-relay"


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``NAME=VALUE`` pairs (``--set``) as a dict; only relay and Kafka client settings."""
    overrides: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        if not name.startswith(("RELAY_", "KAFKA_CLIENT_CONFIG")):
            raise ValueError(f"{name}: only RELAY_* and KAFKA_CLIENT_CONFIG can be set")
        overrides[name] = value
    return overrides


def _database_passwords(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k.startswith("DATABASE_PASSWORD_")}


def relay_env(schema: str, overrides: Mapping[str, str]) -> dict[str, str]:
    """The relay process's environment: this one's, relaying ``schema`` only, plus overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    env.update(
        PYTHONPATH=PYTHONPATH,
        RELAY_OUTBOXES=schema,
        RELAY_NAME=RELAY_NAME,
        LOG_LEVEL=env.get("LOG_LEVEL", "INFO"),
        **overrides,
    )
    return env


def _read_env(env: Mapping[str, str], read: Callable[[], _T]) -> _T:
    """What ``read`` makes of the environment ``env`` (settings classes read ``os.environ``)."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return read()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def effective_settings(env: Mapping[str, str], *, client_id: str) -> dict[str, Any]:
    """The settings and producer configuration a relay started with ``env`` would use."""
    settings = _read_env(env, RelaySettings)
    config = producer_config(_read_env(env, KafkaSettings), client_id=client_id)
    config.pop("bootstrap.servers", None)
    config.pop("sasl.password", None)  # the results are published; a password never is
    return {"settings": settings.model_dump(mode="json"), "producer_config": config}


def _leader_pid(conn: psycopg.Connection, schema: str) -> int | None:
    """The backend holding the bench relay's leadership lock (its connection's name says so)."""
    row = conn.execute(
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()"
        " AND a.application_name = %s",
        (f"{RELAY_NAME}:{schema}",),
    ).fetchone()
    return None if row is None else int(row[0])


@dataclass
class RelayUnderTest:
    """The relay being measured: its own process (``mode="process"``) or a thread in this one."""

    mode: str
    schema: str
    database_url: str
    env: dict[str, str]  # its environment (a thread reads its settings from it too)
    log_path: Path
    profile: Path | None = None  # py-spy's output for the relay, if wanted
    leader_at: float = 0.0  # wall clock when it was seen holding its leadership lock
    _proc: subprocess.Popen[bytes] | None = None
    _spy: subprocess.Popen[bytes] | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _error: list[BaseException] = field(default_factory=list)

    def start(self, timeout: float = 60.0) -> None:
        """Start it and wait until it leads (holds the outbox's advisory lock)."""
        if self.mode == "process":
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "outbox_relay"],
                    # Its roles' passwords, as ``fresh_database`` set them for this database.
                    env={**self.env, **_database_passwords(os.environ)},
                    stdout=log,
                    stderr=log,
                    cwd=REPO,
                    start_new_session=True,
                )
        else:
            self._start_thread()
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while _leader_pid(conn, self.schema) is None:
                self.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the relay did not lead within {timeout}s")
                time.sleep(0.002)
        self.leader_at = time.time()
        if self.profile is not None:
            self._spy = _start_py_spy(self.pid, self.profile)

    def _start_thread(self) -> None:
        kafka = _read_env(self.env, KafkaSettings)
        relay = OutboxRelay(
            schema=self.schema,
            database=DatabaseSettings(url=self.database_url),
            settings=_read_env(self.env, RelaySettings),
            producer_factory=lambda: Producer(
                producer_config(kafka, client_id=f"{RELAY_NAME}-{self.schema}")
            ),
            name=RELAY_NAME,
        )

        def run() -> None:
            try:
                relay.run(self._stop)
            except BaseException as exc:
                self._error.append(exc)

        self._thread = threading.Thread(target=run, name="bench-relay", daemon=True)
        self._thread.start()

    def check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"the relay exited ({self._proc.returncode}); see {self.log_path}")
        if self._error:
            raise RuntimeError(f"the relay thread died: {self._error[0]!r}")

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else os.getpid()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._stop.set()
            self._thread.join(20)
        if self._spy is not None:
            if self._proc is None:
                self._spy.send_signal(signal.SIGINT)  # a thread: the process lives on
            try:
                self._spy.wait(60)
            except subprocess.TimeoutExpired:
                self._spy.kill()
                self._spy.wait()
            print(f"bench relay: py-spy profile of the relay: {self.profile}", file=sys.stderr)


@contextlib.contextmanager
def relay_running(relay: RelayUnderTest) -> Iterator[RelayUnderTest]:
    try:
        relay.start()
        yield relay
    finally:
        relay.stop()


def _start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Sample ``pid`` with py-spy until it exits; the format follows ``out``'s suffix.

    ``.svg``: a flame graph; ``.json``: speedscope; anything else: collapsed stacks.
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--gil",
            "--format",
            fmt,
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
