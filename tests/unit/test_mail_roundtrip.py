"""What the notifications service sends is what the SMTP sink records, for any text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from notifications.domain import Notification
from notifications.mailer import build_message
from smtp_sink.mailbox import record_from_bytes

# Printable text of any script (no control characters but the newline in bodies).
_line = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=120)
_body = st.lists(_line, max_size=8).map("\n".join)


def _sent(subject: str, body: str, recipient: str = "ada@example.com") -> dict[str, object]:
    notification = Notification(
        order_id="f543d7e1-8457-49dc-bf89-c8c117b77aaf",
        kind="order_approved",
        recipient=recipient,
        subject=subject,
        body=body,
    )
    message = build_message(notification, sender="Shop <shop@example.com>")
    wire = message.as_bytes().replace(b"\n", b"\r\n")  # as smtplib sends it
    return record_from_bytes(wire, mail_from="shop@example.com", rcpt_tos=[recipient])


@given(subject=_line.map(str.strip), body=_body)
def test_subject_and_body_arrive_as_they_were_written(subject: str, body: str) -> None:
    record = _sent(subject, body)

    assert record["subject"] == subject
    assert record["body"] == body


def test_identity_headers_arrive_unchanged() -> None:
    record = _sent("Your order is approved \u2013 merci, Zo\u00eb", "Hello\n")

    headers = record["headers"]
    assert isinstance(headers, dict)
    order_id = "f543d7e1-8457-49dc-bf89-c8c117b77aaf"
    assert record["message_id"] == f"<{order_id}.order_approved@saga-outbox>"
    assert headers["X-Saga-Order-Id"] == "f543d7e1-8457-49dc-bf89-c8c117b77aaf"
    assert headers["X-Saga-Notification"] == "order_approved"
    assert headers["From"] == "Shop <shop@example.com>"
    assert headers["To"] == "ada@example.com"


def test_a_non_ascii_recipient_name_keeps_its_address() -> None:
    record = _sent("Hi", "Hello\n", recipient="Zoë Ångström <zoe@example.com>")

    headers = record["headers"]
    assert isinstance(headers, dict)
    assert headers["To"] == "Zoë Ångström <zoe@example.com>"
