"""A real Prometheus (Debian's package, installed on demand) scrapes every process of a running
system and evaluates the product's rules (``deploy/prometheus/rules.yml``): the saga's metrics
arrive, and stopping the relays fires the alert that says no relay is active.

Scrape and evaluation every second, and every alert's ``for`` cut to a second, keep it short.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from saga_harness.infra.proc import wait_until
from saga_harness.infra.prometheus import RULES, LocalPrometheus, scrape_config
from saga_harness.system import SERVICES, System, free_port
from saga_system import SYSTEM

pytestmark = pytest.mark.e2e


def quick_rules(directory: Path) -> Path:
    """The product's rules, each alert's ``for`` one second."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    path = directory / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


@pytest.fixture(scope="module")
def prometheus(
    system: System, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalPrometheus]:
    home = tmp_path_factory.mktemp("prometheus")
    server = LocalPrometheus(state_dir=home, port=free_port())
    server.configure(
        scrape_config(
            system.metrics_targets(),
            rule_files=[quick_rules(home)],
            scrape_interval="1s",
            evaluation_interval="1s",
        )
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def values(prometheus: LocalPrometheus, expression: str) -> dict[str, float]:
    """``expression``'s instant vector: the label ``service`` (or the whole set) -> value."""
    found = prometheus.query("/api/v1/query", query=expression)["result"]
    return {
        item["metric"].get("service", str(item["metric"])): float(item["value"][1])
        for item in found
    }


def test_prometheus_scrapes_every_process_and_the_saga_shows(
    system: System, prometheus: LocalPrometheus, http: httpx.Client
) -> None:
    expected = set(system.metrics_targets())
    assert expected == {*SERVICES, "relay-0"}

    def health() -> dict[str, str]:
        targets = prometheus.query("/api/v1/targets")["activeTargets"]
        return {target["labels"]["job"]: target["health"] for target in targets}

    assert wait_until(lambda: set(health().values()) == {"up"}, timeout=30), health()
    assert set(health()) == expected

    order = system.place_order(http)
    assert system.wait_for_order(http, order["order_id"])["status"] == "SHIPPED"

    def shown() -> bool:
        finished = values(prometheus, 'sum(saga_finished_total{state="SHIPPED"})')
        applied = values(
            prometheus, 'sum by (service) (saga_consumer_events_total{outcome="applied"})'
        )
        calls = prometheus.query(
            "/api/v1/query", query='sum by (kind) (saga_effect_calls_total{result="ok"})'
        )["result"]
        kinds = {item["metric"]["kind"] for item in calls}
        return (
            bool(finished)
            and set(applied) == set(SYSTEM.consumers())
            and kinds >= {"charge", "book", "email"}
        )

    assert wait_until(shown, timeout=15)
    placed = values(
        prometheus, 'sum by (service) (saga_http_requests_total{route="/orders", status="202"})'
    )
    assert placed == {"orders": 1.0}
    relayed = values(prometheus, "sum by (service) (saga_relay_publish_latency_seconds_count)")
    assert relayed.get("orders", 0) >= 1
    active = values(prometheus, "max by (service) (saga_relay_active)")
    assert active == dict.fromkeys(SYSTEM.outboxes(), 1.0)
    backlog = values(prometheus, "saga_outbox_pending_rows")
    assert set(backlog) == set(SYSTEM.outboxes())
    stuck = values(prometheus, "saga_stuck_sagas")
    assert list(stuck.values()) == [0.0]  # one series, from orders: nothing stuck


def test_an_alert_fires_when_the_relays_stop(system: System, prometheus: LocalPrometheus) -> None:
    relays = [name for name in system.processes if name.startswith("relay-")]

    def firing() -> set[str]:
        alerts: list[dict[str, Any]] = prometheus.query("/api/v1/alerts")["alerts"]
        return {
            alert["labels"].get("service", "")
            for alert in alerts
            if alert["labels"]["alertname"] == "OutboxRelayInactive" and alert["state"] == "firing"
        }

    assert wait_until(lambda: firing() == set(), timeout=10)  # relays lead: nothing fires
    for name in relays:
        system.processes[name].stop()
    try:
        assert wait_until(lambda: firing() == set(SYSTEM.outboxes()), timeout=30), firing()
    finally:
        system.start(relays)
