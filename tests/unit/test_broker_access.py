"""``sagactl prepare``'s Kafka access step: which passwords it takes from the environment, and
when it leaves the broker alone. (On a real broker: tests/integration/test_compose_broker.py.)"""

from __future__ import annotations

import pytest

from saga_harness.infra.kafka_sasl import ADMIN_PRINCIPAL
from saga_harness.kafka_logins import password_variable
from saga_runtime import ConfigurationError, KafkaSettings
from saga_runtime.kafka_access import principals
from saga_system import SYSTEM
from sagactl import broker_access
from sagactl.broker_access import (
    OPERATOR_PRINCIPAL,
    configured_passwords,
    kafka_password_variable,
    provision_access,
)

ALL = {kafka_password_variable(p): f"pw-{p}" for p in principals(SYSTEM)}


def test_the_same_variables_as_dev_up() -> None:
    assert kafka_password_variable("relay-orders") == "KAFKA_PASSWORD_RELAY_ORDERS"
    assert password_variable is kafka_password_variable
    assert OPERATOR_PRINCIPAL == ADMIN_PRINCIPAL


def test_every_principals_password_and_the_operators_when_given() -> None:
    assert configured_passwords(ALL, SYSTEM) == {p: f"pw-{p}" for p in principals(SYSTEM)}
    with_admin = {**ALL, kafka_password_variable(OPERATOR_PRINCIPAL): "pw-admin"}
    assert configured_passwords(with_admin, SYSTEM)[OPERATOR_PRINCIPAL] == "pw-admin"


def test_none_given_is_nothing_to_do_and_some_is_refused_naming_only_the_missing() -> None:
    assert configured_passwords({"OTHER": "x"}, SYSTEM) == {}
    some = {k: v for k, v in ALL.items() if "RELAY_ORDERS" not in k}
    with pytest.raises(ConfigurationError) as refused:
        configured_passwords(some, SYSTEM)
    assert str(refused.value) == "missing Kafka passwords: KAFKA_PASSWORD_RELAY_ORDERS"
    assert "pw-" not in str(refused.value)


def test_a_plain_broker_or_no_passwords_leaves_the_broker_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    applied: list[object] = []
    monkeypatch.setattr(broker_access, "apply_access", lambda *args: applied.append(args))
    plain = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    assert provision_access(plain, ALL, SYSTEM) == 0
    secured = plain.model_copy(update={"security_protocol": "SASL_PLAINTEXT"})
    assert provision_access(secured, {}, SYSTEM) == 0
    assert applied == []
    assert provision_access(secured, ALL, SYSTEM) == len(principals(SYSTEM))
    assert len(applied) == 1
