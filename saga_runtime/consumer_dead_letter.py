"""The consumer's dead-letter path: a message that cannot be applied is kept, with its reason."""

from __future__ import annotations

from confluent_kafka import Message

from saga_runtime.consumer_messages import header_bytes, headers
from saga_runtime.consumer_retry import DEAD_LETTER_RETRY, Retrying
from saga_runtime.dead_letters import DeadLetter, DeadLetterPublisher, DeadLetterStore
from saga_runtime.envelope import Envelope
from saga_runtime.errors import InvalidEnvelopeError
from saga_runtime.logs import get_logger
from saga_runtime.unit_of_work import UnitOfWorkFactory

__all__ = ["DeadLettering"]

log = get_logger(__name__)


class DeadLettering:
    """Stores a message the runner gives up on in the service's table and copies it to its topic.

    ``store`` and ``publisher`` are plain attributes: the table of record and
    the topic the operator's tools read.
    """

    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        store: DeadLetterStore,
        publisher: DeadLetterPublisher,
    ) -> None:
        self._uow_factory = uow_factory
        self.store = store
        self.publisher = publisher

    def send(
        self,
        msg: Message,
        exc: BaseException,
        envelope: Envelope | None,
        retrying: Retrying | None,
    ) -> bool:
        """Store the message and its reason, copy it to the topic; False if either fails.

        Never raises: a failure here is retried (the table insert is idempotent
        by source position), and what the table cannot hold as it is is stored
        reduced (``DeadLetterStore.add``). ``retrying`` is the message's record
        of failed attempts, if it has one.
        """
        error = str(exc) or repr(exc)
        try:
            pairs = headers(msg)
        except Exception as header_exc:  # the client could not decode them
            pairs = []
            error += f" [headers unreadable: {header_exc!r}]"
        letter = DeadLetter(
            source_topic=msg.topic() or "",
            source_partition=msg.partition() or 0,
            source_offset=msg.offset() or 0,
            key=msg.key(),
            value=msg.value(),
            headers=[(str(k), header_bytes(v)) for k, v in pairs],
            error_type=type(exc).__name__,
            error=error,
            attempts=max(1, retrying.attempts if retrying else 1),
            event_id=str(envelope.event_id) if envelope else None,
            event_type=envelope.event_type if envelope else None,
            aggregate_id=envelope.aggregate_id if envelope else None,
        )
        try:
            with self._uow_factory.pool.connection() as conn, conn.transaction():
                self.store.add(conn, letter)
            self.publisher.publish(letter)
        except DEAD_LETTER_RETRY as retry_exc:
            log.warning("event.dead_letter_retry", error=repr(retry_exc))
            return False
        except Exception as failure:
            # Not even a reduced row could be written (the table is missing, a
            # permission was revoked...): keep the message and retry, loudly.
            log.error("event.dead_letter_failed", error=repr(failure), exc_info=failure)
            return False
        log.error(
            "event.dead_lettered",
            error_type=letter.error_type,
            error=letter.error,
            topic=letter.source_topic,
            partition=letter.source_partition,
            offset=letter.source_offset,
            exc_info=exc if not isinstance(exc, InvalidEnvelopeError) else None,
        )
        return True
