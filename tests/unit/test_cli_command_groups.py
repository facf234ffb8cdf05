"""``sagactl``'s optional command groups: the harness's commands come from its entry point.

A product-only install (no ``sagactl.commands`` entry points) has the operator's commands
and nothing of the harness: ``sagactl up`` is argparse's invalid choice.
"""

from __future__ import annotations

import argparse
from importlib.metadata import EntryPoint

import pytest

from sagactl import cli

HARNESS_COMMANDS = {"up", "down", "status", "chaos", "bench", "provider", "smtp-sink"}
PRODUCT_COMMANDS = {"migrate", "prepare", "topics", "relay", "run", "outbox", "dlq", "audit"}


def commands(parser: argparse.ArgumentParser) -> set[str]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def installed(monkeypatch: pytest.MonkeyPatch, *entries: EntryPoint) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [e for e in entries if e.group == group])


def test_the_harness_registers_its_commands_and_state_dir_through_the_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed(
        monkeypatch,
        EntryPoint("harness", "saga_harness.commands:register", cli.COMMAND_GROUPS),
    )
    parser = cli.build_parser()
    assert commands(parser) >= HARNESS_COMMANDS | PRODUCT_COMMANDS
    args = parser.parse_args(["--state-dir", "/tmp/x", "up", "--relays", "1"])
    assert (str(args.state_dir), args.relays, args.func.__module__) == (
        "/tmp/x",
        1,
        "saga_harness.commands",
    )


def test_without_the_harness_its_commands_do_not_exist(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    installed(monkeypatch)
    parser = cli.build_parser()
    assert commands(parser) >= PRODUCT_COMMANDS
    assert not commands(parser) & HARNESS_COMMANDS
    with pytest.raises(SystemExit) as exited:
        cli.main(["up"])
    assert exited.value.code == 2
    assert "invalid choice: 'up'" in capsys.readouterr().err


def test_a_command_group_that_cannot_load_is_named_and_left_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    installed(
        monkeypatch, EntryPoint("gone", "no_such_package.commands:register", "sagactl.commands")
    )
    assert commands(cli.build_parser()) >= PRODUCT_COMMANDS
    err = capsys.readouterr().err
    assert "commands 'gone' (no_such_package.commands:register) not loaded" in err


def test_a_serving_command_parses_without_the_operator_and_harness_commands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A service restarted after a crash pays for what its command line loads."""
    built: list[argparse.ArgumentParser] = []
    build = cli.build_parser

    def recording(**options: bool) -> argparse.ArgumentParser:
        built.append(build(**options))
        return built[-1]

    monkeypatch.setattr(cli, "build_parser", recording)
    monkeypatch.setattr(cli, "installed_command_groups", lambda: pytest.fail("harness loaded"))
    ran: list[str] = []
    monkeypatch.setattr(cli, "cmd_run", lambda args: ran.append(args.service) or 0)
    assert cli.main(["run", "payments"]) == 0
    assert ran == ["payments"]
    [parser] = built
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert sorted(commands.choices) == ["migrate", "prepare", "relay", "run", "topics"]
