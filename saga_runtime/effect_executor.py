"""The effect executor: runs a service's due effects, many at once, out of any transaction.

Modelled on Temporal's activities (retry policy, a deadline, heartbeats) and
Confluent's Parallel Consumer (concurrency by key, order per key): each
aggregate's effects run one after the other, in the order they were requested;
effects of different aggregates run concurrently on a thread pool.

Claims use ``FOR UPDATE SKIP LOCKED`` and a lease, so executors in several
processes never run one effect at the same time. While an effect is in this
executor's hands its lease is renewed every third of its length (a heartbeat),
so a slow call is not taken over; an executor that dies leaves leases that
expire, and another takes the effects over and calls again with the same
idempotency key. An outcome is recorded only while its lease is still held, so a
late duplicate (the lease expired and was taken) records nothing; see
``effect_settlement`` for how it is recorded and decided.

A restarted executor first runs as many effects as its previous life held in waves
of 1, 2, 4... calls, each wave once the last is settled, then all at once: if a
call killed the process (a response its client cannot survive), it kills it alone
rather than with every call in flight, so a process in a crash loop still settles
work between crashes (the idea of Sidekiq's super_fetch and of TCP's slow start).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from uuid import uuid4

from structlog.contextvars import bound_contextvars

from saga_runtime import metrics, tracing
from saga_runtime.backoff import Backoff
from saga_runtime.db import is_transient_db_error
from saga_runtime.effect_batch import BatchedSettlement
from saga_runtime.effect_retry import is_retryable
from saga_runtime.effect_settlement import Retry, Settlement, SettlementInterrupted
from saga_runtime.effect_statements import ExecutorStatements
from saga_runtime.effects import Effect, EffectKind, EffectOutcome, Effects
from saga_runtime.faults import CrashPointError, crash_point
from saga_runtime.logs import get_logger
from saga_runtime.settings import EffectSettings
from saga_runtime.unit_of_work import UnitOfWorkFactory
from saga_runtime.workers import Worker

__all__ = ["Claimed", "EffectExecutor"]

log = get_logger(__name__)

# A claimed effect, and its outcome when only its decision is left to make (it was
# recorded by an executor that did not live to decide it).
Claimed = tuple[Effect, EffectOutcome | None]


class EffectExecutor:
    """Claims and runs the due effects of one service schema (see the module docstring).

    ``run`` blocks until ``stop``; start it as a watched ``Worker`` (``worker()``)
    so that an executor that dies of a bug takes its process down. Outcomes are
    decided in units of work of ``uow_factory``, so events that ``on_outcome``
    emits go through the outbox and wake the relay as a consumer's would.
    """

    def __init__(
        self,
        *,
        effects: Effects,
        uow_factory: UnitOfWorkFactory,
        settings: EffectSettings | None = None,
        owner: str | None = None,
        instance: str | None = None,
    ) -> None:
        self.effects = effects
        self.uow_factory = uow_factory
        self.settings = settings or EffectSettings()
        # Unique per executor instance: a restarted process must not inherit the leases
        # of its previous life (its calls may still be in flight nowhere). With a stable
        # ``instance`` name (one per process slot, like a static consumer's), a new life
        # knows its predecessors' leases and takes them over when it starts.
        self.instance = instance
        prefix = instance or f"{socket.gethostname()}:{os.getpid()}"
        self.owner = owner or f"{prefix}:{uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        # Effects in this executor's hands -> when their lease was last taken or renewed.
        self._held: dict[int, float] = {}
        # After a take-over: effects still to run in growing waves, and the next wave's size.
        self._ramp_left = 0
        self._ramp_wave = 1
        # The last claim took all it asked for: more is due than there are free threads.
        self._backlog = False
        self._failure: BaseException | None = None
        self._sql = ExecutorStatements(effects.schema)
        self._settlement = Settlement(
            uow_factory=uow_factory,
            statements=self._sql,
            settings=self.settings,
            owner=self.owner,
            stopping=self._stopping,
        )
        self._settling = BatchedSettlement(self._settlement, max_batch=self.settings.settle_batch)

    @property
    def _in_flight(self) -> int:
        with self._lock:
            return len(self._held)

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
        # Woken at least every third of a lease, for the heartbeat.
        tick = min(settings.poll_interval, settings.lease / 3)
        pool = ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix=f"{self.effects.schema}-effect"
        )
        self.effects.subscribe(self.nudge)
        log.info("effects.executor_started", owner=self.owner, concurrency=settings.concurrency)
        self._take_over()
        try:
            while not self._stopping.is_set():
                self._raise_failure()
                self._wake.clear()
                self.heartbeat()
                wanted = self._wanted()
                if wanted <= 0:
                    self._wake.wait(tick)
                    continue
                try:
                    claimed = self.claim(wanted)
                except Exception as exc:
                    if not is_transient_db_error(exc):
                        raise
                    delay = backoff.next_delay()
                    log.warning("effects.claim_failed", error=repr(exc), retry_in=round(delay, 2))
                    self._stopping.wait(min(delay, tick))
                    continue
                backoff.reset()
                self._backlog = len(claimed) == wanted
                self._ramp_up(len(claimed))
                for effect, outcome in claimed:
                    pool.submit(self._run_one, effect, outcome)
                if claimed and len(claimed) == wanted:
                    continue  # there may be more due right now
                self._wake.wait(tick)
            self._raise_failure()
        finally:
            self.effects.unsubscribe(self.nudge)
            # After a failure, calls in flight finish on their own threads (their
            # leases protect the effects); on a clean stop they are settled first.
            failed = self._failure is not None
            pool.shutdown(wait=not failed, cancel_futures=failed)
            log.info("effects.executor_stopped", owner=self.owner)

    def _wanted(self) -> int:
        """How many effects to claim now: the free threads, or while ramping up after a
        take-over, the next wave once the last one is settled.

        With a backlog (the last claim took all it asked for), claims wait for an eighth
        of the threads to be free: each claim reads every aggregate's head, so claiming
        each thread as it frees up would cost one such read per effect under load.
        """
        in_flight = self._in_flight
        settings = self.settings
        if self._ramp_left > 0:
            if in_flight:
                return 0
            return min(self._ramp_wave, self._ramp_left, settings.concurrency)
        free = min(settings.concurrency - in_flight, settings.claim_batch)
        if (
            self._backlog
            and in_flight
            and free < min(settings.claim_batch, settings.concurrency // 8)
        ):
            return 0
        return free

    def _ramp_up(self, claimed: int) -> None:
        if self._ramp_left > 0:
            # Nothing due (claimed by another executor, or waiting for a retry): ramp over.
            self._ramp_left = self._ramp_left - claimed if claimed else 0
            self._ramp_wave *= 2

    def _take_over(self) -> None:
        """End the leases of this instance's previous lives at once, so their effects are
        claimed now instead of when the leases expire (a restart after a crash)."""
        if self.instance is None:
            return
        try:
            with self.uow_factory.pool.connection() as conn:
                rows = conn.execute(
                    self._sql.take_over, (f"{self.instance}:", self.owner)
                ).fetchall()
        except Exception as exc:
            if not is_transient_db_error(exc):
                raise
            log.warning("effects.take_over_failed", error=repr(exc))  # the leases expire
            return
        if rows:
            log.info("effects.taken_over", effect_ids=[row[0] for row in rows])
            self._ramp_left, self._ramp_wave = len(rows), 1

    def claim(self, limit: int) -> list[Claimed]:
        """Lease up to ``limit`` due effects, at most one per aggregate: its oldest unfinished.

        The claimed effects are in this executor's hands (``heartbeat`` renews their
        leases) until ``execute`` settles them.
        """
        with self.uow_factory.pool.connection() as conn:
            rows = conn.execute(
                self._sql.claim, (limit, self.owner, timedelta(seconds=self.settings.lease))
            ).fetchall()
        claimed_at = time.monotonic()
        claimed: list[Claimed] = []
        with self._lock:
            for row in rows:
                effect = Effect(
                    id=row[0],
                    aggregate_id=row[1],
                    kind=row[2],
                    key=row[3],
                    request=row[4],
                    attempts=row[5],
                    correlation_id=row[6],
                    traceparent=row[9],
                )
                outcome = EffectOutcome.from_json(row[8]) if row[7] == "recorded" else None
                self._held[effect.id] = claimed_at
                claimed.append((effect, outcome))
        return claimed

    def heartbeat(self) -> None:
        """Renew the leases held for a third of their length or more (a slow call keeps
        its effect); a lease found lost is only logged: its recording will notice."""
        lease = self.settings.lease
        now = time.monotonic()
        with self._lock:
            due = [effect_id for effect_id, since in self._held.items() if now - since >= lease / 3]
        if not due:
            return
        try:
            with self.uow_factory.pool.connection() as conn:
                rows = conn.execute(
                    self._sql.renew, (timedelta(seconds=lease), due, self.owner)
                ).fetchall()
        except Exception as exc:
            if not is_transient_db_error(exc):
                raise
            log.warning("effects.heartbeat_failed", error=repr(exc), effects=len(due))
            return
        renewed = {row[0] for row in rows}
        with self._lock:
            for effect_id in renewed:
                if effect_id in self._held:
                    self._held[effect_id] = now
        if lost := sorted(set(due) - renewed):
            log.warning("effects.leases_lost", effect_ids=lost, owner=self.owner)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _run_one(self, effect: Effect, outcome: EffectOutcome | None) -> None:
        try:
            with bound_contextvars(
                effect_id=effect.id,
                aggregate_id=effect.aggregate_id,
                effect_kind=effect.kind,
                attempt=effect.attempts,
            ):
                self.execute(effect, outcome)
        except BaseException as exc:
            # A bug (or an armed crash point): the executor dies with it, and so does
            # its process, rather than leaving effects that nobody runs.
            with self._lock:
                if self._failure is None:
                    self._failure = exc
        finally:
            with self._lock:
                self._held.pop(effect.id, None)
            self._wake.set()

    def execute(self, effect: Effect, outcome: EffectOutcome | None = None) -> None:
        """Settle a claimed ``effect``: make its call, then record and decide the outcome
        (or schedule a retry). Given an ``outcome`` already recorded, only decide: a
        recorded call is never made again."""
        kind = self.effects.kind(effect.kind)
        try:
            if outcome is None:
                result = self._call(effect, kind)
                # Between the call and its recording: after a crash here the lease
                # expires and the call is made again with the same key.
                crash_point("effects.after_call")
                self._settling.settle(effect, kind, result)
            else:
                self._settlement.decide(effect, kind, outcome)
        except SettlementInterrupted as interrupted:
            log.warning("effect.settlement_interrupted", step=str(interrupted))

    def _call(self, effect: Effect, kind: EffectKind) -> EffectOutcome | Retry:
        started = time.monotonic()
        result = self._attempt(effect, kind)
        metrics.effect_called(
            self.effects.schema,
            effect.kind,
            "retry" if isinstance(result, Retry) else "ok" if result.ok else "failed",
            time.monotonic() - started,
        )
        return result

    def _attempt(self, effect: Effect, kind: EffectKind) -> EffectOutcome | Retry:
        try:
            with tracing.span(
                f"call {effect.kind}",
                parent=effect.traceparent,
                kind=tracing.SpanKind.CLIENT,
                attributes={"saga.effect_id": effect.id, "saga.attempt": effect.attempts},
            ):
                return EffectOutcome(ok=True, result=kind.call(effect.request, effect.key))
        except CrashPointError:
            # A crash point inside a call stands for the process dying there (between
            # the far side's work and its recording), not for a failed call.
            raise
        except Exception as exc:
            if is_retryable(exc):
                return Retry(repr(exc))
            log.warning("effect.call_failed", error=repr(exc))
            return EffectOutcome(ok=False, error=repr(exc))
