"""The operator commands' front: help everywhere, refusals before any connection.

Nothing here needs a database or a broker: a refusal for a missing setting or a bad
request happens before either is touched (exit 2, with the fix).
"""

from __future__ import annotations

import argparse
import json
import socket

import pytest

from sagactl.cli import build_parser, main

OPERATOR_COMMANDS = [
    ["outbox", "list"],
    ["outbox", "show", "orders", "1"],
    ["outbox", "replay", "--service", "orders", "--ids", "1"],
    ["outbox", "purge"],
    ["dlq", "list"],
    ["dlq", "show", "stock", "1"],
    ["dlq", "discard", "stock", "1"],
    ["effects", "list"],
    ["effects", "show", "--service", "payments", "1"],
    ["effects", "retry", "--service", "payments", "1"],
    ["effects", "abandon", "--service", "payments", "1"],
    ["saga", "trace", "o-1"],
    ["saga", "stuck"],
    ["audit"],
    ["audit-log"],
]


def leaf_commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.append((*prefix, name))
                found.extend(leaf_commands(child, (*prefix, name)))
    return found


ALL_COMMANDS = leaf_commands(build_parser())


def test_the_operator_commands_are_all_there() -> None:
    for command in ("outbox", "dlq", "saga"):
        assert {c[1] for c in ALL_COMMANDS if c[0] == command and len(c) == 2} >= (
            {"list", "show", "replay", "purge"}
            if command == "outbox"
            else {"list", "show", "redrive", "discard"}
            if command == "dlq"
            else {"trace", "stuck"}
        )
    assert ("audit",) in ALL_COMMANDS and ("audit-log",) in ALL_COMMANDS


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=" ".join)
def test_every_command_has_help(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert f"usage: sagactl {' '.join(command)}" in capsys.readouterr().out


@pytest.mark.parametrize("argv", OPERATOR_COMMANDS, ids=" ".join)
def test_without_database_url_every_command_refuses_with_the_fix(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main([*argv, "--json"]) == 2
    out, err = capsys.readouterr()
    refusal = json.loads(out)
    assert "DATABASE_URL is not set" in refusal["error"]
    assert refusal["fix"].startswith("export DATABASE_URL=")
    assert "fix: export DATABASE_URL" in err


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_database_is_a_refusal_that_hides_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://admin:s3cret@127.0.0.1:{closed_port()}/saga")
    assert main(["saga", "stuck"]) == 2
    err = capsys.readouterr().err
    assert "cannot connect to PostgreSQL" in err and "admin:***@" in err
    assert "s3cret" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["outbox", "replay", "--service", "orders", "--ids", "1", "--yes"],
        ["dlq", "discard", "stock", "1", "--yes"],
        ["dlq", "redrive", "stock", "1", "--yes", "--reason", " "],
        ["effects", "retry", "--service", "payments", "1", "--yes"],
        ["effects", "abandon", "--service", "payments", "1", "--yes"],
    ],
    ids=" ".join,
)
def test_changes_need_a_reason(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "--yes needs --reason" in capsys.readouterr().err


def test_a_replay_must_say_which_rows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["outbox", "replay", "--service", "orders", "--reason", "r", "--yes"]) == 2
    assert "say which rows to replay" in capsys.readouterr().err


def test_a_redrive_names_letters_or_all_pending(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "redrive", "stock"]) == 2
    assert main(["dlq", "redrive", "stock", "1", "--all-pending"]) == 2
    assert capsys.readouterr().err.count("either ids or --all-pending") == 2


def test_a_redrive_without_a_broker_address_refuses(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert main(["dlq", "redrive", "stock", "1"]) == 2
    assert "KAFKA_BOOTSTRAP_SERVERS is not set" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["outbox", "list", "--service", "billing"],
        ["outbox", "list", "--state", "lost"],
        ["outbox", "list", "--since", "yesterday"],
        ["outbox", "replay", "--service", "all", "--ids", "1"],
        ["outbox", "replay", "--service", "orders", "--id-range", "9-1"],
        ["saga", "stuck", "--older-than", "a while"],
        ["dlq", "show", "stock", "-1"],
        ["effects", "list", "--status", "pending;drop"],
        ["effects", "retry", "--service", "all", "1"],
        ["effects", "retry", "--service", "payments", "--deadline", "soon"],
    ],
    ids=" ".join,
)
def test_bad_arguments_exit_2_before_anything_runs(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "error: argument" in capsys.readouterr().err
