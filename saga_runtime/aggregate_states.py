"""One aggregate type's states, read and written per unit of work, not per event.

A consumer applies a batch of events in one unit of work that holds the lock of
every aggregate of the batch (see ``MessageApplier.apply_batch``). The first
state a handler reads loads the states of all those aggregates in one query;
the others are then served from memory. States a handler saves are kept in
memory for the next event of the batch and written in one statement when the
unit of work flushes, just before commit. Handlers keep reading and saving one
aggregate at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Generic, TypeVar

import psycopg

from saga_runtime.unit_of_work import UnitOfWork

__all__ = ["AggregateStates"]

S = TypeVar("S")

Loader = Callable[[psycopg.Connection, list[str]], Collection[S]]
Writer = Callable[[psycopg.Connection, list[S]], object]


class AggregateStates(Generic[S]):
    """Reads and writes states of one aggregate type set-wise, through a unit of work.

    ``load_many(conn, ids)`` returns the states found among ``ids`` (in one
    query); ``save_many(conn, states)`` writes changed states of existing
    aggregates (one statement; each aggregate once); ``key`` names a state's
    aggregate. With ``ahead`` (for states keyed by the batch's aggregates), the
    first read also loads every aggregate whose lock the unit of work holds:
    their states cannot change under it. Without, ``load_many`` may lock the
    rows it reads (``FOR UPDATE``, in key order): ``get_many`` asks for several
    at once.
    """

    def __init__(
        self,
        name: str,
        *,
        load_many: Loader[S],
        save_many: Writer[S],
        key: Callable[[S], str],
        ahead: bool = True,
    ) -> None:
        self.name = name
        self._ahead = ahead
        self._load_many = load_many
        self._save_many = save_many
        self._key = key

    def get(self, uow: UnitOfWork, aggregate_id: str) -> S | None:
        """The aggregate's state as this unit of work sees it (None: no such aggregate)."""
        return self.get_many(uow, [aggregate_id])[aggregate_id]

    def get_many(self, uow: UnitOfWork, aggregate_ids: Iterable[str]) -> dict[str, S | None]:
        """The states of ``aggregate_ids``; those not known yet are loaded in one query."""
        known = self._known(uow)
        ids = set(aggregate_ids)
        missing = {a for a in ids if a not in known}
        if missing:
            if self._ahead:
                missing |= {a for a in uow.locked if a not in known}
            wanted = sorted(missing)
            loaded = {self._key(state): state for state in self._load_many(uow.conn, wanted)}
            for wanted_id in wanted:
                known[wanted_id] = loaded.get(wanted_id)
        return {a: known[a] for a in ids}

    def save(self, uow: UnitOfWork, state: S) -> None:
        """Keep ``state`` for the rest of the unit of work and write it before commit."""
        self._known(uow)[self._key(state)] = state
        uow.defer(self._write, state)

    def forget(self, uow: UnitOfWork, aggregate_id: str) -> None:
        """Drop what is known of an aggregate written another way in this unit of work."""
        self._known(uow).pop(aggregate_id, None)

    def _known(self, uow: UnitOfWork) -> dict[str, S | None]:
        return uow.memo.setdefault(self.name, {})

    def _write(self, conn: psycopg.Connection, states: list[S]) -> None:
        latest = {self._key(state): state for state in states}  # each aggregate's last save
        self._save_many(conn, list(latest.values()))
