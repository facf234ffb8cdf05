"""``sagactl dlq list|show``: dead letters, their counts, one letter in full."""

from __future__ import annotations

import argparse
from typing import Any

from sagactl.ops import dead_letters
from sagactl.ops.commands.common import services_of
from sagactl.ops.connection import open_database
from sagactl.ops.dead_letters import DeadLetterRow
from sagactl.ops.errors import Refusal
from sagactl.ops.parsing import format_age
from sagactl.ops.render import Output

__all__ = ["COLUMNS", "cmd_list", "cmd_show", "no_letter"]


COLUMNS = ("service", "id", "status", "created", "event type", "order", "error", "source")


def _cells(row: DeadLetterRow) -> tuple[Any, ...]:
    return (
        row.service,
        row.id,
        row.status,
        row.created_at,
        row.event_type,
        row.aggregate_id,
        f"{row.error_type}: {row.error}",
        f"{row.source_topic}[{row.source_partition}]@{row.source_offset}",
    )


def cmd_list(args: argparse.Namespace, out: Output) -> int:
    services = services_of(args.service)
    with open_database() as conn:
        rows, matched = dead_letters.list_letters(
            conn, services, status=args.status, order_id=args.order, limit=args.limit
        )
        counts = dead_letters.status_counts(conn, services)
    out.emit({"matched": matched, "rows": [r.as_dict() for r in rows], "counts": counts})
    out.table(
        COLUMNS,
        [_cells(r) for r in rows],
        title=f"dead letters ({len(rows)} of {matched} matching, newest first)",
        widths={"error": 90},
    )
    if not rows:
        out.note("no dead letters match")
    elif matched > len(rows):
        out.note(f"showing the newest {len(rows)} of {matched}: --limit N shows more")
    out.table(
        ("service", "pending", "redriven", "discarded", "oldest pending"),
        [
            (
                c["service"],
                c["pending"],
                c["redriven"],
                c["discarded"],
                format_age(c["oldest_pending_age_s"]),
            )
            for c in counts
        ],
        title="per service",
    )
    return 0


def no_letter(service: str, ids: list[int]) -> Refusal:
    """The refusal for letter ids the service does not have."""
    return Refusal(
        f"{service} has no dead letter {', '.join(map(str, ids))}",
        f"list them with `sagactl dlq list --service {service}`",
    )


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    with open_database() as conn:
        letter = dead_letters.get_letter(conn, args.service, args.id)
    if letter is None:
        raise no_letter(args.service, [args.id])
    data = letter.as_dict(with_message=True)
    out.emit(data)
    out.fields(
        [
            ("status", letter.status),
            ("created", letter.created_at),
            ("event", f"{letter.event_type or '-'} {letter.event_id or ''}".strip()),
            ("order", letter.aggregate_id),
            ("source", f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset}"),
            ("attempts", letter.attempts),
            ("error type", letter.error_type),
            ("error", letter.error),
            ("resolved", letter.resolved_at),
            ("resolution", letter.resolution),
        ],
        title=f"{args.service} dead letter {letter.id}",
    )
    out.table(("header", "value"), [(h["key"], _shown(h)) for h in data["headers"]])
    for name in ("key", "value"):
        body = data[name]
        if body.get("json") is not None:
            out.json_block(body["json"], title=f"{name} (JSON, {body['size']} bytes)")
        elif body.get("encoding") == "utf-8":
            out.line(f"{name} (UTF-8 text, {body['size']} bytes):", style="bold")
            out.line(body["text"])
        elif body.get("encoding") == "binary":
            out.line(f"{name} (binary, {body['size']} bytes), hex:", style="bold")
            out.line(body["hex"])
            out.line(f"base64: {body['base64']}")
        else:
            out.line(f"{name}: none", style="bold")
    return 0


def _shown(header: dict[str, Any]) -> str | None:
    """A header value for people: its text when UTF-8, else its bytes in hex."""
    if "value_hex" in header:
        return f"(binary, {header['size']} bytes) hex {header['value_hex']}"
    value = header["value"]
    if value is None:
        return None
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
