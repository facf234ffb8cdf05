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
from dataclasses import dataclass, field, replace
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

__all__ = [
    "Call",
    "Effect",
    "EffectKind",
    "EffectOutcome",
    "EffectRequest",
    "Effects",
    "OnOutcome",
]

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
class EffectRequest:
    """An effect to be recorded (``Effects.prepare``): ``request`` is its JSON text."""

    kind: str
    aggregate_id: str
    key: str
    request: str
    correlation_id: UUID | None
    deadline: timedelta
    traceparent: str | None


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
        # Many at once, in the order requested (ids follow it: an aggregate's effects run
        # in id order); a key recorded before is skipped, and looked up below.
        self._insert_many = (
            sql.SQL(
                "INSERT INTO {} (aggregate_id, kind, idempotency_key, request, correlation_id,"
                " deadline_at, traceparent)"
                " SELECT u.a, u.k, u.key, u.r::jsonb, u.c, now() + u.d, u.tp"
                " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::uuid[],"
                " %s::interval[], %s::text[]) WITH ORDINALITY AS u(a, k, key, r, c, d, tp, n)"
                " ORDER BY u.n"
                " ON CONFLICT (idempotency_key) DO NOTHING RETURNING idempotency_key, id"
            )
            .format(table)
            .as_string()
        )
        self._existing_many = (
            sql.SQL(
                "SELECT idempotency_key, id, kind, aggregate_id FROM {}"
                " WHERE idempotency_key = ANY(%s)"
            )
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

    def prepare(
        self,
        kind: str,
        *,
        aggregate_id: str,
        key: str,
        request: JSON,
        correlation_id: UUID | None = None,
        deadline: timedelta | None = None,
    ) -> EffectRequest:
        """An effect to record (``add_many``): its kind checked, its deadline settled, and
        the requesting span's ``traceparent`` taken now (its call and decision join it)."""
        declared = self.kind(kind)
        return EffectRequest(
            kind=kind,
            aggregate_id=aggregate_id,
            key=key,
            request=json.dumps(request),
            correlation_id=correlation_id,
            deadline=deadline if deadline is not None else declared.deadline,
            traceparent=tracing.current_traceparent(),
        )

    def add_many(self, conn: psycopg.Connection, requests: list[EffectRequest]) -> list[int]:
        """Record ``requests`` in ``conn``'s open transaction; their ids, in order.

        One statement for all of them, and one more only if some key was recorded
        before. Idempotent on the key: a key recorded before (a redelivered message)
        records nothing and gives the first effect's id, unless it names another kind
        or aggregate (EffectUsageError). The caller holds the aggregates' locks
        (``UnitOfWork.request_effect`` takes them), so one aggregate's effects get ids in
        the order their transactions commit, the order the executor runs them in.
        """
        if conn.info.transaction_status != TransactionStatus.INTRANS:
            raise EffectUsageError("an effect must be requested inside the deciding transaction")
        unique: dict[str, EffectRequest] = {}
        for wanted in requests:
            unique.setdefault(wanted.key, wanted)
        rows = list(unique.values())
        ids: dict[str, int] = dict(
            conn.execute(
                self._insert_many,
                (
                    [r.aggregate_id for r in rows],
                    [r.kind for r in rows],
                    [r.key for r in rows],
                    [r.request for r in rows],
                    [r.correlation_id for r in rows],
                    [r.deadline for r in rows],
                    [r.traceparent for r in rows],
                ),
            ).fetchall()
        )
        earlier = [key for key in unique if key not in ids]
        if earlier:
            for key, effect_id, kind, aggregate_id in conn.execute(
                self._existing_many, (earlier,)
            ).fetchall():
                ids[key] = effect_id
                unique[key] = replace(unique[key], kind=kind, aggregate_id=aggregate_id)
        for wanted in requests:
            named = unique[wanted.key]
            if (named.kind, named.aggregate_id) != (wanted.kind, wanted.aggregate_id):
                raise EffectUsageError(
                    f"idempotency key {wanted.key!r} already names a {named.kind} effect"
                    f" of aggregate {named.aggregate_id}"
                )
        return [int(ids[wanted.key]) for wanted in requests]

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
        """Record one effect now (see ``add_many``); returns its id."""
        wanted = self.prepare(
            kind,
            aggregate_id=aggregate_id,
            key=key,
            request=request,
            correlation_id=correlation_id,
            deadline=deadline,
        )
        return self.add_many(conn, [wanted])[0]

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
