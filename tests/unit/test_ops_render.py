"""Output for people and for scripts; original bytes of dead letters; the provider ledger."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from sagactl.invariants import Charge, Refund
from sagactl.ops.dead_letters import REDRIVE_HEADER, DeadLetterRow, describe_bytes
from sagactl.ops.ledger import parse_ledger, provider_url
from sagactl.ops.render import Output, cell, to_json

WHEN = datetime(2026, 11, 21, 20, 0, 13, 966000, tzinfo=UTC)


def test_json_encodes_times_ids_durations_and_bytes() -> None:
    data = {
        "at": WHEN,
        "id": UUID("238d7afd-c2b3-4b46-888f-a1f5de6654da"),
        "age": timedelta(minutes=2),
        "raw": b"\xff\x00",
    }
    assert json.loads(to_json(data)) == {
        "at": "2026-11-21T20:00:13.966000+00:00",
        "id": "238d7afd-c2b3-4b46-888f-a1f5de6654da",
        "age": 120.0,
        "raw": base64.b64encode(b"\xff\x00").decode(),
    }


def test_json_mode_prints_one_document_and_no_tables(capsys: pytest.CaptureFixture[str]) -> None:
    stdout = io.StringIO()
    out = Output(json_mode=True, stdout=stdout)
    out.table(("a",), [(1,)], title="t")
    out.line("human only")
    out.note("to stderr")
    out.emit({"ok": True})
    assert json.loads(stdout.getvalue()) == {"ok": True}
    assert "to stderr" in capsys.readouterr().err


def test_people_get_tables_and_empty_tables_are_left_out() -> None:
    stdout = io.StringIO()
    out = Output(json_mode=False, stdout=stdout)
    out.table(("service", "error"), [("stock", "boom [not markup]")], title="rows")
    out.table(("nothing",), [], title="EMPTY")
    out.emit({"ignored": True})
    text = stdout.getvalue()
    assert "boom [not markup]" in text and "stock" in text
    assert "EMPTY" not in text and "ignored" not in text


def test_cells_show_none_times_and_truncate() -> None:
    assert cell(None).plain == "-"
    assert cell(WHEN).plain == "2026-11-21 20:00:13.966"
    assert cell("x" * 20, width=5).plain == "xxxx…"


def test_utf8_bytes_are_text_and_json_is_parsed() -> None:
    described = describe_bytes(b'{"event_type": "OrderApproved"}')
    assert described["encoding"] == "utf-8"
    assert described["json"] == {"event_type": "OrderApproved"}
    assert base64.b64decode(described["base64"]) == b'{"event_type": "OrderApproved"}'
    assert "json" not in describe_bytes(b"plain text")


def test_other_bytes_are_hex_and_base64() -> None:
    described = describe_bytes(b"\xff\xfe\x00")
    assert described == {"encoding": "binary", "hex": "fffe00", "size": 3, "base64": "//4A"}
    assert describe_bytes(None) == {"encoding": None, "size": 0}


def test_a_redrive_keeps_the_original_headers_and_says_where_it_came_from() -> None:
    letter = DeadLetterRow(
        "shipments", 7, "t.orders.events", 1, 42, None, None, None, "E", "e", 1, "pending",
        WHEN, None, None, b"k", b"v",
        [{"key": "event_id", "value": "abc"}, {"key": REDRIVE_HEADER, "value": "old"}],
    )  # fmt: skip
    assert letter.kafka_headers() == [
        ("event_id", b"abc"),
        (REDRIVE_HEADER, b"shipments.dead_letters/7"),
    ]


def test_headers_stored_base64_are_shown_and_redriven_as_their_exact_bytes() -> None:
    letter = DeadLetterRow(
        "stock", 8, "t.orders.events", 0, 5, None, None, None, "E", "e", 1, "pending",
        WHEN, None, None, b"k", b"v",
        [
            {"key": "trace", "value_base64": base64.b64encode(b"a\x00b").decode()},
            {"key": "binary", "value_base64": base64.b64encode(b"\xff\xfe").decode()},
            {"key": "empty", "value": None},
        ],
    )  # fmt: skip
    assert letter.kafka_headers() == [
        ("trace", b"a\x00b"),
        ("binary", b"\xff\xfe"),
        ("empty", None),
        (REDRIVE_HEADER, b"stock.dead_letters/8"),
    ]
    shown = letter.as_dict(with_message=True)["headers"]
    assert shown[0] == {"key": "trace", "value": "a\x00b"}
    assert shown[1]["value"] is None and shown[1]["value_hex"] == "fffe"
    assert base64.b64decode(shown[1]["value_base64"]) == b"\xff\xfe"
    assert shown[2] == {"key": "empty", "value": None}


def test_only_approved_charges_need_settling() -> None:
    ledger = {
        "charges": [
            {"charge_id": "ch_1", "order_id": "o1", "amount_cents": 100, "status": "approved"},
            {"charge_id": "ch_2", "order_id": "o2", "amount_cents": 50, "status": "declined"},
        ],
        "refunds": [{"refund_id": "re_1", "charge_id": "ch_1", "amount_cents": 100}],
    }
    assert parse_ledger(ledger) == ([Charge("ch_1", "o1", 100)], [Refund("re_1", "ch_1", 100)])


def test_provider_url_from_flag_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYMENTS_PROVIDER_URL", raising=False)
    assert provider_url() == "http://127.0.0.1:8010"
    monkeypatch.setenv("PAYMENTS_PROVIDER_URL", "http://provider:9000/")
    assert provider_url() == "http://provider:9000"
    assert provider_url("http://other:1") == "http://other:1"
