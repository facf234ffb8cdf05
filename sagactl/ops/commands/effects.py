"""``sagactl effects list|show|retry|abandon``: the parser.

``list`` and ``show`` are in ``effects_inspect``, ``retry`` and ``abandon`` in
``effects_change``.
"""

from __future__ import annotations

import argparse

from sagactl.ops.commands.common import (
    HelpFormatter,
    change_options,
    json_option,
    positive_int,
    run,
    service_name,
    service_or_all,
)
from sagactl.ops.commands.effects_change import cmd_abandon, cmd_retry
from sagactl.ops.commands.effects_inspect import cmd_list, cmd_show, parse_statuses
from sagactl.ops.effects import KNOWN_STATUSES
from sagactl.ops.parsing import parse_duration

__all__ = ["register"]

STATUSES_HELP = (
    "pending: waiting for its next attempt (next = when it is due); running: leased to an "
    "executor, which is making the call; done: the call succeeded and the service decided on "
    "it; failed: it failed for good (or ran out of time) and the service heard so; abandoned: "
    "an operator gave up on it. A status this list does not name is shown as the table holds "
    "it."
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "effects",
        help="inspect, retry and abandon the services' calls to the outside world",
        description="Effects are the calls a service's decisions request (charge, refund, book "
        "a carrier, send an e-mail), kept in <service>.effects and made by its effect "
        "executor, outside any transaction, with an idempotency key. Services that do not run "
        "their calls through an executor have no effects table and are left out.\n\n"
        "Statuses: " + STATUSES_HELP,
        formatter_class=HelpFormatter,
    )
    actions = parser.add_subparsers(dest="effects_command", required=True, metavar="ACTION")
    as_json = json_option()

    lst = actions.add_parser(
        "list",
        parents=[as_json],
        help="effects, counts per status and the executors' lag",
        description="Effects (newest first), then counts per status per service, how long the "
        "oldest due pending effect has waited (the executor's lag) and how many running "
        "effects have an expired lease (an executor that died or hangs).\n\n"
        "Statuses: " + STATUSES_HELP,
        epilog="examples:\n"
        "  sagactl effects list --status failed\n"
        "  sagactl effects list --service payments --status pending,running\n"
        "  sagactl effects list --kind charge --order 238d7afd-... --json",
        formatter_class=HelpFormatter,
    )
    lst.add_argument("--service", type=service_or_all, default="all", help="a service or all")
    _add_filters(lst)
    lst.add_argument("--limit", type=positive_int, default=50, help="rows to show (default 50)")
    lst.set_defaults(func=run(cmd_list))

    show = actions.add_parser(
        "show",
        parents=[as_json],
        help="one effect: its row, request, outcome, and its order's other effects",
        epilog="example:\n  sagactl effects show --service payments 42",
        formatter_class=HelpFormatter,
    )
    show.add_argument("--service", type=service_name, required=True, help="whose effect")
    show.add_argument("id", type=positive_int, metavar="ID")
    show.set_defaults(func=run(cmd_show))

    retry = actions.add_parser(
        "retry",
        parents=[as_json, change_options(reason_help="why (required with --yes; audited)")],
        help="put failed or abandoned effects back to pending (dry run unless --yes)",
        description="Put failed or abandoned effects back to pending with their attempts "
        "reset and a fresh deadline; the executor calls again at its next poll, with the same "
        "idempotency key, and the service decides on the new outcome. Running and done "
        "effects are refused, and so is an effect whose order has a later effect running. "
        "Every retry is recorded in ops.audit_log.\n\n"
        "Retry once the cause is fixed (the provider is back, a setting corrected).",
        epilog="examples:\n"
        "  sagactl effects retry --service payments 42\n"
        "  sagactl effects retry --service shipments --kind book --status failed\n"
        "  sagactl effects retry --service payments 42 43 --reason 'INC-9 provider back' --yes",
        formatter_class=HelpFormatter,
    )
    retry.add_argument("--service", type=service_name, required=True, help="whose effects")
    retry.add_argument("ids", type=positive_int, nargs="*", metavar="ID", help="effect ids")
    _add_filters(retry)
    retry.add_argument(
        "--deadline",
        type=parse_duration,
        default=parse_duration("10m"),
        metavar="DURATION",
        help="the fresh deadline, from now: transient failures are retried until then "
        "(seconds or e.g. 10m; default 10m)",
    )
    retry.set_defaults(func=run(cmd_retry))

    abandon = actions.add_parser(
        "abandon",
        parents=[as_json, change_options(reason_help="why (required with --yes; audited)")],
        help="give up on pending or failed effects for good (dry run unless --yes)",
        description="Mark pending or failed effects abandoned: they are kept, never called "
        "again, and the service hears no outcome for them (their order's later effects run "
        "next). Never a running effect: its executor may be making the call. Audited in "
        "ops.audit_log; `effects retry` takes an abandoned effect back.",
        epilog="example:\n"
        "  sagactl effects abandon --service notifications 7 --reason 'test address' --yes",
        formatter_class=HelpFormatter,
    )
    abandon.add_argument("--service", type=service_name, required=True, help="whose effects")
    abandon.add_argument("ids", type=positive_int, nargs="+", metavar="ID", help="effect ids")
    abandon.set_defaults(func=run(cmd_abandon), status=None, kind=None, order=None)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    """The selection ``list`` and ``retry`` share."""
    parser.add_argument(
        "--status",
        type=parse_statuses,
        metavar="STATUS[,STATUS]",
        help=f"any of these ({', '.join(KNOWN_STATUSES)})",
    )
    parser.add_argument("--kind", metavar="KIND", help="e.g. charge")
    parser.add_argument("--order", metavar="ORDER_ID", help="effects of this order")
