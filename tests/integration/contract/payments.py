"""Payments' part of the handler contract: the card, the price and the cancellation of one
order, against a provider that keeps a ledger; the charge, void and refund are effects,
answered at once or only after every event (a cancellation then arrives while the charge
is in flight)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from contracts.orders import OrderCreated
from contracts.stock import StockReserved
from payments.bootstrap import compose
from payments.domain import Charge, ProviderCharge, ProviderRefund, ProviderVoided, Refund
from payments.repository import PaymentRepository
from payments.settings import PaymentsSettings
from saga_runtime.testing import HandlerRunner
from tests.integration.contract.scenario import (
    ADDRESS,
    CARD,
    EMAIL,
    LINES,
    PRICED,
    TOTAL,
    Contract,
    Dependencies,
    Saga,
    Scenario,
    State,
    Step,
    cancelled,
    emitted,
    plain,
)

DECLINED_CARD = "tok_decline"
# The charge's deadline passes without an answer: nothing was charged, or the charge went
# through and its answer was lost.
UNANSWERED_CARD = "tok_unanswered"
ANSWER_LOST_CARD = "tok_answer_lost"


class GaveUp(Exception):
    """Stands for an effect's deadline passing (a terminal failure of the call)."""


@dataclass
class LedgerProvider:
    """A payment provider as payments relies on it: one charge per idempotency key (asked
    again, it answers the same), a voided key refuses every later charge, one refund per key.
    A charge on ``tok_decline`` is declined; on ``tok_unanswered`` and ``tok_answer_lost`` it
    is never answered (the second charges all the same)."""

    charges: dict[str, ProviderCharge] = field(default_factory=dict)
    refunds: dict[str, ProviderRefund] = field(default_factory=dict)
    voided: set[str] = field(default_factory=set)

    def charge(self, request: Charge) -> ProviderCharge | ProviderVoided:
        key = request.idempotency_key
        if key in self.voided:
            return ProviderVoided(key)
        if request.card_token == UNANSWERED_CARD:
            raise GaveUp("no answer before the charge's deadline")
        if key not in self.charges:
            declined = request.card_token == DECLINED_CARD
            self.charges[key] = ProviderCharge(
                charge_id=f"ch_{request.order_id}",
                approved=not declined,
                amount_cents=request.amount_cents,
                decline_code="card_declined" if declined else None,
                reason="declined" if declined else None,
            )
        if request.card_token == ANSWER_LOST_CARD:
            raise GaveUp("charged, but no answer before the charge's deadline")
        return self.charges[key]

    def void_charge(self, idempotency_key: str) -> ProviderCharge | ProviderVoided:
        if idempotency_key in self.charges:
            return self.charges[idempotency_key]
        self.voided.add(idempotency_key)
        return ProviderVoided(idempotency_key)

    def refund(self, request: Refund) -> ProviderRefund:
        if request.idempotency_key not in self.refunds:
            charged = [c for c in self.charges.values() if c.approved]
            assert request.charge_id in [c.charge_id for c in charged], "refund of no charge"
            self.refunds[request.idempotency_key] = ProviderRefund(
                refund_id=f"re_{request.charge_id}",
                charge_id=request.charge_id,
                amount_cents=request.amount_cents,
            )
        return self.refunds[request.idempotency_key]

    @property
    def kept_cents(self) -> int:
        """The money the provider holds for the merchant: approved charges less refunds."""
        charged = sum(c.amount_cents for c in self.charges.values() if c.approved)
        return charged - sum(r.amount_cents for r in self.refunds.values())


def dependencies() -> Dependencies:
    """What the composition root gives the service, with the ledger for a provider."""
    return dict(compose(PaymentsSettings(), LedgerProvider()).dependencies)


def created(saga: Saga, card: str = CARD) -> Step:
    return Step(
        OrderCreated(
            order_id=saga.order_id,
            customer_id="customer-1",
            email=EMAIL,
            lines=LINES,
            card_token=card,
            shipping_address=ADDRESS,
        )
    )


def reserved(saga: Saga) -> Step:
    return Step(StockReserved(order_id=saga.order_id, lines=PRICED, total_cents=TOTAL))


def charged(saga: Saga) -> list[Step]:
    return [created(saga), reserved(saga)]


def declined(saga: Saga) -> list[Step]:
    """PaymentFailed once both card and price are known, and orders cancels."""
    card, price = created(saga, DECLINED_CARD), reserved(saga)
    why = cancelled(saga, "payment_declined", "declined", "PENDING")
    return [card, price, Step(why, after=(card, price))]


def cancelled_by_customer(saga: Saga) -> list[Step]:
    """The customer cancels while the card and the price are on their way: the
    cancellation may come before either (nothing is charged), between them, while the
    charge is in flight (its answer is waited for, then refunded) or after it."""
    why = cancelled(saga, "customer_request", "cancelled by the customer", "PENDING")
    return [created(saga), reserved(saga), Step(why)]


def never_answered(card: str) -> Callable[[Saga], list[Step]]:
    """The charge is never answered: PaymentFailed, orders cancels, and the void of the
    charge's key finds the charge (it is refunded) or makes sure none comes later."""

    def steps(saga: Saga) -> list[Step]:
        created_, price = created(saga, card), reserved(saga)
        why = cancelled(saga, "payment_provider_error", "provider unavailable", "PENDING")
        return [created_, price, Step(why, after=(created_, price))]

    return steps


def shipment_failed(saga: Saga) -> list[Step]:
    """PaymentSucceeded once both are known; orders approves, shipments fails, orders cancels."""
    card, price = created(saga), reserved(saga)
    why = cancelled(saga, "shipment_failed", "no delivery", "APPROVED")
    return [card, price, Step(why, after=(card, price))]


def state(runner: HandlerRunner, saga: Saga, dependencies: Dependencies) -> State:
    provider = dependencies["provider"]
    assert isinstance(provider, LedgerProvider)
    return {
        "payment": plain(PaymentRepository(runner.conn).get(saga.order_id)),
        "provider": plain(provider),
        "kept_cents": provider.kept_cents,
        "emitted": emitted(runner),
    }


def settled(state: State) -> State:
    """Whether the order is cancelled, what the card and price were, whether the card was
    declined, and the money the provider keeps. Left out: how nothing came to be kept. A
    cancellation after the charge refunds it (PaymentSucceeded, then PaymentRefunded); one
    before it voids the charge's key (no charge, no event): the payment's status, the
    provider's ledger and the events differ, the money kept does not."""
    payment = state["payment"]
    return {
        "cancelled": payment["cancelled"],
        "card_token": payment["card_token"],
        "amount_cents": payment["amount_cents"],
        "failure_code": payment["failure_code"],
        "kept_cents": state["kept_cents"],
    }


CONTRACT = Contract(
    service="payments",
    dependencies=dependencies,
    state=state,
    settled=settled,
    scenarios=(
        Scenario("charged", charged),
        Scenario("declined", declined),
        Scenario("cancelled-by-customer", cancelled_by_customer),
        Scenario("refunded-after-shipment-failure", shipment_failed),
        Scenario("unanswered-charge-voided", never_answered(UNANSWERED_CARD)),
        Scenario("lost-answer-charge-found-and-refunded", never_answered(ANSWER_LOST_CARD)),
    ),
)
