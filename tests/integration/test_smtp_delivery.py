"""The mailer on the real SMTP path: the SMTP sink (aiosmtpd) over a socket, no fakes.

Internationalized addresses (SMTPUTF8, IDNA), refusals, outages and a server
restart under the shared connection.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import unicodedata
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifications.domain import Notification
from notifications.errors import DeliveryRejected
from notifications.mailer import SmtpMailer
from saga_runtime import RetryableError
from simulators.smtp_sink import SmtpSink, read_mail

pytestmark = pytest.mark.integration

SENDER = "Boutique Zoë Ångström <commandes@boutique-zoë.example>"


def notification(recipient: str, subject: str = "Your order has shipped") -> Notification:
    return Notification(
        order_id=str(uuid.uuid4()),
        kind="order_shipped",
        recipient=recipient,
        subject=subject,
        body="Your order is on its way.\n",
    )


def received(mail_file: Path, n: Notification) -> dict[str, Any]:
    [mail] = [m for m in read_mail(mail_file) if m["message_id"] == n.message_id]
    return mail


# --- The address contract (the orders API refuses anything else) -----------------------

_NOT_IN_LOCAL = set('"(),:;<>[\\]@')


def _allowed(char: str) -> bool:
    return (
        char not in _NOT_IN_LOCAL
        and not char.isspace()
        and unicodedata.category(char) not in ("Cc", "Cs", "Zs", "Zl", "Zp")
    )


def in_contract(address: str) -> bool:
    """``local@domain``: at most 254 characters, no whitespace or control characters,
    one ``@``, a local part of 1-64 characters (UTF-8 allowed, none of ``"(),:;<>[\\]``),
    a domain that IDNA-encodes to an ASCII host name with at least one dot."""
    if len(address) > 254 or address.count("@") != 1:
        return False
    local, _, domain = address.partition("@")
    if not 1 <= len(local) <= 64 or not all(_allowed(c) for c in local):
        return False
    try:
        host = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = host.removesuffix(".").split(".")
    return (
        len(host) <= 253
        and len(labels) >= 2
        and all(label and all(c.isalnum() or c == "-" for c in label) for label in labels)
    )


_local_char = st.one_of(
    st.sampled_from("abcxyzABC0123456789!#$%&'*+-/=?^_`{|}~."),
    st.characters(min_codepoint=0x80, blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
)
_label = st.one_of(
    st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-"), min_size=1, max_size=20),
    st.text(st.characters(whitelist_categories=("Ll", "Lu", "Lo", "Nd")), min_size=1, max_size=8),
)
addresses = st.builds(
    lambda local, labels: f"{local}@{'.'.join(labels)}",
    st.text(_local_char, min_size=1, max_size=64),
    st.lists(_label, min_size=2, max_size=4),
).filter(in_contract)


@pytest.fixture(scope="module")
def shared_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SmtpSink, Path]]:
    mail_file = tmp_path_factory.mktemp("mail") / "mail.jsonl"
    with SmtpSink(path=mail_file) as sink:
        yield sink, mail_file


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(address=addresses)
def test_every_address_in_the_contract_is_delivered_and_recorded_as_written(
    shared_sink: tuple[SmtpSink, Path], address: str
) -> None:
    sink, mail_file = shared_sink
    mailer = SmtpMailer(host="127.0.0.1", port=sink.port, sender="Shop <shop@example.com>")
    sent = notification(address)
    try:
        mailer.send(sent)
    finally:
        mailer.close()

    mail = received(mail_file, sent)
    local, _, domain = address.partition("@")
    host = domain.encode("idna").decode("ascii").removesuffix(".")
    assert mail["to"] == [f"{local}@{host}"], "the local part as written, the domain as A-labels"
    assert ("SMTPUTF8" in mail["mail_options"]) == (not local.isascii())
    assert mail["headers"]["To"].removesuffix(f"@{host}").strip('"') == local
    assert mail["subject"] == sent.subject and mail["body"] == sent.body


@pytest.mark.parametrize(
    ("written", "recorded", "smtputf8"),
    [
        ("zoë.ångström@example.com", "zoë.ångström@example.com", True),
        ("ada@bücher.de", "ada@xn--bcher-kva.de", False),
        ("用户@例子.广告", "用户@xn--fsqu00a.xn--4rr70v", True),
        ("ada.lovelace@example.com", "ada.lovelace@example.com", False),
    ],
)
def test_internationalized_addresses_and_names_are_delivered(
    tmp_path: Path, written: str, recorded: str, smtputf8: bool
) -> None:
    mail_file = tmp_path / "mail.jsonl"
    with SmtpSink(path=mail_file) as sink:
        mailer = SmtpMailer(host="127.0.0.1", port=sink.port, sender=SENDER)
        sent = notification(written, subject="Votre commande est expédiée, Zoë")
        mailer.send(sent)
        mailer.close()

    mail = received(mail_file, sent)
    assert mail["to"] == [recorded]
    assert mail["to"][0].split("@")[1].encode().decode("idna") == written.split("@")[1]
    assert mail["from"] == "commandes@xn--boutique-zo-9bb.example"
    assert (
        mail["headers"]["From"] == "Boutique Zoë Ångström <commandes@xn--boutique-zo-9bb.example>"
    )
    assert mail["headers"]["To"] == recorded
    assert mail["subject"] == "Votre commande est expédiée, Zoë"
    assert ("SMTPUTF8" in mail["mail_options"]) == smtputf8


def test_without_smtputf8_a_utf8_local_part_is_refused_for_good_and_an_idn_domain_delivered(
    tmp_path: Path,
) -> None:
    mail_file = tmp_path / "mail.jsonl"
    with SmtpSink(path=mail_file, smtputf8=False) as sink:
        mailer = SmtpMailer(host="127.0.0.1", port=sink.port, sender="shop@example.com")
        utf8_local, idn_domain, plain = (
            notification("zoë@example.com"),
            notification("ada@bücher.de"),
            notification("ada@example.com"),
        )
        with pytest.raises(DeliveryRejected, match="does not offer SMTPUTF8") as refused:
            mailer.send(utf8_local)
        assert "zoë@example.com" in str(refused.value)
        mailer.send(idn_domain)  # the same connection, still in a clean state
        mailer.send(plain)
        mailer.close()

    assert [m["to"] for m in read_mail(mail_file)] == [
        ["ada@xn--bcher-kva.de"],
        ["ada@example.com"],
    ]


class _Refusing:
    """A server that refuses some recipients for good (550) and others for now (451)."""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("gone"):
            return "550 5.1.1 No such mailbox"
        if address.startswith("busy"):
            return "451 4.2.0 Mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.delivered.append(list(envelope.rcpt_tos))
        return "250 OK"

    def __init__(self) -> None:
        self.delivered: list[list[str]] = []


def test_a_refused_recipient_is_permanent_a_4xx_transient_and_the_connection_stays_usable() -> None:
    handler = _Refusing()
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # aiosmtpd's Controller needs a port number up front
    controller = Controller(handler, hostname="127.0.0.1", port=port, server_hostname="refusing")
    controller.start()
    try:
        mailer = SmtpMailer(host="127.0.0.1", port=port, sender="shop@example.com")
        with pytest.raises(DeliveryRejected, match="550"):
            mailer.send(notification("gone@example.com"))
        with pytest.raises(RetryableError, match="451"):
            mailer.send(notification("busy@example.com"))
        mailer.send(notification("ada@example.com"))
        mailer.close()
    finally:
        controller.stop()
    assert handler.delivered == [["ada@example.com"]], "each refusal reset its transaction"


def test_no_server_a_silent_server_and_a_hang_up_are_transient() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.listen()
        port = silent.getsockname()[1]
        mailer = SmtpMailer(host="127.0.0.1", port=port, sender="shop@example.com", timeout=0.5)
        with pytest.raises(RetryableError, match="unavailable"):
            mailer.send(notification("ada@example.com"))  # accepted, never greeted: timeout
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    mailer = SmtpMailer(host="127.0.0.1", port=port, sender="shop@example.com", timeout=5)
    with pytest.raises(RetryableError, match="unavailable"):
        mailer.send(notification("ada@example.com"))  # connection refused


def test_the_shared_connection_recovers_after_the_server_restarts(tmp_path: Path) -> None:
    mail_file = tmp_path / "mail.jsonl"
    with SmtpSink(path=mail_file) as first:
        port = first.port
        mailer = SmtpMailer(host="127.0.0.1", port=port, sender="shop@example.com")
        mailer.send(notification("before@example.com"))
    # The server is gone and back on the same port; the mailer still holds the old connection.
    with SmtpSink(path=mail_file, port=port):
        batch = [notification(f"after-{n}@example.com") for n in range(8)]
        barrier = threading.Barrier(4)

        def send(n: Notification) -> None:
            if batch.index(n) < 4:
                barrier.wait(timeout=30)  # four threads reach the stale connection together
            mailer.send(n)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(send, batch))  # none raises: the first one reconnects for all
        mailer.close()

    recipients = sorted(to for m in read_mail(mail_file) for to in m["to"])
    assert recipients == sorted(
        ["before@example.com", *(f"after-{n}@example.com" for n in range(8))]
    )


class _Pairing:
    """A server whose first message is accepted only once a second one is in DATA with it
    (so only a mailer sending two at once gets through); it notes each connection's peer."""

    def __init__(self) -> None:
        self.paired = asyncio.Event()
        self.in_data = 0
        self.peers: set[tuple[str, int]] = set()
        self.delivered: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.peers.add(session.peer)
        self.in_data += 1
        if self.in_data >= 2:
            self.paired.set()
        try:
            await asyncio.wait_for(self.paired.wait(), timeout=30)
        except TimeoutError:
            return "451 4.3.0 Sent alone"
        finally:
            self.in_data -= 1
        self.delivered.extend(envelope.rcpt_tos)
        return "250 OK"


def test_sends_go_out_at_once_over_at_most_the_configured_connections() -> None:
    """The effect executor sends many notifications at once: one shared connection would
    make SMTP's latency cap the throughput again."""
    handler = _Pairing()
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port, server_hostname="pairing")
    controller.start()
    try:
        mailer = SmtpMailer(
            host="127.0.0.1", port=port, sender="shop@example.com", timeout=10, connections=2
        )
        batch = [notification(f"n{n}@example.com") for n in range(8)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(mailer.send, batch))  # none raises: the first two went together
        mailer.close()
    finally:
        controller.stop()
    assert sorted(handler.delivered) == sorted(n.recipient for n in batch)
    assert len(handler.peers) == 2, "two connections, reused, never more"
