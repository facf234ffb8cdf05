"""AggregateStates: states read per batch, written per batch, and seen as written meanwhile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from saga_runtime import AggregateStates, Outbox, UnitOfWork


@dataclass(frozen=True)
class Counter:
    id: str
    n: int


class Table:
    """A table of counters, counting the statements that read and write it."""

    def __init__(self, *counters: Counter) -> None:
        self.rows = {c.id: c for c in counters}
        self.loads: list[list[str]] = []
        self.writes: list[list[Counter]] = []

    def load_many(self, conn: Any, ids: list[str]) -> list[Counter]:
        self.loads.append(ids)
        return [self.rows[i] for i in ids if i in self.rows]

    def save_many(self, conn: Any, counters: list[Counter]) -> None:
        self.writes.append(counters)
        self.rows.update({c.id: c for c in counters})


def setup(*counters: Counter) -> tuple[AggregateStates[Counter], Table, UnitOfWork]:
    table = Table(*counters)
    states = AggregateStates(
        "counters", load_many=table.load_many, save_many=table.save_many, key=lambda c: c.id
    )
    uow = UnitOfWork(conn=object(), outbox=Outbox(schema="things", topic="t"), producer="things")  # type: ignore[arg-type]
    return states, table, uow


def test_the_first_read_loads_every_locked_aggregate_in_one_query() -> None:
    states, table, uow = setup(Counter("a", 1), Counter("b", 2))
    uow.locked.update({"b", "a", "c"})  # the batch's aggregates, locked by its inbox statement
    assert states.get(uow, "a") == Counter("a", 1)
    assert states.get(uow, "b") == Counter("b", 2)
    assert states.get(uow, "c") is None
    assert table.loads == [["a", "b", "c"]]


def test_a_saved_state_is_seen_by_the_next_event_and_written_once_at_flush() -> None:
    states, table, uow = setup(Counter("a", 1), Counter("b", 1))
    uow.locked.update({"a", "b"})
    for _ in range(3):  # three events about a, one about b
        states.save(uow, Counter("a", states.get(uow, "a").n + 1))  # type: ignore[union-attr]
    states.save(uow, Counter("b", 5))
    assert table.writes == [], "nothing written before the unit of work flushes"
    uow.flush()
    assert table.writes == [[Counter("a", 4), Counter("b", 5)]], "one statement, each once, last"
    assert table.loads == [["a", "b"]]


def test_an_aggregate_outside_the_locked_ones_is_loaded_alone() -> None:
    states, table, uow = setup(Counter("z", 9))
    assert states.get(uow, "z") == Counter("z", 9)
    assert states.get(uow, "z") == Counter("z", 9)
    assert table.loads == [["z"]]


def test_a_forgotten_aggregate_is_read_again() -> None:
    states, table, uow = setup(Counter("a", 1))
    states.get(uow, "a")
    table.rows["a"] = Counter("a", 7)  # written another way in this unit of work
    states.forget(uow, "a")
    assert states.get(uow, "a") == Counter("a", 7)


def test_states_not_keyed_by_the_batch_are_loaded_only_as_asked_and_once() -> None:
    table = Table(Counter("sku-1", 3), Counter("sku-2", 4))
    products = AggregateStates(
        "products",
        load_many=table.load_many,
        save_many=table.save_many,
        key=lambda c: c.id,
        ahead=False,
    )
    _, _, uow = setup()
    uow.locked.add("order-1")
    assert products.get_many(uow, ["sku-2", "sku-1"]) == {
        "sku-1": Counter("sku-1", 3),
        "sku-2": Counter("sku-2", 4),
    }
    products.save(uow, Counter("sku-1", 2))
    assert products.get_many(uow, ["sku-1", "sku-3"]) == {
        "sku-1": Counter("sku-1", 2),
        "sku-3": None,
    }
    assert table.loads == [["sku-1", "sku-2"], ["sku-3"]], "never the order ids the batch locked"
