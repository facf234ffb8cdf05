"""An effects table in a schema of its own, and a recording fake of the outside world.

Shared by the effect executor's integration tests (imported, not a plugin: only
they use it).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from saga_runtime import (
    DatabaseSettings,
    Effect,
    EffectExecutor,
    EffectKind,
    EffectOutcome,
    Effects,
    EffectSettings,
    Outbox,
    UnitOfWork,
    UnitOfWorkFactory,
    Worker,
    Workers,
    create_pool,
    effects_ddl,
)


@dataclass
class Stack:
    """One test's schema (effects and outbox tables), its pool and an admin connection."""

    schema: str
    pool: ConnectionPool
    admin: psycopg.Connection

    def factory(self, effects: Effects) -> UnitOfWorkFactory:
        outbox = Outbox(schema=self.schema, topic=f"{self.schema}.events")
        return UnitOfWorkFactory(
            pool=self.pool, outbox=outbox, producer=self.schema, effects=effects
        )

    def rows(self) -> list[dict[str, Any]]:
        cur = self.admin.cursor(row_factory=psycopg.rows.dict_row)
        query = sql.SQL("SELECT * FROM {} ORDER BY id").format(
            sql.Identifier(self.schema, "effects")
        )
        return cur.execute(query).fetchall()

    def statuses(self) -> list[str]:
        return [row["status"] for row in self.rows()]

    def outbox_types(self) -> list[str]:
        query = sql.SQL("SELECT event_type FROM {} ORDER BY id").format(
            sql.Identifier(self.schema, "outbox")
        )
        return [row[0] for row in self.admin.execute(query).fetchall()]


@pytest.fixture
def effects_stack(database: DatabaseSettings) -> Iterator[Stack]:
    """A fresh schema with ``effects_ddl``'s table and an outbox, dropped afterwards."""
    schema = f"effects_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(database.url, autocommit=True)
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    admin.execute(
        sql.SQL("CREATE TABLE {} (LIKE orders.outbox INCLUDING ALL)").format(
            sql.Identifier(schema, "outbox")
        )
    )
    for statement in effects_ddl(schema):
        admin.execute(statement)  # type: ignore[call-overload]
    pool = create_pool(
        database.model_copy(update={"pool_max_size": 8}), role=None, name="test-effects"
    )
    try:
        yield Stack(schema=schema, pool=pool, admin=admin)
    finally:
        pool.close()
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        admin.close()


@dataclass
class OutsideWorld:
    """A fake far side: records every call (key, start, end) and every outcome heard."""

    answer: Callable[[dict[str, Any], str], dict[str, Any]] = lambda request, key: {"key": key}
    calls: list[tuple[str, float, float]] = field(default_factory=list)
    outcomes: list[tuple[str, EffectOutcome]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, request: dict[str, Any], key: str) -> dict[str, Any]:
        start = time.monotonic()
        try:
            return self.answer(request, key)
        finally:
            with self.lock:
                self.calls.append((key, start, time.monotonic()))

    def on_outcome(self, uow: UnitOfWork, effect: Effect, outcome: EffectOutcome) -> None:
        with self.lock:
            self.outcomes.append((effect.key, outcome))

    def keys_called(self) -> list[str]:
        with self.lock:
            return [key for key, _, _ in self.calls]

    def keys_heard(self) -> list[str]:
        with self.lock:
            return [key for key, _ in self.outcomes]

    def kind(self, name: str = "ping", **options: Any) -> EffectKind:
        """A kind calling this fake; ``options`` override any field (``on_outcome``...)."""
        fields: dict[str, Any] = {"call": self.call, "on_outcome": self.on_outcome, **options}
        return EffectKind(name=name, **fields)


def fast(**overrides: Any) -> EffectSettings:
    """Executor settings for tests: short polls and leases unless overridden."""
    values: dict[str, Any] = {"poll_interval": 0.1, "lease": 5.0, "concurrency": 8}
    values.update(overrides)
    return EffectSettings(**values)


@contextmanager
def running(*executors: EffectExecutor) -> Iterator[Workers]:
    """Run executors as watched workers; stop them (and wait) at the end."""
    workers = Workers()
    for n, executor in enumerate(executors):
        workers.start(Worker(name=f"effects-{n}", run=executor.run, stop=executor.stop))
    try:
        yield workers
    finally:
        workers.stop()
        assert workers.join(30) == []


def request(
    factory: UnitOfWorkFactory, kind: str, *, aggregate_id: str, key: str, **payload: Any
) -> int:
    """Request one effect in a transaction of its own; its id."""
    with factory.begin() as uow:
        uow.request_effect(kind, aggregate_id=aggregate_id, key=key, request=payload)
    [effect_id] = uow.requested
    return effect_id
