"""Where ``sagactl top`` looks when told nothing: the Prometheus and the ``/metrics``
addresses ``./dev up`` uses (a test checks these against the harness)."""

from __future__ import annotations

import os

__all__ = ["DEV_UP_TARGETS", "default_prometheus_url", "parse_target"]

# Services with an HTTP API serve /metrics on it; the others on their health port + 1000;
# the two relays on 9030 and 9031 (harness/saga_harness/monitoring.py).
DEV_UP_TARGETS = {
    "orders": "127.0.0.1:8000",
    "stock": "127.0.0.1:8001",
    "payments": "127.0.0.1:9021",
    "shipments": "127.0.0.1:9022",
    "notifications": "127.0.0.1:9023",
    "relay-a": "127.0.0.1:9030",
    "relay-b": "127.0.0.1:9031",
}
DEV_UP_PROMETHEUS_PORT = 9190


def default_prometheus_url() -> str:
    """``$PROMETHEUS_URL``, else ``./dev up``'s Prometheus (``$PROMETHEUS_PORT``, 9190)."""
    url = os.environ.get("PROMETHEUS_URL")
    if url:
        return url
    return f"http://127.0.0.1:{os.environ.get('PROMETHEUS_PORT') or DEV_UP_PROMETHEUS_PORT}"


def parse_target(text: str) -> tuple[str, str]:
    """``NAME=HOST:PORT`` or ``HOST:PORT`` (then named by its address) -> (name, address)."""
    name, sep, address = text.rpartition("=")
    address = address.strip().removeprefix("http://").removesuffix("/metrics").rstrip("/")
    host, colon, port = address.rpartition(":")
    if not (host and colon and port.isdigit()):
        raise ValueError(f"not HOST:PORT: {text!r}")
    return (name.strip() if sep and name.strip() else address), address
