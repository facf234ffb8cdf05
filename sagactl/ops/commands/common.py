"""What every operator command shares: ``--json``, ``--yes/--reason/--actor``, service
arguments, and one wrapper that turns refusals and failures into a message and an exit code;
and what the purges share: dry run, confirmation, audit, progress and summary."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import psycopg

from sagactl.ops.audit_log import Change, command_line, default_actor
from sagactl.ops.connection import SERVICES, open_database, require_audit_log
from sagactl.ops.errors import EXIT_FAILED, EXIT_REFUSED, OperationFailed, Refusal
from sagactl.ops.parsing import format_age
from sagactl.ops.purge import Plan, Purge
from sagactl.ops.render import Output

__all__ = [
    "Command",
    "HelpFormatter",
    "actor_of",
    "change_options",
    "json_option",
    "positive_int",
    "purge_command",
    "require_reason",
    "run",
    "service_name",
    "service_or_all",
    "services_of",
]

Command = Callable[[argparse.Namespace, Output], int]
P = TypeVar("P", bound=Plan)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in descriptions and epilogs as written."""


def json_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document on stdout for scripts (notes and progress go to stderr)",
    )
    return parent


def change_options(*, reason_help: str) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--yes",
        action="store_true",
        help="really do it; without --yes this is a dry run that shows exactly what would happen",
    )
    parent.add_argument("--reason", metavar="TEXT", help=reason_help)
    parent.add_argument(
        "--actor",
        metavar="NAME",
        help="who is doing this, for the audit log (default: $SAGACTL_ACTOR, $SUDO_USER or the "
        "OS user)",
    )
    return parent


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return value


def service_name(text: str) -> str:
    if text not in SERVICES:
        raise argparse.ArgumentTypeError(
            f"unknown service {text!r} (one of: {', '.join(SERVICES)})"
        )
    return text


def service_or_all(text: str) -> str:
    return text if text == "all" else service_name(text)


def services_of(choice: str) -> list[str]:
    return list(SERVICES) if choice == "all" else [choice]


def actor_of(args: argparse.Namespace) -> str:
    return str(getattr(args, "actor", None) or default_actor())


def require_reason(args: argparse.Namespace) -> None:
    """Changes say why; a dry run needs no reason."""
    if args.yes and not (args.reason or "").strip():
        raise Refusal(
            "--yes needs --reason: the audit log records why data was changed",
            'add --reason "what happened and why this fixes it" (e.g. a ticket id)',
        )


def run(command: Command) -> Callable[[argparse.Namespace], int]:
    """Run ``command`` with an ``Output``; refusals exit 2, failures 1, each with a message."""

    @functools.wraps(command)
    def wrapper(args: argparse.Namespace) -> int:
        out = Output(json_mode=bool(getattr(args, "json", False)))
        try:
            return command(args, out)
        except Refusal as exc:
            out.refuse(exc.message, exc.fix)
            return EXIT_REFUSED
        except OperationFailed as exc:
            out.fail(exc.message, exc.detail)
            return EXIT_FAILED
        except psycopg.errors.InsufficientPrivilege as exc:
            out.refuse(
                f"the database refused: {str(exc).strip()}",
                "connect as the admin role that ran the migrations (or a superuser)",
            )
            return EXIT_REFUSED
        except psycopg.OperationalError as exc:
            out.fail(f"lost the database connection: {str(exc).strip()}")
            return EXIT_FAILED

    return wrapper


def purge_command(
    args: argparse.Namespace,
    out: Output,
    *,
    older_than: timedelta,
    plan: Callable[[psycopg.Connection, Sequence[str], datetime], Sequence[P]],
    purge: Purge,
    action: str,
    rows_name: str,
    columns: Sequence[str],
    cells: Callable[[P], Sequence[Any]],
    selected: str,
    title_note: str = "",
) -> int:
    """A purge of rows older than ``older_than`` in the selected services' tables: lists
    ``plan``'s rows per service (``columns``, ``cells``; titled "``selected`` before the
    cutoff"), and with ``--yes`` deletes them with ``purge``, one audit entry ``action`` per
    service. ``rows_name`` names the rows in the messages ("published rows")."""
    services = services_of(args.service)
    with open_database() as conn:
        row = conn.execute("SELECT now() - %s::interval", (older_than,)).fetchone()
        assert row is not None
        cutoff = row[0]
        plans = plan(conn, services, cutoff)
        total = sum(p.rows for p in plans)
        summary: dict[str, Any] = {
            "dry_run": not args.yes,
            "older_than_s": older_than.total_seconds(),
            "cutoff": cutoff,
            "services": [p.as_dict() for p in plans],
            "rows": total,
        }
        out.table(
            columns,
            [cells(p) for p in plans],
            title=f"{selected} before {cutoff:%Y-%m-%d %H:%M:%S} UTC "
            f"({format_age(older_than.total_seconds())} ago){title_note}",
        )
        if not total:
            out.note("nothing to purge")
            out.emit(summary)
            return 0
        if not args.yes:
            out.note(f"dry run: nothing changed. Add --yes to delete these {total} rows.")
            out.emit(summary)
            return 0
        require_audit_log(conn)
        actor = actor_of(args)
        reason = args.reason or f"purge {rows_name} older than {older_than}"
        deleted: dict[str, Any] = {}
        with out.progress(f"deleting {rows_name}", total=total) as bar:
            for each in plans:
                if not each.rows:
                    continue

                def change(count: int, each: P = each) -> Change:
                    return Change(
                        actor=actor,
                        action=action,
                        service=each.service,
                        reason=reason,
                        target={"cutoff": cutoff, "deleted": count, **each.as_dict()},
                        command=command_line(args.argv),
                    )

                count, audit_id = purge(
                    conn, each.service, cutoff, change=change, on_batch=bar.advance
                )
                deleted[each.service] = {"deleted": count, "audit_id": audit_id}
    summary["deleted"] = deleted
    out.line(f"deleted {sum(d['deleted'] for d in deleted.values())} {rows_name}", style="green")
    out.emit(summary)
    return 0
