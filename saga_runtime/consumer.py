"""The consumer runner: applies each event exactly once in effect, or dead-letters it."""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from structlog.contextvars import bound_contextvars

from saga_runtime.backoff import Backoff
from saga_runtime.db import TRANSIENT_DB_ERRORS
from saga_runtime.dead_letters import (
    DeadLetter,
    DeadLetterPublisher,
    DeadLetterPublishError,
    DeadLetterStore,
)
from saga_runtime.envelope import Envelope
from saga_runtime.errors import InvalidEnvelopeError, RetryableError
from saga_runtime.inbox import Inbox
from saga_runtime.logs import get_logger
from saga_runtime.settings import ConsumerSettings
from saga_runtime.unit_of_work import UnitOfWork, UnitOfWorkFactory

__all__ = ["ConsumerRunner", "Handler", "Outcome"]

Handler = Callable[[UnitOfWork, Envelope], None]

_TRANSIENT: tuple[type[BaseException], ...] = (*TRANSIENT_DB_ERRORS, DeadLetterPublishError)

log = get_logger(__name__)


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"  # an event type this service does not handle
    DEAD_LETTERED = "dead_lettered"
    RETRY = "retry"  # not processed; the same message must come again


class KafkaConsumer(Protocol):
    """The part of confluent_kafka.Consumer the runner uses (fakes implement it in unit tests)."""

    def subscribe(self, topics: list[str]) -> None: ...
    def poll(self, timeout: float) -> Message | None: ...
    def store_offsets(self, message: Message) -> None: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def close(self) -> None: ...


class ConsumerRunner:
    """Polls the service's topics and applies each message in one transaction.

    Per message: record the event id in the inbox, run the handler (state
    change plus outbox rows), commit; only then store the offset. A redelivered
    event finds its id in the inbox and has no effect. Transient failures
    (database or broker unavailable) rewind to the message and retry it with
    backoff, for as long as it takes; poison goes to the dead letters and the
    partition moves on.
    """

    def __init__(
        self,
        *,
        service: str,
        topics: Sequence[str],
        handlers: Mapping[str, Handler],
        consumer: KafkaConsumer,
        uow_factory: UnitOfWorkFactory,
        inbox: Inbox,
        dead_letters: DeadLetterStore,
        dead_letter_publisher: DeadLetterPublisher,
        settings: ConsumerSettings,
    ) -> None:
        self.service = service
        self.topics = list(topics)
        self.handlers = dict(handlers)
        self._consumer = consumer
        self._uow_factory = uow_factory
        self._inbox = inbox
        self._dead_letters = dead_letters
        self._publisher = dead_letter_publisher
        self._settings = settings
        self._stopping = threading.Event()
        self._attempts: dict[tuple[str, int, int], int] = {}
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max)

    def stop(self) -> None:
        """Ask the loop to finish the current message and leave the group (signal-safe)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> None:
        """Consume until ``stop``; then commit stored offsets and leave the group cleanly."""
        self._consumer.subscribe(self.topics)
        log.info("consumer.started", topics=self.topics)
        try:
            while not self._stopping.is_set():
                msg = self._consumer.poll(self._settings.poll_timeout)
                if msg is None:
                    continue
                self.process(msg)
        finally:
            self._consumer.close()
            log.info("consumer.stopped")

    def process(self, msg: Message) -> Outcome | None:
        """Handle one polled message, then store its offset or rewind to it."""
        error = msg.error()
        if error is not None:
            self._on_kafka_error(error)
            return None
        outcome = self.handle(msg)
        if outcome is Outcome.RETRY:
            self._rewind(msg)
            self._stopping.wait(self._backoff.next_delay())
            return outcome
        self._backoff.reset()
        self._attempts.pop(_position(msg), None)
        try:
            self._consumer.store_offsets(message=msg)
        except KafkaException as exc:
            # The partition was revoked meanwhile; its new owner will see the
            # message again and the inbox makes that harmless.
            log.warning("consumer.store_offset_failed", error=str(exc))
        return outcome

    def handle(self, msg: Message) -> Outcome:
        """Apply one message in one transaction; never raises for a bad message."""
        try:
            envelope = Envelope.from_bytes(msg.value())
        except InvalidEnvelopeError as exc:
            return self._dead_letter(msg, exc, None)
        with bound_contextvars(
            event_id=str(envelope.event_id),
            event_type=envelope.event_type,
            order_id=envelope.aggregate_id,
            correlation_id=str(envelope.correlation_id),
        ):
            handler = self.handlers.get(envelope.event_type)
            if handler is None:
                log.debug("event.ignored")
                return Outcome.IGNORED
            try:
                outcome = self._apply(msg, envelope, handler)
            except _TRANSIENT as exc:
                log.warning("event.retry_transient", error=repr(exc))
                return Outcome.RETRY
            except RetryableError as exc:
                attempts = self._count_attempt(msg)
                if attempts < self._settings.max_attempts:
                    log.warning("event.retry", attempt=attempts, error=str(exc))
                    return Outcome.RETRY
                return self._dead_letter(msg, exc, envelope)
            except Exception as exc:
                self._count_attempt(msg)
                return self._dead_letter(msg, exc, envelope)
            log.info(f"event.{outcome.value}")
            return outcome

    def _apply(self, msg: Message, envelope: Envelope, handler: Handler) -> Outcome:
        with self._uow_factory.begin(cause=envelope) as uow:
            first_time = self._inbox.record(
                uow.conn,
                envelope,
                topic=msg.topic(),
                partition=msg.partition(),
                offset=msg.offset(),
            )
            if not first_time:
                return Outcome.DUPLICATE
            handler(uow, envelope)
        return Outcome.APPLIED

    def _dead_letter(self, msg: Message, exc: BaseException, envelope: Envelope | None) -> Outcome:
        letter = DeadLetter(
            source_topic=msg.topic() or "",
            source_partition=msg.partition() or 0,
            source_offset=msg.offset() or 0,
            key=msg.key(),
            value=msg.value(),
            headers=[
                (k, v if isinstance(v, bytes) else (v or "").encode()) for k, v in _headers(msg)
            ],
            error_type=type(exc).__name__,
            error=str(exc) or repr(exc),
            attempts=max(1, self._attempts.get(_position(msg), 1)),
            event_id=str(envelope.event_id) if envelope else None,
            event_type=envelope.event_type if envelope else None,
            aggregate_id=envelope.aggregate_id if envelope else None,
        )
        try:
            with self._uow_factory.pool.connection() as conn, conn.transaction():
                self._dead_letters.add(conn, letter)
            self._publisher.publish(letter)
        except _TRANSIENT as retry_exc:
            log.warning("event.dead_letter_retry", error=repr(retry_exc))
            return Outcome.RETRY
        log.error(
            "event.dead_lettered",
            error_type=letter.error_type,
            error=letter.error,
            topic=letter.source_topic,
            partition=letter.source_partition,
            offset=letter.source_offset,
            exc_info=exc if not isinstance(exc, InvalidEnvelopeError) else None,
        )
        return Outcome.DEAD_LETTERED

    def _count_attempt(self, msg: Message) -> int:
        key = _position(msg)
        self._attempts[key] = self._attempts.get(key, 0) + 1
        return self._attempts[key]

    def _rewind(self, msg: Message) -> None:
        try:
            topic, partition, offset = _position(msg)
            self._consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:
            log.warning("consumer.seek_failed", error=str(exc))

    def _on_kafka_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        # Broker down, topic not created yet...: librdkafka recovers by itself.
        log.warning("consumer.kafka_error", error=str(error))


def _position(msg: Message) -> tuple[str, int, int]:
    return (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)


def _headers(msg: Message) -> list[tuple[str, Any]]:
    headers = msg.headers() or []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)
