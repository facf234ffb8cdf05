"""librdkafka configuration for the runtime's producers and consumers, and topic setup."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from saga_runtime.settings import KafkaSettings

__all__ = ["consumer_config", "ensure_topics", "producer_config"]


def producer_config(settings: KafkaSettings, *, client_id: str) -> dict[str, Any]:
    """An idempotent producer that never gives up on a message by itself.

    ``message.timeout.ms=0`` (infinite) keeps a message queued while the
    broker is down instead of failing it, and with idempotence and the gapless
    guarantee a partition's messages are written in order with no gap: a
    failure that could reorder them is raised as fatal and the relay starts a
    new producer, republishing every row not yet acknowledged.

    ``linger.ms=0``: the relay produces a whole batch of rows before it waits,
    so messages already group into one request per partition without lingering;
    waiting 2 ms more only added to every hop (commit-to-ack p50 5.9 -> 0.8 ms,
    p99 29.8 -> 16.0 ms at 1,000 events/s; drain unchanged, BENCHMARKS.md).
    """
    return {
        "client.id": client_id,
        "enable.idempotence": True,
        "enable.gapless.guarantee": True,
        "acks": "all",
        "max.in.flight.requests.per.connection": 5,
        "message.timeout.ms": 0,
        "linger.ms": 0,
        "compression.type": "lz4",
        "reconnect.backoff.max.ms": 1000,
        **settings.client_properties(),
    }


def consumer_config(
    settings: KafkaSettings,
    *,
    group_id: str,
    client_id: str,
    session_timeout_ms: int,
    max_poll_interval_ms: int = 300_000,
    group_instance_id: str | None = None,
    commit_interval_ms: int = 1_000,
) -> dict[str, Any]:
    """Offsets are stored by the runner only after the message's transaction committed.

    Statistics every 5 s feed the runner's stall check (``consumer_health``).
    ``max.poll.interval.ms`` is set explicitly because the runner bounds its
    work between two polls by it (a consumer that exceeds it is evicted from
    its group and its partitions' uncommitted work is redone elsewhere).
    ``group_instance_id`` makes the consumer a static member of its group.
    """
    static = {"group.instance.id": group_instance_id} if group_instance_id else {}
    return {
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": commit_interval_ms,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(500, session_timeout_ms // 5),
        "max.poll.interval.ms": max_poll_interval_ms,
        "reconnect.backoff.max.ms": 1000,
        "topic.metadata.refresh.interval.ms": 5000,
        "statistics.interval.ms": 5000,
        **static,
        **settings.client_properties(),
    }


def ensure_topics(settings: KafkaSettings, topics: Iterable[str], *, timeout: float = 30.0) -> None:
    """Create missing topics (partitions from settings, replication 1 unless the broker says more).

    Existing topics are left as they are, so this is safe to run on every start.
    Messages carry the broker's append time (``LogAppendTime``): with the
    envelope's ``occurred_at`` it tells how long an event took from its
    transaction to the broker (``sagactl bench`` reads both).
    """
    admin = AdminClient(settings.client_properties())
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if not missing:
        return
    futures = admin.create_topics(
        [
            NewTopic(
                t,
                num_partitions=settings.topic_partitions,
                config={"message.timestamp.type": "LogAppendTime"},
            )
            for t in missing
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    for future in futures.values():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
