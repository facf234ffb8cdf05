"""The whole system as separate OS processes: for the e2e tests, the chaos harness and benchmarks.

Every process runs ``python -m sagactl ...`` with its own log file, against a
database and a topic prefix of its own, so one system never sees another's data.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from psycopg import sql

from migrations import upgrade
from saga_harness.checkout import PYTHONPATH, REPO
from saga_harness.infra.kafka_sasl import ADMIN_PRINCIPAL
from saga_harness.kafka_logins import (
    derived_passwords,
    provision_access,
    relay_login,
    service_login,
)
from saga_harness.logins import drop_login_roles, login_passwords, passwords_for, without_user
from saga_harness.tokens import Tokens
from saga_runtime import KafkaSettings, composition_root, ensure_topics
from saga_system import SYSTEM
from sagactl.invariants import Charge, Refund, Violation, check, load_snapshot
from sagactl.ops.ledger import fetch_ledger
from stock.catalogue import seed

SERVICES = tuple(SYSTEM.names)
TERMINAL = ("SHIPPED", "CANCELLED")


def _has_api(service: str) -> bool:
    settings: Any = composition_root(SYSTEM, service).Settings
    return "port" in settings.model_fields


# Services without an HTTP API: /healthz and /readyz on <SERVICE>_HEALTH_PORT.
HEALTH_PORTED = tuple(name for name in SERVICES if not _has_api(name))


def with_database(url: str, name: str) -> str:
    """The same server as ``url``, another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


# Ports handed out to listeners come from below Linux's ephemeral range (32768-60999):
# a port the kernel picks for bind(0) is one it may next give an outgoing connection
# (to Kafka, PostgreSQL) before the process that was meant to listen on it starts.
_LISTEN_PORTS = range(20000, 32768)
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, never handed out before by this process."""
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.choice(_LISTEN_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_LISTEN_PORTS}")


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str] = field(repr=False)  # passwords: not in a failed test's report
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    # Where it serves /healthz and /readyz (http://host:port), if it does.
    health_url: str | None = None
    # Where it serves Prometheus's /metrics (host:port), if it does.
    metrics_address: str | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it until it exits
        self.popen = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=log, cwd=REPO, start_new_session=True
        )
        log.close()

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive:
            assert self.popen is not None
            self.popen.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> None:
        if not self.alive:
            return
        assert self.popen is not None
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait()


@dataclass
class System:
    """A running system; ``audit()`` runs the invariant checker over its data."""

    database_url: str = field(repr=False)  # the admin's, with its password
    kafka: KafkaSettings
    log_dir: Path
    env: dict[str, str] = field(repr=False)  # the same URL, the APIs' secrets
    ports: dict[str, int]
    processes: dict[str, Process] = field(default_factory=dict)
    # How ``sagactl`` logs in to a secured broker as an operator (``admin``): KAFKA_* variables
    # that no process of the system gets. Empty on a plain broker.
    operator_env: dict[str, str] = field(default_factory=dict)

    @cached_property
    def tokens(self) -> Tokens:
        """Customers' and an operator's headers for the system's APIs."""
        return Tokens.from_env(self.env)

    @property
    def provider_headers(self) -> dict[str, str]:
        """What payments sends the provider: its merchant key."""
        return {"Authorization": f"Bearer {self.env['PROVIDER_API_KEY']}"}

    @property
    def orders_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['orders']}"

    @property
    def stock_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['stock']}"

    @property
    def provider_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['provider']}"

    @property
    def mail_file(self) -> Path:
        return Path(self.env["SMTP_SINK_FILE"])

    def metrics_targets(self) -> dict[str, str]:
        """What Prometheus scrapes: process name -> ``host:port`` serving ``/metrics``."""
        return {
            name: process.metrics_address
            for name, process in self.processes.items()
            if process.metrics_address is not None
        }

    def start(self, names: Iterable[str] | None = None) -> None:
        for name in names or self.processes:
            self.processes[name].start()

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until every started process with health endpoints answers ``/readyz`` with 200.

        That is: its database answers and its consumers are in their groups and
        fetching (a relay: each outbox active or on standby); the SMTP sink, which
        has none, until it accepts connections.
        """
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            if process.popen is None:
                continue  # not started (a test that starts some of them)
            while not self._ready(process):
                dead = [p.name for p in self.processes.values() if p.popen and not p.alive]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"system not ready ({process.name}: {self.readiness(process.name)});"
                        f" dead: {dead}\n{self.tail()}"
                    )
                time.sleep(0.2)

    def readiness(self, name: str) -> str:
        """What ``name``'s ``/readyz`` says now (its JSON body, or why there is none)."""
        process = self.processes[name]
        if process.health_url is None:
            return "no health endpoints"
        try:
            return httpx.get(f"{process.health_url}/readyz", timeout=2).text
        except httpx.HTTPError as exc:
            return repr(exc)

    def _ready(self, process: Process) -> bool:
        if process.name == "smtp-sink":
            with socket.socket() as sock:
                sock.settimeout(2)
                return sock.connect_ex(("127.0.0.1", self.ports["smtp"])) == 0
        if process.health_url is None:
            return process.alive
        try:
            return httpx.get(f"{process.health_url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def tail(self, lines: int = 15) -> str:
        out = []
        for process in self.processes.values():
            text = process.log_path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {process.name} ---\n" + "\n".join(text))
        return "\n".join(out)

    def place_order(self, client: httpx.Client, **overrides: Any) -> dict[str, Any]:
        """Place an order as its customer (the body's ``customer_id``)."""
        body = order_request(**overrides)
        response = client.post(
            f"{self.orders_url}/orders",
            json=body,
            headers=self.tokens.customer(body["customer_id"]),
        )
        assert response.status_code == 202, response.text
        return dict(response.json())

    def wait_for_order(
        self,
        client: httpx.Client,
        order_id: str,
        statuses: Iterable[str] = TERMINAL,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        wanted = set(statuses)
        deadline = time.monotonic() + timeout
        while True:
            order = dict(
                client.get(
                    f"{self.orders_url}/orders/{order_id}", headers=self.tokens.operator()
                ).json()
            )
            if order["status"] in wanted:
                return order
            if time.monotonic() > deadline:
                raise AssertionError(f"order {order_id} stuck at {order}\n{self.tail()}")
            time.sleep(0.2)

    def ledger(self) -> tuple[list[Charge], list[Refund]]:
        """Approved charges and refunds (the same reading as ``sagactl audit``)."""
        return fetch_ledger(self.provider_url, api_key=self.env["PROVIDER_API_KEY"])

    def audit(self, *, require_drained: bool = True) -> list[Violation]:
        charges, refunds = self.ledger()
        with psycopg.connect(self.database_url) as conn:
            return check(
                load_snapshot(conn, charges=charges, refunds=refunds),
                require_drained=require_drained,
            )

    def wait_quiet(self, timeout: float = 60.0) -> list[Violation]:
        """Until the invariants hold (everything settled and drained), or the last violations."""
        deadline = time.monotonic() + timeout
        while True:
            violations = self.audit()
            if not violations or time.monotonic() > deadline:
                return violations
            time.sleep(0.5)


def order_request(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer_id": "cust-e2e",
        "email": "ada@example.com",
        "items": [{"sku": "KEYB-01", "quantity": 1}, {"sku": "CABLE-C", "quantity": 2}],
        "payment": {"card_token": "tok_visa"},
        "shipping_address": {
            "name": "Ada Lovelace",
            "line1": "12 St James's Square",
            "city": "London",
            "postal_code": "SW1Y 4JH",
            "country": "GB",
        },
    }
    body.update(overrides)
    return body


def build_system(
    *,
    admin_database_url: str,
    kafka_bootstrap: str,
    log_dir: Path,
    relays: int = 1,
    replicas: dict[str, int] | None = None,
    extra_env: dict[str, str] | None = None,
    kafka_super_user: dict[str, str] | None = None,
) -> System:
    """Create a database and topics of its own, seed the catalogue, describe every process.

    ``replicas``: how many processes run a service (default one), in one consumer group
    and sharing its effects; the first is named after the service, the others
    ``<service>-2``... Each has a port and a static group member name of its own.
    ``kafka_super_user`` (librdkafka login properties of a secured broker's super user): every
    process logs in as its own principal, with the system's ACLs (``secure_system``).
    """
    name = f"saga_sys_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_url = with_database(admin_database_url, name)
    upgrade(database_url)
    passwords = login_passwords(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        seed(conn)
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"s{uuid.uuid4().hex[:8]}."
    )
    logins: dict[str, dict[str, str]] = {}
    if kafka_super_user is not None:
        kafka, logins = secure_system(kafka, kafka_super_user)
    ensure_topics(kafka, SYSTEM.topics(kafka.topic_prefix))
    log_dir.mkdir(parents=True, exist_ok=True)
    ports = {
        name: free_port()
        for name in (
            "orders",
            "stock",
            "provider",
            "smtp",
            *(f"relay-{n}" for n in range(relays)),
            *HEALTH_PORTED,
            # /metrics of the processes without an HTTP API, on ports of their own.
            *(
                f"{name}-metrics"
                for name in (*HEALTH_PORTED, *(f"relay-{n}" for n in range(relays)))
            ),
        )
    }
    # Secrets of its own below: none inherited (a test session's database passwords neither,
    # nor, on a secured broker, the Kafka login of whoever builds the system).
    ignored = (
        "SAGA_",
        "RELAY_",
        "AUTH_",
        "DATABASE_PASSWORD_",
        *(("KAFKA_SASL_",) if logins else ()),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(ignored)}
    provider_key = secrets.token_urlsafe(24)
    env.update(
        # Secrets of its own, as production has: every API checks its callers.
        AUTH_JWT_SECRET=secrets.token_urlsafe(32),
        PROVIDER_API_KEY=provider_key,
        PAYMENTS_PROVIDER_API_KEY=provider_key,
        PYTHONPATH=PYTHONPATH,
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        KAFKA_TOPIC_PREFIX=kafka.topic_prefix,
        ORDERS_PORT=str(ports["orders"]),
        ORDERS_PENDING_TIMEOUT="10",
        ORDERS_DEADLINE_CHECK_INTERVAL="0.5",
        STOCK_PORT=str(ports["stock"]),
        PROVIDER_PORT=str(ports["provider"]),
        PROVIDER_SLOW_SECONDS="13",
        PAYMENTS_PROVIDER_URL=f"http://127.0.0.1:{ports['provider']}",
        PAYMENTS_PROVIDER_TIMEOUT="20",
        SMTP_SINK_PORT=str(ports["smtp"]),
        SMTP_SINK_FILE=str(log_dir / "mail.jsonl"),
        NOTIFICATIONS_SMTP_PORT=str(ports["smtp"]),
        SHIPMENTS_BOOKING_SECONDS="1.5",
        CONSUMER_BACKOFF_MAX="1.0",
        RELAY_POLL_INTERVAL="0.5",
        RELAY_LOCK_RETRY_INTERVAL="0.5",
        DATABASE_POOL_MAX_SIZE="4",
        **{f"{name.upper()}_HEALTH_PORT": str(ports[name]) for name in HEALTH_PORTED},
        **({"KAFKA_SECURITY_PROTOCOL": kafka.security_protocol} if logins else {}),
    )
    env.update(extra_env or {})
    system = System(
        database_url=database_url,
        kafka=kafka,
        log_dir=log_dir,
        env=env,
        ports=ports,
        operator_env=logins.pop("operator", {}),
    )
    base = [sys.executable, "-m", "sagactl"]

    def add(
        name: str,
        argv: list[str],
        *,
        health: int | None,
        metrics: int | None = None,
        service: str | None = None,
        **more: str,
    ) -> None:
        # As in production: services and relays log in as their own roles, with only their
        # own passwords; the simulators keep the admin's URL. A replica logs in as its service.
        logins = passwords_for(service or name, passwords)
        url = {"DATABASE_URL": without_user(database_url)} if logins else {}
        system.processes[name] = Process(
            name,
            argv,
            {**env, **logins, **url, **more},
            log_dir / f"{name}.log",
            health_url=None if health is None else f"http://127.0.0.1:{health}",
            metrics_address=None if metrics is None else f"127.0.0.1:{metrics}",
        )

    add("smtp-sink", [*base, "smtp-sink"], health=None)
    add("provider", [*base, "provider"], health=ports["provider"])
    for n in range(relays):
        name = f"relay-{n}"
        add(
            name,
            [*base, "relay"],
            health=ports[name],
            metrics=ports[f"{name}-metrics"],
            RELAY_NAME=name,
            RELAY_HEALTH_PORT=str(ports[name]),
            **logins.get("relay", {}),
            RELAY_METRICS_PORT=str(ports[f"{name}-metrics"]),
        )
    for service in SERVICES:
        login = logins.get(service, {})
        for n in range(1, (replicas or {}).get(service, 1) + 1):
            name = service if n == 1 else f"{service}-{n}"
            more = dict(login)
            if n > 1:
                ports[name] = free_port()
                more.update(_replica_env(service, n, ports[name], env))
            if service in HEALTH_PORTED:
                # A metrics port of its own, in its own environment only: a second process
                # started from ``system.env`` (a test's) must not take the same port.
                if n > 1:
                    ports[f"{name}-metrics"] = free_port()
                metrics = ports[f"{name}-metrics"]
                more[f"{service.upper()}_METRICS_PORT"] = str(metrics)
            else:  # an API serves /metrics itself
                metrics = ports[name]
            argv = [*base, "run", service]
            add(name, argv, health=ports[name], metrics=metrics, service=service, **more)
    return system


def _replica_env(service: str, n: int, port: int, env: dict[str, str]) -> dict[str, str]:
    """What replica ``n`` of ``service`` sets apart from the first: its port (the health
    port of a service without an API) and, for static members, its member name."""
    port_variable = (
        f"{service.upper()}_HEALTH_PORT"
        if service in HEALTH_PORTED
        else (f"{service.upper()}_PORT")
    )
    more = {port_variable: str(port)}
    if member := env.get("CONSUMER_GROUP_INSTANCE_ID"):
        more["CONSUMER_GROUP_INSTANCE_ID"] = f"{member}-{n}"
    return more


def secure_system(
    kafka: KafkaSettings, super_user: dict[str, str]
) -> tuple[KafkaSettings, dict[str, dict[str, str]]]:
    """Set the system's ACLs for its topic prefix on a secured broker (and delete those it no
    longer derives); return the super user's settings and each process's login environment
    (by service name, ``relay``, and ``operator``: sagactl's, as ``admin``).

    Principals are the same for every system on a broker, so their passwords are derived
    from the super user's: systems that run at once on one broker agree on them.
    """
    passwords = derived_passwords(super_user, SYSTEM)
    admin = provision_access(
        kafka.bootstrap_servers, super_user, SYSTEM, passwords, prefix=kafka.topic_prefix
    )
    logins = {s: service_login(s, passwords) for s in SYSTEM.consumers()}
    logins["relay"] = relay_login(SYSTEM, passwords)
    logins["operator"] = {
        **service_login(ADMIN_PRINCIPAL, passwords),
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    }
    return admin, logins


def drop_system_topics(kafka: KafkaSettings, *, timeout: float = 30.0) -> None:
    """Delete the topics of a system made by ``build_system`` (its own prefix), best effort.

    A broker that keeps every past run's topics spends its CPU on them: a
    benchmark stack grew to 600 partitions and lost throughput run after run.
    """
    if not kafka.topic_prefix:
        return  # never touch a shared, unprefixed namespace
    try:
        admin = AdminClient(kafka.client_properties())
        names = [
            t for t in admin.list_topics(timeout=timeout).topics if t.startswith(kafka.topic_prefix)
        ]
        for future in (
            admin.delete_topics(names, operation_timeout=timeout).values() if names else []
        ):
            future.result(timeout=timeout)
    except KafkaException:
        pass


def drop_system_database(admin_database_url: str, database_url: str) -> None:
    name = database_url.rsplit("/", 1)[-1]
    try:
        with psycopg.connect(admin_database_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            drop_login_roles(conn, name)
    except psycopg.OperationalError:
        pass
