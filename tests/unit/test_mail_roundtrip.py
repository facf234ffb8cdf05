"""What the notifications service sends is what the SMTP sink records, for any text and address."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifications.domain import Notification
from notifications.errors import DeliveryRejected
from notifications.message import MailAddress, outgoing
from simulators.smtp_sink.mailbox import record_from_bytes

# Printable text of any script (no control characters but the newline in bodies).
_line = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=120)
_body = st.lists(_line, max_size=8).map("\n".join)
_name = st.one_of(
    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Zs")), max_size=40),
    st.just("=?utf-8?q?Zo=C3=AB?="),  # text that looks like an encoded word stays text
)


def _sent(
    subject: str,
    body: str,
    recipient: str = "ada@example.com",
    sender: str = "Shop <shop@example.com>",
) -> dict[str, Any]:
    notification = Notification(
        order_id="f543d7e1-8457-49dc-bf89-c8c117b77aaf",
        kind="order_approved",
        recipient=recipient,
        subject=subject,
        body=body,
    )
    wire = outgoing(notification, sender=sender)  # the exact bytes SMTP carries
    assert b"\r\n" in wire.data and b"\n" not in wire.data.replace(b"\r\n", b"")
    return record_from_bytes(wire.data, mail_from=wire.sender, rcpt_tos=[wire.recipient])


@given(subject=st.one_of(_line, st.just("=?utf-8?q?not_a_word?=")).map(str.strip), body=_body)
def test_subject_and_body_arrive_as_they_were_written(subject: str, body: str) -> None:
    record = _sent(subject, body)

    assert record["subject"] == subject
    assert record["body"] == body


def test_identity_headers_arrive_unchanged() -> None:
    record = _sent("Your order is approved \u2013 merci, Zo\u00eb", "Hello\n")

    headers = record["headers"]
    order_id = "f543d7e1-8457-49dc-bf89-c8c117b77aaf"
    assert record["message_id"] == f"<{order_id}.order_approved@saga-outbox>"
    assert headers["X-Saga-Order-Id"] == "f543d7e1-8457-49dc-bf89-c8c117b77aaf"
    assert headers["X-Saga-Notification"] == "order_approved"
    assert headers["From"] == "Shop <shop@example.com>"
    assert headers["To"] == "ada@example.com"


def test_a_body_line_starting_with_from_is_not_mangled() -> None:
    assert _sent("Hi", "From the shop:\nFrom here on\n")["body"] == "From the shop:\nFrom here on\n"


def test_a_non_ascii_recipient_name_keeps_its_address() -> None:
    record = _sent("Hi", "Hello\n", recipient="Zoë Ångström <zoe@example.com>")

    assert record["headers"]["To"] == "Zoë Ångström <zoe@example.com>"
    assert "=?utf-8?" in _raw_header(recipient="Zoë Ångström <zoe@example.com>"), "RFC 2047"


def _raw_header(recipient: str, name: str = "To") -> str:
    """One header as it is on the wire (UTF-8 read as such)."""
    n = Notification(order_id="o", kind="order_shipped", recipient=recipient, subject="s", body="")
    data = outgoing(n, sender="Boutique Zoë <shop@example.com>").data.decode("utf-8")
    [line] = [h for h in data.split("\r\n\r\n")[0].split("\r\n") if h.startswith(f"{name}: ")]
    return line.removeprefix(f"{name}: ")


@pytest.mark.parametrize(
    ("written", "envelope", "to_header", "smtputf8"),
    [
        ("zoë@example.com", "zoë@example.com", "zoë@example.com", True),
        ("ada@bücher.de", "ada@xn--bcher-kva.de", "ada@xn--bcher-kva.de", False),
        ("用户@例子.广告", "用户@xn--fsqu00a.xn--4rr70v", "用户@xn--fsqu00a.xn--4rr70v", True),
        (
            "Zoë Ångström <zoë@bücher.de>",
            "zoë@xn--bcher-kva.de",
            "Zoë Ångström <zoë@xn--bcher-kva.de>",
            True,
        ),
        ('"Ada, Countess" <ada@example.com>', "ada@example.com", None, False),
        ("a..b@example.com", '"a..b"@example.com', '"a..b"@example.com', False),
        (".ada.@example.com", '".ada."@example.com', '".ada."@example.com', False),
        ("ada@example.com.", "ada@example.com", "ada@example.com", False),
    ],
)
def test_internationalized_addresses_on_the_wire(
    written: str, envelope: str, to_header: str | None, smtputf8: bool
) -> None:
    n = Notification(order_id="o", kind="order_shipped", recipient=written, subject="s", body="b")
    wire = outgoing(n, sender="Boutique Zoë <shop@example.com>")
    record = record_from_bytes(wire.data, mail_from=wire.sender, rcpt_tos=[wire.recipient])

    assert (wire.recipient, wire.smtputf8) == (envelope, smtputf8)
    assert record["headers"]["To"] == (to_header or written)
    assert record["headers"]["From"] == "Boutique Zoë <shop@example.com>"
    raw_from = _raw_header(written, "From")
    assert "=?utf-8?" in raw_from and raw_from.isascii(), "an encoded-word name, even with SMTPUTF8"


@pytest.mark.parametrize(
    "written",
    ["no-at-sign", "@example.com", "ada@", "ada@exa..mple.com", "ad\ra@example.com", "ad a@x.com"],
)
def test_an_address_that_cannot_be_written_on_the_wire_is_refused_for_good(written: str) -> None:
    n = Notification(order_id="o", kind="order_shipped", recipient=written, subject="s", body="b")
    with pytest.raises(DeliveryRejected):
        outgoing(n, sender="shop@example.com")


@given(name=_name, local=st.sampled_from(["ada", "zoë", "a.b", "用户"]))
def test_any_display_name_arrives_as_written(name: str, local: str) -> None:
    written = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{local}@example.com>'
    record = _sent("Hi", "Hello\n", recipient=written)
    address = MailAddress.parse(written)
    shown = " ".join(name.split())
    expected = f"{local}@example.com"
    if shown:
        quoted = shown.isascii() and set(shown) & set('()<>[]:;@\\,."')
        escaped = shown.replace("\\", "\\\\").replace('"', '\\"')
        phrase = '"' + escaped + '"' if quoted else shown
        expected = f"{phrase} <{expected}>"
    assert (address.name, address.local) == (name, local)
    assert record["headers"]["To"] == expected


def test_an_unusable_sender_is_refused_at_startup_not_on_every_message() -> None:
    from pydantic import ValidationError

    from notifications.settings import NotificationsSettings

    assert NotificationsSettings(sender="Boutique Zoë <commandes@bücher.de>").sender
    for unusable in ("orders", "Shop <orders@>", "orders@exa..mple.com"):
        with pytest.raises(ValidationError, match="NOTIFICATIONS_FROM"):
            NotificationsSettings(sender=unusable)
