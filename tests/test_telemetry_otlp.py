"""The fast OTLP span encoder produces exactly the SDK's ExportTraceServiceRequest."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from telemetry_helpers import forget, fresh_global_tracer_provider

from otel_agentbus import Event, EventBus, Scope, configure
from otel_agentbus.telemetry.otlp import SpanEncoder, with_fast_encoder


def same(spans: list[ReadableSpan]) -> None:
    ours = ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans))
    assert ours == encode_spans(spans)


def context(span_id: int = 2, remote: bool = False, state: TraceState | None = None) -> SpanContext:
    return SpanContext(0x1234, span_id, remote, TraceFlags(TraceFlags.SAMPLED), state)


def span(**fields: Any) -> ReadableSpan:
    defaults: dict[str, Any] = {"name": "s", "context": context(), "start_time": 10,
                                "end_time": 20}
    return ReadableSpan(**{**defaults, **fields})


def test_every_span_field() -> None:
    resource = Resource({"service.name": "svc", "n": 3}, schema_url="https://r")
    scope = InstrumentationScope("lib", "1.0", "https://s", {"a": "b"})
    same([
        span(),
        span(name="", start_time=0, end_time=None),
        span(context=context(3, state=TraceState([("k", "v"), ("x", "y")])),
             parent=context(9, remote=True), kind=SpanKind.CLIENT, resource=resource,
             instrumentation_scope=scope,
             attributes={"s": "x", "b": True, "f": False, "i": -5, "big": 1 << 62,
                         "d": 1.5, "nan": float("nan"), "l": ["a", "b"], "li": [1, 2],
                         "mixed": [1, "a", None, 2.5, True], "empty": [], "none": None,
                         "": "empty key", "u": "héllo ✓", "t": ("x",)},
             events=(SpanEvent("e", {"k": 1}, 5), SpanEvent("", None, 0)),
             links=(Link(context(7, remote=True), {"l": "v"}), Link(context(8))),
             status=Status(StatusCode.ERROR, "boom")),
        span(parent=context(9), status=Status(StatusCode.OK)),
        span(resource=resource, instrumentation_scope=None),
        span(resource=Resource({"service.name": "svc", "n": 3}, schema_url="https://r"),
             instrumentation_scope=InstrumentationScope("lib", "1.0", "https://s", {"a": "b"})),
    ])


def test_values_only_the_sdk_can_encode(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    same([span(attributes={"bytes": b"\x00\x01", "map": {"a": 1, "b": [1, 2]},
                           "huge": 1 << 70, "surrogate": "\ud800", "list_of_maps": [{"a": 1}],
                           "obj": object(), "ok": "fine"})])


def test_sdk_spans_with_bounded_attributes() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "app"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t", "2", schema_url="https://x")
    with tracer.start_as_current_span("parent", attributes={"a": 1}) as parent:
        parent.add_event("ev", {"x": "y"})
        with tracer.start_as_current_span("child", links=[Link(parent.get_span_context())]):
            pass
    other = provider.get_tracer("other")
    with other.start_as_current_span("third"):
        pass
    same(list(exporter.get_finished_spans()))


def test_mirror_spans() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = configure(tracer_provider=provider, metrics_enabled=False)
    bus = telemetry.attach(EventBus())
    scope = Scope(run_id="r", agent="a", session_id="c")
    bus.publish_nowait(Event("agent.run.started", scope=scope))
    for index in range(3):
        bus.publish_nowait(Event("agent.tool.call.started",
                                 {"tool_call_id": f"t{index}", "tool_name": "search"},
                                 scope=scope))
        bus.publish_nowait(Event("agent.tool.call.completed",
                                 {"tool_call_id": f"t{index}", "tool_name": "search",
                                  "is_error": index == 1}, scope=scope))
    bus.publish_nowait(Event("agent.run.completed", scope=scope))
    telemetry.shutdown()
    spans = list(exporter.get_finished_spans())
    assert len(spans) >= 5
    same(spans)
    encoder = SpanEncoder()  # the caches give the same bytes the second time
    assert encoder.encode(spans) == encoder.encode(spans)


scalars = st.one_of(st.text(max_size=80), st.booleans(), st.integers(-(1 << 64), 1 << 64),
                    st.floats(allow_nan=False), st.none())
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.binary(max_size=4),
                   st.dictionaries(st.text(max_size=4), scalars, max_size=3))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=10), values, max_size=6))
def test_any_attributes(attributes: dict[str, Any]) -> None:
    logging.getLogger("opentelemetry.exporter.otlp.proto.common._internal").disabled = True
    try:
        same([span(attributes=attributes)])
    finally:
        logging.getLogger("opentelemetry.exporter.otlp.proto.common._internal").disabled = False


def test_exporter_translates_with_the_encoder() -> None:
    exporter = with_fast_encoder(OTLPSpanExporter(endpoint="http://127.0.0.1:9", insecure=True))
    assert type(exporter) is OTLPSpanExporter
    try:
        spans = [span(attributes={"a": "b"})]
        assert exporter._translate_data(spans) == encode_spans(spans)
    finally:
        exporter.shutdown()


def test_configure_uses_the_encoder_and_a_larger_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_agentbus.telemetry.config import DEFAULT_SPAN_QUEUE, _span_queue_size

    assert _span_queue_size() == DEFAULT_SPAN_QUEUE
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4096")
    assert _span_queue_size() is None  # the SDK reads the variable
    with fresh_global_tracer_provider():
        telemetry = configure(metrics_enabled=False, endpoint="http://127.0.0.1:9")
        forget(telemetry)
        try:
            assert telemetry.exporter is not None
            inner = telemetry.exporter.inner
            assert type(inner) is OTLPSpanExporter
            assert "_translate_data" in vars(inner)
        finally:
            telemetry.shutdown(timeout=1.0)
