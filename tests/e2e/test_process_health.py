"""Every process says whether it is alive and ready; one whose thread dies, or that hangs, is
replaced. The real processes of a running system, on the real broker and database.

The tests that replace a process (a thread killed by a crash point armed with ``raise:``, a
SIGSTOP) take one service out of the module's system, run it under ``./dev up``'s
supervisor, and put the original back afterwards.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orders.settings import OrdersSettings
from saga_harness.infra.proc import wait_until
from saga_harness.supervisor import ProcessSpec, Supervisor
from saga_harness.system import SERVICES, Process, System, free_port
from stock.settings import StockSettings

pytestmark = pytest.mark.e2e

OUTBOXES = {f"outbox-{service}" for service in SERVICES}


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None


def answers(url: str) -> dict[str, Any] | None:
    """The JSON body at ``url`` with its status, or None while nothing answers."""
    response = get(url)
    if response is None:
        return None
    return {"status_code": response.status_code, **response.json()}


def test_every_process_answers_healthz_and_readyz(system: System) -> None:
    probed = []
    for process in system.processes.values():
        if process.health_url is None:
            continue  # the SMTP sink, a development tool
        live = answers(f"{process.health_url}/healthz")
        ready = answers(f"{process.health_url}/readyz")
        assert live is not None and live["status_code"] == 200, (process.name, live)
        assert ready is not None and ready["status_code"] == 200, (process.name, ready)
        assert ready["status"] == "ok"
        checks = ready["checks"]
        assert set(checks.values()) == {"ok"}, (process.name, checks)
        assert "database" in checks, process.name
        if process.name in SERVICES:
            assert "workers" in checks and "consumer-0" in checks, (process.name, checks)
        elif process.name.startswith("relay-"):
            assert {"workers", *OUTBOXES} <= set(checks), (process.name, checks)
        probed.append(process.name)
    assert set(probed) >= {*SERVICES, "relay-0", "provider"}


@pytest.fixture
def extra(system: System, tmp_path: Path) -> Iterator[Any]:
    """Start an extra process next to the system, with some settings changed; killed after."""
    started: list[Process] = []

    def start(name: str, argv: list[str], **env: str) -> Process:
        # ``run SERVICE`` (``relay``) logs in as the system's process of that service (its first
        # relay) does, with its logins, on ports of its own.
        twin = system.processes[argv[1] if argv[0] == "run" else "relay-0"].env
        logins = {
            k: v for k, v in twin.items() if system.env.get(k) != v and not k.endswith("_PORT")
        }
        process = Process(
            name,
            [sys.executable, "-m", "sagactl", *argv],
            # On a secured broker, as the operators' principal (these run beside the
            # system), and in PostgreSQL as their twin in the system.
            {**system.env, **system.operator_env, **logins, **env},
            tmp_path / f"{name}.log",
        )
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def alive_and_answering(process: Process, url: str) -> dict[str, Any] | None:
    assert process.alive, process.log_path.read_text()[-3000:]
    return answers(url)


@pytest.mark.parametrize("service", ["orders", "payments"])
def test_readyz_is_503_while_the_database_is_unreachable(
    system: System, extra: Any, service: str
) -> None:
    """One process pointed at a PostgreSQL port nothing listens on (the shared server is
    never touched): alive, and not ready, saying why."""
    port = free_port()
    health = f"http://127.0.0.1:{port}"
    process = extra(
        f"{service}-no-database",
        ["run", service],
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere",
        # A consumer group of its own: it must not take partitions from the system's.
        KAFKA_TOPIC_PREFIX=f"nodb{uuid.uuid4().hex[:8]}.",
        **({"ORDERS_PORT": str(port)} if service == "orders" else {}),
        **({"PAYMENTS_HEALTH_PORT": str(port)} if service == "payments" else {}),
    )
    assert wait_until(
        lambda: (alive_and_answering(process, f"{health}/healthz") or {}).get("status_code") == 200,
        timeout=90,
    ), process.log_path.read_text()[-3000:]

    ready = answers(f"{health}/readyz")
    assert ready is not None, "readyz did not answer"
    assert ready["status_code"] == 503, ready
    assert ready["status"] == "failing"
    assert ready["checks"]["database"].startswith("database unreachable"), ready
    assert ready["checks"]["workers"] == "ok"


def test_readyz_is_503_while_the_consumers_are_not_in_their_group(
    system: System, extra: Any
) -> None:
    """Shipments pointed at a broker address nothing listens on: its consumer can never join
    its group. The database is fine, the process is alive, and it is not ready."""
    port = free_port()
    health = f"http://127.0.0.1:{port}"
    process = extra(
        "shipments-no-broker",
        ["run", "shipments"],
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        SHIPMENTS_HEALTH_PORT=str(port),
    )

    def database_checked() -> bool:
        ready = alive_and_answering(process, f"{health}/readyz")
        return ready is not None and ready["checks"].get("database") == "ok"

    assert wait_until(database_checked, timeout=90), process.log_path.read_text()[-3000:]
    live = answers(f"{health}/healthz")
    assert live is not None and live["status_code"] == 200, live
    # Long enough for librdkafka's statistics (every 5 s) to say where the group stands.
    assert wait_until(
        lambda: "consumer group state" in str(answers(f"{health}/readyz")), timeout=60
    ), answers(f"{health}/readyz")
    ready = answers(f"{health}/readyz")
    assert ready is not None and ready["status_code"] == 503, ready
    assert ready["checks"]["consumer-0"].startswith("consumer group state"), ready
    assert ready["checks"]["database"] == "ok"


@pytest.fixture
def supervised(system: System, tmp_path: Path) -> Iterator[Any]:
    """Take a service out of the system and run it under a ``Supervisor``; put it back after."""
    running: list[tuple[str, Supervisor]] = []
    messages: list[str] = []

    def supervise(name: str, **settings: Any) -> tuple[Supervisor, list[str]]:
        original = system.processes[name]
        original.stop()
        env = {k: v for k, v in settings.pop("env", {}).items()}
        spec = ProcessSpec(
            name,
            original.argv,
            env={**original.env, **env},
            health_url=original.health_url,
        )
        supervisor = Supervisor([spec], tmp_path, log=messages.append, **settings)
        running.append((name, supervisor))
        supervisor.start()
        return supervisor, messages

    yield supervise
    for name, supervisor in running:
        supervisor.stop()
        system.processes[name].start()
    system.wait_ready()


@pytest.mark.parametrize("service", ["stock", "payments"])
def test_a_service_whose_consumer_thread_dies_exits_non_zero_and_is_restarted(
    system: System, http: httpx.Client, supervised: Any, tmp_path: Path, service: str
) -> None:
    """The crash point ``raise:consumer.polled`` raises inside a consumer thread once it has
    polled a message: stock (uvicorn in the main thread) and payments (no API) must exit 1,
    not go on answering with a dead consumer; the supervisor starts them again."""
    supervisor, messages = supervised(service, env={"SAGA_CRASH_POINTS": "raise:consumer.polled"})
    assert supervisor.wait_ready(timeout=120), messages
    first = supervisor.pids()[service]

    system.place_order(http)  # OrderCreated: both consume it

    assert wait_until(
        lambda: f"{service} exited with code 1" in "\n".join(messages), timeout=120
    ), (messages, (tmp_path / f"{service}.log").read_text()[-3000:])
    assert wait_until(lambda: supervisor.restart_counts()[service] >= 1, timeout=60)
    assert wait_until(lambda: supervisor.pids()[service] not in (None, first), timeout=60)
    log = (tmp_path / f"{service}.log").read_text()
    assert '"event": "worker.died"' in log
    assert "CrashPointError: crash point consumer.polled" in log  # with its traceback
    assert '"event": "service.exiting"' in log


def test_the_supervisor_restarts_a_service_that_stops_answering_healthz(
    system: System, supervised: Any
) -> None:
    """SIGSTOP: the process lives on and keeps its sockets, and answers nothing."""
    supervisor, messages = supervised("notifications", health_interval=0.5, unhealthy_after=5.0)
    assert supervisor.wait_ready(timeout=120), messages
    first = supervisor.pids()["notifications"]
    assert first is not None

    os.kill(first, signal.SIGSTOP)

    assert wait_until(
        lambda: supervisor.pids()["notifications"] not in (None, first), timeout=90
    ), messages
    assert any(m.startswith(f"notifications (pid {first}) is hung") for m in messages), messages
    assert supervisor.restart_counts()["notifications"] == 1
    assert supervisor.wait_ready(timeout=120), messages


@pytest.mark.parametrize("service", ["orders", "stock"])
def test_sigterm_stops_an_api_service_after_its_consumers_leave_their_group(
    system: System, service: str
) -> None:
    """uvicorn takes SIGTERM while it serves and raises it again once it has stopped: that
    second SIGTERM must stop the consumers cleanly (exit 0), not kill the process."""
    process = system.processes[service]
    assert process.popen is not None
    before = process.log_path.read_text().count('"event": "consumer.stopped"')
    try:
        process.stop(timeout=60)
        assert process.popen.returncode == 0, process.log_path.read_text()[-3000:]
        log = process.log_path.read_text()
        assert log.count('"event": "consumer.stopped"') - before == consumers(service)
        assert '"event": "service.stopping"' in log
    finally:
        process.start()
        system.wait_ready()


def test_a_standby_relay_is_ready(system: System, extra: Any) -> None:
    """A second relay finds every outbox's lock taken: on standby, which is ready."""
    port = free_port()
    process = extra(
        "relay-standby", ["relay"], RELAY_NAME="relay-standby", RELAY_HEALTH_PORT=str(port)
    )

    def ready() -> bool:
        body = alive_and_answering(process, f"http://127.0.0.1:{port}/readyz")
        return body is not None and body["status_code"] == 200

    assert wait_until(ready, timeout=90), answers(f"http://127.0.0.1:{port}/readyz")
    log = process.log_path.read_text()
    assert log.count('"event": "relay.standby"') == len(SERVICES), log[-3000:]
    assert '"event": "relay.leadership_acquired"' not in log


def test_a_relay_whose_outbox_thread_dies_exits_non_zero_and_is_restarted(
    system: System, http: httpx.Client, supervised: Any, tmp_path: Path
) -> None:
    supervisor, messages = supervised(
        "relay-0", env={"SAGA_CRASH_POINTS": "raise:relay.after_publish"}
    )
    assert supervisor.wait_ready(timeout=120), messages

    system.place_order(http)

    log_path = tmp_path / "relay-0.log"
    assert wait_until(lambda: "relay-0 exited with code 1" in "\n".join(messages), timeout=120), (
        messages,
        log_path.read_text()[-3000:],
    )
    assert wait_until(lambda: supervisor.restart_counts()["relay-0"] >= 1, timeout=60)
    log = log_path.read_text()
    assert '"event": "worker.died"' in log
    assert "CrashPointError: crash point relay.after_publish" in log
    assert '"event": "relay.exiting"' in log


def consumers(service: str) -> int:
    """How many consumer threads the service runs (``<SERVICE>_CONSUMERS``'s default)."""
    settings = {"orders": OrdersSettings, "stock": StockSettings}[service]
    return int(settings.model_fields["consumers"].default)
