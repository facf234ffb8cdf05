"""Names of topics, consumer groups, schemas and channels, derived from the owning service."""

from __future__ import annotations

import re

from saga_runtime.errors import ConfigurationError

__all__ = [
    "consumer_group",
    "dead_letter_topic",
    "events_topic",
    "notify_channel",
    "relay_lock_key",
    "validate_service_name",
]

_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


def validate_service_name(service: str) -> str:
    """Service names become schema, role and topic names, so keep them boring."""
    if not _SERVICE_NAME.match(service):
        raise ConfigurationError(
            f"invalid service name {service!r}: use lowercase letters, digits and _"
        )
    return service


def events_topic(service: str, prefix: str = "") -> str:
    """The topic a service publishes its events to (one per producing service)."""
    return f"{prefix}{validate_service_name(service)}.events"


def dead_letter_topic(service: str, prefix: str = "") -> str:
    """The topic where a consuming service's poison messages go."""
    return f"{prefix}{validate_service_name(service)}.dead-letters"


def consumer_group(service: str, prefix: str = "") -> str:
    return f"{prefix}{validate_service_name(service)}"


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel that wakes the relay of one outbox."""
    return f"{validate_service_name(schema)}_outbox"


def relay_lock_key(schema: str) -> str:
    """Text hashed into the advisory lock that makes one relay per outbox active."""
    return f"outbox_relay:{validate_service_name(schema)}"
