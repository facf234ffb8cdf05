"""``sagactl``: the operator's command line, shipped with the product.

It runs one service, the relay and the migrations, and carries the operator commands
(``outbox``, ``dlq``, ``saga``, ``audit``, ``audit-log``: ``sagactl/ops/``). Other
distributions add command groups through the ``sagactl.commands`` entry points: the
development harness (``harness/``) adds ``up``, ``down``, ``status``, ``bench``, ``chaos``
and the simulators. A production install has none of those.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, TypeAlias

from saga_runtime import KafkaSettings, ensure_topics, relay_login, set_login_passwords
from saga_system import SYSTEM

# The entry-point group other distributions register command groups in. Each entry is a
# ``register(parser, commands)`` callable: ``parser`` for options before the command,
# ``commands`` to add subcommands to.
COMMAND_GROUPS = "sagactl.commands"
if TYPE_CHECKING:
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
    RegisterCommands: TypeAlias = Callable[[argparse.ArgumentParser, Commands], None]


def _fail(message: str, fix: str | None = None) -> int:
    print(f"sagactl: {message}", file=sys.stderr)
    if fix:
        print(f"  fix: {fix}", file=sys.stderr)
    return 2


def system_topics(kafka: KafkaSettings) -> list[str]:
    """Every topic the system uses: one events topic and one dead-letter topic per service."""
    return SYSTEM.topics(kafka.topic_prefix)


def system_logins() -> list[str]:
    """Every login role of the system: one per service and one per outbox's relay."""
    return [*SYSTEM.names, *(relay_login(outbox) for outbox in SYSTEM.outboxes())]


def prepare(env: dict[str, str]) -> None:
    """Migrate the database to head, give the login roles the passwords the environment
    configures, seed the catalogue and create every topic the system uses."""
    import psycopg

    from migrations import upgrade

    # The one service module the operator's tool imports (.importlinter names it): the seed
    # catalogue is stock's data, and a fresh deployment needs it before the first order.
    from stock.catalogue import seed

    upgrade(env["DATABASE_URL"])
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        # Every run sets them again: a changed value in the environment is a rotation.
        passwords = set_login_passwords(conn, system_logins(), {**os.environ, **env})
        added = seed(conn)
    if passwords:
        print(f"sagactl: set the database passwords of {len(passwords)} logins")
    if added:
        print(f"sagactl: seeded the catalogue with {added} products")
    prepare_kafka({**os.environ, **env})


def prepare_kafka(env: Mapping[str, str]) -> KafkaSettings:
    """Set the principals' passwords and the system's ACLs when ``env`` configures them
    (``sagactl.broker_access``), then create every topic the system uses, logged in as
    ``env``'s ``KAFKA_SASL_*`` login; return those settings."""
    from sagactl.broker_access import provision_access

    # The broker's address from ``env``; how to log in to it, the topics' prefix too.
    login = {
        key: env[f"KAFKA_{key.upper()}"]
        for key in ("security_protocol", "sasl_mechanism", "sasl_username", "sasl_password")
        if env.get(f"KAFKA_{key.upper()}")
    }
    kafka = KafkaSettings(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], **login)  # type: ignore[arg-type]
    provisioned = provision_access(kafka, env, SYSTEM)
    if provisioned:
        print(f"sagactl: set the Kafka passwords of {provisioned} principals and their ACLs")
    ensure_topics(kafka, system_topics(kafka))
    return kafka


def cmd_migrate(args: argparse.Namespace) -> int:
    from migrations import downgrade, upgrade

    url = os.environ.get("DATABASE_URL")
    if not url:
        return _fail(
            "DATABASE_URL is not set", "export DATABASE_URL=postgresql://USER@HOST:PORT/DB"
        )
    if args.down:
        downgrade(url, args.down)
    else:
        upgrade(url, args.revision)
    return 0


def cmd_prepare(_args: argparse.Namespace) -> int:
    url, bootstrap = os.environ.get("DATABASE_URL"), os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not (url and bootstrap):
        return _fail(
            "prepare needs DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS",
            "export both (./dev up does this for the local stack)",
        )
    prepare({"DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    return 0


def cmd_topics(_args: argparse.Namespace) -> int:
    kafka = KafkaSettings()
    ensure_topics(kafka, system_topics(kafka))
    return 0


def cmd_relay(_args: argparse.Namespace) -> int:
    from outbox_relay.bootstrap import main

    return main()


def cmd_run(args: argparse.Namespace) -> int:
    from saga_runtime import ConfigurationError, run_service

    try:
        return run_service(SYSTEM, args.service)
    except ConfigurationError as exc:
        return _fail(f"{args.service} cannot start: {exc}")


# Commands that run a process of the system: started by a supervisor, again after every
# crash, so they parse without loading the operator's and the harness's command groups.
SERVING_COMMANDS = ("run", "relay")


def build_parser(*, operator_commands: bool = True) -> argparse.ArgumentParser:
    """The whole command line; without ``operator_commands``, only the product's own
    commands (migrate, prepare, topics, relay, run)."""
    parser = argparse.ArgumentParser(
        prog="sagactl", description="Run and operate the order saga (Kafka + PostgreSQL outbox)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = sub.add_parser("migrate", help="apply the database migrations (DATABASE_URL)")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.add_argument(
        "--down", metavar="REVISION", help="downgrade to REVISION instead (e.g. base)"
    )
    migrate.set_defaults(func=cmd_migrate)

    sub.add_parser(
        "prepare", help="migrate, create the topics and seed the catalogue (idempotent)"
    ).set_defaults(func=cmd_prepare)
    sub.add_parser(
        "topics", help="create the events and dead-letter topics (KAFKA_BOOTSTRAP_SERVERS)"
    ).set_defaults(func=cmd_topics)
    sub.add_parser(
        "relay", help="run the outbox relay (RELAY_OUTBOXES picks the outboxes)"
    ).set_defaults(func=cmd_relay)

    run = sub.add_parser("run", help="run one service")
    run.add_argument("service", choices=SYSTEM.names)
    run.set_defaults(func=cmd_run)
    if not operator_commands:
        return parser

    from sagactl.ops.commands import register as register_operator_commands
    from sagactl.token import register as register_token

    register_token(sub)
    register_operator_commands(sub)
    for register in installed_command_groups():
        register(parser, sub)
    return parser


def installed_command_groups() -> list[RegisterCommands]:
    """The ``register`` of every installed ``sagactl.commands`` entry point, by entry name.

    One that cannot be loaded (a distribution whose code is gone, e.g. a venv that still has
    the harness of a checkout that no longer does) is named on stderr and left out, so that
    the product's own commands still work.
    """
    registers: list[RegisterCommands] = []
    for entry in sorted(entry_points(group=COMMAND_GROUPS), key=lambda entry: entry.name):
        try:
            registers.append(entry.load())
        except Exception as exc:
            print(
                f"sagactl: commands {entry.name!r} ({entry.value}) not loaded: {exc!r}",
                file=sys.stderr,
            )
    return registers


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    serving = bool(argv) and argv[0] in SERVING_COMMANDS
    args = build_parser(operator_commands=not serving).parse_args(argv)
    args.argv = argv  # the audit log records the command as typed
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
