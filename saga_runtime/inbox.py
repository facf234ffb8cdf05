"""The inbox: which events a service has already applied."""

from __future__ import annotations

import psycopg
from psycopg import sql

from saga_runtime.envelope import Envelope
from saga_runtime.naming import validate_service_name

__all__ = ["Inbox"]


class Inbox:
    """Records applied event ids in the same transaction as their effects.

    A unique-key conflict means "already applied": the transaction that holds
    the first record commits or rolls back together with the handler's work,
    so an event takes effect exactly once however often it is delivered.
    """

    def __init__(self, *, schema: str) -> None:
        self.schema = validate_service_name(schema)
        # A plain string, which psycopg caches and prepares (a Composed is re-rendered each time).
        self._insert = sql.SQL(
            "INSERT INTO {}.inbox (event_id, event_type, source_topic, source_partition,"
            " source_offset) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (event_id) DO NOTHING RETURNING 1"
        ).format(sql.Identifier(self.schema)).as_string()

    def record(
        self,
        conn: psycopg.Connection,
        envelope: Envelope,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> bool:
        """Return True if this is the first time the event is seen (apply it)."""
        cur = conn.execute(
            self._insert, (envelope.event_id, envelope.event_type, topic, partition, offset)
        )
        return cur.fetchone() is not None
