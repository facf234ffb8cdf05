"""``sagactl audit`` (the saga's invariants over the live data) and ``sagactl audit-log``
(what operators changed)."""

from __future__ import annotations

import argparse

from sagactl.invariants import check, load_snapshot
from sagactl.ops import audit_log
from sagactl.ops.commands.common import (
    HelpFormatter,
    json_option,
    positive_int,
    run,
    service_name,
)
from sagactl.ops.connection import open_database, require_audit_log
from sagactl.ops.errors import EXIT_FAILED, Refusal
from sagactl.ops.ledger import LedgerUnavailable, fetch_ledger, provider_url
from sagactl.ops.render import Output

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    as_json = json_option()
    audit = sub.add_parser(
        "audit",
        parents=[as_json],
        help="check the saga's invariants over all data and the provider's ledger",
        description="Reads every service's tables (DATABASE_URL, an admin role) and the "
        "payment provider's ledger (GET /ledger), and checks: every order SHIPPED or "
        "CANCELLED with a consistent timeline; stock conserved; every approved charge "
        "belongs to a fulfilled order or has exactly one full refund; no live shipment for a "
        "cancelled order; one notification per order and kind; outboxes drained. Prints "
        "every violation with its order; exit 1 if there is any.",
        epilog="examples:\n  sagactl audit\n"
        "  sagactl audit --provider-url http://provider:8010 --allow-pending --json",
        formatter_class=HelpFormatter,
    )
    audit.add_argument(
        "--provider-url",
        metavar="URL",
        help="the payment provider (default: $PAYMENTS_PROVIDER_URL or http://127.0.0.1:8010)",
    )
    audit.add_argument(
        "--allow-pending",
        action="store_true",
        help="do not count unpublished outbox rows as a violation (a system under load)",
    )
    audit.set_defaults(func=run(cmd_audit))

    log = sub.add_parser(
        "audit-log",
        parents=[as_json],
        help="what operators changed with sagactl: who, when, why, which rows",
        epilog="examples:\n  sagactl audit-log\n  sagactl audit-log --action outbox.replay --json",
        formatter_class=HelpFormatter,
    )
    log.add_argument(
        "--action",
        choices=(
            "outbox.replay",
            "outbox.purge",
            "inbox.purge",
            "dlq.redrive",
            "dlq.discard",
            "effects.retry",
            "effects.abandon",
        ),
        help="only this kind of change",
    )
    log.add_argument("--service", type=service_name, help="only changes to this service")
    log.add_argument("--limit", type=positive_int, default=20, help="entries (default 20)")
    log.set_defaults(func=run(cmd_audit_log))


def cmd_audit(args: argparse.Namespace, out: Output) -> int:
    url = provider_url(args.provider_url)
    with open_database() as conn:
        try:
            charges, refunds = fetch_ledger(url)
        except LedgerUnavailable as exc:
            raise Refusal(
                f"cannot read the payment provider's ledger: {exc}",
                "start the provider, or pass --provider-url (or set PAYMENTS_PROVIDER_URL);"
                " the provider's key comes from PAYMENTS_PROVIDER_API_KEY",
            ) from exc
        snapshot = load_snapshot(conn, charges=charges, refunds=refunds)
    violations = check(snapshot, require_drained=not args.allow_pending)
    out.emit(
        {
            "ok": not violations,
            "orders": len(snapshot.orders),
            "charges": len(charges),
            "refunds": len(refunds),
            "violations": [
                {"rule": v.rule, "order_id": v.order_id, "detail": v.detail} for v in violations
            ],
        }
    )
    checked = (
        f"{len(snapshot.orders)} orders, {len(snapshot.products)} products, "
        f"{len(charges)} approved charges, {len(refunds)} refunds"
    )
    if not violations:
        out.line(f"all invariants hold ({checked})", style="green")
        return 0
    out.table(
        ("rule", "order", "detail"),
        [(v.rule, v.order_id, v.detail) for v in violations],
        title=f"{len(violations)} violations ({checked})",
    )
    return EXIT_FAILED


def cmd_audit_log(args: argparse.Namespace, out: Output) -> int:
    with open_database() as conn:
        require_audit_log(conn)
        entries = audit_log.list_entries(
            conn, action=args.action, service=args.service, limit=args.limit
        )
    out.emit(
        [
            {
                "id": e.id,
                "occurred_at": e.occurred_at,
                "actor": e.actor,
                "action": e.action,
                "service": e.service,
                "reason": e.reason,
                "target": e.target,
                "command": e.command,
                "host": e.host,
            }
            for e in entries
        ]
    )
    out.table(
        ("id", "when", "who", "action", "service", "why", "command"),
        [(e.id, e.occurred_at, e.actor, e.action, e.service, e.reason, e.command) for e in entries],
        title="operator changes (newest first)",
    )
    if not entries:
        out.note("no entries")
    return 0
