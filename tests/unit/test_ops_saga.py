"""Trace assembly and stuck-order hints are pure functions of what the services recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from sagactl.ops.outbox import OutboxFilter, OutboxRow
from sagactl.ops.outbox_replay import _plan
from sagactl.ops.saga import (
    Consumed,
    DeadLettered,
    Emitted,
    StuckOrder,
    TraceData,
    build_steps,
    hint_for,
)

T0 = datetime(2026, 11, 21, 20, 0, tzinfo=UTC)


def at(ms: float) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def test_steps_are_in_time_order_with_publish_and_hop_latencies() -> None:
    created, reserved = uuid4(), uuid4()
    data = TraceData(
        "o1",
        emitted=[
            Emitted("stock", 1, reserved, "StockReserved", at(20), at(30), None, None, None),
            Emitted("orders", 1, created, "OrderCreated", at(0), at(8), None, None, None),
        ],
        consumed=[
            Consumed("payments", reserved, "StockReserved", at(45)),
            Consumed("stock", created, "OrderCreated", at(12)),
        ],
    )
    steps = build_steps(data)
    assert [(s.kind, s.service, s.event_type) for s in steps] == [
        ("emitted", "orders", "OrderCreated"),
        ("consumed", "stock", "OrderCreated"),
        ("emitted", "stock", "StockReserved"),
        ("consumed", "payments", "StockReserved"),
    ]
    assert [s.latency_ms for s in steps] == [8.0, 12.0, 10.0, 25.0]
    assert steps[1].from_service == "orders" and steps[3].from_service == "stock"


def test_unpublished_rows_and_dead_letters_show_in_the_trace() -> None:
    approved = uuid4()
    data = TraceData(
        "o1",
        emitted=[Emitted("orders", 4, approved, "OrderApproved", at(0), None, at(5), "bad", None)],
        dead_letters=[
            DeadLettered("shipments", 2, approved, "OrderApproved", "pending", "E", "boom", at(9))
        ],
    )
    emitted, letter = build_steps(data)
    assert (emitted.state, emitted.latency_ms, emitted.detail) == ("failed", None, "bad")
    assert (letter.kind, letter.from_service, letter.state) == (
        "dead-lettered",
        "orders",
        "pending",
    )
    assert "boom" in (letter.detail or "")


def stuck(**kw: object) -> StuckOrder:
    order = StuckOrder("o1", str(kw.pop("status", "APPROVED")), T0, 120.0)
    for key, value in kw.items():
        setattr(order, key, value)
    return order


def test_the_hint_names_the_first_thing_to_look_at() -> None:
    letter = {"service": "shipments", "id": 3, "event_type": "OrderApproved", "error_type": "E"}
    failed = {"service": "stock", "id": 9, "event_type": "StockSold", "state": "failed"}
    waiting = {
        "service": "stock",
        "id": 9,
        "event_type": "StockSold",
        "state": "pending",
        "age_s": 30,
    }
    assert "sagactl dlq show shipments 3" in hint_for(
        stuck(dead_letters=[letter], unpublished=[failed])
    )
    assert "sagactl outbox show stock 9" in hint_for(stuck(unpublished=[failed]))
    assert "relay" in hint_for(stuck(unpublished=[waiting]))
    approved = stuck(status="APPROVED")
    assert f"sagactl effects list --service shipments --order {approved.order_id}" in hint_for(
        approved
    )
    pending = stuck(status="PENDING")
    assert "stock or payments" in hint_for(pending)
    assert f"sagactl effects list --service payments --order {pending.order_id}" in hint_for(
        pending
    )


def test_stopped_at_is_the_latest_of_timeline_and_outbox() -> None:
    order = stuck(
        last_event={"producer": "orders", "event_type": "OrderApproved", "occurred_at": at(0)},
        last_outbox={"service": "stock", "event_type": "StockSold", "created_at": at(5)},
    )
    assert order.stopped_at == "stock/StockSold"
    order.last_outbox = None
    assert order.stopped_at == "orders/OrderApproved"
    assert stuck().stopped_at == "nothing recorded"


def row(row_id: int, *, published: bool = False, failed: bool = False) -> OutboxRow:
    return OutboxRow(
        "orders", row_id, uuid4(), "OrderCreated", "o1", "orders.events", T0,
        T0 if published else None, T0 if failed else None, 1, None,
    )  # fmt: skip


def test_a_replay_resends_published_and_failed_rows_and_leaves_pending_ones() -> None:
    plan = _plan("orders", [row(1, published=True), row(2), row(3, failed=True)])
    assert [r.id for r in plan.rows] == [1, 3]
    assert [r.id for r in plan.skipped] == [2]


def test_a_replay_must_select_something_besides_the_service() -> None:
    assert not OutboxFilter().selects_something_specific()
    assert OutboxFilter(order_id="o1").selects_something_specific()
    assert OutboxFilter(ids=(1, 2)).selects_something_specific()
    assert OutboxFilter(state="failed").selects_something_specific()
    where, params = OutboxFilter(state="failed", event_type="X", id_range=(1, 9)).where()
    assert where.as_string() == (
        "TRUE AND failed_at IS NOT NULL AND published_at IS NULL AND event_type = %s"
        " AND id BETWEEN %s AND %s"
    )
    assert params == ["X", 1, 9]
