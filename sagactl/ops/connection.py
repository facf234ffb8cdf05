"""Reaching the running system from an operator's shell, or refusing with the fix.

Only ``DATABASE_URL`` (an admin role that can read every service schema) and, for the
commands that produce to Kafka, ``KAFKA_BOOTSTRAP_SERVERS`` (+ ``KAFKA_TOPIC_PREFIX``,
``KAFKA_CLIENT_CONFIG``) are needed. Every failure to reach either is a ``Refusal``: nothing
was changed, and the message says which setting to look at.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from saga_runtime import DatabaseSettings, KafkaSettings
from saga_runtime.db import ADAPTERS, connection_kwargs
from saga_system import SYSTEM
from sagactl.ops.errors import Refusal

__all__ = [
    "SERVICES",
    "check_topics",
    "database_url",
    "existing_topics",
    "kafka_settings",
    "open_database",
    "quiet_kafka_logger",
    "redact",
    "require_audit_log",
]

SERVICES = tuple(SYSTEM.names)
CONNECT_TIMEOUT_S = 5
KAFKA_TIMEOUT_S = 8.0


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def database_url() -> str:
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        raise Refusal(
            "DATABASE_URL is not set: say which database the system uses",
            "export DATABASE_URL=postgresql://ADMIN@HOST:PORT/DB (an admin role that can read "
            "every service schema, e.g. the one that ran the migrations)",
        )
    return url


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@contextmanager
def open_database() -> Iterator[psycopg.Connection]:
    """An autocommit admin connection in UTC, after checking the saga's schemas are there
    and readable. Commands open their own transactions for changes."""
    url = database_url()
    try:
        # The services' keepalives and timeouts: an operator whose host vanishes
        # mid-command must not hold order locks for hours.
        settings = DatabaseSettings(url=url, connect_timeout=CONNECT_TIMEOUT_S)
        conn = psycopg.connect(
            url, autocommit=True, context=ADAPTERS, **connection_kwargs(settings, name="sagactl")
        )
    except psycopg.OperationalError as exc:
        raise Refusal(
            f"cannot connect to PostgreSQL at {redact(url)}: {_first_line(exc)}",
            "check that the server is up (`./dev status`) and that DATABASE_URL names it",
        ) from exc
    with conn:
        conn.execute("SET TIME ZONE 'UTC'")
        _check_schemas(conn, url)
        yield conn


def _check_schemas(conn: psycopg.Connection, url: str) -> None:
    row = conn.execute(
        "SELECT current_user, array_agg(s) FILTER (WHERE to_regclass(s || '.outbox') IS NULL),"
        " array_agg(s) FILTER (WHERE to_regclass(s || '.outbox') IS NOT NULL"
        "   AND NOT has_schema_privilege(s, 'USAGE'))"
        " FROM unnest(%s::text[]) AS s",
        (list(SERVICES),),
    ).fetchone()
    assert row is not None
    user, missing, forbidden = row[0], row[1] or [], row[2] or []
    if missing:
        raise Refusal(
            f"{redact(url)} has no saga tables for {', '.join(missing)}",
            "point DATABASE_URL at the system's database, or run `sagactl migrate`",
        )
    if forbidden:
        raise Refusal(
            f"role {user} cannot read the schemas of {', '.join(forbidden)}",
            "connect as the admin role that ran the migrations (or a superuser), "
            "not as a service role",
        )


def require_audit_log(conn: psycopg.Connection) -> None:
    """Commands that change data record it; without the table they refuse."""
    row = conn.execute("SELECT to_regclass('ops.audit_log') IS NOT NULL").fetchone()
    if not (row and row[0]):
        raise Refusal(
            "the database has no ops.audit_log, so changes could not be recorded",
            "apply migration 0003: `sagactl migrate` (DATABASE_URL as for this command)",
        )


def quiet_kafka_logger() -> logging.Logger:
    """librdkafka's connection chatter would bury the command's own message."""
    logger = logging.getLogger("sagactl.kafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def kafka_settings() -> KafkaSettings:
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        raise Refusal(
            "KAFKA_BOOTSTRAP_SERVERS is not set: say where the broker is",
            "export KAFKA_BOOTSTRAP_SERVERS=HOST:PORT (and KAFKA_TOPIC_PREFIX if the system "
            "uses one)",
        )
    return KafkaSettings()


def existing_topics(settings: KafkaSettings) -> set[str]:
    """The broker's topics; refuses if it does not answer."""
    config: dict[str, Any] = {"logger": quiet_kafka_logger(), **settings.client_properties()}
    try:
        return set(AdminClient(config).list_topics(timeout=KAFKA_TIMEOUT_S).topics)
    except KafkaException as exc:
        raise Refusal(
            f"cannot reach Kafka at {settings.bootstrap_servers}: {exc.args[0]}",
            "check that the broker is up (`./dev status`) and that KAFKA_BOOTSTRAP_SERVERS "
            "names it",
        ) from exc


def check_topics(settings: KafkaSettings, topics: Iterable[str]) -> None:
    """Refuse unless the broker answers and every topic exists."""
    missing = sorted(set(topics) - existing_topics(settings))
    if missing:
        raise Refusal(
            f"topic {', '.join(missing)} does not exist on {settings.bootstrap_servers}",
            "check KAFKA_BOOTSTRAP_SERVERS and KAFKA_TOPIC_PREFIX; `sagactl topics` creates "
            "the system's topics",
        )
