"""``sagactl prepare`` on a secured broker: each principal's password and the system's ACLs.

Given a super user's login (``KAFKA_SECURITY_PROTOCOL=SASL_*``, ``KAFKA_SASL_USERNAME``,
``KAFKA_SASL_PASSWORD``) and the principals' passwords, ``KAFKA_PASSWORD_<PRINCIPAL>``,
``prepare`` sets each principal's SCRAM-SHA-512 credential and adds the ACLs that
``saga_runtime.kafka_access`` derives from the system: the same ``apply_access`` and
``system_grants`` that ``./dev up`` runs against its local broker. compose's ``migrate`` job
works this way, and so can a deployment on a broker of its own. Without those variables
``prepare`` leaves the broker's logins and ACLs alone (a plain broker, or access managed
elsewhere); with some of the system's but not all, it refuses, naming the missing ones.
"""

from __future__ import annotations

from collections.abc import Mapping

from saga_runtime.errors import ConfigurationError
from saga_runtime.kafka_access import apply_access, principals, system_grants
from saga_runtime.settings import KafkaSettings
from saga_runtime.system import System

__all__ = [
    "OPERATOR_PRINCIPAL",
    "PASSWORD_PREFIX",
    "configured_passwords",
    "kafka_password_variable",
    "provision_access",
]

PASSWORD_PREFIX = "KAFKA_PASSWORD_"
# The operators' super user. Its SCRAM credential is set too when its password is given,
# so that operators log in with SCRAM as every process does.
OPERATOR_PRINCIPAL = "admin"


def kafka_password_variable(principal: str) -> str:
    """``relay-orders`` -> ``KAFKA_PASSWORD_RELAY_ORDERS``."""
    return PASSWORD_PREFIX + principal.upper().replace("-", "_")


def configured_passwords(environ: Mapping[str, str], system: System) -> dict[str, str]:
    """Each principal's password from ``environ`` (by principal), ``admin``'s too when set;
    empty when none of the system's is set. Raises ConfigurationError naming the variables
    (never their values) when only some are."""
    wanted = principals(system)
    given = {p: environ.get(kafka_password_variable(p), "") for p in wanted}
    if not any(given.values()):
        return {}
    missing = [kafka_password_variable(p) for p, password in given.items() if not password]
    if missing:
        raise ConfigurationError(f"missing Kafka passwords: {', '.join(missing)}")
    operator = environ.get(kafka_password_variable(OPERATOR_PRINCIPAL))
    return {**given, **({OPERATOR_PRINCIPAL: operator} if operator else {})}


def provision_access(kafka: KafkaSettings, environ: Mapping[str, str], system: System) -> int:
    """Set the configured principals' passwords and the system's ACLs (for ``kafka``'s topic
    prefix), logged in as ``kafka``'s super user; return how many principals were set (0:
    nothing configured, or a broker that checks nobody)."""
    if not kafka.security_protocol.startswith("SASL_"):
        # ./dev exports .env's passwords to every command; a plain broker has no ACLs to set.
        return 0
    passwords = configured_passwords(environ, system)
    if passwords:
        apply_access(kafka, system_grants(system, kafka.topic_prefix), passwords)
    return len(passwords)
