"""A local SMTP sink for development and tests (not a service of the saga).

It accepts every message on SMTP and appends it, raw, as one JSON line to a file
(durable before the 250, one fsync per tick of messages), so tests and the invariant
checker can read what customers were told (``read_mail`` parses it).
"""

from simulators.smtp_sink.mailbox import append_mail, read_mail, record_from_bytes
from simulators.smtp_sink.server import SinkSettings, SmtpSink, main

__all__ = ["SinkSettings", "SmtpSink", "append_mail", "main", "read_mail", "record_from_bytes"]
