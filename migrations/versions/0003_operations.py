"""The operators' schema: an append-only audit log of what ``sagactl`` changed, and why.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

The schema belongs to a role of its own, ``ops``, granted to the admin who runs
the migrations (and ``sagactl``); no service role is a member, so no service
can read or rewrite the operators' record. (A role named like its schema also
keeps the rule every other schema follows: a schema's tables belong to the
role of the same name.)
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Cluster-wide, like the service roles of 0001: it may exist already.
    op.execute(
        """
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ops') THEN
            CREATE ROLE ops NOLOGIN;
          END IF;
          IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            EXECUTE 'GRANT ops TO ' || quote_ident(current_user);
          END IF;
        END $$
        """
    )
    op.execute("CREATE SCHEMA ops AUTHORIZATION ops")
    op.execute("SET LOCAL ROLE ops")
    op.execute(
        """
        CREATE TABLE ops.audit_log (
            id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            actor       text NOT NULL,
            action      text NOT NULL,
            service     text,
            reason      text,
            target      jsonb NOT NULL DEFAULT '{}',
            command     text NOT NULL,
            host        text
        )
        """
    )
    op.execute("CREATE INDEX audit_log_occurred_idx ON ops.audit_log (occurred_at DESC)")
    # A record that can be edited afterwards records nothing: refuse changes.
    op.execute(
        """
        CREATE FUNCTION ops.audit_log_is_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
          RAISE EXCEPTION 'ops.audit_log is append-only (% refused)', TG_OP;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON ops.audit_log"
        " FOR EACH ROW EXECUTE FUNCTION ops.audit_log_is_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON ops.audit_log"
        " FOR EACH STATEMENT EXECUTE FUNCTION ops.audit_log_is_append_only()"
    )
    op.execute("RESET ROLE")


def downgrade() -> None:
    # The role is left in place, like the service roles: it is shared by the server.
    op.execute("DROP SCHEMA IF EXISTS ops CASCADE")
