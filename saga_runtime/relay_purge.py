"""The leader's purge: published outbox rows and old inbox rows go once their retention ends."""

from __future__ import annotations

import psycopg
from psycopg import sql

from saga_runtime.inbox_retention import PURGE_BATCH as INBOX_PURGE_BATCH
from saga_runtime.inbox_retention import InboxSettings, purge_inbox
from saga_runtime.logs import get_logger
from saga_runtime.relay_lease import Lease
from saga_runtime.settings import RelaySettings

__all__ = ["Purge"]

log = get_logger(__name__)

# Rows per purge statement, and statements per pass of the leader's loop: a pass
# deletes at most 20,000 rows of each table before the relay publishes again.
_PURGE_BATCH = 5000
_PURGE_BATCHES_PER_PASS = 4


class Purge:
    """Deletes one service's published outbox rows and old inbox rows, on the leader's session.

    Pending rows are never touched. The inbox's retention is ``INBOX_RETENTION``
    (read when the relay is made), the outbox's ``RELAY_RETENTION``.
    """

    def __init__(self, *, schema: str, settings: RelaySettings, lease: Lease) -> None:
        self.schema = schema
        self._settings = settings
        self._lease = lease
        self._inbox = InboxSettings()  # its inbox is purged with its outbox (INBOX_RETENTION)
        self._purge = (
            sql.SQL(
                "DELETE FROM {0}.outbox WHERE id IN (SELECT id FROM {0}.outbox"
                f" WHERE published_at < now() - %s ORDER BY id LIMIT {_PURGE_BATCH})"
            )
            .format(sql.Identifier(schema))
            .as_string()
        )

    def purge(self, conn: psycopg.Connection) -> int:
        """Delete published rows older than the retention; pending rows are never touched.

        The service's inbox rows older than ``INBOX_RETENTION`` go too (logged apart).
        Returns how many outbox rows were deleted.
        """
        total = self._purge_outbox(conn, max_batches=None)
        purge_inbox(conn, self.schema, self._inbox.retention)
        return total

    def purge_pass(self, conn: psycopg.Connection) -> bool:
        """At most a few batches of each purge; True when there may be more to delete."""
        limit = _PURGE_BATCHES_PER_PASS
        outbox = self._purge_outbox(conn, max_batches=limit)
        inbox = purge_inbox(conn, self.schema, self._inbox.retention, max_batches=limit)
        return outbox >= limit * _PURGE_BATCH or inbox >= limit * INBOX_PURGE_BATCH

    def _purge_outbox(self, conn: psycopg.Connection, *, max_batches: int | None) -> int:
        total = batches = 0
        while max_batches is None or batches < max_batches:
            deleted = self._lease.query(conn, self._purge, (self._settings.retention,)).rowcount
            total += deleted
            batches += 1
            if deleted < _PURGE_BATCH:
                break
        if total:
            log.info("relay.purged", outbox=self.schema, rows=total)
        return total
