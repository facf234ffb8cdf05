"""The provider's ledger in PostgreSQL (schema ``provider``): charges, refunds, voids, attempts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import psycopg

ChargeStatus = Literal["approved", "declined"]
ChargeFound = Literal["made", "existing", "voided", "raced"]

# The provider is not one of our services, so it is not in our migrations: it
# creates what it needs itself, idempotently, like any third party would.
SCHEMA = (
    "CREATE SCHEMA IF NOT EXISTS provider",
    """
    CREATE TABLE IF NOT EXISTS provider.charges (
        charge_id       text PRIMARY KEY,
        idempotency_key text NOT NULL UNIQUE,
        order_id        text NOT NULL,
        amount_cents    bigint NOT NULL CHECK (amount_cents >= 0),
        card_token      text NOT NULL,
        status          text NOT NULL CHECK (status IN ('approved', 'declined')),
        decline_code    text,
        reason          text,
        created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
    )
    """,
    "CREATE INDEX IF NOT EXISTS charges_order_idx ON provider.charges (order_id)",
    """
    CREATE TABLE IF NOT EXISTS provider.refunds (
        refund_id       text PRIMARY KEY,
        idempotency_key text NOT NULL UNIQUE,
        charge_id       text NOT NULL UNIQUE REFERENCES provider.charges (charge_id),
        amount_cents    bigint NOT NULL CHECK (amount_cents >= 0),
        created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
    )
    """,
    # A voided key will never hold a charge: the fence a client puts up when it
    # gives a charge up, so that a request still in transit cannot land later.
    """
    CREATE TABLE IF NOT EXISTS provider.voids (
        idempotency_key text PRIMARY KEY,
        created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS provider.charge_attempts (
        idempotency_key text PRIMARY KEY,
        attempts        integer NOT NULL,
        last_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )
    """,
    # The key's row says it was voided too: a one-statement charge that waited for the
    # key's lock reads this row as it is now, where its snapshot would miss the void.
    "ALTER TABLE provider.charge_attempts ADD COLUMN IF NOT EXISTS"
    " voided boolean NOT NULL DEFAULT false",
)


@dataclass(frozen=True)
class ChargeRecord:
    charge_id: str
    idempotency_key: str
    order_id: str
    amount_cents: int
    card_token: str
    status: ChargeStatus
    decline_code: str | None
    reason: str | None
    created_at: datetime
    refund_id: str | None = None


@dataclass(frozen=True)
class RefundRecord:
    refund_id: str
    idempotency_key: str
    charge_id: str
    amount_cents: int
    created_at: datetime


@dataclass(frozen=True)
class VoidRecord:
    idempotency_key: str
    created_at: datetime


_CHARGE_COLUMNS = (
    "c.charge_id, c.idempotency_key, c.order_id, c.amount_cents, c.card_token, c.status,"
    " c.decline_code, c.reason, c.created_at, r.refund_id"
)
_CHARGES = (
    f"SELECT {_CHARGE_COLUMNS} FROM provider.charges c"
    " LEFT JOIN provider.refunds r ON r.charge_id = c.charge_id"
)
# A charge in one statement, for a card whose verdict is known before the attempt is counted
# (``Processor.charge``). Under the key's lock, as every request about the key: unless the
# snapshot holds a charge or a void under the key already, count the attempt (the key's
# row, read as it is now: a void made while we waited for the lock is seen there) and make
# the charge (a charge made while we waited is seen by ON CONFLICT). Neither made nor found
# is a race with a request that held the lock: the caller starts again under the lock.
_CHARGE_ONCE = f"""
WITH locked AS (
    SELECT pg_advisory_xact_lock(hashtextextended(%(lock)s, 0))
),
existing AS ({_CHARGES} WHERE c.idempotency_key = %(key)s),
voided AS (SELECT idempotency_key FROM provider.voids WHERE idempotency_key = %(key)s),
attempt AS (
    INSERT INTO provider.charge_attempts AS a (idempotency_key, attempts)
    SELECT %(key)s::text, 1 FROM locked
    WHERE NOT EXISTS (SELECT FROM existing) AND NOT EXISTS (SELECT FROM voided)
    ON CONFLICT (idempotency_key) DO UPDATE
    SET attempts = a.attempts + 1, last_attempt_at = clock_timestamp()
    WHERE NOT a.voided
    RETURNING a.attempts
),
made AS (
    INSERT INTO provider.charges (charge_id, idempotency_key, order_id, amount_cents,
        card_token, status, decline_code, reason)
    SELECT %(charge_id)s::text, %(key)s::text, %(order_id)s::text, %(amount_cents)s::bigint,
        %(card_token)s::text, %(status)s::text, %(decline_code)s::text, %(reason)s::text
    FROM attempt
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING charge_id, idempotency_key, order_id, amount_cents, card_token, status,
        decline_code, reason, created_at, NULL::text
)
SELECT 'existing', e.* FROM existing e
UNION ALL SELECT 'voided', NULL, v.idempotency_key, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL FROM voided v
UNION ALL SELECT 'made', m.* FROM made m
"""

_REFUNDS = (
    "SELECT refund_id, idempotency_key, charge_id, amount_cents, created_at FROM provider.refunds"
)


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create the ledger's schema and tables unless they exist (safe to run concurrently)."""
    with conn.transaction():
        # IF NOT EXISTS is not race-free between two processes starting together.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('provider:schema', 0))")
        for statement in SCHEMA:
            conn.execute(statement)


class Ledger:
    """SQL over one connection; the caller owns the transaction."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def lock(self, kind: str, idempotency_key: str) -> None:
        """Serialize every request about one idempotency key until this transaction ends."""
        self.conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"provider:{kind}:{idempotency_key}",),
        )

    def charge_by_key(self, idempotency_key: str) -> ChargeRecord | None:
        row = self.conn.execute(
            f"{_CHARGES} WHERE c.idempotency_key = %s", (idempotency_key,)
        ).fetchone()
        return None if row is None else ChargeRecord(*row)

    def charge_by_id(self, charge_id: str, *, for_update: bool = False) -> ChargeRecord | None:
        if for_update:
            # Two refunds of one charge with different keys meet here, one at a time.
            found = self.conn.execute(
                "SELECT 1 FROM provider.charges WHERE charge_id = %s FOR UPDATE", (charge_id,)
            ).fetchone()
            if found is None:
                return None
        row = self.conn.execute(f"{_CHARGES} WHERE c.charge_id = %s", (charge_id,)).fetchone()
        return None if row is None else ChargeRecord(*row)

    def void_by_key(self, idempotency_key: str) -> VoidRecord | None:
        row = self.conn.execute(
            "SELECT idempotency_key, created_at FROM provider.voids WHERE idempotency_key = %s",
            (idempotency_key,),
        ).fetchone()
        return None if row is None else VoidRecord(*row)

    def add_void(self, idempotency_key: str) -> VoidRecord:
        """Void the key, and mark its attempts row so (see ``charge_once``)."""
        row = self.conn.execute(
            "WITH marked AS ("
            " INSERT INTO provider.charge_attempts (idempotency_key, attempts, voided)"
            " VALUES (%(key)s, 0, true)"
            " ON CONFLICT (idempotency_key) DO UPDATE SET voided = true)"
            " INSERT INTO provider.voids (idempotency_key) VALUES (%(key)s)"
            " RETURNING idempotency_key, created_at",
            {"key": idempotency_key},
        ).fetchone()
        assert row is not None
        return VoidRecord(*row)

    def count_attempt(self, idempotency_key: str) -> int:
        """Record one more attempt at charging under this key; returns the attempt number."""
        row = self.conn.execute(
            "INSERT INTO provider.charge_attempts (idempotency_key, attempts) VALUES (%s, 1)"
            " ON CONFLICT (idempotency_key) DO UPDATE"
            " SET attempts = provider.charge_attempts.attempts + 1,"
            " last_attempt_at = clock_timestamp()"
            " RETURNING attempts",
            (idempotency_key,),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def add_charge(
        self,
        *,
        charge_id: str,
        idempotency_key: str,
        order_id: str,
        amount_cents: int,
        card_token: str,
        status: ChargeStatus,
        decline_code: str | None,
        reason: str | None,
    ) -> ChargeRecord:
        self.conn.execute(
            "INSERT INTO provider.charges (charge_id, idempotency_key, order_id, amount_cents,"
            " card_token, status, decline_code, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                charge_id,
                idempotency_key,
                order_id,
                amount_cents,
                card_token,
                status,
                decline_code,
                reason,
            ),
        )
        record = self.charge_by_key(idempotency_key)
        assert record is not None
        return record

    def charge_once(
        self,
        *,
        charge_id: str,
        idempotency_key: str,
        order_id: str,
        amount_cents: int,
        card_token: str,
        status: ChargeStatus,
        decline_code: str | None,
        reason: str | None,
    ) -> tuple[ChargeFound, ChargeRecord | None]:
        """One statement (its own transaction): the charge made, the one the key holds,
        the key voided, or a race with a request that held the key's lock meanwhile."""
        rows = self.conn.execute(
            _CHARGE_ONCE,
            {
                "lock": f"provider:charge:{idempotency_key}",
                "key": idempotency_key,
                "charge_id": charge_id,
                "order_id": order_id,
                "amount_cents": amount_cents,
                "card_token": card_token,
                "status": status,
                "decline_code": decline_code,
                "reason": reason,
            },
        ).fetchall()
        found = {str(row[0]): row[1:] for row in rows}
        # A charge the key holds comes first, as it does under the lock.
        if "existing" in found:
            return "existing", ChargeRecord(*found["existing"])
        if "voided" in found:
            return "voided", None
        if "made" in found:
            return "made", ChargeRecord(*found["made"])
        return "raced", None

    def refund_by_key(self, idempotency_key: str) -> RefundRecord | None:
        row = self.conn.execute(
            f"{_REFUNDS} WHERE idempotency_key = %s", (idempotency_key,)
        ).fetchone()
        return None if row is None else RefundRecord(*row)

    def add_refund(
        self, *, refund_id: str, idempotency_key: str, charge_id: str, amount_cents: int
    ) -> RefundRecord:
        row = self.conn.execute(
            "INSERT INTO provider.refunds (refund_id, idempotency_key, charge_id, amount_cents)"
            " VALUES (%s, %s, %s, %s)"
            " RETURNING refund_id, idempotency_key, charge_id, amount_cents, created_at",
            (refund_id, idempotency_key, charge_id, amount_cents),
        ).fetchone()
        assert row is not None
        return RefundRecord(*row)

    def charges(self) -> list[ChargeRecord]:
        return [
            ChargeRecord(*row)
            for row in self.conn.execute(f"{_CHARGES} ORDER BY c.created_at, c.charge_id")
        ]

    def refunds(self) -> list[RefundRecord]:
        return [
            RefundRecord(*row)
            for row in self.conn.execute(f"{_REFUNDS} ORDER BY created_at, refund_id")
        ]

    def voids(self) -> list[VoidRecord]:
        return [
            VoidRecord(*row)
            for row in self.conn.execute(
                "SELECT idempotency_key, created_at FROM provider.voids"
                " ORDER BY created_at, idempotency_key"
            )
        ]
