"""The one error type raised when local infrastructure cannot be installed or started."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from saga_harness.infra.proc import tail


class InfraError(RuntimeError):
    """Infrastructure failed; the message names the log files and quotes their last lines.

    Quoting the log in the exception means a failing CI run explains itself without anyone
    having to go and find the state directory.
    """

    def __init__(self, message: str, *, logs: Iterable[Path] = (), tail_lines: int = 30) -> None:
        self.logs = [Path(p) for p in logs]
        parts = [message]
        for path in self.logs:
            parts.append(
                f"--- last lines of {path} ---\n{tail(path, tail_lines) or '(empty or missing)'}"
            )
        super().__init__("\n".join(parts))
