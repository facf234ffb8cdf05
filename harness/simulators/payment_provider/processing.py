"""What the provider does with a charge, void or refund request: idempotency, cards, rules.

A client that gave up on a charge whose outcome it never heard (a timeout) cannot
tell "never arrived" from "still on its way": a lookup that finds nothing proves
nothing, because the request may land a moment later. ``void`` settles it: under
the key's lock it either returns the charge the key already holds or records the
key as voided, and a charge that arrives under a voided key is refused
(``ChargeVoided``). After a void, the answer is final either way.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from psycopg_pool import ConnectionPool

from simulators.payment_provider.ledger import ChargeRecord, Ledger, RefundRecord, VoidRecord

# Test cards: the token alone decides what happens, like a real provider's sandbox.
TOKEN_DECLINE = "tok_decline"
TOKEN_INSUFFICIENT_FUNDS = "tok_insufficient_funds"
TOKEN_ERROR = "tok_error"
TOKEN_FLAKY = "tok_flaky"
TOKEN_SLOW = "tok_slow"

Verdict = Literal["approve", "decline", "insufficient_funds", "unavailable"]

# Cards whose charge takes the locked transaction: their verdict depends on the attempt's
# number, or makes no charge, or (tok_slow) the key's lock is held while the provider
# "thinks". Every other card's verdict is the same on every attempt: one statement.
LOCKED_CARDS = frozenset({TOKEN_ERROR, TOKEN_FLAKY, TOKEN_SLOW})

T = TypeVar("T")


class ProviderError(Exception):
    """Root of the provider's refusals; each maps to one HTTP status."""

    status_code = 400


class IdempotencyConflict(ProviderError):
    """The key was used before for a different request."""

    status_code = 409


class ChargeVoided(ProviderError):
    """The key was voided by its client: no charge will ever be made under it."""

    status_code = 409
    code = "charge_voided"


class UnknownCharge(ProviderError):
    status_code = 404


class NotRefundable(ProviderError):
    """The charge was declined, or it was refunded already under another key."""

    status_code = 409


class InvalidRefund(ProviderError):
    status_code = 422


class Unavailable(ProviderError):
    """The provider cannot take the request now; the caller may retry with the same key."""

    status_code = 503


def verdict(card_token: str, attempt: int) -> Verdict:
    """The outcome a card gets on its ``attempt``-th try under one idempotency key."""
    if card_token == TOKEN_DECLINE:
        return "decline"
    if card_token == TOKEN_INSUFFICIENT_FUNDS:
        return "insufficient_funds"
    if card_token == TOKEN_ERROR or (card_token == TOKEN_FLAKY and attempt == 1):
        return "unavailable"
    return "approve"


@dataclass(frozen=True)
class ChargeRequest:
    idempotency_key: str
    order_id: str
    amount_cents: int
    card_token: str

    def same_as(self, record: ChargeRecord) -> bool:
        return (record.order_id, record.amount_cents, record.card_token) == (
            self.order_id,
            self.amount_cents,
            self.card_token,
        )


@dataclass(frozen=True)
class RefundRequest:
    idempotency_key: str
    charge_id: str
    amount_cents: int

    def same_as(self, record: RefundRecord) -> bool:
        return (record.charge_id, record.amount_cents) == (self.charge_id, self.amount_cents)


@dataclass(frozen=True)
class Result(Generic[T]):
    record: T
    replayed: bool  # the answer given the first time this key was used


class Processor:
    """Applies requests to the ledger, one transaction each, serialized per idempotency key."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        slow_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.pool = pool
        self.slow_seconds = slow_seconds
        self._sleep = sleep

    def charge(self, request: ChargeRequest) -> Result[ChargeRecord]:
        """The charge the key holds or a new one; one statement for an ordinary card.

        The same answers as ``_charge_locked`` gives: a race the statement cannot settle
        (a charge or void made under the key while it waited for the key's lock) goes there.
        """
        if request.card_token in LOCKED_CARDS:
            return self._charge_locked(request)
        outcome = verdict(request.card_token, 1)
        with self.pool.connection() as conn:
            found, record = Ledger(conn).charge_once(
                **self._new_charge(request, outcome), idempotency_key=request.idempotency_key
            )
        if found == "existing" and record is not None:
            return self._replay(request, record)
        if found == "voided":
            raise self._voided(request)
        if found == "made" and record is not None:
            return Result(record, replayed=False)
        return self._charge_locked(request)

    def _charge_locked(self, request: ChargeRequest) -> Result[ChargeRecord]:
        """A charge in a transaction holding the key's lock throughout."""
        record: ChargeRecord | None = None
        with self.pool.connection() as conn, conn.transaction():
            ledger = Ledger(conn)
            # Held while a slow charge "thinks": a retry or a lookup under the same
            # key waits for the in-flight request and then sees its outcome.
            ledger.lock("charge", request.idempotency_key)
            existing = ledger.charge_by_key(request.idempotency_key)
            if existing is not None:
                return self._replay(request, existing)
            if ledger.void_by_key(request.idempotency_key) is not None:
                raise self._voided(request)
            outcome = verdict(request.card_token, ledger.count_attempt(request.idempotency_key))
            # "unavailable" leaves record None: the attempt count commits, then we refuse.
            if outcome != "unavailable":
                if request.card_token == TOKEN_SLOW:
                    self._sleep(self.slow_seconds)
                record = ledger.add_charge(
                    **self._new_charge(request, outcome), idempotency_key=request.idempotency_key
                )
        if record is None:
            raise Unavailable("the card network is unavailable, retry with the same key")
        return Result(record, replayed=False)

    @staticmethod
    def _new_charge(request: ChargeRequest, outcome: Verdict) -> dict[str, Any]:
        """The columns of the charge ``outcome`` makes (not "unavailable"), but its key."""
        return {
            "charge_id": f"ch_{uuid.uuid4().hex[:24]}",
            "order_id": request.order_id,
            "amount_cents": request.amount_cents,
            "card_token": request.card_token,
            "status": "approved" if outcome == "approve" else "declined",
            "decline_code": None if outcome == "approve" else _DECLINE_CODES[outcome],
            "reason": None if outcome == "approve" else _DECLINE_REASONS[outcome],
        }

    @staticmethod
    def _replay(request: ChargeRequest, existing: ChargeRecord) -> Result[ChargeRecord]:
        if not request.same_as(existing):
            raise IdempotencyConflict(
                f"idempotency key {request.idempotency_key!r} was used for another charge"
            )
        return Result(existing, replayed=True)

    @staticmethod
    def _voided(request: ChargeRequest) -> ChargeVoided:
        return ChargeVoided(
            f"idempotency key {request.idempotency_key!r} was voided: no charge under it"
        )

    def find_charge(self, idempotency_key: str) -> ChargeRecord | None:
        with self.pool.connection() as conn, conn.transaction():
            ledger = Ledger(conn)
            # A lookup after a timed-out charge must see that charge's outcome, so it
            # waits for any request still in flight under the key.
            ledger.lock("charge", idempotency_key)
            return ledger.charge_by_key(idempotency_key)

    def void(self, idempotency_key: str) -> Result[ChargeRecord] | Result[VoidRecord]:
        """The charge the key holds, if any; otherwise void the key, so none ever will.

        Takes the same lock as a charge under the key: a charge in flight finishes
        first and is returned; one that arrives later finds the void and is refused.
        """
        with self.pool.connection() as conn, conn.transaction():
            ledger = Ledger(conn)
            ledger.lock("charge", idempotency_key)
            charge = ledger.charge_by_key(idempotency_key)
            if charge is not None:
                return Result(charge, replayed=True)
            voided = ledger.void_by_key(idempotency_key)
            if voided is not None:
                return Result(voided, replayed=True)
            return Result(ledger.add_void(idempotency_key), replayed=False)

    def refund(self, request: RefundRequest) -> Result[RefundRecord]:
        with self.pool.connection() as conn, conn.transaction():
            ledger = Ledger(conn)
            ledger.lock("refund", request.idempotency_key)
            existing = ledger.refund_by_key(request.idempotency_key)
            if existing is not None:
                if not request.same_as(existing):
                    raise IdempotencyConflict(
                        f"idempotency key {request.idempotency_key!r} was used for another refund"
                    )
                return Result(existing, replayed=True)
            charge = ledger.charge_by_id(request.charge_id, for_update=True)
            if charge is None:
                raise UnknownCharge(f"no charge {request.charge_id!r}")
            if charge.status != "approved":
                raise NotRefundable(f"charge {charge.charge_id} was {charge.status}")
            if charge.refund_id is not None:
                raise NotRefundable(
                    f"charge {charge.charge_id} was already refunded ({charge.refund_id})"
                )
            if request.amount_cents > charge.amount_cents:
                raise InvalidRefund(
                    f"refund of {request.amount_cents} exceeds the charge's {charge.amount_cents}"
                )
            record = ledger.add_refund(
                refund_id=f"re_{uuid.uuid4().hex[:24]}",
                idempotency_key=request.idempotency_key,
                charge_id=charge.charge_id,
                amount_cents=request.amount_cents,
            )
        return Result(record, replayed=False)

    def ledger(self) -> tuple[list[ChargeRecord], list[RefundRecord], list[VoidRecord]]:
        with self.pool.connection() as conn, conn.transaction():
            # One snapshot for all lists, so a refund never shows without its charge.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            ledger = Ledger(conn)
            return ledger.charges(), ledger.refunds(), ledger.voids()


_DECLINE_CODES = {"decline": "card_declined", "insufficient_funds": "insufficient_funds"}
_DECLINE_REASONS = {"decline": "card declined", "insufficient_funds": "insufficient funds"}
