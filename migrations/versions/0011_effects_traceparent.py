"""Effects remember the trace of the request that asked for them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

One order is one trace (``saga_runtime.tracing``): the executor's call and the decision
on its outcome continue the trace of the handler that requested the effect, whose W3C
``traceparent`` is stored with it. A nullable column: effects requested before it (and by
processes without tracing) have none, and their calls start traces of their own.
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SERVICES = ("payments", "shipments", "notifications")


def upgrade() -> None:
    for service in SERVICES:
        # Under the service's role: it owns its effects table (0006).
        op.execute(f"SET LOCAL ROLE {service}")
        op.execute(f"ALTER TABLE {service}.effects ADD COLUMN traceparent text")
        op.execute("RESET ROLE")


def downgrade() -> None:
    for service in SERVICES:
        op.execute(f"SET LOCAL ROLE {service}")
        op.execute(f"ALTER TABLE {service}.effects DROP COLUMN traceparent")
        op.execute("RESET ROLE")
