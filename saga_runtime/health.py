"""Liveness and readiness of a process: ``/healthz`` and ``/readyz``.

``/healthz`` (alive): the process answers and every worker thread runs. A
supervisor restarts a process whose ``/healthz`` keeps failing (a hung one).
``/readyz`` (ready): alive, the database answers, and whatever the process
declares on top (its consumers in their group and fetching; a relay's outbox
threads active or on standby). Both answer 200 with what was checked, or 503
with the failing checks, as a small JSON document, and both are cheap: the
database check is one ``SELECT 1`` on a connection of its own, at most once a
second.

Processes with an HTTP API serve them on it (``add_health_routes``); the others
on a small port of their own (``HealthServer``).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import psycopg

from saga_runtime.db import connect
from saga_runtime.logs import get_logger
from saga_runtime.settings import DatabaseSettings
from saga_runtime.workers import Worker

__all__ = [
    "DatabaseProbe",
    "Health",
    "HealthReport",
    "HealthServer",
    "Probe",
    "add_health_routes",
]

if TYPE_CHECKING:
    from fastapi import FastAPI

log = get_logger(__name__)

Probe = Callable[[], "str | None"]
"""One check: None when fine, else what is wrong (a short sentence)."""


@dataclass(frozen=True)
class HealthReport:
    """The outcome of the checks: every check's name with ``ok`` or its problem."""

    ok: bool
    checks: dict[str, str]

    @property
    def status_code(self) -> int:
        return 200 if self.ok else 503

    def body(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "failing", "checks": self.checks}


class Health:
    """One process's checks: ``alive`` for liveness, ``alive`` and ``ready`` for readiness."""

    def __init__(
        self, *, alive: Mapping[str, Probe] | None = None, ready: Mapping[str, Probe] | None = None
    ) -> None:
        self._alive = dict(alive or {})
        self._ready = dict(ready or {})

    def live(self) -> HealthReport:
        return _run(self._alive)

    def ready(self) -> HealthReport:
        return _run({**self._alive, **self._ready})


def _run(probes: Mapping[str, Probe]) -> HealthReport:
    checks: dict[str, str] = {}
    for name, probe in probes.items():
        try:
            problem = probe()
        except Exception as exc:  # a broken check says "not ok", it never 500s
            problem = f"check failed: {exc!r}"
        checks[name] = "ok" if problem is None else problem
    return HealthReport(ok=all(v == "ok" for v in checks.values()), checks=checks)


class DatabaseProbe:
    """Is PostgreSQL reachable: ``SELECT 1`` on a connection of its own, cached ``ttl`` seconds.

    Its own connection, so a pool busy with consumers never makes the process
    look unready, and a refused login shows here too. A check
    that hangs (a frozen server) holds the others up at most ``timeout``
    seconds, which they report as a failure.
    """

    def __init__(
        self,
        settings: DatabaseSettings,
        *,
        role: str | None,
        name: str,
        ttl: float = 1.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings.model_copy(update={"connect_timeout": max(1.0, timeout)})
        self._role = role
        self._name = name
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._checked_at: float | None = None
        self._result: str | None = None

    def __call__(self) -> str | None:
        if not self._lock.acquire(timeout=self._timeout):
            return f"database check did not return within {self._timeout:g}s"
        try:
            now = self._clock()
            if self._checked_at is None or now - self._checked_at >= self._ttl:
                self._result = self._check()
                self._checked_at = self._clock()
            return self._result
        finally:
            self._lock.release()

    def _check(self) -> str | None:
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = connect(
                    self._settings, role=self._role, name=f"{self._name}:health", autocommit=True
                )
            self._conn.execute("SELECT 1")
            return None
        except psycopg.Error as exc:
            self.close()
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return f"database unreachable: {first_line}"

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


def add_health_routes(app: FastAPI, health: Health) -> None:
    """Serve ``/healthz`` and ``/readyz`` on a FastAPI ``app`` (left out of its OpenAPI)."""
    from fastapi.responses import JSONResponse

    def respond(report: HealthReport) -> JSONResponse:
        return JSONResponse(report.body(), status_code=report.status_code)

    # Plain functions: FastAPI runs them on its thread pool, so a slow database
    # check never blocks the event loop.
    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        return respond(health.live())

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        return respond(health.ready())


class HealthServer:
    """``/healthz`` and ``/readyz`` on a port of their own (stdlib HTTP, one thread per request).

    ``worker()`` is the serving loop as a ``Worker``, so a health server that
    dies takes its process down like any other worker.
    """

    def __init__(self, health: Health, *, host: str, port: int) -> None:
        routes: dict[str, Callable[[], HealthReport]] = {
            "/healthz": health.live,
            "/readyz": health.ready,
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    status, body = 404, {"detail": "not found"}
                else:
                    report = route()
                    status, body = report.status_code, report.body()
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a probe every few seconds is not worth a log line

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def worker(self, name: str = "health-server") -> Worker:
        def serve() -> None:
            log.info("health.serving", port=self.port)
            self._server.serve_forever(poll_interval=0.5)

        def stop() -> None:
            # ``shutdown`` waits for the loop to end: never block the caller on it.
            threading.Thread(target=self._server.shutdown, daemon=True).start()

        return Worker(name=name, run=serve, stop=stop)

    def close(self) -> None:
        self._server.server_close()
