"""The effect executor: runs a service's due effects, many at once, out of any transaction.

Modelled on Temporal's activities (retry policy, a deadline) and Confluent's
Parallel Consumer (concurrency by key, order per key): each aggregate's effects
run one after the other, in the order they were requested; effects of different
aggregates run concurrently on a thread pool.

Claims use ``FOR UPDATE SKIP LOCKED`` and a lease, so executors in several
processes never run one effect at the same time; an executor that dies leaves
leases that expire, and another takes the effects over and calls again with the
same idempotency key. An outcome is recorded only while its lease is still held,
so a late duplicate (the lease expired and was taken) records nothing.
"""

from __future__ import annotations

import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from uuid import uuid4

from psycopg.types.json import Jsonb
from structlog.contextvars import bound_contextvars

from saga_runtime.backoff import Backoff
from saga_runtime.db import is_transient_db_error
from saga_runtime.effect_retry import is_retryable
from saga_runtime.effect_statements import ExecutorStatements
from saga_runtime.effects import Effect, EffectKind, EffectOutcome, Effects
from saga_runtime.faults import crash_point
from saga_runtime.logs import get_logger
from saga_runtime.settings import EffectSettings
from saga_runtime.unit_of_work import UnitOfWork, UnitOfWorkFactory
from saga_runtime.workers import Worker

__all__ = ["EffectExecutor"]

log = get_logger(__name__)


class _DecisionFailed(Exception):
    """``on_outcome`` raised: its transaction rolled back, the effect goes back to pending."""


class _Retry:
    """A transient failure of a call (kept apart from outcomes: it is not one yet)."""

    def __init__(self, error: str) -> None:
        self.error = error


class EffectExecutor:
    """Claims and runs the due effects of one service schema (see the module docstring).

    ``run`` blocks until ``stop``; start it as a watched ``Worker`` (``worker()``)
    so that an executor that dies of a bug takes its process down. Outcomes are
    recorded in units of work of ``uow_factory``, so events that ``on_outcome``
    emits go through the outbox and wake the relay as a consumer's would.
    """

    def __init__(
        self,
        *,
        effects: Effects,
        uow_factory: UnitOfWorkFactory,
        settings: EffectSettings | None = None,
        owner: str | None = None,
    ) -> None:
        self.effects = effects
        self.uow_factory = uow_factory
        self.settings = settings or EffectSettings()
        # Unique per executor instance: a restarted process must not inherit the leases
        # of its previous life (its calls may still be in flight nowhere).
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._failure: BaseException | None = None
        self._sql = ExecutorStatements(effects.schema)

    def worker(self) -> Worker:
        """This executor as a watched worker of its process."""
        return Worker(name=f"{self.effects.schema}-effects", run=self.run, stop=self.stop)

    def nudge(self) -> None:
        """Look for due effects now instead of at the next poll (thread-safe, non-blocking)."""
        self._wake.set()

    def stop(self) -> None:
        """Make ``run`` return once the calls in flight have been settled."""
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        """Claim and run due effects until ``stop``; raises if a call's thread hit a bug."""
        settings = self.settings
        backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        pool = ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix=f"{self.effects.schema}-effect"
        )
        self.effects.subscribe(self.nudge)
        log.info("effects.executor_started", owner=self.owner, concurrency=settings.concurrency)
        try:
            while not self._stopping.is_set():
                self._raise_failure()
                self._wake.clear()
                free = settings.concurrency - self._in_flight
                if free <= 0:
                    self._wake.wait(settings.poll_interval)
                    continue
                try:
                    claimed = self.claim(min(free, settings.claim_batch))
                except Exception as exc:
                    if not is_transient_db_error(exc):
                        raise
                    delay = backoff.next_delay()
                    log.warning("effects.claim_failed", error=repr(exc), retry_in=round(delay, 2))
                    self._stopping.wait(delay)
                    continue
                backoff.reset()
                for effect in claimed:
                    with self._lock:
                        self._in_flight += 1
                    pool.submit(self._run_one, effect)
                if claimed and len(claimed) == min(free, settings.claim_batch):
                    continue  # there may be more due right now
                self._wake.wait(settings.poll_interval)
            self._raise_failure()
        finally:
            self.effects.unsubscribe(self.nudge)
            # After a failure, calls in flight finish on their own threads (their
            # leases protect the effects); on a clean stop they are settled first.
            failed = self._failure is not None
            pool.shutdown(wait=not failed, cancel_futures=failed)
            log.info("effects.executor_stopped", owner=self.owner)

    def claim(self, limit: int) -> list[Effect]:
        """Lease up to ``limit`` due effects, at most one per aggregate: its oldest unfinished."""
        with self.uow_factory.pool.connection() as conn:
            rows = conn.execute(
                self._sql.claim, (limit, self.owner, timedelta(seconds=self.settings.lease))
            ).fetchall()
        return [
            Effect(
                id=row[0],
                aggregate_id=row[1],
                kind=row[2],
                key=row[3],
                request=row[4],
                attempts=row[5],
                correlation_id=row[6],
            )
            for row in rows
        ]

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _run_one(self, effect: Effect) -> None:
        try:
            with bound_contextvars(
                effect_id=effect.id,
                aggregate_id=effect.aggregate_id,
                effect_kind=effect.kind,
                attempt=effect.attempts,
            ):
                self.execute(effect)
        except BaseException as exc:
            # A bug (or an armed crash point): the executor dies with it, and so does
            # its process, rather than leaving effects that nobody runs.
            with self._lock:
                if self._failure is None:
                    self._failure = exc
        finally:
            with self._lock:
                self._in_flight -= 1
            self._wake.set()

    def execute(self, effect: Effect) -> None:
        """Make ``effect``'s call and settle it (record it, or schedule its retry)."""
        kind = self.effects.kind(effect.kind)
        result: EffectOutcome | _Retry
        try:
            result = EffectOutcome(ok=True, result=kind.call(effect.request, effect.key))
        except Exception as exc:
            if is_retryable(exc):
                result = _Retry(repr(exc))
            else:
                log.warning("effect.call_failed", error=repr(exc))
                result = EffectOutcome(ok=False, error=repr(exc))
        # Between the call and its recording: after a crash here the lease expires
        # and the call is made again with the same key.
        crash_point("effects.after_call")
        try:
            self._settle(effect, kind, result)
        except _DecisionFailed as failed:
            log.error("effect.on_outcome_failed", error=repr(failed.__cause__), exc_info=failed)
            self._release(effect, kind, f"on_outcome raised {failed.__cause__!r}")
        except Exception as exc:
            if not is_transient_db_error(exc):
                raise
            # Not recorded: the lease expires and the call is made again (same key).
            log.warning("effect.record_failed", error=repr(exc))

    def _settle(self, effect: Effect, kind: EffectKind, result: EffectOutcome | _Retry) -> None:
        with self.uow_factory.begin() as uow:
            # The aggregate's lock first, as a consumer takes it: on_outcome reads and
            # changes the aggregate's state in this transaction.
            uow.lock(effect.aggregate_id)
            row = uow.conn.execute(self._sql.owned, (effect.id, self.owner)).fetchone()
            if row is None:
                log.warning("effect.lease_lost", owner=self.owner)
                return
            expired = bool(row[0])
            if isinstance(result, _Retry):
                if not expired and kind.retry.attempts_left(effect.attempts):
                    delay = kind.retry.delay(effect.attempts)
                    self._schedule(uow, effect, result.error, delay)
                    log.info("effect.retry_scheduled", error=result.error, retry_in=round(delay, 2))
                    return
                result = EffectOutcome(
                    ok=False, error=f"gave up after {effect.attempts} attempts: {result.error}"
                )
                log.warning("effect.gave_up", error=result.error)
            self._record(uow, effect, result)
            try:
                kind.on_outcome(uow, effect, result)
            except Exception as exc:
                raise _DecisionFailed from exc
        log.info("effect.recorded", ok=result.ok)

    def _record(self, uow: UnitOfWork, effect: Effect, outcome: EffectOutcome) -> None:
        recorded = uow.conn.execute(
            self._sql.record,
            (
                "done" if outcome.ok else "failed",
                Jsonb(outcome.to_json()),
                outcome.error,
                effect.id,
                self.owner,
            ),
        ).fetchone()
        assert recorded is not None  # the row is locked by ``owned`` in this transaction

    def _schedule(self, uow: UnitOfWork, effect: Effect, error: str, delay: float) -> None:
        uow.conn.execute(self._sql.retry, (error, timedelta(seconds=delay), effect.id, self.owner))

    def _release(self, effect: Effect, kind: EffectKind, error: str) -> None:
        """Back to pending after a failed decision: tried again, call included, later."""
        try:
            with self.uow_factory.begin() as uow:
                self._schedule(uow, effect, error, kind.retry.delay(effect.attempts))
        except Exception as exc:
            if not is_transient_db_error(exc):
                raise
            log.warning("effect.release_failed", error=repr(exc))
