"""The login roles of a harness-made database: generated passwords, who gets which, cleanup.

Every database the harness or the tests create gets passwords of its own for its login roles
(``saga_runtime.db_logins``), set as ``sagactl prepare`` sets them in production, and each
process is given only the passwords of the roles it logs in as.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from saga_runtime import password_variable, relay_login, set_login_passwords
from saga_system import SYSTEM
from sagactl.cli import system_logins

__all__ = ["drop_login_roles", "login_passwords", "passwords_for", "without_user"]


def login_passwords(database_url: str, logins: list[str] | None = None) -> dict[str, str]:
    """Generate a password for each of the system's logins (or of ``logins``: a service a test
    adds) on ``database_url``'s database and set it (as the URL's admin); returns them as
    environment variables."""
    logins = system_logins() if logins is None else logins
    passwords = {password_variable(login): secrets.token_urlsafe(24) for login in logins}
    with psycopg.connect(database_url, autocommit=True) as conn:
        set_login_passwords(conn, logins, passwords)
    return passwords


def passwords_for(process: str, passwords: Mapping[str, str]) -> dict[str, str]:
    """The passwords ``process`` logs in with: a service its own, a relay those of every
    outbox's relay, anything else (simulators) none."""
    if process in SYSTEM.names:
        logins = [process]
    elif process.startswith("relay"):
        logins = [relay_login(outbox) for outbox in SYSTEM.outboxes()]
    else:
        logins = []
    return {password_variable(login): passwords[password_variable(login)] for login in logins}


def without_user(url: str) -> str:
    """``url`` without its user and password: a process then logs in only as its own role
    (a stray connection under no role fails instead of acting as the admin)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def drop_login_roles(conn: psycopg.Connection, database: str, services: Iterable[str] = ()) -> None:
    """Drop ``database``'s login roles, the system's and those of ``services`` (more services
    a test created), once the database itself is dropped: roles outlive databases, and
    without this every test database would leave its roles on the server."""
    more = [login for service in services for login in (service, relay_login(service))]
    for login in [*system_logins(), *more]:
        conn.execute(
            sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(f"{database}_{login}"))
        )
