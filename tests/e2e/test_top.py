"""``sagactl top --once --json`` reads live numbers from processes serving the runtime's
metrics: straight from their ``/metrics`` and through a real Prometheus scraping them
(Debian's package, installed on demand; its query language is what the source speaks).

The processes record through ``saga_runtime.metrics`` and serve with its ``MetricsServer``
(``metered_process.py``): the names, labels and buckets are the product's, and the test needs
no broker or database, so it costs seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from saga_harness.infra.proc import wait_until
from saga_harness.infra.prometheus import LocalPrometheus, scrape_config
from saga_harness.system import free_port
from sagactl.cli import main as sagactl

pytestmark = pytest.mark.e2e

# Run as a module from this checkout's root, so that it imports this checkout's runtime.
ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def targets() -> Iterator[dict[str, str]]:
    """An orders process and a relay, each serving /metrics: name -> host:port."""
    addresses = {"orders": f"127.0.0.1:{free_port()}", "relay-a": f"127.0.0.1:{free_port()}"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.metered_process", role, address.rsplit(":")[1]],
            cwd=ROOT,
        )
        for role, address in (("orders", addresses["orders"]), ("relay", addresses["relay-a"]))
    ]
    try:

        def serving() -> bool:
            try:
                return all(
                    httpx.get(f"http://{address}/metrics", timeout=1).status_code == 200
                    for address in addresses.values()
                )
            except httpx.HTTPError:
                return False

        assert wait_until(serving, timeout=30)
        yield addresses
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def top(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    capsys.readouterr()
    code = sagactl(["top", "--once", "--json", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


def assert_live(document: dict[str, Any]) -> None:
    sagas = document["sagas"]
    assert sagas["finished_per_s"] > 0
    assert set(sagas["finished_per_s_by_state"]) == {"SHIPPED"}
    assert 0.25 < sagas["duration_p50_s"] <= 0.5  # 0.3 s, in the bucket (0.25, 0.5]
    orders = document["outboxes"]["orders"]
    assert orders["active_relays"] == ["relay-a"]
    assert orders["publish_p99_s"] is not None
    assert document["consumers"]["orders"]["applied_per_s"] > 0
    charge = document["effects"]["payments"]["charge"]
    assert charge["calls_per_s"] > 0 and 0 < charge["error_ratio"] < 1
    assert document["consumers"]["stock"]["applied_per_s"] is None  # nothing read it


def test_top_reads_live_numbers_from_the_processes_metrics(
    targets: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = [f"{name}={address}" for name, address in targets.items()]
    document = top(capsys, "--metrics", *metrics, "--interval", "0.5")
    assert document["targets"] == {"orders": "up", "relay-a": "up"}
    assert document["rate_window_s"] >= 0.5
    assert_live(document)


def test_top_reads_live_numbers_from_prometheus(
    targets: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    prometheus = LocalPrometheus(state_dir=tmp_path, port=free_port())
    prometheus.configure(
        scrape_config(targets, rule_files=[], scrape_interval="1s", evaluation_interval="1s")
    )
    prometheus.start()
    try:
        # A rate needs two scrapes of each target.
        def scraped_twice() -> bool:
            found = prometheus.query(
                "/api/v1/query", query="count_over_time(saga_relay_active[1m])"
            )["result"]
            return bool(found) and float(found[0]["value"][1]) >= 3

        assert wait_until(scraped_twice, timeout=30)
        document = top(capsys, "--prometheus", prometheus.url)
        assert document["source"] == f"Prometheus {prometheus.url}"
        assert document["targets"] == {"orders": "up", "relay-a": "up"}
        assert_live(document)
    finally:
        prometheus.stop()
