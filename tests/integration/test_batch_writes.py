"""Set-based writes on the real server: a batch's inbox records and a unit of work's events."""

from __future__ import annotations

import psycopg
import pytest

from saga_runtime import Inbox
from saga_runtime.testing import RecordingUnitOfWorkFactory
from tests.support import Numbered, envelope

pytestmark = pytest.mark.integration


def test_the_events_of_one_unit_of_work_take_outbox_ids_in_the_order_they_were_emitted(
    database, admin_conn
):
    emitted = [(f"order-{n % 5}", n) for n in range(40)]  # five aggregates, interleaved
    with psycopg.connect(database.url) as conn:
        units = RecordingUnitOfWorkFactory.for_service(conn, "stock")
        with units.begin() as uow:
            for aggregate_id, n in emitted:
                uow.emit(Numbered(n=n), aggregate_id=aggregate_id)
            assert conn.execute("SELECT count(*) FROM stock.outbox").fetchone() == (0,), (
                "queued, then written in one statement as the unit of work ends"
            )
    rows = admin_conn.execute(
        "SELECT aggregate_id, (envelope->'payload'->>'n')::int FROM stock.outbox ORDER BY id"
    ).fetchall()
    assert rows == emitted


def test_events_emitted_in_a_unit_of_work_that_fails_are_never_written(database, admin_conn):
    with psycopg.connect(database.url) as conn:
        units = RecordingUnitOfWorkFactory.for_service(conn, "stock")
        with pytest.raises(RuntimeError), units.begin() as uow:
            uow.emit(Numbered(n=1), aggregate_id="order-1")
            raise RuntimeError("the handler fails after emitting")
    assert admin_conn.execute("SELECT count(*) FROM stock.outbox").fetchone() == (0,)


def test_a_batch_is_recorded_in_one_statement_that_says_which_events_are_new(database, admin_conn):
    inbox = Inbox(schema="stock")
    first, second, third = (envelope("order-1", n) for n in (1, 2, 3))
    keys = ["stock:order-1"]
    with psycopg.connect(database.url) as conn:
        with conn.transaction():
            batch = [(first, "t", 0, 1), (second, "t", 0, 2), (first, "t", 0, 3)]
            assert inbox.record_many(conn, batch, lock_keys=keys) == {
                first.event_id,
                second.event_id,
            }, "a copy inside the batch is new once"
        with conn.transaction():
            batch = [(second, "t", 0, 4), (third, "t", 0, 5)]
            assert inbox.record_many(conn, batch, lock_keys=keys) == {third.event_id}
            inbox.forget(conn, [third.event_id])  # left for a later batch
        with conn.transaction():
            assert inbox.record_many(conn, [(third, "t", 0, 5)], lock_keys=keys) == {
                third.event_id
            }, "a forgotten record is new again"
    assert admin_conn.execute("SELECT count(*) FROM stock.inbox").fetchone() == (3,)


def test_the_batch_statement_waits_for_every_aggregate_of_the_batch(database, admin_conn):
    """Another transaction holding one of the batch's aggregates holds the whole batch back."""
    inbox = Inbox(schema="stock")
    events = [envelope("order-1", 1), envelope("order-2", 2)]
    with (
        psycopg.connect(database.url) as holder,
        psycopg.connect(database.url) as conn,
        holder.transaction(),
    ):
        holder.execute("SELECT pg_advisory_xact_lock(hashtextextended('stock:order-2', 0))")
        conn.execute("SET lock_timeout = '300ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable), conn.transaction():
            inbox.record_many(
                conn,
                [(e, "t", 0, n) for n, e in enumerate(events)],
                lock_keys=["stock:order-1", "stock:order-2"],
            )
    assert admin_conn.execute("SELECT count(*) FROM stock.inbox").fetchone() == (0,)
