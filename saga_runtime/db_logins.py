"""Who a process logs in to PostgreSQL as: one LOGIN role per service and per outbox relay.

A service's tables belong to its NOLOGIN owner role (``orders``), under which the
migrations create them; the service logs in as a role that owns nothing and holds only
DML grants on its own schema (``<database>_orders``), and its outbox's relay as another
that may read, mark and purge that outbox and purge that inbox (``<database>_orders_relay``).
Neither is a member of any role, so neither can ``SET ROLE`` to anything.

Roles are shared by every database on the server, so the login roles carry the database's
name: two databases on one server (tests, a staging copy) never share a password.

Passwords come from the environment, ``DATABASE_PASSWORD_<LOGIN>`` (``DATABASE_PASSWORD_ORDERS``,
``DATABASE_PASSWORD_ORDERS_RELAY``), or from the file ``DATABASE_PASSWORD_<LOGIN>_FILE`` names
(a container secret). They go to libpq as a connection parameter and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from saga_runtime.errors import ConfigurationError
from saga_runtime.naming import validate_service_name

__all__ = [
    "RELAY_LOGIN_SUFFIX",
    "login_credentials",
    "login_role",
    "password_variable",
    "relay_login",
    "set_login_passwords",
]

RELAY_LOGIN_SUFFIX = "_relay"


def relay_login(service: str) -> str:
    """The login of the relay of ``service``'s outbox (``orders`` -> ``orders_relay``)."""
    return f"{validate_service_name(service)}{RELAY_LOGIN_SUFFIX}"


def _database(url: str) -> str:
    database = conninfo_to_dict(url).get("dbname") or os.environ.get("PGDATABASE")
    if not database:
        raise ConfigurationError("DATABASE_URL names no database: the login roles carry its name")
    return str(database)


def login_role(url: str, login: str) -> str:
    """The role ``login`` (a service, or a relay's ``relay_login``) logs in as on ``url``'s
    database: ``<database>_<login>``, the name migration 0012 gives it."""
    return f"{_database(url)}_{validate_service_name(login)}"


def password_variable(login: str) -> str:
    """The environment variable holding ``login``'s password (``DATABASE_PASSWORD_ORDERS``)."""
    return f"DATABASE_PASSWORD_{validate_service_name(login).upper()}"


def _password(login: str, environ: Mapping[str, str]) -> str | None:
    variable = password_variable(login)
    if environ.get(variable):
        return environ[variable]
    path = environ.get(f"{variable}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError as exc:
        # The path only, never the file's content.
        raise ConfigurationError(f"{variable}_FILE: cannot read {path} ({exc.strerror})") from None


def login_credentials(
    url: str, login: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """libpq parameters that log in as ``login``'s role: ``user`` and, when configured,
    ``password`` (without one, libpq's own sources apply: ``.pgpass``, a client certificate)."""
    environ = os.environ if environ is None else environ
    credentials = {"user": login_role(url, login)}
    password = _password(login, environ)
    if password is not None:
        credentials["password"] = password
    return credentials


def set_login_passwords(
    conn: psycopg.Connection, logins: list[str], environ: Mapping[str, str] | None = None
) -> list[str]:
    """Give each login role the password the environment configures for it (an admin's job:
    ``sagactl prepare``). Returns the logins whose password was set; those with none configured
    are left as they are.

    The password crosses the wire only as a SCRAM verifier computed here (as psql's
    ``\\password`` does), so it appears in no statement the server could log.
    """
    environ = os.environ if environ is None else environ
    done = []
    for login in logins:
        password = _password(login, environ)
        if password is None:
            continue
        role = f"{conn.info.dbname}_{validate_service_name(login)}"
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(verifier.decode())
            )
        )
        done.append(login)
    return done
