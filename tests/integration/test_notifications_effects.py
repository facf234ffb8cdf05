"""Notifications' reactions and decisions on the real database (``HandlerRunner``): what a
reaction requests, and what each send's outcome does to the notification and its event.

The calls are the contract's recording fakes, or outcomes given by the test (a send that
failed for good, an operator's retry decided again). The real executor, SMTP sink and
broker are in ``test_notifications_service.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from contracts.orders import OrderApproved
from notifications.domain import order_approved
from notifications.handlers import DeliveryPlan, on_delivered, on_order_approved
from notifications.repository import NotificationRepository
from saga_runtime import Envelope, Outcome, UnitOfWork
from saga_runtime.effects import Effect, EffectOutcome
from saga_runtime.testing import HandlerRunner
from tests.fixtures.handlers import OpenRunner
from tests.integration.contract.notifications import Recording
from tests.integration.contract.scenario import ADDRESS, EMAIL, LINES, TOTAL, Saga, cancelled

pytestmark = pytest.mark.integration

FAILED = EffectOutcome(ok=False, error="DeliveryRejected: 550 no such mailbox")


def approved(order_id: str) -> Envelope:
    event = OrderApproved(
        order_id=order_id,
        customer_id="customer-1",
        email=EMAIL,
        lines=LINES,
        total_cents=TOTAL,
        shipping_address=ADDRESS,
    )
    return Envelope.new(event, aggregate_id=order_id, producer="orders")


@pytest.fixture
def runner(handler_runner: OpenRunner) -> Iterator[HandlerRunner]:
    dependencies = {
        "delivery_plan": DeliveryPlan(channels=("email", "webhook"), deadline=timedelta(hours=3)),
        "mailer": Recording(),
        "webhook": Recording(),
    }
    with handler_runner("notifications", dependencies) as opened:
        yield opened


def notified(runner: HandlerRunner) -> list[dict[str, Any]]:
    return [e.payload for e in runner.emitted if e.event_type == "CustomerNotified"]


def test_a_reaction_claims_the_notification_and_requests_one_send_per_channel(
    runner: HandlerRunner,
) -> None:
    event = approved("ord-r1")
    delivery = runner.deliver(event)

    assert delivery.emitted == (), "nothing is sent, and nobody told, in the event's transaction"
    assert [(e.kind, e.key, e.aggregate_id) for e in delivery.effects] == [
        ("email", "notifications:ord-r1:order_approved:email", "ord-r1"),
        ("webhook", "notifications:ord-r1:order_approved:webhook", "ord-r1"),
    ]
    assert all(e.correlation_id == event.correlation_id for e in delivery.effects)
    assert delivery.effects[0].request["subject"] == "Your order ord-r1 is confirmed"
    deadlines = runner.conn.execute(
        "SELECT deadline_at - created_at FROM notifications.effects ORDER BY id"
    ).fetchall()
    assert deadlines == [(timedelta(hours=3),)] * 2, "the plan's deadline"

    again = Envelope.new(event.payload_as(OrderApproved), aggregate_id="ord-r1", producer="orders")
    assert runner.deliver(again).effects == (), "a second approval of the order requests nothing"
    assert runner.deliver(event).outcome is Outcome.DUPLICATE


def test_the_customer_is_told_once_both_channels_have_delivered(runner: HandlerRunner) -> None:
    runner.deliver(approved("ord-r2"))
    assert runner.settle().emitted == (), "the webhook has no outcome yet"
    assert runner.settle().event_types == ["CustomerNotified"]
    assert notified(runner) == [
        {"order_id": "ord-r2", "kind": "order_approved", "channels": ["email", "webhook"]}
    ]
    [delivery] = NotificationRepository(runner.conn).deliveries("ord-r2").values()
    assert (delivery.delivered, delivery.notified) == (["email", "webhook"], True)


def test_a_channel_that_failed_for_good_is_left_out_and_its_retry_announces_nothing_again(
    runner: HandlerRunner,
) -> None:
    runner.deliver(approved("ord-r3"))
    [email] = runner.due_effects()  # the webhook waits for it: one order, in order
    runner.settle(email)
    [webhook] = runner.due_effects()
    assert runner.settle(webhook, FAILED).event_types == ["CustomerNotified"]
    assert notified(runner) == [
        {"order_id": "ord-r3", "kind": "order_approved", "channels": ["email"]}
    ]

    # An operator retries the failed webhook once the receiver is fixed: decided again.
    assert runner.settle(webhook, EffectOutcome(ok=True)).emitted == ()
    assert len(notified(runner)) == 1, "announced once"
    [delivery] = NotificationRepository(runner.conn).deliveries("ord-r3").values()
    assert delivery.delivered == ["email", "webhook"], "the late delivery is recorded"


def test_a_notification_no_channel_delivered_is_announced_only_when_a_retry_delivers_it(
    runner: HandlerRunner,
) -> None:
    runner.deliver(approved("ord-r4"))
    [email] = runner.due_effects()  # the webhook waits for it: one order, in order
    runner.settle(email, FAILED)
    [webhook] = runner.due_effects()
    assert runner.settle(webhook, FAILED).emitted == (), "nobody was told"
    [row] = runner.conn.execute(
        "SELECT outcomes, notified_at FROM notifications.notifications WHERE order_id = 'ord-r4'"
    ).fetchall()
    assert row == ({"email": "failed", "webhook": "failed"}, None)

    assert runner.settle(email, EffectOutcome(ok=True)).event_types == ["CustomerNotified"]
    assert runner.settle(email, EffectOutcome(ok=True)).emitted == (), "decided twice: once"
    assert notified(runner) == [
        {"order_id": "ord-r4", "kind": "order_approved", "channels": ["email"]}
    ]


def test_one_orders_sends_go_one_after_the_other_in_the_order_requested(
    runner: HandlerRunner,
) -> None:
    saga = Saga.new()
    runner.deliver(approved(saga.order_id))
    cancel = cancelled(saga, "shipment_failed", "no delivery", "APPROVED")
    runner.deliver(Envelope.new(cancel, aggregate_id=saga.order_id, producer="orders"))
    sent = []
    while due := runner.due_effects():
        [head] = due  # one order: only its oldest unfinished send is due
        sent.append(head.key.removeprefix(f"notifications:{saga.order_id}:"))
        runner.settle(head)
    assert sent == [
        "order_approved:email",
        "order_approved:webhook",
        "order_cancelled:email",
        "order_cancelled:webhook",
    ]
    assert [p["kind"] for p in notified(runner)] == ["order_approved", "order_cancelled"]


class CountingConnection:
    """The runner's connection, counting the statements that name each table."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.statements: list[str] = []

    def execute(self, query: Any, params: Any = None) -> Any:
        self.statements.append(str(query))
        return self._conn.execute(query, params)

    def naming(self, table: str) -> int:
        return sum(table in statement for statement in self.statements)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_a_batch_reads_and_writes_its_notifications_and_sends_once_per_table(
    runner: HandlerRunner,
) -> None:
    """As the consumer applies a batch, and the executor settles outcomes together: one
    unit of work holding every order's lock; the rows are read once and written once."""
    plan = DeliveryPlan(channels=("email", "webhook"))
    orders = [f"ord-b{n}" for n in range(4)]
    events = [approved(order_id) for order_id in orders]
    counting = CountingConnection(runner.conn)
    with runner.conn.transaction():
        uow = UnitOfWork(
            conn=counting,  # type: ignore[arg-type]
            outbox=runner.units.outbox,
            producer="notifications",
            effects=runner.units.effects,
        )
        for order_id in orders:
            uow.lock(order_id)
        for event in [*events, events[0]]:  # the last one a second time: claimed already
            on_order_approved(uow, event, delivery_plan=plan)
        uow.flush()
    assert counting.naming('"notifications"."effects"') == 1
    assert counting.naming("notifications.notifications") == 2  # one read, one write
    assert len(uow.requested) == 8  # e-mail and webhook of each order, once
    sends = [
        Effect(id=0, aggregate_id=e.aggregate_id, kind=kind, key="", request=request)
        for e in events
        for kind, request in [("email", order_request(e)), ("webhook", order_request(e))]
    ]
    counting.statements.clear()
    with runner.conn.transaction():
        uow = UnitOfWork(
            conn=counting,  # type: ignore[arg-type]
            outbox=runner.units.outbox,
            producer="notifications",
            correlation_id=events[0].correlation_id,
        )
        for order_id in orders:
            uow.lock(order_id)
        for send in sends:
            on_delivered(uow, send, EffectOutcome(ok=True))
        uow.flush()
    assert counting.naming("notifications.notifications") == 2
    assert [e.payload["channels"] for e in uow.emitted] == [["email", "webhook"]] * 4
    stored = [NotificationRepository(runner.conn).deliveries(o)["order_approved"] for o in orders]
    assert all(d.notified and d.delivered == ["email", "webhook"] for d in stored)


def order_request(event: Envelope) -> dict[str, str]:
    return order_approved(event.payload_as(OrderApproved)).to_request()
