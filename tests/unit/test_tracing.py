"""Trace context: made, carried in envelopes and headers, continued by consumers, logged."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from saga_runtime import Envelope, Outbox, Outcome, UnitOfWork, configure_logging, tracing
from sagactl.ops.saga import Emitted, TraceData
from tests.unit.fakes import FakeConsumer, FakeMessage
from tests.unit.test_consumer_runner import Asked, asked, make_runner

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    return exporter


def ids(traceparent: str | None) -> tuple[str, str]:
    assert traceparent is not None
    found = TRACEPARENT.fullmatch(traceparent)
    assert found is not None, traceparent
    return found[1], found[2]


def by_name(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [found] = [s for s in exporter.get_finished_spans() if s.name == name]
    return found


def test_a_span_continues_the_trace_its_traceparent_names(spans: InMemorySpanExporter) -> None:
    with tracing.span("upstream") as upstream:
        sent = tracing.current_traceparent()
    with tracing.span("downstream", parent=sent):
        pass
    down = by_name(spans, "downstream")
    assert ids(sent) == (
        f"{upstream.get_span_context().trace_id:032x}",
        f"{upstream.get_span_context().span_id:016x}",
    )
    assert down.context.trace_id == upstream.get_span_context().trace_id
    assert down.parent is not None and down.parent.span_id == upstream.get_span_context().span_id


@pytest.mark.parametrize(
    "garbage", ["", "nonsense", "00-zz-yy-01", f"00-{'0' * 32}-{'1' * 16}-01", f"ff-{'a' * 32}-1-0"]
)
def test_a_malformed_traceparent_starts_a_new_trace(
    spans: InMemorySpanExporter, garbage: str
) -> None:
    with tracing.span("alone", parent=garbage):
        pass
    assert by_name(spans, "alone").parent is None


def test_without_an_endpoint_ids_are_made_but_nothing_is_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing, "_tracer", tracing._tracer)  # restored after the test
    tracing.configure_tracing("orders", environ={})
    with tracing.span("quiet") as quiet:
        assert not quiet.is_recording()
        trace_id, _ = ids(tracing.current_traceparent())
        assert tracing.trace_ids() is not None and tracing.trace_ids()[0] == trace_id  # type: ignore[index]


def test_without_an_endpoint_a_span_continues_its_parents_trace_unsampled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing, "_tracer", tracing._tracer)
    tracing.configure_tracing("orders", environ={})
    parent = f"00-{'ab' * 16}-{'cd' * 8}-01"
    with tracing.span("child", parent=parent) as child, tracing.span("grandchild") as grandchild:
        child_ids, grandchild_ids = (
            ids(tracing.traceparent_of(child)),
            ids(tracing.traceparent_of(grandchild)),
        )
    assert child_ids[0] == grandchild_ids[0] == "ab" * 16
    assert len({child_ids[1], grandchild_ids[1], "cd" * 8}) == 3
    assert tracing.traceparent_of(grandchild).endswith("-00")  # type: ignore[union-attr]


def test_without_an_endpoint_a_span_left_by_an_exception_gives_the_outer_span_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracing, "_tracer", tracing._tracer)
    tracing.configure_tracing("orders", environ={})
    with tracing.span("outer") as outer:
        with pytest.raises(ValueError, match="handler failed"), tracing.span("inner") as inner:
            assert tracing.current_traceparent() == tracing.traceparent_of(inner)
            raise ValueError("handler failed")
        assert tracing.current_traceparent() == tracing.traceparent_of(outer)
    assert tracing.current_traceparent() is None


def test_without_an_endpoint_the_sdk_is_not_even_loaded() -> None:
    """Every process start pays for what it imports (a restarted service, a CLI call)."""
    code = (
        "import sys; from saga_runtime import tracing;"
        " tracing.configure_tracing('orders', environ={});"
        " print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


def test_with_an_endpoint_spans_are_recorded_for_export(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_tracer", tracing._tracer)
    installed: list[Any] = []
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    tracing.configure_tracing("orders", environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"})
    recording = tracing.start_span("loud")  # never ended: nothing to send at shutdown
    try:
        assert recording.is_recording()
        [provider] = installed
        assert provider.resource.attributes["service.name"] == "orders"
    finally:
        installed[0].shutdown()


def test_an_emitted_event_is_a_child_of_the_span_that_emitted_it(
    spans: InMemorySpanExporter,
) -> None:
    uow = UnitOfWork(
        conn=None, outbox=Outbox(schema="orders", topic="orders.events"), producer="orders"
    )  # type: ignore[arg-type]
    with tracing.span("handle Something") as handling:
        envelope = uow.emit(Asked(n=1), aggregate_id="order-1")
    emitted = by_name(spans, "emit Asked")
    assert emitted.parent is not None
    assert emitted.parent.span_id == handling.get_span_context().span_id
    assert ids(envelope.traceparent)[1] == f"{emitted.context.span_id:016x}"
    assert ("traceparent", envelope.traceparent.encode()) in envelope.kafka_headers()  # type: ignore[union-attr]


def test_envelopes_older_than_tracing_are_read_and_carry_no_header() -> None:
    old = asked(1).model_dump(mode="json")
    del old["traceparent"]
    envelope = Envelope.from_bytes(json.dumps(old).encode())
    assert envelope.traceparent is None
    assert "traceparent" not in dict(envelope.kafka_headers())


def _consumed(exporter: InMemorySpanExporter) -> ReadableSpan:
    return by_name(exporter, "consume Asked")


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "in a batch"])
def test_a_consumer_continues_the_relays_span_else_the_emitters_else_starts_one(
    spans: InMemorySpanExporter, batched: bool
) -> None:
    relayed, emitted = f"00-{'a' * 32}-{'b' * 16}-01", f"00-{'c' * 32}-{'d' * 16}-01"
    with_header = FakeMessage(
        asked(1).model_copy(update={"traceparent": emitted}).to_bytes(),
        0,
        _headers=[("traceparent", relayed.encode())],
    )
    without = FakeMessage(asked(2).model_copy(update={"traceparent": emitted}).to_bytes(), 1)
    old = FakeMessage(asked(3).to_bytes(), 2)  # neither: from before tracing
    consumer = FakeConsumer([with_header, without, old])
    runner, _, _ = make_runner(consumer)
    polled = consumer.consume(10, 0)
    outcomes = runner.process_batch(polled) if batched else [runner.process(m) for m in polled]  # type: ignore[arg-type]
    assert outcomes == [Outcome.APPLIED] * 3

    consumed = sorted(
        (s for s in spans.get_finished_spans() if s.name == "consume Asked"),
        key=lambda s: s.start_time or 0,
    )
    parents = [
        (f"{s.parent.trace_id:032x}", f"{s.parent.span_id:016x}") if s.parent else None
        for s in consumed
    ]
    assert parents == [("a" * 32, "b" * 16), ("c" * 32, "d" * 16), None]
    handled = [s for s in spans.get_finished_spans() if s.name == "handle Asked"]
    assert {s.parent.span_id for s in handled if s.parent} == {s.context.span_id for s in consumed}
    # What the handler emitted is the handler's child.
    emits = [s for s in spans.get_finished_spans() if s.name == "emit Answered"]
    assert {s.parent.span_id for s in emits if s.parent} == {s.context.span_id for s in handled}


def test_every_log_line_written_in_a_span_carries_its_ids(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    configured: dict[str, Any] = {}
    monkeypatch.setattr(structlog, "configure", lambda **kwargs: configured.update(kwargs))
    configure_logging()  # its processors, without changing the process's logging
    monkeypatch.setattr(structlog.contextvars, "clear_contextvars", lambda: None)

    def render(**event: Any) -> dict[str, Any]:
        line: Any = event
        for processor in configured["processors"]:
            line = processor(None, "info", line)
        return json.loads(line)  # type: ignore[no-any-return]

    with tracing.span("work") as working:
        line = render(event="inside")
    ctx = working.get_span_context()
    assert (line["trace_id"], line["span_id"]) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert "trace_id" not in render(event="outside")


def test_saga_trace_names_the_orders_trace_first_event_first() -> None:
    now = datetime.now(UTC)

    def emitted(n: int, trace_id: str | None) -> Emitted:
        at = now + timedelta(seconds=n)
        return Emitted("orders", n, uuid4(), "E", at, at, None, None, None, trace_id)

    data = TraceData("o-1", emitted=[emitted(2, "b" * 32), emitted(1, "a" * 32), emitted(3, None)])
    assert data.trace_ids == ["a" * 32, "b" * 32]
    assert TraceData("o-2", emitted=[emitted(1, None)]).trace_ids == []
