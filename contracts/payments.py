"""The payments service's public contract: the events it emits."""

from __future__ import annotations

from typing import Literal

from saga_runtime import Event


class PaymentSucceeded(Event):
    event_type = "PaymentSucceeded"

    order_id: str
    amount_cents: int
    charge_id: str


class PaymentFailed(Event):
    event_type = "PaymentFailed"

    order_id: str
    reason_code: Literal["payment_declined", "insufficient_funds", "payment_provider_error"]
    reason: str


class PaymentRefunded(Event):
    event_type = "PaymentRefunded"

    order_id: str
    amount_cents: int
    charge_id: str
    refund_id: str
