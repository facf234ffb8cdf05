"""A unit of work: one transaction holding a state change and the events it emits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from saga_runtime.envelope import Envelope, Event
from saga_runtime.outbox import Outbox

__all__ = ["UnitOfWork", "UnitOfWorkFactory"]


@dataclass
class UnitOfWork:
    """What a handler gets: a connection inside an open transaction, and ``emit``.

    ``emit`` writes to the outbox at once, inside the same transaction, so the
    event exists if and only if the state change commits.
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
        """Record ``event`` in the outbox; causation and saga come from the cause."""
        envelope = Envelope.new(
            event,
            aggregate_id=aggregate_id,
            producer=self.producer,
            correlation_id=correlation_id,
            cause=self.cause,
        )
        self.outbox.add(self.conn, envelope)
        self.emitted.append(envelope)
        return envelope


class Wakeup(Protocol):
    def poke(self) -> None: ...


@dataclass(frozen=True)
class UnitOfWorkFactory:
    """Opens units of work on a service's pool (used by its API and its consumer).

    After a unit of work that emitted events commits, ``wakeup`` (if any) tells
    the relay there is something to publish.
    """

    pool: ConnectionPool
    outbox: Outbox
    producer: str
    wakeup: Wakeup | None = None

    @contextmanager
    def begin(self, *, cause: Envelope | None = None) -> Iterator[UnitOfWork]:
        """Commit when the block ends normally, roll back if it raises."""
        with self.pool.connection() as conn:
            with conn.transaction():
                uow = UnitOfWork(conn=conn, outbox=self.outbox, producer=self.producer, cause=cause)
                yield uow
            if uow.emitted and self.wakeup is not None:
                self.wakeup.poke()
