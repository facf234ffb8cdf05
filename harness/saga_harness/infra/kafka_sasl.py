"""The local broker's secured mode: SASL logins and KRaft's ACL authorizer.

Clients log in with SCRAM-SHA-512 on the one client listener; the authorizer
(``StandardAuthorizer``) then allows only what an ACL grants, so an unauthenticated client is
refused outright and a logged-in one may do only its part (``saga_runtime.kafka_access``).

Two super users: ``broker`` is the broker itself (its own connections, to the controller
too) and the harness that provisions it; it logs in with PLAIN, whose one password lives in
the broker's config, so a broker secures itself with no step at format time and no chicken
and egg (SCRAM credentials live in the metadata, which someone must first be allowed to
write). ``admin`` is the operators' super user, a SCRAM credential set like every other.
The broker's password is generated once per state dir and kept there, readable by its
owner only.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = [
    "ADMIN_PRINCIPAL",
    "BROKER_PRINCIPAL",
    "CLIENT_LISTENER",
    "broker_password",
    "secured_properties",
]

BROKER_PRINCIPAL = "broker"
ADMIN_PRINCIPAL = "admin"
CLIENT_LISTENER = "SASL_PLAINTEXT"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
_PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
_SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"


def broker_password(home: Path) -> str:
    """The broker principal's password for the broker in ``home``, generated on first use."""
    path = home / "broker.password"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def secured_properties(*, bootstrap: str, controller: str, password: str) -> dict[str, str]:
    """server.properties entries for one SASL client listener and a SASL controller listener."""
    # The broker logs in as itself (username/password) and accepts itself (user_broker).
    plain = (
        f'{_PLAIN} required username="{BROKER_PRINCIPAL}" password="{password}" '
        f'user_{BROKER_PRINCIPAL}="{password}";'
    )
    client = CLIENT_LISTENER.lower()
    return {
        "listeners": f"{CLIENT_LISTENER}://{bootstrap},CONTROLLER://{controller}",
        "advertised.listeners": f"{CLIENT_LISTENER}://{bootstrap}",
        "inter.broker.listener.name": CLIENT_LISTENER,
        "listener.security.protocol.map": (
            f"CONTROLLER:SASL_PLAINTEXT,{CLIENT_LISTENER}:SASL_PLAINTEXT"
        ),
        f"listener.name.{client}.sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
        f"listener.name.{client}.plain.sasl.jaas.config": plain,
        f"listener.name.{client}.scram-sha-512.sasl.jaas.config": f"{_SCRAM} required;",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain,
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "authorizer.class.name": AUTHORIZER,
        "super.users": f"User:{BROKER_PRINCIPAL};User:{ADMIN_PRINCIPAL}",
        "allow.everyone.if.no.acl.found": "false",
    }
