"""Kafka least privilege, derived from the declared system: the ACLs, each process's login,
and passwords that never show."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from outbox_relay.settings import RelayProcessSettings
from saga_harness.dotenv import SECRETS
from saga_harness.infra import InfraError
from saga_harness.infra.kafka import LocalKafka
from saga_harness.infra.proc import write_pidfile
from saga_harness.kafka_logins import (
    password_variable,
    relay_login,
    service_login,
    take_passwords,
)
from saga_runtime import ConfigurationError, KafkaSettings, consumer_config, producer_config
from saga_runtime.kafka_access import (
    Grant,
    is_system_acl,
    principals,
    relay_principal,
    system_grants,
)
from saga_system import SYSTEM

PREFIX = "p."


def granted(principal: str, operation: str, resource: str = "topic") -> set[str]:
    return {
        g.name
        for g in system_grants(SYSTEM, PREFIX)
        if (g.principal, g.operation, g.resource) == (principal, operation, resource)
    }


def test_a_service_reads_the_topics_it_subscribes_to_in_its_own_group_and_nothing_else() -> None:
    assert granted("stock", "READ") == {"p.orders.events"}
    assert granted("stock", "READ", "group") == {"p.stock"}
    for service in SYSTEM.consumers():
        assert granted(service, "READ") == {f"p.{s}.events" for s in SYSTEM.subscriptions(service)}
        assert granted(service, "READ", "group") == {f"p.{service}"}
        # Its own dead letters only: its events reach the broker through its relay.
        assert granted(service, "WRITE") == {f"p.{service}.dead-letters"}


def test_only_the_relay_of_a_services_outbox_writes_its_events_topic() -> None:
    writers: dict[str, set[str]] = {}
    for grant in system_grants(SYSTEM, PREFIX):
        if grant.operation == "WRITE" and grant.name.endswith(".events"):
            writers.setdefault(grant.name, set()).add(grant.principal)
    assert writers == {f"p.{o}.events": {relay_principal(o)} for o in SYSTEM.outboxes()}
    # It reads nothing; it may read the configs of the topics its service's inbox reads.
    assert granted("relay-payments", "READ") == set()
    assert granted("relay-payments", "DESCRIBE_CONFIGS") == {
        f"p.{s}.events" for s in SYSTEM.subscriptions("payments")
    }


def test_every_grant_names_a_principal_and_a_resource_of_the_system() -> None:
    topics = set(SYSTEM.topics(PREFIX))
    groups = set(SYSTEM.consumer_groups(PREFIX).values())
    for grant in system_grants(SYSTEM, PREFIX):
        assert grant.principal in principals(SYSTEM)
        assert grant.name in (topics if grant.resource == "topic" else groups), grant
    binding = Grant("stock", "topic", "p.orders.events", "READ").binding()
    assert (binding.principal, binding.host, binding.name) == ("User:stock", "*", "p.orders.events")


def test_provisioning_takes_as_the_systems_only_acls_shaped_as_its_grants_of_its_prefix() -> None:
    """What provisioning may revoke: any grant ``system_grants`` could give for the prefix,
    a removed service's included; never another prefix's, nor someone else's ACL."""
    for grant in system_grants(SYSTEM, PREFIX):
        assert is_system_acl(grant.binding(), PREFIX), grant
    removed = [
        Grant("loyalty", "topic", "p.orders.events", "READ"),
        Grant("loyalty", "group", "p.loyalty", "READ"),
        Grant("relay-loyalty", "topic", "p.loyalty.events", "WRITE"),
        Grant("stock", "topic", "p.payments.events", "READ"),
    ]
    assert all(is_system_acl(g.binding(), PREFIX) for g in removed)
    for prefix in ("", "q.", "p.orders."):  # other systems' prefixes on the same broker
        assert not any(is_system_acl(g.binding(), prefix) for g in system_grants(SYSTEM, PREFIX))
    for foreign in (
        Grant("ops-monitor", "topic", "p.orders.events", "READ"),  # not named as a service
        Grant("stock", "topic", "p.audit", "READ"),  # not a topic the system names
        Grant("stock", "group", "p.stock.x", "READ"),
    ):
        assert not is_system_acl(foreign.binding(), PREFIX), foreign
    topic, principal = ResourceType.TOPIC, "User:stock"
    for binding in (
        AclBinding(
            topic,
            "p.orders.events",
            ResourcePatternType.PREFIXED,
            principal,
            "*",
            AclOperation.READ,
            AclPermissionType.ALLOW,
        ),
        AclBinding(
            topic,
            "p.orders.events",
            ResourcePatternType.LITERAL,
            principal,
            "*",
            AclOperation.READ,
            AclPermissionType.DENY,
        ),
        AclBinding(
            topic,
            "p.orders.events",
            ResourcePatternType.LITERAL,
            principal,
            "10.0.0.1",
            AclOperation.READ,
            AclPermissionType.ALLOW,
        ),
        AclBinding(
            topic,
            "p.orders.events",
            ResourcePatternType.LITERAL,
            principal,
            "*",
            AclOperation.ALTER,
            AclPermissionType.ALLOW,
        ),
    ):
        assert not is_system_acl(binding, PREFIX), binding


def test_secured_settings_log_in_with_scram_and_never_show_the_password() -> None:
    settings = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_username="stock",
        sasl_password="s3cret-value",  # type: ignore[arg-type]
    )
    for config in (
        settings.client_properties(),
        producer_config(settings, client_id="x"),
        consumer_config(settings, group_id="g", client_id="x", session_timeout_ms=6000),
    ):
        assert config["security.protocol"] == "SASL_PLAINTEXT"
        assert config["sasl.mechanisms"] == "SCRAM-SHA-512"
        assert (config["sasl.username"], config["sasl.password"]) == ("stock", "s3cret-value")
    for shown in (repr(settings), str(settings.model_dump()), settings.model_dump_json()):
        assert "s3cret-value" not in shown


def test_plain_mode_sends_no_login_and_secured_mode_refuses_to_run_without_one() -> None:
    plain = KafkaSettings().client_properties()
    assert plain["security.protocol"] == "PLAINTEXT"
    assert not any(key.startswith("sasl.") for key in plain)
    with pytest.raises(ConfigurationError, match="KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        KafkaSettings(security_protocol="SASL_SSL", sasl_username="stock").client_properties()


def test_the_relay_publishes_each_outbox_as_its_own_principal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("RELAY_KAFKA_PASSWORDS", json.dumps({"orders": "pw-o", "stock": "pw-s"}))
    settings = RelayProcessSettings()
    orders = settings.kafka_for("orders").client_properties()
    assert (orders["sasl.username"], orders["sasl.password"]) == ("relay-orders", "pw-o")
    assert settings.kafka_for("stock").sasl_username == "relay-stock"
    assert "pw-o" not in repr(settings)
    with pytest.raises(ConfigurationError):  # no password for it, and none of its own
        settings.kafka_for("payments").client_properties()


def test_each_process_gets_its_own_login_and_none_inherits_the_others() -> None:
    environ = {password_variable(p): f"pw-{p}" for p in ["admin", *principals(SYSTEM)]}
    environ["OTHER"] = "kept"
    passwords = take_passwords(environ, SYSTEM)
    assert environ == {"OTHER": "kept"}, "no child inherits a KAFKA_PASSWORD_*"
    assert service_login("stock", passwords) == {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_USERNAME": "stock",
        "KAFKA_SASL_PASSWORD": "pw-stock",
    }
    relay = json.loads(relay_login(SYSTEM, passwords)["RELAY_KAFKA_PASSWORDS"])
    assert relay == {o: f"pw-relay-{o}" for o in SYSTEM.outboxes()}
    with pytest.raises(ConfigurationError, match="KAFKA_PASSWORD_RELAY_ORDERS"):
        take_passwords({password_variable("admin"): "x"}, SYSTEM)


def test_env_file_has_a_generated_password_per_principal() -> None:
    for principal in ["admin", *principals(SYSTEM)]:
        assert password_variable(principal) in SECRETS
    assert password_variable("relay-orders") == "KAFKA_PASSWORD_RELAY_ORDERS"


def test_the_secured_local_broker_authorizes_with_acls_and_keeps_its_password_private(
    tmp_path: Path,
) -> None:
    broker = LocalKafka(state_dir=tmp_path, port=1, controller_port=2, secured=True)
    broker.home.mkdir(parents=True)
    props = broker._write_config()
    config = dict(line.split("=", 1) for line in props.read_text().splitlines() if "=" in line)
    assert config["authorizer.class.name"].endswith("StandardAuthorizer")
    assert config["allow.everyone.if.no.acl.found"] == "false"
    assert config["listeners"].startswith("SASL_PLAINTEXT://")
    assert "PLAINTEXT:PLAINTEXT" not in config["listener.security.protocol.map"]
    assert "SCRAM-SHA-512" in config["listener.name.sasl_plaintext.sasl.enabled.mechanisms"]
    for path in (props, broker.home / "broker.password"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert broker.admin_properties()["sasl.username"] == "broker"
    plain = LocalKafka(state_dir=tmp_path / "plain", port=1, controller_port=2)
    assert plain.admin_properties() == {}


def test_a_broker_still_running_plain_is_not_taken_for_a_secured_one(tmp_path: Path) -> None:
    """A test stack kept running plain (from before its broker was secured): starting it
    secured says how to stop it, and never restarts it under whoever else uses it."""
    plain = LocalKafka(state_dir=tmp_path, port=1, controller_port=2)
    # A stand-in for its JVM: a live process whose command line names the broker's class.
    jvm = subprocess.Popen(["sh", "-c", "sleep 30", "kafka.Kafka"])
    try:
        write_pidfile(plain.pidfile, jvm.pid)
        plain.mode_file.write_text("plain\n")
        secured = LocalKafka(state_dir=tmp_path, port=1, controller_port=2, secured=True)
        with pytest.raises(InfraError, match="runs plain, not secured") as refused:
            secured.start(wait=False)
        assert str(plain.pidfile) in str(refused.value)
        assert jvm.poll() is None, "left running"
    finally:
        jvm.kill()
        jvm.wait()
