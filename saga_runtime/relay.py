"""The outbox relay: publishes committed outbox rows to Kafka, in order, at least once.

``OutboxRelay`` is leadership and the leader's loop; ``relay_lease`` keeps the
leader's session, ``relay_publish`` publishes a batch, ``relay_producer``
judges the producer's errors, ``relay_purge`` deletes what has been published.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from confluent_kafka import Producer
from psycopg import sql

from saga_runtime import metrics
from saga_runtime.backoff import Backoff
from saga_runtime.db import TRANSIENT_DB_ERRORS, connect
from saga_runtime.db_logins import relay_login
from saga_runtime.logs import get_logger
from saga_runtime.naming import notify_channel, relay_lock_key, validate_service_name
from saga_runtime.relay_lease import Lease
from saga_runtime.relay_producer import ProducerFatalError, discard
from saga_runtime.relay_publish import BatchPublisher, BatchResult, BrokerUnreachable
from saga_runtime.relay_purge import Purge
from saga_runtime.settings import DatabaseSettings, RelaySettings

__all__ = ["BatchResult", "BrokerUnreachable", "OutboxRelay", "ProducerFatalError"]

log = get_logger(__name__)


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
    followed by a round trip (``Lease.heartbeat``). A standby then takes the lock
    within ``lock_retry_interval``: a frozen leader is replaced within about
    ``lease + lock_retry_interval`` (11 s by default); a vanished one by the
    lease or the server's keepalives (``DatabaseSettings``), whichever is first.

    Why a leader that comes back never publishes or marks after losing the
    lock, window by window (times are ``time.monotonic()``, which keeps running
    while a process is stopped):

    - The server's idle clock for the session starts when it has *finished* a
      statement, which is after we *sent* it. So if a round trip that was sent
      at ``t0`` succeeded, the session, and the lock, live at least until
      ``t0 + lease``. ``Lease.confirmed_at`` is that ``t0``.
    - Marking runs on the lock's own session: an UPDATE on a session the
      server ended fails, so a relay can only mark while it still holds the
      lock, however long it was frozen. (``Lease.ensure`` is called first all
      the same, so a mark never starts on a lease older than half its length.)
    - Producing is not fenced by PostgreSQL, so before every ``produce()``
      ``Lease.ensure`` requires ``now - confirmed_at < lease / 2``, else it
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
        self._is_standby = threading.Event()
        self._lease = Lease(settings)
        self._publisher = BatchPublisher(schema=self.schema, settings=settings, lease=self._lease)
        self._purge = Purge(schema=self.schema, settings=settings, lease=self._lease)
        # Whether the broker acknowledged anything during the current leadership.
        self._term_delivered = False
        metrics.relay_active(self.schema, False)

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
                    metrics.relay_active(self.schema, False)
                    log.info("relay.leadership_released", outbox=self.schema)
            if holdoff:
                stop.wait(holdoff)

    def _connect(self) -> psycopg.Connection:
        lease = round(self._settings.lease * 1000)
        return connect(
            self._database,
            role=relay_login(self.schema),
            name=f"{self._name}:{self.schema}",
            autocommit=True,
            # The lease: the server ends this session, and frees the lock, once
            # it has sent nothing (or idled in a transaction) for this long.
            session={"idle_session_timeout": lease, "idle_in_transaction_session_timeout": lease},
        )

    def _wait_for_leadership(self, conn: psycopg.Connection, stop: threading.Event) -> bool:
        announced = False
        while not stop.is_set():
            row = self._lease.query(
                conn, "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (self._lock_key,)
            ).fetchone()
            if row and row[0]:
                self._is_standby.clear()
                self._is_leader.set()
                metrics.relay_active(self.schema, True)
                log.info("relay.leadership_acquired", outbox=self.schema)
                return True
            self._is_standby.set()
            if not announced:
                log.info("relay.standby", outbox=self.schema)
                announced = True
            stop.wait(self._settings.lock_retry_interval)
        return False

    def _lead(self, conn: psycopg.Connection, stop: threading.Event) -> None:
        """Relay until ``stop``.

        Raises ``BrokerUnreachable`` to step down, a database error when the
        session (the lock) is gone. A producer is this term's only: it is
        purged before the lock is released, so nothing queued in it is sent
        after another relay took over.
        """
        self._publisher.start_term()
        fatal_backoff = Backoff(self._settings.backoff_initial, self._settings.backoff_max)
        self._term_delivered = False
        wait = min(self._settings.poll_interval, self._settings.lease / 3)
        producer = self._producer_factory()
        try:
            # LISTEN on a connection of its own that runs nothing else, so that a
            # notification arriving mid-batch waits in its socket for the next wait.
            with connect(
                self._database,
                role=relay_login(self.schema),
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
                        discard(producer)
                        self._publisher.check_progress()
                        self._lease.wait(conn, fatal_backoff.next_delay(), stop)
                        producer = self._producer_factory()
                        continue
                    if result.published or result.failed:
                        self._term_delivered = True
                        fatal_backoff.reset()
                    if time.monotonic() >= next_purge:
                        # Bounded, so that a large backlog of old rows (the first purge
                        # after an upgrade) is deleted between batches, not instead of them.
                        more = self._purge.purge_pass(conn)
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
            discard(producer)

    def publish_batch(
        self, conn: psycopg.Connection, producer: Producer, stop: threading.Event
    ) -> BatchResult:
        """Publish the oldest pending rows; mark those the broker acknowledged.

        ``conn`` is the leader's session (see the class docstring for why a
        relay that lost it publishes and marks nothing). Raises
        ``ProducerFatalError`` with nothing marked when the producer failed,
        ``BrokerUnreachable`` when the broker has not answered for too long.
        """
        return self._publisher.publish_batch(conn, producer, stop)

    def report_lag(self, conn: psycopg.Connection, **extra: Any) -> tuple[int, float]:
        """Log how many rows wait and how old the oldest is (the relay's lag)."""
        return self._publisher.report_lag(conn, **extra)

    def purge(self, conn: psycopg.Connection) -> int:
        """Delete published rows older than the retention; pending rows are never touched.

        The service's inbox rows older than ``INBOX_RETENTION`` go too (logged apart).
        Returns how many outbox rows were deleted.
        """
        return self._purge.purge(conn)
