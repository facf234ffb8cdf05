"""Who may do what on the broker, derived from the declared system: principals and ACLs.

Each consuming service logs in as its own principal (its name) and may read only the events
topics of the services it subscribes to, in its own consumer group, and write only its own
dead-letter topic. The relay logs in once per outbox it relays, as ``relay-<service>``, and
that principal alone may write the service's events topic. Nobody else gets anything: the
broker's authorizer denies what no ACL allows (``allow.everyone.if.no.acl.found=false``), so
an unauthenticated client, or a service producing to another service's topic, is refused.
Topics are created, and these ACLs and passwords set, by an administrator (a super user).

``apply_access`` sets them on a broker with Kafka's ``StandardAuthorizer`` (KRaft): ACLs are
added, each principal's SCRAM credential is set (so running it again with a new password
rotates it), and the system's ACLs that are not derived any more (a subscription or a service
removed) are deleted. Which ACLs are the system's is told by their shape (``is_system_acl``),
for one topic prefix only: the systems of other prefixes on the same broker, and principals
not named as the system names them, are never touched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from saga_runtime.naming import consumer_group, dead_letter_topic, events_topic
from saga_runtime.settings import KafkaSettings
from saga_runtime.system import System

__all__ = [
    "Grant",
    "apply_access",
    "is_system_acl",
    "principals",
    "relay_principal",
    "system_grants",
]

Operation = Literal["READ", "WRITE", "DESCRIBE_CONFIGS"]
Resource = Literal["topic", "group"]
SCRAM_ITERATIONS = 8192
_RESOURCE_TYPES = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}
# The names ``saga_runtime.naming`` gives, for any service (one removed included): a
# principal is a service or ``relay-<service>``; after the prefix a topic is
# ``<service>.events`` or ``<service>.dead-letters``, a group ``<service>``. A service name has
# no ``.`` and no ``-``, so another prefix's names (``s1a2b.orders.events``) never match.
_SERVICE = r"[a-z][a-z0-9_]{0,40}"
_PRINCIPAL = re.compile(rf"User:(?:relay-)?{_SERVICE}")
_RESOURCE = {
    ResourceType.TOPIC: re.compile(rf"{_SERVICE}\.(?:events|dead-letters)"),
    ResourceType.GROUP: re.compile(_SERVICE),
}
_OPERATIONS = {AclOperation[name] for name in ("READ", "WRITE", "DESCRIBE_CONFIGS")}


@dataclass(frozen=True, order=True)
class Grant:
    """One ACL: ``principal`` (a user name) may ``operation`` the named topic or group.

    READ and WRITE imply DESCRIBE of the same resource, and WRITE on any topic implies the
    cluster's IDEMPOTENT_WRITE, so idempotent producers need nothing more.
    """

    principal: str
    resource: Resource
    name: str
    operation: Operation

    def binding(self) -> AclBinding:
        return AclBinding(
            _RESOURCE_TYPES[self.resource],
            self.name,
            ResourcePatternType.LITERAL,
            f"User:{self.principal}",
            "*",
            AclOperation[self.operation],
            AclPermissionType.ALLOW,
        )


def relay_principal(outbox: str) -> str:
    """The principal the relay logs in as to publish ``outbox``'s events. A service name has
    no ``-``, so it never equals a service's own principal."""
    return f"relay-{outbox}"


def principals(system: System) -> list[str]:
    """Every principal of the system: the consuming services, then a relay per outbox."""
    return [*system.consumers(), *(relay_principal(o) for o in system.outboxes())]


def system_grants(system: System, prefix: str = "") -> list[Grant]:
    """Every ACL the system needs, and nothing more (``prefix``: the topics' and groups')."""
    grants: list[Grant] = []
    for service in system.consumers():
        grants += [
            Grant(service, "topic", events_topic(producer, prefix), "READ")
            for producer in system.subscriptions(service)
        ]
        grants.append(Grant(service, "group", consumer_group(service, prefix), "READ"))
        grants.append(Grant(service, "topic", dead_letter_topic(service, prefix), "WRITE"))
    for outbox in system.outboxes():
        relay = relay_principal(outbox)
        grants.append(Grant(relay, "topic", events_topic(outbox, prefix), "WRITE"))
        # The relay purges the service's inbox, and first checks that the topics the
        # inbox reads keep their messages for less time (their retention, a config).
        grants += [
            Grant(relay, "topic", events_topic(producer, prefix), "DESCRIBE_CONFIGS")
            for producer in system.subscriptions(outbox)
        ]
    return grants


def is_system_acl(binding: AclBinding, prefix: str) -> bool:
    """Tell whether ``binding`` has the shape of an ACL that ``system_grants`` gives for
    ``prefix``, for any system: an ALLOW of READ, WRITE or DESCRIBE_CONFIGS from any host, to a
    principal named as a service or a relay, on one topic or group (LITERAL) named as the
    system names them after ``prefix``. Anything else (a DENY, a PREFIXED pattern, a principal
    named otherwise, another prefix's topic) belongs to someone else."""
    restype = binding.restype
    pattern = _RESOURCE.get(restype) if isinstance(restype, ResourceType) else None
    return (
        pattern is not None
        and binding.resource_pattern_type == ResourcePatternType.LITERAL
        and binding.permission_type == AclPermissionType.ALLOW
        and binding.operation in _OPERATIONS
        and binding.host == "*"
        and _PRINCIPAL.fullmatch(binding.principal) is not None
        and binding.name.startswith(prefix)
        and pattern.fullmatch(binding.name[len(prefix) :]) is not None
    )


def apply_access(
    admin: KafkaSettings,
    grants: Iterable[Grant],
    passwords: Mapping[str, str],
    *,
    prefix: str | None = None,
    timeout: float = 30.0,
) -> None:
    """Set each principal's SCRAM-SHA-512 password, then add ``grants``, as ``admin``
    (a super user). Idempotent: an ACL that exists is left as it is. With ``prefix`` (the
    grants' topic prefix) the system's ACLs of that prefix that ``grants`` do not name any more
    are deleted (``is_system_acl``), so a principal loses what the system no longer gives it."""
    client = AdminClient(admin.client_properties())
    if passwords:
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
        upserts: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(user, info, password.encode())
            for user, password in passwords.items()
        ]
        for future in client.alter_user_scram_credentials(
            upserts, request_timeout=timeout
        ).values():
            future.result(timeout=timeout)
    bindings = [grant.binding() for grant in dict.fromkeys(grants)]
    if bindings:
        for future in client.create_acls(bindings, request_timeout=timeout).values():
            future.result(timeout=timeout)
    if prefix is not None:
        _revoke_stale(client, set(bindings), prefix, timeout)


def _revoke_stale(
    client: AdminClient, wanted: set[AclBinding], prefix: str, timeout: float
) -> None:
    """Delete the system's ACLs of ``prefix`` (by shape) that are not ``wanted``."""
    # None matches any name, principal and host (the stubs say str).
    every = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.LITERAL,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ALLOW,
    )
    existing = client.describe_acls(every, request_timeout=timeout).result(timeout=timeout)
    stale = [b for b in existing if b not in wanted and is_system_acl(b, prefix)]
    if not stale:
        return
    # Each filter names one ACL exactly, so nothing else matches it.
    filters = [
        AclBindingFilter(
            b.restype,
            b.name,
            b.resource_pattern_type,
            b.principal,
            b.host,
            b.operation,
            b.permission_type,
        )
        for b in stale
    ]
    for future in client.delete_acls(filters, request_timeout=timeout).values():
        future.result(timeout=timeout)
