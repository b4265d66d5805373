"""The fast OTLP span encoder produces exactly the SDK's ExportTraceServiceRequest."""

from __future__ import annotations

import logging
import time
from pathlib import Path
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
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceState
from telemetry_helpers import context, forget, fresh_global_tracer_provider, span

from otel_agentbus import Event, EventBus, Scope, configure
from otel_agentbus.telemetry import sdk_internals
from otel_agentbus.telemetry.otlp import (
    SpanEncoder,
    _EncodedTraceServiceStub,
    _request_bytes,
    with_fast_encoder,
)

pytestmark = pytest.mark.skipif(
    not sdk_internals.FAST_ENCODER,
    reason="this SDK lacks the OTLP encoder helpers: the exporter keeps the SDK's encoder "
           "(tests/test_sdk_internals.py checks that path)")


def same(spans: list[ReadableSpan]) -> None:
    ours = ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans))
    assert ours == encode_spans(spans)


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
        request = exporter._translate_data(spans)
        # The encoder's bytes go to gRPC as they are: no parse and serialize again.
        assert type(request) is bytes
        assert ExportTraceServiceRequest.FromString(request) == encode_spans(spans)
        assert isinstance(exporter._client, _EncodedTraceServiceStub)
        if hasattr(exporter, "_initialize_channel_and_stub"):  # SDKs that reconnect so
            exporter._initialize_channel_and_stub()  # what the exporter does on UNAVAILABLE
            assert isinstance(exporter._client, _EncodedTraceServiceStub)
    finally:
        exporter.shutdown()


def test_request_bytes_reach_a_server_as_the_request(tmp_path: Path) -> None:
    from otel_agentbus.receiver import Receiver

    with Receiver(tmp_path / "r.db") as receiver:
        exporter = with_fast_encoder(OTLPSpanExporter(endpoint=receiver.grpc_endpoint,
                                                      insecure=True))
        try:
            assert exporter.export([span(attributes={"a": "b"})]) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        assert receiver.stats().spans == 1


def test_stub_still_serializes_messages() -> None:
    request = encode_spans([span()])
    assert _request_bytes(request) == request.SerializeToString()
    assert _request_bytes(b"raw") == b"raw"


def test_configure_uses_the_encoder_and_a_larger_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_agentbus.telemetry.export import DEFAULT_SPAN_QUEUE, _span_queue_size

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


def test_a_large_batch_is_encoded_as_requests_within_the_limit() -> None:
    resource = Resource({"service.name": "svc"})
    spans = [span(context=context(n), attributes={"n": n, "text": "x" * 100},
                  resource=resource if n % 3 else Resource({}))
             for n in range(1, 41)]
    whole = SpanEncoder().encode(spans)
    requests = SpanEncoder().encode_requests(spans, limit=len(whole) // 5)
    assert len(requests) > 1
    assert all(len(request) <= len(whole) // 5 for request in requests)
    parsed = [ExportTraceServiceRequest.FromString(request) for request in requests]
    ids = sorted(s.span_id for request in parsed for rs in request.resource_spans
                 for ss in rs.scope_spans for s in ss.spans)
    assert ids == sorted(s.span_id for rs in encode_spans(spans).resource_spans
                         for ss in rs.scope_spans for s in ss.spans)
    for part, request in zip(_halves(spans, len(requests)), parsed, strict=True):
        assert request == encode_spans(part)
    assert SpanEncoder().encode_requests(spans, limit=len(whole)) == [whole]
    assert len(SpanEncoder().encode_requests(spans[:1], limit=10)) == 1  # cannot split one


def _halves(spans: list[ReadableSpan], parts: int) -> list[list[ReadableSpan]]:
    """How encode_requests splits ``spans`` when every half of half is still too large
    until ``parts`` equal pieces (a power of two)."""
    if parts == 1:
        return [spans]
    half = len(spans) // 2
    return _halves(spans[:half], parts // 2) + _halves(spans[half:], parts // 2)


def test_a_batch_over_the_request_limit_reaches_the_receiver_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_agentbus.receiver import Receiver
    from otel_agentbus.telemetry import otlp

    monkeypatch.setattr(otlp, "MAX_REQUEST_BYTES", 2_000)
    spans = [span(context=context(n), attributes={"text": "x" * 100}) for n in range(1, 51)]
    with Receiver(tmp_path / "r.db") as receiver:
        exporter = with_fast_encoder(OTLPSpanExporter(endpoint=receiver.grpc_endpoint,
                                                      insecure=True))
        try:
            assert type(exporter._translate_data(spans)) is otlp._Requests
            assert exporter.export(spans) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        stats = receiver.stats()
    assert stats.spans == 50
    assert stats.requests > 4  # several requests, each within the limit


def test_parts_share_the_calls_deadline() -> None:
    from otel_agentbus.telemetry.otlp import _Export, _Requests

    timeouts: list[float | None] = []

    def call(request: bytes, metadata: Any = None, timeout: float | None = None) -> str:
        timeouts.append(timeout)
        time.sleep(0.05)
        return f"answer to {request!r}"

    export = _Export(call)
    assert export(b"one", metadata=(), timeout=5.0) == "answer to b'one'"
    assert export(_Requests((b"a", b"b", b"c")), timeout=1.0) == "answer to b'c'"
    assert timeouts[0] == 5.0
    assert timeouts[1] is not None and timeouts[3] is not None
    assert 1.0 >= timeouts[1] > timeouts[2] > timeouts[3] > 0.8
    assert export(_Requests((b"a", b"b")), timeout=None) == "answer to b'b'"
    assert timeouts[-1] is None


def test_dropped_counts_of_sdk_spans_and_other_classes() -> None:
    from opentelemetry.sdk.trace import SpanLimits

    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=1, max_events=1,
                                                     max_links=1))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    links = [Link(context(n)) for n in (5, 6, 7)]
    with tracer.start_as_current_span("s", attributes={"a": 1, "b": 2, "c": 3},
                                      links=links) as sdk_span:
        sdk_span.add_event("e1")
        sdk_span.add_event("e2")
    (finished,) = exporter.get_finished_spans()
    assert (finished.dropped_attributes, finished.dropped_events,
            finished.dropped_links) == (2, 1, 2)

    class Counted(ReadableSpan):
        """A span class of its own: its properties are what counts."""

        @property
        def dropped_attributes(self) -> int:
            return 4

    ours = Counted(name="c", context=context(8), attributes={"a": 1}, start_time=1, end_time=2)
    same([finished, ours])
    request = ExportTraceServiceRequest.FromString(SpanEncoder().encode([finished, ours]))
    encoded = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [s.dropped_attributes_count for s in encoded] == [2, 4]
    assert [(s.dropped_events_count, s.dropped_links_count) for s in encoded] == [(1, 2), (0, 0)]
