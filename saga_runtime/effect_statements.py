"""The effect executor's SQL, composed once per schema."""

from __future__ import annotations

from psycopg import sql

__all__ = ["ExecutorStatements"]


class ExecutorStatements:
    """The executor's SQL for one schema, composed once.

    An effect is ``running`` while its call is made, ``recorded`` once its outcome is
    stored and until the service's decision about it commits (``done``/``failed``),
    ``undecided`` when that decision kept failing (see ``effects_schema``).
    """

    def __init__(self, schema: str) -> None:
        table = sql.Identifier(schema, "effects")

        def compose(text: str) -> str:
            return sql.SQL(text).format(t=table).as_string()

        # An aggregate's head is its oldest unfinished effect; only heads are claimed,
        # so its effects run one at a time and in order (a decision included: the next
        # call waits for the previous outcome's decision). The conditions on ``e`` are
        # checked again on the newest row version after the lock is taken (READ
        # COMMITTED), so an effect another executor claimed or finished meanwhile
        # is skipped; a stale head (already finished) only claims nothing. A
        # ``recorded`` effect is claimed for its decision alone: no call, no attempt.
        self.claim = compose(
            "WITH heads AS ("
            "  SELECT DISTINCT ON (aggregate_id) id FROM {t}"
            "  WHERE status IN ('pending', 'running', 'recorded', 'undecided')"
            "  ORDER BY aggregate_id, id"
            "), due AS ("
            "  SELECT e.id FROM {t} e JOIN heads USING (id)"
            "  WHERE (e.status = 'pending' AND e.next_attempt_at <= now())"
            "     OR (e.status IN ('running', 'recorded')"
            "         AND coalesce(e.lease_until <= now(), true))"
            "  ORDER BY e.next_attempt_at, e.id LIMIT %s"
            "  FOR UPDATE OF e SKIP LOCKED"
            ") UPDATE {t} e SET"
            "  status = CASE WHEN e.status = 'recorded' THEN 'recorded' ELSE 'running' END,"
            "  attempts = e.attempts + CASE WHEN e.status = 'recorded' THEN 0 ELSE 1 END,"
            "  lease_owner = %s, lease_until = now() + %s, updated_at = now()"
            " FROM due WHERE e.id = due.id"
            " RETURNING e.id, e.aggregate_id, e.kind, e.idempotency_key, e.request,"
            "  e.attempts, e.correlation_id, e.status, e.outcome, e.traceparent"
        )
        # The heartbeat: leases of effects still in this executor's hands last longer.
        self.renew = compose(
            "UPDATE {t} SET lease_until = now() + %s"
            " WHERE id = ANY(%s) AND lease_owner = %s AND status IN ('running', 'recorded')"
            " RETURNING id"
        )
        # A restarted instance ends the leases its previous lives hold (see
        # ``EffectExecutor.instance``); a life still running finds its lease lost
        # when it records, and records nothing, as after any expired lease.
        self.take_over = compose(
            "UPDATE {t} SET lease_until = now()"
            " WHERE starts_with(lease_owner, %s) AND lease_owner <> %s"
            " AND status IN ('running', 'recorded') AND lease_until > now()"
            " RETURNING id"
        )
        self.owned = compose(
            "SELECT now() >= deadline_at FROM {t}"
            " WHERE id = %s AND lease_owner = %s AND status = 'running' FOR UPDATE"
        )
        # The same, first taking the aggregate's advisory lock in the same round trip
        # (OFFSET 0 keeps the planner from folding the lock's subquery in).
        self.owned_locking = compose(
            "SELECT now() >= e.deadline_at FROM {t} e,"
            " (SELECT pg_advisory_xact_lock(hashtextextended(%s, 0)) OFFSET 0) AS locked"
            " WHERE e.id = %s AND e.lease_owner = %s AND e.status = 'running' FOR UPDATE OF e"
        )
        # Several at once: every aggregate's advisory lock first, in key order (the
        # one-row aggregate holds the rest back until all are taken), then the rows
        # still leased to this executor; a decision and its recording follow.
        self.owned_many = compose(
            "SELECT e.id FROM {t} e,"
            " (SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))"
            "  FROM (SELECT DISTINCT k FROM unnest(%s::text[]) AS k ORDER BY k OFFSET 0)"
            "  AS keys) AS locked"
            " WHERE e.id = ANY(%s) AND e.lease_owner = %s AND e.status = 'running'"
            " ORDER BY e.id FOR UPDATE OF e"
        )
        self.settled_many = compose(
            "UPDATE {t} AS e SET status = u.status, outcome = u.outcome,"
            " last_error = u.last_error, lease_owner = NULL, lease_until = NULL,"
            " decided_at = now(), updated_at = now()"
            " FROM unnest(%s::bigint[], %s::text[], %s::jsonb[], %s::text[])"
            " AS u(id, status, outcome, last_error) WHERE e.id = u.id"
        )
        # The lease is kept (and extended) for the decision that follows.
        self.record = compose(
            "UPDATE {t} SET status = 'recorded', outcome = %s, last_error = %s,"
            " lease_until = now() + %s, updated_at = now()"
            " WHERE id = %s AND lease_owner = %s AND status = 'running' RETURNING id"
        )
        self.retry = compose(
            "UPDATE {t} SET status = 'pending', last_error = %s,"
            " next_attempt_at = LEAST(now() + %s, deadline_at),"
            " lease_owner = NULL, lease_until = NULL, updated_at = now()"
            " WHERE id = %s AND lease_owner = %s AND status = 'running'"
        )
        # Recorded and decided at once (the row is locked by ``owned`` in the same
        # transaction, which proved the lease still held).
        self.settled = compose(
            "UPDATE {t} SET status = %s, outcome = %s, last_error = %s,"
            " lease_owner = NULL, lease_until = NULL, decided_at = now(), updated_at = now()"
            " WHERE id = %s"
        )
        self.deciding = compose(
            "SELECT outcome FROM {t}"
            " WHERE id = %s AND lease_owner = %s AND status = 'recorded' FOR UPDATE"
        )
        self.decided = compose(
            "UPDATE {t} SET status = %s, lease_owner = NULL, lease_until = NULL,"
            " decided_at = now(), updated_at = now() WHERE id = %s"
        )
        self.undecided = compose(
            "UPDATE {t} SET status = 'undecided', last_error = %s,"
            " lease_owner = NULL, lease_until = NULL, updated_at = now()"
            " WHERE id = %s AND lease_owner = %s AND status = 'recorded'"
        )
