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
from saga_runtime.faults import crash_point, freeze_point
from saga_runtime.inbox_retention import PURGE_BATCH as INBOX_PURGE_BATCH
from saga_runtime.inbox_retention import InboxSettings, purge_inbox
from saga_runtime.logs import get_logger
from saga_runtime.naming import notify_channel, relay_lock_key, validate_service_name
from saga_runtime.settings import DatabaseSettings, RelaySettings

__all__ = ["BatchResult", "BrokerUnreachable", "OutboxRelay", "ProducerFatalError"]

log = get_logger(__name__)

# Rows per purge statement, and statements per pass of the leader's loop: a pass
# deletes at most 20,000 rows of each table before the relay publishes again.
_PURGE_BATCH = 5000
_PURGE_BATCHES_PER_PASS = 4

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
    """The producer is unusable (a fatal error, e.g. fenced); a new one must be created."""


class BrokerUnreachable(Exception):
    """No delivery report for ``RELAY_BROKER_STEPDOWN`` while messages wait: step down."""


# Delivery or produce() errors that describe the producer's state, not the row:
# librdkafka reports them with fatal() false (INVALID_PRODUCER_EPOCH for each
# message in flight when the producer was fenced, _FATAL from produce() once it
# has failed), while the real fatal error surfaces as a KafkaException from
# poll(). A row that got one is never marked failed: a new producer republishes it.
_PRODUCER_STATE_CODES = {
    KafkaError._FATAL,
    KafkaError._FENCED,
    KafkaError._GAPLESS_GUARANTEE,
    KafkaError._INCONSISTENT,
    KafkaError._STATE,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.PRODUCER_FENCED,
    KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    KafkaError.UNKNOWN_PRODUCER_ID,
    KafkaError.INVALID_PRODUCER_ID_MAPPING,
    KafkaError.INVALID_TXN_STATE,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
}


def _is_producer_failure(err: KafkaError) -> bool:
    return bool(err.fatal()) or err.code() in _PRODUCER_STATE_CODES


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

    **A leader that vanishes or freezes.** A dead host closes nothing, and a
    frozen one (SIGSTOP, a VM paused, a long stall) keeps its sockets open and
    its kernel answers TCP keepalives, so neither closes the session that
    holds the lock. The lock is therefore a lease: the leader's session runs
    with ``idle_session_timeout = RELAY_LEASE`` (and the same
    ``idle_in_transaction_session_timeout``), so PostgreSQL ends it, freeing
    the lock, once the leader has sent nothing for ``lease`` seconds. A live
    leader never idles that long: every wait is bounded by ``lease / 3`` and
    followed by a round trip (``_heartbeat``). A standby then takes the lock
    within ``lock_retry_interval``: a frozen leader is replaced within about
    ``lease + lock_retry_interval`` (11 s by default); a vanished one by the
    lease or the server's keepalives (``DatabaseSettings``), whichever is first.

    Why a leader that comes back never publishes or marks after losing the
    lock, window by window (times are ``time.monotonic()``, which keeps running
    while a process is stopped):

    - The server's idle clock for the session starts when it has *finished* a
      statement, which is after we *sent* it. So if a round trip that was sent
      at ``t0`` succeeded, the session, and the lock, live at least until
      ``t0 + lease``. ``_confirmed_at`` is that ``t0``.
    - Marking runs on the lock's own session: an UPDATE on a session the
      server ended fails, so a relay can only mark while it still holds the
      lock, however long it was frozen. (``_ensure_lease`` is called first all
      the same, so a mark never starts on a lease older than half its length.)
    - Producing is not fenced by PostgreSQL, so before every ``produce()``
      ``_ensure_lease`` requires ``now - _confirmed_at < lease / 2``, else it
      makes a round trip first, which fails if the session was ended. A relay
      frozen anywhere between its select and a produce therefore produces
      nothing after it wakes if the lease ran out meanwhile; the half lease
      left is the margin between that check and ``produce()``.
    - What cannot be fenced from here: messages already handed to librdkafka
      before the freeze, which its threads may send as soon as the process
      resumes. They were produced while leading, and are duplicates of rows the
      new leader republishes from the oldest pending row in id order: per key,
      the first copy of each event still arrives in order, and the consumers'
      inbox absorbs the second. Every later step of the old relay (mark,
      select, heartbeat) fails on the ended session; it then purges its
      producer, so nothing still queued in it is sent, and becomes a standby.

    **A leader that cannot reach the broker** for ``RELAY_BROKER_STEPDOWN``
    (no delivery report while messages wait) purges its producer (rows stay
    pending), releases the lock so that a standby that can reach the broker
    takes over, republishing from the oldest pending row (order per key kept,
    duplicates absorbed by the inboxes), and waits with backoff before
    competing for the lock again.

    **A producer that fails** (a fatal error, which confluent-kafka raises as a
    ``KafkaException`` from ``poll()``, or a produce or delivery error about the
    producer's state) is replaced by a new one, with backoff; every row not
    yet marked stays pending and is republished by it.
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
        self._inbox = InboxSettings()  # its inbox is purged with its outbox (INBOX_RETENTION)
        self._is_standby = threading.Event()
        self._good_topics: set[str] = set()
        self._unknown_since: dict[str, float] = {}
        # When the last successful round trip on the leader's session was sent.
        self._confirmed_at = 0.0
        # When the broker last answered (a delivery report), or there was nothing to send.
        self._last_progress = 0.0
        # Whether the broker acknowledged anything during the current leadership.
        self._term_delivered = False
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
            f" WHERE published_at < now() - %s ORDER BY id LIMIT {_PURGE_BATCH})"
        )

    @property
    def is_leader(self) -> bool:
        return self._is_leader.is_set()

    @property
    def is_standby(self) -> bool:
        """Connected and polling for the lock another relay holds (ready to take over)."""
        return self._is_standby.is_set()

    def run(self, stop: threading.Event) -> None:
        """Acquire leadership, relay until ``stop`` or a failure, repeat."""
        backoff = Backoff(self._settings.backoff_initial, self._settings.backoff_max)
        # After a stepdown, give a standby (polling every lock_retry_interval)
        # time to take the lock before competing again, longer each time.
        stepdown_backoff = Backoff(
            max(2 * self._settings.lock_retry_interval, 1.0), self._settings.broker_stepdown
        )
        while not stop.is_set():
            holdoff = 0.0
            try:
                with self._connect() as conn:
                    if not self._wait_for_leadership(conn, stop):
                        return
                    backoff.reset()
                    self._lead(conn, stop)
            except BrokerUnreachable as exc:
                if self._term_delivered:
                    stepdown_backoff.reset()
                holdoff = stepdown_backoff.next_delay()
                log.error(
                    "relay.broker_stepdown",
                    outbox=self.schema,
                    error=str(exc),
                    compete_again_in_s=round(holdoff, 1),
                )
            except TRANSIENT_DB_ERRORS as exc:
                event = "relay.leadership_lost" if self.is_leader else "relay.database_unavailable"
                log.warning(event, outbox=self.schema, error=repr(exc))
                holdoff = backoff.next_delay()
            finally:
                self._is_standby.clear()
                if self._is_leader.is_set():
                    self._is_leader.clear()
                    log.info("relay.leadership_released", outbox=self.schema)
            if holdoff:
                stop.wait(holdoff)

    def _connect(self) -> psycopg.Connection:
        lease = round(self._settings.lease * 1000)
        return connect(
            self._database,
            role=self.schema,
            name=f"{self._name}:{self.schema}",
            autocommit=True,
            # The lease: the server ends this session, and frees the lock, once
            # it has sent nothing (or idled in a transaction) for this long.
            session={"idle_session_timeout": lease, "idle_in_transaction_session_timeout": lease},
        )

    def _wait_for_leadership(self, conn: psycopg.Connection, stop: threading.Event) -> bool:
        announced = False
        while not stop.is_set():
            row = self._query(
                conn, "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (self._lock_key,)
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

    def _query(
        self, conn: psycopg.Connection, statement: str, params: Any = None
    ) -> psycopg.Cursor[Any]:
        """Run a statement on the leader's session; its success renews the lease."""
        sent = time.monotonic()
        cursor = conn.execute(statement, params)
        self._confirmed_at = sent
        return cursor

    def _heartbeat(self, conn: psycopg.Connection) -> None:
        """Keep the session from idling into the lease's end while we wait."""
        if time.monotonic() - self._confirmed_at > self._settings.lease / 3:
            self._query(conn, "SELECT 1")

    def _ensure_lease(self, conn: psycopg.Connection) -> None:
        """Return only if the lock is certainly still ours (see the class docstring)."""
        if time.monotonic() - self._confirmed_at >= self._settings.lease / 2:
            self._query(conn, "SELECT 1")

    def _wait(self, conn: psycopg.Connection, seconds: float, stop: threading.Event) -> None:
        deadline = time.monotonic() + seconds
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            stop.wait(min(left, self._settings.lease / 3))
            self._heartbeat(conn)

    def _lead(self, conn: psycopg.Connection, stop: threading.Event) -> None:
        """Relay until ``stop``.

        Raises ``BrokerUnreachable`` to step down, a database error when the
        session (the lock) is gone. A producer is this term's only: it is
        purged before the lock is released, so nothing queued in it is sent
        after another relay took over.
        """
        self._last_progress = time.monotonic()
        fatal_backoff = Backoff(self._settings.backoff_initial, self._settings.backoff_max)
        self._term_delivered = False
        wait = min(self._settings.poll_interval, self._settings.lease / 3)
        producer = self._producer_factory()
        try:
            # LISTEN on a connection of its own that runs nothing else, so that a
            # notification arriving mid-batch waits in its socket for the next wait.
            with connect(
                self._database,
                role=None,
                name=f"{self._name}:{self.schema}:listen",
                autocommit=True,
            ) as listener:
                listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                next_purge = time.monotonic()
                while not stop.is_set():
                    try:
                        result = self.publish_batch(conn, producer, stop)
                    except ProducerFatalError as exc:
                        log.error("relay.producer_fatal", outbox=self.schema, error=str(exc))
                        _discard(producer)
                        self._check_progress()
                        self._wait(conn, fatal_backoff.next_delay(), stop)
                        producer = self._producer_factory()
                        continue
                    if result.published or result.failed:
                        self._term_delivered = True
                        fatal_backoff.reset()
                    if time.monotonic() >= next_purge:
                        # Bounded, so that a large backlog of old rows (the first purge
                        # after an upgrade) is deleted between batches, not instead of them.
                        more = self._purge_pass(conn)
                        next_purge = time.monotonic() + (
                            0.0 if more else self._settings.purge_interval.total_seconds()
                        )
                    if result.selected >= self._settings.batch_size:
                        continue
                    # Sleep until a commit notifies us, or the polling interval passes:
                    # notifications sent while we were disconnected are lost, polling is not.
                    for _ in listener.notifies(timeout=wait, stop_after=1):
                        pass
        finally:
            _discard(producer)

    def _check_progress(self, since: float = 0.0) -> None:
        """Step down if the broker has not answered since ``since`` for too long."""
        stalled = time.monotonic() - max(self._last_progress, since)
        if stalled > self._settings.broker_stepdown:
            raise BrokerUnreachable(f"no delivery report for {stalled:.0f}s")

    def _poll(self, producer: Producer, timeout: float) -> None:
        """``producer.poll``, where confluent-kafka raises the producer's fatal errors."""
        try:
            producer.poll(timeout)
        except KafkaException as exc:
            raise ProducerFatalError(str(exc.args[0] if exc.args else exc)) from exc

    def publish_batch(
        self, conn: psycopg.Connection, producer: Producer, stop: threading.Event
    ) -> BatchResult:
        """Publish the oldest pending rows; mark those the broker acknowledged.

        ``conn`` is the leader's session (see the class docstring for why a
        relay that lost it publishes and marks nothing). Raises
        ``ProducerFatalError`` with nothing marked when the producer failed,
        ``BrokerUnreachable`` when the broker has not answered for too long.
        """
        rows = self._query(conn, self._select, (self._settings.batch_size,)).fetchall()
        if not rows:
            self._last_progress = time.monotonic()
            return BatchResult(0, 0, 0)
        freeze_point("relay.after_select")
        results: dict[int, KafkaError | None] = {}
        held, processed = False, 0
        metadata = _Metadata()
        for row_id, topic, key, value, event_id, event_type, correlation_id in rows:
            refusal = self._topic_refusal(producer, topic, metadata)
            if refusal is WAIT_FOR_TOPIC:
                # Keep this row and every later one pending, so nothing overtakes it.
                held = True
                break
            processed += 1
            if isinstance(refusal, KafkaError):
                results[row_id] = refusal
                continue
            self._ensure_lease(conn)
            self._produce(
                conn,
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
        producer_failure = next(
            (err for err in results.values() if err is not None and _is_producer_failure(err)),
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
            if err is not None and err.code() not in _RETRIABLE_CODES
        ]
        self._ensure_lease(conn)
        if failed:
            with conn.transaction():
                if acked:
                    self._query(conn, self._mark_published, (acked,))
                for row_id, err in failed:
                    self._query(conn, self._mark_failed, (str(err), row_id))
        elif acked:
            # One statement on an autocommit connection is its own transaction:
            # no BEGIN and COMMIT round trips around it.
            self._query(conn, self._mark_published, (acked,))
        for row_id, err in failed:
            log.error("relay.row_failed", outbox=self.schema, row_id=row_id, error=str(err))
        if held:
            self._last_progress = time.monotonic()  # the broker answered: the topic is unknown
            self._wait(conn, 0.5, stop)
            return BatchResult(processed, len(acked), len(failed))
        return BatchResult(len(rows), len(acked), len(failed))

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
                self._poll(producer, 0.05)
                self._ensure_lease(conn)
            except KafkaException as exc:
                err = exc.args[0]
                if _is_producer_failure(err):
                    raise ProducerFatalError(str(err)) from exc
                # Refused before it was queued (an invalid or unknown topic): this row
                # fails like a refused delivery, and the rest of the batch goes on.
                on_delivery(err, None)
                return
        self._poll(producer, 0)

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
            self._poll(producer, 0.1)
            if len(results) != seen:
                seen = len(results)
                self._last_progress = time.monotonic()
            if len(results) >= expected:
                break
            if stop.is_set():
                return False
            self._heartbeat(conn)
            self._check_progress(since=started)
            if time.monotonic() >= next_report:
                self.report_lag(conn, waiting_for=expected - len(results))
                next_report = time.monotonic() + self._settings.lag_report_interval
        return True

    def report_lag(self, conn: psycopg.Connection, **extra: Any) -> tuple[int, float]:
        """Log how many rows wait and how old the oldest is (the relay's lag)."""
        row = self._query(conn, self._lag).fetchone()
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
        """Delete published rows older than the retention; pending rows are never touched.

        The service's inbox rows older than ``INBOX_RETENTION`` go too (logged apart).
        Returns how many outbox rows were deleted.
        """
        total = self._purge_outbox(conn, max_batches=None)
        purge_inbox(conn, self.schema, self._inbox.retention)
        return total

    def _purge_pass(self, conn: psycopg.Connection) -> bool:
        """At most a few batches of each purge; True when there may be more to delete."""
        limit = _PURGE_BATCHES_PER_PASS
        outbox = self._purge_outbox(conn, max_batches=limit)
        inbox = purge_inbox(conn, self.schema, self._inbox.retention, max_batches=limit)
        return outbox >= limit * _PURGE_BATCH or inbox >= limit * INBOX_PURGE_BATCH

    def _purge_outbox(self, conn: psycopg.Connection, *, max_batches: int | None) -> int:
        total = batches = 0
        while max_batches is None or batches < max_batches:
            deleted = self._query(conn, self._purge, (self._settings.retention,)).rowcount
            total += deleted
            batches += 1
            if deleted < _PURGE_BATCH:
                break
        if total:
            log.info("relay.purged", outbox=self.schema, rows=total)
        return total


@dataclass
class _Metadata:
    """What one batch learned about the broker's metadata."""

    unavailable: bool = False


def _discard(producer: Producer) -> None:
    """Drop a producer: nothing still queued in it may be sent, or reported, later."""
    try:
        producer.purge(in_queue=True, in_flight=True, blocking=False)
        producer.flush(0)
    except (KafkaException, RuntimeError) as exc:
        log.debug("relay.producer_discard_failed", error=repr(exc))


def _recorder(results: dict[int, KafkaError | None], row_id: int) -> Callable[[Any, Any], None]:
    """The delivery callback of one row (a ``partial``: cheaper to make than a closure)."""
    return partial(_record, results, row_id)


def _record(
    results: dict[int, KafkaError | None], row_id: int, err: KafkaError | None, _msg: Any
) -> None:
    results[row_id] = err
