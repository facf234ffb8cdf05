"""A toy service with a declared effect, run by ``build_runtime`` on the real broker and
database: an event in, an effect requested in the handler's transaction, the executor
calls a fake outside world, and the decision about the outcome emits an event into the
outbox, in the saga of the event that started it all."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from saga_harness.logins import login_passwords
from saga_runtime import (
    DatabaseSettings,
    Effect,
    EffectOutcome,
    EffectSettings,
    Envelope,
    Event,
    KafkaSettings,
    Service,
    ServiceRuntime,
    ServiceSettings,
    System,
    UnitOfWork,
    build_runtime,
    effect,
    effects_ddl,
    ensure_topics,
    events_topic,
    faults,
    grant_service_logins,
    login_role,
    reaction,
    relay_login,
)
from saga_runtime.testing import HandlerRunner
from tests.fixtures.kafka import produce
from tests.integration.effects_stack import OutsideWorld
from tests.support import wait_until

pytestmark = pytest.mark.integration


class PingRequested(Event):
    event_type = "PingRequested"
    target: str


class Ponged(Event):
    event_type = "Ponged"
    answer: str


def on_ping_requested(uow: UnitOfWork, envelope: Envelope) -> None:
    target = envelope.payload_as(PingRequested).target
    uow.request_effect(
        "ping",
        aggregate_id=envelope.aggregate_id,
        key=f"ping:{envelope.event_id}",
        request={"target": target},
    )


def ping(request: dict[str, Any], key: str, *, world: OutsideWorld) -> dict[str, Any]:
    return world.call(request, key)


def on_pinged(
    uow: UnitOfWork, effect: Effect, outcome: EffectOutcome, *, world: OutsideWorld
) -> None:
    world.on_outcome(uow, effect, outcome)
    answer = outcome.result["answer"] if outcome.ok else f"failed: {outcome.error}"
    uow.emit(Ponged(answer=str(answer)), aggregate_id=effect.aggregate_id)


def toy_system(name: str) -> System:
    pinger = Service(name="pinger", emits=(PingRequested,))
    toy = Service(
        name=name,
        emits=(Ponged,),
        handles={PingRequested: reaction(on_ping_requested)},
        effects={"ping": effect(ping, on_pinged, emits=(Ponged,))},
    )
    return System(services=(pinger, toy), terminal=(Ponged,))


@dataclass
class Toy:
    """The toy service's schema and role (named alike), and an admin connection."""

    name: str
    admin: psycopg.Connection

    def select(self, table: str, columns: str) -> list[tuple[Any, ...]]:
        query = sql.SQL("SELECT {} FROM {} ORDER BY id").format(
            sql.SQL(columns), sql.Identifier(self.name, table)
        )
        return self.admin.execute(query).fetchall()


@pytest.fixture
def toy(database: DatabaseSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Toy]:
    """A sixth service's role and schema: the runtime tables (like orders') and effects."""
    name = f"toy_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(database.url, autocommit=True)
    role = sql.Identifier(name)
    admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(role))
    try:
        admin.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(role, role))
        for table in ("outbox", "inbox", "dead_letters"):
            admin.execute(
                sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                    sql.Identifier(name, table), sql.Identifier("orders", table)
                )
            )
        for statement in effects_ddl(name):
            admin.execute(statement)  # type: ignore[call-overload]
        # Owned by the service's role, as a migration creates them (sequences follow).
        for table in ("outbox", "inbox", "dead_letters", "effects"):
            admin.execute(
                sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(name, table), role)
            )
        grant_service_logins(admin.execute, name)  # type: ignore[arg-type]
        # Its logins' passwords, in the environment as the product's are (the server checks).
        for variable, password in login_passwords(database.url, [name, relay_login(name)]).items():
            monkeypatch.setenv(variable, password)
        yield Toy(name=name, admin=admin)
    finally:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(role))
        for login in (name, relay_login(name)):
            admin.execute(
                sql.SQL("DROP ROLE IF EXISTS {}").format(
                    sql.Identifier(login_role(database.url, login))
                )
            )
        admin.execute(sql.SQL("DROP ROLE {}").format(role))
        admin.close()


def runtime_for(
    toy: Toy, database: DatabaseSettings, kafka: KafkaSettings, world: OutsideWorld
) -> ServiceRuntime:
    ensure_topics(kafka, [events_topic(name, kafka.topic_prefix) for name in ("pinger", toy.name)])
    settings = ServiceSettings(
        kafka=kafka,
        database=database,
        effects=EffectSettings(poll_interval=0.2, lease=5.0, concurrency=4),
    )
    return build_runtime(toy_system(toy.name), toy.name, settings, {"world": world})


class Running:
    """``run_consumer`` on a thread of its own; its exit code once it returns."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.exit_code = self.runtime.run_consumer(install_signal_handlers=False)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.runtime.stop_consumers()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the service did not stop"
        self.runtime.close()


def send(kafka: KafkaSettings, event: Envelope) -> None:
    produce(
        kafka,
        events_topic("pinger", kafka.topic_prefix),
        [(event.aggregate_id.encode(), event.to_bytes())],
    )


def test_an_event_in_an_effect_called_and_its_outcome_decided_into_the_outbox(
    toy: Toy, database: DatabaseSettings, kafka: KafkaSettings
):
    world = OutsideWorld(answer=lambda request, key: {"answer": f"pong from {request['target']}"})
    runtime = runtime_for(toy, database, kafka, world)
    assert runtime.executor is not None
    started = Envelope.new(PingRequested(target="far"), aggregate_id="p-1", producer="pinger")
    with Running(runtime) as running:
        send(kafka, started)
        wait_until(lambda: toy.select("outbox", "event_type") == [("Ponged",)], timeout=30)
        send(kafka, started)  # a redelivery: applied once, so called once
        # The same aggregate, so the same partition: applied after the redelivery.
        second = Envelope.new(PingRequested(target="near"), aggregate_id="p-1", producer="pinger")
        send(kafka, second)
        wait_until(lambda: len(toy.select("outbox", "event_type")) == 2, timeout=30)
    assert running.exit_code == 0
    assert world.keys_called() == [f"ping:{started.event_id}", f"ping:{second.event_id}"]
    [(status, attempts, request, correlation_id), _] = toy.select(
        "effects", "status, attempts, request, correlation_id"
    )
    assert (status, attempts, request) == ("done", 1, {"target": "far"})
    [(envelope, outbox_correlation), _] = toy.select("outbox", "envelope, correlation_id")
    assert envelope["payload"] == {"answer": "pong from far"}
    # The saga goes on: the effect and the event its outcome caused carry its id.
    assert correlation_id == outbox_correlation == started.correlation_id


def test_a_dead_executor_takes_the_service_down(
    toy: Toy, database: DatabaseSettings, kafka: KafkaSettings, monkeypatch: pytest.MonkeyPatch
):
    world = OutsideWorld(answer=lambda request, key: {"answer": "pong"})
    runtime = runtime_for(toy, database, kafka, world)
    monkeypatch.setattr(faults, "_POINTS", {"raise:effects.after_call": 1.0})
    with Running(runtime) as running:
        send(
            kafka, Envelope.new(PingRequested(target="far"), aggregate_id="p-1", producer="pinger")
        )
        wait_until(lambda: not running.thread.is_alive(), timeout=30, what="the service to stop")
    assert running.exit_code == 1
    assert world.keys_called() != []
    assert toy.select("outbox", "event_type") == []


def test_the_handler_runner_records_effects_and_settles_them_as_the_executor_would(
    toy: Toy, database: DatabaseSettings
) -> None:
    """``saga_runtime.testing``: a reaction's effects land in the real table; ``settle``
    makes the declared call and decides its outcome in the effect's saga."""
    world = OutsideWorld(answer=lambda request, key: {"answer": request["target"].upper()})
    service = toy_system(toy.name).service(toy.name)
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(toy.name)))
        runner = HandlerRunner(service, conn, dependencies={"world": world})
        envelope = Envelope.new(PingRequested(target="x"), aggregate_id="a-1", producer="pinger")

        delivered = runner.deliver(envelope)
        assert [(e.kind, e.request) for e in delivered.effects] == [("ping", {"target": "x"})]
        assert delivered.emitted == () and world.keys_called() == []
        assert runner.apply(envelope).effects == delivered.effects, "requested once per key"

        settled = runner.settle()
        assert world.keys_called() == [f"ping:{envelope.event_id}"]
        assert settled.event_types == ["Ponged"]
        assert settled.emitted[0].correlation_id == envelope.correlation_id
        assert runner.due_effects() == []
        assert toy.select("effects", "status") == [("done",)]

        runner.deliver(Envelope.new(PingRequested(target="y"), aggregate_id="a-2", producer="p"))
        failed = runner.settle(outcome=EffectOutcome(ok=False, error="gave up"))
        assert failed.event_types == ["Ponged"]
        assert toy.select("effects", "status, last_error") == [
            ("done", None),
            ("failed", "gave up"),
        ]
        assert runner.settle_all() == []
