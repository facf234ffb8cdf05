"""Inbox retention: a service forgets the events it applied once they can no longer come back.

An inbox row is what turns a second delivery of an event into a no-op, so it
must live at least as long as the event can be delivered again. Kafka can
deliver an event again for as long as its topic keeps it (a consumer group
reset to an earlier offset, a new consumer, an operator re-reading a
partition): that is the topic's ``retention.ms``, the replay window. An inbox
row purged while its event is still in a topic lets a replay apply that event a
second time. ``INBOX_RETENTION`` (30 days by default) must therefore be longer
than the retention of every events topic; the relay checks that at start-up and
refuses to start otherwise (``check_inbox_retention``).

The relay's leader purges each service's inbox on its purge step
(``purge_inbox``); ``sagactl inbox purge`` does it on demand, audited.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]
from psycopg import sql
from pydantic_settings import BaseSettings, SettingsConfigDict

from saga_runtime.errors import ConfigurationError
from saga_runtime.logs import get_logger
from saga_runtime.naming import validate_service_name
from saga_runtime.settings import KafkaSettings

__all__ = [
    "InboxSettings",
    "check_inbox_retention",
    "purge_inbox",
    "topic_retentions",
    "verify_inbox_retention",
]

log = get_logger(__name__)

PURGE_BATCH = 5000


class InboxSettings(BaseSettings):
    """``INBOX_RETENTION``: how long a service keeps the record of an event it applied.

    An ISO 8601 duration (``P30D``, ``PT12H``). It must be longer than the
    retention (``retention.ms``) of every events topic, which is how long Kafka
    can deliver an event again: a shorter one lets a replayed event apply twice.
    """

    model_config = SettingsConfigDict(env_prefix="INBOX_", extra="ignore")

    retention: timedelta = timedelta(days=30)


def purge_inbox(
    conn: psycopg.Connection,
    schema: str,
    retention: timedelta,
    *,
    batch_size: int = PURGE_BATCH,
    max_batches: int | None = None,
) -> int:
    """Delete ``schema``'s inbox rows processed more than ``retention`` ago; returns how many.

    In batches, each its own statement (``conn`` in autocommit), so that no long
    transaction holds the rows that consumers are inserting next to; at most
    ``max_batches`` of them (None: until nothing older is left).
    """
    delete = (
        sql.SQL(
            "DELETE FROM {0}.inbox WHERE event_id IN (SELECT event_id FROM {0}.inbox"
            " WHERE processed_at < now() - %s ORDER BY processed_at LIMIT %s)"
        )
        .format(sql.Identifier(validate_service_name(schema)))
        .as_string()
    )
    total = batches = 0
    while max_batches is None or batches < max_batches:
        deleted = conn.execute(delete, (retention, batch_size)).rowcount
        total += deleted
        batches += 1
        if deleted < batch_size:
            break
    if total:
        log.info("inbox.purged", inbox=schema, rows=total, retention_s=retention.total_seconds())
    return total


def topic_retentions(
    kafka: KafkaSettings, topics: Iterable[str], *, timeout: float = 10.0
) -> dict[str, timedelta | None]:
    """Each existing topic's ``retention.ms`` (None: kept forever); missing topics are left out."""
    admin = AdminClient(kafka.client_properties())
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [t for t in dict.fromkeys(topics) if t in existing]
    if not wanted:
        return {}
    futures = admin.describe_configs(
        [ConfigResource(ConfigResource.Type.TOPIC, t) for t in wanted], request_timeout=timeout
    )
    out: dict[str, timedelta | None] = {}
    for resource, future in futures.items():
        ms = int(future.result(timeout=timeout)["retention.ms"].value)
        out[resource.name] = None if ms < 0 else timedelta(milliseconds=ms)
    return out


def check_inbox_retention(
    retention: timedelta, topics: Mapping[str, timedelta | None]
) -> list[str]:
    """Raise ConfigurationError if ``retention`` is not longer than a topic's retention.

    Topics that keep messages forever cannot be outlived by any retention: they
    are returned (the caller warns), since refusing would leave no setting at all.
    """
    too_long = {t: r for t, r in topics.items() if r is not None and r >= retention}
    if too_long:
        listed = ", ".join(f"{t} ({r})" for t, r in sorted(too_long.items()))
        raise ConfigurationError(
            f"INBOX_RETENTION ({retention}) must be longer than the retention of every events"
            f" topic, or a replayed event could be applied twice; longer: {listed}"
        )
    return sorted(t for t, r in topics.items() if r is None)


def verify_inbox_retention(
    kafka: KafkaSettings, topics: Iterable[str], retention: timedelta
) -> None:
    """Start-up check: refuse a retention shorter than the topics'; warn if it cannot tell."""
    try:
        retentions = topic_retentions(kafka, topics)
    except (KafkaException, TimeoutError) as exc:  # the broker is not up yet: do not block
        log.warning("inbox.retention_unchecked", error=repr(exc))
        return
    forever = check_inbox_retention(retention, retentions)
    if forever:
        log.error(
            "inbox.retention_shorter_than_topics",
            topics=forever,
            retention_s=retention.total_seconds(),
            detail="these topics keep events forever: a replay from their start would apply"
            " events whose inbox rows were purged",
        )
