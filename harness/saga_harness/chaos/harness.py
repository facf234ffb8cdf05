"""One chaos run: start the system, drive orders, inject seeded faults, converge, audit."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psycopg
from confluent_kafka import KafkaException
from psycopg import sql

from saga_harness.chaos.driver import OrderDriver
from saga_harness.chaos.faults import FAULTS, FaultContext
from saga_harness.chaos.watchdog import Watchdog
from saga_harness.group_lag import GroupLag
from saga_harness.infra import LocalStack
from saga_harness.system import System, build_system, drop_system_database, drop_system_topics
from saga_system import SYSTEM
from sagactl.invariants import Violation
from sagactl.ops.ledger import LedgerUnavailable

# Each process dies by itself at these points now and then, on top of the faults.
CRASH_POINTS = "payments.after_charge@0.05,relay.after_publish@0.02"


@dataclass(frozen=True)
class ChaosConfig:
    seed: int
    duration: float = 120.0  # seconds of faults
    fault_every: float = 10.0  # typical seconds between faults (at most 1.5x this)
    order_rate: float = 2.0  # orders per second
    converge_timeout: float = 240.0
    faults: tuple[str, ...] = tuple(FAULTS)
    # Processes per service (default one each), e.g. (("payments", 2),).
    replicas: tuple[tuple[str, int], ...] = ()


@dataclass
class ChaosReport:
    seed: int
    orders: dict[str, int] = field(default_factory=dict)
    # Accepted orders per second of driving, against the rate asked for; and placements the
    # API answered with a 4xx, or never answered, by kind.
    orders_per_second: float = 0.0
    rate: float = 0.0
    refused: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    fault_log: list[str] = field(default_factory=list)
    crash_points: dict[str, int] = field(default_factory=dict)
    unexpected_exits: list[str] = field(default_factory=list)
    seconds_to_converge: float | None = None
    dead_letters: int = 0
    expected_dead_letters: int = 0
    # One line per dead letter (service, source, error), for telling poison from a defect.
    dead_letter_log: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    # Orders the pending deadline cancelled, by the kind the driver placed: a happy order
    # among them is a saga the faults delayed past ORDERS_PENDING_TIMEOUT (liveness, not
    # safety: the run still passes, and the summary shows it).
    timed_out: dict[str, int] = field(default_factory=dict)
    # Where each of those orders stood when the deadline cancelled it: seconds into the run
    # it was placed (to set beside fault_log), its kind and the last event its saga had
    # reached, e.g. "  41.3s happy after StockReserved".
    timed_out_log: list[str] = field(default_factory=list)
    orders_involved: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            not self.violations
            and not self.unexpected_exits
            and self.seconds_to_converge is not None
            and self.dead_letters == self.expected_dead_letters
        )

    def timed_out_stages(self) -> Counter[str]:
        """How many of the orders the deadline cancelled stood after each saga event, by kind
        ("happy after StockReserved")."""
        return Counter(line.split("s ", 1)[1] for line in self.timed_out_log)

    def summary(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"chaos run {verdict} (seed {self.seed})",
            f"  orders accepted: {sum(self.orders.values())} ({self.orders_per_second}/s,"
            f" {self.rate}/s offered) {dict(self.orders)}",
            *([f"  orders refused: {dict(self.refused)}"] if self.refused else []),
            f"  faults injected: {sum(self.faults.values())} {dict(self.faults)}",
            f"  crash points hit: {dict(self.crash_points)}",
            f"  converged {self.seconds_to_converge}s after the last fault"
            if self.seconds_to_converge is not None
            else "  did NOT converge",
            f"  dead letters: {self.dead_letters} (injected poison accounts for "
            f"{self.expected_dead_letters})",
            *(
                f"    {line}"
                for line in self.dead_letter_log[:20]
                if self.dead_letters != self.expected_dead_letters
            ),
            f"  cancelled by the pending deadline: {sum(self.timed_out.values())}"
            f" {dict(self.timed_out)}",
            *(f"    {stage}: {count}" for stage, count in self.timed_out_stages().most_common()),
            f"  violations: {len(self.violations)}",
            *(f"    {v}" for v in self.violations[:50]),
            *(f"  unexpected exit: {u}" for u in self.unexpected_exits),
        ]
        if not self.passed:
            lines.append(
                f"  reproduce with --seed {self.seed}; orders involved: {self.orders_involved}"
            )
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "passed": self.passed}, indent=2)


def _dead_letters(system: System) -> list[str]:
    """Every dead letter of every service: who, from where, and the error's first line."""
    found: list[str] = []
    with psycopg.connect(system.database_url) as conn:
        for service in SYSTEM.names:
            query = sql.SQL(
                "SELECT source_topic, source_partition, source_offset, event_type, error_type,"
                " split_part(error, E'\\n', 1) FROM {}.dead_letters ORDER BY id"
            ).format(sql.Identifier(service))
            for topic, partition, offset, event_type, error_type, error in conn.execute(query):
                found.append(
                    f"{service}: {topic}[{partition}]@{offset} {event_type or '?'}"
                    f" {error_type}: {error[:200]}"
                )
    return found


def _timed_out(
    system: System, accepted: dict[str, str], started_at: float
) -> tuple[dict[str, int], list[str]]:
    """How many of the accepted orders the pending deadline cancelled, by kind; and for each,
    when it was placed (seconds after ``started_at``, a wall-clock time) and the last event of
    its saga before the cancellation (from the orders' timeline)."""
    with psycopg.connect(system.database_url) as conn:
        rows = conn.execute(
            """
            SELECT o.id, extract(epoch FROM o.created_at)::float8,
                   coalesce((SELECT t.event_type FROM orders.timeline t
                              WHERE t.order_id = o.id AND t.event_type <> 'OrderCancelled'
                                AND t.occurred_at <= c.occurred_at
                              ORDER BY t.occurred_at DESC, t.recorded_at DESC LIMIT 1),
                            'nothing')
              FROM orders.orders o
              LEFT JOIN LATERAL (SELECT min(occurred_at) AS occurred_at FROM orders.timeline
                                  WHERE order_id = o.id AND event_type = 'OrderCancelled') c
                ON true
             WHERE o.status = 'CANCELLED' AND o.reason_code = 'timeout'
             ORDER BY o.created_at
            """
        ).fetchall()
    mine = [(order_id, at, stage) for order_id, at, stage in rows if order_id in accepted]
    counts = Counter(accepted[order_id] for order_id, _, _ in mine)
    log = [
        f"{at - started_at:7.1f}s {accepted[order_id]} after {stage}"
        for order_id, at, stage in mine
    ]
    return dict(counts), log


def _restock(system: System) -> None:
    """Keep the fast-moving SKUs available during long runs (admin PUT, counted as received)."""
    with httpx.Client(timeout=5) as client:
        for sku in ("CABLE-C", "MOUSE-01", "KEYB-01"):
            try:
                product = client.get(f"{system.stock_url}/stock/{sku}").json()
                if product["on_hand"] < 30:
                    client.put(
                        f"{system.stock_url}/stock/{sku}",
                        json={"on_hand": product["on_hand"] + 100},
                        headers=system.tokens.operator("chaos"),
                    )
            except (httpx.HTTPError, KeyError, ValueError):
                pass  # the stock service is down right now: next time


def run_chaos(
    config: ChaosConfig, *, stack: LocalStack, log_dir: Path, log: object = print
) -> ChaosReport:
    """Run the whole experiment on ``stack`` (which the harness may kill and restart)."""
    say = log if callable(log) else print
    rng = random.Random(config.seed)
    report = ChaosReport(seed=config.seed)
    addresses = stack.addresses
    system = build_system(
        admin_database_url=addresses.admin_database_url,
        kafka_bootstrap=addresses.kafka_bootstrap,
        # A secured broker: every process under its own principal, as under ./dev up.
        kafka_super_user=addresses.kafka_super_user,
        log_dir=log_dir,
        relays=2,
        replicas=dict(config.replicas),
        extra_env={
            "SAGA_CRASH_POINTS": CRASH_POINTS,
            "ORDERS_PENDING_TIMEOUT": "30",
            "PROVIDER_SLOW_SECONDS": "1",
            "PAYMENTS_PROVIDER_TIMEOUT": "3",
            # A process killed mid-call leaves its effect leased: its next life calls
            # again once the lease expires. Calls here last seconds, not a minute.
            "EFFECTS_LEASE": "10",
            # Crash points kill payments every few seconds at 15 orders/s: restarted, it
            # takes its partitions back at once instead of after its session and a
            # rebalance (static membership).
            "CONSUMER_GROUP_INSTANCE_ID": "chaos",
            # A short window for cancellations after approval (bookings are effects, made
            # many at once: a slower carrier would add latency, not a throughput cap).
            "SHIPMENTS_BOOKING_SECONDS": "0.1",
        },
    )
    watchdog = Watchdog(system)
    driver = OrderDriver(system, random.Random(rng.random()), rate=config.order_rate)
    ctx = FaultContext(system=system, stack=stack, watchdog=watchdog)
    system.start()
    try:
        system.wait_ready()
        watchdog.start()
        driving = threading.Thread(target=driver.run, name="chaos-orders", daemon=True)
        driving.start()
        say(f"chaos: seed {config.seed}, {config.duration:.0f}s of faults, logs in {log_dir}")
        started = time.monotonic()
        started_at = time.time()
        next_restock = started + 30
        schedule: list[str] = []
        while time.monotonic() - started < config.duration:
            # Gaps vary, but never exceed 1.5 x fault_every (a fault at least that often).
            time.sleep(rng.uniform(0.25, 1.5) * config.fault_every)
            if not schedule:
                # Every kind of fault once, in a seeded order, then again.
                schedule = rng.sample(config.faults, len(config.faults))
            name = schedule.pop()
            what = FAULTS[name](ctx, rng)
            report.faults[name] = report.faults.get(name, 0) + 1
            stamp = f"{time.monotonic() - started:7.1f}s {what}"
            report.fault_log.append(stamp)
            say(f"chaos: {stamp}")
            if time.monotonic() >= next_restock:
                _restock(system)
                next_restock = time.monotonic() + 30
        driver.stop()
        driving.join(timeout=60)
        last_fault = time.monotonic()
        # Converge with the crash points still armed and the watchdog still reviving.
        _ensure_infra(stack)
        lag = GroupLag(system.kafka)
        try:
            violations = _converge(system, config.converge_timeout, lag.total)
        finally:
            lag.close()
        if not violations:
            report.seconds_to_converge = round(time.monotonic() - last_fault, 1)
        report.violations = [str(v) for v in violations]
        report.orders_involved = sorted({v.order_id for v in violations if v.order_id})
        report.orders = dict(Counter(driver.accepted.values()))
        report.orders_per_second, report.rate = driver.accepted_per_second, config.order_rate
        report.refused = dict(driver.refused)
        report.timed_out, report.timed_out_log = _timed_out(
            system, dict(driver.accepted), started_at
        )
        report.crash_points = dict(watchdog.crash_points)
        report.unexpected_exits = [f"{n} exited {c}" for n, c in watchdog.unexpected]
        report.dead_letter_log = _dead_letters(system)
        report.dead_letters = len(report.dead_letter_log)
        report.expected_dead_letters = ctx.expected_dead_letters()
        watchdog.stop()
        return report
    finally:
        driver.stop()
        watchdog.stop()
        system.stop()
        _ensure_infra(stack)
        drop_system_database(addresses.admin_database_url, system.database_url)
        drop_system_topics(system.kafka)


def _ensure_infra(stack: LocalStack) -> None:
    with contextlib.suppress(Exception):  # not paused, or not running: start handles it
        stack.kafka.resume()
    if not stack.kafka.is_running():
        stack.kafka.start()
    if not stack.postgres.is_running():
        stack.postgres.start()


def _converge(
    system: System, timeout: float, lag: Callable[[], int] | None = None
) -> list[Violation]:
    """Audit until the audit is clean and (with ``lag``, the services' consumer groups' lag)
    every service has consumed everything in its topics, or ``timeout`` passes: the last
    violations then. Every saga can be settled while a service still has messages to read
    (a replayed topic, poison): counting dead letters before they are read would race."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            violations = system.audit()
        except (httpx.HTTPError, psycopg.OperationalError, LedgerUnavailable) as exc:
            # A process the last fault took down is still coming back.
            violations = [Violation("audit", f"could not audit yet: {exc}")]
        if not violations and lag is not None:
            try:
                behind = lag()
            except KafkaException as exc:
                violations = [Violation("lag", f"could not read the groups' lag yet: {exc}")]
            else:
                if behind:
                    violations = [Violation("lag", f"{behind} messages not consumed yet")]
        if not violations or time.monotonic() > deadline:
            return violations
        time.sleep(1.0)
