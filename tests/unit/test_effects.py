"""Effects without a database: retry schedule, failure classification, usage errors."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from psycopg.pq import TransactionStatus

from saga_runtime import (
    ConfigurationError,
    EffectKind,
    Effects,
    EffectUsageError,
    Outbox,
    RetryableError,
    RetryPolicy,
    RetryUntilDoneError,
    UnitOfWork,
    effects_ddl,
    is_retryable,
)


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def test_delays_double_from_the_initial_interval_up_to_the_cap_with_jitter() -> None:
    policy = RetryPolicy(initial_interval=seconds(1), maximum_interval=seconds(10))
    for attempt, nominal in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (50, 10), (5000, 10)]:
        delay = policy.delay(attempt)
        assert 0.8 * nominal <= delay <= nominal, (attempt, delay)


def test_attempts_are_unbounded_unless_a_maximum_is_set() -> None:
    assert RetryPolicy().attempts_left(10_000)
    bounded = RetryPolicy(maximum_attempts=3)
    assert bounded.attempts_left(2)
    assert not bounded.attempts_left(3)


@pytest.mark.parametrize(
    "options",
    [
        {"initial_interval": seconds(0)},
        {"initial_interval": seconds(5), "maximum_interval": seconds(1)},
        {"backoff_coefficient": 0.5},
        {"maximum_attempts": 0},
    ],
)
def test_a_nonsensical_policy_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**options)


def test_only_retryable_errors_are_retried() -> None:
    assert is_retryable(RetryableError("503"))
    assert is_retryable(RetryUntilDoneError("503"))
    assert not is_retryable(ValueError("declined"))
    assert not is_retryable(KeyError("bug"))


class FakeConnection:
    """Records statements; ``execute`` answers with ``rows`` in turn."""

    def __init__(self, *, in_transaction: bool = True, rows: list[Any] | None = None) -> None:
        status = TransactionStatus.INTRANS if in_transaction else TransactionStatus.IDLE
        self.info = SimpleNamespace(transaction_status=status)
        self.statements: list[tuple[str, Any]] = []
        self.rows = list(rows or [])

    def execute(self, query: str, params: Any = None) -> Any:
        self.statements.append((query, params))
        row = self.rows.pop(0) if self.rows else None
        return SimpleNamespace(fetchone=lambda: row, fetchall=lambda: row or [])


def ping_effects() -> Effects:
    kind = EffectKind(name="ping", call=lambda request, key: {}, on_outcome=lambda *_: None)
    return Effects(schema="things", kinds=[kind])


def test_an_undeclared_kind_is_refused() -> None:
    with pytest.raises(EffectUsageError, match=r"no effect kind 'pong'.*declared: ping"):
        ping_effects().request(FakeConnection(), "pong", aggregate_id="a", key="k", request={})


def test_an_effect_outside_a_transaction_is_refused() -> None:
    conn = FakeConnection(in_transaction=False)
    with pytest.raises(EffectUsageError, match="inside the deciding transaction"):
        ping_effects().request(conn, "ping", aggregate_id="a", key="k", request={})  # type: ignore[arg-type]
    assert conn.statements == []


def test_a_repeated_key_returns_the_first_effect_unless_it_names_another() -> None:
    effects = ping_effects()
    again = FakeConnection(rows=[[], [("k", 7, "ping", "a")]])
    assert effects.request(again, "ping", aggregate_id="a", key="k", request={}) == 7  # type: ignore[arg-type]
    other = FakeConnection(rows=[[], [("k", 7, "ping", "b")]])
    with pytest.raises(EffectUsageError, match="already names a ping effect of aggregate b"):
        effects.request(other, "ping", aggregate_id="a", key="k", request={})  # type: ignore[arg-type]


def test_effects_are_recorded_in_one_statement_and_ids_come_back_in_request_order() -> None:
    effects = ping_effects()
    wanted = [
        effects.prepare("ping", aggregate_id=a, key=k, request={"n": n})
        for n, (a, k) in enumerate([("a", "k1"), ("b", "k2"), ("a", "k3"), ("b", "k2")])
    ]
    # k2 asked twice (one row), k3 recorded before (looked up with one more statement).
    conn = FakeConnection(rows=[[("k2", 11), ("k1", 10)], [("k3", 4, "ping", "a")]])
    assert effects.add_many(conn, wanted) == [10, 11, 4, 11]  # type: ignore[arg-type]
    (insert, params), (lookup, lookup_params) = conn.statements
    assert "INSERT INTO" in insert and "ORDER BY u.n" in insert
    assert params[2] == ["k1", "k2", "k3"] and params[0] == ["a", "b", "a"]
    assert "idempotency_key = ANY" in lookup and lookup_params == (["k3"],)


def test_requesting_an_effect_locks_the_aggregate_first_and_writes_it_at_flush() -> None:
    conn = FakeConnection(rows=[None, [("k", 3)]])
    uow = UnitOfWork(
        conn=conn,  # type: ignore[arg-type]
        outbox=Outbox(schema="things", topic="t"),
        producer="things",
        effects=ping_effects(),
    )
    uow.request_effect("ping", aggregate_id="a", key="k", request={"n": 1})
    ((lock, lock_params),) = conn.statements
    assert "pg_advisory_xact_lock" in lock and lock_params == ("things:a",)
    assert uow.requested == []
    uow.flush()
    _, (insert, insert_params) = conn.statements
    assert "INSERT INTO" in insert
    assert insert_params[:5] == (["a"], ["ping"], ["k"], ['{"n": 1}'], [None])
    assert insert_params[5] == [timedelta(minutes=10)]  # the kind's deadline
    assert uow.requested == [3]


def test_a_unit_of_work_without_an_effects_table_refuses_effects() -> None:
    uow = UnitOfWork(conn=FakeConnection(), outbox=Outbox(schema="x", topic="t"), producer="x")  # type: ignore[arg-type]
    with pytest.raises(EffectUsageError, match="no effects table"):
        uow.request_effect("ping", aggregate_id="a", key="k", request={})


def test_subscribed_executors_are_poked_until_they_unsubscribe() -> None:
    effects = ping_effects()
    pokes: list[str] = []

    def nudge() -> None:
        pokes.append("poke")

    effects.subscribe(nudge)
    effects.poke()
    effects.unsubscribe(nudge)
    effects.poke()
    assert pokes == ["poke"]


def test_the_ddl_names_only_a_valid_schema() -> None:
    assert any("CREATE TABLE things.effects" in statement for statement in effects_ddl("things"))
    with pytest.raises(ConfigurationError):
        effects_ddl("things; DROP TABLE x")
