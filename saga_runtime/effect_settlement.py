"""Settling an effect after its call: its outcome recorded and decided.

One transaction when the decision succeeds: while the executor's lease is held, it
runs the service's ``on_outcome`` with the aggregate's lock, stores the outcome and
marks the effect ``done`` or ``failed``. A decision that raises (a bug) rolls that
back; the outcome is then stored alone (``recorded``), so that a failing decision
never makes the call again, and the decision is tried a few more times in
transactions of its own, then the effect is left ``undecided``, with its error, for
an operator. Each step is retried while the database is unavailable, instead of
letting the lease expire and another executor call again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from psycopg.types.json import Jsonb

from saga_runtime import tracing
from saga_runtime.backoff import Backoff
from saga_runtime.db import is_transient_db_error
from saga_runtime.effect_statements import ExecutorStatements
from saga_runtime.effects import Effect, EffectKind, EffectOutcome
from saga_runtime.faults import crash_point
from saga_runtime.logs import get_logger
from saga_runtime.settings import EffectSettings
from saga_runtime.unit_of_work import UnitOfWork, UnitOfWorkFactory

__all__ = ["DecisionFailedInBatch", "Retry", "Settlement", "SettlementInterrupted"]

log = get_logger(__name__)

T = TypeVar("T")


class Retry:
    """A transient failure of a call (kept apart from outcomes: it is not one yet)."""

    def __init__(self, error: str) -> None:
        self.error = error


class SettlementInterrupted(Exception):
    """The executor stops while the database is unavailable: the lease will expire and
    another executor settles the effect (calling again only if nothing was recorded)."""


class DecisionFailedInBatch(Exception):
    """A decision raised in ``settle_together`` (nothing of the batch committed): the
    effect whose decision it was, and the error, counted as its first failed decision."""

    def __init__(self, effect_id: int, error: str) -> None:
        super().__init__(f"effect {effect_id}: {error}")
        self.effect_id = effect_id
        self.error = error


class _DecisionFailed(Exception):
    """``on_outcome`` raised something other than a transient database error."""


class _Undecided(Exception):
    """The decision about ``outcome`` failed in the transaction that was to record it."""

    def __init__(self, outcome: EffectOutcome, error: str) -> None:
        super().__init__(error)
        self.outcome = outcome
        self.error = error


class Settlement:
    """Records and decides the effects of one executor (``owner``), guarded by its leases."""

    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        statements: ExecutorStatements,
        settings: EffectSettings,
        owner: str,
        stopping: threading.Event,
    ) -> None:
        self.uow_factory = uow_factory
        self._sql = statements
        self.settings = settings
        self.owner = owner
        self._stopping = stopping

    def settle(
        self,
        effect: Effect,
        kind: EffectKind,
        result: EffectOutcome | Retry,
        *,
        decision_error: str | None = None,
    ) -> None:
        """Record the call's result and decide about it, in one transaction if the decision
        succeeds; otherwise record it alone, then decide apart (see the module's doc).
        ``decision_error``: its decision already failed once (in a batch), with that error."""
        if decision_error is None:
            try:
                self._retrying("settle", lambda: self._settle_once(effect, kind, result))
                return
            except _Undecided as undecided:
                log.error(
                    "effect.on_outcome_failed",
                    error=undecided.error,
                    decision=1,
                    exc_info=undecided,
                )
                result, decision_error = undecided.outcome, undecided.error
        outcome = self.record(effect, kind, result)
        if outcome is None:
            return
        # Recorded, not decided: after a crash here the decision alone is made.
        crash_point("effects.after_record")
        self.decide(effect, kind, outcome, tried=1, error=decision_error)

    def settle_together(self, items: list[tuple[Effect, EffectKind, EffectOutcome]]) -> None:
        """Record and decide several outcomes in one transaction, decisions in the given
        order; raises ``DecisionFailedInBatch`` (nothing committed) if a decision raises,
        for the caller to settle each alone."""
        self._retrying("settle", lambda: self._settle_together_once(items))

    def _settle_together_once(self, items: list[tuple[Effect, EffectKind, EffectOutcome]]) -> None:
        with self.uow_factory.begin() as uow:
            aggregates = {effect.aggregate_id for effect, _, _ in items}
            keys = [uow.outbox.lock_key(aggregate) for aggregate in aggregates]
            ids = [effect.id for effect, _, _ in items]
            rows = uow.conn.execute(self._sql.owned_many, (keys, ids, self.owner)).fetchall()
            uow.locked.update(aggregates)
            owned = {row[0] for row in rows}
            settled: list[tuple[Effect, EffectOutcome]] = []
            for effect, kind, outcome in items:
                if effect.id not in owned:
                    log.warning("effect.lease_lost", owner=self.owner, effect_id=effect.id)
                    continue
                # The effect's saga goes on in the events its decision emits.
                uow.correlation_id = effect.correlation_id
                try:
                    self._on_outcome(uow, effect, kind, outcome)
                except _DecisionFailed as failed:
                    error = f"on_outcome raised {failed.__cause__!r}"
                    log.error("effect.on_outcome_failed", error=error, decision=1, exc_info=failed)
                    raise DecisionFailedInBatch(effect.id, error) from failed
                settled.append((effect, outcome))
            if settled:
                uow.conn.execute(
                    self._sql.settled_many,
                    (
                        [effect.id for effect, _ in settled],
                        ["done" if outcome.ok else "failed" for _, outcome in settled],
                        [Jsonb(outcome.to_json()) for _, outcome in settled],
                        [outcome.error for _, outcome in settled],
                    ),
                )
        log.info("effects.decided", effects=len(settled))

    def record(
        self, effect: Effect, kind: EffectKind, result: EffectOutcome | Retry
    ) -> EffectOutcome | None:
        """Store the call's result: the outcome to decide, or None (a retry is scheduled,
        or the lease was lost to another executor, which records instead)."""
        return self._retrying("record", lambda: self._record_once(effect, kind, result))

    def decide(
        self,
        effect: Effect,
        kind: EffectKind,
        outcome: EffectOutcome,
        *,
        tried: int = 0,
        error: str = "",
    ) -> None:
        """Run ``on_outcome`` and mark the effect decided; ``undecided`` if it keeps raising
        (``tried`` decisions already failed, the last with ``error``)."""
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
        if (
            tried
            and tried < self.settings.decision_attempts
            and self._stopping.wait(backoff.next_delay())
        ):
            raise SettlementInterrupted("stopping")
        for attempt in range(tried + 1, self.settings.decision_attempts + 1):
            try:
                self._retrying("decide", lambda: self._decide_once(effect, kind, outcome))
                return
            except _DecisionFailed as failed:
                error = f"on_outcome raised {failed.__cause__!r}"
                log.error(
                    "effect.on_outcome_failed", error=error, decision=attempt, exc_info=failed
                )
            if attempt < self.settings.decision_attempts and self._stopping.wait(
                backoff.next_delay()
            ):
                raise SettlementInterrupted("stopping")
        self._retrying("leave undecided", lambda: self._leave_undecided(effect, error))
        log.error("effect.undecided", error=error)

    def _retrying(self, what: str, step: Callable[[], T]) -> T:
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
        while True:
            try:
                return step()
            except Exception as exc:
                if not is_transient_db_error(exc):
                    raise
                delay = backoff.next_delay()
                log.warning(f"effect.{what}_failed", error=repr(exc), retry_in=round(delay, 2))
                if self._stopping.wait(delay):
                    raise SettlementInterrupted(what) from exc

    def _settle_once(self, effect: Effect, kind: EffectKind, result: EffectOutcome | Retry) -> None:
        # The effect's saga goes on in the events its decision emits.
        with self.uow_factory.begin(correlation_id=effect.correlation_id) as uow:
            # The aggregate's lock first, as a consumer takes it: on_outcome reads and
            # changes the aggregate's state in this transaction.
            outcome = self._owned_outcome(uow, effect, kind, result, lock=True)
            if outcome is None:
                return
            try:
                self._on_outcome(uow, effect, kind, outcome)
            except _DecisionFailed as failed:
                raise _Undecided(outcome, f"on_outcome raised {failed.__cause__!r}") from failed
            status = "done" if outcome.ok else "failed"
            params = (status, Jsonb(outcome.to_json()), outcome.error, effect.id)
            uow.conn.execute(self._sql.settled, params)
        log.info("effect.decided", ok=outcome.ok)

    def _owned_outcome(
        self,
        uow: UnitOfWork,
        effect: Effect,
        kind: EffectKind,
        result: EffectOutcome | Retry,
        *,
        lock: bool = False,
    ) -> EffectOutcome | None:
        """Lock the effect's row (``lock``: after its aggregate's, in the same round trip);
        the outcome to store, or None when there is none to store yet (a retry is
        scheduled) or the lease was lost to another executor."""
        if lock and effect.aggregate_id not in uow.locked:
            key = uow.outbox.lock_key(effect.aggregate_id)
            row = uow.conn.execute(self._sql.owned_locking, (key, effect.id, self.owner)).fetchone()
            uow.locked.add(effect.aggregate_id)
        else:
            row = uow.conn.execute(self._sql.owned, (effect.id, self.owner)).fetchone()
        if row is None:
            log.warning("effect.lease_lost", owner=self.owner)
            return None
        expired = bool(row[0])
        if isinstance(result, Retry):
            if not expired and kind.retry.attempts_left(effect.attempts):
                delay = kind.retry.delay(effect.attempts)
                uow.conn.execute(
                    self._sql.retry,
                    (result.error, timedelta(seconds=delay), effect.id, self.owner),
                )
                log.info("effect.retry_scheduled", error=result.error, retry_in=round(delay, 2))
                return None
            result = EffectOutcome(
                ok=False, error=f"gave up after {effect.attempts} attempts: {result.error}"
            )
            log.warning("effect.gave_up", error=result.error)
        return result

    def _record_once(
        self, effect: Effect, kind: EffectKind, result: EffectOutcome | Retry
    ) -> EffectOutcome | None:
        with self.uow_factory.begin() as uow:
            outcome = self._owned_outcome(uow, effect, kind, result)
            if outcome is None:
                return None
            result = outcome
            lease = timedelta(seconds=self.settings.lease)
            params = (Jsonb(result.to_json()), result.error, lease, effect.id, self.owner)
            recorded = uow.conn.execute(self._sql.record, params).fetchone()
            assert recorded is not None  # the row is locked by ``owned`` in this transaction
        return result

    def _decide_once(self, effect: Effect, kind: EffectKind, outcome: EffectOutcome) -> None:
        # The effect's saga goes on in the events its decision emits.
        with self.uow_factory.begin(correlation_id=effect.correlation_id) as uow:
            # The aggregate's lock first, as a consumer takes it: on_outcome reads and
            # changes the aggregate's state in this transaction.
            uow.lock(effect.aggregate_id)
            if uow.conn.execute(self._sql.deciding, (effect.id, self.owner)).fetchone() is None:
                log.warning("effect.lease_lost", owner=self.owner)
                return
            self._on_outcome(uow, effect, kind, outcome)
            status = "done" if outcome.ok else "failed"
            uow.conn.execute(self._sql.decided, (status, effect.id))
        log.info("effect.decided", ok=outcome.ok)

    def _on_outcome(
        self, uow: UnitOfWork, effect: Effect, kind: EffectKind, outcome: EffectOutcome
    ) -> None:
        try:
            # What the decision emits continues the trace of the request.
            with tracing.span(f"decide {effect.kind}", parent=effect.traceparent):
                kind.on_outcome(uow, effect, outcome)
        except Exception as exc:
            if is_transient_db_error(exc):
                raise
            raise _DecisionFailed from exc

    def _leave_undecided(self, effect: Effect, error: str) -> None:
        with self.uow_factory.begin() as uow:
            uow.conn.execute(self._sql.undecided, (error, effect.id, self.owner))
