"""The sink's SMTP server: aiosmtpd on its own event loop, in a thread of its own."""

from __future__ import annotations

import asyncio
import collections
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from saga_runtime import LogSettings, configure_logging, get_logger
from simulators.smtp_sink.mailbox import append_mails, stored_record

__all__ = ["SinkSettings", "SmtpSink", "main"]

log = get_logger(__name__)

_COMMAND_SIZE_LIMIT = 1000  # under aiosmtpd's line limit (1001), which it must stay under


class SinkSettings(BaseSettings):
    """``SMTP_SINK_HOST``, ``SMTP_SINK_PORT`` and ``SMTP_SINK_FILE`` (the JSON-lines file).

    ``SMTP_SINK_SMTPUTF8=false`` plays a server without internationalized mail.
    """

    model_config = SettingsConfigDict(env_prefix="SMTP_SINK_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=2525, ge=0, le=65535)
    file: Path = Path(".state/mail.jsonl")
    smtputf8: bool = True
    log: LogSettings = Field(default_factory=LogSettings)


class _Recorder:
    """aiosmtpd handler: every accepted message becomes a line in the file.

    Messages are stored raw (parsed when read: ``read_mail``) and in ticks: the
    messages that arrive while one write is being made durable are written together
    with a single fsync after it, and each is answered 250 once its tick is durable.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode()
        record = stored_record(
            raw,
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            mail_options=list(envelope.mail_options),
        )
        try:
            await self._stored(record)
        except Exception as exc:
            # A 4xx tells the sender to try again later instead of losing the mail.
            log.error("smtp_sink.store_failed", error=repr(exc))
            return "451 Requested action aborted: could not store the message"
        return "250 Message accepted for delivery"

    async def _stored(self, record: dict[str, Any]) -> None:
        """Return once ``record`` is durable (raises if its tick could not be written)."""
        loop = asyncio.get_running_loop()
        durable: asyncio.Future[None] = loop.create_future()
        self._waiting.append((record, durable))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_ticks())
        await durable

    async def _write_ticks(self) -> None:
        while self._waiting:
            tick, self._waiting = self._waiting, []
            try:
                # Off the event loop: messages keep arriving while the disk syncs.
                await asyncio.to_thread(append_mails, self.path, [r for r, _ in tick])
            except Exception as exc:
                for _, durable in tick:
                    if not durable.done():  # its sender may have hung up meanwhile
                        durable.set_exception(exc)
            else:
                for _, durable in tick:
                    if not durable.done():
                        durable.set_result(None)
                log.debug("smtp_sink.stored", messages=len(tick))


class SmtpSink:
    """The SMTP server on a background thread; ``port=0`` picks a free port (see ``.port``).

    Use it as a context manager in tests; ``main`` runs it until a signal.
    It announces and accepts SMTPUTF8 (RFC 6531) unless ``smtputf8=False``.
    """

    def __init__(
        self, *, path: Path, host: str = "127.0.0.1", port: int = 0, smtputf8: bool = True
    ) -> None:
        self.path = Path(path)
        self.host = host
        self.port = port
        self.smtputf8 = smtputf8
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Listen, and return once connections are accepted (raises if binding failed)."""
        self._thread = threading.Thread(target=self._serve, name="smtp-sink", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        recorder = _Recorder(self.path)

        def protocol() -> SMTP:
            # A fixed hostname: the default looks up the FQDN, which can stall on DNS.
            smtp = SMTP(
                recorder, hostname="saga-smtp-sink", enable_SMTPUTF8=self.smtputf8, loop=loop
            )
            # A UTF-8 local part of 64 characters is up to 256 bytes: a longest legal
            # path with its options outgrows RFC 5321's 512-byte command line.
            # (aiosmtpd's per-command limits default to a dict shared by every instance.)
            smtp.command_size_limit = _COMMAND_SIZE_LIMIT
            smtp.command_size_limits = collections.defaultdict(lambda: _COMMAND_SIZE_LIMIT)
            return smtp

        try:
            server = loop.run_until_complete(loop.create_server(protocol, self.host, self.port))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self.port = int(server.sockets[0].getsockname()[1])
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(server.wait_closed())
            loop.close()


def main() -> int:
    """Run the sink until SIGTERM/SIGINT (``python -m simulators.smtp_sink``)."""
    settings = SinkSettings()
    configure_logging(settings.log, service="smtp-sink")
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    path = settings.file.absolute()
    with SmtpSink(
        path=path, host=settings.host, port=settings.port, smtputf8=settings.smtputf8
    ) as sink:
        log.info(
            "smtp_sink.started",
            host=sink.host,
            port=sink.port,
            file=str(path),
            smtputf8=settings.smtputf8,
        )
        stopping.wait()
    log.info("smtp_sink.stopped")
    return 0
