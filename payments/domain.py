"""Payments: charge an order once both its card and its price are known, refund it if cancelled.

The facts arrive in any order and any number of times (the card with
OrderCreated, the amount with StockReserved, the cancellation with
OrderCancelled); ``next_step`` says what to ask the provider given what is
known, and the outcome functions record the provider's answer.

A charge may exist at the provider that this state does not know of: the
transaction that asked for it may have rolled back (a crash after the charge,
a lost response). Every request therefore carries an idempotency key derived
from the order id, so asking again returns that same charge. A cancelled order
whose charge is uncertain is not merely looked up before it is written off: a
request that timed out may still be on its way to the provider and land after
a lookup found nothing. Instead the key is voided at the provider, which either
returns the charge the key holds (it is refunded) or refuses every later charge
under the key, so "no charge" is final.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from contracts.payments import PaymentFailed, PaymentRefunded, PaymentSucceeded
from saga_runtime import Event

Status = Literal["awaiting", "charged", "failed", "refunded", "voided"]
FailureCode = Literal["payment_declined", "insufficient_funds", "payment_provider_error"]


def charge_key(order_id: str) -> str:
    return f"payments:{order_id}:charge"


def refund_key(order_id: str) -> str:
    return f"payments:{order_id}:refund"


@dataclass(frozen=True)
class Payment:
    """``voided``: cancelled and no money moved; ``failed``: the charge did not go through."""

    order_id: str
    status: Status = "awaiting"
    card_token: str | None = None
    amount_cents: int | None = None
    cancelled: bool = False
    charge_id: str | None = None
    refund_id: str | None = None
    failure_code: FailureCode | None = None
    failure_reason: str | None = None

    @property
    def charge_uncertain(self) -> bool:
        """Whether a charge may exist at the provider without this state knowing it."""
        if self.status == "awaiting":
            # A charge is only ever asked for by the handler that learns the second
            # of card and amount, so one of them is committed whenever one was asked.
            return self.card_token is not None or self.amount_cents is not None
        # A provider failure may have been a timeout on a charge that went through.
        return self.status == "failed" and self.failure_code == "payment_provider_error"


# What to ask the provider next; each request carries the order's own idempotency key.


@dataclass(frozen=True)
class Charge:
    idempotency_key: str
    order_id: str
    amount_cents: int
    card_token: str


@dataclass(frozen=True)
class VoidCharge:
    """Fence the key: get the charge it holds, or make sure it never holds one."""

    idempotency_key: str


@dataclass(frozen=True)
class Refund:
    idempotency_key: str
    charge_id: str
    amount_cents: int


Step = Charge | VoidCharge | Refund


# The provider's answers.


@dataclass(frozen=True)
class ProviderCharge:
    charge_id: str
    approved: bool
    amount_cents: int
    decline_code: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ProviderVoided:
    """The key is voided at the provider: no charge under it exists or ever will."""

    idempotency_key: str


@dataclass(frozen=True)
class ProviderRefund:
    refund_id: str
    charge_id: str
    amount_cents: int


def start(order_id: str) -> Payment:
    return Payment(order_id)


def card_known(payment: Payment, card_token: str) -> Payment:
    if payment.card_token is not None:
        return payment
    return replace(payment, card_token=card_token)


def amount_known(payment: Payment, amount_cents: int) -> Payment:
    if payment.amount_cents is not None:
        return payment
    return replace(payment, amount_cents=amount_cents)


def cancel(payment: Payment) -> Payment:
    if payment.cancelled:
        return payment
    if payment.status == "awaiting" and not payment.charge_uncertain:
        return replace(payment, cancelled=True, status="voided")
    return replace(payment, cancelled=True)


def next_step(payment: Payment) -> Step | None:
    """The one provider request this state calls for, if any (never a charge once cancelled)."""
    p = payment
    if p.cancelled:
        if p.status == "charged":
            assert p.charge_id is not None and p.amount_cents is not None
            return Refund(refund_key(p.order_id), p.charge_id, p.amount_cents)
        if p.status in ("awaiting", "failed") and p.charge_uncertain:
            return VoidCharge(charge_key(p.order_id))
        return None
    if p.status == "awaiting" and p.card_token is not None and p.amount_cents is not None:
        return Charge(charge_key(p.order_id), p.order_id, p.amount_cents, p.card_token)
    return None


def charged(
    payment: Payment, answer: ProviderCharge | ProviderVoided
) -> tuple[Payment, list[Event]]:
    """The provider answered the charge: approved, declined, or refused as voided."""
    if isinstance(answer, ProviderVoided):
        # Only a cancellation voids the key, so the order is cancelled already (this
        # is a redelivery racing that cancellation's own redelivery): no verdict due.
        return replace(payment, status="voided"), []
    if answer.approved:
        done = replace(
            payment,
            status="charged",
            charge_id=answer.charge_id,
            amount_cents=answer.amount_cents,
        )
        return done, [
            PaymentSucceeded(
                order_id=payment.order_id,
                amount_cents=answer.amount_cents,
                charge_id=answer.charge_id,
            )
        ]
    code: FailureCode = (
        "insufficient_funds" if answer.decline_code == "insufficient_funds" else "payment_declined"
    )
    return _failed(payment, code, answer.reason or "card declined")


def provider_failed(payment: Payment, reason: str) -> tuple[Payment, list[Event]]:
    """The provider stayed unavailable: fail the payment so the order is cancelled, not stuck."""
    return _failed(payment, "payment_provider_error", reason)


def _failed(payment: Payment, code: FailureCode, reason: str) -> tuple[Payment, list[Event]]:
    failed = replace(payment, status="failed", failure_code=code, failure_reason=reason)
    return failed, [PaymentFailed(order_id=payment.order_id, reason_code=code, reason=reason)]


def fenced(payment: Payment, found: ProviderCharge | ProviderVoided) -> Payment:
    """What the provider holds under the order's charge key, now final, for a cancelled order."""
    if isinstance(found, ProviderCharge) and found.approved:
        # Money moved after all: remember the charge so that it is refunded next.
        return replace(
            payment, status="charged", charge_id=found.charge_id, amount_cents=found.amount_cents
        )
    return replace(payment, status="voided")


def refunded(payment: Payment, answer: ProviderRefund) -> tuple[Payment, list[Event]]:
    done = replace(payment, status="refunded", refund_id=answer.refund_id)
    return done, [
        PaymentRefunded(
            order_id=payment.order_id,
            amount_cents=answer.amount_cents,
            charge_id=answer.charge_id,
            refund_id=answer.refund_id,
        )
    ]
