"""``sagactl token``: mint a bearer token for local use, signed with ``AUTH_JWT_SECRET``.

A customer's token (``--customer ID``: subject = the customer id, scope ``customer``) places,
reads, lists and cancels that customer's orders; an operator's (``--operator``: scope
``operator``, subject = the operator's name) counts stock in and reads any order. Only the
token is printed, so that ``TOKEN=$(sagactl token --customer c-42)`` works. Deployments that
verify tokens with a JWKS get them from their identity provider instead.
"""

from __future__ import annotations

import argparse
import sys

from saga_runtime import AuthSettings, ConfigurationError, InvalidToken, mint_token
from sagactl.ops.audit_log import default_actor

__all__ = ["cmd_token", "register"]


def cmd_token(args: argparse.Namespace) -> int:
    if args.operator:
        subject, scopes = args.name or default_actor(), ["operator"]
    else:
        subject, scopes = args.customer, ["customer"]
    try:
        token = mint_token(AuthSettings(), subject=subject, scopes=scopes, ttl_seconds=args.ttl)
    except ConfigurationError as exc:
        return _fail(str(exc), "export AUTH_JWT_SECRET (the services' secret; ./dev reads .env)")
    except InvalidToken as exc:
        return _fail(exc.reason, "an id of 1-200 printable characters, not all blank")
    print(token)
    return 0


def _fail(message: str, fix: str) -> int:
    print(f"sagactl: {message}\n  fix: {fix}", file=sys.stderr)
    return 2


def _positive(text: str) -> float:
    value = float(text)
    if not 0 < value <= 366 * 24 * 3600:
        raise argparse.ArgumentTypeError("between 0 and a year of seconds")
    return value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    token = sub.add_parser(
        "token",
        help="mint a local bearer token (AUTH_JWT_SECRET): --customer ID or --operator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer", metavar="ID", help="a customer's token: subject ID")
    who.add_argument("--operator", action="store_true", help="an operator's token")
    token.add_argument(
        "--name",
        help="the operator's name, its subject (default: $SAGACTL_ACTOR, $SUDO_USER or the "
        "OS user)",
    )
    token.add_argument(
        "--ttl",
        type=_positive,
        metavar="SECONDS",
        help="lifetime (default: $AUTH_TOKEN_TTL or 3600)",
    )
    token.set_defaults(func=cmd_token)
