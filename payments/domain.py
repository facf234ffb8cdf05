"""Payments: charge an order once both its card and its price are known, refund it if cancelled.

The facts arrive in any order and any number of times (the card with
OrderCreated, the amount with StockReserved, the cancellation with
OrderCancelled), and so do the provider's answers to the requests this state
makes (a charge, a void, a refund: each made at most once per order, as an
effect, after the decision asking for it commits). Every function here returns
a ``Decision``: the new state, the events to emit, and the provider request it
now calls for, if any.

The state knows which request it waits for (``waiting_for``): a cancellation
that arrives while a charge is in flight waits for the charge's answer, then
refunds it. A charge whose outcome stayed unknown (the provider did not answer
before the charge's deadline) may still have gone through, or may land later:
a cancelled order then voids the charge's key at the provider, which either
returns the charge the key holds (it is refunded) or refuses every later charge
under the key, so "no charge" is final.

An answer to a request this state no longer waits for (an operator retried a
charge that had failed, after the void settled it) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from contracts.payments import PaymentFailed, PaymentRefunded, PaymentSucceeded
from saga_runtime import Event

Status = Literal["awaiting", "charged", "failed", "refunded", "voided"]
FailureCode = Literal["payment_declined", "insufficient_funds", "payment_provider_error"]
RequestKind = Literal["charge", "void", "refund"]


def charge_key(order_id: str) -> str:
    return f"payments:{order_id}:charge"


def void_key(order_id: str) -> str:
    return f"payments:{order_id}:void"


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
        """The charge was asked for and never answered: it may exist at the provider."""
        return self.status == "failed" and self.failure_code == "payment_provider_error"

    @property
    def waiting_for(self) -> RequestKind | None:
        """The request made whose answer this state waits for, if any.

        Each state asks for at most one thing, and asks for it by moving here, so
        this also says what was asked: a charge once card and amount are known
        (a cancellation before that voids the payment, so both known while
        awaiting means asked), then for a cancelled order the refund of a charge,
        or the void of a charge whose outcome is unknown. An undo whose effect
        failed for good keeps waiting, visibly, until an operator retries it.
        """
        if self.status == "awaiting":
            known = self.card_token is not None and self.amount_cents is not None
            return "charge" if known else None
        if not self.cancelled:
            return None
        if self.status == "charged":
            return "refund"
        return "void" if self.charge_uncertain else None


# What to ask the provider; each request carries an idempotency key of the order's own.


@dataclass(frozen=True)
class Charge:
    idempotency_key: str
    order_id: str
    amount_cents: int
    card_token: str


@dataclass(frozen=True)
class VoidCharge:
    """Fence the charge's key: get the charge it holds, or make sure it never holds one.

    ``idempotency_key`` is the void's own key (the effect's); the provider voids
    ``charge_key``.
    """

    idempotency_key: str
    charge_key: str


@dataclass(frozen=True)
class Refund:
    idempotency_key: str
    charge_id: str
    amount_cents: int


Request = Charge | VoidCharge | Refund


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


@dataclass(frozen=True)
class Decision:
    """The new state, what to emit, and the request to make once it is committed."""

    payment: Payment
    events: tuple[Event, ...] = ()
    request: Request | None = None


def start(order_id: str) -> Payment:
    return Payment(order_id)


def request_for(payment: Payment) -> Request | None:
    """The request whose answer ``payment`` waits for (see ``Payment.waiting_for``)."""
    p = payment
    kind = p.waiting_for
    if kind == "charge":
        assert p.card_token is not None and p.amount_cents is not None
        return Charge(charge_key(p.order_id), p.order_id, p.amount_cents, p.card_token)
    if kind == "void":
        return VoidCharge(void_key(p.order_id), charge_key(p.order_id))
    if kind == "refund":
        assert p.charge_id is not None and p.amount_cents is not None
        return Refund(refund_key(p.order_id), p.charge_id, p.amount_cents)
    return None


def _decided(before: Payment, after: Payment, *events: Event) -> Decision:
    # A state asks for a request by coming to wait for it; one still waiting asks nothing.
    asks = after.waiting_for is not None and after.waiting_for != before.waiting_for
    return Decision(after, events, request_for(after) if asks else None)


# The facts about the order.


def card_known(payment: Payment, card_token: str) -> Decision:
    if payment.card_token is not None:
        return Decision(payment)
    return _decided(payment, replace(payment, card_token=card_token))


def amount_known(payment: Payment, amount_cents: int) -> Decision:
    if payment.amount_cents is not None:
        return Decision(payment)
    return _decided(payment, replace(payment, amount_cents=amount_cents))


def cancel(payment: Payment) -> Decision:
    """Never a charge once cancelled; one in flight is waited for, then refunded or voided."""
    if payment.cancelled:
        return Decision(payment)
    if payment.status == "awaiting" and payment.waiting_for is None:
        return _decided(payment, replace(payment, cancelled=True, status="voided"))
    return _decided(payment, replace(payment, cancelled=True))


# The provider's answers to this state's requests.


def charge_answered(payment: Payment, answer: ProviderCharge | ProviderVoided) -> Decision:
    """The provider answered the charge: approved, declined, or refused as voided."""
    if payment.waiting_for != "charge":
        return Decision(payment)  # an answer the state has moved past (see the docstring)
    if isinstance(answer, ProviderVoided):
        # Only a void fences the key, and only after the charge's own outcome: this is
        # a payment older than its effects. Nothing moved; no verdict is due.
        return _decided(payment, replace(payment, status="voided"))
    if answer.approved:
        charged = replace(
            payment, status="charged", charge_id=answer.charge_id, amount_cents=answer.amount_cents
        )
        # A fact even for an order cancelled meanwhile (which ignores it): the refund
        # that follows undoes it.
        succeeded = PaymentSucceeded(
            order_id=payment.order_id, amount_cents=answer.amount_cents, charge_id=answer.charge_id
        )
        return _decided(payment, charged, succeeded)
    code: FailureCode = (
        "insufficient_funds" if answer.decline_code == "insufficient_funds" else "payment_declined"
    )
    return _failed(payment, code, answer.reason or "card declined")


def charge_failed(payment: Payment, reason: str) -> Decision:
    """No answer before the charge's deadline: fail the payment so that the order is
    cancelled rather than stuck; the charge is uncertain, so its cancellation voids it."""
    if payment.waiting_for != "charge":
        return Decision(payment)
    return _failed(payment, "payment_provider_error", reason)


def _failed(payment: Payment, code: FailureCode, reason: str) -> Decision:
    failed = replace(payment, status="failed", failure_code=code, failure_reason=reason)
    return _decided(
        payment, failed, PaymentFailed(order_id=payment.order_id, reason_code=code, reason=reason)
    )


def voided(payment: Payment, found: ProviderCharge | ProviderVoided) -> Decision:
    """What the charge's key holds, now final, for a cancelled order."""
    if payment.waiting_for != "void":
        return Decision(payment)
    if isinstance(found, ProviderCharge) and found.approved:
        # Money moved after all: remember the charge, so that it is refunded next.
        charged = replace(
            payment, status="charged", charge_id=found.charge_id, amount_cents=found.amount_cents
        )
        return _decided(payment, charged)
    return _decided(payment, replace(payment, status="voided"))


def refunded(payment: Payment, answer: ProviderRefund) -> Decision:
    if payment.waiting_for != "refund":
        return Decision(payment)
    done = replace(payment, status="refunded", refund_id=answer.refund_id)
    return _decided(
        payment,
        done,
        PaymentRefunded(
            order_id=payment.order_id,
            amount_cents=answer.amount_cents,
            charge_id=answer.charge_id,
            refund_id=answer.refund_id,
        ),
    )
