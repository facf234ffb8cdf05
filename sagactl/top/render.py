"""One frame of ``sagactl top`` as a rich renderable: a header, the sagas' line, one row per
hop (a service's outbox, its relay, its consumers) and the calls to the outside world.

Thresholds colour what an operator should look at; they mirror the alert rules
(deploy/prometheus/rules.yml): an outbox row older than 30 s, no active relay, dead letters,
a dependency failing more than 20% of its calls.
"""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from sagactl.top.snapshot import Snapshot

__all__ = ["MISSING", "frame", "number"]

MISSING = "—"
OLD_OUTBOX_ROW_S = 30.0
ERROR_RATIO = 0.2


def number(value: float | None, unit: str = "", *, digits: int | None = None) -> str:
    """``value`` for the screen: ``—`` when unknown; ``digits`` decimals (a rate), or a count
    without decimals when it is whole."""
    if value is None:
        return MISSING
    if digits is None:
        digits = 0 if float(value).is_integer() else 1
    return f"{value:.{digits}f}{unit}"


def seconds(value: float | None) -> str:
    """A duration: milliseconds under a second, else seconds."""
    if value is None:
        return MISSING
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _header(snapshot: Snapshot) -> Text:
    up = [job for job, ok in sorted(snapshot.targets.items()) if ok]
    down = [job for job, ok in sorted(snapshot.targets.items()) if not ok]
    text = Text.assemble(
        ("sagactl top", "bold"),
        f" · {snapshot.source} · {snapshot.at:%Y-%m-%d %H:%M:%S} UTC · ",
        (f"{len(up)}/{len(snapshot.targets)} processes up", "red" if down else "green"),
    )
    if down:
        text.append(f" (down: {', '.join(down)})", style="red")
    return text


def _sagas(snapshot: Snapshot) -> Text:
    states = " · ".join(
        f"{state} {number(rate, digits=2)}"
        for state, rate in sorted(snapshot.finished_per_s.items())
    )
    stuck = snapshot.stuck_sagas
    return Text.assemble(
        ("sagas  ", "bold"),
        f"finished {number(snapshot.finished_total_per_s, '/s', digits=2)}",
        f" ({states})" if states else "",
        f"   end to end p50 {seconds(snapshot.duration_p50_s)}",
        f"  p99 {seconds(snapshot.duration_p99_s)}",
        "   stuck ",
        (number(stuck), "bold red" if stuck else ""),
        (f"   rates over {snapshot.rate_window_s:.0f} s", "dim"),
    )


def _reasons(snapshot: Snapshot) -> Text | None:
    """Why sagas ended other than as planned (a reason other than ``completed``), if any did."""
    why = [
        f"{state} {reason} {number(rate, digits=2)}"
        for state, reasons in sorted(snapshot.finished_reasons.items())
        for reason, rate in sorted(reasons.items())
        if reason != "completed" and rate > 0
    ]
    return Text(f"       /s by reason: {' · '.join(why)}", style="dim") if why else None


def _hops(snapshot: Snapshot) -> Table:
    # Short headers and unwrapped numbers: the table fits 80 columns; the lag wraps.
    table = Table(title="backlog per hop", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("service", no_wrap=True)
    table.add_column("outbox", justify="right", no_wrap=True)
    table.add_column("oldest", justify="right", no_wrap=True)
    table.add_column("relay", no_wrap=True)
    table.add_column("pub p99", justify="right", no_wrap=True)
    table.add_column("in/s", justify="right", no_wrap=True)
    table.add_column("lag by source")
    table.add_column("dead", justify="right", no_wrap=True)
    for service in dict.fromkeys([*snapshot.outboxes, *snapshot.consumers]):
        outbox = snapshot.outboxes.get(service)
        consumer = snapshot.consumers.get(service)
        cells: list[Text] = [Text(service, style="bold")]
        if outbox is None:
            cells += [Text("")] * 4
        else:
            age = outbox.oldest_pending_age_s
            relays = ", ".join(outbox.active_relays) or (
                "none" if outbox.relays_reporting else MISSING
            )
            cells += [
                Text(number(outbox.pending_rows)),
                Text(seconds(age), style="bold red" if (age or 0) > OLD_OUTBOX_ROW_S else ""),
                Text(relays, style="bold red" if relays == "none" else ""),
                Text(seconds(outbox.publish_p99_s)),
            ]
        if consumer is None:
            cells += [Text("")] * 3
        else:
            # By the topic's name without ".events": the service whose events wait.
            lag = ", ".join(
                f"{topic.removesuffix('.events')} {number(value)}"
                for topic, value in consumer.lag_messages.items()
            )
            dead = consumer.dead_letters
            cells += [
                Text(number(consumer.applied_per_s, digits=2)),
                Text(lag or MISSING),
                Text(
                    _dead_letters(dead, consumer.dead_letters_per_s), style="yellow" if dead else ""
                ),
            ]
        table.add_row(*cells)
    return table


def _dead_letters(total: float | None, per_s: float | None) -> str:
    """Dead letters since the processes started, and how fast they come now if they do."""
    if not per_s:
        return number(total)
    return f"{number(total)} (+{number(per_s, '/s', digits=2)})"


def _effects(snapshot: Snapshot) -> Table | Text:
    if not snapshot.effects:
        return Text(f"calls to the outside world: {MISSING} (none counted yet)", style="dim")
    table = Table(title="calls to the outside world", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("service")
    table.add_column("kind")
    table.add_column("calls/s", justify="right")
    table.add_column("failed or retried", justify="right")
    for service, kinds in snapshot.effects.items():
        for kind, view in kinds.items():
            ratio = view.error_ratio
            table.add_row(
                service,
                kind,
                number(view.calls_per_s, digits=2),
                Text(
                    MISSING if ratio is None else f"{ratio:.0%}",
                    style="bold red" if (ratio or 0) > ERROR_RATIO else "",
                ),
            )
    return table


def frame(snapshot: Snapshot, error: str | None = None) -> RenderableType:
    """The whole frame; ``error`` (the source stopped answering) shows under the header."""
    parts: list[RenderableType] = [_header(snapshot)]
    if error:
        parts.append(
            Text(f"source unreachable, showing the last reading: {error}", style="bold red")
        )
    reasons = _reasons(snapshot)
    parts += [_sagas(snapshot), *([reasons] if reasons else []), _hops(snapshot)]
    parts.append(_effects(snapshot))
    return Group(*parts)
