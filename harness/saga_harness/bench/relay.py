"""The relay benchmark: how fast the outbox relay drains a backlog, and how soon it publishes.

Two phases, each on a database and a topic of its own on the bench stack (both
dropped after):

- **drain**: ``rows`` rows are written to the orders outbox first (one COPY),
  then the real relay starts; the figure is rows / seconds from the moment the
  relay holds its leadership lock to the moment the last row is marked
  published (the marking transaction's ``now()``). A reader of the topic then
  checks that every event id arrived and that each aggregate's events arrived
  in the order they were written.
- **steady**: ``writers`` threads commit one event each per transaction
  through the real write path (``UnitOfWorkFactory`` with a ``RelayWakeup``)
  at ``rate`` per second for ``duration`` seconds, noting the wall-clock time
  right after each commit returns. The topic uses ``LogAppendTime``, so a
  message's timestamp is the broker's append time, and commit-to-ack =
  append time - commit time, for every event.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from saga_harness.bench.relay_drain import run_drain
from saga_harness.bench.relay_figures import DRAIN_TARGET_PER_S, STEADY_P99_TARGET_MS
from saga_harness.bench.relay_phase import SCHEMA, Phase, Progress, RelayBenchConfig
from saga_harness.bench.relay_process import RELAY_NAME, effective_settings, relay_env
from saga_harness.bench.relay_steady import run_steady
from saga_runtime import KafkaSettings, ensure_topics, events_topic

__all__ = [
    "RelayBenchConfig",
    "default_steady_warmup",
    "fresh_database",
    "fresh_topic",
    "run_relay_bench",
]


def default_steady_warmup(*, stack_was_running: bool, phases: tuple[str, ...]) -> float:
    """Seconds of the steady phase left out: 2, or 15 when it would meet a cold broker first.

    A broker that just started compiles its hot paths under the first load
    (the first second of such a run measured commit-to-ack p50 of 600 ms).
    After the drain phase, or on a stack already up, it is warm.
    """
    if stack_was_running or phases[:1] == ("drain",):
        return 2.0
    return 15.0


def run_relay_bench(
    config: RelayBenchConfig,
    *,
    admin_database_url: str,
    kafka_bootstrap: str,
    log_dir: Path,
    progress: Progress,
) -> dict[str, Any]:
    """Run the configured phases, each on a fresh database and topic; every figure, JSON-able."""
    env = relay_env(SCHEMA, dict(config.overrides))
    result: dict[str, Any] = {
        "benchmark": "relay",
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "targets": {
            "drain_events_per_s": DRAIN_TARGET_PER_S,
            "steady_commit_to_ack_p99_ms": STEADY_P99_TARGET_MS,
        },
        "relay": {
            "mode": config.relay_mode,
            "overrides": dict(config.overrides),
            **effective_settings(env, client_id=f"{RELAY_NAME}-{SCHEMA}"),
        },
        "logs": _shown(log_dir),
    }
    for name in config.phases:
        with (
            fresh_database(admin_database_url) as database_url,
            fresh_topic(kafka_bootstrap, config.partitions) as kafka,
        ):
            phase = Phase(
                database_url=database_url,
                kafka=kafka,
                config=config,
                relay_env=env,
                log_dir=log_dir,
                progress=progress,
            )
            load_before = os.getloadavg()[0]
            result[name] = run_drain(phase) if name == "drain" else run_steady(phase)
            # Other work on the machine shows here (the bench's own load is in it too).
            result[name]["load_average_1m"] = {
                "before": round(load_before, 2),
                "after": round(os.getloadavg()[0], 2),
            }
    return result


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is under it (no machine paths in JSON)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A database of its own, migrated to head (as ``build_system`` does); dropped after."""
    from migrations import upgrade
    from saga_harness.logins import login_passwords
    from saga_harness.system import drop_system_database, with_database

    name = f"saga_relay_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(admin_url, name)
    try:
        upgrade(url)
        # The server checks passwords: the bench's writer (in this process) and the relay
        # (``RelayUnderTest``) log in as their roles with this database's.
        with _exported(login_passwords(url)):
            yield url
    finally:
        drop_system_database(admin_url, url)


@contextlib.contextmanager
def _exported(variables: dict[str, str]) -> Iterator[None]:
    """``variables`` in this process's environment while inside, as they were after."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def fresh_topic(bootstrap: str, partitions: int) -> Iterator[KafkaSettings]:
    """The outbox's events topic under a prefix of its own; deleted after (as a system's are)."""
    from saga_harness.system import drop_system_topics

    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"r{uuid.uuid4().hex[:8]}.",
        topic_partitions=partitions,
    )
    ensure_topics(kafka, [events_topic(SCHEMA, kafka.topic_prefix)])
    try:
        yield kafka
    finally:
        drop_system_topics(kafka)
