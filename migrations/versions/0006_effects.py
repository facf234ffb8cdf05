"""Effects tables for the services that call the outside world: payments, shipments, notifications.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

A decision that needs a charge, a refund, a carrier booking, an e-mail or a webhook
records an effect in its own transaction, and the service's executor makes the call
afterwards (``saga_runtime.effects``). Each of these services owns its effects table.

Frozen history: this is ``saga_runtime.effects_ddl`` as it was when the migration was
written, copied so that a later change there does not change what this migration
did; an integration test checks that the two still agree. A service added later gets
its effects table from ``effects_ddl`` in a migration of its own.
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SERVICES = ("payments", "shipments", "notifications")

STATUSES = "'pending', 'running', 'recorded', 'undecided', 'done', 'failed', 'abandoned'"
UNFINISHED = "'pending', 'running', 'recorded', 'undecided'"


def upgrade() -> None:
    for service in SERVICES:
        # Under the service's role: the table belongs to the service, like its outbox.
        op.execute(f"SET LOCAL ROLE {service}")
        op.execute(
            f"""
            CREATE TABLE {service}.effects (
                id bigserial PRIMARY KEY,
                aggregate_id text NOT NULL,
                kind text NOT NULL,
                idempotency_key text NOT NULL UNIQUE,
                request jsonb NOT NULL,
                correlation_id uuid,
                status text NOT NULL DEFAULT 'pending' CHECK (status IN ({STATUSES})),
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
                CHECK (status <> 'running' OR (lease_owner IS NOT NULL AND lease_until IS NOT NULL))
            )
            """
        )
        op.execute(
            f"CREATE INDEX effects_unfinished_idx ON {service}.effects (aggregate_id, id)"
            f" WHERE status IN ({UNFINISHED})"
        )
        op.execute("RESET ROLE")


def downgrade() -> None:
    for service in SERVICES:
        op.execute(f"DROP TABLE IF EXISTS {service}.effects")
