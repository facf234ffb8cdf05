"""Notifications' part of the handler contract: what the customer is told about one order,
on both channels (e-mail and webhook), through fakes that record what they send.

The sends are effects: the contract settles them right after each event, or only once
every event has arrived, and the outcome must not depend on it."""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts.orders import OrderApproved, OrderShipped
from notifications.domain import Notification
from notifications.handlers import DeliveryPlan
from notifications.repository import NotificationRepository
from saga_runtime.testing import HandlerRunner
from tests.integration.contract.scenario import (
    ADDRESS,
    CARRIER,
    EMAIL,
    LINES,
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
    unordered,
)


@dataclass
class Recording:
    """A channel (the mailer or the webhook client): keeps what it would have sent."""

    sent: list[Notification] = field(default_factory=list)

    def send(self, notification: Notification) -> None:
        self.sent.append(notification)

    def post(self, notification: Notification) -> None:
        self.sent.append(notification)


def dependencies() -> Dependencies:
    return {
        "delivery_plan": DeliveryPlan(channels=("email", "webhook")),
        "mailer": Recording(),
        "webhook": Recording(),
    }


def approved(saga: Saga) -> Step:
    return Step(
        OrderApproved(
            order_id=saga.order_id,
            customer_id="customer-1",
            email=EMAIL,
            lines=LINES,
            total_cents=TOTAL,
            shipping_address=ADDRESS,
        )
    )


def shipped(saga: Saga) -> list[Step]:
    on_its_way = OrderShipped(
        order_id=saga.order_id, email=EMAIL, shipment_id="shp_1", carrier=CARRIER
    )
    return [approved(saga), Step(on_its_way)]


def shipment_failed(saga: Saga) -> list[Step]:
    return [approved(saga), Step(cancelled(saga, "shipment_failed", "no delivery", "APPROVED"))]


def declined(saga: Saga) -> list[Step]:
    return [Step(cancelled(saga, "payment_declined", "declined", "PENDING"))]


def state(runner: HandlerRunner, saga: Saga, dependencies: Dependencies) -> State:
    mail, webhook = dependencies["mailer"], dependencies["webhook"]
    assert isinstance(mail, Recording) and isinstance(webhook, Recording)
    return {
        "notifications": plain(NotificationRepository(runner.conn).deliveries(saga.order_id)),
        "mail": plain(mail.sent),
        "webhook": plain(webhook.sent),
        "emitted": emitted(runner),
    }


def settled(state: State) -> State:
    """All of it; only the order of the sends (and of the events saying they went) follows
    the order the events came in."""
    return {
        **state,
        "mail": unordered(state["mail"]),
        "webhook": unordered(state["webhook"]),
        "emitted": unordered(state["emitted"]),
    }


CONTRACT = Contract(
    service="notifications",
    dependencies=dependencies,
    state=state,
    settled=settled,
    scenarios=(
        Scenario("shipped", shipped),
        Scenario("shipment-failed", shipment_failed),
        Scenario("declined", declined),
    ),
)
