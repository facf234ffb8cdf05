"""Payments' reactions to order and stock events: plain functions over a unit of work."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TypeVar

from contracts.orders import OrderCancelled, OrderCreated
from contracts.stock import StockReserved
from payments import domain
from payments.domain import Charge, Payment, ProviderCharge, VoidCharge
from payments.provider import PaymentProvider, ProviderUnavailable, RetryPolicy, UndoUnavailable
from payments.repository import PaymentRepository
from saga_runtime import Envelope, Event, UnitOfWork, crash_point, get_logger

log = get_logger(__name__)

# Charge, void, refund: no state needs more provider requests than that.
MAX_STEPS = 3
T = TypeVar("T")


def settle(
    payment: Payment, provider: PaymentProvider, retry: RetryPolicy
) -> tuple[Payment, list[Event]]:
    """Ask the provider what the state calls for until it calls for nothing more.

    A charge the provider cannot take after ``retry.attempts`` fails the payment
    (the order is then cancelled, and its cancellation voids the charge's key:
    the charge is refunded if it went through, refused if it is still on its
    way). A void or a refund it cannot take raises UndoUnavailable, a
    RetryUntilDoneError: the runtime retries the event for as long as the
    provider is down and never dead-letters it, because a refund must not be
    forgotten.
    """
    events: list[Event] = []
    for _ in range(MAX_STEPS):
        step = domain.next_step(payment)
        if step is None:
            return payment, events
        emitted: list[Event] = []
        if isinstance(step, Charge):
            try:
                answer = retry.call(partial(provider.charge, step))
            except ProviderUnavailable as exc:
                log.warning("payments.charge_gave_up", attempts=retry.attempts, error=str(exc))
                reason = f"the payment provider is unavailable ({exc})"
                payment, emitted = domain.provider_failed(payment, reason[:500])
            else:
                if isinstance(answer, ProviderCharge) and answer.approved:
                    # The money moved but nothing is committed yet: a crash here must
                    # lead to one charge, not two, when the event is redelivered.
                    crash_point("payments.after_charge")
                payment, emitted = domain.charged(payment, answer)
        elif isinstance(step, VoidCharge):
            found = _undo(retry, partial(provider.void_charge, step.idempotency_key))
            payment = domain.fenced(payment, found)
        else:
            payment, emitted = domain.refunded(
                payment, _undo(retry, partial(provider.refund, step))
            )
        events += emitted
    if domain.next_step(payment) is not None:
        raise AssertionError(f"payment {payment} still needs the provider after {MAX_STEPS} steps")
    return payment, events


def _undo(retry: RetryPolicy, request: Callable[[], T]) -> T:
    """A void or refund: the provider being down is not a reason to ever give up on it."""
    try:
        return retry.call(request)
    except ProviderUnavailable as exc:
        raise UndoUnavailable(str(exc)) from exc


def _handle(
    uow: UnitOfWork,
    order_id: str,
    learn: Callable[[Payment], Payment],
    provider: PaymentProvider,
    retry: RetryPolicy,
) -> None:
    uow.lock(order_id)
    repository = PaymentRepository(uow.conn)
    current = repository.get(order_id)
    payment, events = settle(learn(current or domain.start(order_id)), provider, retry)
    if payment != current:
        repository.save(payment)
    for event in events:
        uow.emit(event, aggregate_id=order_id)


def on_order_created(
    uow: UnitOfWork, event: Envelope, *, provider: PaymentProvider, retry: RetryPolicy
) -> None:
    created = event.payload_as(OrderCreated)
    learn = partial(domain.card_known, card_token=created.card_token)
    _handle(uow, created.order_id, learn, provider, retry)


def on_stock_reserved(
    uow: UnitOfWork, event: Envelope, *, provider: PaymentProvider, retry: RetryPolicy
) -> None:
    reserved = event.payload_as(StockReserved)
    learn = partial(domain.amount_known, amount_cents=reserved.total_cents)
    _handle(uow, reserved.order_id, learn, provider, retry)


def on_order_cancelled(
    uow: UnitOfWork, event: Envelope, *, provider: PaymentProvider, retry: RetryPolicy
) -> None:
    cancelled = event.payload_as(OrderCancelled)
    _handle(uow, cancelled.order_id, domain.cancel, provider, retry)
