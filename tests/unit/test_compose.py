"""compose.yaml must describe the same system that ``./dev up`` runs.

No Docker engine is needed: the file is parsed and cross-checked against the code (service
packages, the Kafka version the local stack pins, the env vars the code reads, the image's
entrypoint), so drift between the two ways of running the system fails fast.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from typing import Any

import pytest
import yaml

from saga_harness.dotenv import SECRETS
from saga_harness.infra.kafka import DEFAULT_KAFKA_VERSION
from saga_runtime import composition_root, password_variable, relay_login
from saga_runtime.kafka_access import principals
from saga_system import SYSTEM
from sagactl.broker_access import OPERATOR_PRINCIPAL, kafka_password_variable
from sagactl.cli import system_logins
from tests.compose_file import (
    REFERENCE,
    REPO,
    SAMPLE_ENV,
    Service,
    compose_services,
    environment,
    raw_compose,
)

# From the definition: a service added there without its container fails here.
SERVICE_PACKAGES = tuple(SYSTEM.names)
PUBLISHED_PORTS = {"orders": 8000, "stock": 8001}
# Containers of the development harness's simulators: the Dockerfile's `dev` target; every
# other project container runs the production image (the `product` target).
SIMULATORS = ("provider", "smtp-sink")
PRODUCT_TARGET, HARNESS_TARGET = "product", "dev"
# Every project container needs these to find the infrastructure.
ENV_VARS = {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"}
# Where the processes read their configuration from the environment.
SETTINGS_MODULES = (
    "saga_runtime.settings",
    "saga_runtime.auth",
    *(f"{package}.settings" for package in SERVICE_PACKAGES),
    "outbox_relay.settings",
    "simulators.payment_provider.settings",
    "simulators.smtp_sink.server",
)


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    return compose_services()


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def argv(service: Service) -> list[str]:
    """What the container runs: compose's entrypoint followed by its command."""
    return _as_list(service.get("entrypoint")) + _as_list(service.get("command"))


def depends_on(service: Service) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def project(services: dict[str, Service]) -> dict[str, Service]:
    """Containers built from this repository's Dockerfile."""
    return {name: s for name, s in services.items() if "build" in s}


def test_every_service_package_has_a_container(services: dict[str, Service]) -> None:
    commands = [argv(s) for s in project(services).values()]
    for name in SERVICE_PACKAGES:
        assert (REPO / name).is_dir(), f"service package {name}/ is missing"
        assert commands.count(["sagactl", "run", name]) == 1, f"no container runs {name}"


def test_published_http_ports(services: dict[str, Service]) -> None:
    for name, port in PUBLISHED_PORTS.items():
        assert f"127.0.0.1:{port}:{port}" in [str(p) for p in services[name].get("ports", [])]


def test_nothing_is_published_beyond_this_host(services: dict[str, Service]) -> None:
    published = [(n, str(p)) for n, s in services.items() for p in s.get("ports", [])]
    assert published, "the APIs are published for the host's tools"
    for name, port in published:
        assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    assert "ports" not in services["postgres"], "the database is for the containers only"


def test_every_secret_comes_from_the_env_file_and_goes_only_where_it_is_used() -> None:
    """No secret is written in compose.yaml: each is a required ``${NAME:?...}`` that the
    generated .env provides; and a container gets only the secrets its process reads."""
    referenced = {match[1] for match in REFERENCE.finditer(raw_compose())}
    assert referenced <= set(SECRETS), referenced - set(SECRETS)
    assert referenced >= {"AUTH_JWT_SECRET", "PROVIDER_API_KEY", "POSTGRES_PASSWORD"}
    for match in REFERENCE.finditer(raw_compose()):
        assert ":?" in match[0], f"{match[0]} has a default: compose would start without .env"
    compose = yaml.safe_load(raw_compose())["services"]
    holders = {
        secret: sorted(n for n, s in compose.items() if secret in str(s.get("environment")))
        for secret in ("AUTH_JWT_SECRET", "PROVIDER_API_KEY")
    }
    assert holders["AUTH_JWT_SECRET"] == ["orders", "stock"]
    assert holders["PROVIDER_API_KEY"] == ["payments", "provider"]
    assert "postgres:postgres@" not in raw_compose()


def test_each_database_password_goes_to_its_login_and_the_migrate_job_only(
    services: dict[str, Service],
) -> None:
    """A service gets its own login's password, a relay those of the outboxes' relays, the
    migrate job all of them (it sets them); only it and the provider simulator get the
    superuser's."""
    holders = {
        name: sorted(
            n for n, s in services.items() if SAMPLE_ENV[name] in str(s.get("environment", {}))
        )
        for name in SECRETS
        if name.startswith(("DATABASE_PASSWORD_", "POSTGRES_PASSWORD"))
    }
    for service in SYSTEM.names:
        assert holders[password_variable(service)] == sorted(["migrate", service])
        relay = password_variable(relay_login(service))
        assert holders[relay] == ["migrate", "relay-a", "relay-b"]
    assert holders["POSTGRES_PASSWORD"] == ["migrate", "postgres", "provider"]


def test_two_relay_instances_for_active_and_hot_standby(services: dict[str, Service]) -> None:
    relays = [n for n, s in project(services).items() if argv(s) == ["sagactl", "relay"]]
    assert len(relays) == 2, relays


def test_migrate_runs_once_postgres_is_healthy(services: dict[str, Service]) -> None:
    assert argv(services["migrate"]) == ["sagactl", "prepare"]
    assert depends_on(services["migrate"]).get("postgres") == "service_healthy"
    assert str(services["migrate"].get("restart", "no")) in ("no", "False")


def test_every_project_container_waits_for_migrate_and_kafka(
    services: dict[str, Service],
) -> None:
    for name, service in project(services).items():
        if name == "migrate":
            continue
        deps = depends_on(service)
        assert deps.get("migrate") == "service_completed_successfully", name
        assert deps.get("kafka") == "service_healthy", name


def test_infra_images_are_pinned_and_health_checked(services: dict[str, Service]) -> None:
    assert services["kafka"]["image"] == f"apache/kafka:{DEFAULT_KAFKA_VERSION}"
    for name in ("kafka", "postgres"):
        image, _, tag = services[name]["image"].partition(":")
        assert tag and tag != "latest", f"{name} image {image} is not pinned"
        assert "healthcheck" in services[name], f"{name} has no healthcheck"


def test_project_containers_get_the_infra_addresses(services: dict[str, Service]) -> None:
    for name, service in project(services).items():
        assert set(environment(service)) >= ENV_VARS, name


def test_env_urls_point_at_the_compose_infra(services: dict[str, Service]) -> None:
    pg_env = environment(services["postgres"])
    kafka_env = environment(services["kafka"])
    for name, service in project(services).items():
        env = environment(service)
        match = re.fullmatch(
            r"postgresql://(?:(\w+):([\w-]+)@)?postgres:5432/(\w+)", env["DATABASE_URL"]
        )
        assert match, env["DATABASE_URL"]
        # The superuser for the migrate job and the provider simulator; every other process
        # logs in as its own role (no user in the URL: saga_runtime.db_logins).
        admin = name in ("migrate", "provider")
        assert match.groups() == (
            pg_env["POSTGRES_USER"] if admin else None,
            pg_env["POSTGRES_PASSWORD"] if admin else None,
            pg_env["POSTGRES_DB"],
        )
        # The broker's listener for the containers, where every client logs in.
        assert f"SASL_PLAINTEXT://{env['KAFKA_BOOTSTRAP_SERVERS']}" in kafka_env[
            "KAFKA_ADVERTISED_LISTENERS"
        ].split(",")
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT", name


def env_names(settings_class: type[Any]) -> set[str]:
    """The environment variables a pydantic-settings class reads."""
    from pydantic import AliasChoices

    prefix = str(settings_class.model_config.get("env_prefix", ""))
    names = set()
    for field_name, field in settings_class.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(c).upper() for c in alias.choices if isinstance(c, str))
        else:
            names.add(f"{prefix}{alias or field_name}".upper())
    return names


def test_every_env_var_compose_sets_is_read_by_the_code(services: dict[str, Service]) -> None:
    from pydantic_settings import BaseSettings

    read: set[str] = set()
    for module_name in SETTINGS_MODULES:
        module = importlib.import_module(module_name)
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj is not BaseSettings:
                read |= env_names(obj)
    # The login roles' passwords, which saga_runtime.db_logins reads; the Kafka principals',
    # which sagactl prepare sets (sagactl.broker_access).
    read |= {password_variable(login) for login in system_logins()}
    read |= {kafka_password_variable(p) for p in [*principals(SYSTEM), OPERATOR_PRINCIPAL]}
    for name, service in project(services).items():
        unknown = set(environment(service)) - read
        assert not unknown, f"{name} sets {sorted(unknown)}, which no settings class reads"


def dockerfile_stages() -> dict[str, str]:
    """The Dockerfile's stages by name, each with its text (``FROM ... AS name`` on)."""
    text = (REPO / "Dockerfile").read_text()
    parts = re.split(r"^(FROM \S+ AS (\w+))$", text, flags=re.M)
    return {parts[i + 1]: parts[i] + parts[i + 2] for i in range(1, len(parts), 3)}


def test_image_entrypoint_is_sagactl(services: dict[str, Service]) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim AS base$", dockerfile, re.M)
    for target in (PRODUCT_TARGET, HARNESS_TARGET):
        assert re.search(r'^ENTRYPOINT \["sagactl"\]$', dockerfile_stages()[target], re.M)
    for name, service in project(services).items():
        assert _as_list(service.get("entrypoint")) == ["sagactl"], name


def target(service: Service) -> str | None:
    build = service["build"]
    return None if isinstance(build, str) else build.get("target")


def test_the_production_image_is_the_product_alone() -> None:
    """The default target (the last stage) installs the product's wheel and nothing else; the
    harness's wheel goes only into the ``dev`` target."""
    stages = dockerfile_stages()
    assert list(stages)[-1] == PRODUCT_TARGET, "docker build without --target builds the last"
    product_wheel, harness_wheel = "/wheels/saga_outbox-*.whl", "/wheels/saga_outbox_harness-*.whl"
    assert product_wheel in stages[PRODUCT_TARGET]
    assert "harness" not in stages[PRODUCT_TARGET]
    assert product_wheel in stages[HARNESS_TARGET] and harness_wheel in stages[HARNESS_TARGET]
    assert "/src/harness" in stages["wheels"]


def test_only_the_simulators_run_the_harness_image(services: dict[str, Service]) -> None:
    for name, service in project(services).items():
        expected = HARNESS_TARGET if name in SIMULATORS else PRODUCT_TARGET
        assert target(service) == expected, name
    assert {target(s) for s in project(services).values()} == {PRODUCT_TARGET, HARNESS_TARGET}
    images = {name: s["image"] for name, s in project(services).items()}
    assert len({images[n] for n in SIMULATORS}) == 1
    assert not {images[n] for n in SIMULATORS} & {
        image for n, image in images.items() if n not in SIMULATORS
    }, "the two targets must not share an image tag"


def test_every_container_runs_a_command_its_image_has(
    services: dict[str, Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Product containers run product commands (``sagactl`` without the harness's entry
    points); the simulators run commands that the harness adds."""
    from sagactl import cli

    def commands() -> set[str]:
        parser = cli.build_parser()
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return set(sub.choices)

    with_harness = commands()
    monkeypatch.setattr(cli, "installed_command_groups", lambda: [])
    product = commands()
    for name, service in project(services).items():
        command = argv(service)[1]
        if name in SIMULATORS:
            assert command in with_harness - product, name
        else:
            assert command in product, name


def _default(settings_class: type[Any], field_name: str) -> int:
    return int(settings_class.model_fields[field_name].default)


def _readyz_port(service: str) -> int:
    """Where a service serves /readyz by default: its API's port, or else a port of its own."""
    settings: Any = composition_root(SYSTEM, service).Settings
    return _default(settings, "port" if "port" in settings.model_fields else "health_port")


def test_every_process_container_is_health_checked_on_the_port_it_serves_readyz(
    services: dict[str, Service],
) -> None:
    """The healthcheck fetches /readyz where the process serves it (its settings' defaults),
    with python (the image has no curl); a refused connection or a 503 fails it."""
    from outbox_relay.settings import RelayProcessSettings
    from simulators.payment_provider.settings import ProviderSettings

    served = {("run", name): _readyz_port(name) for name in SERVICE_PACKAGES}
    served |= {
        # Off by default (an active relay and its standby may share a host): compose sets it.
        ("relay",): _default(RelayProcessSettings, "health_port"),
        ("provider",): _default(ProviderSettings, "port"),
    }
    checked = 0
    for name, service in project(services).items():
        command = tuple(argv(service)[1:])
        if command not in served:
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test is not None, f"{name} has no healthcheck"
        assert test[:3] == ["CMD", "python", "-c"], test
        compile(test[3], f"{name} healthcheck", "exec")
        port = served[command]
        if command == ("relay",):
            assert port == 0
            port = int(environment(service).get("RELAY_HEALTH_PORT", 0))
        assert port, f"{name} serves no health port"
        assert f"urlopen('http://127.0.0.1:{port}/readyz'" in test[3], name
        checked += 1
    assert checked == len(SERVICE_PACKAGES) + 3  # the services, two relays, the provider
    assert len(set(served.values())) == len(served), "two processes on one port"


def test_compose_prometheus_scrapes_every_process_of_the_product_where_it_serves_metrics(
    services: dict[str, Service],
) -> None:
    """Each service and relay container is a target of compose's Prometheus, at its API
    port or at the metrics port it is given (on an address another container reaches)."""
    prometheus = services["prometheus"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    config = yaml.safe_load((REPO / mounted["/etc/prometheus/prometheus.yml"]).read_text())
    assert (REPO / mounted["/etc/prometheus/rules.yml"]) == REPO / "deploy/prometheus/rules.yml"
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]
    }
    product = {
        name: s for name, s in project(services).items() if argv(s)[1:2] in (["run"], ["relay"])
    }
    assert set(targets) == set(product)
    for name, service in product.items():
        env = environment(service)
        prefix = "RELAY" if argv(service) == ["sagactl", "relay"] else name.upper()
        port = env.get(f"{prefix}_METRICS_PORT") or str(PUBLISHED_PORTS[name])
        assert targets[name] == f"{name}:{port}"
        if f"{prefix}_METRICS_PORT" in env:
            assert env[f"{prefix}_HEALTH_HOST"] == "0.0.0.0", name
