"""Settling an effect after its call: its outcome recorded, then decided, apart.

Two transactions, so that a decision that fails never makes the call again: the
first stores the call's outcome (``recorded``) while the executor's lease is held;
the second runs the service's ``on_outcome`` with the aggregate's lock and marks
the effect ``done`` or ``failed``. Each is retried while the database is
unavailable, instead of letting the lease expire and another executor call again.
A decision that raises (a bug) is tried a few times, then the effect is left
``undecided``, with its error, for an operator.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from psycopg.types.json import Jsonb

from saga_runtime.backoff import Backoff
from saga_runtime.db import is_transient_db_error
from saga_runtime.effect_statements import ExecutorStatements
from saga_runtime.effects import Effect, EffectKind, EffectOutcome
from saga_runtime.logs import get_logger
from saga_runtime.settings import EffectSettings
from saga_runtime.unit_of_work import UnitOfWork, UnitOfWorkFactory

__all__ = ["Retry", "Settlement", "SettlementInterrupted"]

log = get_logger(__name__)

T = TypeVar("T")


class Retry:
    """A transient failure of a call (kept apart from outcomes: it is not one yet)."""

    def __init__(self, error: str) -> None:
        self.error = error


class SettlementInterrupted(Exception):
    """The executor stops while the database is unavailable: the lease will expire and
    another executor settles the effect (calling again only if nothing was recorded)."""


class _DecisionFailed(Exception):
    """``on_outcome`` raised something other than a transient database error."""


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

    def record(
        self, effect: Effect, kind: EffectKind, result: EffectOutcome | Retry
    ) -> EffectOutcome | None:
        """Store the call's result: the outcome to decide, or None (a retry is scheduled,
        or the lease was lost to another executor, which records instead)."""
        return self._retrying("record", lambda: self._record_once(effect, kind, result))

    def decide(self, effect: Effect, kind: EffectKind, outcome: EffectOutcome) -> None:
        """Run ``on_outcome`` and mark the effect decided; ``undecided`` if it keeps raising."""
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max)
        error = ""
        for attempt in range(1, self.settings.decision_attempts + 1):
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

    def _record_once(
        self, effect: Effect, kind: EffectKind, result: EffectOutcome | Retry
    ) -> EffectOutcome | None:
        with self.uow_factory.begin() as uow:
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
            kind.on_outcome(uow, effect, outcome)
        except Exception as exc:
            if is_transient_db_error(exc):
                raise
            raise _DecisionFailed from exc

    def _leave_undecided(self, effect: Effect, error: str) -> None:
        with self.uow_factory.begin() as uow:
            uow.conn.execute(self._sql.undecided, (error, effect.id, self.owner))
