"""The sink's file: one JSON object per received message, one message per line."""

from __future__ import annotations

import email
import json
import os
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

__all__ = ["append_mail", "read_mail", "record_from_bytes"]


def record_from_bytes(
    raw: bytes, *, mail_from: str, rcpt_tos: list[str], received_at: datetime | None = None
) -> dict[str, Any]:
    """The JSON-ready record of one message as it came off the wire."""
    message = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)
    headers: dict[str, str] = {}
    for name, value in message.items():
        # A header may repeat (Received, ...); keep every value rather than the last.
        headers[name] = f"{headers[name]}, {value}" if name in headers else str(value)
    return {
        "from": mail_from,
        "to": list(rcpt_tos),
        "subject": str(message.get("Subject", "")),
        "message_id": str(message.get("Message-ID", "")).strip(),
        "headers": headers,
        "body": _text(message),
        "received_at": (received_at or datetime.now(UTC)).isoformat(),
    }


def _text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if isinstance(part, EmailMessage):
        text = str(part.get_content())
    else:
        payload = message.get_payload(decode=True)
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    # SMTP carries CRLF line ends; readers compare with the text that was sent.
    return text.replace("\r\n", "\n")


def append_mail(path: Path, record: dict[str, Any]) -> None:
    """Append one line and make it durable before the sink answers 250."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


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
    return [json.loads(line) for line in complete if line.strip()]
