"""What every operator command shares: ``--json``, ``--yes/--reason/--actor``, service
arguments, and one wrapper that turns refusals and failures into a message and an exit code."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable

import psycopg

from sagactl.ops.audit_log import default_actor
from sagactl.ops.connection import SERVICES
from sagactl.ops.errors import EXIT_FAILED, EXIT_REFUSED, OperationFailed, Refusal
from sagactl.ops.render import Output

__all__ = [
    "Command",
    "HelpFormatter",
    "actor_of",
    "change_options",
    "json_option",
    "positive_int",
    "require_reason",
    "run",
    "service_name",
    "service_or_all",
    "services_of",
]

Command = Callable[[argparse.Namespace, Output], int]


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
