"""``sagactl effects`` on the real PostgreSQL: an effects table in a service schema of the
test database, listed, shown, retried and abandoned as an operator would, with the executor
running the retried effect again.

Commands run in-process through ``sagactl.cli.main`` with ``--json``; assertions are on the
JSON, the exit codes, the table and ``ops.audit_log``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from saga_runtime import (
    DatabaseSettings,
    EffectExecutor,
    Effects,
    Outbox,
    UnitOfWorkFactory,
    create_pool,
)
from sagactl.cli import main
from tests.integration.effects_stack import OutsideWorld, fast, request, running
from tests.support import wait_until

pytestmark = pytest.mark.integration

SERVICE = "payments"  # any service: none has an effects table yet, the test gives it one
TABLE = sql.Identifier(SERVICE, "effects")


@dataclass
class Result:
    code: int
    data: Any
    stderr: str


Sagactl = Callable[..., Result]


@pytest.fixture
def sagactl(
    database: DatabaseSettings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Sagactl:
    """``sagactl("effects", "list")`` runs ``sagactl effects list --json`` against the test
    database, as the operator ada."""
    monkeypatch.setenv("DATABASE_URL", database.url)
    monkeypatch.setenv("SAGACTL_ACTOR", "ada")

    def run(*argv: str) -> Result:
        capsys.readouterr()
        code = main([*argv, "--json"])
        out, err = capsys.readouterr()
        return Result(code, json.loads(out) if out.strip() else None, err)

    return run


@pytest.fixture
def admin(database: DatabaseSettings) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database.url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def effects_table(admin: psycopg.Connection[dict[str, Any]]) -> Iterator[str]:
    """``payments.effects`` (migration 0006), emptied before and after (the database is
    shared by the session's tests)."""
    empty = sql.SQL("TRUNCATE {} RESTART IDENTITY").format(TABLE)
    admin.execute(empty)
    try:
        yield SERVICE
    finally:
        admin.execute(empty)


def rows(admin: psycopg.Connection[dict[str, Any]]) -> list[dict[str, Any]]:
    return admin.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(TABLE)).fetchall()


AuditEntries = Callable[[str], list[dict[str, Any]]]


@pytest.fixture
def audit_entries(admin: psycopg.Connection[dict[str, Any]]) -> AuditEntries:
    """``audit_entries(action)``: the audit log's entries for ``action`` written during this
    test (the log is append-only and outlives each test: other tests audit too)."""
    row = admin.execute("SELECT coalesce(max(id), 0) AS id FROM ops.audit_log").fetchone()
    floor = int(row["id"]) if row is not None else 0

    def entries(action: str) -> list[dict[str, Any]]:
        return admin.execute(
            "SELECT * FROM ops.audit_log WHERE action = %s AND id > %s ORDER BY id",
            (action, floor),
        ).fetchall()

    return entries


def insert(
    admin: psycopg.Connection[dict[str, Any]],
    *,
    order: str,
    status: str,
    kind: str = "charge",
    attempts: int = 1,
    last_error: str | None = None,
) -> int:
    running_lease = status == "running"
    row = admin.execute(
        sql.SQL(
            "INSERT INTO {} (aggregate_id, kind, idempotency_key, request, status, attempts,"
            " deadline_at, lease_owner, lease_until, last_error)"
            " VALUES (%s, %s, gen_random_uuid()::text, %s::jsonb, %s, %s, now() + interval '1h',"
            " %s, CASE WHEN %s THEN now() + interval '1h' END, %s) RETURNING id"
        ).format(TABLE),
        (
            order,
            kind,
            json.dumps({"order": order}),
            status,
            attempts,
            "host:1:abc" if running_lease else None,
            running_lease,
            last_error,
        ),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def test_services_without_an_effects_table_are_skipped_in_all_and_named_when_asked_for(
    sagactl: Sagactl,
) -> None:
    listed = sagactl("effects", "list")
    # Migration 0006 gave payments, shipments and notifications an effects table.
    with_effects = ["payments", "shipments", "notifications"]
    assert (listed.code, listed.data["services"], listed.data["rows"]) == (0, with_effects, [])
    for argv in (
        ("list", "--service", "stock"),
        ("show", "--service", "stock", "1"),
        ("retry", "--service", "stock", "1"),
        ("abandon", "--service", "stock", "1"),
    ):
        refused = sagactl("effects", *argv)
        assert refused.code == 2, argv
        assert "stock has no effects table" in refused.data["error"]


def test_a_failed_effect_is_retried_after_a_dry_run_audited_and_run_again(
    database: DatabaseSettings,
    effects_table: str,
    sagactl: Sagactl,
    admin: psycopg.Connection[dict[str, Any]],
    audit_entries: AuditEntries,
) -> None:
    provider_up = False

    def answer(req: dict[str, Any], key: str) -> dict[str, Any]:
        if not provider_up:
            raise ValueError("card declined by a misconfigured test provider")
        return {"charge_id": f"ch-{key}"}

    world = OutsideWorld(answer=answer)
    effects = Effects(schema=SERVICE, kinds=[world.kind("charge")])
    pool = create_pool(database, role=None, name="test-effects-operator")
    try:
        factory = UnitOfWorkFactory(
            pool=pool,
            outbox=Outbox(schema=SERVICE, topic=f"{SERVICE}.events"),
            producer=SERVICE,
            effects=effects,
        )
        effect_id = request(factory, "charge", aggregate_id="o-1", key="charge-o-1", amount=5)
        executor = EffectExecutor(effects=effects, uow_factory=factory, settings=fast())
        with running(executor):
            wait_until(lambda: [r["status"] for r in rows(admin)] == ["failed"], timeout=10)

        listed = sagactl("effects", "list", "--status", "failed")
        assert listed.code == 0, listed.stderr
        assert SERVICE in listed.data["services"]
        assert [(r["id"], r["status"], r["kind"]) for r in listed.data["rows"]] == [
            (effect_id, "failed", "charge")
        ]
        assert listed.data["counts"][0]["counts"]["failed"] == 1
        shown = sagactl("effects", "show", "--service", SERVICE, str(effect_id))
        assert shown.data["request"] == {"amount": 5}
        assert shown.data["outcome"]["ok"] is False
        assert "card declined" in shown.data["effect"]["last_error"]

        before = rows(admin)
        dry = sagactl("effects", "retry", "--service", SERVICE, str(effect_id), "--deadline", "60")
        assert dry.code == 0, dry.stderr
        assert [e["id"] for e in dry.data["would_retry"]] == [effect_id]
        assert "already heard" in dry.stderr and "dry run: nothing changed" in dry.stderr
        assert rows(admin) == before
        unexplained = sagactl("effects", "retry", "--service", SERVICE, str(effect_id), "--yes")
        assert unexplained.code == 2 and "--yes needs --reason" in unexplained.data["error"]
        assert rows(admin) == before and audit_entries("effects.retry") == []

        retried = sagactl(
            *("effects", "retry", "--service", SERVICE, str(effect_id), "--deadline", "60"),
            *("--yes", "--reason", "INC-9 provider fixed"),
        )
        assert retried.code == 0, retried.stderr
        [row] = rows(admin)
        assert (row["status"], row["attempts"], row["outcome"]) == ("pending", 0, None)
        assert 55 < (row["deadline_at"] - row["updated_at"]).total_seconds() <= 60
        [entry] = audit_entries("effects.retry")
        assert entry["id"] == retried.data["audit_id"]
        assert (entry["actor"], entry["service"], entry["reason"]) == (
            "ada",
            SERVICE,
            "INC-9 provider fixed",
        )
        assert [(e["id"], e["was"]) for e in entry["target"]["effects"]] == [(effect_id, "failed")]

        provider_up = True
        with running(EffectExecutor(effects=effects, uow_factory=factory, settings=fast())):
            wait_until(lambda: [r["status"] for r in rows(admin)] == ["done"], timeout=10)
        assert world.keys_called() == ["charge-o-1", "charge-o-1"]  # the same key again
        assert [o.ok for _, o in world.outcomes] == [False, True]
    finally:
        pool.close()


def test_running_done_and_unknown_effects_are_refused_and_abandon_is_audited(
    effects_table: str,
    sagactl: Sagactl,
    admin: psycopg.Connection[dict[str, Any]],
    audit_entries: AuditEntries,
) -> None:
    # A status from a newer executor: shown and filtered on as the table holds it.
    admin.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT effects_status_check").format(TABLE))
    pending = insert(admin, order="o-1", status="pending", attempts=2, last_error="timeout")
    leased = insert(admin, order="o-2", status="running")
    done = insert(admin, order="o-3", status="done")
    failed = insert(admin, order="o-4", status="failed", last_error="refused")
    later_running = insert(admin, order="o-4", status="running", kind="refund")
    decided = insert(admin, order="o-5", status="decided")

    listed = sagactl("effects", "list", "--service", SERVICE)
    assert {r["id"]: r["status"] for r in listed.data["rows"]} == {
        pending: "pending",
        leased: "running",
        done: "done",
        failed: "failed",
        later_running: "running",
        decided: "decided",
    }
    counts = listed.data["counts"][0]["counts"]
    assert {s: counts[s] for s in ("pending", "running", "done", "failed", "decided")} == {
        "pending": 1,
        "running": 2,
        "done": 1,
        "failed": 1,
        "decided": 1,
    }
    only = sagactl("effects", "list", "--status", "decided,done", "--kind", "charge")
    assert sorted(r["id"] for r in only.data["rows"]) == [done, decided]

    before = rows(admin)
    refusals = {
        ("retry", str(leased)): f"{leased} is running",
        ("retry", str(done)): f"{done} is done",
        ("retry", str(decided)): f"{decided} is decided",
        ("retry", "999"): "has no effect 999",
        ("retry", str(failed)): f"its order's {later_running} is running",
        ("retry", "--kind", "charge"): "add --status",
        ("retry", "--status", "running"): "does not apply to running",
        ("retry",): "say which effects",
        ("retry", "--status", "abandoned"): "no effects match",
        ("abandon", str(leased)): f"{leased} is running",
        ("abandon", str(pending), str(done)): f"{done} is done",
    }
    for argv, message in refusals.items():
        action, *rest = argv
        refused = sagactl("effects", action, "--service", SERVICE, *rest, "--reason", "r", "--yes")
        assert refused.code == 2, argv
        assert message in refused.data["error"], (argv, refused.data)
    assert rows(admin) == before

    dry = sagactl("effects", "abandon", "--service", SERVICE, str(pending))
    assert [e["id"] for e in dry.data["would_abandon"]] == [pending]
    assert "never hears an outcome" in dry.stderr
    assert rows(admin) == before

    abandoned = sagactl(
        *("effects", "abandon", "--service", SERVICE, str(pending)),
        *("--yes", "--reason", "test order"),
    )
    assert abandoned.code == 0, abandoned.stderr
    statuses = {r["id"]: r["status"] for r in rows(admin)}
    assert statuses[pending] == "abandoned"
    assert [r for r in rows(admin) if r["id"] != pending] == [
        r for r in before if r["id"] != pending
    ]
    [entry] = audit_entries("effects.abandon")
    assert entry["id"] == abandoned.data["audit_id"]
    assert entry["target"]["effects"] == [
        {
            "id": pending,
            "kind": "charge",
            "order_id": "o-1",
            "idempotency_key": before[0]["idempotency_key"],
            "was": "pending",
            "attempts": 2,
            "last_error": "timeout",
        }
    ]

    # An abandoned effect can be taken back.
    back = sagactl("effects", "retry", "--service", SERVICE, "--status", "abandoned")
    assert [e["id"] for e in back.data["would_retry"]] == [pending]


def test_an_undecided_effect_is_retried_by_deciding_again_never_by_calling_again(
    effects_table: str,
    sagactl: Sagactl,
    admin: psycopg.Connection[dict[str, Any]],
    audit_entries: AuditEntries,
) -> None:
    undecided = insert(admin, order="o-6", status="undecided", attempts=1, last_error="bug")
    admin.execute(
        sql.SQL("UPDATE {} SET outcome = %s::jsonb WHERE id = %s").format(TABLE),
        (json.dumps({"ok": True, "result": {"charge": "ch-1"}}), undecided),
    )
    audited = len(audit_entries("effects.retry"))
    dry = sagactl("effects", "retry", "--service", SERVICE, str(undecided))
    assert dry.code == 0 and dry.data["dry_run"] is True
    assert rows(admin)[0]["status"] == "undecided"

    done = sagactl(
        "effects", "retry", "--service", SERVICE, str(undecided), "--yes", "--reason", "fixed"
    )
    assert done.code == 0, done.stderr
    assert [r["status"] for r in done.data["pending"]] == ["recorded"]
    (row,) = rows(admin)
    # The outside world answered already: its outcome and the attempt count are kept, and
    # the executor will only make the decision again.
    assert row["status"] == "recorded"
    assert row["outcome"] == {"ok": True, "result": {"charge": "ch-1"}}
    assert row["attempts"] == 1 and row["lease_owner"] is None
    assert len(audit_entries("effects.retry")) == audited + 1
