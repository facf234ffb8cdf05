"""A PostgreSQL server run from the distribution's binaries, with its data under the state dir.

Why not a container: the dev machine and CI have no Docker engine, and a real server started
with ``pg_ctl`` behaves exactly like production for what the saga needs (transactions,
``SKIP LOCKED``, advisory locks, restarts).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from saga_harness.infra.errors import InfraError
from saga_harness.infra.postgres_auth import (
    PASSWORD_FILE,
    redact,
    require_passwords,
    superuser_password,
    write_hba,
)
from saga_harness.infra.proc import (
    Logger,
    cmdline,
    kill_and_wait,
    pid_alive,
    port_open,
    read_pidfile,
)
from saga_harness.infra.system import apt_install, is_root

DEFAULT_PG_PORT = 55432
PG_HOST = "127.0.0.1"
PG_SUPERUSER = "postgres"
PG_OS_USER = "postgres"
READY_TIMEOUT_S = 60.0
# Where the data dir goes when the postgres OS user cannot reach the project's state dir
# (e.g. a CI clone inside a mode-700 mktemp dir owned by root).
FALLBACK_ROOT = Path("/var/tmp")

_SERVER_CONF = """
# written by sagactl: local development / test server, TCP on loopback only
listen_addresses = '127.0.0.1'
# No unix socket: every client (libpq, JDBC, the harness) comes over TCP with a password.
unix_socket_directories = ''
max_connections = 300
log_line_prefix = '%m [%p] %q%u@%d '
# The outbox and effects tables are vacuumed by row count (migration 0009): look often.
autovacuum_naptime = 10s
"""


# libpq's words for a server that asked for a password and did not like (or get) one.
_LOGIN_REFUSED = ("password authentication failed", "no password supplied")


def find_pg_bin_dir() -> Path | None:
    """Locate the server binaries (initdb, pg_ctl), newest Debian version first.

    ``SAGA_PG_BIN_DIR`` overrides the search for non-Debian layouts.
    """
    override = os.environ.get("SAGA_PG_BIN_DIR")
    if override:
        return Path(override)
    candidates = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", path.parent.name)) or (0,)

    if candidates:
        return max(candidates, key=version)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def postgres_url(
    *,
    port: int,
    database: str,
    host: str = PG_HOST,
    user: str = PG_SUPERUSER,
    password: str | None = None,
) -> str:
    """Build the libpq URL of the local server (with ``password`` when given)."""
    login = user if password is None else f"{user}:{quote(password, safe='')}"
    return f"postgresql://{login}@{host}:{port}/{database}"


def wait_for_postgres(
    url: str, *, timeout: float = READY_TIMEOUT_S, alive: Callable[[], bool] | None = None
) -> None:
    """Poll until ``url`` accepts a connection and answers a query, or raise InfraError.

    ``alive`` lets the caller abort early when the server process has already died.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise InfraError(f"PostgreSQL exited while waiting for {redact(url)}")
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.Error as exc:
            if any(refusal in str(exc) for refusal in _LOGIN_REFUSED):
                # A server that answers and refuses the login will not change its mind.
                raise InfraError(f"PostgreSQL at {redact(url)} refused the login: {exc}") from None
            last = exc
            time.sleep(0.2)
    raise InfraError(f"PostgreSQL at {redact(url)} not ready after {timeout:.0f}s: {last}")


def ensure_database(admin_url: str, database: str) -> bool:
    """Create ``database`` if it does not exist; return True if it was created."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists:
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        except psycopg.errors.DuplicateDatabase:
            return False  # created concurrently by someone else: fine
        return True


class LocalPostgres:
    """One PostgreSQL server whose data lives in ``<state_dir>/postgres``.

    Started via ``pg_ctl``, which detaches the postmaster, so the server outlives the Python
    process that started it until ``stop()`` is called.
    """

    def __init__(
        self, *, state_dir: Path, port: int = DEFAULT_PG_PORT, log: Logger = print
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.port = port
        self.log = log

    # -- paths -------------------------------------------------------------------------------
    @property
    def link(self) -> Path:
        """``<state_dir>/postgres``: the server dir itself, or a symlink into /var/tmp."""
        return self.state_dir / "postgres"

    @property
    def home(self) -> Path:
        """The real directory holding data/ and the server log.

        Resolved, because the postgres OS user may be unable to follow a path that goes
        through the state dir (that is the very reason for the symlink).
        """
        link = self.link
        return link.resolve() if link.is_symlink() else link

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "postgres.log"

    @property
    def password_file(self) -> Path:
        """The superuser's password, owner-only (``postgres_auth``)."""
        return self.home / PASSWORD_FILE

    def url(self, database: str) -> str:
        """URL of ``database`` on this server, as the superuser with its password (none before
        the first ``start``, which generates it). Hand it out; never log it (``redact``)."""
        try:
            password: str | None = self.password_file.read_text().strip()
        except FileNotFoundError:
            password = None
        return postgres_url(port=self.port, database=database, password=password)

    @property
    def admin_url(self) -> str:
        """URL of the maintenance database, used to create the app database."""
        return self.url("postgres")

    # -- state -------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The postmaster's pid if the server is running, else None."""
        pid = read_pidfile(self.data_dir / "postmaster.pid")
        if pid is None or not pid_alive(pid):
            return None
        cl = cmdline(pid)
        if cl and "postgres" not in cl:
            return None  # stale pidfile, pid recycled by something else
        return pid

    def is_running(self) -> bool:
        """Tell whether this data dir's postmaster is alive."""
        return self.pid is not None

    # -- lifecycle ---------------------------------------------------------------------------
    def install(self) -> Path:
        """Return the server binary dir, apt-installing PostgreSQL on a bare Debian machine."""
        bin_dir = find_pg_bin_dir()
        if bin_dir is None or not (bin_dir / "pg_ctl").exists():
            apt_install(["postgresql"], log=self.log)
            bin_dir = find_pg_bin_dir()
        if bin_dir is None or not (bin_dir / "pg_ctl").exists():
            raise InfraError("PostgreSQL server binaries not found (set SAGA_PG_BIN_DIR)")
        return bin_dir

    def start(self) -> bool:
        """Start the server unless it already runs; return True if this call started it.

        Initialises the cluster on first use. Waits until it accepts connections.
        """
        if self.is_running():
            wait_for_postgres(self.admin_url, alive=self.is_running)
            self._require_passwords()
            return False
        if port_open(PG_HOST, self.port):
            raise InfraError(
                f"port {self.port} is already in use by a process this state dir "
                f"({self.state_dir}) does not own; stop it or choose another PostgreSQL port"
            )
        bin_dir = self.install()
        self._prepare_home()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir)
        self.log(f"starting PostgreSQL on {PG_HOST}:{self.port} (log: {self.log_file})")
        result = self._pg_ctl(
            bin_dir,
            "start",
            "-w",
            "-t",
            str(int(READY_TIMEOUT_S)),
            "-l",
            str(self.log_file),
            "-o",
            f"-p {self.port}",
        )
        if result.returncode != 0:
            raise InfraError(
                f"PostgreSQL failed to start (pg_ctl exit {result.returncode}): "
                f"{result.stdout.strip()} {result.stderr.strip()}",
                logs=[self.log_file],
            )
        try:
            wait_for_postgres(self.admin_url, alive=self.is_running)
        except InfraError as exc:
            raise InfraError(str(exc), logs=[self.log_file]) from None
        self._require_passwords()
        return True

    def stop(self) -> bool:
        """Stop the server with a fast shutdown; return True if it was running."""
        if not self.is_running():
            return False
        bin_dir = self.install()
        self.log("stopping PostgreSQL")
        result = self._pg_ctl(bin_dir, "stop", "-m", "fast", "-w", "-t", "60")
        if result.returncode != 0 and self.is_running():
            pid = self.pid
            self.log(f"pg_ctl stop failed ({result.stderr.strip()}); killing postmaster {pid}")
            if pid:
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown, children exit too
                kill_and_wait(pid, timeout=30)
        return True

    def restart(self) -> None:
        """Stop (fast) and start the server again, as a database failover drill would."""
        self.stop()
        self.start()

    def create_database(self, database: str) -> bool:
        """Create the app database if missing; return True if created."""
        return ensure_database(self.admin_url, database)

    # -- internals ---------------------------------------------------------------------------
    def _password(self) -> str:
        return superuser_password(self.home, owner=PG_OS_USER if is_root() else None)

    def _require_passwords(self) -> None:
        """Upgrade a data dir initialised with trust (before passwords were checked) in place."""
        try:
            require_passwords(
                self.data_dir,
                password=self._password(),
                passwordless_url=postgres_url(port=self.port, database="postgres"),
                log=self.log,
            )
        except InfraError as exc:
            raise InfraError(str(exc), logs=[self.log_file]) from None

    def _as_pg_user(self, argv: list[str]) -> list[str]:
        # PostgreSQL refuses to run as root.
        return ["runuser", "-u", PG_OS_USER, "--", *argv] if is_root() else argv

    def _pg_ctl(self, bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
        argv = self._as_pg_user([str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args])
        # pg_ctl -l sends the server's output to the log file, so our pipes close with pg_ctl.
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            cwd="/",  # the postgres user may not be allowed into our cwd
        )

    def _pg_user_can_reach(self, path: Path) -> bool:
        if not is_root():
            return True
        probe = subprocess.run(
            ["runuser", "-u", PG_OS_USER, "--", "test", "-x", str(path)],
            capture_output=True,
            check=False,
            cwd="/",
        )
        return probe.returncode == 0

    def _prepare_home(self) -> None:
        """Create the server directory where the postgres OS user can use it."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        home = self.link
        if home.is_symlink():
            self._make_pg_dir(home.resolve())  # recreate if /var/tmp was cleaned
            return
        if home.exists():
            if not self._pg_user_can_reach(home):
                raise InfraError(
                    f"{home} exists but the '{PG_OS_USER}' user cannot reach it; "
                    "remove it (and the data in it) or fix permissions"
                )
            self._make_pg_dir(home)
            return
        if self._pg_user_can_reach(self.state_dir):
            self._make_pg_dir(home)
            return
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:16]
        outer = FALLBACK_ROOT / f"saga-outbox-{digest}"
        outer.mkdir(mode=0o755, parents=True, exist_ok=True)
        outer.chmod(0o755)
        target = outer / "postgres"
        self._make_pg_dir(target)
        home.symlink_to(target, target_is_directory=True)
        self.log(
            f"'{PG_OS_USER}' cannot traverse {self.state_dir}; PostgreSQL data lives in {target}"
        )

    def _make_pg_dir(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if is_root():
            shutil.chown(path, user=PG_OS_USER, group=PG_OS_USER)
        path.chmod(0o700)

    def _initdb(self, bin_dir: Path) -> None:
        self.log(f"initialising PostgreSQL cluster in {self.data_dir}")
        self._password()  # generated before initdb reads it
        argv = self._as_pg_user(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                PG_SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={self.password_file}",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ]
        )
        result = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/")
        if result.returncode != 0:
            raise InfraError(
                f"initdb failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        write_hba(self.data_dir)
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as f:
            f.write(_SERVER_CONF)
