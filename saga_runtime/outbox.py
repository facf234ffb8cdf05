"""The outbox writer: the only way a service emits an event."""

from __future__ import annotations

from collections.abc import Collection, Sequence

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
        # Many rows in one statement: every aggregate's lock first, in key order (the
        # aggregate that yields one row holds the insert back until all are taken), then
        # the rows in the given order, so ids follow emit order (the sort feeds the
        # insert, which draws each id as its row passes).
        self._insert_many = (
            sql.SQL(
                "INSERT INTO {}.outbox"
                " (event_id, event_type, aggregate_id, correlation_id, topic, envelope)"
                " SELECT e.event_id, e.event_type, e.aggregate_id, e.correlation_id, %s,"
                " e.envelope::jsonb"
                " FROM (SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))"
                "  FROM (SELECT DISTINCT k FROM unnest(%s::text[]) AS k ORDER BY k OFFSET 0)"
                "  AS keys) AS locked,"
                " unnest(%s::uuid[], %s::text[], %s::text[], %s::uuid[], %s::text[])"
                " WITH ORDINALITY AS e(event_id, event_type, aggregate_id, correlation_id,"
                " envelope, n)"
                " ORDER BY e.n RETURNING id"
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

    def check(self, envelope: Envelope) -> None:
        """Raise OutboxUsageError if the system definition does not let this service emit it."""
        if self.event_types is not None and envelope.event_type not in self.event_types:
            raise OutboxUsageError(
                f"{self.schema} may not emit {envelope.event_type}: the system definition "
                f"declares only {', '.join(sorted(self.event_types)) or 'no events'}"
            )

    def add(self, conn: psycopg.Connection, envelope: Envelope) -> int:
        """Insert ``envelope``; returns the outbox row id.

        Raises OutboxUsageError unless ``conn`` is inside an open transaction:
        an event written outside the state change's transaction could commit
        without it.
        """
        _require_transaction(conn)
        self.check(envelope)
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

    def add_many(self, conn: psycopg.Connection, envelopes: Sequence[Envelope]) -> list[int]:
        """Insert ``envelopes`` in one statement, ids in their order; returns the ids.

        Takes the lock of each of their aggregates first, as ``add`` does (free for
        those the transaction holds already). Same checks as ``add``.
        """
        if not envelopes:
            return []
        _require_transaction(conn)
        for envelope in envelopes:
            self.check(envelope)
        cur = conn.execute(
            self._insert_many,
            (
                self.topic,
                [self.lock_key(e.aggregate_id) for e in envelopes],
                [e.event_id for e in envelopes],
                [e.event_type for e in envelopes],
                [e.aggregate_id for e in envelopes],
                [e.correlation_id for e in envelopes],
                [e.model_dump_json() for e in envelopes],
            ),
        )
        return [int(row[0]) for row in cur.fetchall()]


def _require_transaction(conn: psycopg.Connection) -> None:
    if conn.info.transaction_status != TransactionStatus.INTRANS:
        raise OutboxUsageError(
            "Outbox.add must be called inside the transaction that changes state"
        )
