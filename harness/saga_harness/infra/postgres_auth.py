"""The local PostgreSQL checks every password: SCRAM for everyone, the superuser included.

``pg_hba.conf`` allows ``scram-sha-256`` only, so a login role with a wrong password is refused
as compose's server (and production's) refuses it, and so is the superuser without one. The
server listens on loopback TCP only (no unix socket: nothing here needs peer or trust
authentication); the ``local`` lines keep passwords required should one be turned on.

The superuser's password is generated once per state dir and kept beside the data
(``<state_dir>/postgres/superuser.password``), readable by its owner only; the harness hands
it out in the admin URL (``StackAddresses``) and never logs it (``redact``). A data dir
initialised before this (trust on loopback) is upgraded in place by ``require_passwords``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from saga_harness.infra.errors import InfraError
from saga_harness.infra.proc import Logger

__all__ = ["HBA", "PASSWORD_FILE", "redact", "require_passwords", "superuser_password"]

PASSWORD_FILE = "superuser.password"
RELOAD_TIMEOUT_S = 10.0

HBA = """\
# written by sagactl: every login proves its password (SCRAM), the superuser's included
# TYPE  DATABASE     USER  ADDRESS       METHOD
host    all          all   127.0.0.1/32  scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
local   all          all                 scram-sha-256
local   replication  all                 scram-sha-256
"""


def redact(url: str) -> str:
    """``url`` with its password masked, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def superuser_password(home: Path, *, owner: str | None = None) -> str:
    """The superuser's password of the server in ``home``, generated on first use.

    ``owner``: the OS user to give the file to (the server's, when the harness runs as root,
    so that ``initdb --pwfile`` can read it; that user owns the data anyway).
    """
    path = home / PASSWORD_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(32))
        if owner is not None:
            shutil.chown(path, user=owner, group=owner)
    return path.read_text().strip()


def write_hba(data_dir: Path) -> None:
    """Replace the data dir's ``pg_hba.conf`` with ``HBA``, in place (owner and mode stay)."""
    with (data_dir / "pg_hba.conf").open("w") as file:
        file.write(HBA)


def hba_is_ours(data_dir: Path) -> bool:
    """Whether the data dir's ``pg_hba.conf`` is ``HBA`` (passwords checked)."""
    try:
        return (data_dir / "pg_hba.conf").read_text() == HBA
    except FileNotFoundError:
        return False


def require_passwords(data_dir: Path, *, password: str, passwordless_url: str, log: Logger) -> bool:
    """Upgrade a running server that trusts loopback: set the superuser's ``password`` while
    it still trusts, then rewrite ``pg_hba.conf`` and reload. No restart, no data touched.

    ``passwordless_url``: the superuser's URL without a password. Returns whether anything
    changed; waits until the reloaded server refuses that URL.
    """
    if hba_is_ours(data_dir):
        return False
    log("PostgreSQL trusts loopback logins: setting the superuser's password, requiring SCRAM")
    try:
        with psycopg.connect(passwordless_url, autocommit=True, connect_timeout=5) as conn:
            user = conn.info.user
            # Only a SCRAM verifier crosses the wire, so no statement holds the password.
            verifier = conn.pgconn.encrypt_password(
                password.encode(), user.encode(), b"scram-sha-256"
            )
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(user), sql.Literal(verifier.decode())
                )
            )
            write_hba(data_dir)
            conn.execute("SELECT pg_reload_conf()")
    except psycopg.OperationalError as exc:
        raise InfraError(
            f"cannot upgrade {data_dir} to password logins: its pg_hba.conf is not sagactl's"
            f" and the superuser cannot log in without a password ({exc})"
        ) from None
    _wait_refused(passwordless_url)
    return True


def _wait_refused(passwordless_url: str) -> None:
    """Until the server, having reloaded ``pg_hba.conf``, asks ``passwordless_url`` for one
    (a reload is a signal: the postmaster rereads the file a moment later)."""
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(passwordless_url, connect_timeout=3):
                pass
        except psycopg.OperationalError as exc:
            if "password" in str(exc):
                return
            raise InfraError(f"PostgreSQL failed after its reload: {exc}") from None
        time.sleep(0.1)
    raise InfraError("PostgreSQL still accepts logins without a password after its reload")
