"""A local SMTP sink for development and tests (not a service of the saga).

It accepts every message on SMTP and appends it as one JSON line to a file,
so tests and the invariant checker can read what customers were told.
"""

from simulators.smtp_sink.mailbox import append_mail, read_mail, record_from_bytes
from simulators.smtp_sink.server import SinkSettings, SmtpSink, main

__all__ = ["SinkSettings", "SmtpSink", "append_mail", "main", "read_mail", "record_from_bytes"]
