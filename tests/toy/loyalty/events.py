"""The toy's public contract: the event it emits.

A real service's events live in ``contracts/<service>.py``; the toy keeps its own here so
that nothing in the product mentions it.
"""

from __future__ import annotations

from saga_runtime import Event


class PointsAwarded(Event):
    """A shipped order earned its customer loyalty points."""

    event_type = "PointsAwarded"

    order_id: str
    email: str
    points: int
