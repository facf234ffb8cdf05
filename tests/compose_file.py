"""compose.yaml as the tests read it (no Docker): its services with a generated ``.env``'s
values, and the broker's server.properties as the ``apache/kafka`` image derives it.

Plain functions shared by the unit tests (``tests/unit/test_compose*.py``) and the real
broker started from compose's configuration (``tests/integration/test_compose_broker.py``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from saga_harness.dotenv import SECRETS

REPO = Path(__file__).resolve().parents[1]
Service = dict[str, Any]

# What compose reads from .env, with the values a generated .env would give it.
SAMPLE_ENV = {name: f"sample-{name.lower()}-A_b9" for name in SECRETS}
REFERENCE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?[?-][^}]*)?\}")

# The apache/kafka image's KafkaDockerWrapper (core/src/main/scala/kafka/docker/) writes every
# KAFKA_* variable but these to server.properties.
_NOT_PROPERTIES = frozenset(
    {
        "KAFKA_VERSION",
        "KAFKA_HEAP_OPTS",
        "KAFKA_LOG4J_OPTS",
        "KAFKA_OPTS",
        "KAFKA_JMX_OPTS",
        "KAFKA_JVM_PERFORMANCE_OPTS",
        "KAFKA_GC_LOG_OPTS",
        "KAFKA_LOG4J_ROOT_LOGLEVEL",
        "KAFKA_LOG4J_LOGGERS",
        "KAFKA_TOOLS_LOG4J_LOGLEVEL",
        "KAFKA_JMX_HOSTNAME",
    }
)


def interpolate(value: str, env: dict[str, str]) -> str:
    """``${NAME:?message}`` and ``${NAME}`` replaced as compose does, from ``env``."""
    return REFERENCE.sub(lambda match: env[match[1]], value)


def raw_compose() -> str:
    return (REPO / "compose.yaml").read_text()


def compose_services(env: dict[str, str] | None = None) -> dict[str, Service]:
    """Every service of compose.yaml, with ``env`` (default: ``SAMPLE_ENV``) as its .env."""
    compose = yaml.safe_load(interpolate(raw_compose(), SAMPLE_ENV if env is None else env))
    services: dict[str, Service] = compose["services"]
    return services


def environment(service: Service) -> dict[str, str]:
    """A service's environment, anchors merged, as name -> value."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def server_properties(env: dict[str, str]) -> dict[str, str]:
    """The server.properties entries the apache/kafka image writes from a container's
    environment: ``KAFKA_`` dropped, lower case, then ``_`` -> ``.``, ``___`` -> ``-`` and
    ``__`` -> ``_`` (the wrapper's own order of replacements)."""
    properties = {}
    for key, value in env.items():
        if key.startswith("KAFKA_") and key not in _NOT_PROPERTIES:
            name = key.replace("KAFKA_", "").lower().replace("_", ".")
            properties[name.replace("...", "-").replace("..", "_")] = value
    return properties


_OPTION = re.compile(r'(\w+)="([^"]*)"')


def jaas(config: str) -> tuple[str, str, dict[str, str]]:
    """``Module flag key="value" ...;`` -> (module, flag, options)."""
    head, _, rest = config.strip().partition(" ")
    flag, _, options = rest.strip().partition(" ")
    assert config.strip().endswith(";"), config
    flag = flag.rstrip(";")
    return head, flag, dict(_OPTION.findall(options))


def container_env(env: dict[str, str], patch: pytest.MonkeyPatch) -> None:
    """This process's environment as a container's with ``env``: of the KAFKA_* and RELAY_*
    variables, only the container's (the settings classes read them from the environment)."""
    for name in [n for n in os.environ if n.startswith(("KAFKA_", "RELAY_"))]:
        patch.delenv(name)
    for name, value in env.items():
        patch.setenv(name, value)
