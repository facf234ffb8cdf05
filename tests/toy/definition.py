"""The toy's line in the system definition.

A real sixth service is one ``Service(...)`` more in ``saga_system/definition.py`` and its
name in ``SYSTEM``'s ``services``; the toy stays out of the product, so it extends the
declared system instead: ``SYSTEM.with_service(LOYALTY)`` is checked like any definition.
"""

from __future__ import annotations

from contracts.orders import OrderShipped
from saga_runtime import Service, reaction
from saga_system import SYSTEM
from tests.toy.loyalty import bootstrap, handlers
from tests.toy.loyalty.events import PointsAwarded

LOYALTY = Service(
    name="loyalty",
    emits=(PointsAwarded,),
    handles={OrderShipped: reaction(handlers.on_order_shipped, PointsAwarded)},
    # A service outside the top-level package convention (<name>/bootstrap.py) names its
    # composition root here.
    settings=bootstrap.Settings,
    compose=bootstrap.compose,
)

# Nobody in the saga reacts to points: they are for the customer's account page.
SYSTEM_WITH_LOYALTY = SYSTEM.with_service(LOYALTY, terminal=(PointsAwarded,))
