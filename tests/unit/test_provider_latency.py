"""The payment provider simulator's latency: POSTs (charges, voids, refunds) wait first."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from simulators.payment_provider.latency import add_latency


def app_waiting(seconds: float, waited: list[float]) -> FastAPI:
    async def sleep(delay: float) -> None:
        waited.append(delay)

    app = FastAPI()

    @app.post("/charges")
    def charge() -> dict[str, str]:
        return {"status": "approved"}

    @app.get("/ledger")
    def ledger() -> dict[str, list[str]]:
        return {"charges": []}

    add_latency(app, seconds, sleep)
    return app


def test_every_post_waits_the_latency_and_a_read_does_not() -> None:
    waited: list[float] = []
    client = TestClient(app_waiting(0.3, waited))
    assert client.post("/charges").json() == {"status": "approved"}
    assert client.get("/ledger").status_code == 200
    assert waited == [0.3]


def test_no_latency_adds_no_wait() -> None:
    waited: list[float] = []
    client = TestClient(app_waiting(0.0, waited))
    client.post("/charges")
    assert waited == []
