"""/healthz and /readyz: what they check, how they answer, and that they stay cheap."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from saga_runtime import DatabaseProbe, DatabaseSettings, Health, HealthServer, add_health_routes
from saga_runtime import health as health_module


def test_readiness_includes_liveness_and_names_the_failing_check() -> None:
    problems: dict[str, str | None] = {"workers": None, "database": None}
    health = Health(
        alive={"workers": lambda: problems["workers"]},
        ready={"database": lambda: problems["database"]},
    )
    assert health.live().ok and health.ready().ok
    assert health.ready().body() == {"status": "ok", "checks": {"workers": "ok", "database": "ok"}}

    problems["database"] = "database unreachable: connection refused"
    assert health.live().ok
    ready = health.ready()
    assert (ready.ok, ready.status_code) == (False, 503)
    assert ready.body()["checks"]["database"] == "database unreachable: connection refused"

    problems["workers"] = "orders-consumer-1 raised CrashPointError()"
    assert health.live().status_code == 503
    assert health.ready().body()["checks"]["workers"].startswith("orders-consumer-1")


def test_a_check_that_raises_is_a_failed_check_not_an_error() -> None:
    def broken() -> str | None:
        raise KeyError("stats")

    report = Health(ready={"consumer-0": broken}).ready()
    assert report.status_code == 503
    assert "KeyError" in report.checks["consumer-0"]


def test_routes_on_an_api_app_stay_out_of_its_openapi() -> None:
    app = FastAPI()
    down = {"database": "database unreachable: timeout"}
    add_health_routes(app, Health(ready={"database": lambda: down.get("database")}))
    client = TestClient(app)

    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "database unreachable: timeout"}
    down.clear()
    assert client.get("/readyz").status_code == 200
    assert not {"/healthz", "/readyz"} & set(client.get("/openapi.json").json()["paths"])


def test_the_health_server_answers_on_its_own_port_and_stops() -> None:
    failing = {"consumer-0": "consumer group state wait-coord, join state init"}
    health = Health(
        alive={"workers": lambda: None}, ready={"consumer-0": lambda: failing.get("consumer-0")}
    )
    server = HealthServer(health, host="127.0.0.1", port=0)
    worker = server.worker()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        response = httpx.get(f"{base}/readyz", timeout=5)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {
            "status": "failing",
            "checks": {"workers": "ok", "consumer-0": failing["consumer-0"]},
        }
        failing.clear()
        assert httpx.get(f"{base}/readyz?verbose", timeout=5).status_code == 200
        assert httpx.get(f"{base}/other", timeout=5).status_code == 404
    finally:
        worker.stop()
        thread.join(5)
        server.close()
    assert not thread.is_alive()


class FakeConnection:
    def __init__(self, calls: list[str], fail: dict[str, bool]) -> None:
        self.calls = calls
        self.fail = fail
        self.closed = False
        self.broken = False

    def execute(self, query: str) -> None:
        self.calls.append(query)
        if self.fail["query"]:
            raise psycopg.OperationalError("server closed the connection unexpectedly\nmore")

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_connect(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], dict[str, bool]]:
    calls: list[str] = []
    fail = {"connect": False, "query": False}

    def connect(_settings: Any, **_kwargs: Any) -> FakeConnection:
        calls.append("connect")
        if fail["connect"]:
            raise psycopg.OperationalError("connection refused")
        return FakeConnection(calls, fail)

    monkeypatch.setattr(health_module, "connect", connect)
    return calls, fail


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_database_check_is_cached_for_a_second_and_reconnects_after_a_failure(
    fake_connect: tuple[list[str], dict[str, bool]],
) -> None:
    calls, fail = fake_connect
    clock = Clock()
    probe = DatabaseProbe(DatabaseSettings(), role="orders", name="orders", ttl=1.0, clock=clock)

    assert probe() is None
    assert probe() is None  # cached: no second round trip
    assert calls == ["connect", "SELECT 1"]
    clock.now += 1.0
    assert probe() is None
    assert calls == ["connect", "SELECT 1", "SELECT 1"]  # one connection, kept

    fail["query"] = True
    clock.now += 1.0
    assert probe() == "database unreachable: server closed the connection unexpectedly"
    fail["query"], fail["connect"] = False, True
    clock.now += 1.0
    assert probe() == "database unreachable: connection refused"
    fail["connect"] = False
    clock.now += 1.0
    assert probe() is None
    assert calls[-2:] == ["connect", "SELECT 1"]


def test_a_hung_database_check_fails_the_others_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered, release = threading.Event(), threading.Event()

    class Hung:
        closed = broken = False

        def execute(self, _query: str) -> None:
            entered.set()
            release.wait(10)

        def close(self) -> None:
            pass

    monkeypatch.setattr(health_module, "connect", lambda *_a, **_k: Hung())
    probe = DatabaseProbe(DatabaseSettings(), role=None, name="relay", timeout=0.2)
    first = threading.Thread(target=probe, daemon=True)
    first.start()
    assert entered.wait(5)
    try:
        assert probe() == "database check did not return within 0.2s"
    finally:
        release.set()
        first.join(5)
