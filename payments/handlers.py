"""Payments' reactions to order and stock events, and its decisions about the provider's answers.

Both are plain functions over a unit of work holding the order's lock: they read
the payment, let the domain decide, then save it, emit its events and request
the provider call it asks for, as an effect made after the transaction commits
(``payments.effects``). No reaction waits for the provider.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from contracts.orders import OrderCancelled, OrderCreated
from contracts.stock import StockReserved
from payments import domain, effects
from payments.domain import Decision, Payment, RequestKind
from payments.repository import PAYMENTS
from saga_runtime import Effect, EffectOutcome, Envelope, UnitOfWork, get_logger

log = get_logger(__name__)


def _apply(
    uow: UnitOfWork,
    order_id: str,
    decide: Callable[[Payment], Decision],
    *,
    answering: RequestKind | None = None,
) -> None:
    uow.lock(order_id)
    current = PAYMENTS.get(uow, order_id) or domain.start(order_id)
    if answering is not None and current.waiting_for != answering:
        # An operator retried an effect that had failed and was settled otherwise since.
        log.info(
            "payments.answer_ignored",
            order_id=order_id,
            answered=answering,
            waiting_for=current.waiting_for,
            status=current.status,
        )
    decision = decide(current)
    if decision.payment != current:
        PAYMENTS.save(uow, decision.payment)
    for event in decision.events:
        uow.emit(event, aggregate_id=order_id)
    if decision.request is not None:
        kind, key, request = effects.requested(decision.request)
        uow.request_effect(kind, aggregate_id=order_id, key=key, request=request)


# Reactions to events.


def on_order_created(uow: UnitOfWork, event: Envelope) -> None:
    created = event.payload_as(OrderCreated)
    _apply(uow, created.order_id, partial(domain.card_known, card_token=created.card_token))


def on_stock_reserved(uow: UnitOfWork, event: Envelope) -> None:
    reserved = event.payload_as(StockReserved)
    _apply(uow, reserved.order_id, partial(domain.amount_known, amount_cents=reserved.total_cents))


def on_order_cancelled(uow: UnitOfWork, event: Envelope) -> None:
    cancelled = event.payload_as(OrderCancelled)
    _apply(uow, cancelled.order_id, domain.cancel)


# Decisions about the provider's answers (each effect's outcome, in its own transaction).


def on_charge_outcome(uow: UnitOfWork, effect: Effect, outcome: EffectOutcome) -> None:
    if not outcome.ok:
        log.warning("payments.charge_gave_up", order_id=effect.aggregate_id, error=outcome.error)
    _apply(uow, effect.aggregate_id, effects.answered("charge", outcome), answering="charge")


def on_void_outcome(uow: UnitOfWork, effect: Effect, outcome: EffectOutcome) -> None:
    if not outcome.ok:
        _undo_failed(effect, outcome)
    _apply(uow, effect.aggregate_id, effects.answered("void", outcome), answering="void")


def on_refund_outcome(uow: UnitOfWork, effect: Effect, outcome: EffectOutcome) -> None:
    if not outcome.ok:
        _undo_failed(effect, outcome)
    _apply(uow, effect.aggregate_id, effects.answered("refund", outcome), answering="refund")


def _undo_failed(effect: Effect, outcome: EffectOutcome) -> None:
    """A void or refund failed past its deadline: never forgotten, nor given up on.

    The payment keeps waiting for it (``Payment.waiting_for``) and the effect stays
    ``failed`` with its error, for an operator to retry (``sagactl effects retry``)
    once the provider takes it; its answer is then decided as any other.
    """
    log.error(
        "payments.undo_failed",
        order_id=effect.aggregate_id,
        effect_id=effect.id,
        kind=effect.kind,
        error=outcome.error,
        action=f"sagactl effects retry --service payments {effect.id}",
    )
