"""How operator commands speak: rich tables on stdout for people, one JSON document on stdout
for scripts (``--json``), and notes, warnings and progress on stderr, so that piping the JSON
into ``jq`` never picks up anything else."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import IO, Any
from uuid import UUID

from rich.console import Console
from rich.json import JSON
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

__all__ = ["Output", "ProgressBar", "cell", "to_json"]


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def to_json(data: Any) -> str:
    """The ``--json`` encoding: ISO 8601 times, UUIDs as text, durations in seconds."""
    return json.dumps(data, default=_default, indent=2, ensure_ascii=False)


def cell(value: Any, *, width: int | None = None) -> Text:
    """A table cell as plain text (never rich markup: error messages contain brackets)."""
    if value is None:
        text = "-"
    elif isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    elif isinstance(value, UUID):
        text = str(value)
    else:
        text = str(value)
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return Text(text)


def _console(stream: IO[str]) -> Console:
    # Piped output keeps whole lines: a 3 a.m. grep should not meet a wrapped table.
    tty = stream.isatty()
    return Console(file=stream, highlight=False, width=None if tty else 220, soft_wrap=not tty)


@dataclass
class ProgressBar:
    _progress: Progress | None
    _task: Any

    def advance(self, amount: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, amount)

    def update(self, completed: int, total: int | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, total=total)


class Output:
    """One command's output, in the mode the operator asked for."""

    def __init__(self, *, json_mode: bool, stdout: IO[str] | None = None) -> None:
        self.json_mode = json_mode
        self._stdout_stream = stdout or sys.stdout
        self.stdout = _console(self._stdout_stream)
        self.stderr = _console(sys.stderr)

    # -- for scripts -------------------------------------------------------------------------
    def emit(self, data: Any) -> None:
        """The command's one JSON document (only with ``--json``)."""
        if self.json_mode:
            self._stdout_stream.write(to_json(data) + "\n")
            self._stdout_stream.flush()

    # -- for people ----------------------------------------------------------------------------
    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        title: str | None = None,
        caption: str | None = None,
        widths: dict[str, int] | None = None,
    ) -> None:
        rows = list(rows)
        if self.json_mode or not rows:
            return  # an empty table says nothing: the command notes it on stderr
        widths = widths or {}
        table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
        for name in columns:
            table.add_column(name, overflow="fold")
        for row in rows:
            table.add_row(
                *(cell(v, width=widths.get(c)) for c, v in zip(columns, row, strict=True))
            )
        self.stdout.print(table)

    def fields(self, pairs: Sequence[tuple[str, Any]], *, title: str | None = None) -> None:
        """A two-column key/value table for one record."""
        if self.json_mode:
            return
        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for key, value in pairs:
            table.add_row(key, cell(value))
        self.stdout.print(table)

    def json_block(self, data: Any, *, title: str) -> None:
        if self.json_mode:
            return
        self.stdout.print(Text(title, style="bold"))
        self.stdout.print(JSON(to_json(data)))

    def line(self, message: str, *, style: str | None = None) -> None:
        """A line of the human report on stdout (skipped with ``--json``)."""
        if not self.json_mode:
            self.stdout.print(Text(message, style=style or ""))

    # -- stderr, in both modes -----------------------------------------------------------------
    def note(self, message: str) -> None:
        self.stderr.print(Text(message, style="dim"))

    def warn(self, message: str) -> None:
        self.stderr.print(Text(f"warning: {message}", style="yellow"))

    def refuse(self, message: str, fix: str | None) -> None:
        self.stderr.print(Text(f"sagactl: {message}", style="bold red"))
        if fix:
            self.stderr.print(Text(f"  fix: {fix}"))
        self.emit({"error": message, "fix": fix, "exit_code": 2})

    def fail(self, message: str, detail: Any = None) -> None:
        self.stderr.print(Text(f"sagactl: {message}", style="bold red"))
        self.emit({"error": message, "detail": detail, "exit_code": 1})

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[ProgressBar]:
        """A progress bar on stderr when it is a terminal (never on stdout, never in JSON)."""
        if not self.stderr.is_terminal:
            yield ProgressBar(None, None)
            return
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.stderr,
            transient=False,
        )
        with progress:
            task = progress.add_task(description, total=total)
            yield ProgressBar(progress, task)
