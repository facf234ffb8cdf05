"""The sink's file: one JSON object per received message, one message per line.

The sink stores what came off the wire, cheaply (``stored_record``): the envelope and
the raw message, parsed only when read (``read_mail``). A line holds ``raw`` (the
message's bytes as UTF-8 text, any other byte as a surrogate escape), ``from``,
``to``, ``mail_options`` and ``received_at``; lines of the older, parsed form are
read as they are.
"""

from __future__ import annotations

import email
import json
import os
import re
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32
from pathlib import Path
from typing import Any

__all__ = ["append_mail", "append_mails", "read_mail", "record_from_bytes", "stored_record"]


def record_from_bytes(
    raw: bytes,
    *,
    mail_from: str,
    rcpt_tos: list[str],
    received_at: datetime | None = None,
    mail_options: list[str] | None = None,
) -> dict[str, Any]:
    """The JSON-ready record of one message as it came off the wire.

    Parsed with the classic (compat32) API and RFC 2047 decoding, which costs
    a twentieth of the default policy's header registry. Envelope addresses
    and headers are recorded as sent: UTF-8 (SMTPUTF8, RFC 6531/6532) as text,
    an IDNA-encoded domain as its ``xn--`` form; ``mail_options`` says whether
    the sender asked for SMTPUTF8.
    """
    message = email.message_from_bytes(raw, policy=compat32)
    headers: dict[str, str] = {}
    found: dict[str, str] = {}  # the first of each, as Message.get gives it
    for name, value in message.raw_items():
        found.setdefault(name.lower(), value)
        text = _header(value)
        # A header may repeat (Received, ...); keep every value rather than the last.
        headers[name] = f"{headers[name]}, {text}" if name in headers else text
    return {
        "from": _utf8(mail_from),
        "to": [_utf8(rcpt) for rcpt in rcpt_tos],
        "mail_options": list(mail_options or []),
        "subject": _header(found.get("subject", "")),
        "message_id": _header(found.get("message-id", "")).strip(),
        "headers": headers,
        "body": _body(message),
        "received_at": (received_at or datetime.now(UTC)).isoformat(),
    }


_FOLD = re.compile(r"\r?\n(?=[ \t])")
_WORD = r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?="
_ENCODED_RUN = re.compile(rf"{_WORD}(?:\s+{_WORD})*")


def _utf8(text: str) -> str:
    """Raw 8-bit bytes (surrogate escapes, as the parsers hand them) read as UTF-8."""
    try:
        return text.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _header(value: object) -> str:
    """A header's text: unfolded, raw UTF-8 and encoded words (``=?utf-8?q?...?=``) decoded."""
    # Whitespace around a value is not part of it (a long one may start on a folded line).
    unfolded = _utf8(_FOLD.sub("", str(value))).strip(" \t\r\n")
    if unfolded.isascii():
        return _decoded(unfolded)
    # UTF-8 next to encoded words (a UTF-8 address after an encoded name): decode the words only.
    return _ENCODED_RUN.sub(lambda m: _decoded(m.group(0)), unfolded)


def _decoded(text: str) -> str:
    try:
        return str(make_header(decode_header(text)))
    except (LookupError, ValueError, UnicodeDecodeError):
        return text  # a malformed encoded word: keep it as it came


def _body(message: Message) -> str:
    part = _first_text_part(message)
    payload = part.get_payload(decode=True) if part is not None else None
    if not isinstance(payload, bytes):
        return ""
    try:
        text = payload.decode(part.get_content_charset() or "utf-8", "replace")  # type: ignore[union-attr]
    except LookupError:
        text = payload.decode("utf-8", "replace")
    # SMTP carries CRLF line ends; readers compare with the text that was sent.
    return text.replace("\r\n", "\n")


def _first_text_part(message: Message) -> Message | None:
    for wanted in ("text/plain", "text/html"):
        for part in message.walk():
            if part.get_content_type() == wanted and not part.is_multipart():
                return part
    return None if message.is_multipart() else message


def stored_record(
    raw: bytes,
    *,
    mail_from: str,
    rcpt_tos: list[str],
    mail_options: list[str] | None = None,
    received_at: datetime | None = None,
) -> dict[str, Any]:
    """What the sink writes for one message: the envelope and the raw bytes, unparsed."""
    return {
        "from": mail_from,
        "to": list(rcpt_tos),
        "mail_options": list(mail_options or []),
        "received_at": (received_at or datetime.now(UTC)).isoformat(),
        "raw": raw.decode("utf-8", "surrogateescape"),
    }


def append_mails(path: Path, records: list[dict[str, Any]]) -> None:
    """Append one line per record and make them durable with one fsync (before any 250).

    ASCII-escaped JSON, so an envelope's or a message's stray bytes (surrogate escapes)
    are written and read back unchanged.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def append_mail(path: Path, record: dict[str, Any]) -> None:
    """Append one line and make it durable."""
    append_mails(path, [record])


def read_mail(path: Path | str) -> list[dict[str, Any]]:
    """Every message in the sink's file, oldest first ([] when nothing was received yet).

    A last line without its newline is a write the sink was killed in the middle
    of (its sender got no 250 and will resend), so it is left out.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    complete = lines[:-1]  # the element after the last newline is "" or a torn write
    return [_parsed(json.loads(line)) for line in complete if line.strip()]


def _parsed(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored line as ``record_from_bytes`` makes it (an older, parsed line as it is)."""
    if "raw" not in stored:
        return stored
    return record_from_bytes(
        stored["raw"].encode("utf-8", "surrogateescape"),
        mail_from=stored["from"],
        rcpt_tos=stored["to"],
        received_at=datetime.fromisoformat(stored["received_at"]),
        mail_options=stored["mail_options"],
    )
