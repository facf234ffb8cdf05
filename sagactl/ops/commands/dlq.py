"""``sagactl dlq list|show|redrive|discard``: the parser.

``list`` and ``show`` are in ``dlq_inspect``, ``redrive`` and ``discard`` (the two ways a
letter is resolved) in ``dlq_resolve``.
"""

from __future__ import annotations

import argparse

from sagactl.ops import dead_letters
from sagactl.ops.commands.common import (
    HelpFormatter,
    change_options,
    json_option,
    positive_int,
    run,
    service_name,
    service_or_all,
)
from sagactl.ops.commands.dlq_inspect import cmd_list, cmd_show
from sagactl.ops.commands.dlq_resolve import cmd_discard, cmd_redrive

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "dlq",
        help="inspect, redrive and discard dead letters",
        description="Messages a service's consumer gave up on (poison, or a handler that kept "
        "failing), kept in <service>.dead_letters with the error and the original bytes.",
        formatter_class=HelpFormatter,
    )
    actions = parser.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    as_json = json_option()

    lst = actions.add_parser(
        "list",
        parents=[as_json],
        help="dead letters and counts per status",
        epilog="examples:\n  sagactl dlq list --status pending\n"
        "  sagactl dlq list --service shipments --order 238d7afd-... --json",
        formatter_class=HelpFormatter,
    )
    lst.add_argument("--service", type=service_or_all, default="all", help="a service or all")
    lst.add_argument("--status", choices=dead_letters.STATUSES, help="pending, redriven, discarded")
    lst.add_argument("--order", metavar="ORDER_ID", help="letters about this order")
    lst.add_argument("--limit", type=positive_int, default=50, help="rows to show (default 50)")
    lst.set_defaults(func=run(cmd_list))

    show = actions.add_parser(
        "show",
        parents=[as_json],
        help="one letter: error, headers, original key and value",
        epilog="example:\n  sagactl dlq show shipments 3",
        formatter_class=HelpFormatter,
    )
    show.add_argument("service", type=service_name, metavar="SERVICE")
    show.add_argument("id", type=positive_int, metavar="ID")
    show.set_defaults(func=run(cmd_show))

    redrive = actions.add_parser(
        "redrive",
        parents=[as_json, change_options(reason_help="why (required with --yes; audited)")],
        help="send letters back to their source topic (dry run unless --yes)",
        description="Produce each pending letter's original key, value and headers back to "
        "its source topic, wait for the broker's ack (acks=all), then mark it redriven. "
        "Fix the cause first (deploy the fix, correct the setting): the consumer that "
        "dead-lettered it never recorded the event, so it applies the redriven copy; other "
        "consumers of the topic that already applied it skip it (same event id).\n\n"
        "Needs KAFKA_BOOTSTRAP_SERVERS (and KAFKA_CLIENT_CONFIG if the broker needs it).",
        epilog="examples:\n  sagactl dlq redrive shipments 3\n"
        "  sagactl dlq redrive shipments --all-pending --reason 'INC-7 setting fixed' --yes",
        formatter_class=HelpFormatter,
    )
    redrive.add_argument("service", type=service_name, metavar="SERVICE")
    redrive.add_argument("ids", type=positive_int, nargs="*", metavar="ID", help="letter ids")
    redrive.add_argument(
        "--all-pending", action="store_true", help="every pending letter of the service"
    )
    redrive.set_defaults(func=run(cmd_redrive))

    discard = actions.add_parser(
        "discard",
        parents=[as_json, change_options(reason_help="why (required with --yes; audited)")],
        help="give up on letters for good (dry run unless --yes)",
        description="Mark pending letters discarded: they are kept, with who discarded them "
        "and why, and never sent again.",
        epilog="example:\n  sagactl dlq discard stock 4 5 --reason 'test traffic' --yes",
        formatter_class=HelpFormatter,
    )
    discard.add_argument("service", type=service_name, metavar="SERVICE")
    discard.add_argument("ids", type=positive_int, nargs="+", metavar="ID", help="letter ids")
    discard.set_defaults(func=run(cmd_discard))
