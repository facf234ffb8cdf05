"""compose's Kafka broker, run on this machine without Docker, provisioned by the migrate job's
code: a service logs in with what compose gives its container; nobody else gets in.

The broker's server.properties is made from the kafka container's environment (its ports and
data dir moved to free local ones) by the image's own code, ``kafka.docker.KafkaDockerWrapper
setup`` from the harness's Kafka 4.3.1 jars, which also formats the storage as the image
does. The broker then runs with the container's KAFKA_OPTS (``LocalKafka``'s start, stop and
readiness). ``prepare_kafka`` with the migrate container's environment is what its
``sagactl prepare`` does after the migrations: set each principal's SCRAM credential and the
ACLs, then create the topics, logged in as admin.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shlex
import socket
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from saga_harness.infra import LocalKafka
from saga_harness.infra.kafka import ensure_java
from saga_runtime import KafkaSettings, consumer_config, events_topic
from saga_runtime.kafka_access import relay_principal, system_grants
from saga_system import SYSTEM
from sagactl.cli import prepare_kafka
from tests.compose_file import (
    SAMPLE_ENV,
    compose_services,
    container_env,
    environment,
    jaas,
    server_properties,
)

COMPOSE_PORTS = (9092, 9093, 29092)  # the containers' listener, the controller, the host's
_ADDRESS = re.compile(r"(?<![\w.])(?:kafka|localhost)?:(9092|9093|29092)(?!\d)")
HEALTH_FILE = "/tmp/healthcheck.properties"
RELAYS = ("relay-a", "relay-b")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _quiet() -> logging.Logger:
    logger = logging.getLogger("tests.compose_broker")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


class ComposeBroker(LocalKafka):
    """A broker started from the properties the image made, with the container's JVM options,
    and ready once the migrate job's login (``admin``) gets metadata."""

    def __init__(
        self, *, properties: Path, jvm_options: list[str], login: dict[str, str], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.properties, self.jvm_options, self.login = properties, jvm_options, login

    def admin_properties(self) -> dict[str, str]:
        return self.login

    def _write_config(self) -> Path:
        super()._write_config()  # its log4j config; its own server.properties is not used
        return self.properties

    def _java_argv(self, java: str, libs: Path) -> list[str]:
        return [*super()._java_argv(java, libs), *self.jvm_options]


@dataclass(frozen=True)
class ComposeStack:
    broker: ComposeBroker
    ports: dict[int, int]  # compose's port -> this machine's
    env: dict[str, dict[str, str]]  # each container's environment, on this machine
    image_properties: dict[str, str]  # what the image's code wrote
    prepared: str  # what the migrate job's Kafka step printed


def localized(env: dict[str, str], ports: dict[int, int], data_dir: Path) -> dict[str, str]:
    """A container's environment with the compose addresses and data dir made local."""
    moved = {}
    for name, value in env.items():
        value = _ADDRESS.sub(lambda m: f"127.0.0.1:{ports[int(m[1])]}", value)
        moved[name] = value.replace("/tmp/kraft-combined-logs", str(data_dir))
    return moved


def read_properties(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return dict(line.split("=", 1) for line in lines if not line.startswith("#"))


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    home = tmp_path_factory.mktemp("compose-kafka")
    ports = {port: _free_port() for port in COMPOSE_PORTS}
    services = compose_services()
    # Ready once the migrate job's login (admin) gets metadata.
    login = logged_in(localized(environment(services["migrate"]), ports, home)).client_properties()
    login.pop("bootstrap.servers")
    broker = ComposeBroker(
        state_dir=home,
        port=ports[9092],
        controller_port=ports[9093],
        heap="256m",
        log=lambda _message: None,
        properties=home / "config" / "server.properties",
        jvm_options=shlex.split(environment(services["kafka"])["KAFKA_OPTS"]),
        login=login,
    )
    env = {
        name: localized(environment(service), ports, broker.data_dir)
        for name, service in services.items()
    }
    for folder in ("defaults", "mounted", "config"):
        (home / folder).mkdir()
    java, libs = ensure_java(log=lambda _m: None), broker.install()
    made = subprocess.run(
        [
            *(java, "-cp", f"{libs}/*", "kafka.docker.KafkaDockerWrapper", "setup"),
            *("--default-configs-dir", str(home / "defaults")),
            *("--mounted-configs-dir", str(home / "mounted")),
            *("--final-configs-dir", str(home / "config")),
        ],
        env={"PATH": os.environ["PATH"], **env["kafka"]},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    broker.start()
    try:
        printed = io.StringIO()
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
            container_env(env["migrate"], patch)
            prepare_kafka(env["migrate"])
        properties = read_properties(broker.properties)
        yield ComposeStack(broker, ports, env, properties, printed.getvalue())
    finally:
        broker.stop()


def logged_in(env: dict[str, str]) -> KafkaSettings:
    """The settings a process of a container with ``env`` makes."""
    with pytest.MonkeyPatch.context() as patch:
        container_env(env, patch)
        return KafkaSettings()


def topics(properties: dict[str, Any]) -> set[str]:
    client = AdminClient({**properties, "logger": _quiet()})
    return set(client.list_topics(timeout=15).topics)


def test_the_image_writes_the_properties_the_unit_tests_check(
    compose_stack: ComposeStack,
) -> None:
    assert compose_stack.image_properties == server_properties(compose_stack.env["kafka"])


def test_a_client_that_does_not_log_in_is_refused_on_both_client_listeners(
    compose_stack: ComposeStack,
) -> None:
    for port in (compose_stack.ports[9092], compose_stack.ports[29092]):
        with pytest.raises(KafkaException):
            topics({"bootstrap.servers": f"127.0.0.1:{port}", "socket.timeout.ms": 3000})


def visible(principal: str) -> set[str]:
    """The topics ``principal`` may see: those it may read or write (READ and WRITE imply
    DESCRIBE; DESCRIBE_CONFIGS does not)."""
    return {
        grant.name
        for grant in system_grants(SYSTEM)
        if grant.principal == principal
        and grant.resource == "topic"
        and grant.operation in ("READ", "WRITE")
    }


def test_every_container_logs_in_with_what_compose_gives_it(compose_stack: ComposeStack) -> None:
    """Each service as itself, each relay as each outbox's relay principal, with credentials
    the migrate job set; each sees the topics its ACLs cover, which the job created."""
    for service in SYSTEM.consumers():
        settings = logged_in(compose_stack.env[service])
        assert settings.sasl_username == service
        assert topics(settings.client_properties()) == visible(service), service
    for relay in RELAYS:
        env = compose_stack.env[relay]
        passwords = json.loads(env["RELAY_KAFKA_PASSWORDS"])
        assert set(passwords) == set(SYSTEM.outboxes())
        for outbox, password in passwords.items():
            principal = relay_principal(outbox)
            settings = logged_in(env).as_principal(principal, password)
            assert topics(settings.client_properties()) == visible(principal), (relay, outbox)


def _deliver(settings: KafkaSettings, topic: str) -> KafkaError | None:
    producer = Producer(
        {**settings.client_properties(), "message.timeout.ms": 10_000, "logger": _quiet()}
    )
    reports: list[KafkaError | None] = []
    producer.produce(
        topic, key=b"order-1", value=b"{}", on_delivery=lambda e, _m: reports.append(e)
    )
    producer.flush(15)
    assert len(reports) == 1, "no delivery report"
    return reports[0]


def test_the_acls_the_migrate_job_set_let_each_principal_do_its_part_only(
    compose_stack: ComposeStack,
) -> None:
    orders_events = events_topic("orders")
    relay_env = compose_stack.env["relay-a"]
    relay = logged_in(relay_env).as_principal(
        "relay-orders", json.loads(relay_env["RELAY_KAFKA_PASSWORDS"])["orders"]
    )
    assert _deliver(relay, orders_events) is None
    stock = logged_in(compose_stack.env["stock"])
    refused = _deliver(stock, orders_events)
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    consumer = Consumer(
        {
            **consumer_config(
                stock, group_id="stock", client_id="compose-test", session_timeout_ms=6000
            ),
            "logger": _quiet(),
        }
    )
    try:
        consumer.subscribe([orders_events])
        message = None
        for _ in range(60):
            message = consumer.poll(0.5)
            if message is not None:
                break
        assert message is not None and message.error() is None, message and message.error()
    finally:
        consumer.close()


def test_the_healthcheck_logs_in_as_the_broker(compose_stack: ComposeStack, tmp_path: Path) -> None:
    """Its shell part run as the container's shell runs it; the file it writes is what the
    tool gets (``--command-config``): owner-only, and a login the broker takes."""
    command = _healthcheck()
    write, _, tool = command.partition(" && /opt/kafka/bin/")
    assert f"--command-config {HEALTH_FILE}" in tool
    written = tmp_path / "healthcheck.properties"
    subprocess.run(
        ["sh", "-c", write.replace("$$", "$").replace(HEALTH_FILE, str(written))],
        env={"PATH": os.environ["PATH"], **compose_stack.env["kafka"]},
        check=True,
    )
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    client = read_properties(written)
    _module, _flag, options = jaas(client["sasl.jaas.config"])
    login = {
        "bootstrap.servers": f"127.0.0.1:{compose_stack.ports[9092]}",
        "security.protocol": client["security.protocol"],
        "sasl.mechanisms": client["sasl.mechanism"],
        "sasl.username": options["username"],
        "sasl.password": options["password"],
    }
    assert options["password"] == SAMPLE_ENV["KAFKA_BROKER_PASSWORD"]
    assert topics(login)


def _healthcheck() -> str:
    test = compose_services()["kafka"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    return str(test[1])


def test_an_operator_on_the_host_logs_in_as_admin_with_scram(compose_stack: ComposeStack) -> None:
    """The migrate job gave admin a SCRAM credential too: the README's operator login works on
    the listener compose publishes to the host."""
    host = f"127.0.0.1:{compose_stack.ports[29092]}"
    admin = KafkaSettings(
        bootstrap_servers=host,
        security_protocol="SASL_PLAINTEXT",
        sasl_username="admin",
        sasl_password=SAMPLE_ENV["KAFKA_PASSWORD_ADMIN"],  # type: ignore[arg-type]
    )
    assert admin.sasl_mechanism == "SCRAM-SHA-512"
    assert topics(admin.client_properties()) >= set(SYSTEM.topics(""))


def test_the_migrate_job_says_what_it_set_and_shows_no_password(
    compose_stack: ComposeStack,
) -> None:
    count = len(SYSTEM.consumers()) + len(SYSTEM.outboxes()) + 1  # and admin
    assert f"set the Kafka passwords of {count} principals" in compose_stack.prepared
    for value in SAMPLE_ENV.values():
        assert value not in compose_stack.prepared
