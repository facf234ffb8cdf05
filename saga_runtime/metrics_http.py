"""Serving the metrics: ``/metrics`` on an API, or on a port of its own; HTTP request metrics;
the outbox's backlog, read from the database when Prometheus scrapes.

The backlog is the service's own reading of its own outbox (one indexed query per scrape),
not the relay's: when every relay is down, the rows waiting are still counted, and that is
exactly when they matter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

import psycopg
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from saga_runtime import metrics
from saga_runtime.logs import get_logger

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["MetricsServer", "OutboxBacklog", "QueryGauge", "add_metrics_routes"]

log = get_logger(__name__)

HTTP_REQUESTS = Counter(
    "saga_http_requests_total",
    "HTTP requests served, by route template and status.",
    ["service", "method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "saga_http_request_duration_seconds",
    "Time to answer one HTTP request, by route template.",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class HttpMetrics:
    """ASGI middleware: counts and times each request by its route *template*
    (``/orders/{order_id}``, never the id); a path no route matched is ``unmatched``."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not metrics.enabled():
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            HTTP_REQUESTS.labels(self.service, method, template, str(status)).inc()
            HTTP_SECONDS.labels(self.service, method, template).observe(
                time.perf_counter() - started
            )


def exposition() -> tuple[bytes, str]:
    """The registry in Prometheus's text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def add_metrics_routes(app: FastAPI, *, service: str) -> None:
    """``GET /metrics`` on ``app`` (not in its OpenAPI document), and request metrics."""
    from fastapi import Response

    def serve_metrics() -> Response:
        body, content_type = exposition()
        return Response(content=body, media_type=content_type)

    app.add_api_route("/metrics", serve_metrics, methods=["GET"], include_in_schema=False)
    app.add_middleware(HttpMetrics, service=service)


class MetricsServer:
    """``/metrics`` on a port of its own, for processes without an HTTP API (a daemon thread
    of ``prometheus_client``; it serves whatever the registry holds)."""

    def __init__(self, *, host: str, port: int) -> None:
        self._server, self._thread = start_http_server(port, addr=host)
        log.info("metrics.serving", port=self.port)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving (``shutdown`` waits for the loop: never block the caller on it)."""
        threading.Thread(target=self._server.shutdown, daemon=True).start()
        self._server.server_close()


class OutboxBacklog(Collector):
    """``saga_outbox_pending_rows`` and ``saga_outbox_oldest_pending_age_seconds`` of one
    service's outbox, read (on the partial index of pending rows) at each scrape."""

    def __init__(self, pool: ConnectionPool, *, schema: str, timeout: float = 2.0) -> None:
        self._pool = pool
        self._schema = schema
        self._timeout = timeout
        self._query = (
            sql.SQL(
                "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)"
                " FROM {}.outbox WHERE published_at IS NULL AND failed_at IS NULL"
            )
            .format(sql.Identifier(schema))
            .as_string()
        )

    def describe(self) -> list[Any]:
        # Nothing up front: the registry would otherwise call ``collect`` (a query) on register.
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The two gauges, or nothing if the database does not answer now (a gap, not a 0)."""
        try:
            with self._pool.connection(timeout=self._timeout) as conn:
                row = conn.execute(self._query).fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            log.debug("metrics.outbox_unreadable", error=repr(exc))
            return
        pending, oldest = (int(row[0]), float(row[1])) if row else (0, 0.0)
        rows = GaugeMetricFamily(
            "saga_outbox_pending_rows", "Outbox rows not yet published.", labels=["service"]
        )
        rows.add_metric([self._schema], pending)
        age = GaugeMetricFamily(
            "saga_outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox row not yet published (0: none).",
            labels=["service"],
        )
        age.add_metric([self._schema], oldest)
        yield rows
        yield age


class QueryGauge(Collector):
    """A gauge a service defines by a query returning one number, read at each scrape
    (e.g. sagas not final long after they began). Keep the query cheap: it runs every
    scrape interval."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        name: str,
        documentation: str,
        query: str,
        params: tuple[Any, ...] = (),
        timeout: float = 2.0,
    ) -> None:
        self._pool = pool
        self._name = name
        self._documentation = documentation
        self._query = query
        self._params = params
        self._timeout = timeout

    def describe(self) -> list[Any]:
        return []  # as ``OutboxBacklog``: no query on register

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauge, or nothing if the database does not answer now."""
        try:
            with self._pool.connection(timeout=self._timeout) as conn:
                row = conn.execute(self._query, self._params).fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            log.debug("metrics.query_failed", metric=self._name, error=repr(exc))
            return
        yield GaugeMetricFamily(
            self._name, self._documentation, value=float(row[0]) if row and row[0] else 0.0
        )
