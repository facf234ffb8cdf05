"""Settling the outcomes that arrive together in one transaction: decided one by one,
written per batch.

Calls run on many threads and finish at their own pace; each hands its outcome to
one settling thread and waits. That thread (started when an outcome arrives and
none runs, gone when none waits) settles, in one transaction, every outcome
waiting at that moment, then the ones that arrived meanwhile. One statement
takes the locks of all the batch's aggregates (sorted) and of its effects' rows
(checking each lease), the service's decisions run in the order the outcomes
arrived, reading their states once for the batch (``AggregateStates``), and one
statement marks the effects settled. If any decision raises, the batch rolls
back and each of its outcomes is settled alone (``Settlement.settle``), where a
failing decision is handled as before, the failure in the batch counting as its
first attempt; a retry is always scheduled alone.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from saga_runtime.effect_settlement import DecisionFailedInBatch, Retry, Settlement
from saga_runtime.effects import Effect, EffectKind, EffectOutcome
from saga_runtime.logs import get_logger

__all__ = ["BatchedSettlement"]

log = get_logger(__name__)


@dataclass
class _Waiting:
    effect: Effect
    kind: EffectKind
    outcome: EffectOutcome
    settled: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class BatchedSettlement:
    """Settles outcomes of one executor in batches (see the module's doc)."""

    def __init__(self, settlement: Settlement, *, max_batch: int) -> None:
        self._settlement = settlement
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._settling = False

    def settle(self, effect: Effect, kind: EffectKind, result: EffectOutcome | Retry) -> None:
        """Settle one call's result; returns once it is settled (raises what settling it
        raised, e.g. ``SettlementInterrupted``)."""
        if isinstance(result, Retry) or self._max_batch <= 1:
            self._settlement.settle(effect, kind, result)
            return
        mine = _Waiting(effect, kind, result)
        with self._lock:
            self._waiting.append(mine)
            if not self._settling:
                self._settling = True
                threading.Thread(target=self._run, name="effects-settle", daemon=True).start()
        mine.settled.wait()
        if mine.error is not None:
            raise mine.error

    def _run(self) -> None:
        while True:
            with self._lock:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                if not batch:
                    self._settling = False
                    return
            try:
                self._settle(batch)
            finally:
                for waiting in batch:
                    waiting.settled.set()

    def _settle(self, batch: list[_Waiting]) -> None:
        failed: DecisionFailedInBatch | None = None
        if len(batch) > 1:
            items = [(w.effect, w.kind, w.outcome) for w in batch]
            try:
                self._settlement.settle_together(items)
                return
            except Exception as exc:  # each alone, where a failing decision is handled
                log.info("effects.settle_one_by_one", effects=len(batch), error=repr(exc))
                if isinstance(exc, DecisionFailedInBatch):
                    failed = exc
        for waiting in batch:
            decision_error = None
            if failed is not None and failed.effect_id == waiting.effect.id:
                decision_error = failed.error
            try:
                self._settlement.settle(
                    waiting.effect, waiting.kind, waiting.outcome, decision_error=decision_error
                )
            except BaseException as exc:
                waiting.error = exc
