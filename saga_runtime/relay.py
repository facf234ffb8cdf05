"""The outbox relay: publishes committed outbox rows to Kafka, in order, at least once."""

from __future__ import annotations

import contextlib
import functools
import select
import threading
import time
from collections.abc import Callable
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

__all__ = ["OutboxRelay", "ProducerFatalError"]

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


class OutboxRelay:
    """Relays one service's outbox; at most one instance per outbox is active.

    Leadership is a session-level PostgreSQL advisory lock held on the relay's
    own connection: when the active relay dies its connection closes, the lock
    is released, and a standby polling ``pg_try_advisory_lock`` takes over.

    Rows are selected by state (``published_at IS NULL AND failed_at IS NULL``)
    in id order, never by "ids above the last one published", so a row whose
    transaction commits after a higher-id row is still picked up on the next
    pass. Rows are marked published only after the broker acknowledged them: a
    crash in between republishes them (duplicates, which the consumers' inbox
    absorbs), never loses them.

    The relay is pipelined. The leading thread selects a batch, hands it to
    the producer and, without waiting for the acknowledgements, selects the
    next one, leaving out exactly the rows still in flight (``id <> ALL``, not a
    high-water mark: a pending row outside the pipeline is always selectable).
    A second thread (``_Pipeline``) serves the producer's delivery reports and,
    once every row of a batch has its report, marks the acknowledged rows on a
    connection of its own; only after that commit do the rows leave the
    pipeline. At most ``max_in_flight`` rows are in the pipeline at a time.

    Per-aggregate order still holds: the outbox writer serializes one
    aggregate's transactions, so of one aggregate's rows only the newest can
    still be uncommitted; rows are produced in id order on one idempotent
    producer, which keeps its produce order per partition; a row missing from
    one select (not yet committed) has no later row of its aggregate until it
    commits, and is then selected before any such row.
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
        self._good_topics: set[str] = set()
        self._unknown_since: dict[str, float] = {}
        self._next_purge = 0.0
        ident = sql.Identifier(self.schema)
        # Rendered once: psycopg then caches (and, used often enough, prepares) plain strings.
        # Ids as text: the producer takes str, and no uuid.UUID is built per row.
        self._select = (
            sql.SQL(
                "SELECT id, topic, aggregate_id, envelope::text, event_id::text, event_type,"
                " correlation_id::text FROM {}.outbox"
                " WHERE published_at IS NULL AND failed_at IS NULL"
                " AND id <> ALL(%s::text::bigint[]) ORDER BY id LIMIT %s"
            )
            .format(ident)
            .as_string()
        )
        self._mark_published = (
            sql.SQL(
                "UPDATE {}.outbox SET published_at = now(), attempts = attempts + 1"
                " WHERE id = ANY(%s::text::bigint[])"
            )
            .format(ident)
            .as_string()
        )
        self._mark_failed = (
            sql.SQL(
                "UPDATE {}.outbox SET failed_at = now(), last_error = %s,"
                " attempts = attempts + 1 WHERE id = %s"
            )
            .format(ident)
            .as_string()
        )
        self._lag = sql.SQL(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)"
            " FROM {}.outbox WHERE published_at IS NULL AND failed_at IS NULL"
        ).format(ident)
        self._purge = sql.SQL(
            "DELETE FROM {0}.outbox WHERE id IN (SELECT id FROM {0}.outbox"
            " WHERE published_at < now() - %s ORDER BY id LIMIT 5000)"
        ).format(ident)

    @property
    def is_leader(self) -> bool:
        return self._is_leader.is_set()

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
                self._is_leader.set()
                log.info("relay.leadership_acquired", outbox=self.schema)
                return True
            if not announced:
                log.info("relay.standby", outbox=self.schema)
                announced = True
            stop.wait(self._settings.lock_retry_interval)
        return False

    def _lead(
        self, conn: psycopg.Connection, producer: Producer, stop: threading.Event
    ) -> Producer:
        # LISTEN on a connection of its own that runs nothing else, so that a
        # notification arriving mid-batch waits in its socket for the next wait;
        # marks go through a third connection, owned by the pipeline's thread.
        with (
            connect(
                self._database,
                role=None,
                name=f"{self._name}:{self.schema}:listen",
                autocommit=True,
            ) as listen_conn,
            connect(
                self._database,
                role=self.schema,
                name=f"{self._name}:{self.schema}:marks",
                autocommit=True,
            ) as marks,
        ):
            listener = _Listener(listen_conn, self._channel)
            if not self._settings.mark_synchronous_commit:
                marks.execute("SET synchronous_commit = off")
            self._next_purge = time.monotonic()
            while not stop.is_set():
                pipeline = _Pipeline(self, producer, marks)
                try:
                    self._pump(conn, listener, producer, pipeline, stop)
                except ProducerFatalError as exc:
                    log.error("relay.producer_fatal", outbox=self.schema, error=str(exc))
                    producer = self._producer_factory()
                finally:
                    pipeline.close()
        return producer

    def _pump(
        self,
        conn: psycopg.Connection,
        listener: _Listener,
        producer: Producer,
        pipeline: _Pipeline,
        stop: threading.Event,
    ) -> None:
        """Keep the pipeline fed until ``stop``; raises what the pipeline's thread ran into."""
        settings = self._settings
        caught_up_at = 0.0  # when the last select found fewer rows than it could take
        while not stop.is_set():
            pipeline.check()
            room = settings.max_in_flight - pipeline.in_flight
            if room <= 0:
                pipeline.wait_for_room(settings.max_in_flight, timeout=settings.poll_interval)
                continue
            # Caught up a moment ago and woken by a commit: let a few more commit first,
            # so that under a steady stream one select takes several rows, not one each.
            gather = caught_up_at + settings.select_interval - time.monotonic()
            if gather > 0:
                time.sleep(gather)
            limit = min(settings.batch_size, room)
            # Notifications already received are for commits the select sees: drop them.
            # One that arrives from here on may be for a commit it does not see: it stays.
            listener.drain()
            started = time.monotonic()
            selected, held = self._produce_pending(conn, producer, pipeline, limit)
            caught_up_at = started if selected < limit else 0.0
            if time.monotonic() >= self._next_purge:
                self.purge(conn)
                self._next_purge = time.monotonic() + settings.purge_interval.total_seconds()
            if held:
                stop.wait(0.5)
                continue
            if selected >= limit:
                continue
            # Sleep until a commit notifies us, or the polling interval passes:
            # notifications sent while we were disconnected are lost, polling is not.
            listener.wait(settings.poll_interval)

    def _produce_pending(
        self, conn: psycopg.Connection, producer: Producer, pipeline: _Pipeline, limit: int
    ) -> tuple[int, bool]:
        """Hand the oldest pending rows not already in flight to the producer.

        Returns how many rows were selected and whether a row was held back
        (its topic is not known yet), in which case no later row was produced.
        """
        in_flight = pipeline.in_flight_ids()
        # A prepared (generic) plan checks ``<> ALL`` element by element: fine for a few
        # ids; for more, plan this one with the array as a constant, which PostgreSQL hashes.
        rows = conn.execute(
            self._select,
            (_array(in_flight), limit),
            prepare=None if len(in_flight) <= _PREPARED_EXCLUSION_MAX else False,
        ).fetchall()
        if not rows:
            return 0, False
        batch = _Batch()
        record = batch.record
        good_topics = self._good_topics
        held = False
        for row_id, topic, key, value, event_id, event_type, correlation_id in rows:
            refusal = None if topic in good_topics else self._topic_refusal(producer, topic)
            if refusal is WAIT_FOR_TOPIC:
                # Keep this row and every later one pending, so nothing overtakes it.
                held = True
                break
            batch.ids.append(row_id)
            if isinstance(refusal, KafkaError):
                record(row_id, refusal)
                continue
            self._produce(
                producer,
                topic,
                key,
                value,
                [
                    (HEADER_EVENT_ID, event_id),
                    (HEADER_EVENT_TYPE, event_type),
                    (HEADER_CORRELATION_ID, correlation_id),
                ],
                functools.partial(record, row_id),
            )
        if batch.ids:
            pipeline.add(batch)
        return len(rows), held

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
            first_seen = self._unknown_since.setdefault(topic, time.monotonic())
            # A topic just created can be listed before each of its partitions has a
            # leader: wait for them (for the grace at most; later, a leaderless
            # partition is an outage, which the produce waits out).
            partitions = found.partitions.values()
            settling = not partitions or any(
                p.error is not None or p.leader < 0 for p in partitions
            )
            if settling and time.monotonic() - first_seen < self._settings.unknown_topic_grace:
                return WAIT_FOR_TOPIC
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
        on_delivery: Callable[..., None],
    ) -> None:
        # Key, value and headers go as str: the client encodes them as UTF-8 in C.
        while True:
            try:
                producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=on_delivery
                )
                return
            except BufferError:
                time.sleep(0.01)  # local queue full: the pipeline's thread drains it
            except KafkaException as exc:
                # Refused before it was queued (an invalid or unknown topic): this row
                # fails like a refused delivery, and the rest of the batch goes on.
                on_delivery(exc.args[0], None)
                return

    def settle(self, conn: psycopg.Connection, results: dict[int, KafkaError | None]) -> int:
        """Mark acknowledged rows published and refused ones failed; leave the rest pending.

        Runs only once every row of ``results`` has its delivery report.
        Returns how many rows stay pending (a retriable error). Raises
        ProducerFatalError, after marking, if any report was fatal.
        """
        if results:
            crash_point("relay.after_publish")
        acked = [row_id for row_id, err in results.items() if err is None]
        failed = [
            (row_id, err)
            for row_id, err in results.items()
            if err is not None and err.code() not in _RETRIABLE_CODES and not err.fatal()
        ]
        # One autocommit statement per kind, no BEGIN/COMMIT round trips: each mark is
        # right on its own (a crash between them only retries the failed rows).
        if acked:
            conn.execute(self._mark_published, (_array(acked),))
        for row_id, err in failed:
            conn.execute(self._mark_failed, (str(err), row_id))
        for row_id, err in failed:
            log.error("relay.row_failed", outbox=self.schema, row_id=row_id, error=str(err))
        fatal = next((e for e in results.values() if e is not None and e.fatal()), None)
        if fatal is not None:
            raise ProducerFatalError(str(fatal))
        retry = len(results) - len(acked) - len(failed)
        if retry:
            log.warning(
                "relay.rows_retried",
                outbox=self.schema,
                rows=retry,
                error=str(next(e for e in results.values() if e is not None)),
            )
        return retry

    def wake(self, conn: psycopg.Connection) -> None:
        """Wake the leading thread out of its wait for a notification."""
        conn.execute("SELECT pg_notify(%s, '')", (self._channel,))

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


# Up to this many ids in flight, the select runs as a prepared statement (see above).
_PREPARED_EXCLUSION_MAX = 32


def _array(ids: list[int]) -> str:
    """A bigint[] literal: cheaper to build than psycopg's list adaptation, per select."""
    return "{" + ",".join(map(str, ids)) + "}"


class _Listener:
    """LISTENs on a connection of its own and waits on its socket.

    ``select(2)`` and libpq's ``PQnotifies`` directly: this runs on every
    wake-up, where psycopg's ``notifies()`` generator costs more than the rest.
    A broken connection raises psycopg.OperationalError, like any query would.
    """

    def __init__(self, conn: psycopg.Connection, channel: str) -> None:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        self._pgconn = conn.pgconn
        self._fileno = conn.fileno()

    def drain(self) -> bool:
        """Consume every notification received so far; whether there was any."""
        self._pgconn.consume_input()
        received = False
        while self._pgconn.notifies() is not None:
            received = True
        return received

    def wait(self, timeout: float) -> None:
        """Until a notification arrives or ``timeout`` passes (returns at once if one is here)."""
        if self.drain():
            return
        readable, _, _ = select.select([self._fileno], [], [], timeout)
        if readable:
            self.drain()


class _Batch:
    """Rows handed to the producer together, and the delivery report of each."""

    __slots__ = ("ids", "produced_at", "results")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.results: dict[int, KafkaError | None] = {}
        self.produced_at = time.monotonic()

    def record(self, row_id: int, err: KafkaError | None, _msg: Any = None) -> None:
        self.results[row_id] = err

    @property
    def complete(self) -> bool:
        return len(self.results) >= len(self.ids)


class _Pipeline:
    """Batches produced and not yet marked, and the thread that marks them.

    The thread serves the producer's delivery reports. Every ``mark_interval``
    at most (sooner when the pipeline is half full), it marks every batch
    whose rows all have their report, in one statement, and only after that
    commit removes their rows from the pipeline, so the leading thread never
    selects a row that is on its way. A row with a retriable error leaves the
    pipeline unmarked and is selected again. Closing the pipeline marks what
    is complete and leaves the rest pending for whoever leads next.
    """

    def __init__(self, relay: OutboxRelay, producer: Producer, conn: psycopg.Connection) -> None:
        settings = relay._settings
        self._relay = relay
        self._producer = producer
        self._conn = conn
        self._lag_interval = settings.lag_report_interval
        self._mark_interval = settings.mark_interval
        self._urgent = max(1, settings.max_in_flight // 2)
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._batches: list[_Batch] = []
        self._count = 0
        self._closing = threading.Event()
        self._error: BaseException | None = None
        self._next_lag_report = 0.0
        self._thread = threading.Thread(
            target=self._run, name=f"relay-{relay.schema}-acks", daemon=True
        )
        self._thread.start()

    @property
    def in_flight(self) -> int:
        return self._count

    def in_flight_ids(self) -> list[int]:
        with self._lock:
            return [row_id for batch in self._batches for row_id in batch.ids]

    def add(self, batch: _Batch) -> None:
        """Track ``batch``, whose rows have all been handed to the producer."""
        with self._lock:
            self._batches.append(batch)
            self._count += len(batch.ids)

    def wait_for_room(self, limit: int, timeout: float) -> None:
        with self._room:
            self._room.wait_for(
                lambda: self._count < limit or self._error is not None, timeout=timeout
            )

    def check(self) -> None:
        """Raise what stopped the pipeline's thread (a database error, a fatal producer)."""
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._closing.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            next_mark = 0.0
            while not self._closing.is_set():
                now = time.monotonic()
                self._producer.poll(min(0.05, max(0.0, next_mark - now)) or 0.05)
                now = time.monotonic()
                if now >= next_mark or self._count >= self._urgent:
                    if self._settle():
                        next_mark = now + self._mark_interval
                    else:
                        self._report_lag(now)
            self._producer.poll(0)
            self._settle()
        except BaseException as exc:
            self._error = exc
            if isinstance(exc, ProducerFatalError):
                self._wake()
        finally:
            with self._room:
                self._room.notify_all()

    def _settle(self) -> bool:
        """Mark every complete batch and let its rows go; whether there was any."""
        with self._lock:
            done = [batch for batch in self._batches if batch.complete]
        if not done:
            return False
        results: dict[int, KafkaError | None] = {}
        for batch in done:
            results.update(batch.results)
        try:
            retry = self._relay.settle(self._conn, results)
        finally:
            # Marked (or, on ProducerFatalError, marked as far as acknowledged): these
            # rows leave the pipeline and, if still pending, are selected again.
            with self._room:
                for batch in done:
                    self._batches.remove(batch)
                    self._count -= len(batch.ids)
                self._room.notify_all()
        if retry:
            self._wake()
        return True

    def _wake(self) -> None:
        with contextlib.suppress(psycopg.Error):  # the leading thread polls anyway
            self._relay.wake(self._conn)

    def _report_lag(self, now: float) -> None:
        """While acknowledgements are overdue (a broker outage), log the lag now and then."""
        with self._lock:
            oldest = self._batches[0].produced_at if self._batches else None
        if oldest is None or now - oldest < self._lag_interval or now < self._next_lag_report:
            return
        self._relay.report_lag(self._conn, waiting_for=self._count)
        self._next_lag_report = now + self._lag_interval
