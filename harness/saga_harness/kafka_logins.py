"""Each process's Kafka login under ``./dev up``, and provisioning the secured local broker.

Every principal (``saga_runtime.kafka_access.principals``, and the operators' ``admin``) has
a password in ``.env``, ``KAFKA_PASSWORD_<PRINCIPAL>``, generated like the other secrets.
``up`` sets them on the broker and gives each process only its own: a service gets
``KAFKA_SASL_USERNAME``/``KAFKA_SASL_PASSWORD``, a relay ``RELAY_KAFKA_PASSWORDS`` (one per
outbox), and no process inherits the ``KAFKA_PASSWORD_*`` variables. Provisioning also
deletes the ACLs the system no longer derives (``apply_access``), for its topic prefix only.

The tests, the chaos runner and the benchmarks have no ``.env``: their passwords are derived
from the broker's super user's (``derived_passwords``), so systems running at once on one broker
agree on them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, MutableMapping
from typing import Final, Literal

from saga_harness.infra.kafka_sasl import ADMIN_PRINCIPAL
from saga_runtime import ConfigurationError, KafkaSettings
from saga_runtime.kafka_access import apply_access, principals, relay_principal, system_grants
from saga_runtime.system import System
from sagactl.broker_access import PASSWORD_PREFIX, kafka_password_variable

__all__ = [
    "PASSWORD_PREFIX",
    "derived_passwords",
    "kafka_secrets",
    "login_settings",
    "operator_login",
    "password_variable",
    "provision_access",
    "relay_login",
    "service_login",
    "take_passwords",
]

SECURED: Final[Literal["SASL_PLAINTEXT"]] = "SASL_PLAINTEXT"
# The product's names (``sagactl prepare`` reads the same variables): one convention.
password_variable = kafka_password_variable


def kafka_secrets(system: System) -> dict[str, str]:
    """The ``.env`` variables of every Kafka principal's password, with what each is."""
    secrets = {password_variable(ADMIN_PRINCIPAL): "the Kafka operators' (super user) password"}
    secrets.update(
        {password_variable(p): f"the Kafka password of principal {p}" for p in principals(system)}
    )
    return secrets


def take_passwords(environ: MutableMapping[str, str], system: System) -> dict[str, str]:
    """Each principal's password (by principal), removed from ``environ`` so that no child
    process inherits the others'. Raises ConfigurationError naming what is missing."""
    wanted = [ADMIN_PRINCIPAL, *principals(system)]
    missing = [password_variable(p) for p in wanted if not environ.get(password_variable(p))]
    if missing:
        raise ConfigurationError(f"missing Kafka passwords: {', '.join(missing)} (run ./dev)")
    return {p: environ.pop(password_variable(p)) for p in wanted}


def service_login(service: str, passwords: Mapping[str, str]) -> dict[str, str]:
    """The environment a service's process logs in with."""
    return {
        "KAFKA_SECURITY_PROTOCOL": SECURED,
        "KAFKA_SASL_USERNAME": service,
        "KAFKA_SASL_PASSWORD": passwords[service],
    }


def relay_login(system: System, passwords: Mapping[str, str]) -> dict[str, str]:
    """The environment a relay of every outbox logs in with: a principal per outbox."""
    return {
        "KAFKA_SECURITY_PROTOCOL": SECURED,
        "RELAY_KAFKA_PASSWORDS": json.dumps(
            {o: passwords[relay_principal(o)] for o in system.outboxes()}
        ),
    }


def derived_passwords(super_user: Mapping[str, str], system: System) -> dict[str, str]:
    """Every principal's password (``admin``'s too), derived from the super user's."""
    root = super_user["sasl.password"].encode()
    return {
        p: hmac.new(root, p.encode(), hashlib.sha256).hexdigest()
        for p in (ADMIN_PRINCIPAL, *principals(system))
    }


def login_settings(
    bootstrap: str, login: Mapping[str, str] | None, *, prefix: str = "", **more: object
) -> KafkaSettings:
    """Settings logged in with ``login`` (librdkafka properties: ``security.protocol``,
    ``sasl.*``); without one, whatever ``KAFKA_*`` in the environment says."""
    fields: dict[str, object] = {"bootstrap_servers": bootstrap, "topic_prefix": prefix, **more}
    if login:
        fields.update(
            security_protocol=login["security.protocol"],
            sasl_mechanism=login["sasl.mechanisms"],
            sasl_username=login["sasl.username"],
            sasl_password=login["sasl.password"],
        )
    return KafkaSettings(**fields)  # type: ignore[arg-type]


def operator_login(bootstrap: str, super_user: Mapping[str, str], system: System) -> dict[str, str]:
    """The environment ``sagactl`` logs in with as ``admin`` (the operators' super user, with
    its derived password, which this sets on the broker)."""
    password = derived_passwords(super_user, system)[ADMIN_PRINCIPAL]
    root = login_settings(bootstrap, super_user)
    apply_access(root, [], {ADMIN_PRINCIPAL: password})
    return {
        "KAFKA_SECURITY_PROTOCOL": root.security_protocol,
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": ADMIN_PRINCIPAL,
        "KAFKA_SASL_PASSWORD": password,
    }


def provision_access(
    bootstrap: str,
    super_user: Mapping[str, str],
    system: System,
    passwords: Mapping[str, str],
    *,
    prefix: str = "",
) -> KafkaSettings:
    """Set every principal's password and the system's ACLs on a secured broker, logged in
    with ``super_user`` (librdkafka login properties), and delete the ACLs of ``prefix``'s
    system that it no longer derives; return settings logged in as ``super_user``, to create
    the topics with."""
    root = login_settings(bootstrap, super_user, prefix=prefix)
    apply_access(root, system_grants(system, prefix), passwords, prefix=prefix)
    return root
