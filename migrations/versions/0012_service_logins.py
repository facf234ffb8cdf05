"""Each service and each outbox relay logs in as a role of its own, which owns nothing.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

Until now every process logged in as one admin and ran ``SET ROLE <service>``, which any
statement could undo (``RESET ROLE``): a compromised service could read every schema. Now the
tables stay with their NOLOGIN owner roles (``orders``: the migrations run DDL under them)
and, per service, two LOGIN roles get only what they need at run time:

- ``<database>_<service>``: the service; DML on its own schema's tables and sequences, now
  and for tables its owner creates later (default privileges);
- ``<database>_<service>_relay``: its outbox's relay; reads, marks and purges the outbox,
  purges the inbox.

Neither is a member of any role (no ``SET ROLE``), neither may create anything, neither can
see another schema. Roles are shared by the server's databases, hence the database's name in
theirs. They are created without a password: ``sagactl prepare`` sets those the environment
configures (``DATABASE_PASSWORD_<SERVICE>``, ``DATABASE_PASSWORD_<SERVICE>_RELAY``).

Frozen: ``saga_runtime.schema`` carries the same grants for services created after this.
"""

from alembic import op

from migrations.history import FIRST_SERVICES

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _grants(service: str) -> str:
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


def upgrade() -> None:
    for service in FIRST_SERVICES:
        op.execute(_grants(service))


def downgrade() -> None:
    # DROP OWNED revokes the roles' grants in this database; no other database has any.
    for service in FIRST_SERVICES:
        op.execute(
            f"""
            DO $$
            DECLARE
                app   text := current_database() || '_{service}';
                relay text := current_database() || '_{service}_relay';
            BEGIN
                FOREACH app IN ARRAY ARRAY[app, relay] LOOP
                    IF EXISTS (SELECT FROM pg_roles WHERE rolname = app) THEN
                        EXECUTE format('DROP OWNED BY %I', app);
                        EXECUTE format('DROP ROLE %I', app);
                    END IF;
                END LOOP;
            END $$
            """
        )
