"""Publishing a batch of outbox rows: produce in id order, await the broker, mark what it took."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import KafkaError, KafkaException, Producer
from opentelemetry.trace import Span
from psycopg import sql

from saga_runtime import metrics, tracing
from saga_runtime.envelope import (
    HEADER_CORRELATION_ID,
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    HEADER_TRACEPARENT,
)
from saga_runtime.faults import crash_point, freeze_point
from saga_runtime.logs import get_logger
from saga_runtime.relay_lease import Lease
from saga_runtime.relay_producer import (
    RETRIABLE_CODES,
    ProducerFatalError,
    is_producer_failure,
    poll,
    recorder,
)
from saga_runtime.settings import RelaySettings

__all__ = ["BatchPublisher", "BatchResult", "BrokerUnreachable"]

log = get_logger(__name__)

# Metadata answers that mean the topic cannot take messages until an operator acts.
_REFUSED_TOPIC_CODES = {KafkaError.TOPIC_EXCEPTION, KafkaError.TOPIC_AUTHORIZATION_FAILED}


class _WaitForTopic:
    """The topic is not known to the broker yet (just created, or missing): hold the batch."""


WAIT_FOR_TOPIC = _WaitForTopic()


class BrokerUnreachable(Exception):
    """No delivery report for ``RELAY_BROKER_STEPDOWN`` while messages wait: step down."""


@dataclass(frozen=True)
class BatchResult:
    selected: int
    published: int
    failed: int


class BatchPublisher:
    """Publishes one outbox's pending rows while its relay leads (``OutboxRelay``).

    Every statement goes through the leader's ``Lease``, which fences it: a
    relay that lost its lock publishes and marks nothing (see ``OutboxRelay``).
    It also watches the broker: ``check_progress`` steps down when no delivery
    report has come for ``broker_stepdown``.
    """

    def __init__(self, *, schema: str, settings: RelaySettings, lease: Lease) -> None:
        self.schema = schema
        self._settings = settings
        self._lease = lease
        self._good_topics: set[str] = set()
        self._unknown_since: dict[str, float] = {}
        # When the broker last answered (a delivery report), or there was nothing to send.
        self._last_progress = 0.0
        # Plain strings, which psycopg caches and prepares (a Composed is converted
        # again on every execute: a quarter of the relay's time at 20 sagas/s).
        ident = sql.Identifier(schema)

        def statement(text: str) -> str:
            return sql.SQL(text).format(ident).as_string()

        self._select = statement(
            # Ids as text: they only become header bytes (no UUID objects to make).
            "SELECT id, topic, aggregate_id, envelope::text, event_id::text, event_type,"
            " correlation_id::text, envelope->>'traceparent',"
            # The row's age now, by the database's clock: its commit-to-ack latency is this
            # plus our time until the ack (no clock skew between hosts in it).
            " extract(epoch FROM clock_timestamp() - created_at)::float8 FROM {}.outbox"
            " WHERE published_at IS NULL AND failed_at IS NULL ORDER BY id LIMIT %s"
        )
        self._mark_published = statement(
            "UPDATE {}.outbox SET published_at = now(), attempts = attempts + 1 WHERE id = ANY(%s)"
        )
        self._mark_failed = statement(
            "UPDATE {}.outbox SET failed_at = now(), last_error = %s, attempts = attempts + 1"
            " WHERE id = %s"
        )
        self._lag = statement(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)"
            " FROM {}.outbox WHERE published_at IS NULL AND failed_at IS NULL"
        )

    def start_term(self) -> None:
        """A new leadership: the broker's silence is counted from now."""
        self._last_progress = time.monotonic()

    def check_progress(self, since: float = 0.0) -> None:
        """Step down if the broker has not answered since ``since`` for too long."""
        stalled = time.monotonic() - max(self._last_progress, since)
        if stalled > self._settings.broker_stepdown:
            raise BrokerUnreachable(f"no delivery report for {stalled:.0f}s")

    def publish_batch(
        self, conn: psycopg.Connection, producer: Producer, stop: threading.Event
    ) -> BatchResult:
        """Publish the oldest pending rows; mark those the broker acknowledged.

        ``conn`` is the leader's session (see ``OutboxRelay`` for why a
        relay that lost it publishes and marks nothing). Raises
        ``ProducerFatalError`` with nothing marked when the producer failed,
        ``BrokerUnreachable`` when the broker has not answered for too long.
        """
        rows = self._lease.query(conn, self._select, (self._settings.batch_size,)).fetchall()
        selected_at = time.monotonic()
        if not rows:
            self._last_progress = time.monotonic()
            return BatchResult(0, 0, 0)
        freeze_point("relay.after_select")
        results: dict[int, KafkaError | None] = {}
        held, processed = False, 0
        metadata = _Metadata()
        spans: list[Span] = []
        for row_id, topic, key, value, event_id, event_type, correlation_id, parent, _age in rows:
            refusal = self._topic_refusal(producer, topic, metadata)
            if refusal is WAIT_FOR_TOPIC:
                # Keep this row and every later one pending, so nothing overtakes it.
                held = True
                break
            processed += 1
            if isinstance(refusal, KafkaError):
                results[row_id] = refusal
                continue
            self._lease.ensure(conn)
            headers: list[tuple[str, str | bytes | None]] = [
                (HEADER_EVENT_ID, event_id.encode()),
                (HEADER_EVENT_TYPE, event_type.encode()),
                (HEADER_CORRELATION_ID, correlation_id.encode()),
            ]
            # The publish span, from produce to the batch's acks: consumers continue the
            # trace from it (the header), child of the span that emitted the event.
            publishing = tracing.start_span(
                f"publish {event_type}",
                parent=parent,
                kind=tracing.SpanKind.PRODUCER,
                attributes={"messaging.destination.name": topic},
            )
            spans.append(publishing)
            if (traceparent := tracing.traceparent_of(publishing)) is not None:
                headers.append((HEADER_TRACEPARENT, traceparent.encode()))
            self._produce(conn, producer, topic, key, value, headers, recorder(results, row_id))
        acks = self._await_acks(conn, producer, results, processed, stop)
        for publishing in spans:
            publishing.end()
        if not acks:
            return BatchResult(len(rows), 0, 0)
        if processed:
            crash_point("relay.after_publish")
        producer_failure = next(
            (err for err in results.values() if err is not None and is_producer_failure(err)),
            None,
        )
        if producer_failure is not None:
            # The errors of a failed producer say nothing about the rows: keep
            # the whole batch pending (acked rows too; their copies are absorbed).
            raise ProducerFatalError(str(producer_failure))
        acked = [row_id for row_id, err in results.items() if err is None]
        failed = [
            (row_id, err)
            for row_id, err in results.items()
            if err is not None and err.code() not in RETRIABLE_CODES
        ]
        self._count(rows, results, time.monotonic() - selected_at, len(failed))
        self._lease.ensure(conn)
        if failed:
            with conn.transaction():
                if acked:
                    self._lease.query(conn, self._mark_published, (acked,))
                for row_id, err in failed:
                    self._lease.query(conn, self._mark_failed, (str(err), row_id))
        elif acked:
            # One statement on an autocommit connection is its own transaction:
            # no BEGIN and COMMIT round trips around it.
            self._lease.query(conn, self._mark_published, (acked,))
        for row_id, err in failed:
            log.error("relay.row_failed", outbox=self.schema, row_id=row_id, error=str(err))
        if held:
            self._last_progress = time.monotonic()  # the broker answered: the topic is unknown
            self._lease.wait(conn, 0.5, stop)
            return BatchResult(processed, len(acked), len(failed))
        return BatchResult(len(rows), len(acked), len(failed))

    def _count(
        self, rows: list[Any], results: dict[int, KafkaError | None], waited: float, failed: int
    ) -> None:
        """Metrics of the batch: each acknowledged row's latency, rows refused for good."""
        if not metrics.enabled():
            return
        metrics.relay_delivered(
            self.schema,
            (row[8] + waited for row in rows if row[0] in results and results[row[0]] is None),
            failed,
        )

    def _topic_refusal(
        self, producer: Producer, topic: str, metadata: _Metadata | None = None
    ) -> KafkaError | _WaitForTopic | None:
        """Whether rows for ``topic`` can be produced now (None), must wait, or fail.

        Checked before producing because, with no local message timeout, a
        message for a topic that cannot take it would wait for ever and hold
        up the outbox. An invalid or forbidden topic fails the row at once; an
        unknown one is waited for (a topic just created takes a moment to
        appear) for ``unknown_topic_grace``, then fails it. Known-good topics
        are remembered; a broker that does not answer is not a refusal (the
        produce then waits for it like any outage), and is not asked again
        within the same batch. The wait is bounded well inside the lease.
        """
        if topic in self._good_topics:
            return None
        metadata = metadata or _Metadata()
        if metadata.unavailable:
            return None
        try:
            metadata_answer = producer.list_topics(
                topic, timeout=min(10.0, self._settings.lease / 4)
            )
        except KafkaException:
            metadata.unavailable = True
            return None
        found = metadata_answer.topics.get(topic)
        error = None if found is None else found.error
        if found is not None and error is None:
            self._good_topics.add(topic)
            self._unknown_since.pop(topic, None)
            return None
        if error is not None and error.code() in _REFUSED_TOPIC_CODES:
            return error  # type: ignore[no-any-return]
        first_seen = self._unknown_since.setdefault(topic, time.monotonic())
        if time.monotonic() - first_seen < self._settings.unknown_topic_grace:
            return WAIT_FOR_TOPIC
        return error or KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"unknown topic {topic}")

    def _produce(
        self,
        conn: psycopg.Connection,
        producer: Producer,
        topic: str,
        key: str,
        value: str,
        headers: list[tuple[str, str | bytes | None]],
        on_delivery: Callable[[Any, Any], None],
    ) -> None:
        while True:
            try:
                producer.produce(
                    topic,
                    value=value.encode(),
                    key=key.encode(),
                    headers=headers,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                # Local queue full: let deliveries drain.
                poll(producer, 0.05)
                self._lease.ensure(conn)
            except KafkaException as exc:
                err = exc.args[0]
                if is_producer_failure(err):
                    raise ProducerFatalError(str(err)) from exc
                # Refused before it was queued (an invalid or unknown topic): this row
                # fails like a refused delivery, and the rest of the batch goes on.
                on_delivery(err, None)
                return
        poll(producer, 0)

    def _await_acks(
        self,
        conn: psycopg.Connection,
        producer: Producer,
        results: dict[int, KafkaError | None],
        expected: int,
        stop: threading.Event,
    ) -> bool:
        """Wait until every message of the batch has a delivery report.

        With an infinite message timeout this waits out a short broker outage,
        reporting the lag meanwhile, and keeps the lease; after
        ``broker_stepdown`` without any delivery report it raises
        ``BrokerUnreachable``. Returns False if asked to stop first: the rows
        stay pending and whoever leads next publishes them.
        """
        started = time.monotonic()
        next_report = started + self._settings.lag_report_interval
        seen = len(results)
        while len(results) < expected:
            poll(producer, 0.1)
            if len(results) != seen:
                seen = len(results)
                self._last_progress = time.monotonic()
            if len(results) >= expected:
                break
            if stop.is_set():
                return False
            self._lease.heartbeat(conn)
            self.check_progress(since=started)
            if time.monotonic() >= next_report:
                self.report_lag(conn, waiting_for=expected - len(results))
                next_report = time.monotonic() + self._settings.lag_report_interval
        return True

    def report_lag(self, conn: psycopg.Connection, **extra: Any) -> tuple[int, float]:
        """Log how many rows wait and how old the oldest is (the relay's lag)."""
        row = self._lease.query(conn, self._lag).fetchone()
        pending, oldest = (int(row[0]), float(row[1])) if row else (0, 0.0)
        log.warning(
            "relay.lag",
            outbox=self.schema,
            pending=pending,
            oldest_pending_s=round(oldest, 3),
            **extra,
        )
        return pending, oldest


@dataclass
class _Metadata:
    """What one batch learned about the broker's metadata."""

    unavailable: bool = False
