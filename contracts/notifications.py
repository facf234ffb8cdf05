"""The notifications service's public contract: the events it emits."""

from __future__ import annotations

from typing import Literal

from saga_runtime import Event

NotificationKind = Literal["order_approved", "order_shipped", "order_cancelled"]


class CustomerNotified(Event):
    """The customer was told (email, and webhook when configured)."""

    event_type = "CustomerNotified"

    order_id: str
    kind: NotificationKind
    channels: list[str]
