"""``sagactl outbox list|show|replay|purge``: the parser, and ``purge``.

``list`` and ``show`` are in ``outbox_inspect``, ``replay`` in ``outbox_replay``.
"""

from __future__ import annotations

import argparse

from saga_runtime import RelaySettings
from sagactl.ops import outbox_purge
from sagactl.ops.commands.common import (
    HelpFormatter,
    change_options,
    json_option,
    positive_int,
    purge_command,
    run,
    service_name,
    service_or_all,
)
from sagactl.ops.commands.outbox_inspect import add_filters, cmd_list, cmd_show
from sagactl.ops.commands.outbox_replay import cmd_replay
from sagactl.ops.parsing import parse_duration, parse_id_range, parse_ids
from sagactl.ops.render import Output

__all__ = ["register"]

STATES_HELP = (
    "pending: not yet published (published_at and failed_at empty); published: acknowledged "
    "by the broker; failed: refused for good by the broker (the relay skips it)"
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "outbox",
        help="inspect, replay and purge the services' outboxes",
        description="The outbox rows of every service: what was published, what waits, what "
        "failed, and re-sending rows through the relay.\n\nStates: " + STATES_HELP,
        formatter_class=HelpFormatter,
    )
    actions = parser.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    as_json = json_option()

    lst = actions.add_parser(
        "list",
        parents=[as_json],
        help="rows, counts per state and the relay's lag",
        description="Outbox rows (newest first), then counts per state per service and the "
        "age of the oldest pending row (the relay's lag).\n\nStates: " + STATES_HELP,
        epilog="examples:\n"
        "  sagactl outbox list --state failed\n"
        "  sagactl outbox list --service orders --order 238d7afd-... --json\n"
        "  sagactl outbox list --type OrderApproved --since 2h --limit 200",
        formatter_class=HelpFormatter,
    )
    lst.add_argument("--service", type=service_or_all, default="all", help="a service or all")
    add_filters(lst)
    lst.add_argument("--limit", type=positive_int, default=50, help="rows to show (default 50)")
    lst.set_defaults(func=run(cmd_list))

    show = actions.add_parser(
        "show",
        parents=[as_json],
        help="one row with its full envelope and who consumed it",
        formatter_class=HelpFormatter,
        epilog="example:\n  sagactl outbox show shipments 42",
    )
    show.add_argument("service", type=service_name, metavar="SERVICE")
    show.add_argument("id", type=positive_int, metavar="ID")
    show.set_defaults(func=run(cmd_show))

    replay = actions.add_parser(
        "replay",
        parents=[as_json, change_options(reason_help="why (required with --yes; audited)")],
        help="re-publish rows through the relay (dry run unless --yes)",
        description="Put the selected published or failed rows back to pending and wake the "
        "relay, which publishes them again (in id order, marked after the broker's ack). The "
        "events keep their event id: a consumer that already applied one does nothing. Rows "
        "still pending are left alone. Every replay is recorded in ops.audit_log.\n\n"
        "Replay when topic data was lost, for a new consumer, or for rows that failed to "
        "publish once the cause is fixed; not to 'fix' a consumer bug (redrive its dead "
        "letter instead) and never to re-run side effects.",
        epilog="examples:\n"
        "  sagactl outbox replay --service shipments --state failed\n"
        "  sagactl outbox replay --service orders --ids 12,13 --reason 'INC-42 topic lost' --yes\n"
        "  sagactl outbox replay --service stock --since 2026-11-21T20:00Z --until 21:00Z",
        formatter_class=HelpFormatter,
    )
    replay.add_argument("--service", type=service_name, required=True, help="whose outbox")
    add_filters(replay)
    replay.add_argument("--ids", type=parse_ids, metavar="ID,ID", help="these row ids")
    replay.add_argument("--id-range", type=parse_id_range, metavar="A-B", help="ids A to B")
    replay.add_argument(
        "--max-rows",
        type=positive_int,
        default=10_000,
        help="refuse to replay more rows than this at once (default 10000)",
    )
    replay.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="return at once instead of waiting for the relay to publish the rows",
    )
    replay.add_argument(
        "--wait-timeout",
        type=parse_duration,
        default=parse_duration("60s"),
        metavar="DURATION",
        help="how long to wait for the relay (default 60s)",
    )
    replay.set_defaults(func=run(cmd_replay))

    purge = actions.add_parser(
        "purge",
        parents=[as_json, change_options(reason_help="why (optional; audited)")],
        help="delete published rows older than a cutoff (dry run unless --yes)",
        description="Delete published rows older than the cutoff. Pending and failed rows are "
        "never deleted. The relay does this by itself after RELAY_RETENTION; this is for "
        "doing it now. Audited in ops.audit_log.",
        epilog="examples:\n  sagactl outbox purge\n  sagactl outbox purge --older-than 2d --yes",
        formatter_class=HelpFormatter,
    )
    purge.add_argument("--service", type=service_or_all, default="all", help="a service or all")
    purge.add_argument(
        "--older-than",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help="published more than this long ago (default: RELAY_RETENTION, 7d)",
    )
    purge.set_defaults(func=run(cmd_purge))


def cmd_purge(args: argparse.Namespace, out: Output) -> int:
    # 0s is a valid cutoff (everything published so far), so test for None, not falsiness.
    older_than = RelaySettings().retention if args.older_than is None else args.older_than
    return purge_command(
        args,
        out,
        older_than=older_than,
        plan=outbox_purge.plan_purge,
        purge=outbox_purge.purge,
        action="outbox.purge",
        rows_name="published rows",
        columns=("service", "published rows", "ids", "oldest published", "newest published"),
        cells=lambda p: (
            p.service,
            p.rows,
            f"{p.first_id}..{p.last_id}" if p.rows else "-",
            p.oldest_published_at,
            p.newest_published_at,
        ),
        selected="published",
        title_note="; pending and failed rows are kept",
    )
