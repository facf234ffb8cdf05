"""The provider requests as effects: a charge, a void and a refund, their calls and JSON.

A decision that needs the provider records an effect (``requested``); the
service's effect executor makes the call afterwards, out of any transaction,
with the request's idempotency key, and hands the result, as JSON, to the
decision about it (``payments.handlers``). ``ProviderUnavailable`` (a timeout,
a refused connection, a 5xx or 429) is a ``RetryableError``: the executor tries
again with the same key until the effect's deadline. Any other failure (the
provider refused the request) fails the effect at once.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from payments import domain
from payments.domain import (
    Charge,
    Decision,
    Payment,
    ProviderCharge,
    ProviderRefund,
    ProviderVoided,
    Refund,
    Request,
    RequestKind,
    VoidCharge,
)
from payments.provider import PaymentProvider
from saga_runtime import EffectOutcome, crash_point

JSON = dict[str, Any]


def requested(request: Request) -> tuple[RequestKind, str, JSON]:
    """The effect ``request`` becomes: its kind, idempotency key and JSON request."""
    if isinstance(request, Charge):
        body: JSON = {
            "order_id": request.order_id,
            "amount_cents": request.amount_cents,
            "card_token": request.card_token,
        }
        return "charge", request.idempotency_key, body
    if isinstance(request, VoidCharge):
        return "void", request.idempotency_key, {"charge_key": request.charge_key}
    return (
        "refund",
        request.idempotency_key,
        {"charge_id": request.charge_id, "amount_cents": request.amount_cents},
    )


# The calls, made by the executor (``key`` is the effect's idempotency key).


def charge(request: JSON, key: str, *, provider: PaymentProvider) -> JSON:
    answer = provider.charge(
        Charge(
            idempotency_key=key,
            order_id=str(request["order_id"]),
            amount_cents=int(request["amount_cents"]),
            card_token=str(request["card_token"]),
        )
    )
    if isinstance(answer, ProviderCharge) and answer.approved:
        # The money moved and nothing is recorded yet: after a crash here the charge
        # is asked for again under the same key, and the provider answers with this one.
        crash_point("payments.after_charge")
    return charge_result(answer)


def void(request: JSON, key: str, *, provider: PaymentProvider) -> JSON:
    """Voids the charge's key (the request's), not the void's own effect key."""
    return charge_result(provider.void_charge(str(request["charge_key"])))


def refund(request: JSON, key: str, *, provider: PaymentProvider) -> JSON:
    answer = provider.refund(
        Refund(
            idempotency_key=key,
            charge_id=str(request["charge_id"]),
            amount_cents=int(request["amount_cents"]),
        )
    )
    return {
        "refund_id": answer.refund_id,
        "charge_id": answer.charge_id,
        "amount_cents": answer.amount_cents,
    }


# The results, as stored with the effect and read back by the decisions.


def answered(kind: RequestKind, outcome: EffectOutcome) -> Callable[[Payment], Decision]:
    """What the outcome of an effect of ``kind`` decides about the payment.

    A charge that failed for good fails the payment; a void or refund that did
    changes nothing: the payment keeps waiting for it, and the failed effect
    waits for an operator to retry it.
    """
    if kind == "charge":
        if outcome.ok:
            return partial(domain.charge_answered, answer=charge_answer(outcome.result))
        reason = f"the payment provider is unavailable ({outcome.error})"
        return partial(domain.charge_failed, reason=reason[:500])
    if not outcome.ok:
        return Decision  # Decision(payment): the payment as it is, nothing to emit or ask
    if kind == "void":
        return partial(domain.voided, found=charge_answer(outcome.result))
    return partial(domain.refunded, answer=refund_answer(outcome.result))


def charge_result(answer: ProviderCharge | ProviderVoided) -> JSON:
    if isinstance(answer, ProviderVoided):
        return {"voided": True, "idempotency_key": answer.idempotency_key}
    return {
        "charge_id": answer.charge_id,
        "approved": answer.approved,
        "amount_cents": answer.amount_cents,
        "decline_code": answer.decline_code,
        "reason": answer.reason,
    }


def charge_answer(result: JSON) -> ProviderCharge | ProviderVoided:
    if result.get("voided"):
        return ProviderVoided(str(result["idempotency_key"]))
    return ProviderCharge(
        charge_id=str(result["charge_id"]),
        approved=bool(result["approved"]),
        amount_cents=int(result["amount_cents"]),
        decline_code=result.get("decline_code"),
        reason=result.get("reason"),
    )


def refund_answer(result: JSON) -> ProviderRefund:
    return ProviderRefund(
        refund_id=str(result["refund_id"]),
        charge_id=str(result["charge_id"]),
        amount_cents=int(result["amount_cents"]),
    )
