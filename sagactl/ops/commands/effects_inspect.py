"""``sagactl effects list|show``, and the columns, statuses and refusals the changes share."""

from __future__ import annotations

import argparse
import re
from typing import Any

import psycopg

from sagactl.ops import effects
from sagactl.ops.commands.common import services_of
from sagactl.ops.connection import open_database
from sagactl.ops.effects import EffectFilter, EffectRow
from sagactl.ops.errors import Refusal
from sagactl.ops.parsing import format_age
from sagactl.ops.render import Output

__all__ = [
    "COLUMNS",
    "cmd_list",
    "cmd_show",
    "describe_selection",
    "effect_filter",
    "no_effect",
    "parse_statuses",
    "require_effects_table",
    "row_cells",
]

COLUMNS = ("service", "id", "kind", "order", "status", "attempts", "created", "next", "error")
_STATUS = re.compile(r"[a-z][a-z_]*")


def parse_statuses(text: str) -> tuple[str, ...]:
    """``failed`` or ``pending,running``: any status word, known to this tool or not (a
    newer executor may write one it does not list), duplicates folded."""
    statuses = [part.strip().lower() for part in text.split(",") if part.strip()]
    bad = [s for s in statuses if not _STATUS.fullmatch(s)]
    if bad or not statuses:
        raise argparse.ArgumentTypeError(
            f"not a status list: {text!r} (e.g. failed or pending,running; statuses: "
            f"{', '.join(effects.KNOWN_STATUSES)})"
        )
    return tuple(dict.fromkeys(statuses))


def next_step(row: EffectRow) -> Any:
    """What happens to the effect next, as far as its row says."""
    if row.status == "pending":
        return f"due {row.next_attempt_at:%Y-%m-%d %H:%M:%S}"
    if row.status == "running" and row.lease_until is not None:
        return f"leased to {row.lease_owner} until {row.lease_until:%H:%M:%S}"
    return "-"


def row_cells(row: EffectRow) -> tuple[Any, ...]:
    return (
        row.service,
        row.id,
        row.kind,
        row.aggregate_id,
        row.status,
        row.attempts,
        row.created_at,
        next_step(row),
        row.last_error,
    )


def require_effects_table(conn: psycopg.Connection, service: str) -> None:
    """A service asked for by name must have the table; ``all`` skips those without."""
    if not effects.with_effects(conn, [service]):
        raise Refusal(
            f"{service} has no effects table ({service}.effects): it does not run its calls "
            "through the effect executor (yet)",
            "services get the table with the migration that moves them to effects; "
            "`sagactl effects list` shows the services that have one",
        )


def no_effect(service: str, ids: list[int]) -> Refusal:
    return Refusal(
        f"{service} has no effect {', '.join(map(str, ids))}",
        f"list them with `sagactl effects list --service {service}`",
    )


def effect_filter(args: argparse.Namespace) -> EffectFilter:
    return EffectFilter(
        statuses=tuple(args.status or ()),
        kind=args.kind,
        order_id=args.order,
        ids=tuple(getattr(args, "ids", None) or ()),
    )


def cmd_list(args: argparse.Namespace, out: Output) -> int:
    flt = effect_filter(args)
    with open_database() as conn:
        if args.service != "all":
            require_effects_table(conn, args.service)
        services = effects.with_effects(conn, services_of(args.service))
        rows = effects.select_effects(conn, services, flt, limit=args.limit)
        matched = (
            effects.count_effects(conn, services, flt) if len(rows) >= args.limit else len(rows)
        )
        counts = effects.status_counts(conn, services)
    out.emit(
        {
            "filter": {"service": args.service, **flt.describe()},
            "services": services,
            "matched": matched,
            "rows": [r.as_dict() for r in rows],
            "counts": [c.as_dict() for c in counts],
        }
    )
    if not services:
        out.note("no service has an effects table yet")
        return 0
    out.table(
        COLUMNS,
        [row_cells(r) for r in rows],
        title=f"effects ({len(rows)} of {matched} matching, newest first)",
        widths={"error": 80},
    )
    if not rows:
        out.note(f"no effects match {describe_selection(args.service, flt)}")
        unknown = [s for s in flt.statuses if s not in effects.KNOWN_STATUSES]
        if unknown:
            out.note(
                f"{', '.join(unknown)}: not a status this sagactl knows "
                f"({', '.join(effects.KNOWN_STATUSES)})"
            )
    elif matched > len(rows):
        out.note(f"showing the newest {len(rows)} of {matched}: --limit N shows more")
    statuses = list(dict.fromkeys(s for c in counts for s in c.statuses()))
    out.table(
        ("service", *statuses, "oldest due waiting", "expired leases"),
        [
            (
                c.service,
                *(c.counts.get(s, 0) for s in statuses),
                format_age(c.oldest_due_age_s),
                c.expired_leases,
            )
            for c in counts
        ],
        title="per service",
    )
    return 0


def describe_selection(service: str, flt: EffectFilter) -> str:
    parts = [f"service={service}"]
    for key, value in flt.describe().items():
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        parts.append(f"{key}={shown}")
    return " ".join(parts)


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    with open_database() as conn:
        require_effects_table(conn, args.service)
        found = effects.get_effect(conn, args.service, args.id)
        if found is None:
            raise no_effect(args.service, [args.id])
        siblings = effects.aggregate_effects(conn, args.service, found.row.aggregate_id)
    out.emit(
        {
            "effect": found.row.as_dict(),
            "request": found.request,
            "outcome": found.outcome,
            "order_effects": [r.as_dict() for r in siblings],
        }
    )
    out.fields(
        [(k.replace("_", " "), v) for k, v in found.row.as_dict().items()],
        title=f"{args.service} effect {found.row.id}",
    )
    out.json_block(found.request, title="request")
    if found.outcome is None:
        out.line("outcome: none recorded", style="bold")
    else:
        out.json_block(found.outcome, title="outcome")
    out.table(
        COLUMNS,
        [row_cells(r) for r in siblings],
        title=f"effects of {found.row.aggregate_id} in the order they run",
        widths={"error": 60},
    )
    return 0
