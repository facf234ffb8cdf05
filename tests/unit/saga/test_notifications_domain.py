"""Notifications: texts and identities, the sends' requests and calls, and when a
notification is announced (CustomerNotified once, in whatever order and however often its
channels' outcomes come)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.notifications import CustomerNotified
from contracts.orders import Address, OrderApproved, OrderCancelled, OrderLine, OrderShipped
from notifications import channels, domain
from notifications.domain import Delivery, Notification
from notifications.errors import DeliveryRejected
from notifications.handlers import DeliveryPlan
from notifications.message import build_message
from saga_runtime import RetryableError

ADDRESS = Address(
    name="Ada Lovelace",
    line1="1 Main St",
    line2="Flat 2",
    city="London",
    postal_code="N1 9GU",
    country="gb",
)
APPROVED = OrderApproved(
    order_id="o-1",
    customer_id="c-1",
    email="ada@example.com",
    lines=[OrderLine(sku="SKU-1", quantity=2), OrderLine(sku="SKU-2", quantity=1)],
    total_cents=12_345,
    shipping_address=ADDRESS,
)
SHIPPED = OrderShipped(
    order_id="o-1", email="ada@example.com", shipment_id="shp_1", carrier="Parcelo"
)


def cancelled(reason: str = "changed my mind", previous: str = "APPROVED") -> OrderCancelled:
    return OrderCancelled(
        order_id="o-1",
        email="ada@example.com",
        reason_code="customer_request",
        reason=reason,
        previous_status=previous,  # type: ignore[arg-type]
    )


def test_approved_text_lists_items_total_and_address() -> None:
    n = domain.order_approved(APPROVED)
    assert (n.kind, n.order_id, n.recipient) == ("order_approved", "o-1", "ada@example.com")
    assert n.subject == "Your order o-1 is confirmed"
    for expected in ("2 x SKU-1", "1 x SKU-2", "Total: 123.45", "Flat 2", "N1 9GU London", "GB"):
        assert expected in n.body


def test_shipped_text_names_carrier_and_shipment() -> None:
    n = domain.order_shipped(SHIPPED)
    assert n.kind == "order_shipped"
    assert n.subject == "Your order o-1 has shipped"
    assert "Carrier: Parcelo" in n.body and "Shipment: shp_1" in n.body


def test_cancelled_text_gives_the_reason_and_what_happens_to_the_money() -> None:
    after_approval = domain.order_cancelled(cancelled("the carrier cannot deliver"))
    assert after_approval.kind == "order_cancelled"
    assert after_approval.subject == "Your order o-1 was cancelled"
    assert "Reason: the carrier cannot deliver" in after_approval.body
    assert "will be refunded" in after_approval.body
    pending = domain.order_cancelled(cancelled("out of stock", previous="PENDING"))
    assert "Reason: out of stock" in pending.body
    assert "If any payment was taken" in pending.body


@pytest.mark.parametrize(
    ("cents", "text"),
    [(0, "0.00"), (5, "0.05"), (100, "1.00"), (12_345, "123.45"), (-250, "-2.50")],
)
def test_format_cents(cents: int, text: str) -> None:
    assert domain.format_cents(cents) == text


def test_identities_are_deterministic_per_order_and_kind() -> None:
    n = domain.order_cancelled(cancelled())
    again = domain.order_cancelled(cancelled("another reason"))
    assert n.message_id == again.message_id == "<o-1.order_cancelled@saga-outbox>"
    assert n.delivery_id == again.delivery_id
    assert domain.order_approved(APPROVED).delivery_id != n.delivery_id


def test_email_carries_the_message_id_and_the_text() -> None:
    n = domain.order_shipped(SHIPPED)
    message = build_message(n, sender="Shop <shop@example.com>")
    assert message["Message-ID"] == "<o-1.order_shipped@saga-outbox>"
    assert message["To"] == "ada@example.com"
    assert message["From"] == "Shop <shop@example.com>"
    assert message["Subject"] == n.subject
    assert message["X-Saga-Notification"] == "order_shipped"
    assert message.get_payload(decode=True).decode(message.get_content_charset()) == n.body


# --- the sends' requests and identities -----------------------------------------------


def test_a_request_holds_the_whole_notification() -> None:
    for n in (domain.order_approved(APPROVED), domain.order_shipped(SHIPPED)):
        request = n.to_request()
        assert json.loads(json.dumps(request)) == request, "stored as JSON"
        assert Notification.from_request(request) == n


def test_a_request_of_an_unknown_kind_is_refused() -> None:
    request = {**domain.order_shipped(SHIPPED).to_request(), "kind": "order_lost"}
    with pytest.raises(ValueError, match="order_lost"):
        Notification.from_request(request)


def test_each_order_kind_and_channel_has_its_own_key() -> None:
    keys = {
        domain.effect_key(order, kind, channel)
        for order in ("o-1", "o-2")
        for kind in ("order_approved", "order_shipped")
        for channel in ("email", "webhook")
    }
    assert len(keys) == 8
    assert domain.effect_key("o-1", "order_shipped", "email") == (
        "notifications:o-1:order_shipped:email"
    )


def test_a_plan_names_known_channels_once_and_a_positive_deadline() -> None:
    assert DeliveryPlan().channels == ("email",)
    assert DeliveryPlan(channels=["email", "webhook"]).channels == ("email", "webhook")
    for wrong in ((), ("sms",), ("email", "email")):
        with pytest.raises(ValueError, match="channels"):
            DeliveryPlan(channels=wrong)
    with pytest.raises(ValueError, match="deadline"):
        DeliveryPlan(deadline=timedelta(0))


# --- the calls: what goes out, and what a failure becomes -------------------------------


@dataclass
class FakeChannel:
    """The mailer or the webhook client: records every send; raises when told to."""

    failures: list[Exception] = field(default_factory=list)
    sent: list[Notification] = field(default_factory=list)

    def send(self, notification: Notification) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(notification)

    post = send


def test_a_repeated_send_carries_the_same_message_id_and_delivery_id() -> None:
    """A crash between a send and its recording makes the executor call again."""
    n = domain.order_approved(APPROVED)
    key = domain.effect_key(n.order_id, n.kind, "email")
    mailer, webhook = FakeChannel(), FakeChannel()
    first = channels.send_email(n.to_request(), key, mailer=mailer)
    again = channels.send_email(n.to_request(), key, mailer=mailer)
    assert first == again == {"message_id": "<o-1.order_approved@saga-outbox>"}
    assert mailer.sent == [n, n]
    assert {build_message(m, sender="shop@example.com")["Message-ID"] for m in mailer.sent} == {
        first["message_id"]
    }
    hooked = [channels.post_webhook(n.to_request(), key, webhook=webhook) for _ in range(2)]
    assert hooked == [{"delivery_id": n.delivery_id}] * 2
    assert webhook.sent == [n, n]


def test_a_send_passes_on_what_its_client_says_of_a_failure() -> None:
    request = domain.order_approved(APPROVED).to_request()
    down = FakeChannel(failures=[RetryableError("SMTP unavailable")])
    with pytest.raises(RetryableError):
        channels.send_email(request, "k", mailer=down)
    refused = FakeChannel(failures=[DeliveryRejected("550 no such mailbox")])
    with pytest.raises(DeliveryRejected):
        channels.post_webhook(request, "k", webhook=refused)


def test_a_webhook_requested_before_it_was_turned_off_fails_for_good() -> None:
    with pytest.raises(DeliveryRejected, match="NOTIFICATIONS_WEBHOOK_URL"):
        channels.post_webhook(domain.order_approved(APPROVED).to_request(), "k", webhook=None)


# --- when a notification is announced: any order of outcomes, operator retries included --

BOTH = ("email", "webhook")


def delivery(chosen: tuple[str, ...] = BOTH) -> Delivery:
    return Delivery(order_id="o-1", kind="order_approved", channels=chosen)


# Each channel's first outcome, in any order, then outcomes again (an operator retried a
# failed or abandoned send and it was decided again), in any order.
outcomes = st.sampled_from([("email",), BOTH]).flatmap(
    lambda chosen: st.tuples(
        st.just(chosen),
        st.permutations(chosen).flatmap(
            lambda order: st.tuples(*(st.tuples(st.just(c), st.booleans()) for c in order))
        ),
        st.lists(st.tuples(st.sampled_from(chosen), st.booleans()), max_size=6),
    )
)


@given(outcomes)
def test_a_notification_is_announced_once_when_settled_with_what_was_delivered(
    case: tuple[tuple[str, ...], tuple[tuple[str, bool], ...], list[tuple[str, bool]]],
) -> None:
    chosen, first, again = case
    state = delivery(chosen)
    told: list[tuple[int, CustomerNotified]] = []
    for step, (channel, ok) in enumerate([*first, *again]):
        state, event = state.record(channel, delivered=ok)
        if event is not None:
            told.append((step, event))

    ever = {c for c, ok in [*first, *again] if ok}
    assert state.delivered == [c for c in chosen if c in ever], "delivered once is for good"
    assert state.settled
    if not ever:
        assert told == [] and not state.notified, "nobody was told: nothing announced"
        return
    [(step, event)] = told  # once, however often a channel's outcome came
    assert step >= len(chosen) - 1, "not before every channel has an outcome"
    assert (event.order_id, event.kind) == ("o-1", "order_approved")
    assert event.channels and set(event.channels) <= ever
    assert event.channels == [c for c in chosen if c in event.channels], "in channel order"
    assert state.notified


def test_a_channel_that_failed_for_good_is_left_out_of_the_announcement() -> None:
    state, event = delivery().record("email", delivered=True)
    assert event is None, "the webhook has no outcome yet"
    state, event = state.record("webhook", delivered=False)
    assert event == CustomerNotified(order_id="o-1", kind="order_approved", channels=["email"])
    state, event = state.record("webhook", delivered=True)  # retried by an operator
    assert event is None and state.delivered == ["email", "webhook"]


def test_a_notification_no_channel_delivered_is_announced_when_a_retry_delivers_it() -> None:
    state, _ = delivery(("email",)).record("email", delivered=False)
    assert state.settled and not state.notified
    state, event = state.record("email", delivered=True)
    assert event == CustomerNotified(order_id="o-1", kind="order_approved", channels=["email"])


def test_an_outcome_for_a_channel_the_notification_does_not_use_is_a_bug() -> None:
    with pytest.raises(ValueError, match="webhook"):
        delivery(("email",)).record("webhook", delivered=True)
