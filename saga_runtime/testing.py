"""Test helpers: deliver events to a service's reactions on a real database, without Kafka.

Shipped with the runtime, as structlog ships ``structlog.testing`` and psycopg its test
fixtures, so that every service (and a new one) is tested the same way. A
:class:`HandlerRunner` applies an envelope exactly as the consumer applies a message
(:func:`saga_runtime.inbox.apply_once`: the inbox record and the handler in one
transaction), on a real PostgreSQL connection, so the service's own repositories and SQL
run for real; faking the SQL would test nothing. What is left out is the broker's part:
no consumer, no offsets, no relay and no relay wakeup. Emitted events go to the outbox
as in production (inside the transaction, so they vanish with it when it rolls back) and
are also kept in memory, where the test reads them.

Every reaction is held to its declaration: an event a reaction emits that the system
definition does not list among that reaction's ``emits`` raises :class:`UndeclaredEventError`
and the delivery rolls back.

    with connect(database, role="stock", name="test", autocommit=True) as conn:
        runner = HandlerRunner(SYSTEM.service("stock"), conn)
        event = Envelope.new(created, aggregate_id="o-1", producer="orders")
        assert runner.deliver(event).event_types == ["StockReserved"]
        assert runner.deliver(event).outcome is Outcome.DUPLICATE

On an autocommit connection every unit of work is a transaction of its own; inside a
transaction block (``with conn.transaction(force_rollback=True):``) each is a savepoint
of it, so a test can roll everything back at the end instead of truncating tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar
from uuid import UUID

import psycopg

from saga_runtime.consumer import Handler, Outcome
from saga_runtime.effects import Effect, EffectOutcome, Effects
from saga_runtime.envelope import Envelope
from saga_runtime.inbox import Inbox, apply_once
from saga_runtime.naming import events_topic
from saga_runtime.outbox import Outbox
from saga_runtime.system import Reaction, Service
from saga_runtime.testing_effects import EffectSettler, UndeclaredEffectEventError
from saga_runtime.unit_of_work import UnitOfWork

__all__ = [
    "Delivery",
    "HandlerRunner",
    "RecordingUnitOfWorkFactory",
    "UndeclaredEffectEventError",
    "UndeclaredEventError",
]

T = TypeVar("T")


class UndeclaredEventError(AssertionError):
    """A reaction emitted an event its declaration in the system definition does not list."""


@dataclass
class RecordingUnitOfWorkFactory:
    """Opens units of work on one connection and keeps what every committed one emitted.

    The units of work are the runtime's own (``emit`` writes the outbox row in the
    transaction); only the pool and the relay wakeup are missing. Each is a transaction
    of its own on an autocommit connection, a savepoint inside a transaction block.
    """

    conn: psycopg.Connection
    producer: str
    outbox: Outbox
    emitted: list[Envelope] = field(default_factory=list)
    # The service's effects table, when it declares effects: ``request_effect`` writes there.
    effects: Effects | None = None

    @classmethod
    def for_service(
        cls, conn: psycopg.Connection, service: str, *, topic_prefix: str = ""
    ) -> RecordingUnitOfWorkFactory:
        """Units of work that emit into ``service``'s outbox, as its runtime's would."""
        outbox = Outbox(schema=service, topic=events_topic(service, topic_prefix))
        return cls(conn=conn, producer=service, outbox=outbox)

    @contextmanager
    def begin(
        self, *, cause: Envelope | None = None, correlation_id: UUID | None = None
    ) -> Iterator[UnitOfWork]:
        """Commit (or release the savepoint) when the block ends normally; roll back on error."""
        with self.conn.transaction():
            uow = UnitOfWork(
                conn=self.conn,
                outbox=self.outbox,
                producer=self.producer,
                cause=cause,
                effects=self.effects,
                correlation_id=correlation_id,
            )
            yield uow
            uow.flush()
        self.emitted.extend(uow.emitted)


@dataclass(frozen=True)
class Delivery:
    """What one delivery did: applied, a duplicate, or ignored; the events it emitted and the
    effects it requested (as stored; a request repeated by key names the first effect)."""

    outcome: Outcome
    emitted: tuple[Envelope, ...] = ()
    effects: tuple[Effect, ...] = ()

    @property
    def event_types(self) -> list[str]:
        return [e.event_type for e in self.emitted]


class HandlerRunner:
    """One service's declared reactions, applied to envelopes as its consumer applies them.

    ``dependencies`` are bound to the handlers by parameter name, as ``run_service`` binds
    the composition root's (a missing one is a ``DefinitionError`` here too).
    """

    def __init__(
        self,
        service: Service,
        conn: psycopg.Connection,
        *,
        dependencies: Mapping[str, object] | None = None,
        topic_prefix: str = "",
    ) -> None:
        self.service = service
        self.units = RecordingUnitOfWorkFactory.for_service(
            conn, service.name, topic_prefix=topic_prefix
        )
        self.inbox = Inbox(schema=service.name)
        self.settler = EffectSettler(service, self.units, dependencies)
        self.units.effects = self.settler.store
        self._handlers = service.handlers(dependencies)
        self._reactions: dict[str, Reaction] = {
            event.event_type: react for event, react in service.handles.items()
        }

    @property
    def conn(self) -> psycopg.Connection:
        return self.units.conn

    @property
    def emitted(self) -> list[Envelope]:
        """Every event emitted by a committed delivery or command so far, in order."""
        return self.units.emitted

    def deliver(self, envelope: Envelope) -> Delivery:
        """Apply ``envelope`` as the consumer would: once, whatever how often it comes.

        ``IGNORED`` for an event type the service does not handle (nothing runs);
        ``DUPLICATE`` when the inbox already holds its event id (the handler does not run).
        """
        handler = self._handlers.get(envelope.event_type)
        if handler is None:
            return Delivery(Outcome.IGNORED)
        with self.units.begin(cause=envelope) as uow:
            applied = apply_once(self.inbox, uow, envelope, handler)
            self._check_declared(envelope, uow.emitted)
        outcome = Outcome.APPLIED if applied else Outcome.DUPLICATE
        return Delivery(outcome, tuple(uow.emitted), self.settler.by_ids(uow.requested))

    def apply(self, envelope: Envelope) -> Delivery:
        """Run the handler on ``envelope`` without the inbox, in a unit of work of its own.

        What a redelivery would do if the inbox did not catch it: for checking that a
        reaction is idempotent by itself, not only thanks to the inbox.
        """
        handler: Handler | None = self._handlers.get(envelope.event_type)
        if handler is None:
            return Delivery(Outcome.IGNORED)
        with self.units.begin(cause=envelope) as uow:
            handler(uow, envelope)
            self._check_declared(envelope, uow.emitted)
        return Delivery(Outcome.APPLIED, tuple(uow.emitted), self.settler.by_ids(uow.requested))

    def effects(self) -> list[tuple[str, str, str]]:
        """(kind, idempotency key, status) of every effect the service has, oldest first."""
        return self.settler.table()

    def due_effects(self) -> list[Effect]:
        """Each aggregate's oldest unfinished effect, oldest first (what an executor may run)."""
        return self.settler.due()

    def settle(
        self, effect: Effect | None = None, outcome: EffectOutcome | None = None
    ) -> Delivery:
        """Settle one effect as the executor would, then decide its outcome.

        ``effect`` defaults to the oldest due one; ``outcome`` to making the declared call
        with this runner's dependencies (see ``saga_runtime.testing_effects``). The
        decision's events are held to the effect's declared ``emits``.
        """
        _, _, emitted, requested = self.settler.settle(effect, outcome)
        return Delivery(Outcome.APPLIED, emitted, requested)

    def settle_all(self, limit: int = 100) -> list[Delivery]:
        """Settle due effects, by making their calls, until none is left (at most ``limit``)."""
        settled: list[Delivery] = []
        while self.due_effects():
            if len(settled) >= limit:
                raise AssertionError(f"effects still due after settling {limit}")
            settled.append(self.settle())
        return settled

    def run(self, command: Callable[[UnitOfWork], T]) -> T:
        """Run ``command`` (an API call, a timer's work) in a unit of work; its result."""
        with self.units.begin() as uow:
            return command(uow)

    def _check_declared(self, envelope: Envelope, emitted: list[Envelope]) -> None:
        declared = {event.event_type for event in self._reactions[envelope.event_type].emits}
        undeclared = [e.event_type for e in emitted if e.event_type not in declared]
        if undeclared:
            raise UndeclaredEventError(
                f"{self.service.name}: its reaction to {envelope.event_type} emitted "
                f"{', '.join(undeclared)}, which its declaration does not list "
                f"(declared: {', '.join(sorted(declared)) or 'nothing'})"
            )
