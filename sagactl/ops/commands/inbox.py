"""``sagactl inbox purge``."""

from __future__ import annotations

import argparse
import os
from datetime import timedelta

from confluent_kafka import KafkaException

from saga_runtime import InboxSettings, events_topic, topic_retentions
from sagactl.ops import inbox
from sagactl.ops.commands.common import (
    HelpFormatter,
    change_options,
    json_option,
    purge_command,
    run,
    service_or_all,
)
from sagactl.ops.connection import SERVICES, kafka_settings
from sagactl.ops.errors import Refusal
from sagactl.ops.parsing import format_age, parse_duration
from sagactl.ops.render import Output

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "inbox",
        help="purge the services' inboxes",
        description="Each service's inbox records the events it applied, so that a second "
        "delivery does nothing.",
        formatter_class=HelpFormatter,
    )
    actions = parser.add_subparsers(dest="inbox_command", required=True, metavar="ACTION")
    purge = actions.add_parser(
        "purge",
        parents=[json_option(), change_options(reason_help="why (optional; audited)")],
        help="delete inbox rows older than a cutoff (dry run unless --yes)",
        description="Delete the records of events applied before the cutoff. A record is "
        "needed while its event can be delivered again, i.e. while a topic still holds it: the "
        "cutoff must be older than every events topic's retention (retention.ms), and the "
        "command refuses otherwise when KAFKA_BOOTSTRAP_SERVERS is set. The relay does this "
        "by itself after INBOX_RETENTION; this is for doing it now. Audited in ops.audit_log.",
        epilog="examples:\n  sagactl inbox purge\n"
        "  sagactl inbox purge --service payments --older-than 45d --yes",
        formatter_class=HelpFormatter,
    )
    purge.add_argument("--service", type=service_or_all, default="all", help="a service or all")
    purge.add_argument(
        "--older-than",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help="applied more than this long ago (default: INBOX_RETENTION, 30d)",
    )
    purge.set_defaults(func=run(cmd_purge))


def _check_against_topics(older_than: timedelta, out: Output) -> None:
    """Refuse a cutoff inside a topic's replay window, if the broker is configured."""
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        out.warn(
            "KAFKA_BOOTSTRAP_SERVERS is not set: the cutoff is not checked against the topics'"
            " retention (it must be longer, or a replayed event could apply twice)"
        )
        return
    kafka = kafka_settings()
    try:
        retentions = topic_retentions(
            kafka, [events_topic(s, kafka.topic_prefix) for s in SERVICES]
        )
    except (KafkaException, TimeoutError) as exc:
        raise Refusal(
            f"cannot read the topics' retention from {kafka.bootstrap_servers}: {exc!r}",
            "check that the broker is up, or unset KAFKA_BOOTSTRAP_SERVERS to skip the check",
        ) from exc
    inside = {t: r for t, r in retentions.items() if r is None or r >= older_than}
    if inside:
        listed = ", ".join(
            f"{t} ({'forever' if r is None else format_age(r.total_seconds())})"
            for t, r in sorted(inside.items())
        )
        raise Refusal(
            f"events applied {format_age(older_than.total_seconds())} ago may still be in a "
            f"topic and be delivered again; their records must stay: {listed}",
            "use an --older-than longer than every events topic's retention",
        )


def cmd_purge(args: argparse.Namespace, out: Output) -> int:
    older_than = InboxSettings().retention if args.older_than is None else args.older_than
    _check_against_topics(older_than, out)
    return purge_command(
        args,
        out,
        older_than=older_than,
        plan=inbox.plan_purge,
        purge=inbox.purge,
        action="inbox.purge",
        rows_name="inbox rows",
        columns=("service", "inbox rows", "oldest processed", "newest processed"),
        cells=lambda p: (p.service, p.rows, p.oldest_processed_at, p.newest_processed_at),
        selected="processed",
    )
