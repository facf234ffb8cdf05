"""Least privilege on the real broker (secured mode): who may write and read which topic.

Each principal logs in as the processes of ``./dev up`` do (``secure_system``); the ACLs
are those ``saga_runtime.kafka_access`` derives from the declared system, and provisioning
again deletes those it no longer derives.
"""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from saga_harness.system import secure_system
from saga_runtime import KafkaSettings, consumer_config, ensure_topics, events_topic
from saga_runtime.kafka_access import (
    Grant,
    apply_access,
    principals,
    relay_principal,
    system_grants,
)
from saga_runtime.naming import consumer_group, dead_letter_topic
from saga_system import SYSTEM
from tests.fixtures.kafka import produce, read_topic
from tests.fixtures.secured_kafka import SecuredBroker
from tests.support import wait_until

Logins = tuple[KafkaSettings, dict[str, dict[str, str]]]


def _quiet() -> logging.Logger:
    logger = logging.getLogger("tests.kafka_acls")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def login(admin: KafkaSettings, username: str, password: str) -> KafkaSettings:
    """Settings that log in with SCRAM-SHA-512 as the services do."""
    return KafkaSettings(
        bootstrap_servers=admin.bootstrap_servers,
        topic_prefix=admin.topic_prefix,
        security_protocol="SASL_PLAINTEXT",
        sasl_username=username,
        sasl_password=password,  # type: ignore[arg-type]
    )


def as_service(secured: Logins, service: str) -> KafkaSettings:
    admin, logins = secured
    env = logins[service]
    return login(admin, env["KAFKA_SASL_USERNAME"], env["KAFKA_SASL_PASSWORD"])


def as_relay(secured: Logins, outbox: str) -> KafkaSettings:
    admin, logins = secured
    passwords = json.loads(logins["relay"]["RELAY_KAFKA_PASSWORDS"])
    return login(admin, relay_principal(outbox), passwords[outbox])


def deliver(settings: KafkaSettings, topic: str, *, timeout_ms: int = 10_000) -> KafkaError | None:
    """Produce one message as ``settings``' principal; the broker's verdict (None: written)."""
    producer = Producer(
        {
            **settings.client_properties(),
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": timeout_ms,
            "logger": _quiet(),
        }
    )
    reports: list[KafkaError | None] = []
    producer.produce(
        topic, key=b"order-1", value=b"{}", on_delivery=lambda e, _m: reports.append(e)
    )
    producer.flush(15)
    assert len(reports) == 1, "no delivery report"
    return reports[0]


def first_poll_error(settings: KafkaSettings, topic: str, group: str) -> KafkaError | None:
    """Subscribe as the runtime's consumers do; the first error polling gives, or None once a
    message arrives."""
    consumer = Consumer(
        {
            **consumer_config(
                settings, group_id=group, client_id="acl-test", session_timeout_ms=6000
            ),
            "logger": _quiet(),
        }
    )
    try:
        consumer.subscribe([topic])
        for _ in range(40):
            message = consumer.poll(0.5)
            if message is None:
                continue
            return message.error() if message.error() else None
        raise AssertionError(f"nothing from {topic}, not even an error")
    finally:
        consumer.close()


def test_a_client_that_does_not_log_in_is_refused_outright(secured_system: Logins) -> None:
    admin, _ = secured_system
    anonymous = {"bootstrap.servers": admin.bootstrap_servers, "logger": _quiet()}
    with pytest.raises(KafkaException):
        AdminClient(anonymous).list_topics(timeout=3)
    wrong = login(admin, "orders", "not-its-password")
    errors: list[KafkaError] = []
    client = AdminClient(
        {**wrong.client_properties(), "logger": _quiet(), "error_cb": errors.append}
    )
    with pytest.raises(KafkaException):
        client.list_topics(timeout=5)
    client.poll(1)  # serves error_cb
    assert KafkaError._AUTHENTICATION in {e.code() for e in errors}, errors
    topic = events_topic("orders", admin.topic_prefix)
    error = deliver(
        KafkaSettings(bootstrap_servers=admin.bootstrap_servers), topic, timeout_ms=2000
    )
    assert error is not None
    assert read_topic(admin, topic, expect=0, timeout=2) == []


def test_a_service_may_not_produce_to_another_services_topic(secured_system: Logins) -> None:
    admin, _ = secured_system
    prefix = admin.topic_prefix
    orders_events = events_topic("orders", prefix)
    refused = KafkaError.TOPIC_AUTHORIZATION_FAILED
    for who in (as_service(secured_system, "stock"), as_relay(secured_system, "stock")):
        error = deliver(who, orders_events)
        assert error is not None and error.code() == refused, (who.sasl_username, error)
    # Not even its own events topic: only its relay writes there (from its outbox).
    error = deliver(as_service(secured_system, "stock"), events_topic("stock", prefix))
    assert error is not None and error.code() == refused
    # Nor another service's dead letters.
    error = deliver(as_service(secured_system, "stock"), dead_letter_topic("orders", prefix))
    assert error is not None and error.code() == refused
    assert read_topic(admin, orders_events, expect=0, timeout=2) == []


def test_each_principal_may_do_its_own_part(secured_system: Logins) -> None:
    admin, _ = secured_system
    prefix = admin.topic_prefix
    orders_events = events_topic("orders", prefix)
    assert deliver(as_relay(secured_system, "orders"), orders_events) is None
    for service in SYSTEM.subscribers("orders"):
        who = as_service(secured_system, service)
        assert first_poll_error(who, orders_events, consumer_group(service, prefix)) is None
        assert deliver(who, dead_letter_topic(service, prefix)) is None
    assert len(read_topic(admin, orders_events, expect=1)) == 1


def test_a_service_reads_only_what_it_subscribes_to_in_its_own_group(
    secured_system: Logins,
) -> None:
    admin, _ = secured_system
    prefix = admin.topic_prefix
    stock = as_service(secured_system, "stock")
    assert "payments" not in SYSTEM.subscriptions("stock")
    error = first_poll_error(
        stock, events_topic("payments", prefix), consumer_group("stock", prefix)
    )
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    error = first_poll_error(
        stock, events_topic("orders", prefix), consumer_group(f"x{uuid.uuid4().hex[:6]}", prefix)
    )
    assert error is not None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED


def acls(admin: KafkaSettings, *principals: str) -> set[Grant]:
    """The ALLOW ACLs of ``principals`` on the broker, as grants."""
    client = AdminClient(admin.client_properties())  # alive until the answer comes
    found: set[Grant] = set()
    for principal in principals:
        matching = AclBindingFilter(
            ResourceType.ANY,
            None,  # type: ignore[arg-type]
            ResourcePatternType.LITERAL,
            f"User:{principal}",
            None,  # type: ignore[arg-type]
            AclOperation.ANY,
            AclPermissionType.ALLOW,
        )
        found |= {
            Grant(principal, b.restype.name.lower(), b.name, b.operation.name)
            for b in client.describe_acls(matching).result(timeout=30)
        }
    return found


def test_provisioning_revokes_what_the_system_no_longer_grants_and_only_that(
    secured_broker: SecuredBroker,
) -> None:
    """A grant present before and not derived any more (a subscription removed, a service
    removed) is gone after the next provisioning, and its principal is refused; another
    prefix's ACLs on the same broker, and a principal not named as the system's, keep theirs."""
    mine, other = (
        KafkaSettings(
            bootstrap_servers=secured_broker.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}."
        )
        for _ in range(2)
    )
    admin, _ = secure_system(mine, secured_broker.super_user)
    ensure_topics(admin, SYSTEM.topics(mine.topic_prefix))
    secure_system(other, secured_broker.super_user)

    def stale(prefix: str) -> set[Grant]:
        """What an earlier system gave: loyalty (a service since removed) read orders' events
        in its group; stock read payments' events (a subscription since removed)."""
        return {
            Grant("loyalty", "topic", events_topic("orders", prefix), "READ"),
            Grant("loyalty", "group", consumer_group("loyalty", prefix), "READ"),
            Grant("stock", "topic", events_topic("payments", prefix), "READ"),
        }

    foreign = Grant("ops-monitor", "topic", events_topic("orders", mine.topic_prefix), "READ")
    loyalty_password = uuid.uuid4().hex
    apply_access(
        admin,
        [*stale(mine.topic_prefix), *stale(other.topic_prefix), foreign],
        {"loyalty": loyalty_password},
    )
    loyalty = login(admin, "loyalty", loyalty_password)
    orders_events = events_topic("orders", mine.topic_prefix)
    produce(admin, orders_events, [(b"order-1", b"{}")])
    loyalty_group = consumer_group("loyalty", mine.topic_prefix)
    assert first_poll_error(loyalty, orders_events, loyalty_group) is None, "allowed before"

    _, logins = secure_system(mine, secured_broker.super_user)  # the system as declared now

    wait_until(
        lambda: not stale(mine.topic_prefix) & acls(admin, "loyalty", "stock"),
        timeout=10,
        what="the stale ACLs gone",
    )
    refused = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}
    error = first_poll_error(loyalty, orders_events, loyalty_group)
    assert error is not None and error.code() in refused, error
    stock = as_service((admin, logins), "stock")
    payments_events = events_topic("payments", mine.topic_prefix)
    error = first_poll_error(stock, payments_events, consumer_group("stock", mine.topic_prefix))
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
    # Untouched: another prefix's system, someone else's principal, and the grants derived now.
    assert stale(other.topic_prefix) <= acls(admin, "loyalty", "stock")
    assert foreign in acls(admin, "ops-monitor")
    now = acls(admin, *principals(SYSTEM))
    assert set(system_grants(SYSTEM, mine.topic_prefix)) == {
        g for g in now if g.name.startswith(mine.topic_prefix)
    }
