"""Shipments wait for the carrier's booking: the statuses ``booking`` and ``cancelling``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

The carrier's booking is an effect, made after the approval's transaction: a shipment
is ``booking`` until the carrier's answer is decided, and ``cancelling`` when its order
was cancelled meanwhile (it ends ``cancelled`` whatever the carrier answers).
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BEFORE = "'scheduled', 'failed', 'cancelled', 'voided'"
AFTER = "'booking', 'cancelling', 'scheduled', 'failed', 'cancelled', 'voided'"


def _statuses(allowed: str) -> None:
    # Under the service's role: it owns the table (0002).
    op.execute("SET LOCAL ROLE shipments")
    op.execute("ALTER TABLE shipments.shipments DROP CONSTRAINT shipments_status_check")
    op.execute(
        "ALTER TABLE shipments.shipments ADD CONSTRAINT shipments_status_check"
        f" CHECK (status IN ({allowed}))"
    )
    op.execute("RESET ROLE")


def upgrade() -> None:
    _statuses(AFTER)


def downgrade() -> None:
    # The code before this knows no booking in flight: refuse rather than guess what
    # the carrier answered (let the bookings finish, or settle them by hand, first).
    op.execute(
        """
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM shipments.shipments
                       WHERE status IN ('booking', 'cancelling')) THEN
                RAISE EXCEPTION 'shipments are still waiting for the carrier';
            END IF;
        END $$
        """
    )
    _statuses(BEFORE)
