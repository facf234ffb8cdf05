"""A service's database role, schema and runtime tables (outbox, inbox, dead_letters).

The runtime reads and writes these tables for every service alike, so their shape is
the runtime's, and a new service's migration takes them from here instead of copying
DDL: ``create_service_schema(op.execute, "loyalty", LOYALTY_TABLE)``.

The statements are the tables' current shape: migration 0001 as amended by 0004 (the
inbox's ``processed_at`` index). Those two migrations keep their own frozen copy,
because an applied migration must never change what it does; an integration test
checks that what this module creates is what they created. A later migration that
changes every service's runtime tables changes this module in the same commit.
"""

from __future__ import annotations

from collections.abc import Callable

from saga_runtime.naming import validate_service_name

__all__ = [
    "RUNTIME_TABLES",
    "create_service_schema",
    "drop_service_schema",
    "grant_service_logins",
    "service_schema_statements",
]

RUNTIME_TABLES = ("outbox", "inbox", "dead_letters")

# For tables whose rows are updated as they are worked through (outbox, effects): vacuumed
# every thousand changed rows whatever their size, so the partial indexes their pollers
# scan do not fill with dead entries (see migration 0009).
BUSY_TABLE_STORAGE = "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000"

Execute = Callable[[str], object]


def _role(service: str) -> str:
    # Roles are cluster-wide and may exist already (another database on the same
    # server). An admin that is no superuser must be a member of the role to create
    # the schema for it and to SET ROLE to it.
    return f"""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{service}') THEN
                CREATE ROLE {service} NOLOGIN;
              END IF;
              IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                EXECUTE 'GRANT {service} TO ' || quote_ident(current_user);
              END IF;
            END $$
            """


def _tables(service: str) -> list[str]:
    return [
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
            ) WITH ({BUSY_TABLE_STORAGE})
            """,
        # What the relay reads next, one aggregate's history, and what purging removes.
        f"CREATE INDEX outbox_pending_idx ON {service}.outbox (id)"
        " WHERE published_at IS NULL AND failed_at IS NULL",
        f"CREATE INDEX outbox_aggregate_idx ON {service}.outbox (aggregate_id, id)",
        f"CREATE INDEX outbox_published_at_idx ON {service}.outbox (published_at)"
        " WHERE published_at IS NOT NULL",
        f"""
            CREATE TABLE {service}.inbox (
                event_id         uuid PRIMARY KEY,
                event_type       text NOT NULL,
                source_topic     text,
                source_partition integer,
                source_offset    bigint,
                processed_at     timestamptz NOT NULL DEFAULT now()
            )
            """,
        # For purging old rows (INBOX_RETENTION) without scanning the whole inbox.
        f"CREATE INDEX inbox_processed_at_idx ON {service}.inbox (processed_at)",
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
            """,
    ]


def _logins(service: str) -> str:
    # The service's and its relay's LOGIN roles and their grants, as migration 0012 gives
    # them to the first five services (see saga_runtime.db_logins). Named after the
    # database, because roles are shared by every database on the server.
    return f"""
        DO $$
        DECLARE
            app   text := current_database() || '_{service}';
            relay text := current_database() || '_{service}_relay';
        BEGIN
            FOREACH app IN ARRAY ARRAY[app, relay] LOOP
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = app) THEN
                    EXECUTE format('CREATE ROLE %I LOGIN', app);
                END IF;
            END LOOP;
            app := current_database() || '_{service}';
            EXECUTE format('GRANT USAGE ON SCHEMA {service} TO %I, %I', app, relay);
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES'
                           ' IN SCHEMA {service} TO %I', app);
            EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {service} TO %I', app);
            EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE {service} IN SCHEMA {service}'
                           ' GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I', app);
            EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE {service} IN SCHEMA {service}'
                           ' GRANT USAGE, SELECT ON SEQUENCES TO %I', app);
            EXECUTE format('GRANT SELECT, UPDATE, DELETE ON {service}.outbox TO %I', relay);
            EXECUTE format('GRANT SELECT, DELETE ON {service}.inbox TO %I', relay);
        END $$
        """


def service_schema_statements(service: str, *own_tables: str) -> list[str]:
    """The SQL that creates ``service``'s role, schema and runtime tables, then ``own_tables``,
    then the service's and its relay's login roles with their grants.

    The owner role is NOLOGIN: the schema belongs to it, and every table is created under
    it (``SET LOCAL ROLE``). The service logs in as another role that owns nothing and may
    only read and write its own schema's rows (``saga_runtime.db_logins``). Run the
    statements in one transaction, as Alembic runs a migration.
    """
    validate_service_name(service)  # it becomes an identifier in every statement
    return [
        _role(service),
        f"CREATE SCHEMA {service} AUTHORIZATION {service}",
        f"SET LOCAL ROLE {service}",
        *_tables(service),
        *own_tables,
        "RESET ROLE",
        _logins(service),
    ]


def grant_service_logins(execute: Execute, service: str) -> None:
    """Create ``service``'s and its relay's login roles and grant them their rows, for a schema
    made by other means than :func:`create_service_schema` (which does this itself)."""
    execute(_logins(validate_service_name(service)))


def create_service_schema(execute: Execute, service: str, *own_tables: str) -> None:
    """Run :func:`service_schema_statements` with ``execute``: ``op.execute`` in an
    Alembic migration, ``connection.execute`` on a psycopg connection in a transaction."""
    for statement in service_schema_statements(service, *own_tables):
        execute(statement)


def drop_service_schema(execute: Execute, service: str) -> None:
    """Drop ``service``'s schema with all its tables. The role stays: roles are shared by
    every database on the server, and another database may still use it."""
    execute(f"DROP SCHEMA IF EXISTS {validate_service_name(service)} CASCADE")
