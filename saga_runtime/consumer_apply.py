"""Applying polled messages: judge each, then inbox record and handler in one transaction.

This is the database side of the consumer runner; the runner (``consumer``)
does the Kafka side: polling, storing offsets, rewinding, waiting.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import Message
from structlog.contextvars import bound_contextvars

from saga_runtime import tracing
from saga_runtime.consumer_dead_letter import DeadLettering
from saga_runtime.consumer_messages import header
from saga_runtime.consumer_retry import CONFLICTS, IDLE_TIMEOUT, TRANSIENT, RetryBudget
from saga_runtime.envelope import HEADER_EVENT_TYPE, HEADER_TRACEPARENT, Envelope
from saga_runtime.errors import (
    ForgedEventError,
    InvalidEnvelopeError,
    RetryableError,
    RetryUntilDoneError,
)
from saga_runtime.inbox import Inbox, apply_once
from saga_runtime.logs import get_logger
from saga_runtime.settings import ConsumerSettings
from saga_runtime.unit_of_work import UnitOfWork, UnitOfWorkFactory

__all__ = ["Alone", "Handler", "MessageApplier", "OneByOne", "Outcome"]

Handler = Callable[[UnitOfWork, Envelope], None]

log = get_logger(__name__)


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"  # an event type this service does not handle
    DEAD_LETTERED = "dead_lettered"
    RETRY = "retry"  # not processed; the same message must come again


class OneByOne(Exception):
    """A message of the batch needs handling on its own (it failed, or is not an envelope)."""


class Alone(Exception):
    """The batch starts with a side-effecting message: it goes in a transaction of its own."""


class MessageApplier:
    """Applies one message, or a batch of them, and says what came of each.

    A message is judged by one rule alone and in a batch: an ``event_type``
    header naming a type the service does not handle is skipped unparsed, and
    a header that disagrees with the body is poison, and so is an event read
    from another topic than the one ``sources`` names for its type (forged). A
    handler's failure is classified here: an outage is retried for ever, a ``RetryableError``
    within its budget (``RetryBudget``), anything else is dead-lettered.
    """

    def __init__(
        self,
        *,
        handlers: Mapping[str, Handler],
        side_effecting: frozenset[str],
        uow_factory: UnitOfWorkFactory,
        inbox: Inbox,
        retries: RetryBudget,
        dead_lettering: DeadLettering,
        settings: ConsumerSettings,
        stopping: threading.Event,
        clock: Callable[[], float],
        sources: Mapping[str, str] | None = None,
    ) -> None:
        self._handlers = handlers
        # Event type -> the one topic it may come from (None: no check, as for a runtime
        # built without a declared system).
        self._sources = sources
        self._side_effecting = side_effecting
        self._uow_factory = uow_factory
        self._service = uow_factory.producer  # names the consuming service in its spans
        self._inbox = inbox
        self._retries = retries
        self._dead_lettering = dead_lettering
        self._settings = settings
        self._stopping = stopping
        self._clock = clock

    def handle(self, msg: Message) -> Outcome:
        """Apply one message in one transaction; never raises for a bad message.

        Judged by the same rule as in a batch: a message whose ``event_type``
        header names a type this service does not handle is skipped unparsed, and
        one whose header and body disagree is poison.
        """
        event_type = header(msg, HEADER_EVENT_TYPE)
        if event_type is not None and event_type not in self._handlers:
            log.debug("event.ignored", event_type=event_type)
            return Outcome.IGNORED
        try:
            envelope = Envelope.from_bytes(msg.value())
        except InvalidEnvelopeError as exc:
            return self._dead_letter(msg, exc, None)
        disagreement = _disagreement(event_type, envelope) or self._forged(msg, envelope)
        if disagreement is not None:
            return self._dead_letter(msg, disagreement, envelope)
        with _bound(envelope):
            handler = self._handlers.get(envelope.event_type)
            if handler is None:
                log.debug("event.ignored")
                return Outcome.IGNORED
            try:
                with _consuming(self._service, msg, envelope):
                    outcome = self._apply(msg, envelope, handler)
                    log.info(f"event.{outcome.value}")  # in the span: it carries its ids
            except RetryUntilDoneError as exc:
                # A step that must happen (a compensation): no budget, like an outage.
                retrying = self._retries.count_attempt(msg)
                log.warning(
                    "event.retry",
                    attempt=retrying.attempts,
                    failing_for=round(self._clock() - retrying.since, 3),
                    budget="none",
                    error=str(exc),
                )
                return Outcome.RETRY
            except IDLE_TIMEOUT as exc:
                return self._retry_or_dead_letter(msg, exc, envelope)
            except TRANSIENT as exc:
                log.warning("event.retry_transient", error=repr(exc))
                return Outcome.RETRY
            except RetryableError as exc:
                return self._retry_or_dead_letter(msg, exc, envelope)
            except Exception as exc:
                self._retries.count_attempt(msg)
                return self._dead_letter(msg, exc, envelope)
            return outcome

    def apply_batch(self, msgs: Sequence[Message]) -> list[Outcome]:
        """Apply a prefix of ``msgs`` in one transaction; their outcomes, in order.

        Raises ``OneByOne`` when the batch must be applied one message per
        transaction instead (nothing of it committed), ``Alone`` when its first
        message is side-effecting, and the transient errors (an outage) as they are.
        """
        work: list[tuple[Message, Envelope, Handler] | None] = []
        for msg in msgs:
            event_type = header(msg, HEADER_EVENT_TYPE)
            if event_type is not None and event_type not in self._handlers:
                work.append(None)  # not ours: no need to even parse it
                continue
            try:
                envelope = Envelope.from_bytes(msg.value())
            except InvalidEnvelopeError:
                raise OneByOne from None
            if _disagreement(event_type, envelope) or self._forged(msg, envelope):
                raise OneByOne  # poison: the single-message path dead-letters it
            handler = self._handlers.get(envelope.event_type)
            work.append(None if handler is None else (msg, envelope, handler))
        if work[0] is not None and work[0][1].event_type in self._side_effecting:
            raise Alone
        outcomes: list[Outcome] = []
        if not any(work):
            return [Outcome.IGNORED] * len(msgs)
        try:
            with self._uow_factory.begin() as uow:
                fresh = self._record(uow, [item for item in work if item is not None])
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
                    if envelope.event_type in self._side_effecting:
                        # Commit what came before it (never nothing: a batch that starts
                        # with one raised Alone); it then goes in a transaction of its own.
                        break
                    if envelope.event_id not in fresh:
                        with _bound(envelope):  # rare and worth seeing: a redelivery, a replay
                            log.info("event.duplicate")
                        outcomes.append(Outcome.DUPLICATE)
                        continue
                    fresh.discard(envelope.event_id)  # a second copy in the batch is a duplicate
                    with _bound(envelope), _consuming(self._service, msg, envelope):
                        uow.cause = envelope
                        _traced(handler)(uow, envelope)
                        log.debug("event.applied")
                    outcomes.append(Outcome.APPLIED)
                # Those left for later were recorded but not applied: they come again.
                self._inbox.forget(uow.conn, sorted(fresh))
        except (*CONFLICTS, IDLE_TIMEOUT) as exc:
            # Several consumers' batches, each holding some aggregates' locks, can
            # deadlock one another. Alone, a message takes its locks in one
            # consistent order, so one transaction per message cannot.
            log.info("batch.one_by_one", messages=len(msgs), error=repr(exc))
            raise OneByOne from exc
        except TRANSIENT:
            raise
        except Exception as exc:
            log.info("batch.one_by_one", messages=len(msgs), error=repr(exc))
            raise OneByOne from exc
        log.info(
            "batch.applied",
            messages=len(msgs),
            applied=outcomes.count(Outcome.APPLIED),
            duplicates=outcomes.count(Outcome.DUPLICATE),
        )
        return outcomes

    def _record(self, uow: UnitOfWork, work: list[tuple[Message, Envelope, Handler]]) -> set[Any]:
        """The batch's inbox records and its aggregates' locks, in one statement; the ids new."""
        fresh = self._inbox.record_many(
            uow.conn,
            [(envelope, msg.topic(), msg.partition(), msg.offset()) for msg, envelope, _ in work],
            lock_keys=[uow.outbox.lock_key(envelope.aggregate_id) for _, envelope, _ in work],
        )
        uow.locked.update(envelope.aggregate_id for _, envelope, _ in work)
        return fresh

    def _forged(self, msg: Message, envelope: Envelope) -> ForgedEventError | None:
        """An event of a handled type read from another topic than its producer's."""
        if self._sources is None:
            return None
        source = self._sources.get(envelope.event_type)
        if source is None or source == msg.topic():
            return None
        return ForgedEventError(
            f"{envelope.event_type} read from topic {msg.topic()!r}: only its producer's"
            f" topic {source!r} may carry it"
        )

    def _retry_or_dead_letter(
        self, msg: Message, exc: BaseException, envelope: Envelope
    ) -> Outcome:
        """RETRY while the message's retry budget lasts, then dead-letter it."""
        retrying = self._retries.count_attempt(msg)
        failing_for = self._clock() - retrying.since
        if self._retries.spent(retrying, failing_for):
            return self._dead_letter(msg, exc, envelope)
        log.warning(
            "event.retry",
            attempt=retrying.attempts,
            failing_for=round(failing_for, 3),
            error=str(exc),
        )
        return Outcome.RETRY

    def _dead_letter(self, msg: Message, exc: BaseException, envelope: Envelope | None) -> Outcome:
        """DEAD_LETTERED once stored and copied; RETRY if either failed (never raises)."""
        if self._dead_lettering.send(msg, exc, envelope, self._retries.get(msg)):
            return Outcome.DEAD_LETTERED
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
            _traced(handler),
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
        )
        return Outcome.APPLIED if first_time else Outcome.DUPLICATE


def _bound(envelope: Envelope) -> Any:
    """Log lines inside carry the event's identity."""
    return bound_contextvars(
        event_id=str(envelope.event_id),
        event_type=envelope.event_type,
        aggregate_id=envelope.aggregate_id,
        correlation_id=str(envelope.correlation_id),
    )


def _consuming(service: str, msg: Message, envelope: Envelope) -> Any:
    """The span of one message's consumption, child of the relay's publish span (the
    ``traceparent`` header), or of the emitting span (an envelope a relay without tracing
    published); an event without either starts a trace of its own."""
    return tracing.span(
        f"consume {envelope.event_type}",
        parent=header(msg, HEADER_TRACEPARENT) or envelope.traceparent,
        kind=tracing.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": msg.topic() or "",
            "messaging.message.id": str(envelope.event_id),
            "saga.aggregate_id": envelope.aggregate_id,
            "saga.service": service,
        },
    )


def _traced(handler: Handler) -> Handler:
    """``handler`` inside a span of its own, where the events it emits get their parent."""

    def traced(uow: UnitOfWork, envelope: Envelope) -> None:
        with tracing.span(f"handle {envelope.event_type}"):
            handler(uow, envelope)

    return traced


def _disagreement(header_type: str | None, envelope: Envelope) -> InvalidEnvelopeError | None:
    """A header that names another type than the body: the message cannot be trusted."""
    if header_type is None or header_type == envelope.event_type:
        return None
    return InvalidEnvelopeError(
        f"event_type header {header_type!r} disagrees with the envelope's {envelope.event_type!r}"
    )
