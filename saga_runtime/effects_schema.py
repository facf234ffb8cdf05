"""The DDL of a service's effects table: calls to the outside world, stored like outbox rows.

A migration runs ``effects_ddl(service)``; tests run it in a schema of their own.
"""

from __future__ import annotations

from saga_runtime.naming import validate_service_name
from saga_runtime.schema import BUSY_TABLE_STORAGE

__all__ = ["EFFECT_STATUSES", "UNFINISHED", "effects_ddl"]

# pending: waiting for its next attempt; running: leased to an executor, its call in
# flight; recorded: the call's outcome is stored, the service's decision about it not yet
# committed (never called again); done, failed: the outcome is stored and decided;
# undecided: the decision kept failing (a bug), the effect waits for an operator, and so
# do its aggregate's later effects; abandoned: an operator gave up on it.
EFFECT_STATUSES = ("pending", "running", "recorded", "undecided", "done", "failed", "abandoned")
UNFINISHED = ("pending", "running", "recorded", "undecided")


def effects_ddl(schema: str) -> list[str]:
    """The statements that create ``<schema>.effects`` and the indexes its executor needs.

    Times are the database's (``now()``), never a process's clock, so executors on
    hosts whose clocks disagree still agree on what is due and whose lease expired.
    """
    s = validate_service_name(schema)
    statuses = ", ".join(f"'{status}'" for status in EFFECT_STATUSES)
    unfinished = ", ".join(f"'{status}'" for status in UNFINISHED)
    return [
        f"""
        CREATE TABLE {s}.effects (
            id bigserial PRIMARY KEY,
            aggregate_id text NOT NULL,
            kind text NOT NULL,
            idempotency_key text NOT NULL UNIQUE,
            request jsonb NOT NULL,
            correlation_id uuid,
            status text NOT NULL DEFAULT 'pending' CHECK (status IN ({statuses})),
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            deadline_at timestamptz NOT NULL,
            lease_owner text,
            lease_until timestamptz,
            outcome jsonb,
            last_error text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            decided_at timestamptz,
            -- The trace of the request (W3C traceparent): its call and decision continue it.
            traceparent text,
            CHECK (status <> 'running' OR (lease_owner IS NOT NULL AND lease_until IS NOT NULL))
        ) WITH ({BUSY_TABLE_STORAGE})
        """,
        # The claim reads only unfinished rows, the oldest per aggregate (its head) in
        # (aggregate_id, id) order. Finished rows, the bulk of the table, stay out of it.
        f"CREATE INDEX effects_unfinished_idx ON {s}.effects (aggregate_id, id)"
        f" WHERE status IN ({unfinished})",
    ]
