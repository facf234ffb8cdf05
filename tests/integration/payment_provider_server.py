"""Run the payment provider simulator for real (uvicorn, in a thread) against a test database."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import uvicorn

from simulators.payment_provider.api import create_app
from simulators.payment_provider.settings import ProviderSettings
from tests.support import wait_until

PROVIDER_TABLES = "provider.refunds, provider.charges, provider.charge_attempts, provider.voids"
# The merchant's key the test provider requires, and the header that carries it.
API_KEY = "provider-test-key"
MERCHANT = {"Authorization": f"Bearer {API_KEY}"}


@contextmanager
def running_provider(database_url: str, *, clean: bool = True, **settings: Any) -> Iterator[str]:
    """Serve the provider on a free local port until the block ends; yields its base URL.

    With ``clean`` its ledger starts empty: the provider's schema is not one the
    ``database`` fixture truncates between tests.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound here, so no other process can take the port meanwhile
    port = sock.getsockname()[1]
    settings = {"api_key": API_KEY, **settings}
    app = create_app(ProviderSettings(database_url=database_url, port=port, **settings))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=serve, name="payment-provider", daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: server.started or errors or not thread.is_alive(), what="provider started"
        )
        if not server.started:
            raise RuntimeError(f"the provider did not start: {errors}")
        if clean:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(f"TRUNCATE {PROVIDER_TABLES}")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "the provider did not stop"
