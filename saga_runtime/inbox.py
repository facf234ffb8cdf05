"""The inbox: which events a service has already applied."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from uuid import UUID

import psycopg
from psycopg import sql

from saga_runtime.envelope import Envelope
from saga_runtime.naming import validate_service_name

if TYPE_CHECKING:
    from saga_runtime.unit_of_work import UnitOfWork

__all__ = ["Inbox", "apply_once"]


class Inbox:
    """Records applied event ids in the same transaction as their effects.

    A unique-key conflict means "already applied": the transaction that holds
    the first record commits or rolls back together with the handler's work,
    so an event takes effect exactly once however often it is delivered.
    """

    def __init__(self, *, schema: str) -> None:
        self.schema = validate_service_name(schema)
        # Plain strings, which psycopg caches and prepares (a Composed is re-rendered each time).
        table = sql.Identifier(self.schema)
        self._insert = (
            sql.SQL(
                "INSERT INTO {}.inbox (event_id, event_type, source_topic, source_partition,"
                " source_offset) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (event_id) DO NOTHING RETURNING 1"
            )
            .format(table)
            .as_string()
        )
        # The same, first taking an advisory lock in the same round trip (OFFSET 0
        # keeps the planner from folding the lock's subquery into the insert).
        self._lock_and_insert = (
            sql.SQL(
                "INSERT INTO {}.inbox (event_id, event_type, source_topic, source_partition,"
                " source_offset) SELECT %s, %s, %s, %s, %s"
                " FROM (SELECT pg_advisory_xact_lock(hashtextextended(%s, 0)) OFFSET 0) AS locked"
                " ON CONFLICT (event_id) DO NOTHING RETURNING 1"
            )
            .format(table)
            .as_string()
        )

        # A batch in one statement: the locks of all its aggregates first, in key order
        # (so two batches sharing aggregates cannot deadlock on them; the one-row
        # aggregate holds the insert back until all are taken), then every record.
        self._lock_and_insert_many = (
            sql.SQL(
                "INSERT INTO {}.inbox (event_id, event_type, source_topic, source_partition,"
                " source_offset)"
                " SELECT u.event_id, u.event_type, u.topic, u.part, u.off"
                " FROM (SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))"
                "  FROM (SELECT DISTINCT k FROM unnest(%s::text[]) AS k ORDER BY k OFFSET 0)"
                "  AS keys) AS locked,"
                " unnest(%s::uuid[], %s::text[], %s::text[], %s::int[], %s::bigint[])"
                " AS u(event_id, event_type, topic, part, off)"
                " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
            )
            .format(table)
            .as_string()
        )
        self._forget = (
            sql.SQL("DELETE FROM {}.inbox WHERE event_id = ANY(%s::uuid[])")
            .format(table)
            .as_string()
        )

    def record_many(
        self,
        conn: psycopg.Connection,
        records: Sequence[tuple[Envelope, str | None, int | None, int | None]],
        *,
        lock_keys: Sequence[str],
    ) -> set[UUID]:
        """Record (envelope, topic, partition, offset) in one statement; the ids seen for
        the first time (apply those). Takes the advisory locks of ``lock_keys`` first,
        in sorted order, in the same statement. An id twice in ``records`` is new once."""
        if not records:
            return set()
        cur = conn.execute(
            self._lock_and_insert_many,
            (
                list(lock_keys),
                [envelope.event_id for envelope, _, _, _ in records],
                [envelope.event_type for envelope, _, _, _ in records],
                [topic for _, topic, _, _ in records],
                [partition for _, _, partition, _ in records],
                [offset for _, _, _, offset in records],
            ),
        )
        return {row[0] for row in cur.fetchall()}

    def forget(self, conn: psycopg.Connection, event_ids: Sequence[UUID]) -> None:
        """Remove records made in this transaction for events it did not apply after all."""
        if event_ids:
            conn.execute(self._forget, (list(event_ids),))

    def record(
        self,
        conn: psycopg.Connection,
        envelope: Envelope,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        lock_key: str | None = None,
    ) -> bool:
        """Return True if this is the first time the event is seen (apply it).

        With ``lock_key``, the transaction-scoped advisory lock of that key is
        taken first, in the same statement: the consumer passes the event's
        aggregate, which every handler locks first anyway, and saves it a round
        trip (see ``UnitOfWork.lock``).
        """
        params = (envelope.event_id, envelope.event_type, topic, partition, offset)
        if lock_key is None:
            cur = conn.execute(self._insert, params)
        else:
            cur = conn.execute(self._lock_and_insert, (*params, lock_key))
        return cur.fetchone() is not None


def apply_once(
    inbox: Inbox,
    uow: UnitOfWork,
    envelope: Envelope,
    handler: Callable[[UnitOfWork, Envelope], None],
    *,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> bool:
    """Record ``envelope`` in the inbox and, the first time only, run ``handler`` on it.

    Both inside ``uow``'s transaction (the caller commits): this is how the consumer
    applies every message, and ``saga_runtime.testing`` delivers events the same way.
    The inbox statement also takes the lock of the event's aggregate (the one every
    handler locks first), which saves each event a round trip. False: already applied.
    """
    first_time = inbox.record(
        uow.conn,
        envelope,
        topic=topic,
        partition=partition,
        offset=offset,
        lock_key=uow.outbox.lock_key(envelope.aggregate_id),
    )
    uow.locked.add(envelope.aggregate_id)
    if not first_time:
        return False
    uow.cause = envelope
    handler(uow, envelope)
    return True
