"""The consumer runner: applies each event exactly once in effect, or dead-letters it."""

from __future__ import annotations

import enum
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from structlog.contextvars import bound_contextvars

from saga_runtime.backoff import Backoff
from saga_runtime.consumer_health import ConsumerHealth, StatsCallback
from saga_runtime.db import TRANSIENT_DB_ERRORS
from saga_runtime.dead_letters import (
    DeadLetter,
    DeadLetterPublisher,
    DeadLetterPublishError,
    DeadLetterStore,
)
from saga_runtime.envelope import HEADER_EVENT_TYPE, Envelope
from saga_runtime.errors import InvalidEnvelopeError, RetryableError, RetryUntilDoneError
from saga_runtime.faults import crash_point
from saga_runtime.inbox import Inbox, apply_once
from saga_runtime.logs import get_logger
from saga_runtime.settings import ConsumerSettings
from saga_runtime.unit_of_work import UnitOfWork, UnitOfWorkFactory

__all__ = ["ConsumerRunner", "Handler", "Outcome"]

Handler = Callable[[UnitOfWork, Envelope], None]

_TRANSIENT: tuple[type[BaseException], ...] = (*TRANSIENT_DB_ERRORS, DeadLetterPublishError)
# What makes the dead-letter path itself try again later (a full producer queue too).
_DEAD_LETTER_RETRY: tuple[type[BaseException], ...] = (*_TRANSIENT, BufferError, KafkaException)
# Transient, but in a batch a sign of lock-order conflicts between batches.
_CONFLICTS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
# The server ended the transaction because it sat idle too long: the database is up,
# the handler waited too long on something outside it. Retried like a handler's
# RetryableError, within its budget, not for ever like an outage (each attempt may
# have repeated a side effect). In a batch: one message per transaction, to find which.
_IDLE_TIMEOUT = psycopg.errors.IdleInTransactionSessionTimeout

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
    def consume(self, num_messages: int, timeout: float) -> list[Message]: ...
    def store_offsets(self, message: Message) -> None: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def assignment(self) -> list[TopicPartition]: ...
    def close(self) -> None: ...


ConsumerFactory = Callable[[StatsCallback], KafkaConsumer]
"""Makes a new Kafka consumer that reports its librdkafka statistics to the callback."""

_HEALTH_CHECK_INTERVAL = 5.0

# Share of max.poll.interval.ms the runner may spend between two polls (on one
# fetched batch, retry waits included) before it goes back to poll: the rest is
# margin for the one handler call that was running when the share ran out.
_POLL_INTERVAL_SHARE = 0.5


@dataclass
class _Retrying:
    """A message whose handler raised RetryableError: since when, how often, and last when."""

    since: float
    last: float
    attempts: int = 0


class _OneByOne(Exception):
    """A message of the batch needs handling on its own (it failed, or is not an envelope)."""


class _Alone(Exception):
    """The batch starts with a side-effecting message: it goes in a transaction of its own."""


class ConsumerRunner:
    """Polls the service's topics and applies each message exactly once in effect.

    Per message: record the event id in the inbox, run the handler (state
    change plus outbox rows), commit; only then store the offset. A redelivered
    event finds its id in the inbox and has no effect. Transient failures
    (database or broker unavailable) rewind to the message and retry it with
    backoff, for as long as it takes; poison goes to the dead letters and the
    partition moves on.

    Messages already fetched are applied together, up to ``batch_size`` of
    them in one transaction: each has its own inbox record and its own
    handler call, and they commit (or roll back) together, which saves a
    commit per message. If any of them fails, the transaction is rolled back
    and the batch is applied again one message per transaction, so a bad
    message is retried or dead-lettered on its own, exactly as without
    batching.

    Handlers of the event types in ``side_effecting`` act on the outside
    world (send mail, call a webhook) where a rollback cannot undo them: such
    a message is applied in a transaction of its own, after what came before
    it in the batch committed, so no other message's failure can roll it back
    and have it run (and send) again.

    A handler's ``RetryableError`` (a dependency is down) is retried with
    backoff up to ``retry_backoff_max`` for ``retry_for`` from its first
    failure (and at most ``max_attempts`` times, if set); only then is the
    message dead-lettered. Between attempts the runner goes back to poll, so
    it stays in its group however long the outage lasts.

    The runner never spends more than half of ``max_poll_interval_ms``
    between two polls on purpose: once a fetched batch has taken that long,
    it commits what is done, rewinds the rest (it comes again) and polls;
    retry waits are cut short at the same limit. Otherwise slow handlers (a
    provider or carrier taking seconds) could get the consumer evicted from
    its group and its uncommitted work redone by another member.

    A consumer that librdkafka leaves out of its group, or not fetching a
    partition it was assigned, for ``stall_seconds`` is replaced by a new one
    (see ``consumer_health``).
    """

    def __init__(
        self,
        *,
        service: str,
        topics: Sequence[str],
        handlers: Mapping[str, Handler],
        consumer: ConsumerFactory,
        uow_factory: UnitOfWorkFactory,
        inbox: Inbox,
        dead_letters: DeadLetterStore,
        dead_letter_publisher: DeadLetterPublisher,
        settings: ConsumerSettings,
        side_effecting: Collection[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.topics = list(topics)
        self.handlers = dict(handlers)
        unknown = set(side_effecting) - set(self.handlers)
        if unknown:
            raise ValueError(f"side-effecting event types without a handler: {sorted(unknown)}")
        self.side_effecting = frozenset(side_effecting)
        self._clock = clock
        self._new_consumer = consumer
        self._health = ConsumerHealth(stall_after=settings.stall_seconds)
        self._consumer = consumer(self._health.on_stats)
        self._next_health_check = 0.0
        self._uow_factory = uow_factory
        self._inbox = inbox
        self._dead_letters = dead_letters
        self._publisher = dead_letter_publisher
        self._settings = settings
        self._stopping = threading.Event()
        self._retrying: dict[tuple[str, int, int], _Retrying] = {}
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self._poll_budget = settings.max_poll_interval_ms / 1000 * _POLL_INTERVAL_SHARE
        self._polled_at = clock()

    def stop(self) -> None:
        """Ask the loop to finish the current message and leave the group (signal-safe)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def readiness(self, *, grace: float) -> str | None:
        """Why this runner is not ready (None: in its group and fetching), for ``/readyz``.

        Safe from any thread: it reads what the consuming thread last recorded
        (``ConsumerHealth.readiness`` has the rule).
        """
        if self._stopping.is_set():
            return "stopping"
        return self._health.readiness(grace=grace)

    def run(self) -> None:
        """Consume until ``stop``; then commit stored offsets and leave the group cleanly."""
        self._consumer.subscribe(self.topics)
        log.info("consumer.started", topics=self.topics)
        try:
            while not self._stopping.is_set():
                msg = self._consumer.poll(self._settings.poll_timeout)
                self._check_health()
                if msg is None:
                    continue
                crash_point("consumer.polled")
                batch = [msg]
                if self._settings.batch_size > 1:
                    # Whatever else is already fetched; never waits for more.
                    batch += self._consumer.consume(self._settings.batch_size - 1, 0)
                self.process_batch(batch)
        finally:
            self._consumer.close()
            log.info("consumer.stopped")

    def _check_health(self) -> None:
        now = time.monotonic()
        if now < self._next_health_check:
            return
        self._next_health_check = now + _HEALTH_CHECK_INTERVAL
        try:
            assigned = [(tp.topic, tp.partition) for tp in self._consumer.assignment()]
        except KafkaException:
            return
        problem = self._health.stalled(assigned)
        if problem is None:
            return
        log.warning("consumer.stalled", problem=problem, after_seconds=self._settings.stall_seconds)
        self.renew_consumer()

    def renew_consumer(self) -> None:
        """Swap the Kafka consumer for a new one, which joins the group again.

        Only between batches: every message polled so far is applied and its
        offset stored. The old consumer is closed on a thread of its own (its
        stored offsets are committed if it can), so a consumer that cannot even
        close does not hold this one up; what it fails to commit comes again.
        """
        old = self._consumer
        closing = threading.Thread(
            target=old.close, name=f"{self.service}-consumer-close", daemon=True
        )
        closing.start()
        closing.join(timeout=self._settings.session_timeout_ms / 1000)
        if closing.is_alive():
            log.warning("consumer.close_timed_out")
        self._health.reset()
        self._consumer = self._new_consumer(self._health.on_stats)
        self._consumer.subscribe(self.topics)
        log.info("consumer.renewed", topics=self.topics)

    def process_batch(self, msgs: Sequence[Message]) -> list[Outcome | None]:
        """Handle polled messages in one transaction if they all go through, else one by one.

        Called right after a poll: the poll-interval budget starts now. What is
        left when it runs out is rewound, has no outcome in the list, and comes again.
        """
        self._polled_at = self._clock()
        live: list[Message] = []
        for msg in msgs:
            error = msg.error()
            if error is not None:
                self._on_kafka_error(error)
            else:
                live.append(msg)
        results: list[Outcome | None] = []
        while live:
            if len(live) == 1:
                return [*results, self.process(live[0])]
            try:
                outcomes = self._apply_batch(live)
            except _TRANSIENT as exc:
                log.warning("batch.retry_transient", messages=len(live), error=repr(exc))
                self._rewind(*live)
                self._wait(self._backoff.next_delay())
                return [*results, *[Outcome.RETRY] * len(live)]
            except _OneByOne:
                return [*results, *self._one_by_one(live)]
            except _Alone:
                # Its own transaction, retries and dead letter, exactly as a message
                # polled alone: nothing else is in its transaction to fail it.
                outcome = self.process(live[0])
                results.append(outcome)
                if outcome is Outcome.RETRY:
                    # Every partition back to its first message not applied, this one's
                    # included: rewinding only what follows it would seek its own
                    # partition past it, and the next stored offset would skip it.
                    self._rewind(*live)
                    return results
                live = live[1:]
                if live and (self._stopping.is_set() or self._poll_budget_spent()):
                    self._back_to_poll(live)
                    break
                continue
            if not outcomes:  # never expected; a loop that makes no progress would spin
                return [*results, *self._one_by_one(live)]
            self._backoff.reset()
            for msg in live[: len(outcomes)]:
                self._retrying.pop(_position(msg), None)
                self._store(msg)
            results += outcomes
            live = live[len(outcomes) :]
            if live and (self._stopping.is_set() or self._poll_budget_spent()):
                self._back_to_poll(live)
                break
        return results

    def _poll_budget_spent(self) -> bool:
        return self._clock() - self._polled_at >= self._poll_budget

    def _back_to_poll(self, rest: Sequence[Message]) -> None:
        """Leave ``rest`` for later: they come again, to us or to the next owner."""
        if not self._stopping.is_set():
            log.info("batch.back_to_poll", left=len(rest), after_seconds=self._poll_budget)
        self._rewind(*rest)

    def _wait(self, delay: float) -> None:
        """Wait between attempts, but never past the poll-interval budget (nor a stop)."""
        remaining = self._polled_at + self._poll_budget - self._clock()
        self._stopping.wait(max(0.0, min(delay, remaining)))

    def _one_by_one(self, msgs: Sequence[Message]) -> list[Outcome | None]:
        outcomes: list[Outcome | None] = []
        for n, msg in enumerate(msgs):
            outcome = self.process(msg)
            outcomes.append(outcome)
            if outcome is Outcome.RETRY:
                # Neither this message's partition nor the others may run ahead of
                # what was applied: every partition goes back to its first message
                # not yet applied (this one included).
                self._rewind(*msgs[n:])
                break
            if n + 1 < len(msgs) and (self._stopping.is_set() or self._poll_budget_spent()):
                self._back_to_poll(msgs[n + 1 :])
                break
        return outcomes

    def _apply_batch(self, msgs: Sequence[Message]) -> list[Outcome]:
        work: list[tuple[Message, Envelope, Handler] | None] = []
        for msg in msgs:
            event_type = _header(msg, HEADER_EVENT_TYPE)
            if event_type is not None and event_type not in self.handlers:
                work.append(None)  # not ours: no need to even parse it
                continue
            try:
                envelope = Envelope.from_bytes(msg.value())
            except InvalidEnvelopeError:
                raise _OneByOne from None
            if _disagreement(event_type, envelope) is not None:
                raise _OneByOne  # poison: the single-message path dead-letters it
            handler = self.handlers.get(envelope.event_type)
            work.append(None if handler is None else (msg, envelope, handler))
        if work[0] is not None and work[0][1].event_type in self.side_effecting:
            raise _Alone
        outcomes: list[Outcome] = []
        if not any(work):
            return [Outcome.IGNORED] * len(msgs)
        try:
            with self._uow_factory.begin() as uow:
                deadline = self._clock() + self._settings.batch_max_seconds
                for item in work:
                    if outcomes and (self._stopping.is_set() or self._clock() > deadline):
                        # Commit what is done: a slow handler must not hold the
                        # events emitted so far (and their locks) for long.
                        break
                    if item is None:
                        outcomes.append(Outcome.IGNORED)
                        continue
                    msg, envelope, handler = item
                    if envelope.event_type in self.side_effecting:
                        # Commit what came before it (never nothing: a batch that starts
                        # with one raised _Alone); it then goes in a transaction of its own.
                        break
                    with _bound(envelope):
                        outcome = self._apply_in(uow, msg, envelope, handler)
                        log.info(f"event.{outcome.value}")
                    outcomes.append(outcome)
        except (*_CONFLICTS, _IDLE_TIMEOUT) as exc:
            # Several consumers' batches, each holding some orders' and products'
            # locks, can deadlock one another. Alone, a message takes its locks in
            # one consistent order, so one transaction per message cannot.
            log.info("batch.one_by_one", messages=len(msgs), error=repr(exc))
            raise _OneByOne from exc
        except _TRANSIENT:
            raise
        except Exception as exc:
            log.info("batch.one_by_one", messages=len(msgs), error=repr(exc))
            raise _OneByOne from exc
        log.info(
            "batch.applied",
            messages=len(msgs),
            applied=outcomes.count(Outcome.APPLIED),
            duplicates=outcomes.count(Outcome.DUPLICATE),
        )
        return outcomes

    def _store(self, msg: Message) -> None:
        try:
            self._consumer.store_offsets(message=msg)
        except KafkaException as exc:
            # The partition was revoked meanwhile; its new owner will see the
            # message again and the inbox makes that harmless.
            log.warning("consumer.store_offset_failed", error=str(exc))

    def process(self, msg: Message) -> Outcome | None:
        """Handle one polled message, then store its offset or rewind to it."""
        error = msg.error()
        if error is not None:
            self._on_kafka_error(error)
            return None
        outcome = self.handle(msg)
        if outcome is Outcome.RETRY:
            self._rewind(msg)
            retrying = self._retrying.get(_position(msg))
            if retrying is not None and retrying.attempts:
                self._wait(self._retry_delay(retrying.attempts))
            else:
                self._wait(self._backoff.next_delay())
            return outcome
        self._backoff.reset()
        self._retrying.pop(_position(msg), None)
        self._store(msg)
        return outcome

    def _retry_delay(self, attempts: int) -> float:
        """Backoff after a handler's n-th RetryableError: doubling, capped, with jitter."""
        initial, cap = self._settings.backoff_initial, self._settings.retry_backoff_max
        delay: float = min(initial * 2.0 ** min(attempts - 1, 30), cap)
        return delay * random.uniform(0.8, 1.0)

    def handle(self, msg: Message) -> Outcome:
        """Apply one message in one transaction; never raises for a bad message.

        Judged by the same rule as in a batch: a message whose ``event_type``
        header names a type this service does not handle is skipped unparsed, and
        one whose header and body disagree is poison.
        """
        event_type = _header(msg, HEADER_EVENT_TYPE)
        if event_type is not None and event_type not in self.handlers:
            log.debug("event.ignored", event_type=event_type)
            return Outcome.IGNORED
        try:
            envelope = Envelope.from_bytes(msg.value())
        except InvalidEnvelopeError as exc:
            return self._dead_letter(msg, exc, None)
        disagreement = _disagreement(event_type, envelope)
        if disagreement is not None:
            return self._dead_letter(msg, disagreement, envelope)
        with _bound(envelope):
            handler = self.handlers.get(envelope.event_type)
            if handler is None:
                log.debug("event.ignored")
                return Outcome.IGNORED
            try:
                outcome = self._apply(msg, envelope, handler)
            except RetryUntilDoneError as exc:
                # A step that must happen (a refund): no budget, like an outage.
                retrying = self._count_attempt(msg)
                log.warning(
                    "event.retry",
                    attempt=retrying.attempts,
                    failing_for=round(self._clock() - retrying.since, 3),
                    budget="none",
                    error=str(exc),
                )
                return Outcome.RETRY
            except _IDLE_TIMEOUT as exc:
                return self._retry_or_dead_letter(msg, exc, envelope)
            except _TRANSIENT as exc:
                log.warning("event.retry_transient", error=repr(exc))
                return Outcome.RETRY
            except RetryableError as exc:
                return self._retry_or_dead_letter(msg, exc, envelope)
            except Exception as exc:
                self._count_attempt(msg)
                return self._dead_letter(msg, exc, envelope)
            log.info(f"event.{outcome.value}")
            return outcome

    def _retry_or_dead_letter(
        self, msg: Message, exc: BaseException, envelope: Envelope
    ) -> Outcome:
        """RETRY while the message's retry budget lasts, then dead-letter it."""
        retrying = self._count_attempt(msg)
        failing_for = self._clock() - retrying.since
        if self._retry_budget_spent(retrying, failing_for):
            return self._dead_letter(msg, exc, envelope)
        log.warning(
            "event.retry",
            attempt=retrying.attempts,
            failing_for=round(failing_for, 3),
            error=str(exc),
        )
        return Outcome.RETRY

    def _apply(self, msg: Message, envelope: Envelope, handler: Handler) -> Outcome:
        with self._uow_factory.begin(cause=envelope) as uow:
            return self._apply_in(uow, msg, envelope, handler)

    def _apply_in(
        self, uow: UnitOfWork, msg: Message, envelope: Envelope, handler: Handler
    ) -> Outcome:
        """Inbox record, then the handler, inside ``uow``'s transaction (see ``apply_once``)."""
        first_time = apply_once(
            self._inbox,
            uow,
            envelope,
            handler,
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
        )
        return Outcome.APPLIED if first_time else Outcome.DUPLICATE

    def _retry_budget_spent(self, retrying: _Retrying, failing_for: float) -> bool:
        settings = self._settings
        if settings.max_attempts is not None and retrying.attempts >= settings.max_attempts:
            return True
        return failing_for >= settings.retry_for

    def _dead_letter(self, msg: Message, exc: BaseException, envelope: Envelope | None) -> Outcome:
        """Store the message and its reason, copy it to the topic; RETRY if either fails.

        Never raises: a failure here is retried (the table insert is idempotent
        by source position), and what the table cannot hold as it is is stored
        reduced (``DeadLetterStore.add``).
        """
        error = str(exc) or repr(exc)
        try:
            headers = _headers(msg)
        except Exception as header_exc:  # the client could not decode them
            headers = []
            error += f" [headers unreadable: {header_exc!r}]"
        retrying = self._retrying.get(_position(msg))
        letter = DeadLetter(
            source_topic=msg.topic() or "",
            source_partition=msg.partition() or 0,
            source_offset=msg.offset() or 0,
            key=msg.key(),
            value=msg.value(),
            headers=[(str(k), _header_bytes(v)) for k, v in headers],
            error_type=type(exc).__name__,
            error=error,
            attempts=max(1, retrying.attempts if retrying else 1),
            event_id=str(envelope.event_id) if envelope else None,
            event_type=envelope.event_type if envelope else None,
            aggregate_id=envelope.aggregate_id if envelope else None,
        )
        try:
            with self._uow_factory.pool.connection() as conn, conn.transaction():
                self._dead_letters.add(conn, letter)
            self._publisher.publish(letter)
        except _DEAD_LETTER_RETRY as retry_exc:
            log.warning("event.dead_letter_retry", error=repr(retry_exc))
            return Outcome.RETRY
        except Exception as failure:
            # Not even a reduced row could be written (the table is missing, a
            # permission was revoked...): keep the message and retry, loudly.
            log.error("event.dead_letter_failed", error=repr(failure), exc_info=failure)
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

    def _count_attempt(self, msg: Message) -> _Retrying:
        now = self._clock()
        retrying = self._retrying.get(_position(msg))
        # A record not touched for longer than any wait between attempts is from before
        # the partition went to another consumer and came back: its budget starts again.
        stale_after = 2 * self._settings.retry_backoff_max + self._poll_budget * 2
        if retrying is None or now - retrying.last > stale_after:
            retrying = self._retrying[_position(msg)] = _Retrying(since=now, last=now)
        retrying.attempts += 1
        retrying.last = now
        return retrying

    def _rewind(self, *msgs: Message) -> None:
        """Seek each partition back to the first of ``msgs`` on it (they come again)."""
        first: dict[tuple[str, int], int] = {}
        for msg in msgs:
            topic, partition, offset = _position(msg)
            first[(topic, partition)] = min(offset, first.get((topic, partition), offset))
        for (topic, partition), offset in first.items():
            try:
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


def _bound(envelope: Envelope) -> Any:
    """Log lines inside carry the event's identity."""
    return bound_contextvars(
        event_id=str(envelope.event_id),
        event_type=envelope.event_type,
        order_id=envelope.aggregate_id,
        correlation_id=str(envelope.correlation_id),
    )


def _disagreement(header_type: str | None, envelope: Envelope) -> InvalidEnvelopeError | None:
    """A header that names another type than the body: the message cannot be trusted."""
    if header_type is None or header_type == envelope.event_type:
        return None
    return InvalidEnvelopeError(
        f"event_type header {header_type!r} disagrees with the envelope's {envelope.event_type!r}"
    )


def _header(msg: Message, name: str) -> str | None:
    try:
        headers = _headers(msg)
    except Exception:  # undecodable headers: the value decides (and is likely poison)
        return None
    for key, value in headers:
        if key == name and value is not None:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


def _header_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")


def _headers(msg: Message) -> list[tuple[str, Any]]:
    headers = msg.headers() or []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)
