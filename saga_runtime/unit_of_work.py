"""A unit of work: one transaction holding a state change and the events it emits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol
from uuid import UUID

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from saga_runtime import tracing
from saga_runtime.effects import EffectRequest, Effects
from saga_runtime.envelope import Envelope, Event
from saga_runtime.errors import EffectUsageError
from saga_runtime.outbox import Outbox

__all__ = ["UnitOfWork", "UnitOfWorkFactory"]


@dataclass
class UnitOfWork:
    """What a handler gets: a connection inside an open transaction, and ``emit``.

    ``emit`` queues the event for the outbox; ``flush``, which whoever opened the
    unit of work calls just before commit, writes every queued event in one
    statement, inside the same transaction, so the event exists if and only if
    the state change commits. Handlers may queue rows of their own the same way
    (``defer``): a batch of events then costs one statement per table, not one
    per row.
    """

    conn: psycopg.Connection
    outbox: Outbox
    producer: str
    cause: Envelope | None = None
    emitted: list[Envelope] = field(default_factory=list)
    # Aggregates whose advisory lock this transaction already holds. Valid because a
    # unit of work has no savepoints: rolling back to one would release locks taken
    # after it, so a handler that opens a nested transaction must not lock inside it.
    locked: set[str] = field(default_factory=set)
    effects: Effects | None = None
    requested: list[int] = field(default_factory=list)
    # The saga of a unit of work without a cause (an effect's outcome): what it emits
    # and requests belongs to it, instead of starting a new saga.
    correlation_id: UUID | None = None
    # What repositories know of aggregates in this transaction (see AggregateStates).
    memo: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Rows queued for one statement each at flush, by writer, in first-queued order.
    _deferred: dict[Callable[[psycopg.Connection, list[Any]], object], list[Any]] = field(
        default_factory=dict
    )
    # Called once the transaction committed (never if it rolls back): counting what happened.
    committed: list[Callable[[], object]] = field(default_factory=list)

    def defer(self, writer: Callable[[psycopg.Connection, list[Any]], object], row: Any) -> None:
        """Queue ``row`` for ``writer``, which gets every row queued for it, in order, in one
        call at ``flush`` (inside this transaction). Writers run in first-queued order."""
        self._deferred.setdefault(writer, []).append(row)

    def flush(self) -> None:
        """Write what is queued (the outbox's events among it); called before commit."""
        while self._deferred:
            writer = next(iter(self._deferred))
            writer(self.conn, self._deferred.pop(writer))

    def lock(self, aggregate_id: str) -> None:
        """Take the aggregate's lock before reading its state (see ``Outbox.lock_aggregate``).

        Held until the transaction ends, so a second call for the same
        aggregate costs no round trip.
        """
        if aggregate_id in self.locked:
            return
        self.outbox.lock_aggregate(self.conn, aggregate_id)
        self.locked.add(aggregate_id)

    def emit(
        self, event: Event, *, aggregate_id: str, correlation_id: UUID | None = None
    ) -> Envelope:
        """Record ``event`` in the outbox; causation and saga come from the cause (the
        saga from the unit of work's ``correlation_id`` when it has no cause)."""
        if correlation_id is None and self.cause is None:
            correlation_id = self.correlation_id
        # A span of its own (ended at once): the event's consumers continue the trace from
        # it, so each event is a child of the handler, decision or request that emitted it.
        emitting = tracing.start_span(
            f"emit {event.event_type}",
            kind=tracing.SpanKind.PRODUCER,
            attributes={"saga.aggregate_id": aggregate_id, "saga.service": self.producer},
        )
        emitting.end()
        envelope = Envelope.new(
            event,
            aggregate_id=aggregate_id,
            producer=self.producer,
            correlation_id=correlation_id,
            cause=self.cause,
            traceparent=tracing.traceparent_of(emitting),
        )
        self.outbox.check(envelope)  # a bug shows where it is, not at commit
        self.defer(self.outbox.add_many, envelope)
        self.emitted.append(envelope)
        return envelope

    def request_effect(
        self,
        kind: str,
        *,
        aggregate_id: str,
        key: str,
        request: dict[str, Any],
        deadline: timedelta | None = None,
    ) -> None:
        """Record a call to the outside world, made after this transaction commits.

        Takes the aggregate's lock first (effects of one aggregate run in commit
        order) and inherits the cause's saga; idempotent on ``key`` (see
        ``Effects.add_many``). The row is written at ``flush`` with the unit of work's
        other requests, in one statement; ``requested`` then holds their ids.
        """
        if self.effects is None:
            raise EffectUsageError(f"{self.producer} has no effects table configured")
        if self.conn.info.transaction_status != TransactionStatus.INTRANS:
            raise EffectUsageError("an effect must be requested inside the deciding transaction")
        self.lock(aggregate_id)
        wanted = self.effects.prepare(
            kind,
            aggregate_id=aggregate_id,
            key=key,
            request=request,
            correlation_id=(
                self.cause.correlation_id if self.cause is not None else self.correlation_id
            ),
            deadline=deadline,
        )
        self.defer(self._record_effects, wanted)

    def _record_effects(self, conn: psycopg.Connection, requests: list[EffectRequest]) -> None:
        assert self.effects is not None  # request_effect checked
        self.requested.extend(self.effects.add_many(conn, requests))


class Wakeup(Protocol):
    def poke(self) -> None: ...


@dataclass(frozen=True)
class UnitOfWorkFactory:
    """Opens units of work on a service's pool (used by its API and its consumer).

    After a unit of work that emitted events commits, ``wakeup`` (if any) tells
    the relay there is something to publish; after one that requested effects,
    ``effects`` wakes its executors.
    """

    pool: ConnectionPool
    outbox: Outbox
    producer: str
    wakeup: Wakeup | None = None
    effects: Effects | None = None

    @contextmanager
    def begin(
        self, *, cause: Envelope | None = None, correlation_id: UUID | None = None
    ) -> Iterator[UnitOfWork]:
        """Commit when the block ends normally, roll back if it raises.

        ``cause`` is the event being applied; without one, ``correlation_id`` names
        the saga the unit of work continues (see ``UnitOfWork.correlation_id``).
        """
        with self.pool.connection() as conn:
            with conn.transaction():
                uow = UnitOfWork(
                    conn=conn,
                    outbox=self.outbox,
                    producer=self.producer,
                    cause=cause,
                    effects=self.effects,
                    correlation_id=correlation_id,
                )
                yield uow
                uow.flush()
            for callback in uow.committed:
                callback()
            if uow.emitted and self.wakeup is not None:
                self.wakeup.poke()
            if uow.requested and self.effects is not None:
                self.effects.poke()
