"""The effect executor's SQL, composed once per schema."""

from __future__ import annotations

from psycopg import sql

__all__ = ["ExecutorStatements"]


class ExecutorStatements:
    """The executor's SQL for one schema, composed once."""

    def __init__(self, schema: str) -> None:
        table = sql.Identifier(schema, "effects")

        def compose(text: str) -> str:
            return sql.SQL(text).format(t=table).as_string()

        # An aggregate's head is its oldest unfinished effect; only heads are claimed,
        # so its effects run one at a time and in order. The conditions on ``e`` are
        # checked again on the newest row version after the lock is taken (READ
        # COMMITTED), so an effect another executor claimed or finished meanwhile
        # is skipped; a stale head (already finished) only claims nothing.
        self.claim = compose(
            "WITH heads AS ("
            "  SELECT DISTINCT ON (aggregate_id) id FROM {t}"
            "  WHERE status IN ('pending', 'running') ORDER BY aggregate_id, id"
            "), due AS ("
            "  SELECT e.id FROM {t} e JOIN heads USING (id)"
            "  WHERE (e.status = 'pending' AND e.next_attempt_at <= now())"
            "     OR (e.status = 'running' AND e.lease_until <= now())"
            "  ORDER BY e.next_attempt_at, e.id LIMIT %s"
            "  FOR UPDATE OF e SKIP LOCKED"
            ") UPDATE {t} e SET status = 'running', lease_owner = %s,"
            "  lease_until = now() + %s, attempts = e.attempts + 1, updated_at = now()"
            " FROM due WHERE e.id = due.id"
            " RETURNING e.id, e.aggregate_id, e.kind, e.idempotency_key, e.request,"
            "  e.attempts, e.correlation_id"
        )
        self.owned = compose(
            "SELECT now() >= deadline_at FROM {t}"
            " WHERE id = %s AND lease_owner = %s AND status = 'running' FOR UPDATE"
        )
        self.record = compose(
            "UPDATE {t} SET status = %s, outcome = %s, last_error = %s,"
            " lease_owner = NULL, lease_until = NULL, updated_at = now()"
            " WHERE id = %s AND lease_owner = %s AND status = 'running' RETURNING id"
        )
        self.retry = compose(
            "UPDATE {t} SET status = 'pending', last_error = %s,"
            " next_attempt_at = LEAST(now() + %s, deadline_at),"
            " lease_owner = NULL, lease_until = NULL, updated_at = now()"
            " WHERE id = %s AND lease_owner = %s AND status = 'running'"
        )
