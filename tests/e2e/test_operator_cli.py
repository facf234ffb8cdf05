"""The operator CLI against a running system (every service a process, real Kafka and
PostgreSQL): trace, replay, failed rows, dead letters, purge, audit.

Commands run in-process through ``sagactl.cli.main`` with the system's environment and
``--json``; assertions are on the JSON and the exit codes. The tests share one system and
run in file order: the purge test, which deletes every published row, comes last.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import Producer

from saga_harness.system import System
from saga_runtime import events_topic, relay_lock_key
from sagactl.cli import main

pytestmark = pytest.mark.e2e

ORDER_TOPIC_CONSUMERS = ("stock", "payments", "shipments", "notifications")


@dataclass
class Result:
    code: int
    data: Any
    stderr: str


Cli = Callable[..., Result]


@pytest.fixture
def cli(system: System, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``cli("outbox", "list")`` runs ``sagactl outbox list --json`` as an operator would,
    with only the system's DATABASE_URL, KAFKA_* and PAYMENTS_PROVIDER_URL."""
    for name in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC_PREFIX"):
        monkeypatch.setenv(name, system.env[name])
    monkeypatch.setenv("PAYMENTS_PROVIDER_URL", system.provider_url)
    monkeypatch.setenv("PAYMENTS_PROVIDER_API_KEY", system.env["PAYMENTS_PROVIDER_API_KEY"])
    monkeypatch.setenv("SAGACTL_ACTOR", "ada")
    for name, value in system.operator_env.items():  # as admin, on a secured broker
        monkeypatch.setenv(name, value)

    def run(*argv: str, env: dict[str, str | None] | None = None) -> Result:
        with monkeypatch.context() as patch:
            for name, value in (env or {}).items():
                if value is None:
                    patch.delenv(name, raising=False)
                else:
                    patch.setenv(name, value)
            capsys.readouterr()
            code = main([*argv, "--json"])
            out, err = capsys.readouterr()
        return Result(code, json.loads(out) if out.strip() else None, err)

    return run


def settle(system: System) -> None:
    violations = system.wait_quiet()
    assert violations == [], "\n".join(map(str, violations))


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def shipped_order(system: System, http: httpx.Client, **overrides: Any) -> str:
    placed = system.place_order(http, **overrides)
    order = system.wait_for_order(http, placed["order_id"])
    assert order["status"] == "SHIPPED", order
    settle(system)
    return str(placed["order_id"])


def logged(system: System, service: str, event: str, event_id: str) -> bool:
    """Whether ``service`` logged ``event`` (e.g. event.duplicate) for ``event_id``."""
    path = system.log_dir / f"{service}.log"
    for line in path.read_text(errors="replace").splitlines():
        if event_id in line and line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event and record.get("event_id") == event_id:
                return True
    return False


def effects(system: System, http: httpx.Client, order_id: str) -> dict[str, Any]:
    """Everything an event about the order could have changed, anywhere."""
    charges, refunds = system.ledger()
    with psycopg.connect(system.database_url) as conn:
        inbox = {
            s: conn.execute(f"SELECT event_id, processed_at FROM {s}.inbox ORDER BY 1").fetchall()
            for s in ("orders", *ORDER_TOPIC_CONSUMERS)
        }
        tables = {
            "products": conn.execute("SELECT * FROM stock.products ORDER BY sku").fetchall(),
            "reservation": conn.execute(
                "SELECT status, lines FROM stock.reservations WHERE order_id = %s", (order_id,)
            ).fetchall(),
            "payment": conn.execute(
                "SELECT status, charge_id, refund_id FROM payments.payments WHERE order_id = %s",
                (order_id,),
            ).fetchall(),
            "shipment": conn.execute(
                "SELECT status, shipment_id FROM shipments.shipments WHERE order_id = %s",
                (order_id,),
            ).fetchall(),
            "notifications": conn.execute(
                "SELECT kind, sent_at FROM notifications.notifications WHERE order_id = %s"
                " ORDER BY kind",
                (order_id,),
            ).fetchall(),
            "outbox_rows": conn.execute(
                "SELECT (SELECT count(*) FROM stock.outbox) + (SELECT count(*) FROM"
                " payments.outbox) + (SELECT count(*) FROM shipments.outbox) + (SELECT count(*)"
                " FROM notifications.outbox) + (SELECT count(*) FROM orders.outbox)"
            ).fetchall(),
        }
    order = http.get(
        f"{system.orders_url}/orders/{order_id}", headers=system.tokens.operator()
    ).json()
    mails = system.mail_file.read_text().count(order_id) if system.mail_file.exists() else 0
    return {
        "charges": sorted((c.charge_id, c.amount_cents) for c in charges if c.order_id == order_id),
        "refunds": len(refunds),
        "inbox": inbox,
        **tables,
        "order": (order["status"], len(order["timeline"])),
        "mails": mails,
    }


@pytest.fixture
def relay_held_off(system: System) -> Iterator[Callable[[str], psycopg.Connection]]:
    """Stop the relay, hold one outbox's leadership lock, start the relay again: it serves
    every other outbox and stands by for that one until the lock is released."""
    held: list[psycopg.Connection] = []

    def hold(service: str) -> psycopg.Connection:
        relay = system.processes["relay-0"]
        relay.stop()
        conn = psycopg.connect(system.database_url, autocommit=True)
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (relay_lock_key(service),))
        held.append(conn)
        relay.start()
        return conn

    yield hold
    for conn in held:
        conn.close()


# -- read-only commands ------------------------------------------------------------------------


def test_trace_follows_an_order_across_every_service(
    system: System, http: httpx.Client, cli: Cli
) -> None:
    order_id = shipped_order(system, http)

    trace = cli("saga", "trace", order_id)
    assert trace.code == 0, trace.stderr
    steps = trace.data["steps"]
    emitted = [(s["service"], s["event_type"]) for s in steps if s["kind"] == "emitted"]
    for expected in [
        ("orders", "OrderCreated"),
        ("stock", "StockReserved"),
        ("payments", "PaymentSucceeded"),
        ("orders", "OrderApproved"),
        ("shipments", "ShipmentScheduled"),
        ("orders", "OrderShipped"),
    ]:
        assert expected in emitted
    consumed = {(s["service"], s["event_type"]) for s in steps if s["kind"] == "consumed"}
    assert {
        ("stock", "OrderCreated"),
        ("payments", "OrderCreated"),
        ("payments", "StockReserved"),
        ("orders", "PaymentSucceeded"),
        ("shipments", "OrderApproved"),
        ("orders", "ShipmentScheduled"),
    } <= consumed
    assert [s["at"] for s in steps] == sorted(s["at"] for s in steps), "in time order"
    for step in steps:
        if step["kind"] == "emitted":
            assert step["state"] == "published" and step["latency_ms"] >= 0
        if step["kind"] == "consumed":
            assert step["from_service"] is not None and step["latency_ms"] >= 0
    hop = next(
        s
        for s in steps
        if (s["kind"], s["service"], s["event_type"]) == ("consumed", "stock", "OrderCreated")
    )
    assert hop["from_service"] == "orders"
    assert trace.data["order"]["status"] == "SHIPPED"
    assert trace.data["summary"]["unpublished"] == 0
    # One order, one trace: every event of the saga carries it (saga_runtime.tracing).
    [trace_id] = trace.data["trace_ids"]
    assert trace.data["trace_id"] == trace_id and re.fullmatch("[0-9a-f]{32}", trace_id)

    rows = cli("outbox", "list", "--order", order_id, "--limit", "100")
    assert rows.code == 0
    assert {r["event_id"] for r in rows.data["rows"]} == {
        s["event_id"] for s in steps if s["kind"] == "emitted"
    }
    assert all(r["state"] == "published" for r in rows.data["rows"])
    assert {c["service"] for c in rows.data["counts"]} == {
        "orders",
        "stock",
        "payments",
        "shipments",
        "notifications",
    }

    created = next(r for r in rows.data["rows"] if r["event_type"] == "OrderCreated")
    shown = cli("outbox", "show", "orders", str(created["id"]))
    assert shown.code == 0
    assert shown.data["envelope"]["aggregate_id"] == order_id
    assert shown.data["envelope"]["event_id"] == created["event_id"]
    assert {"stock", "payments"} <= {c["service"] for c in shown.data["consumed_by"]}

    stuck = cli("saga", "stuck", "--older-than", "0s")
    assert stuck.code == 0
    assert order_id not in {o["order_id"] for o in stuck.data["orders"]}


# -- replay ------------------------------------------------------------------------------------


def test_replaying_events_consumers_already_applied_has_no_second_effect(
    system: System, http: httpx.Client, cli: Cli
) -> None:
    order_id = shipped_order(system, http)
    before = effects(system, http, order_id)

    dry = cli("outbox", "replay", "--service", "orders", "--order", order_id)
    assert dry.code == 0, dry.stderr
    assert dry.data["dry_run"] is True
    would = {r["event_type"] for r in dry.data["would_replay"]}
    assert {"OrderCreated", "OrderApproved", "OrderShipped"} <= would
    listed = cli("outbox", "list", "--service", "orders", "--order", order_id)
    assert {r["state"] for r in listed.data["rows"]} == {"published"}, "a dry run changes nothing"
    assert effects(system, http, order_id) == before

    refused = cli("outbox", "replay", "--service", "orders", "--order", order_id, "--yes")
    assert refused.code == 2 and "--reason" in refused.stderr
    assert {r["state"] for r in cli("outbox", "list", "--order", order_id).data["rows"]} == {
        "published"
    }

    done = cli(
        "outbox", "replay", "--service", "orders", "--order", order_id,
        "--reason", "INC-1 consumers lost orders.events", "--yes",
    )  # fmt: skip
    assert done.code == 0, done.stderr
    replayed = {r["event_id"]: r for r in done.data["replayed"]}
    assert sorted(done.data["published"]) == sorted(r["id"] for r in replayed.values())

    # Every consumer that applied an event the first time meets it again and skips it.
    expected = [
        (service, str(event_id))
        for service, rows in before["inbox"].items()
        for event_id, _ in rows
        if str(event_id) in replayed
    ]
    assert {s for s, _ in expected} >= {"stock", "payments", "shipments", "notifications"}
    for service, event_id in expected:
        wait_for(
            f"{service} to skip replayed {replayed[event_id]['event_type']}",
            lambda s=service, e=event_id: logged(system, s, "event.duplicate", e),
        )
    assert effects(system, http, order_id) == before, "no second charge, mail, sale or shipment"
    settle(system)

    entries = cli("audit-log", "--action", "outbox.replay", "--limit", "1")
    entry = entries.data[0]
    assert entry["id"] == done.data["audit_id"]
    assert (entry["actor"], entry["service"]) == ("ada", "orders")
    assert entry["reason"] == "INC-1 consumers lost orders.events"
    assert {r["event_id"] for r in entry["target"]["rows"]} == set(replayed)
    assert entry["command"].startswith("sagactl outbox replay --service orders")


def test_a_row_the_broker_refused_is_replayed_after_the_fix_and_the_saga_completes(
    system: System,
    http: httpx.Client,
    cli: Cli,
    relay_held_off: Callable[[str], psycopg.Connection],
) -> None:
    lock = relay_held_off("shipments")
    placed = system.place_order(http, items=[{"sku": "MOUSE-01", "quantity": 1}])
    order_id = placed["order_id"]
    system.wait_for_order(http, order_id, ["APPROVED"])
    row = wait_for(
        "shipments to emit ShipmentScheduled",
        lambda: cli(
            "outbox", "list", "--service", "shipments", "--order", order_id, "--state", "pending"
        ).data["rows"],
    )[0]
    assert row["event_type"] == "ShipmentScheduled"
    # The cause: a row bound for a topic Kafka refuses (an invalid name).
    with psycopg.connect(system.database_url, autocommit=True) as conn:
        conn.execute("UPDATE shipments.outbox SET topic = 'bad topic!' WHERE id = %s", (row["id"],))
    lock.close()  # the relay takes the shipments outbox over, and the broker refuses the row

    failed = wait_for(
        "the relay to mark the row failed",
        lambda: cli(
            "outbox", "list", "--service", "shipments", "--state", "failed", "--order", order_id
        ).data["rows"],
    )
    assert [r["id"] for r in failed] == [row["id"]]
    # A secured broker refuses it first for its ACLs: relay-shipments may write one topic only.
    refusal = "topic authorization failed" if system.operator_env else "invalid topic"
    assert refusal in failed[0]["last_error"].lower()
    counts = cli("outbox", "list", "--service", "shipments").data["counts"][0]
    assert counts["failed"] >= 1

    stuck = cli("saga", "stuck", "--older-than", "0s")
    mine = next(o for o in stuck.data["orders"] if o["order_id"] == order_id)
    assert mine["status"] == "APPROVED"
    assert f"sagactl outbox show shipments {row['id']}" in mine["hint"]
    audit = cli("audit")
    assert audit.code == 1
    assert order_id in {v["order_id"] for v in audit.data["violations"]}
    unfixed = cli("outbox", "replay", "--service", "shipments", "--ids", str(row["id"]))
    assert unfixed.code == 2 and "'bad topic!'" in unfixed.data["error"], "it would fail again"

    with psycopg.connect(system.database_url, autocommit=True) as conn:  # the fix
        conn.execute(
            "UPDATE shipments.outbox SET topic = %s WHERE id = %s",
            (events_topic("shipments", system.kafka.topic_prefix), row["id"]),
        )
    replay = cli(
        "outbox", "replay", "--service", "shipments", "--state", "failed", "--order", order_id,
        "--reason", "INC-2 topic name fixed", "--yes",
    )  # fmt: skip
    assert replay.code == 0, replay.stderr
    assert replay.data["published"] == [row["id"]] and replay.data["failed"] == []

    order = system.wait_for_order(http, order_id)
    assert order["status"] == "SHIPPED", order
    settle(system)
    assert cli("audit").code == 0


# -- dead letters ------------------------------------------------------------------------------


def restart(system: System, name: str, **env: str | None) -> None:
    process = system.processes[name]
    process.stop()
    for key, value in env.items():
        if value is None:
            process.env.pop(key, None)
        else:
            process.env[key] = value
    process.start()


def test_a_redriven_dead_letter_completes_its_saga(
    system: System, http: httpx.Client, cli: Cli
) -> None:
    # The cause: shipments deployed with a delivery time no date can hold, so its handler
    # fails on every OrderApproved (OverflowError: not retryable, dead-lettered at once).
    restart(system, "shipments", SHIPMENTS_DELIVERY_DAYS="999999999")
    try:
        placed = system.place_order(http, items=[{"sku": "CABLE-C", "quantity": 1}])
        order_id = placed["order_id"]
        system.wait_for_order(http, order_id, ["APPROVED"])
        letters = wait_for(
            "shipments to dead-letter OrderApproved",
            lambda: cli(
                "dlq", "list", "--service", "shipments", "--status", "pending", "--order", order_id
            ).data["rows"],
        )
    finally:
        restart(system, "shipments", SHIPMENTS_DELIVERY_DAYS=None)  # the fix, deployed
    assert len(letters) == 1
    letter = letters[0]
    assert (letter["event_type"], letter["error_type"]) == ("OrderApproved", "OverflowError")

    shown = cli("dlq", "show", "shipments", str(letter["id"]))
    assert shown.code == 0
    assert shown.data["value"]["encoding"] == "utf-8"
    assert shown.data["value"]["json"]["event_type"] == "OrderApproved"
    assert shown.data["key"]["text"] == order_id
    assert {"key": "event_id", "value": letter["event_id"]} in shown.data["headers"]

    stuck = cli("saga", "stuck", "--older-than", "0s")
    mine = next(o for o in stuck.data["orders"] if o["order_id"] == order_id)
    assert f"sagactl dlq show shipments {letter['id']}" in mine["hint"]

    dry = cli("dlq", "redrive", "shipments", str(letter["id"]))
    assert dry.code == 0 and dry.data["dry_run"] is True
    assert [r["id"] for r in dry.data["would_redrive"]] == [letter["id"]]
    assert cli("dlq", "show", "shipments", str(letter["id"])).data["status"] == "pending"
    assert system.wait_for_order(http, order_id, ["APPROVED"])["status"] == "APPROVED"

    done = cli(
        "dlq", "redrive", "shipments", str(letter["id"]), "--reason", "INC-3 setting fixed", "--yes"
    )
    assert done.code == 0, done.stderr
    assert [o["result"] for o in done.data["outcomes"]] == ["redriven"]

    order = system.wait_for_order(http, order_id)
    assert order["status"] == "SHIPPED", order
    settle(system)
    after = cli("dlq", "show", "shipments", str(letter["id"])).data
    assert after["status"] == "redriven" and "INC-3 setting fixed" in after["resolution"]
    assert cli("dlq", "redrive", "shipments", str(letter["id"]), "--yes", "--reason", "x").code == 2
    steps = cli("saga", "trace", order_id).data["steps"]
    kinds = [(s["kind"], s["service"], s["event_type"]) for s in steps]
    assert kinds.index(("dead-lettered", "shipments", "OrderApproved")) < kinds.index(
        ("consumed", "shipments", "OrderApproved")
    )
    entry = cli("audit-log", "--action", "dlq.redrive", "--limit", "1").data[0]
    assert entry["target"]["dead_letter_id"] == letter["id"] and entry["actor"] == "ada"


def test_poison_is_shown_as_bytes_and_discarded_only_with_a_reason(
    system: System, cli: Cli
) -> None:
    poison = b"\xff\xfe not an envelope"
    producer = Producer(system.kafka.client_properties())
    producer.produce(events_topic("orders", system.kafka.topic_prefix), key=b"p-1", value=poison)
    assert producer.flush(30) == 0

    def letters() -> list[dict[str, Any]]:
        rows = cli("dlq", "list", "--status", "pending").data["rows"]
        return [r for r in rows if r["error_type"] == "InvalidEnvelopeError"]

    found = wait_for(
        "every consumer of orders.events to dead-letter the poison",
        lambda: (rows := letters()) and len(rows) == len(ORDER_TOPIC_CONSUMERS) and rows,
    )
    assert {r["service"] for r in found} == set(ORDER_TOPIC_CONSUMERS)
    stock = next(r for r in found if r["service"] == "stock")
    shown = cli("dlq", "show", "stock", str(stock["id"])).data
    assert shown["value"]["encoding"] == "binary"
    assert bytes.fromhex(shown["value"]["hex"]) == poison

    dry = cli("dlq", "redrive", "stock", str(stock["id"]))
    assert dry.code == 0 and "not valid events" in dry.stderr

    no_reason = cli("dlq", "discard", "stock", str(stock["id"]), "--yes")
    assert no_reason.code == 2 and "--reason" in no_reason.stderr
    assert cli("dlq", "show", "stock", str(stock["id"])).data["status"] == "pending"

    for letter in found:
        done = cli(
            "dlq",
            "discard",
            letter["service"],
            str(letter["id"]),
            "--reason",
            "test poison",
            "--yes",
        )
        assert done.code == 0, done.stderr
        assert done.data["discarded"] == [letter["id"]]
    shown = cli("dlq", "show", "stock", str(stock["id"])).data
    assert shown["status"] == "discarded" and "test poison" in shown["resolution"]
    again = cli("dlq", "discard", "stock", str(stock["id"]), "--yes", "--reason", "x")
    assert again.code == 2 and "discarded" in again.stderr
    assert not letters()


# -- refusals ----------------------------------------------------------------------------------


def test_refusals_say_what_to_fix_and_change_nothing(system: System, cli: Cli) -> None:
    missing = cli("outbox", "list", env={"DATABASE_URL": None})
    assert missing.code == 2 and "DATABASE_URL" in missing.data["error"] and missing.data["fix"]

    unreachable = cli("saga", "stuck", env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"})
    assert unreachable.code == 2 and "cannot connect" in unreachable.data["error"]

    nothing = cli("outbox", "replay", "--service", "stock", "--order", "no-such-order")
    assert nothing.code == 2 and "no published or failed rows match" in nothing.data["error"]

    unselective = cli("outbox", "replay", "--service", "stock", "--reason", "r", "--yes")
    assert unselective.code == 2 and "--ids" in unselective.data["fix"]

    assert cli("saga", "trace", "no-such-order").code == 2
    assert cli("outbox", "show", "orders", "999999999").code == 2
    assert cli("dlq", "show", "orders", "999999999").code == 2
    assert cli("dlq", "redrive", "orders", "999999999").code == 2

    no_kafka = cli("dlq", "redrive", "orders", "1", env={"KAFKA_BOOTSTRAP_SERVERS": None})
    assert no_kafka.code == 2 and "KAFKA_BOOTSTRAP_SERVERS" in no_kafka.data["error"]
    bad_kafka = cli("dlq", "redrive", "orders", "1", env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert bad_kafka.code == 2 and "cannot reach Kafka" in bad_kafka.data["error"]

    no_provider = cli("audit", "--provider-url", "http://127.0.0.1:1")
    assert no_provider.code == 2 and "--provider-url" in no_provider.data["fix"]
    wrong_key = cli("audit", env={"PAYMENTS_PROVIDER_API_KEY": "a-guessed-key"})
    assert wrong_key.code == 2 and "401" in wrong_key.data["error"]
    assert "PAYMENTS_PROVIDER_API_KEY" in wrong_key.data["fix"]
    assert "a-guessed-key" not in json.dumps(wrong_key.data) + wrong_key.stderr
    passed = cli("audit")
    assert passed.code == 0
    secret = system.env["PAYMENTS_PROVIDER_API_KEY"]
    assert secret not in json.dumps(passed.data) + passed.stderr, "no secret in --json output"


# -- purge (last: it deletes every published row) ----------------------------------------------


def test_purge_deletes_published_rows_and_never_pending_or_failed_ones(
    system: System, http: httpx.Client, cli: Cli
) -> None:
    shipped_order(system, http)  # published rows in every outbox
    relay = system.processes["relay-0"]
    with psycopg.connect(system.database_url, autocommit=True) as conn:
        # A failed row (its state only: the broker refusing one is the test above).
        failed_id = conn.execute(
            "UPDATE shipments.outbox SET published_at = NULL, failed_at = now(),"
            " last_error = 'refused' WHERE id = (SELECT max(id) FROM shipments.outbox)"
            " RETURNING id"
        ).fetchone()[0]
        relay.stop()
        try:
            placed = system.place_order(http)  # its OrderCreated stays pending
            pending = cli("outbox", "list", "--state", "pending").data["rows"]
            assert [(r["service"], r["event_type"]) for r in pending] == [
                ("orders", "OrderCreated")
            ]
            total = conn.execute("SELECT count(*) FROM orders.outbox").fetchone()[0]

            dry = cli("outbox", "purge", "--older-than", "0s")
            assert dry.code == 0 and dry.data["dry_run"] is True and dry.data["rows"] > 0
            assert conn.execute("SELECT count(*) FROM orders.outbox").fetchone()[0] == total

            done = cli("outbox", "purge", "--older-than", "0s", "--yes")
            assert done.code == 0, done.stderr
            assert sum(d["deleted"] for d in done.data["deleted"].values()) == dry.data["rows"]
            left = cli("outbox", "list", "--limit", "100").data["rows"]
            assert sorted((r["service"], r["id"], r["state"]) for r in left) == sorted(
                [
                    ("orders", pending[0]["id"], "pending"),
                    ("shipments", failed_id, "failed"),
                ]
            )
        finally:
            relay.start()
    order = system.wait_for_order(http, placed["order_id"])
    assert order["status"] in ("SHIPPED", "CANCELLED")
    # The failed row was published long ago: replaying it is a duplicate for its consumers.
    replay = cli(
        "outbox", "replay", "--service", "shipments", "--ids", str(failed_id),
        "--reason", "clean up", "--yes",
    )  # fmt: skip
    assert replay.code == 0, replay.stderr
    settle(system)
    purges = {p["id"]: p for p in cli("audit-log", "--action", "outbox.purge").data}
    for service, deleted in done.data["deleted"].items():
        entry = purges[deleted["audit_id"]]
        assert (entry["service"], entry["target"]["deleted"]) == (service, deleted["deleted"])
