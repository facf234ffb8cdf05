"""Purging an outbox: published rows older than a cutoff, never pending or failed ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from sagactl.ops.audit_log import Change
from sagactl.ops.purge import delete_in_batches, per_service

__all__ = ["PurgePlan", "plan_purge", "purge"]


@dataclass(frozen=True)
class PurgePlan:
    service: str
    rows: int
    first_id: int | None
    last_id: int | None
    oldest_published_at: datetime | None
    newest_published_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "rows": self.rows,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "oldest_published_at": self.oldest_published_at,
            "newest_published_at": self.newest_published_at,
        }


_PURGEABLE = "published_at IS NOT NULL AND published_at < %s"


def plan_purge(
    conn: psycopg.Connection, services: Sequence[str], cutoff: datetime
) -> list[PurgePlan]:
    """Published rows older than ``cutoff``: never pending, never failed."""
    query = sql.SQL(
        "SELECT count(*), min(id), max(id), min(published_at), max(published_at)"
        " FROM {}.outbox WHERE " + _PURGEABLE
    )
    return [
        PurgePlan(service, int(row[0]), row[1], row[2], row[3], row[4])
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
    """Delete the service's purgeable rows in batches, in one transaction with its audit
    entry; returns (rows deleted, audit id). The predicate is checked again on every row
    it deletes, so a row replayed meanwhile (pending again) is never deleted."""
    delete = sql.SQL(
        "DELETE FROM {0}.outbox WHERE id IN (SELECT id FROM {0}.outbox WHERE "
        + _PURGEABLE
        + " ORDER BY id LIMIT %s) AND "
        + _PURGEABLE
    ).format(sql.Identifier(service))
    return delete_in_batches(
        conn,
        lambda limit: conn.execute(delete, (cutoff, limit, cutoff)).rowcount,
        change=change,
        batch_size=batch_size,
        on_batch=on_batch,
    )
