"""The harness's ``sagactl`` commands: ``up``, ``down``, ``status``, ``chaos``, ``bench`` and
the simulators (``provider``, ``smtp-sink``).

``register`` is this distribution's ``sagactl.commands`` entry point (``harness/pyproject.toml``),
so these exist wherever the harness is installed (``./dev``, the compose simulators) and
nowhere else.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from saga_runtime import password_variable
from saga_system import SYSTEM
from sagactl.cli import prepare

if TYPE_CHECKING:
    from sagactl.cli import Commands

__all__ = [
    "default_state_dir",
    "missing_secrets",
    "own_secrets",
    "provision",
    "register",
    "token_hint",
    "withheld_from_children",
]


def default_state_dir() -> Path:
    """``SAGA_STATE_DIR``, else ``.state`` in the current directory (``./dev`` runs in the repo)."""
    return Path(os.environ.get("SAGA_STATE_DIR", Path.cwd() / ".state")).absolute()


def provision(state_dir: Path) -> tuple[dict[str, str], bool]:
    """Addresses for the system: from the environment when given, else the local stack.

    Returns the environment to give child processes and whether a local stack
    was used (and so is ours to stop).
    """
    database_url = os.environ.get("DATABASE_URL")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    local = False
    if not (database_url and bootstrap):
        from saga_harness.infra import ensure_stack

        # The local broker runs secured, as production would: logins and ACLs.
        addresses = ensure_stack(state_dir=state_dir / "dev", kafka_secured=True)
        database_url = database_url or addresses.database_url
        bootstrap = bootstrap or addresses.kafka_bootstrap
        local = True
    return {"DATABASE_URL": database_url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}, local


def _health_url(service: str) -> str | None:
    """Where ``service`` serves /healthz and /readyz: its API port, else its own health port
    (its settings, so the environment overrides them as it does for the service)."""
    from saga_runtime import composition_root

    settings = composition_root(SYSTEM, service).Settings()
    port = getattr(settings, "port", None) or settings.health_port
    return f"http://127.0.0.1:{port}" if port else None


def _port_url(variable: str, default: int) -> str | None:
    port = int(os.environ.get(variable, default))
    return f"http://127.0.0.1:{port}" if port else None


def missing_secrets(environ: Mapping[str, str]) -> list[str]:
    """What ``up`` cannot start without: the APIs' token keys and the provider's key (both
    from ``.env`` under ``./dev``). Never open APIs, so never a default."""
    missing = []
    if not (environ.get("AUTH_JWT_SECRET") or environ.get("AUTH_JWKS_FILE")):
        missing.append("AUTH_JWT_SECRET (or AUTH_JWKS_FILE)")
    missing += [
        name for name in ("PROVIDER_API_KEY", "PAYMENTS_PROVIDER_API_KEY") if not environ.get(name)
    ]
    return missing


def token_hint(orders_port: int) -> str:
    """How to call the API, printed by ``up``: where it is and how to get a token."""
    return (
        f"sagactl: orders API http://127.0.0.1:{orders_port} (docs at /docs); every call needs"
        " a bearer token:\n"
        "  TOKEN=$(./dev token --customer c-42)    # a customer's (./dev token --operator:"
        " an operator's)\n"
        f'  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:{orders_port}/orders'
    )


def _kafka_logins(
    state_dir: Path, env: dict[str, str], local: bool
) -> tuple[dict[str, str] | None, dict[str, str]]:
    """Each principal's password when the broker is secured (the local one always is; one
    of the user's when ``KAFKA_SECURITY_PROTOCOL`` says SASL), else None; and the login
    ``prepare`` creates the topics with. Sets the local broker's ACLs and passwords."""
    from saga_harness.kafka_logins import take_passwords

    protocol = os.environ.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    if not (local or protocol.startswith("SASL_")):
        return None, {}
    passwords = take_passwords(os.environ, SYSTEM)
    if local:
        from saga_harness.infra import LocalKafka
        from saga_harness.kafka_logins import provision_access
        from saga_runtime import KafkaSettings

        root = LocalKafka(state_dir=state_dir / "dev", secured=True).admin_properties()
        provision_access(
            env["KAFKA_BOOTSTRAP_SERVERS"],
            root,
            SYSTEM,
            passwords,
            prefix=KafkaSettings().topic_prefix,
        )
        env["KAFKA_SECURITY_PROTOCOL"] = "SASL_PLAINTEXT"
        return passwords, {
            "KAFKA_SASL_MECHANISM": root["sasl.mechanisms"],
            "KAFKA_SASL_USERNAME": root["sasl.username"],
            "KAFKA_SASL_PASSWORD": root["sasl.password"],
        }
    return passwords, {}


# Beyond its logins, the secrets of .env (``saga_harness.dotenv.SECRETS``) a process of
# ./dev up gets; no child inherits the others, as each compose container gets only its own.
_OWN_SECRETS = {
    "provider": ("PROVIDER_API_KEY",),
    "orders": ("AUTH_JWT_SECRET",),
    "stock": ("AUTH_JWT_SECRET",),
    "payments": ("PAYMENTS_PROVIDER_API_KEY",),
}


def own_secrets(process: str, logins: Iterable[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The secrets ``process`` gets from ``environ``: its own (``_OWN_SECRETS``) and the
    passwords of the database ``logins`` it uses."""
    names = [*_OWN_SECRETS.get(process, ()), *(password_variable(login) for login in logins)]
    return {name: environ[name] for name in names if name in environ}


def withheld_from_children() -> frozenset[str]:
    """What no process of ./dev up inherits: every secret of .env, and a Kafka login."""
    from saga_harness.dotenv import SECRETS

    return frozenset({*SECRETS, "KAFKA_SASL_PASSWORD"})


def cmd_up(args: argparse.Namespace) -> int:
    from saga_harness.infra import LocalPostgres, stop_stack
    from saga_harness.infra.postgres_auth import redact
    from saga_harness.kafka_logins import relay_login, service_login
    from saga_harness.logins import without_user
    from saga_harness.monitoring import (
        RELAY_METRICS_PORTS,
        metrics_env,
        prometheus_spec,
        service_metrics_targets,
    )
    from saga_harness.supervisor import ProcessSpec, Supervisor
    from saga_runtime import relay_login as relay_db_login

    missing = missing_secrets(os.environ)
    if missing:
        print(
            f"sagactl: up needs {', '.join(missing)}: run it as ./dev up, which keeps them in"
            " .env, or export them",
            file=sys.stderr,
        )
        return 2
    state_dir: Path = args.state_dir
    env, local = provision(state_dir)
    print(
        f"sagactl: PostgreSQL {redact(env['DATABASE_URL'])}, Kafka {env['KAFKA_BOOTSTRAP_SERVERS']}"
    )
    if local:
        password = LocalPostgres(state_dir=state_dir / "dev").password_file
        print(f"sagactl: the PostgreSQL superuser's password is in {password}")
    passwords, super_user = _kafka_logins(state_dir, env, local)
    prepare({**env, **super_user})  # the broker's super user's login goes to no child
    env.setdefault("SMTP_SINK_FILE", str(state_dir / "mail.jsonl"))
    # The simulated carrier takes a moment to book, so a demo can still cancel after payment.
    env.setdefault("SHIPMENTS_BOOKING_SECONDS", os.environ.get("SHIPMENTS_BOOKING_SECONDS", "2"))
    # And the provider a card network's latency: outside calls are effects, so these
    # add latency to a saga but cap no throughput.
    env.setdefault("PROVIDER_LATENCY_SECONDS", os.environ.get("PROVIDER_LATENCY_SECONDS", "0.3"))
    # One process per service, restarted by the supervisor: static members of their
    # groups, so a restarted service takes its partitions back at once.
    env.setdefault(
        "CONSUMER_GROUP_INSTANCE_ID", os.environ.get("CONSUMER_GROUP_INSTANCE_ID", "dev")
    )
    env.update(metrics_env(os.environ))
    base = [sys.executable, "-m", "sagactl"]
    # Services and relays log in as their own roles: the admin's user and password (the URL's)
    # go only to the provider simulator (its ledger has no role of its own), as in compose.
    own_login = {"DATABASE_URL": without_user(env["DATABASE_URL"])}
    specs = [
        ProcessSpec(name="smtp-sink", argv=[*base, "smtp-sink"], env={**env, **own_login}),
        ProcessSpec(
            name="provider",
            argv=[*base, "provider"],
            env={**env, **own_secrets("provider", (), os.environ)},
            health_url=_port_url("PROVIDER_PORT", 8010),
        ),
    ]
    # Two relays on one host: a health port and a metrics port each.
    relays = list(zip("ab"[: args.relays], (8030, 8031), RELAY_METRICS_PORTS, strict=False))
    specs += [
        ProcessSpec(
            name=f"relay-{n}",
            argv=[*base, "relay"],
            env={
                **env,
                **own_login,
                "RELAY_NAME": f"relay-{n}",
                "RELAY_HEALTH_PORT": str(port),
                **(relay_login(SYSTEM, passwords) if passwords else {}),
                "RELAY_METRICS_PORT": str(metrics),
                **own_secrets(
                    f"relay-{n}", [relay_db_login(o) for o in SYSTEM.outboxes()], os.environ
                ),
            },
            health_url=f"http://127.0.0.1:{port}",
        )
        for n, port, metrics in relays
    ]
    services = SYSTEM.names
    specs += [
        ProcessSpec(
            name=s,
            argv=[*base, "run", s],
            env={
                **env,
                **own_login,
                **own_secrets(s, [s], os.environ),
                **(service_login(s, passwords) if passwords else {}),
            },
            health_url=_health_url(s),
        )
        for s in services
    ]
    targets = {
        **service_metrics_targets(env),
        **{f"relay-{n}": f"127.0.0.1:{metrics}" for n, _port, metrics in relays},
    }
    prometheus = prometheus_spec(state_dir, targets)
    specs += [prometheus] if prometheus is not None else []
    log_dir = state_dir / "logs"
    supervisor = Supervisor(
        specs, log_dir=log_dir, state_dir=state_dir, withheld=withheld_from_children()
    )
    print(f"sagactl: running {', '.join(s.name for s in specs)}; logs in {log_dir}; Ctrl-C stops")
    print(token_hint(int(os.environ.get("ORDERS_PORT", 8000))))
    try:
        supervisor.run_until_signalled()
    finally:
        if local and not args.keep_infra:
            stop_stack(state_dir=state_dir / "dev")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from saga_harness.infra import stop_stack
    from saga_harness.supervisor import stop_supervisor

    stop_supervisor(args.state_dir)
    stop_stack(state_dir=args.state_dir / "dev")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from saga_harness.infra import stack_status
    from saga_harness.supervisor import supervisor_pid

    status = stack_status(state_dir=args.state_dir / "dev")
    pid = supervisor_pid(args.state_dir)
    for name, running in [*status.items(), ("system", pid is not None)]:
        print(f"{name:10} {'running' if running else 'stopped'}")
    return 0


def cmd_provider(_args: argparse.Namespace) -> int:
    from saga_runtime import ConfigurationError
    from simulators.payment_provider.bootstrap import main

    try:
        return int(main())
    except ConfigurationError as exc:
        print(f"sagactl: the provider cannot start: {exc}", file=sys.stderr)
        return 2


def cmd_smtp_sink(_args: argparse.Namespace) -> int:
    from simulators.smtp_sink import main

    return int(main())


def cmd_chaos(args: argparse.Namespace) -> int:
    import random

    from saga_harness.chaos import ChaosConfig, run_chaos
    from saga_harness.infra import LocalStack

    seed = args.seed if args.seed is not None else random.randrange(1_000_000)

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # so that the system and the stack are torn down

    signal.signal(signal.SIGTERM, interrupt)
    stack = LocalStack(
        state_dir=args.state_dir / "chaos",
        pg_port=55434,
        kafka_port=19292,
        kafka_controller_port=19293,
        kafka_secured=True,  # as ./dev up's: logins and ACLs
    )
    stack.ensure()
    try:
        report = run_chaos(
            ChaosConfig(
                seed=seed,
                converge_timeout=600.0,
                duration=args.duration,
                fault_every=args.fault_every,
                order_rate=args.rate,
                replicas=tuple(args.replicas),
            ),
            stack=stack,
            log_dir=args.state_dir / "chaos" / f"run-{seed}",
        )
    finally:
        stack.stop()
    print(report.to_json() if args.json else report.summary())
    return 0 if report.passed else 1


def replica_count(text: str) -> tuple[str, int]:
    """``SERVICE=N`` for ``--replicas``: a service of the system and a count from 1 to 4."""
    service, _, count = text.partition("=")
    if service not in SYSTEM.names:
        raise argparse.ArgumentTypeError(
            f"unknown service {service!r} (one of {', '.join(SYSTEM.names)})"
        )
    if not count.isdigit() or not 1 <= int(count) <= 4:
        raise argparse.ArgumentTypeError(f"expected {service}=N with N from 1 to 4, got {text!r}")
    return service, int(count)


def register(parser: argparse.ArgumentParser, sub: Commands) -> None:
    """Add the harness's options and commands to ``sagactl``'s parser."""
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir(),
        help="where local PostgreSQL, Kafka and logs live (default: ./.state or $SAGA_STATE_DIR)",
    )

    up = sub.add_parser(
        "up", help="start PostgreSQL, Kafka, the relays and the services (Ctrl-C stops)"
    )
    up.add_argument(
        "--relays",
        type=int,
        choices=(1, 2),
        default=2,
        help="relay processes (2: active + hot standby)",
    )
    up.add_argument(
        "--keep-infra", action="store_true", help="leave PostgreSQL and Kafka running on exit"
    )
    up.set_defaults(func=cmd_up)

    sub.add_parser(
        "down", help="stop a running `sagactl up` and the local infrastructure"
    ).set_defaults(func=cmd_down)
    sub.add_parser("status", help="show what is running").set_defaults(func=cmd_status)

    sub.add_parser(
        "provider", help="run the payment-provider simulator (PROVIDER_PORT, default 8010)"
    ).set_defaults(func=cmd_provider)
    sub.add_parser(
        "smtp-sink", help="run the local SMTP sink (SMTP_SINK_PORT 2525, mail to SMTP_SINK_FILE)"
    ).set_defaults(func=cmd_smtp_sink)

    chaos = sub.add_parser(
        "chaos",
        help="start a system of its own, drive orders, inject faults, then audit (exit 1 on "
        "any violation)",
    )
    chaos.add_argument("--duration", type=float, default=300.0, help="seconds of faults")
    chaos.add_argument(
        "--fault-every",
        type=float,
        default=20.0,
        help="typical seconds between faults (gaps never exceed 1.5x)",
    )
    chaos.add_argument("--rate", type=float, default=2.0, help="orders per second")
    chaos.add_argument("--seed", type=int, help="reproduce a run's fault schedule")
    chaos.add_argument(
        "--replicas",
        type=replica_count,
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="run N processes of SERVICE (repeatable; default one of each)",
    )
    chaos.add_argument("--json", action="store_true", help="print the report as JSON")
    chaos.set_defaults(func=cmd_chaos)

    from saga_harness.bench.cli import register as register_bench

    register_bench(sub)
