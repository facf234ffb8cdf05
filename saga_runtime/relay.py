"""The outbox relay: publishes committed outbox rows to Kafka, in order, at least once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import psycopg
from confluent_kafka import KafkaError, KafkaException, Producer
from psycopg import sql

from saga_runtime.backoff import Backoff
from saga_runtime.db import TRANSIENT_DB_ERRORS, connect
from saga_runtime.envelope import HEADER_CORRELATION_ID, HEADER_EVENT_ID, HEADER_EVENT_TYPE
from saga_runtime.faults import crash_point
from saga_runtime.logs import get_logger
from saga_runtime.naming import notify_channel, relay_lock_key, validate_service_name
from saga_runtime.settings import DatabaseSettings, RelaySettings

__all__ = ["BatchResult", "OutboxRelay", "ProducerFatalError"]

log = get_logger(__name__)

# Errors after which the same message may well go through: keep the row pending.
_RETRIABLE_CODES = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._PURGE_QUEUE,
    KafkaError._PURGE_INFLIGHT,
}


# Metadata answers that mean the topic cannot take messages until an operator acts.
_REFUSED_TOPIC_CODES = {KafkaError.TOPIC_EXCEPTION, KafkaError.TOPIC_AUTHORIZATION_FAILED}


class _WaitForTopic:
    """The topic is not known to the broker yet (just created, or missing): hold the batch."""


WAIT_FOR_TOPIC = _WaitForTopic()


class ProducerFatalError(Exception):
    """The idempotent producer hit a fatal error; a new one must be created."""


@dataclass(frozen=True)
class BatchResult:
    selected: int
    published: int
    failed: int


class OutboxRelay:
    """Relays one service's outbox; at most one instance per outbox is active.

    Leadership is a session-level PostgreSQL advisory lock held on the relay's
    own connection: when the active relay dies its connection closes, the lock
    is released, and a standby polling ``pg_try_advisory_lock`` takes over.

    Rows are selected by ``published_at IS NULL`` in id order, never by "ids
    above the last one published", so a row whose transaction commits after a
    higher-id row is still picked up on the next pass. Rows are marked
    published only after the broker acknowledged them: a crash in between
    republishes them (duplicates, which the consumers' inbox absorbs), never
    loses them.
    """

    def __init__(
        self,
        *,
        schema: str,
        database: DatabaseSettings,
        settings: RelaySettings,
        producer_factory: Callable[[], Producer],
        name: str = "relay",
    ) -> None:
        self.schema = validate_service_name(schema)
        self._database = database
        self._settings = settings
        self._producer_factory = producer_factory
        self._name = name
        self._lock_key = relay_lock_key(schema)
        self._channel = notify_channel(schema)
        self._is_leader = threading.Event()
        self._is_standby = threading.Event()
        self._good_topics: set[str] = set()
        self._unknown_since: dict[str, float] = {}
        # Plain strings, which psycopg caches and prepares (a Composed is converted
        # again on every execute: a quarter of the relay's time at 20 sagas/s).
        ident = sql.Identifier(self.schema)

        def statement(text: str) -> str:
            return sql.SQL(text).format(ident).as_string()

        self._select = statement(
            # Ids as text: they only become header bytes (no UUID objects to make).
            "SELECT id, topic, aggregate_id, envelope::text, event_id::text, event_type,"
            " correlation_id::text FROM {}.outbox"
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
        self._purge = statement(
            "DELETE FROM {0}.outbox WHERE id IN (SELECT id FROM {0}.outbox"
            " WHERE published_at < now() - %s ORDER BY id LIMIT 5000)"
        )

    @property
    def is_leader(self) -> bool:
        return self._is_leader.is_set()

    @property
    def is_standby(self) -> bool:
        """Connected and polling for the lock another relay holds (ready to take over)."""
        return self._is_standby.is_set()

    def run(self, stop: threading.Event) -> None:
        """Acquire leadership, relay until ``stop`` or a database failure, repeat."""
        backoff = Backoff(self._settings.backoff_initial, self._settings.backoff_max)
        producer: Producer | None = None
        while not stop.is_set():
            try:
                with self._connect() as conn:
                    if not self._wait_for_leadership(conn, stop):
                        return
                    backoff.reset()
                    if producer is None:
                        producer = self._producer_factory()
                    producer = self._lead(conn, producer, stop)
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("relay.database_unavailable", outbox=self.schema, error=repr(exc))
                stop.wait(backoff.next_delay())
            finally:
                self._is_standby.clear()
                if self._is_leader.is_set():
                    self._is_leader.clear()
                    log.info("relay.leadership_released", outbox=self.schema)
        if producer is not None:
            producer.flush(0)

    def _connect(self) -> psycopg.Connection:
        return connect(
            self._database, role=self.schema, name=f"{self._name}:{self.schema}", autocommit=True
        )

    def _wait_for_leadership(self, conn: psycopg.Connection, stop: threading.Event) -> bool:
        announced = False
        while not stop.is_set():
            row = conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (self._lock_key,)
            ).fetchone()
            if row and row[0]:
                self._is_standby.clear()
                self._is_leader.set()
                log.info("relay.leadership_acquired", outbox=self.schema)
                return True
            self._is_standby.set()
            if not announced:
                log.info("relay.standby", outbox=self.schema)
                announced = True
            stop.wait(self._settings.lock_retry_interval)
        return False

    def _lead(
        self, conn: psycopg.Connection, producer: Producer, stop: threading.Event
    ) -> Producer:
        # LISTEN on a connection of its own that runs nothing else, so that a
        # notification arriving mid-batch waits in its socket for the next wait.
        with connect(
            self._database, role=None, name=f"{self._name}:{self.schema}:listen", autocommit=True
        ) as listener:
            listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            next_purge = time.monotonic()
            while not stop.is_set():
                try:
                    result = self.publish_batch(conn, producer, stop)
                except ProducerFatalError as exc:
                    log.error("relay.producer_fatal", outbox=self.schema, error=str(exc))
                    producer = self._producer_factory()
                    continue
                if time.monotonic() >= next_purge:
                    self.purge(conn)
                    next_purge = time.monotonic() + self._settings.purge_interval.total_seconds()
                if result.selected >= self._settings.batch_size:
                    continue
                # Sleep until a commit notifies us, or the polling interval passes:
                # notifications sent while we were disconnected are lost, polling is not.
                for _ in listener.notifies(timeout=self._settings.poll_interval, stop_after=1):
                    pass
        return producer

    def publish_batch(
        self, conn: psycopg.Connection, producer: Producer, stop: threading.Event
    ) -> BatchResult:
        """Publish the oldest pending rows; mark those the broker acknowledged."""
        rows = conn.execute(self._select, (self._settings.batch_size,)).fetchall()
        if not rows:
            return BatchResult(0, 0, 0)
        results: dict[int, KafkaError | None] = {}
        held, processed = False, 0
        for row_id, topic, key, value, event_id, event_type, correlation_id in rows:
            refusal = self._topic_refusal(producer, topic)
            if refusal is WAIT_FOR_TOPIC:
                # Keep this row and every later one pending, so nothing overtakes it.
                held = True
                break
            processed += 1
            if isinstance(refusal, KafkaError):
                results[row_id] = refusal
                continue
            self._produce(
                producer,
                topic,
                key,
                value,
                [
                    (HEADER_EVENT_ID, event_id.encode()),
                    (HEADER_EVENT_TYPE, event_type.encode()),
                    (HEADER_CORRELATION_ID, correlation_id.encode()),
                ],
                _recorder(results, row_id),
            )
        if not self._await_acks(conn, producer, results, processed, stop):
            return BatchResult(len(rows), 0, 0)
        if processed:
            crash_point("relay.after_publish")
        acked = [row_id for row_id, err in results.items() if err is None]
        failed = [
            (row_id, err)
            for row_id, err in results.items()
            if err is not None and err.code() not in _RETRIABLE_CODES and not err.fatal()
        ]
        if failed:
            with conn.transaction():
                if acked:
                    conn.execute(self._mark_published, (acked,))
                for row_id, err in failed:
                    conn.execute(self._mark_failed, (str(err), row_id))
        elif acked:
            # One statement on an autocommit connection is its own transaction:
            # no BEGIN and COMMIT round trips around it.
            conn.execute(self._mark_published, (acked,))
        for row_id, err in failed:
            log.error("relay.row_failed", outbox=self.schema, row_id=row_id, error=str(err))
        if any(err is not None and err.fatal() for err in results.values()):
            raise ProducerFatalError(str(next(e for e in results.values() if e and e.fatal())))
        if held:
            stop.wait(0.5)
            return BatchResult(processed, len(acked), len(failed))
        return BatchResult(len(rows), len(acked), len(failed))

    def _topic_refusal(self, producer: Producer, topic: str) -> KafkaError | _WaitForTopic | None:
        """Whether rows for ``topic`` can be produced now (None), must wait, or fail.

        Checked before producing because, with no local message timeout, a
        message for a topic that cannot take it would wait for ever and hold
        up the outbox. An invalid or forbidden topic fails the row at once; an
        unknown one is waited for (a topic just created takes a moment to
        appear) for ``unknown_topic_grace``, then fails it. Known-good topics
        are remembered; a broker that does not answer is not a refusal (the
        produce then waits for it like any outage).
        """
        if topic in self._good_topics:
            return None
        try:
            metadata = producer.list_topics(topic, timeout=10)
        except KafkaException:
            return None
        found = metadata.topics.get(topic)
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
                producer.poll(0.05)  # local queue full: let deliveries drain
            except KafkaException as exc:
                # Refused before it was queued (an invalid or unknown topic): this row
                # fails like a refused delivery, and the rest of the batch goes on.
                on_delivery(exc.args[0], None)
                return
        producer.poll(0)

    def _await_acks(
        self,
        conn: psycopg.Connection,
        producer: Producer,
        results: dict[int, KafkaError | None],
        expected: int,
        stop: threading.Event,
    ) -> bool:
        """Wait until every message of the batch has a delivery report.

        With an infinite message timeout this waits out a broker outage,
        reporting the lag meanwhile. Returns False if asked to stop first: the
        rows stay pending and whoever leads next publishes them.
        """
        started = time.monotonic()
        next_report = started + self._settings.lag_report_interval
        while len(results) < expected:
            producer.poll(0.1)
            if len(results) >= expected:
                break
            if stop.is_set():
                return False
            if time.monotonic() >= next_report:
                self.report_lag(conn, waiting_for=expected - len(results))
                next_report = time.monotonic() + self._settings.lag_report_interval
        return True

    def report_lag(self, conn: psycopg.Connection, **extra: Any) -> tuple[int, float]:
        """Log how many rows wait and how old the oldest is (the relay's lag)."""
        row = conn.execute(self._lag).fetchone()
        pending, oldest = (int(row[0]), float(row[1])) if row else (0, 0.0)
        log.warning(
            "relay.lag",
            outbox=self.schema,
            pending=pending,
            oldest_pending_s=round(oldest, 3),
            **extra,
        )
        return pending, oldest

    def purge(self, conn: psycopg.Connection) -> int:
        """Delete published rows older than the retention; pending rows are never touched."""
        total = 0
        while True:
            deleted = conn.execute(self._purge, (self._settings.retention,)).rowcount
            total += deleted
            if deleted < 5000:
                break
        if total:
            log.info("relay.purged", outbox=self.schema, rows=total)
        return total


def _recorder(results: dict[int, KafkaError | None], row_id: int) -> Callable[[Any, Any], None]:
    """The delivery callback of one row (a ``partial``: cheaper to make than a closure)."""
    return partial(_record, results, row_id)


def _record(
    results: dict[int, KafkaError | None], row_id: int, err: KafkaError | None, _msg: Any
) -> None:
    results[row_id] = err
