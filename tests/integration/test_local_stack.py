"""The locally provisioned stack: idempotent provisioning, a broker that survives a crash, and a
PostgreSQL that checks passwords (a data dir from before, which trusted loopback, upgraded).

Only meaningful when the session's infra is local (see tests/fixtures/infra.py); with env or
Docker infra these tests skip, since there is no local daemon to inspect or kill.
"""

from __future__ import annotations

import stat
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from saga_harness.infra import (
    InfraError,
    LocalStack,
    ensure_stack,
    wait_for_kafka,
    wait_for_postgres,
)
from saga_harness.infra.postgres import postgres_url
from saga_harness.infra.postgres_auth import HBA
from saga_harness.infra.proc import cmdline
from tests.fixtures.infra import infra_mode

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> LocalStack:
    if infra_mode() != "local":
        pytest.skip(f"needs locally provisioned infra, session uses '{infra_mode()}'")
    local: LocalStack = request.getfixturevalue("local_stack")
    return local


def _brokers_for(stack: LocalStack) -> list[int]:
    """Pids of Kafka JVMs started with this state dir's server.properties."""
    marker = str(stack.kafka.home / "server.properties")
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and marker in cmdline(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def test_ensure_stack_is_idempotent(stack: LocalStack) -> None:
    kafka_pid, pg_pid = stack.kafka.pid, stack.postgres.pid
    assert kafka_pid is not None and pg_pid is not None

    again = ensure_stack(
        state_dir=stack.state_dir,
        pg_port=stack.postgres.port,
        kafka_port=stack.kafka.port,
        kafka_controller_port=stack.kafka.controller_port,
        database=stack.database,
        kafka_version=stack.kafka.version,
        kafka_secured=stack.kafka.secured,
        log=lambda _msg: None,
    )

    assert again == stack.addresses
    assert (stack.kafka.pid, stack.postgres.pid) == (kafka_pid, pg_pid)
    assert _brokers_for(stack) == [kafka_pid]
    with psycopg.connect(again.database_url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (stack.database,)


def test_broker_comes_back_after_sigkill_with_its_data(stack: LocalStack) -> None:
    bootstrap = stack.kafka.bootstrap
    login = stack.kafka.admin_properties()  # the super user's, when it is secured
    topic = f"infra-crash-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap, **login})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)

    producer = Producer({"bootstrap.servers": bootstrap, **login, "acks": "all"})
    delivered: list[KafkaError | None] = []
    producer.produce(
        topic, key=b"k", value=b"survives", on_delivery=lambda e, _m: delivered.append(e)
    )
    assert producer.flush(30) == 0 and delivered == [None]

    try:
        stack.kafka.kill()
        assert not stack.kafka.is_running()
        stack.kafka.start()
        assert stack.kafka.is_running()
        wait_for_kafka(bootstrap, timeout=30, config=login)
    finally:
        if not stack.kafka.is_running():  # leave a working broker for the rest of the session
            stack.kafka.start()

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            **login,
            "group.id": f"infra-crash-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        value = None
        while value is None and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                value = msg.value()
        assert value == b"survives"
    finally:
        consumer.close()


# pg_hba.conf as ``initdb --auth=trust`` wrote it before the local server checked passwords.
TRUST_HBA = """\
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            trust
host    replication     all             ::1/128                 trust
"""


def _logs_in(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError as exc:
        assert "password" in str(exc)  # refused for its password, not unreachable
        return False


def test_the_superuser_logs_in_only_with_its_password_which_only_its_owner_reads(
    stack: LocalStack,
) -> None:
    postgres = stack.postgres
    assert _logs_in(stack.addresses.admin_database_url)
    assert not _logs_in(postgres_url(port=postgres.port, database="postgres"))
    assert not _logs_in(postgres_url(port=postgres.port, database="postgres", password="guess"))
    # Told at once, not after the minute a server gets to start up.
    with pytest.raises(InfraError, match="refused the login"):
        wait_for_postgres(postgres_url(port=postgres.port, database="postgres"))
    for secret in (postgres.password_file, stack.state_dir / "stack.json"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert (postgres.data_dir / "pg_hba.conf").read_text() == HBA


def test_a_data_dir_that_trusted_loopback_is_upgraded_in_place(stack: LocalStack) -> None:
    postgres = stack.postgres
    hba, log = postgres.data_dir / "pg_hba.conf", postgres.log
    passwordless = postgres_url(port=postgres.port, database=stack.database)
    table = f"kept_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.addresses.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} AS SELECT 'before' AS v")
        # As before: trust on loopback, no superuser password.
        conn.execute("ALTER ROLE postgres PASSWORD NULL")
        hba.write_text(TRUST_HBA)
        conn.execute("SELECT pg_reload_conf()")
    try:
        deadline = time.monotonic() + 10
        while not _logs_in(passwordless) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _logs_in(passwordless)
        pid = postgres.pid
        said: list[str] = []
        postgres.log = said.append

        assert postgres.start() is False  # found running: upgraded without a restart

        assert postgres.pid == pid and hba.read_text() == HBA
        assert not _logs_in(passwordless)
        with psycopg.connect(stack.addresses.database_url) as conn:
            assert conn.execute(f"SELECT v FROM {table}").fetchall() == [("before",)]
        password = postgres.password_file.read_text().strip()
        assert said and not any(password in line for line in said)
    finally:
        postgres.log = log
        postgres.start()  # a working, password-checking server for the rest of the session
        with psycopg.connect(stack.addresses.database_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
