"""The OTLP/HTTP span exporter configure() sets up encodes with our encoder, and what it
posts is what the SDK would post: it reaches the receiver intact, compressed or not."""

from __future__ import annotations

import http.server
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HTTPSpanExporter,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from telemetry_helpers import context, forget, fresh_global_tracer_provider, span

from otel_agentbus import Event, EventBus, Scope, configure
from otel_agentbus import semconv as sc
from otel_agentbus.receiver import Receiver
from otel_agentbus.receiver.queries import get_trace
from otel_agentbus.telemetry import sdk_internals
from otel_agentbus.telemetry.otlp_http import EncodedRequest, with_fast_http_encoder

pytestmark = pytest.mark.skipif(
    not sdk_internals.http_encoder_available(),
    reason="this SDK's OTLP/HTTP exporter is laid out otherwise: it keeps its own encoder "
           "(tests/test_sdk_internals.py checks that path)")


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Records each body and answers with the next status of ``statuses`` (then 200)."""

    server: _RecordingServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append(body)
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class _RecordingServer(http.server.ThreadingHTTPServer):
    def __init__(self, statuses: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.bodies: list[bytes] = []
        self.statuses = statuses

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


@pytest.fixture
def recording() -> Iterator[_RecordingServer]:
    server = _RecordingServer([])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_the_exporter_keeps_its_type_and_posts_the_sdks_bytes(
        recording: _RecordingServer) -> None:
    exporter = with_fast_http_encoder(HTTPSpanExporter(endpoint=recording.endpoint))
    assert type(exporter) is HTTPSpanExporter
    assert "export" in vars(exporter)  # its own export code, run with our encoder
    spans = [span(context=context(n), attributes={"n": n, "s": "x", "l": ["a", "b"]})
             for n in range(1, 4)]
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert recording.bodies == [encode_spans(spans).SerializePartialToString()]


def test_the_sdks_retry_sends_the_same_bytes_again(recording: _RecordingServer) -> None:
    recording.statuses.append(503)  # retryable: the SDK waits about a second, then retries
    exporter = with_fast_http_encoder(HTTPSpanExporter(endpoint=recording.endpoint))
    spans = [span(attributes={"a": "b"})]
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    expected = encode_spans(spans).SerializePartialToString()
    assert recording.bodies == [expected, expected]


def test_a_refused_request_fails_the_export(recording: _RecordingServer) -> None:
    recording.statuses.append(400)  # not retryable
    exporter = with_fast_http_encoder(HTTPSpanExporter(endpoint=recording.endpoint))
    try:
        assert exporter.export([span()]) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    assert len(recording.bodies) == 1


def test_a_subclass_keeps_its_own_export() -> None:
    class Custom(HTTPSpanExporter):
        pass

    exporter = with_fast_http_encoder(Custom(endpoint="http://127.0.0.1:9/v1/traces"))
    try:
        assert "export" not in vars(exporter)
    finally:
        exporter.shutdown()


def test_the_encoded_request_serializes_to_its_bytes() -> None:
    request = EncodedRequest(b"\x0a\x00")
    assert request.SerializePartialToString() == request.SerializeToString() == b"\x0a\x00"


def _publish_run(bus: EventBus) -> None:
    scope = Scope(run_id="run-http", agent="courier", session_id="conv-1")
    bus.publish_nowait(Event("agent.run.started", {"input": "héllo ✓"}, scope=scope))
    for index in range(5):
        call = {"tool_call_id": f"t{index}", "tool_name": "search"}
        bus.publish_nowait(Event("agent.tool.call.started", {**call, "arguments": {"q": index}},
                                 scope=scope))
        bus.publish_nowait(Event("agent.tool.call.completed",
                                 {**call, "is_error": index == 3, "tags": ["x", "y"]},
                                 scope=scope))
    bus.publish_nowait(Event("agent.run.completed", {"output": "ok"}, scope=scope))


def _plain(value: Any) -> Any:
    """An attribute value as the receiver's JSON gives it back."""
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("compression", ["none", "gzip", "deflate"])
def test_spans_arrive_intact_in_the_receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             compression: str) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", compression)
    memory = InMemorySpanExporter()
    with Receiver(tmp_path / "r.db") as receiver, fresh_global_tracer_provider():
        telemetry = configure(service_name="http-intact", endpoint=receiver.http_endpoint,
                              protocol="http/protobuf", metrics_enabled=False,
                              signal_handlers=False)
        forget(telemetry)
        try:
            assert telemetry.exporter is not None
            inner = telemetry.exporter.inner
            assert type(inner) is HTTPSpanExporter and "export" in vars(inner)
            assert inner._compression.value == compression  # the SDK read the variable
            telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
            _publish_run(telemetry.attach(EventBus()))
            assert telemetry.force_flush(timeout=30.0)
            stats = telemetry.export_stats()
        finally:
            telemetry.shutdown(timeout=10.0)
        sent: list[ReadableSpan] = list(memory.get_finished_spans())
        assert len(sent) >= 7
        assert stats["spans_exported"] == stats["spans_emitted"] and not stats[
            "spans_export_failed"]
        trace_ids = {format(s.context.trace_id, "032x") for s in sent if s.context}
        stored = {row.span_id: row for trace_id in trace_ids
                  for row in get_trace(receiver.db_path, trace_id).spans}
        with closing(sqlite3.connect(receiver.db_path)) as db:
            rows = db.execute("SELECT count(*) FROM spans").fetchone()[0]
    assert rows == len(sent)  # the run's pending record too
    finished = [s for s in sent if not (s.attributes or {}).get(sc.SPAN_PENDING)]
    assert len(stored) == len(finished)
    for sent_span in finished:
        assert sent_span.context is not None
        row = stored[format(sent_span.context.span_id, "016x")]
        parent = sent_span.parent
        assert row.parent_span_id == (format(parent.span_id, "016x") if parent else None)
        assert (row.name, row.start_ns, row.end_ns) == (
            sent_span.name, sent_span.start_time, sent_span.end_time)
        assert row.attributes == {k: _plain(v) for k, v in (sent_span.attributes or {}).items()}
        assert [(e.name, e.time_ns, e.attributes) for e in row.events] == [
            (e.name, e.timestamp, {k: _plain(v) for k, v in (e.attributes or {}).items()})
            for e in sent_span.events]
        assert sent_span.status.status_code.name in row.status_code
        assert row.service_name == "http-intact"
