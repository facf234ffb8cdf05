"""Connections on the real PostgreSQL: a vanished or frozen holder never blocks others for long."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from psycopg.adapt import PyFormat
from psycopg.types.array import ListBinaryDumper

from saga_runtime import DatabaseSettings, connect, create_pool, is_transient_db_error
from tests.support import wait_until

pytestmark = pytest.mark.integration

LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('test-db-lock', 0))"


def server_settings(conn: psycopg.Connection) -> dict[str, str]:
    names = [
        "tcp_keepalives_idle",
        "tcp_keepalives_interval",
        "tcp_keepalives_count",
        "tcp_user_timeout",
        "idle_in_transaction_session_timeout",
        "lock_timeout",
    ]
    return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in names}  # type: ignore[index]


def test_every_connection_drops_a_vanished_peer_on_both_ends(database: DatabaseSettings):
    """Client keepalives and user timeout in libpq, and the server's own per session:
    PostgreSQL only ends the session of a client that vanished through its settings."""
    settings = database.model_copy(
        update={
            "keepalives_idle": 4,
            "keepalives_interval": 3,
            "keepalives_count": 2,
            "tcp_user_timeout": 9.0,
            "idle_in_transaction_timeout": 45.0,
            "lock_timeout": 25.0,
        }
    )
    expected = {
        "tcp_keepalives_idle": "4",
        "tcp_keepalives_interval": "3",
        "tcp_keepalives_count": "2",
        "tcp_user_timeout": "9000",
        "idle_in_transaction_session_timeout": "45s",
        "lock_timeout": "25s",
    }
    pool = create_pool(settings, role="orders", name="test-db")
    try:
        with pool.connection() as pooled:
            assert server_settings(pooled) == expected
            client = pooled.info.get_parameters()
    finally:
        pool.close()
    with connect(settings, role="orders", name="test-db", autocommit=True) as dedicated:
        assert server_settings(dedicated) == expected
        assert dedicated.info.get_parameters()["tcp_user_timeout"] == "9000"
    assert client["keepalives"] == "1"
    assert (client["keepalives_idle"], client["keepalives_interval"]) == ("4", "3")
    assert (client["keepalives_count"], client["tcp_user_timeout"]) == ("2", "9000")


def test_options_in_the_url_still_apply_and_win(database: DatabaseSettings):
    url = f"{database.url}?options=-c%20lock_timeout%3D7s%20-c%20search_path%3Dstock"
    settings = database.model_copy(update={"url": url})
    with connect(settings, role=None, name="test-db", autocommit=True) as conn:
        assert conn.execute("SHOW lock_timeout").fetchone() == ("7s",)
        assert conn.execute("SHOW search_path").fetchone() == ("stock",)
        assert conn.execute("SHOW tcp_keepalives_idle").fetchone() == (
            str(settings.keepalives_idle),
        )


def test_a_frozen_holder_in_a_transaction_loses_its_locks(database: DatabaseSettings):
    """A client frozen inside a transaction (its kernel still answers keepalives)
    holds an order's lock until idle_in_transaction_session_timeout ends it."""
    settings = database.model_copy(update={"idle_in_transaction_timeout": 1.0})
    pool = create_pool(settings, role="orders", name="test-db-frozen")
    try:
        with pool.connection() as frozen:
            frozen.execute(LOCK)  # then sends nothing more, as if its host froze
            with psycopg.connect(database.url, autocommit=True) as waiter:
                # Bounded so that, without the timeout, the test fails instead of hanging.
                waiter.execute("SET statement_timeout = '20s'")
                started = time.monotonic()
                with waiter.transaction():
                    waiter.execute(LOCK)
                waited = time.monotonic() - started
            with pytest.raises(psycopg.Error) as ended:
                frozen.execute("SELECT 1")
            assert is_transient_db_error(ended.value)
    finally:
        pool.close()
    assert waited < 20


def test_a_lock_wait_is_bounded_and_transient(database: DatabaseSettings):
    settings = database.model_copy(update={"lock_timeout": 1.0})
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with psycopg.connect(database.url) as holder, holder.transaction():
            holder.execute(LOCK)
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        wait_until(held.is_set, what="the lock held")
        with connect(settings, role="orders", name="test-db-waiter") as conn:
            conn.execute("SET statement_timeout = '20s'")
            with pytest.raises(psycopg.errors.LockNotAvailable) as timed_out:
                conn.execute(LOCK)
            assert is_transient_db_error(timed_out.value)
    finally:
        release.set()
        holder.join()


def test_operator_sessions_drop_a_vanished_peer_too(
    database: DatabaseSettings, monkeypatch: pytest.MonkeyPatch
):
    """sagactl's admin connection takes order locks too (replay, redrive, purge)."""
    from sagactl.ops.connection import open_database

    monkeypatch.setenv("DATABASE_URL", database.url)
    with open_database() as conn:
        settings = server_settings(conn)
        client = conn.info.get_parameters()
    assert settings["tcp_keepalives_idle"] == str(database.keepalives_idle)
    assert settings["lock_timeout"] != "0"
    assert settings["idle_in_transaction_session_timeout"] != "0"
    assert client["keepalives"] == "1" and client["tcp_user_timeout"] != "0"


# Text that a hand-written array literal gets wrong: quotes, braces, commas, backslashes,
# the word NULL, blanks, and characters beyond ASCII.
AWKWARD = ['a "quoted", {braced} value', "back\\slash", "NULL", "", " ", "é€😀", None]


def test_a_batch_parameter_reaches_postgresql_as_sent_in_binary(database: DatabaseSettings):
    """Every batch statement takes its rows as arrays (``unnest(%s::text[])``, ``= ANY(%s)``).
    Our connections send a list in binary, which skips psycopg's character-by-character
    escaping of the text format; the values must arrive unchanged, for every element type
    a batch statement uses."""
    envelopes = [json.dumps({"text": text}) for text in AWKWARD if text is not None]
    ids = [uuid.uuid4(), uuid.uuid4()]
    pool = create_pool(database, role=None, name="test-db-arrays")
    try:
        with (
            pool.connection() as pooled,
            connect(database, role=None, name="test-db-arrays") as own,
        ):
            for conn in (pooled, own):
                assert issubclass(conn.adapters.get_dumper(list, PyFormat.AUTO), ListBinaryDumper)
                texts = conn.execute("SELECT array_agg(t) FROM unnest(%s::text[]) AS t", [AWKWARD])
                assert texts.fetchone() == (AWKWARD,)
                docs = conn.execute(
                    "SELECT array_agg(d->>'text') FROM unnest(%s::jsonb[]) AS d", [envelopes]
                )
                assert docs.fetchone() == ([t for t in AWKWARD if t is not None],)
                rows = conn.execute(
                    "SELECT u.i, u.n, u.w FROM unnest(%s::uuid[], %s::bigint[], %s::interval[])"
                    " AS u(i, n, w)",
                    [ids, [1, 2**40], [timedelta(seconds=1.5), timedelta(days=2)]],
                ).fetchall()
                assert rows == [
                    (ids[0], 1, timedelta(seconds=1.5)),
                    (ids[1], 2**40, timedelta(days=2)),
                ]
                assert conn.execute("SELECT 'NULL' = ANY(%s)", [AWKWARD]).fetchone() == (True,)
                assert conn.execute("SELECT 'x' = ANY(%s)", [[]]).fetchone() == (False,)
    finally:
        pool.close()


def test_a_connection_given_back_is_in_the_pool_when_its_block_ends(database: DatabaseSettings):
    """Giving a connection back costs no hop to one of the pool's worker threads: the
    next transaction of the same thread finds it there at once."""
    settings = database.model_copy(update={"pool_min_size": 1, "pool_max_size": 1})
    pool = create_pool(settings, role=None, name="test-db-return")
    try:
        for _ in range(20):
            with pool.connection() as conn:
                conn.execute("SELECT 1")
            assert pool.get_stats()["pool_available"] == 1
    finally:
        pool.close()


def test_a_connection_that_died_while_idle_is_replaced_before_anyone_gets_it(
    database: DatabaseSettings,
):
    """After a PostgreSQL restart (here: its backend ended) a connection that sat in the
    pool is checked and replaced, so the next transaction does not fail on it."""
    settings = database.model_copy(update={"pool_min_size": 1, "pool_max_size": 1})
    pool = create_pool(settings, role=None, name="test-db-idle-death")
    try:
        with pool.connection() as conn:
            backend = conn.info.backend_pid
        with psycopg.connect(database.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [backend])
        time.sleep(1.2)  # longer than a connection in steady use goes unchecked
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid != backend
    finally:
        pool.close()
