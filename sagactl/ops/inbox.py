"""The services' inbox tables seen by an operator: what a purge would delete, and the purge.

An inbox row records that its service applied an event, so that a second delivery does
nothing. Rows are needed only while the event can still be delivered again, i.e. while it
may still be in a topic: see ``saga_runtime/inbox_retention.py`` for why the cutoff must be
older than every topic's retention. The relay purges after ``INBOX_RETENTION`` by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from sagactl.ops.audit_log import Change
from sagactl.ops.purge import delete_in_batches, per_service

__all__ = ["InboxPurgePlan", "plan_purge", "purge"]


@dataclass(frozen=True)
class InboxPurgePlan:
    service: str
    rows: int
    oldest_processed_at: datetime | None
    newest_processed_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "rows": self.rows,
            "oldest_processed_at": self.oldest_processed_at,
            "newest_processed_at": self.newest_processed_at,
        }


def plan_purge(
    conn: psycopg.Connection, services: Sequence[str], cutoff: datetime
) -> list[InboxPurgePlan]:
    """Inbox rows processed before ``cutoff``, per service."""
    query = sql.SQL(
        "SELECT count(*), min(processed_at), max(processed_at) FROM {}.inbox"
        " WHERE processed_at < %s"
    )
    return [
        InboxPurgePlan(service, int(row[0]), row[1], row[2])
        for service, row in per_service(conn, services, query, (cutoff,))
    ]


def purge(
    conn: psycopg.Connection,
    service: str,
    cutoff: datetime,
    *,
    change: Callable[[int], Change],
    batch_size: int = 5000,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Delete the service's inbox rows processed before ``cutoff`` in batches, in one
    transaction with its audit entry; returns (rows deleted, audit id)."""
    delete = sql.SQL(
        "DELETE FROM {0}.inbox WHERE event_id IN (SELECT event_id FROM {0}.inbox"
        " WHERE processed_at < %s ORDER BY processed_at LIMIT %s)"
    ).format(sql.Identifier(service))
    return delete_in_batches(
        conn,
        lambda limit: conn.execute(delete, (cutoff, limit)).rowcount,
        change=change,
        batch_size=batch_size,
        on_batch=on_batch,
    )
