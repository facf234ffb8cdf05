"""UnitOfWork.lock: one round trip per aggregate and transaction."""

from __future__ import annotations

from typing import Any

from saga_runtime import Outbox, UnitOfWork


class CountingConnection:
    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []

    def execute(self, query: str, params: Any = None) -> None:
        self.statements.append((query, params))


def unit_of_work() -> tuple[UnitOfWork, CountingConnection]:
    conn = CountingConnection()
    uow = UnitOfWork(conn=conn, outbox=Outbox(schema="orders", topic="t"), producer="orders")  # type: ignore[arg-type]
    return uow, conn


def test_locking_an_aggregate_twice_sends_one_statement() -> None:
    uow, conn = unit_of_work()
    uow.lock("order-1")
    uow.lock("order-1")
    uow.lock("order-2")
    assert [params for _, params in conn.statements] == [("orders:order-1",), ("orders:order-2",)]


def test_an_aggregate_locked_by_the_inbox_statement_is_not_locked_again() -> None:
    uow, conn = unit_of_work()
    uow.locked.add("order-1")  # as the consumer does after its inbox statement took the lock
    uow.lock("order-1")
    assert conn.statements == []
