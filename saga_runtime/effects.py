"""Effects: calls to the outside world, recorded in the transaction that decides them.

The outbox pattern applied to commands. A decision that needs another system
to act does not make the call: it requests an effect, a row
written in the same transaction as its state change, so the call is made if and
only if the decision commits. ``EffectExecutor`` makes the calls afterwards, out
of any transaction, and feeds each outcome back to the service's ``on_outcome``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from saga_runtime import tracing
from saga_runtime.effect_retry import RetryPolicy
from saga_runtime.errors import EffectUsageError
from saga_runtime.naming import validate_service_name

if TYPE_CHECKING:
    from saga_runtime.unit_of_work import UnitOfWork

__all__ = ["Call", "Effect", "EffectKind", "EffectOutcome", "Effects", "OnOutcome"]

JSON = dict[str, Any]


@dataclass(frozen=True)
class Effect:
    """One requested call, as the executor claimed it (``attempts`` counts this one)."""

    id: int
    aggregate_id: str
    kind: str
    key: str
    request: JSON
    attempts: int = 0
    correlation_id: UUID | None = None
    traceparent: str | None = None  # the span that requested it (saga_runtime.tracing)


@dataclass(frozen=True)
class EffectOutcome:
    """What came of an effect: ``ok`` with the call's result, or a terminal failure."""

    ok: bool
    result: JSON = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> JSON:
        return {"ok": self.ok, "result": self.result, "error": self.error}

    @classmethod
    def from_json(cls, data: JSON) -> EffectOutcome:
        """The outcome ``to_json`` stored (read back to decide a recorded effect)."""
        return cls(ok=bool(data["ok"]), result=data.get("result") or {}, error=data.get("error"))


# ``call(request, idempotency_key) -> result``: blocking, and safe to repeat with the
# same key (the far side answers a repeated key with its first result). Raises
# ``RetryableError`` for a failure that may pass; any other exception is terminal.
Call = Callable[[JSON, str], JSON]
# ``on_outcome(uow, effect, outcome)``: the service's decision about the outcome, in a
# transaction of its own once the outcome is recorded (so a decision that fails is made
# again without calling again), holding the aggregate's lock and continuing the
# effect's saga; it may emit events and request further effects.
OnOutcome = Callable[["UnitOfWork", Effect, EffectOutcome], None]


@dataclass(frozen=True, kw_only=True)
class EffectKind:
    """A kind of effect a service declares: how to call, what to do with the outcome.

    ``deadline`` runs from the request: transient failures are retried (``retry``)
    until then, after which the effect fails for good and ``on_outcome`` hears so.
    """

    name: str
    call: Call
    on_outcome: OnOutcome
    deadline: timedelta = timedelta(minutes=10)
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class Effects:
    """One service's effects table: requests written in the caller's transaction.

    Also the in-process wakeup: executors ``subscribe`` to it, and the unit of
    work calls ``poke`` after a commit that requested effects, so they need not
    wait for their next poll.
    """

    def __init__(self, *, schema: str, kinds: Iterable[EffectKind]) -> None:
        self.schema = validate_service_name(schema)
        self.kinds: Mapping[str, EffectKind] = {kind.name: kind for kind in kinds}
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        table = sql.Identifier(self.schema, "effects")
        self._insert = (
            sql.SQL(
                "INSERT INTO {} (aggregate_id, kind, idempotency_key, request, correlation_id,"
                " deadline_at, traceparent) VALUES (%s, %s, %s, %s::jsonb, %s, now() + %s, %s)"
                " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
            )
            .format(table)
            .as_string()
        )
        self._existing = (
            sql.SQL("SELECT id, kind, aggregate_id FROM {} WHERE idempotency_key = %s")
            .format(table)
            .as_string()
        )

    def kind(self, name: str) -> EffectKind:
        """The declared kind called ``name``; EffectUsageError if there is none."""
        try:
            return self.kinds[name]
        except KeyError:
            declared = ", ".join(sorted(self.kinds)) or "none"
            raise EffectUsageError(
                f"{self.schema} declares no effect kind {name!r} (declared: {declared})"
            ) from None

    def request(
        self,
        conn: psycopg.Connection,
        kind: str,
        *,
        aggregate_id: str,
        key: str,
        request: JSON,
        correlation_id: UUID | None = None,
        deadline: timedelta | None = None,
    ) -> int:
        """Record an effect in ``conn``'s open transaction; returns its id.

        Idempotent on ``key``: requesting it again (a redelivered message) returns
        the first effect's id and records nothing. The caller holds the
        aggregate's lock (``UnitOfWork.request_effect`` takes it), so one
        aggregate's effects get ids in the order their transactions commit, the
        order the executor runs them in.
        """
        if conn.info.transaction_status != TransactionStatus.INTRANS:
            raise EffectUsageError("an effect must be requested inside the deciding transaction")
        declared = self.kind(kind)
        row = conn.execute(
            self._insert,
            (
                aggregate_id,
                kind,
                key,
                json.dumps(request),
                correlation_id,
                deadline if deadline is not None else declared.deadline,
                # The requesting handler's span: the call and its decision join its trace.
                tracing.current_traceparent(),
            ),
        ).fetchone()
        if row is not None:
            return int(row[0])
        existing = conn.execute(self._existing, (key,)).fetchone()
        assert existing is not None  # the conflict was on this key, and rows are never deleted
        if (existing[1], existing[2]) != (kind, aggregate_id):
            raise EffectUsageError(
                f"idempotency key {key!r} already names a {existing[1]} effect"
                f" of aggregate {existing[2]}"
            )
        return int(existing[0])

    def subscribe(self, nudge: Callable[[], None]) -> None:
        """Call ``nudge`` (cheap, non-blocking) after each commit that requested effects."""
        with self._lock:
            self._listeners.append(nudge)

    def unsubscribe(self, nudge: Callable[[], None]) -> None:
        with self._lock:
            if nudge in self._listeners:
                self._listeners.remove(nudge)

    def poke(self) -> None:
        """Wake the subscribed executors (a lost poke costs one poll interval)."""
        with self._lock:
            listeners = list(self._listeners)
        for nudge in listeners:
            nudge()
