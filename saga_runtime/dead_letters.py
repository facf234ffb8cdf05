"""Dead letters: poison messages kept with their reason and original bytes.

Whatever a poison message holds (NUL characters, bytes that are not UTF-8, a
huge value), the dead-letter path must store it: it is the last stop, and an
error raised here would stop the consumer instead of moving its partition on.
Key and value go to ``bytea`` columns as they are. Headers go to a ``jsonb``
list, one object per header:

- ``{"key": "<text>", "value": "<text>"}`` (or ``"value": null``) when the
  bytes are UTF-8 text PostgreSQL can hold (no NUL): the text is the bytes;
- otherwise the part that cannot be held as text is stored base64 under a
  marker name instead: ``"key_base64"`` (the key's UTF-8 bytes, surrogates
  passed through) and ``"value_base64"`` (the exact value bytes).

Rows written before the markers existed only ever have ``key`` and ``value``,
so both kinds read the same way (``header_from_stored``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import psycopg
from confluent_kafka import KafkaError, KafkaException, Producer
from psycopg import sql

from saga_runtime.db import TRANSIENT_DB_ERRORS
from saga_runtime.envelope import unstorable_text
from saga_runtime.errors import SagaRuntimeError
from saga_runtime.logs import get_logger
from saga_runtime.naming import validate_service_name

__all__ = [
    "DeadLetter",
    "DeadLetterPublishError",
    "DeadLetterPublisher",
    "DeadLetterStore",
    "KafkaDeadLetterPublisher",
    "header_from_stored",
    "header_to_stored",
    "storable_text",
]

log = get_logger(__name__)

# An error message is kept whole up to this length (a reason, not a payload).
_ERROR_MAX_CHARS = 10_000


def storable_text(text: str) -> str:
    """``text`` with what PostgreSQL cannot store spelled out (``\\x00``, ``\\udc80``)."""
    text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _exact_text(data: bytes) -> str | None:
    """The bytes as a text that stores and reads back as exactly these bytes, or None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def header_to_stored(key: str, value: bytes | None, *, binary: bool = False) -> dict[str, Any]:
    """One header as its ``jsonb`` object: text when exact, base64 under a marker otherwise.

    ``binary`` stores both parts base64 whatever they hold (the reduced row).
    """
    stored: dict[str, Any] = {}
    if not binary and unstorable_text(key) is None:
        stored["key"] = key
    else:
        stored["key_base64"] = _b64(key.encode("utf-8", "surrogatepass"))
    if value is None:
        stored["value"] = None
    elif not binary and (text := _exact_text(value)) is not None:
        stored["value"] = text
    else:
        stored["value_base64"] = _b64(value)
    return stored


def header_from_stored(stored: dict[str, Any]) -> tuple[str, bytes | None]:
    """The original (key, value bytes) of a stored header (see the module's docstring)."""
    if "key_base64" in stored:
        key = base64.b64decode(stored["key_base64"]).decode("utf-8", "surrogatepass")
    else:
        key = str(stored.get("key"))
    if "value_base64" in stored:
        return key, base64.b64decode(stored["value_base64"])
    value = stored.get("value")
    return key, None if value is None else str(value).encode("utf-8")


@dataclass(frozen=True)
class DeadLetter:
    """A message the consumer gave up on, and why."""

    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    error_type: str
    error: str
    attempts: int
    event_id: str | None = None
    event_type: str | None = None
    aggregate_id: str | None = None

    def kafka_headers(self, service: str) -> list[tuple[str, str | bytes | None]]:
        """Original headers plus the reason, so the topic alone tells the story."""
        return [*self.headers, *self.reason_headers(service)]

    def reason_headers(self, service: str) -> list[tuple[str, str | bytes | None]]:
        """Where the letter comes from and why it is one (the ``dlq.*`` headers)."""
        return [
            ("dlq.service", service.encode()),
            ("dlq.source_topic", self.source_topic.encode()),
            ("dlq.source_partition", str(self.source_partition).encode()),
            ("dlq.source_offset", str(self.source_offset).encode()),
            ("dlq.error_type", self.error_type.encode("utf-8", "backslashreplace")),
            ("dlq.error", self.error[:4000].encode("utf-8", "backslashreplace")),
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

    def add(self, conn: psycopg.Connection, letter: DeadLetter) -> str | None:
        """Insert once: a redelivered poison message does not make a second row.

        Raises only what says the database is unavailable (the caller retries).
        If the row cannot be written as it is, a reduced row is written instead:
        the same key and value bytes, every header base64, no event fields, and
        an error that says why; the reason is returned (None: stored as it is).
        """
        try:
            with conn.transaction():
                conn.execute(self._insert, self._params(letter, reduced=False))
            return None
        except TRANSIENT_DB_ERRORS:
            raise
        except (psycopg.Error, UnicodeError, ValueError) as exc:
            why = f"the full row was refused: {type(exc).__name__}: {exc}"
        log.warning("dead_letter.reduced", reason=storable_text(why))
        reduced = replace(
            letter,
            error=f"{letter.error} [stored reduced, {why}]",
            event_id=None,
            event_type=None,
            aggregate_id=None,
        )
        with conn.transaction():
            conn.execute(self._insert, self._params(reduced, reduced=True))
        return why

    def _params(self, letter: DeadLetter, *, reduced: bool) -> Sequence[Any]:
        headers = [header_to_stored(k, v, binary=reduced) for k, v in letter.headers]
        return (
            letter.source_topic,
            letter.source_partition,
            letter.source_offset,
            letter.key,
            letter.value,
            json.dumps(headers),
            storable_text(letter.error_type),
            storable_text(letter.error[:_ERROR_MAX_CHARS]),
            letter.attempts,
            letter.event_id,
            None if letter.event_type is None else storable_text(letter.event_type),
            None if letter.aggregate_id is None else storable_text(letter.aggregate_id),
        )


class DeadLetterPublisher(Protocol):
    def publish(self, letter: DeadLetter) -> None: ...


class KafkaDeadLetterPublisher:
    """Copies dead letters to the service's dead-letter topic.

    The table is the record operators work from; the topic lets other tools
    subscribe. ``publish`` returns only once the broker acknowledged, and
    raises ``DeadLetterPublishError`` if it did not (a full local queue, a
    broker out of reach, a refused delivery), so the consumer retries instead
    of moving on. A copy the broker can never take as it is (too large, or
    headers the client cannot encode) is sent reduced: no value and no
    original headers, the ``dlq.*`` reason headers and ``dlq.reduced`` saying
    why; the table keeps every byte.
    """

    def __init__(self, producer: Producer, *, topic: str, service: str, timeout: float = 10.0):
        self._producer = producer
        self._topic = topic
        self._service = service
        self._timeout = timeout

    def publish(self, letter: DeadLetter) -> None:
        try:
            self._send(letter.key, letter.value, letter.kafka_headers(self._service))
        except _Refused as refused:
            log.warning("dead_letter.copy_reduced", reason=refused.reason)
            key = letter.key if letter.key is None or len(letter.key) <= _REDUCED_KEY_MAX else None
            headers = [
                *letter.reason_headers(self._service),
                ("dlq.reduced", f"{refused.reason}; the full message is in the table".encode()),
            ]
            try:
                self._send(key, None, headers)
            except _Refused as again:
                raise DeadLetterPublishError(f"reduced copy refused too: {again.reason}") from None

    def _send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, str | bytes | None]]
    ) -> None:
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors.append(err)

        try:
            self._producer.produce(
                self._topic, key=key, value=value, headers=headers, on_delivery=on_delivery
            )
        except BufferError as exc:
            # The local queue is full (the broker has been out of reach for a while).
            self._producer.poll(0)
            raise DeadLetterPublishError(f"dead-letter producer queue full: {exc}") from exc
        except KafkaException as exc:
            if _too_large(exc.args[0] if exc.args else None):
                raise _Refused(f"the client refused the copy: {exc}") from exc
            raise DeadLetterPublishError(f"dead-letter produce failed: {exc}") from exc
        except (TypeError, ValueError) as exc:  # UnicodeError too: headers it cannot encode
            raise _Refused(f"the client cannot encode the copy: {exc}") from exc
        try:
            remaining = self._producer.flush(self._timeout)
        except KafkaException as exc:
            raise DeadLetterPublishError(f"dead-letter flush failed: {exc}") from exc
        if errors and _too_large(errors[0]):
            raise _Refused(f"the broker refused the copy: {errors[0]}")
        if remaining or errors:
            raise DeadLetterPublishError(
                f"dead letter not acknowledged by the broker: {errors or 'timeout'}"
            )

    def close(self) -> None:
        try:
            self._producer.flush(self._timeout)
        except KafkaException as exc:
            log.warning("dead_letter.close_failed", error=str(exc))


# A reduced copy keeps the key (the aggregate id, usually) unless it is itself the problem.
_REDUCED_KEY_MAX = 1024

_SIZE_ERRORS = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE}


def _too_large(error: object) -> bool:
    return isinstance(error, KafkaError) and error.code() in _SIZE_ERRORS


class _Refused(Exception):
    """The copy can never be delivered as it is (not a transient failure)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeadLetterPublishError(SagaRuntimeError):
    """The broker did not take the dead letter; the message will be retried."""
