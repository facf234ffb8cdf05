"""What operators type: durations (``90s``, ``7d``, ``P7D``), times (``2h`` ago or ISO 8601),
id lists and ranges. Each parser raises ``argparse.ArgumentTypeError`` with an example, so
argparse refuses a bad value with exit 2 before anything runs."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta

from pydantic import TypeAdapter, ValidationError

__all__ = [
    "format_age",
    "parse_duration",
    "parse_id_range",
    "parse_ids",
    "parse_time",
]

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_COMPOUND = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")
_ISO_DURATION = TypeAdapter(timedelta)
DURATION_EXAMPLES = "e.g. 90s, 15m, 2h, 7d, 1h30m or ISO 8601 P7D"


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``7d``, ``1w``, ``1h30m``, ``250ms``, seconds, or ISO 8601."""
    value = text.strip().lower()
    if _COMPOUND.match(value):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
        return timedelta(seconds=seconds)
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return timedelta(seconds=float(value))
    if value.startswith("p"):
        try:
            duration = _ISO_DURATION.validate_python(text.strip().upper())
        except ValidationError:
            pass
        else:
            if duration >= timedelta(0):
                return duration
    raise argparse.ArgumentTypeError(f"not a duration: {text!r} ({DURATION_EXAMPLES})")


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """An instant: ``now``, a duration meaning that long ago (``2h``), or ISO 8601 (UTC if no
    offset is given: ``2026-11-21``, ``2026-11-21T20:00``, ``2026-11-21T20:00:00+01:00``)."""
    value = text.strip()
    now = now or datetime.now(UTC)
    if value.lower() == "now":
        return now
    # A bare number is ambiguous (seconds ago? an epoch? a year?): ask for a unit.
    if not re.fullmatch(r"\d+(?:\.\d+)?", value):
        try:
            return now - parse_duration(value)
        except argparse.ArgumentTypeError:
            pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (e.g. 2h for two hours ago, 2026-11-21T20:00Z, now)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_ids(text: str) -> list[int]:
    """``1,2,5`` (positive row ids, duplicates folded, order kept)."""
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) <= 0:
            raise argparse.ArgumentTypeError(f"not a row id: {part!r} (e.g. --ids 12,13,20)")
        ids.append(int(part))
    if not ids:
        raise argparse.ArgumentTypeError("no ids given (e.g. --ids 12,13,20)")
    return list(dict.fromkeys(ids))


def parse_id_range(text: str) -> tuple[int, int]:
    """``100-250``, inclusive at both ends."""
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not an id range: {text!r} (e.g. --id-range 100-250)")
    first, last = int(match.group(1)), int(match.group(2))
    if first > last:
        raise argparse.ArgumentTypeError(f"empty id range {text!r}: the first id is above the last")
    return first, last


def format_age(seconds: float | None) -> str:
    """A short human duration: ``850ms``, ``42s``, ``3m12s``, ``2h05m``, ``4d03h``."""
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{sign}{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{sign}{seconds:.1f}s" if seconds < 10 else f"{sign}{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{sign}{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{sign}{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{sign}{days}d{hours:02d}h"
