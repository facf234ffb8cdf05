"""The provider's one-statement charge on the real database: its round trips and its races.

An ordinary card's charge is one statement under the key's lock; a void or a charge made
under the key while it waited for that lock must give the answers the locked transaction
gives (refused, replayed), never a charge beside a void or a second charge.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from saga_runtime import DatabaseSettings
from simulators.payment_provider.ledger import Ledger, ensure_schema
from simulators.payment_provider.processing import (
    ChargeRequest,
    ChargeVoided,
    Processor,
)
from tests.support import wait_until

pytestmark = pytest.mark.integration


class CountingConnection(psycopg.Connection[Any]):
    """Counts the statements sent, BEGIN and COMMIT included."""

    sent: list[str]

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        self.sent.append(str(query)[:40])
        return super().execute(query, *args, **kwargs)

    def _exec_command(self, command: Any, result_format: Any = 0) -> Any:
        self.sent.append(str(command)[:40])
        return super()._exec_command(command, result_format)


@pytest.fixture
def pool(database: DatabaseSettings) -> Iterator[ConnectionPool[CountingConnection]]:
    shared: list[str] = []  # every connection's statements, in one list

    def configure(conn: CountingConnection) -> None:
        conn.sent = shared

    with ConnectionPool(
        database.url,
        min_size=1,
        max_size=4,
        connection_class=CountingConnection,
        kwargs={"application_name": "payment-provider", "autocommit": True},
        configure=configure,
    ) as opened:
        with opened.connection() as conn:
            ensure_schema(conn)
            conn.sent.clear()
        yield opened


def request(card_token: str = "tok_visa") -> ChargeRequest:
    key = uuid.uuid4().hex
    return ChargeRequest(f"key-{key}", f"order-{key}", 2599, card_token)


def sent(pool: ConnectionPool[CountingConnection]) -> list[str]:
    with pool.connection() as conn:
        return list(conn.sent)


def test_an_ordinary_cards_charge_and_its_replay_are_one_statement_each(
    pool: ConnectionPool[CountingConnection],
) -> None:
    processor = Processor(pool, slow_seconds=0)
    for card_token in ("tok_visa", "tok_decline", "tok_insufficient_funds"):
        charge = request(card_token)
        made = processor.charge(charge)
        again = processor.charge(charge)
        assert (made.replayed, again.replayed) == (False, True)
        assert again.record == made.record
    assert len(sent(pool)) == 6, "no BEGIN, no COMMIT, no check: one statement per charge"


def _waiting_for_a_key_lock(admin: psycopg.Connection) -> bool:
    row = admin.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND NOT l.granted"
        " AND a.application_name = 'payment-provider'"
    ).fetchone()
    return row is not None and row[0] > 0


def _while_the_key_is_held(
    database: DatabaseSettings,
    admin: psycopg.Connection,
    processor: Processor,
    charge: ChargeRequest,
    meanwhile: Any,
) -> Any:
    """Charge while another transaction holds the key's lock and does ``meanwhile``."""
    with (
        psycopg.connect(database.url) as holder,
        ThreadPoolExecutor(max_workers=1) as threads,
    ):
        Ledger(holder).lock("charge", charge.idempotency_key)
        meanwhile(Ledger(holder))
        charging = threads.submit(processor.charge, charge)
        wait_until(lambda: _waiting_for_a_key_lock(admin), what="the charge waits for the lock")
        holder.commit()
        return charging.result(timeout=30)


def test_a_void_made_while_the_charge_waited_for_the_key_refuses_it(
    database: DatabaseSettings, admin_conn: psycopg.Connection, pool: ConnectionPool[Any]
) -> None:
    processor = Processor(pool, slow_seconds=0)
    charge = request()
    with pytest.raises(ChargeVoided):
        _while_the_key_is_held(
            database,
            admin_conn,
            processor,
            charge,
            lambda ledger: ledger.add_void(charge.idempotency_key),
        )
    with pool.connection() as conn:
        assert Ledger(conn).charge_by_key(charge.idempotency_key) is None, "no charge at all"


def test_a_charge_made_while_the_charge_waited_for_the_key_is_replayed(
    database: DatabaseSettings, admin_conn: psycopg.Connection, pool: ConnectionPool[Any]
) -> None:
    processor = Processor(pool, slow_seconds=0)
    charge = request()

    def charge_first(ledger: Ledger) -> None:
        ledger.count_attempt(charge.idempotency_key)
        ledger.add_charge(
            charge_id="ch_first",
            idempotency_key=charge.idempotency_key,
            order_id=charge.order_id,
            amount_cents=charge.amount_cents,
            card_token=charge.card_token,
            status="approved",
            decline_code=None,
            reason=None,
        )

    result = _while_the_key_is_held(database, admin_conn, processor, charge, charge_first)
    assert (result.record.charge_id, result.replayed) == ("ch_first", True)
    with pool.connection() as conn:
        charges = conn.execute(
            "SELECT count(*) FROM provider.charges WHERE idempotency_key = %s",
            (charge.idempotency_key,),
        ).fetchone()
    assert charges == (1,)
