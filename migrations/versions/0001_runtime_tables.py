"""Each service's role and schema, with the runtime tables: outbox, inbox, dead_letters.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Frozen history: the DDL stays written out here, so that what this migration did in
deployed databases never changes. A service added later takes the same tables, in
their current shape, from ``saga_runtime.create_service_schema`` in a migration of
its own.
"""

from alembic import op

from migrations.history import FIRST_SERVICES

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    for service in FIRST_SERVICES:
        # Roles are cluster-wide and may exist already (another database on
        # the same server); schemas and tables belong to this database.
        op.execute(
            f"""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{service}') THEN
                CREATE ROLE {service} NOLOGIN;
              END IF;
              IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                EXECUTE 'GRANT {service} TO ' || quote_ident(current_user);
              END IF;
            END $$
            """
        )
        op.execute(f"CREATE SCHEMA {service} AUTHORIZATION {service}")
        # Created under the service's role so that the service owns its tables
        # and no other service's role can touch them.
        op.execute(f"SET LOCAL ROLE {service}")
        op.execute(
            f"""
            CREATE TABLE {service}.outbox (
                id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                event_id       uuid NOT NULL UNIQUE,
                event_type     text NOT NULL,
                aggregate_id   text NOT NULL,
                correlation_id uuid NOT NULL,
                topic          text NOT NULL,
                envelope       jsonb NOT NULL,
                created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
                published_at   timestamptz,
                failed_at      timestamptz,
                last_error     text,
                attempts       integer NOT NULL DEFAULT 0
            )
            """
        )
        op.execute(
            f"CREATE INDEX outbox_pending_idx ON {service}.outbox (id)"
            " WHERE published_at IS NULL AND failed_at IS NULL"
        )
        op.execute(f"CREATE INDEX outbox_aggregate_idx ON {service}.outbox (aggregate_id, id)")
        op.execute(
            f"CREATE INDEX outbox_published_at_idx ON {service}.outbox (published_at)"
            " WHERE published_at IS NOT NULL"
        )
        op.execute(
            f"""
            CREATE TABLE {service}.inbox (
                event_id         uuid PRIMARY KEY,
                event_type       text NOT NULL,
                source_topic     text,
                source_partition integer,
                source_offset    bigint,
                processed_at     timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        op.execute(
            f"""
            CREATE TABLE {service}.dead_letters (
                id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                source_topic     text NOT NULL,
                source_partition integer NOT NULL,
                source_offset    bigint NOT NULL,
                message_key      bytea,
                message_value    bytea,
                headers          jsonb NOT NULL DEFAULT '[]',
                error_type       text NOT NULL,
                error            text NOT NULL,
                attempts         integer NOT NULL DEFAULT 1,
                event_id         uuid,
                event_type       text,
                aggregate_id     text,
                status           text NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'redriven', 'discarded')),
                created_at       timestamptz NOT NULL DEFAULT now(),
                resolved_at      timestamptz,
                resolution       text,
                UNIQUE (source_topic, source_partition, source_offset)
            )
            """
        )
        op.execute("RESET ROLE")


def downgrade() -> None:
    # Roles are left in place: they are shared by every database on the server.
    for service in reversed(FIRST_SERVICES):
        op.execute(f"DROP SCHEMA IF EXISTS {service} CASCADE")
