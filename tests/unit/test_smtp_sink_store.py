"""The SMTP sink stores raw messages, one fsync per tick, and parses them when read."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope, Session

from simulators.smtp_sink import mailbox, server
from simulators.smtp_sink.mailbox import (
    append_mails,
    read_mail,
    record_from_bytes,
    stored_record,
)

RAW = (
    b"From: Shop <shop@example.com>\r\nTo: =?utf-8?q?Zo=C3=AB?= <zo\xc3\xab@b\xfccher.de>\r\n"
    b"Subject: Your order\r\nMessage-ID: <ord-1.order_approved@saga-outbox>\r\n"
    b"\r\nHello \xff\r\nthere\r\n"
)


def test_a_stored_message_reads_back_as_the_parsed_record(tmp_path: Path) -> None:
    path = tmp_path / "mail.jsonl"
    stored = stored_record(
        RAW,
        mail_from="shop@example.com",
        rcpt_tos=["zoë@xn--bcher-kva.de"],
        mail_options=["SMTPUTF8"],
    )
    append_mails(path, [stored, stored_record(b"Subject: two\r\n\r\n", mail_from="", rcpt_tos=[])])
    first, second = read_mail(path)
    assert first == record_from_bytes(
        RAW,
        mail_from="shop@example.com",
        rcpt_tos=["zoë@xn--bcher-kva.de"],
        mail_options=["SMTPUTF8"],
        received_at=mailbox.datetime.fromisoformat(stored["received_at"]),
    )
    assert first["message_id"] == "<ord-1.order_approved@saga-outbox>"
    assert second["subject"] == "two"
    line = path.read_text(encoding="utf-8").splitlines()[0]
    assert json.loads(line)["raw"].encode("utf-8", "surrogateescape") == RAW, "bytes kept as sent"


def test_a_line_of_the_older_parsed_form_is_read_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "mail.jsonl"
    older = {"message_id": "<m@x>", "to": ["a@example.com"], "subject": "s", "body": "b"}
    path.write_text(json.dumps(older) + "\n" + '{"torn": ', encoding="utf-8")
    assert read_mail(path) == [older]


def test_several_records_are_one_write_and_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(mailbox.os, "fsync", synced.append)
    records = [stored_record(RAW, mail_from="", rcpt_tos=[f"{n}@example.com"]) for n in range(5)]
    append_mails(tmp_path / "mail.jsonl", records)
    assert len(synced) == 1
    assert [m["to"] for m in read_mail(tmp_path / "mail.jsonl")] == [
        [f"{n}@example.com"] for n in range(5)
    ]


def test_messages_arriving_during_a_write_are_the_next_tick_and_answered_once_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks: list[int] = []
    first_write = threading.Event()

    def slow_append(path: Path, records: list[dict[str, Any]]) -> None:
        if not ticks:
            first_write.wait(5)  # the disk is slow: others arrive meanwhile
        ticks.append(len(records))

    monkeypatch.setattr(server, "append_mails", slow_append)
    recorder = server._Recorder(tmp_path / "mail.jsonl")

    def envelope(n: int) -> Envelope:
        env = Envelope()
        env.mail_from, env.rcpt_tos, env.original_content = "", [f"{n}@example.com"], RAW
        return env

    async def deliver() -> list[str]:
        session = Session(asyncio.get_running_loop())
        first = asyncio.create_task(recorder.handle_DATA(None, session, envelope(0)))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)  # its write has started
        others = [
            asyncio.create_task(recorder.handle_DATA(None, session, envelope(n)))  # type: ignore[arg-type]
            for n in range(1, 6)
        ]
        await asyncio.sleep(0.05)
        assert not any(task.done() for task in [first, *others]), "no 250 before it is durable"
        first_write.set()
        return await asyncio.gather(first, *others)

    answers = asyncio.run(deliver())
    assert ticks == [1, 5]
    assert all(answer.startswith("250") for answer in answers)


def test_a_tick_that_cannot_be_written_is_refused_with_a_4xx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(path: Path, records: list[dict[str, Any]]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(server, "append_mails", full_disk)
    recorder = server._Recorder(tmp_path / "mail.jsonl")
    env = Envelope()
    env.mail_from, env.rcpt_tos, env.original_content = "", ["a@example.com"], RAW

    async def deliver() -> str:
        session = Session(asyncio.get_running_loop())
        return await recorder.handle_DATA(None, session, env)  # type: ignore[arg-type]

    assert asyncio.run(deliver()).startswith("451")
