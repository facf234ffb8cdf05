"""Dead letters: poison messages kept with their reason and original bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from confluent_kafka import Producer
from psycopg import sql

from saga_runtime.errors import SagaRuntimeError
from saga_runtime.naming import validate_service_name

__all__ = [
    "DeadLetter",
    "DeadLetterPublishError",
    "DeadLetterPublisher",
    "DeadLetterStore",
    "KafkaDeadLetterPublisher",
]


@dataclass(frozen=True)
class DeadLetter:
    """A message the consumer gave up on, and why."""

    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    error_type: str
    error: str
    attempts: int
    event_id: str | None = None
    event_type: str | None = None
    aggregate_id: str | None = None

    def kafka_headers(self, service: str) -> list[tuple[str, str | bytes | None]]:
        """Original headers plus the reason, so the topic alone tells the story."""
        return [
            *self.headers,
            ("dlq.service", service.encode()),
            ("dlq.source_topic", self.source_topic.encode()),
            ("dlq.source_partition", str(self.source_partition).encode()),
            ("dlq.source_offset", str(self.source_offset).encode()),
            ("dlq.error_type", self.error_type.encode()),
            ("dlq.error", self.error[:4000].encode()),
            ("dlq.attempts", str(self.attempts).encode()),
        ]


class DeadLetterStore:
    """The ``dead_letters`` table of one service (what operators inspect and redrive)."""

    def __init__(self, *, schema: str) -> None:
        self.schema = validate_service_name(schema)
        self._insert = sql.SQL(
            "INSERT INTO {}.dead_letters (source_topic, source_partition, source_offset,"
            " message_key, message_value, headers, error_type, error, attempts, event_id,"
            " event_type, aggregate_id)"
            " VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (source_topic, source_partition, source_offset) DO NOTHING"
        ).format(sql.Identifier(self.schema))

    def add(self, conn: psycopg.Connection, letter: DeadLetter) -> None:
        """Insert once: a redelivered poison message does not make a second row."""
        headers: list[dict[str, Any]] = [
            {"key": k, "value": v.decode("utf-8", "replace") if v is not None else None}
            for k, v in letter.headers
        ]
        conn.execute(
            self._insert,
            (
                letter.source_topic,
                letter.source_partition,
                letter.source_offset,
                letter.key,
                letter.value,
                json.dumps(headers),
                letter.error_type,
                letter.error,
                letter.attempts,
                letter.event_id,
                letter.event_type,
                letter.aggregate_id,
            ),
        )


class DeadLetterPublisher(Protocol):
    def publish(self, letter: DeadLetter) -> None: ...


class KafkaDeadLetterPublisher:
    """Copies dead letters to the service's dead-letter topic.

    The table is the record operators work from; the topic lets other tools
    subscribe. ``publish`` returns only once the broker acknowledged, and
    raises if it did not, so the consumer retries instead of moving on.
    """

    def __init__(self, producer: Producer, *, topic: str, service: str, timeout: float = 10.0):
        self._producer = producer
        self._topic = topic
        self._service = service
        self._timeout = timeout

    def publish(self, letter: DeadLetter) -> None:
        errors: list[Any] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(err)

        self._producer.produce(
            self._topic,
            key=letter.key,
            value=letter.value,
            headers=letter.kafka_headers(self._service),
            on_delivery=on_delivery,
        )
        remaining = self._producer.flush(self._timeout)
        if remaining or errors:
            raise DeadLetterPublishError(
                f"dead letter not acknowledged by the broker: {errors or 'timeout'}"
            )

    def close(self) -> None:
        self._producer.flush(self._timeout)


class DeadLetterPublishError(SagaRuntimeError):
    """The broker did not take the dead letter; the message will be retried."""
