"""Notifications: texts and kinds, and at most one send per kind under any delivery order."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.notifications import CustomerNotified
from contracts.orders import Address, OrderApproved, OrderCancelled, OrderLine, OrderShipped
from notifications import domain, handlers
from notifications.domain import Notification
from notifications.handlers import Notifier
from notifications.mailer import build_message
from saga_runtime import Envelope, Event, RetryableError, UnitOfWork
from tests.unit.fakes import FakeConnection, FakeOutbox

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


# --- handlers under any interleaving and duplication (fake mailer, fake repository) ---


@dataclass
class FakeStore:
    """The notifications table: unique (order, kind); staged rows vanish on rollback.

    And the deliveries table, written outside the transaction: its rows stay.
    """

    committed: list[tuple[str, str]] = field(default_factory=list)
    staged: list[tuple[str, str]] = field(default_factory=list)
    delivered_rows: set[tuple[str, str, str]] = field(default_factory=set)
    reads: int = 0  # queries of the deliveries table
    record_fails: bool = False

    def claim(self, notification: Notification, channels: Sequence[str]) -> bool:
        key = (notification.order_id, notification.kind)
        if key in self.committed or key in self.staged:
            return False
        self.staged.append(key)
        return True

    def delivered(self, notification: Notification) -> set[str]:
        self.reads += 1
        key = (notification.order_id, notification.kind)
        return {channel for *k, channel in self.delivered_rows if tuple(k) == key}

    def record(self, notification: Notification, channels: Sequence[str]) -> None:
        if self.record_fails:
            raise ConnectionError("database down")
        self.delivered_rows |= {(notification.order_id, notification.kind, c) for c in channels}


@dataclass
class FakeChannel:
    """Records every send; fails (after recording, like a lost ack) when told to."""

    failures: list[bool] = field(default_factory=list)
    sent: list[Notification] = field(default_factory=list)

    def __call__(self, notification: Notification) -> None:
        if self.failures and self.failures.pop(0):
            raise RetryableError("channel down")
        self.sent.append(notification)


@dataclass
class World:
    store: FakeStore = field(default_factory=FakeStore)
    email: FakeChannel = field(default_factory=FakeChannel)
    webhook: FakeChannel = field(default_factory=FakeChannel)
    outbox: FakeOutbox = field(default_factory=FakeOutbox)

    @property
    def notifier(self) -> Notifier:
        return Notifier(
            email=self.email,
            webhook=self.webhook,
            store=lambda conn: self.store,
            record=self.store.record,
        )

    @contextmanager
    def transaction(self, cause: Envelope) -> Iterator[UnitOfWork]:
        staged = FakeOutbox()
        self.store.staged = []
        try:
            yield UnitOfWork(
                conn=FakeConnection(),  # type: ignore[arg-type]
                outbox=staged,
                producer="notifications",
                cause=cause,
            )
        except BaseException:
            self.store.staged = []
            raise
        self.store.committed += self.store.staged
        self.store.staged = []
        self.outbox.rows += staged.rows


HANDLERS: dict[str, Any] = {
    "OrderApproved": handlers.on_order_approved,
    "OrderShipped": handlers.on_order_shipped,
    "OrderCancelled": handlers.on_order_cancelled,
}
KIND = {
    "OrderApproved": "order_approved",
    "OrderShipped": "order_shipped",
    "OrderCancelled": "order_cancelled",
}


def deliver(world: World, envelope: Envelope) -> None:
    """The consumer's retry loop for one event (without its inbox: handlers must cope alone)."""
    for _ in range(50):
        try:
            with world.transaction(envelope) as uow:
                HANDLERS[envelope.event_type](uow, envelope, notifier=world.notifier)
            return
        except RetryableError:
            continue
    raise AssertionError("never delivered")


def wrap(event: Event) -> Envelope:
    return Envelope.new(event, aggregate_id="o-1", producer="orders")


# One order's events as the orders topic may carry them: each may be redelivered, and a
# second OrderCancelled (a new event, e.g. a customer cancel racing the timeout) may follow.
ENVELOPES = [
    wrap(APPROVED),
    wrap(SHIPPED),
    wrap(cancelled("timeout", previous="PENDING")),
    wrap(cancelled("changed my mind")),
]
deliveries = st.lists(st.sampled_from(ENVELOPES), min_size=1, max_size=12)


@given(deliveries)
def test_at_most_one_send_per_kind_whatever_the_order_and_duplicates(
    events: list[Envelope],
) -> None:
    world = World()
    for envelope in events:
        deliver(world, envelope)

    kinds = Counter(n.kind for n in world.email.sent)
    assert set(kinds) == {KIND[e.event_type] for e in events}, "every kind told once"
    assert all(count == 1 for count in kinds.values()), kinds
    assert Counter(n.kind for n in world.webhook.sent) == kinds
    assert len(world.store.committed) == len(set(world.store.committed)) == len(kinds)
    notified = [row.payload for row in world.outbox.rows]
    assert all(row.event_type == CustomerNotified.event_type for row in world.outbox.rows)
    assert sorted(p["kind"] for p in notified) == sorted(kinds)
    assert all(p["channels"] == ["email", "webhook"] for p in notified)
    first_cancel = next((e for e in events if e.event_type == "OrderCancelled"), None)
    if first_cancel is not None:
        [told] = [n for n in world.email.sent if n.kind == "order_cancelled"]
        assert told.body == domain.order_cancelled(first_cancel.payload_as(OrderCancelled)).body


@given(deliveries, st.lists(st.booleans(), max_size=10), st.lists(st.booleans(), max_size=10))
def test_a_failed_attempt_sends_no_channel_twice_and_commits_once(
    events: list[Envelope], email_failures: list[bool], webhook_failures: list[bool]
) -> None:
    world = World(
        email=FakeChannel(failures=list(email_failures)),
        webhook=FakeChannel(failures=list(webhook_failures)),
    )
    for envelope in events:
        deliver(world, envelope)

    kinds = {KIND[e.event_type] for e in events}
    # However often the webhook failed after the mail went out: one mail, one webhook.
    assert Counter(n.kind for n in world.email.sent) == dict.fromkeys(kinds, 1)
    assert Counter(n.kind for n in world.webhook.sent) == dict.fromkeys(kinds, 1)
    assert len(world.outbox.rows) == len(kinds), "one CustomerNotified per kind"
    assert all(p.payload["channels"] == ["email", "webhook"] for p in world.outbox.rows)


def test_when_the_record_fails_the_channels_error_is_raised_and_the_mail_is_sent_again() -> None:
    world = World(webhook=FakeChannel(failures=[True]))
    world.store.record_fails = True
    envelope = wrap(APPROVED)

    with (
        pytest.raises(RetryableError, match="channel down"),
        world.transaction(envelope) as uow,
    ):
        handlers.on_order_approved(uow, envelope, notifier=world.notifier)
    world.store.record_fails = False
    deliver(world, envelope)

    # At least once: without the record, the retry cannot know the mail went out.
    assert [n.kind for n in world.email.sent] == ["order_approved"] * 2
    assert len({n.message_id for n in world.email.sent}) == 1, "the resend reuses the Message-ID"
    assert [n.kind for n in world.webhook.sent] == ["order_approved"]
    assert len(world.outbox.rows) == 1


def test_a_single_channel_reads_no_record_and_needs_none() -> None:
    world = World()
    single = Notifier(email=world.email, store=lambda conn: world.store)
    envelope = wrap(APPROVED)
    with world.transaction(envelope) as uow:
        handlers.on_order_approved(uow, envelope, notifier=single)

    assert [n.kind for n in world.email.sent] == ["order_approved"]
    assert world.store.reads == 0, "nothing can be partly delivered: no query"


def test_a_notifier_with_a_webhook_must_be_able_to_record_deliveries() -> None:
    with pytest.raises(ValueError, match="record of deliveries"):
        Notifier(email=FakeChannel(), webhook=FakeChannel())
