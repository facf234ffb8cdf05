"""Notifications' part of the handler contract: what the customer is told about one order,
through a mail channel that records what it sends."""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts.orders import OrderApproved, OrderShipped
from notifications.domain import Notification
from notifications.handlers import Notifier
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
class RecordingMail:
    """The email channel: keeps what it would have sent."""

    sent: list[Notification] = field(default_factory=list)

    def __call__(self, notification: Notification) -> None:
        self.sent.append(notification)


def dependencies() -> Dependencies:
    mail = RecordingMail()
    return {"notifier": Notifier(email=mail), "mail": mail}


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
    mail = dependencies["mail"]
    assert isinstance(mail, RecordingMail)
    return {
        "kinds": plain(NotificationRepository(runner.conn).kinds(saga.order_id)),
        "mail": plain(mail.sent),
        "emitted": emitted(runner),
    }


def settled(state: State) -> State:
    """All of it; only the order of the mails (and of the events saying they went) follows
    the order the events came in."""
    return {**state, "mail": unordered(state["mail"]), "emitted": unordered(state["emitted"])}


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
