"""The outbox writer: the only way a service emits an event."""

from __future__ import annotations

from collections.abc import Collection

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from saga_runtime.envelope import Envelope
from saga_runtime.errors import OutboxUsageError
from saga_runtime.naming import validate_service_name

__all__ = ["Outbox"]


class Outbox:
    """Appends events to one service's outbox table inside the caller's transaction.

    Before inserting, it takes a transaction-scoped advisory lock on the
    aggregate, so two transactions emitting events for the same aggregate are
    serialized: the ids of one aggregate's rows follow commit order, and the
    relay, which publishes in id order, keeps each aggregate's events in the
    order they happened.
    """

    def __init__(
        self, *, schema: str, topic: str, event_types: Collection[str] | None = None
    ) -> None:
        self.schema = validate_service_name(schema)
        self.topic = topic
        # The event types the system definition lets this service emit (None: any). An
        # event outside them is a bug: refused before it reaches the topic and its consumers.
        self.event_types = frozenset(event_types) if event_types is not None else None
        # The aggregate's lock is taken by the same statement, before the row (and
        # its id) is made: OFFSET 0 keeps the planner from folding the subquery in.
        self._insert = (
            sql.SQL(
                "INSERT INTO {}.outbox"
                " (event_id, event_type, aggregate_id, correlation_id, topic, envelope)"
                " SELECT %s, %s, %s, %s, %s, %s::jsonb"
                " FROM (SELECT pg_advisory_xact_lock(hashtextextended(%s, 0)) OFFSET 0) AS locked"
                " RETURNING id"
            )
            .format(sql.Identifier(self.schema))
            .as_string()
        )
        self._lock = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"

    def lock_aggregate(self, conn: psycopg.Connection, aggregate_id: str) -> None:
        """Serialize this transaction with every other one touching ``aggregate_id``.

        Held until commit; taking it again in the same transaction is free.
        Handlers take it first so that two events about one aggregate, arriving on
        different topics, are applied one after the other.
        """
        conn.execute(self._lock, (self.lock_key(aggregate_id),))

    def lock_key(self, aggregate_id: str) -> str:
        """The advisory-lock key of ``aggregate_id`` in this service (for statements that lock)."""
        return f"{self.schema}:{aggregate_id}"

    def add(self, conn: psycopg.Connection, envelope: Envelope) -> int:
        """Insert ``envelope``; returns the outbox row id.

        Raises OutboxUsageError unless ``conn`` is inside an open transaction:
        an event written outside the state change's transaction could commit
        without it.
        """
        if conn.info.transaction_status != TransactionStatus.INTRANS:
            raise OutboxUsageError(
                "Outbox.add must be called inside the transaction that changes state"
            )
        if self.event_types is not None and envelope.event_type not in self.event_types:
            raise OutboxUsageError(
                f"{self.schema} may not emit {envelope.event_type}: the system definition "
                f"declares only {', '.join(sorted(self.event_types)) or 'no events'}"
            )
        cur = conn.execute(
            self._insert,
            (
                envelope.event_id,
                envelope.event_type,
                envelope.aggregate_id,
                envelope.correlation_id,
                self.topic,
                envelope.model_dump_json(),
                self.lock_key(envelope.aggregate_id),
            ),
        )
        row = cur.fetchone()
        assert row is not None
        # No NOTIFY here: it would serialize commits (see RelayWakeup).
        return int(row[0])
