"""compose's Kafka broker is secured as ``./dev up``'s is, and each container gets only its
own Kafka login.

No Docker: the broker's server.properties is derived from the kafka container's environment
the way the ``apache/kafka`` image derives it (``tests.compose_file.server_properties``; the
integration test ``test_compose_broker.py`` runs the image's own code on it and starts the
broker), then compared with ``secured_properties``, what the harness's secured broker runs.
"""

from __future__ import annotations

import json

import pytest

from outbox_relay.settings import RelayProcessSettings
from saga_harness.infra.kafka_sasl import (
    ADMIN_PRINCIPAL,
    BROKER_PRINCIPAL,
    CLIENT_LISTENER,
    secured_properties,
)
from saga_runtime import KafkaSettings
from saga_runtime.kafka_access import principals, relay_principal
from saga_system import SYSTEM
from sagactl.broker_access import OPERATOR_PRINCIPAL, configured_passwords
from sagactl.broker_access import kafka_password_variable as variable
from tests.compose_file import (
    SAMPLE_ENV,
    Service,
    compose_services,
    container_env,
    environment,
    jaas,
    server_properties,
)

BROKER_PASSWORD = SAMPLE_ENV["KAFKA_BROKER_PASSWORD"]
ADMIN_PASSWORD = SAMPLE_ENV[variable(ADMIN_PRINCIPAL)]
RELAYS = ("relay-a", "relay-b")
# Where the properties name listeners and addresses, not how they are secured.
ADDRESSES = ("listeners", "advertised.listeners", "listener.security.protocol.map")


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    return compose_services()


@pytest.fixture(scope="module")
def broker(services: dict[str, Service]) -> dict[str, str]:
    """The compose broker's server.properties."""
    return server_properties(environment(services["kafka"]))


@pytest.fixture(scope="module")
def reference() -> dict[str, str]:
    """What ./dev up's secured broker runs, with compose's broker password."""
    return secured_properties(
        bootstrap="kafka:9092", controller="kafka:9093", password=BROKER_PASSWORD
    )


def listeners(properties: dict[str, str]) -> dict[str, str]:
    """Listener name -> security protocol."""
    pairs = (item.split(":") for item in properties["listener.security.protocol.map"].split(","))
    protocols = dict(pairs)
    names = [item.split("://")[0] for item in properties["listeners"].split(",")]
    return {name: protocols[name] for name in names}


def test_every_listener_logs_in_and_the_authorizer_denies_what_no_acl_allows(
    broker: dict[str, str], reference: dict[str, str]
) -> None:
    """The same security settings as ./dev up's broker: SASL on every listener, the same
    mechanisms, inter-broker and controller logins, authorizer and super users."""
    assert set(listeners(broker).values()) == {"SASL_PLAINTEXT"}, listeners(broker)
    assert listeners(reference).items() <= listeners(broker).items()
    same = [k for k in reference if k not in ADDRESSES and not k.endswith(".sasl.jaas.config")]
    assert {k: broker.get(k) for k in same} == {k: reference[k] for k in same}
    assert broker["allow.everyone.if.no.acl.found"] == "false"
    assert broker["super.users"] == f"User:{BROKER_PRINCIPAL};User:{ADMIN_PRINCIPAL}"
    assert OPERATOR_PRINCIPAL == ADMIN_PRINCIPAL, "the super user prepare gives SCRAM"


def test_every_client_listener_takes_the_same_logins_as_dev_ups(
    broker: dict[str, str], reference: dict[str, str]
) -> None:
    """Each mechanism of each listener has its JAAS config (the broker does not start
    otherwise); its options are the reference's, with compose's broker password, plus the
    admin's PLAIN login on the client listeners, and nothing else."""
    client = CLIENT_LISTENER.lower()
    for listener in listeners(broker):
        prefix = f"listener.name.{listener.lower()}."
        like = prefix if listener in listeners(reference) else f"listener.name.{client}."
        mechanisms = broker[prefix + "sasl.enabled.mechanisms"]
        assert mechanisms == reference[like + "sasl.enabled.mechanisms"], listener
        for mechanism in mechanisms.lower().split(","):
            module, flag, options = jaas(broker[f"{prefix}{mechanism}.sasl.jaas.config"])
            ref_module, ref_flag, ref_options = jaas(
                reference[f"{like}{mechanism}.sasl.jaas.config"]
            )
            assert (module, flag) == (ref_module, ref_flag), (listener, mechanism)
            # Tools on the host are no broker: the broker's password is not taken there.
            expected = {} if listener == "HOST" else dict(ref_options)
            if mechanism == "plain" and listener != "CONTROLLER":
                expected[f"user_{ADMIN_PRINCIPAL}"] = ADMIN_PASSWORD
            assert options == expected, (listener, mechanism)


def test_the_containers_reach_the_broker_on_its_sasl_listener_and_the_host_on_127_0_0_1(
    services: dict[str, Service], broker: dict[str, str]
) -> None:
    advertised = dict(item.split("://") for item in broker["advertised.listeners"].split(","))
    assert advertised[CLIENT_LISTENER] == environment(services["orders"])["KAFKA_BOOTSTRAP_SERVERS"]
    host_port = advertised["HOST"].rpartition(":")[2]
    assert services["kafka"]["ports"] == [f"127.0.0.1:{host_port}:{host_port}"]
    assert broker["inter.broker.listener.name"] == CLIENT_LISTENER


def test_the_image_starts_a_sasl_listener_only_with_kafka_opts(
    services: dict[str, Service],
) -> None:
    """The image's configure script exits when an advertised listener is SASL and KAFKA_OPTS
    is empty; KAFKA_OPTS goes to the JVM, never to server.properties."""
    env = environment(services["kafka"])
    assert "SASL_" in env["KAFKA_ADVERTISED_LISTENERS"] and env["KAFKA_OPTS"].strip()
    assert "opts" not in server_properties(env)


def test_the_healthcheck_logs_in_with_a_client_properties_file(
    services: dict[str, Service], broker: dict[str, str]
) -> None:
    kind, command = services["kafka"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    assert "umask 077" in command, "the file holds the broker's password"
    assert "security.protocol=SASL_PLAINTEXT" in command and "sasl.mechanism=PLAIN" in command
    # $$ is compose's escape: the container's shell reads the variable, compose.yaml holds
    # no password.
    assert '"$$KAFKA_LISTENER_NAME_CONTROLLER_PLAIN_SASL_JAAS_CONFIG"' in command
    assert "--bootstrap-server localhost:9092" in command
    written = command.split("> ", 1)[1].split()[0]
    assert f"--command-config {written}" in command
    login = jaas(broker["listener.name.controller.plain.sasl.jaas.config"])[2]
    assert (login["username"], login["password"]) == (BROKER_PRINCIPAL, BROKER_PASSWORD)


def holders(services: dict[str, Service], secret: str) -> list[str]:
    value = SAMPLE_ENV[secret]
    return sorted(n for n, s in services.items() if value in json.dumps(s.get("environment")))


def test_each_kafka_password_goes_to_its_principal_and_the_migrate_job_only(
    services: dict[str, Service],
) -> None:
    """The broker's own password to the broker alone; the admin's to the broker (which
    checks it) and the migrate job (which logs in with it); a service's to it and the
    migrate job (which sets it); a relay principal's to the relays and the migrate job."""
    assert holders(services, "KAFKA_BROKER_PASSWORD") == ["kafka"]
    assert holders(services, variable(ADMIN_PRINCIPAL)) == ["kafka", "migrate"]
    for service in SYSTEM.consumers():
        assert holders(services, variable(service)) == sorted(["migrate", service])
    for outbox in SYSTEM.outboxes():
        assert holders(services, variable(relay_principal(outbox))) == ["migrate", *RELAYS]


def test_each_service_logs_in_as_its_own_principal_with_scram(
    services: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    for service in SYSTEM.consumers():
        with monkeypatch.context() as patch:
            container_env(environment(services[service]), patch)
            login = KafkaSettings().client_properties()
        assert login["security.protocol"] == "SASL_PLAINTEXT"
        assert login["sasl.mechanisms"] == "SCRAM-SHA-512"
        assert login["sasl.username"] == service
        assert login["sasl.password"] == SAMPLE_ENV[variable(service)]


def test_each_relay_publishes_each_outbox_as_its_relay_principal(
    services: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    for relay in RELAYS:
        env = environment(services[relay])
        assert "KAFKA_SASL_PASSWORD" not in env and "KAFKA_SASL_USERNAME" not in env
        with monkeypatch.context() as patch:
            container_env(env, patch)
            settings = RelayProcessSettings()
        for outbox in SYSTEM.outboxes():
            login = settings.kafka_for(outbox).client_properties()
            principal = relay_principal(outbox)
            assert login["sasl.mechanisms"] == "SCRAM-SHA-512"
            assert (login["sasl.username"], login["sasl.password"]) == (
                principal,
                SAMPLE_ENV[variable(principal)],
            )


def test_the_migrate_job_logs_in_as_admin_and_sets_every_principals_password(
    services: dict[str, Service], broker: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It logs in with PLAIN as admin, whose password the broker's internal listener holds,
    and is given every principal's password (sagactl prepare sets them and the ACLs)."""
    env = environment(services["migrate"])
    with monkeypatch.context() as patch:
        container_env(env, patch)
        login = KafkaSettings().client_properties()
    assert (login["sasl.mechanisms"], login["sasl.username"]) == ("PLAIN", ADMIN_PRINCIPAL)
    accepted = jaas(broker[f"listener.name.{CLIENT_LISTENER.lower()}.plain.sasl.jaas.config"])
    assert accepted[2][f"user_{ADMIN_PRINCIPAL}"] == login["sasl.password"]
    expected = [*principals(SYSTEM), OPERATOR_PRINCIPAL]
    assert configured_passwords(env, SYSTEM) == {p: SAMPLE_ENV[variable(p)] for p in expected}


def test_no_other_container_gets_a_kafka_login(services: dict[str, Service]) -> None:
    logins = ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "RELAY_KAFKA_PASSWORDS")
    for name, service in services.items():
        env = environment(service)
        given = [n for n in env if n in logins or n.startswith("KAFKA_PASSWORD_")]
        if name in ("kafka", "migrate", *RELAYS, *SYSTEM.consumers()):
            continue
        assert not given, f"{name} gets {given}"
