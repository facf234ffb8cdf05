"""An index on each inbox's processed_at, for purging old rows (``INBOX_RETENTION``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Without it every purge batch scans the whole inbox. processed_at only grows, so
new entries land on the index's right edge: cheap for the consumers' inserts.

Frozen history, like 0001: a service added later gets this index with its inbox from
``saga_runtime.create_service_schema``.
"""

from alembic import op

from migrations.history import FIRST_SERVICES

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for service in FIRST_SERVICES:
        # Under the service's role, like its tables: the index belongs to their owner.
        op.execute(f"SET LOCAL ROLE {service}")
        op.execute(f"CREATE INDEX inbox_processed_at_idx ON {service}.inbox (processed_at)")
        op.execute("RESET ROLE")


def downgrade() -> None:
    for service in FIRST_SERVICES:
        op.execute(f"DROP INDEX IF EXISTS {service}.inbox_processed_at_idx")
