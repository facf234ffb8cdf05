"""E-mail over SMTP (the local SMTP sink in development and tests).

The message is built by ``notifications.message``. A server that does not offer
SMTPUTF8 cannot take a message to or from a UTF-8 local part; that is a permanent
failure of this message (DeliveryRejected, with the reason), not of the server.

Failures: no connection, a timeout, a dropped connection or a 4xx reply raise
RetryableError (the effect executor tries again later); a 5xx reply to the sender,
the recipient or the data, an address that cannot be written on the wire, or a
missing SMTPUTF8 raise DeliveryRejected.
"""

from __future__ import annotations

import smtplib
import threading

from notifications.domain import Notification
from notifications.errors import DeliveryRejected
from notifications.message import Outgoing, outgoing
from saga_runtime import RetryableError

__all__ = ["SmtpMailer"]


class SmtpMailer:
    """Sends over a few SMTP connections, kept open between messages.

    Connecting and greeting costs more than sending a short message, so connections
    are reused. The effect executor sends many notifications at once: each send
    takes an idle connection or opens one, with at most ``connections`` open (the
    server's limit per client, and ours); a send beyond them waits for one. A
    connection the server dropped while idle (idle timeout, restart) is replaced
    once, at once; a failure on a fresh connection is a RetryableError.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        timeout: float = 10.0,
        connections: int = 8,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self.host = host
        self.port = port
        self.sender = sender
        self.timeout = timeout
        self._idle: list[smtplib.SMTP] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(connections)

    def send(self, notification: Notification) -> None:
        """Hand the message to the server; see the module for what is retried."""
        message = outgoing(notification, sender=self.sender)
        with self._slots:
            self._send(message)

    def _send(self, message: Outgoing) -> None:
        held: list[smtplib.SMTP] = []  # the connection in use, once there is one
        try:
            self._send_on_any_connection(message, held)
        except smtplib.SMTPNotSupportedError as exc:
            self._give_back(held)
            needs = [a for a in (message.recipient, message.sender) if not a.isascii()]
            raise DeliveryRejected(
                f"the SMTP server {self.host}:{self.port} does not offer SMTPUTF8 (RFC 6531),"
                f" which {' and '.join(map(repr, needs))} (a UTF-8 local part) needs:"
                " this message cannot be delivered through it"
            ) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            self._give_back(held)  # the refusal reset the transaction
            _raise_for_codes([code for code, _ in exc.recipients.values()], exc)
        except (smtplib.SMTPConnectError, smtplib.SMTPHeloError) as exc:
            # The server, not this message: it may accept again later.
            _close(held)
            raise RetryableError(f"SMTP {self.host}:{self.port} unavailable: {exc!r}") from exc
        except smtplib.SMTPResponseException as exc:
            self._give_back(held)
            _raise_for_codes([exc.smtp_code], exc)
        except (OSError, smtplib.SMTPException) as exc:
            # Refused, reset or timed-out connections and disconnects: the server may be back.
            _close(held)
            raise RetryableError(f"SMTP {self.host}:{self.port} unavailable: {exc!r}") from exc
        else:
            self._give_back(held)

    def _send_on_any_connection(self, message: Outgoing, held: list[smtplib.SMTP]) -> None:
        idle = self._take_idle()
        if idle is not None:
            held.append(idle)
            try:
                self._transaction(idle, message)
                return
            except smtplib.SMTPServerDisconnected:
                pass
            except smtplib.SMTPException:
                raise  # a reply from a live server (SMTPException is an OSError too)
            except OSError:
                pass
            # Dropped while idle (idle timeout, server restart): once more on a fresh one.
            _close(held)
        fresh = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        held.append(fresh)
        self._transaction(fresh, message)

    def _transaction(self, smtp: smtplib.SMTP, message: Outgoing) -> None:
        """MAIL, RCPT, DATA with the envelope as built (smtplib would re-parse the addresses).

        A refusal resets the transaction, so the connection stays usable.
        """
        smtp.ehlo_or_helo_if_needed()
        options = ""
        if message.smtputf8:
            if not smtp.has_extn("smtputf8"):
                raise smtplib.SMTPNotSupportedError("SMTPUTF8 is not offered")
            options = " SMTPUTF8 BODY=8BITMIME" if smtp.has_extn("8bitmime") else " SMTPUTF8"
            smtp.command_encoding = "utf-8"
        try:
            code, reply = smtp.docmd("MAIL", f"FROM:<{message.sender}>{options}")
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, message.sender)
            code, reply = smtp.docmd("RCPT", f"TO:<{message.recipient}>")
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({message.recipient: (code, reply)})
            code, reply = smtp.data(message.data)
            if code != 250:
                raise smtplib.SMTPDataError(code, reply)
        except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused):
            _reset(smtp)
            raise
        finally:
            smtp.command_encoding = "ascii"

    def _take_idle(self) -> smtplib.SMTP | None:
        # The most recently used first: the least likely to have been dropped meanwhile.
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _give_back(self, held: list[smtplib.SMTP]) -> None:
        with self._lock:
            self._idle.extend(held)
        held.clear()

    def close(self) -> None:
        """Close the idle connections (those in use are closed by their sends' failures)."""
        with self._lock:
            idle, self._idle = self._idle, []
        _close(idle)


def _close(connections: list[smtplib.SMTP]) -> None:
    """QUIT and close each of ``connections`` (emptied), however they fail."""
    while connections:
        smtp = connections.pop()
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()


def _reset(smtp: smtplib.SMTP) -> None:
    """RSET after a refusal; if even that fails, the next send finds the connection broken."""
    try:
        smtp.rset()
    except (OSError, smtplib.SMTPException):
        smtp.close()


def _raise_for_codes(codes: list[int], cause: Exception | None) -> None:
    """4xx means "try again later" in SMTP; 5xx is a permanent refusal."""
    detail = f"SMTP refused the message (codes {codes}): {cause!r}"
    if all(400 <= code < 500 for code in codes):
        raise RetryableError(detail) from cause
    raise DeliveryRejected(detail) from cause
