"""The two ways an operator command ends badly, and their exit codes."""

from __future__ import annotations

__all__ = ["EXIT_FAILED", "EXIT_REFUSED", "OperationFailed", "Refusal"]

EXIT_FAILED = 1
EXIT_REFUSED = 2


class Refusal(Exception):
    """The command will not run as asked (exit 2): a setting is missing, a server is
    unreachable, a selection matches nothing. Nothing was changed; ``fix`` says what to do."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


class OperationFailed(Exception):
    """The command ran and something went wrong (exit 1); ``message`` says what was done."""

    def __init__(self, message: str, detail: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
