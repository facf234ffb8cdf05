"""The whole saga on a secured broker: every process logs in as its own principal and does
only what the system's ACLs allow, and still an order goes all the way (so the derived ACLs
are enough); no process logs a Kafka password."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from saga_harness.infra import StackAddresses
from saga_harness.system import System, build_system, drop_system_database
from saga_runtime.kafka_access import principals
from saga_system import SYSTEM
from tests.fixtures.secured_kafka import SecuredBroker

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def secured_saga(
    infra: StackAddresses,
    secured_broker: SecuredBroker,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[System]:
    running = build_system(
        admin_database_url=infra.admin_database_url,
        kafka_bootstrap=secured_broker.bootstrap,
        log_dir=Path(tmp_path_factory.mktemp("secured-system")),
        kafka_super_user=secured_broker.super_user,
    )
    running.start()
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()
        drop_system_database(infra.admin_database_url, running.database_url)


def kafka_passwords(system: System) -> set[str]:
    """Every Kafka password a process of ``system`` was given."""
    found = {system.kafka.sasl_password.get_secret_value()} if system.kafka.sasl_password else set()
    for process in system.processes.values():
        env = process.env
        if "KAFKA_SASL_PASSWORD" in env:
            found.add(env["KAFKA_SASL_PASSWORD"])
        if "RELAY_KAFKA_PASSWORDS" in env:
            found |= set(json.loads(env["RELAY_KAFKA_PASSWORDS"]).values())
    return found


def test_an_order_ships_with_every_process_under_its_own_principal(
    secured_saga: System,
) -> None:
    processes = secured_saga.processes
    assert processes["stock"].env["KAFKA_SASL_USERNAME"] == "stock"
    assert "KAFKA_SASL_USERNAME" not in processes["relay-0"].env
    with httpx.Client(timeout=10) as http:
        placed = secured_saga.place_order(http)
        order = secured_saga.wait_for_order(http, placed["order_id"], ["SHIPPED", "CANCELLED"])
    assert order["status"] == "SHIPPED", order
    violations = secured_saga.wait_quiet()
    assert violations == [], "\n".join(map(str, violations))
    passwords = kafka_passwords(secured_saga)
    assert len(passwords) == 1 + len(principals(SYSTEM)), "the super user's, and one each"
    for path in secured_saga.log_dir.glob("*.log"):
        text = path.read_text(errors="replace")
        assert not [p for p in passwords if p in text], f"{path.name} logs a Kafka password"
