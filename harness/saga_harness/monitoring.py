"""``./dev up``'s monitoring: a metrics port for every process without an HTTP API, and a
Prometheus (``PROMETHEUS_PORT``, 9190 by default; 0: none) scraping them all with the
product's rules.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from saga_harness.infra.errors import InfraError
from saga_harness.infra.prometheus import RULES, LocalPrometheus, scrape_config
from saga_harness.supervisor import ProcessSpec
from saga_runtime import composition_root
from saga_system import SYSTEM

__all__ = ["RELAY_METRICS_PORTS", "metrics_env", "prometheus_spec", "service_metrics_targets"]

# A relay's /metrics: one port each, as their health ports (8030, 8031).
RELAY_METRICS_PORTS = (9030, 9031)
# A service without an API serves /metrics on its health port + this (payments: 9021).
_METRICS_OFFSET = 1000


def metrics_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``<SERVICE>_METRICS_PORT`` of each service without an API, unless already set."""
    env: dict[str, str] = {}
    for name in SYSTEM.names:
        settings = composition_root(SYSTEM, name).Settings()
        variable = f"{name.upper()}_METRICS_PORT"
        if getattr(settings, "port", None) is None and settings.health_port:
            env[variable] = environ.get(variable, str(settings.health_port + _METRICS_OFFSET))
    return env


def service_metrics_targets(env: Mapping[str, str]) -> dict[str, str]:
    """Each service's ``host:port`` serving /metrics: its API's port, else its metrics port."""
    targets: dict[str, str] = {}
    for name in SYSTEM.names:
        settings = composition_root(SYSTEM, name).Settings()
        port = getattr(settings, "port", None) or int(env.get(f"{name.upper()}_METRICS_PORT", 0))
        if port:
            targets[name] = f"127.0.0.1:{port}"
    return targets


def prometheus_spec(state_dir: Path, targets: Mapping[str, str]) -> ProcessSpec | None:
    """Prometheus as a supervised process, configured for ``targets``; None when it is
    turned off or cannot be installed (``up`` then runs without it, and says why)."""
    port = int(os.environ.get("PROMETHEUS_PORT", 9190))
    if not port:
        return None
    server = LocalPrometheus(state_dir=state_dir, port=port)
    try:
        argv = server.argv()
    except InfraError as exc:
        print(f"sagactl: running without Prometheus: {exc}", file=sys.stderr)
        return None
    server.configure(scrape_config(targets, rule_files=[RULES]))
    print(f"sagactl: Prometheus {server.url} (alerts at {server.url}/alerts)")
    return ProcessSpec(name="prometheus", argv=argv, health_url=None)
