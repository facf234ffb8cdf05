"""structlog configuration: JSON lines by default, console output for people."""

from __future__ import annotations

import logging
import sys

import structlog

from saga_runtime.settings import LogSettings
from saga_runtime.tracing import log_trace_ids

__all__ = ["configure_logging", "get_logger"]


def configure_logging(settings: LogSettings | None = None, **context: str) -> None:
    """Configure structlog for this process and bind process-wide context.

    Per-message context (event id, aggregate id, ...) is bound by the consumer
    runner with ``bound_contextvars`` so every line a handler writes carries it.
    """
    settings = settings or LogSettings()
    renderer: structlog.types.Processor
    if settings.format == "console":
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            log_trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[settings.level]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    if context:
        structlog.contextvars.bind_contextvars(**context)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
