"""The choreography of the order saga: one line per service.

Each service names the events it emits and, per event class it handles, its reaction:
the handler and the events that reaction may emit. Everything else (subscriptions,
topics, consumer groups, the relay's outboxes, the runnable services, the operator's and
harness's maps, the diagram) is derived from ``SYSTEM``; ``System`` refuses a definition
that contradicts itself, and ``tests/unit/test_system_definition.py`` checks the saga:
every path ends in a final order state and every step with an effect is undone on
cancellation.

A service's composition root is ``<name>/bootstrap.py`` (``Settings`` and ``compose``).
"""

from __future__ import annotations

from contracts.notifications import CustomerNotified
from contracts.orders import OrderApproved, OrderCancelled, OrderCreated, OrderShipped
from contracts.payments import PaymentFailed, PaymentRefunded, PaymentSucceeded
from contracts.shipments import ShipmentCancelled, ShipmentFailed, ShipmentScheduled
from contracts.stock import (
    StockReleased,
    StockReservationFailed,
    StockReserved,
    StockRestocked,
    StockSold,
)
from notifications import channels as notification_channels
from notifications import handlers as notifications
from orders import handlers as orders
from payments import effects as payment_calls
from payments import handlers as payments
from saga_runtime import Service, System, effect, reaction
from shipments import handlers as shipments
from shipments.domain import BOOKING_DEADLINE
from stock import handlers as stock

ORDERS = Service(
    name="orders",
    emits=(OrderCreated, OrderApproved, OrderShipped, OrderCancelled),
    # The API places and cancels orders; the deadline sweeper cancels late ones.
    commands=(OrderCreated, OrderCancelled),
    handles={
        StockReserved: reaction(orders.on_stock_reserved),
        StockReservationFailed: reaction(orders.on_stock_reservation_failed, OrderCancelled),
        PaymentSucceeded: reaction(orders.on_payment_succeeded, OrderApproved),
        PaymentFailed: reaction(orders.on_payment_failed, OrderCancelled),
        ShipmentScheduled: reaction(orders.on_shipment_scheduled, OrderShipped),
        ShipmentFailed: reaction(orders.on_shipment_failed, OrderCancelled),
        # The rest only joins the order's timeline.
        **{
            event: reaction(orders.on_other_event)
            for event in (
                StockReleased,
                StockSold,
                StockRestocked,
                PaymentRefunded,
                ShipmentCancelled,
                CustomerNotified,
            )
        },
    },
)

STOCK = Service(
    name="stock",
    emits=(StockReserved, StockReservationFailed, StockReleased, StockSold, StockRestocked),
    handles={
        OrderCreated: reaction(stock.on_order_created, StockReserved, StockReservationFailed),
        OrderApproved: reaction(stock.on_order_approved, StockSold),
        OrderCancelled: reaction(stock.on_order_cancelled, StockReleased, StockRestocked),
    },
)

PAYMENTS = Service(
    name="payments",
    emits=(PaymentSucceeded, PaymentFailed, PaymentRefunded),
    # Its reactions only record facts and request provider calls; the events listed are
    # those that follow through the calls' decisions (the saga's shape, which the checks
    # read from the reactions).
    handles={
        # The charge is asked for when both the card (OrderCreated) and the amount
        # (StockReserved) are known, whichever arrives second.
        OrderCreated: reaction(payments.on_order_created, PaymentSucceeded, PaymentFailed),
        StockReserved: reaction(payments.on_stock_reserved, PaymentSucceeded, PaymentFailed),
        OrderCancelled: reaction(payments.on_order_cancelled, PaymentRefunded),
    },
    # Deadlines and retries come from its settings (``payments.bootstrap``): a charge
    # gives up in time for the order's deadline, an undo (void, refund) only after a day.
    effects={
        "charge": effect(
            payment_calls.charge,
            payments.on_charge_outcome,
            emits=(PaymentSucceeded, PaymentFailed),
            deadline="charge_deadline",
            retry="charge_retry",
        ),
        "void": effect(
            payment_calls.void,
            payments.on_void_outcome,
            deadline="undo_deadline",
            retry="undo_retry",
        ),
        "refund": effect(
            payment_calls.refund,
            payments.on_refund_outcome,
            emits=(PaymentRefunded,),
            deadline="undo_deadline",
            retry="undo_retry",
        ),
    },
)

SHIPMENTS = Service(
    name="shipments",
    emits=(ShipmentScheduled, ShipmentFailed, ShipmentCancelled),
    handles={
        # The reaction refuses an address the carrier cannot serve at once (ShipmentFailed)
        # or asks the carrier to book (the effect below), whose decision emits the rest:
        # the saga's checks read ShipmentScheduled here as this reaction's outcome.
        OrderApproved: reaction(shipments.on_order_approved, ShipmentScheduled, ShipmentFailed),
        OrderCancelled: reaction(shipments.on_order_cancelled, ShipmentCancelled),
    },
    effects={
        # The carrier's booking, made outside the consumer's transaction, many at once.
        # Each approval gives its own deadline (SHIPMENTS_BOOKING_DEADLINE).
        "book": effect(
            shipments.book,
            shipments.on_booked,
            emits=(ShipmentScheduled, ShipmentFailed),
            deadline=BOOKING_DEADLINE,
        ),
    },
)

NOTIFICATIONS = Service(
    name="notifications",
    emits=(CustomerNotified,),
    # Each reaction claims the notification and requests its sends, one effect per
    # channel; the decision about the last channel's outcome emits CustomerNotified
    # (declared on the reactions too: it is what they lead to).
    handles={
        event: reaction(handler, CustomerNotified)
        for event, handler in (
            (OrderApproved, notifications.on_order_approved),
            (OrderShipped, notifications.on_order_shipped),
            (OrderCancelled, notifications.on_order_cancelled),
        )
    },
    effects={
        channel: effect(
            call,
            notifications.on_delivered,
            emits=(CustomerNotified,),
            deadline=notifications.DELIVERY_DEADLINE,  # each request sets its own
            retry=notifications.DELIVERY_RETRY,
        )
        for channel, call in (
            ("email", notification_channels.send_email),
            ("webhook", notification_channels.post_webhook),
        )
    },
)

SYSTEM = System(
    services=(ORDERS, STOCK, PAYMENTS, SHIPMENTS, NOTIFICATIONS),
    start=OrderCreated,
    final=(OrderShipped, OrderCancelled),
    cancelled=OrderCancelled,
    # Each step that changes something outside its service, and what undoes it.
    compensations={
        StockReserved: (StockReleased,),
        StockSold: (StockRestocked,),
        PaymentSucceeded: (PaymentRefunded,),
        ShipmentScheduled: (ShipmentCancelled,),
    },
    # Steps that change nothing outside their service: nothing to undo.
    no_effect=(StockReservationFailed, PaymentFailed, ShipmentFailed, CustomerNotified),
)
