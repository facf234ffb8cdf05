"""Reading a polled Kafka message: its position and its headers, whatever the client gives."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message

__all__ = ["header", "header_bytes", "headers", "position"]


def position(msg: Message) -> tuple[str, int, int]:
    """Topic, partition and offset: what identifies a message across redeliveries."""
    return (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)


def header(msg: Message, name: str) -> str | None:
    """The first non-null value of header ``name`` as text, or None (also if undecodable)."""
    try:
        found = headers(msg)
    except Exception:  # undecodable headers: the value decides (and is likely poison)
        return None
    for key, value in found:
        if key == name and value is not None:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


def header_bytes(value: Any) -> bytes | None:
    """A header value as bytes, however the client handed it over."""
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")


def headers(msg: Message) -> list[tuple[str, Any]]:
    """The message's headers as pairs (the client gives a list, or a dict)."""
    found = msg.headers() or []
    return list(found.items()) if isinstance(found, dict) else list(found)
