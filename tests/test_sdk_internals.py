"""The SDK shortcuts of ``telemetry/sdk_internals.py`` and their public fallbacks.

``OTEL_AGENTBUS_SDK_INTERNALS=off`` forces every fallback (it is read at import, so each
mode runs in a fresh interpreter); the same events must then export the same spans and the
same OTLP request as with the shortcuts.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from telemetry_helpers import child_env, run_python

from otel_agentbus.telemetry import sdk_internals

# A fixed run (seeded ids, explicit event ids and times) mirrored into memory, then the
# OTLP/gRPC request configure()'s exporter would send for those spans, the body its
# OTLP/HTTP exporter posts to a server that records it, and what the SDK's own encoder
# makes of them.
SCENARIO = textwrap.dedent("""
    import http.server, json, random, threading
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from otel_agentbus import Event, EventBus, Scope, configure
    from otel_agentbus.telemetry import sdk_internals
    from otel_agentbus.telemetry.config import _span_exporter
    from otel_agentbus.telemetry.exporter_env import resolve_target
    from otel_agentbus.telemetry.exporter_env import resolve_target

    random.seed(11)
    memory = InMemorySpanExporter()
    bus = EventBus()
    telemetry = configure(service_name="same-either-way", span_exporter=memory,
                          resource_attributes={"service.instance.id": "fixed"},
                          metrics_enabled=False, signal_handlers=False, bus=bus)
    scope = Scope(run_id="r", agent="a", session_id="c")
    t = 1_700_000_000_000_000_000
    events = [Event("agent.run.started", {"input": "hi"}, scope=scope, id="e0", time_ns=t)]
    for n in range(3):
        call = {"tool_call_id": f"t{n}", "tool_name": "search"}
        events.append(Event("agent.tool.call.started", {**call, "arguments": {"q": n}},
                            scope=scope, id=f"s{n}", time_ns=t + 10 * n + 1))
        events.append(Event("agent.tool.call.completed",
                            {**call, "is_error": n == 1, "tags": ["x", None]},
                            scope=scope, id=f"c{n}", time_ns=t + 10 * n + 5))
    events.append(Event("agent.run.completed", {"output": "ok"}, scope=scope, id="e9",
                        time_ns=t + 100))
    for event in events:
        bus.publish_nowait(event)
    telemetry.shutdown()
    spans = sorted(memory.get_finished_spans(), key=lambda s: (s.start_time, s.name))
    exporter = _span_exporter("otlp", resolve_target(
        "traces", endpoint="http://127.0.0.1:9", protocol="grpc"))
    request = exporter._translate_data(spans)
    exporter.shutdown()

    bodies = []
    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])).hex())
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    http_exporter = _span_exporter("otlp", resolve_target(
        "traces", endpoint=f"http://127.0.0.1:{server.server_address[1]}",
        protocol="http/protobuf"))
    http_result = http_exporter.export(spans)
    http_exporter.shutdown()
    server.shutdown()
    print(json.dumps({
        "paths": sdk_internals.fast_paths(),
        "request": request.hex() if type(request) is bytes else request.SerializeToString().hex(),
        "sdk": encode_spans(spans).SerializeToString().hex(),
        "http_encoder": "export" in vars(http_exporter),
        "http_result": http_result.name,
        "http_bodies": bodies,
        "http_sdk": encode_spans(spans).SerializePartialToString().hex(),
        "spans": [[s.name, s.context.span_id, s.parent.span_id if s.parent else None,
                   s.start_time, s.end_time, dict(s.attributes), len(s.events),
                   s.status.status_code.name] for s in spans],
    }))
""")


def _run(forced_off: bool) -> dict[str, Any]:
    env = child_env()
    env.pop("OTEL_AGENTBUS_SDK_INTERNALS", None)
    if forced_off:
        env["OTEL_AGENTBUS_SDK_INTERNALS"] = "off"
    return run_python(SCENARIO, env=env)


def _request(hex_bytes: str) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(bytes.fromhex(hex_bytes))


def test_forcing_the_public_paths_gives_the_same_export() -> None:
    fast, public = _run(forced_off=False), _run(forced_off=True)
    assert public["paths"] == {"fast_encoder": False, "http_encoder": False,
                               "encodes_nulls": False,
                               "span_containers": False, "readable_span_positional": False,
                               "batch_drop_hooks": False,
                               "active_span_processor": sdk_internals.ACTIVE_SPAN_PROCESSOR}
    assert len(fast["spans"]) >= 5
    assert public["spans"] == fast["spans"]
    # The request each mode's exporter sends is what the SDK's own encoder makes of the spans.
    assert _request(public["request"]) == _request(public["sdk"])
    assert _request(fast["request"]) == _request(fast["sdk"])
    assert _request(fast["request"]) == _request(public["request"])
    # Over OTLP/HTTP, the body each mode posts is byte for byte the SDK's own.
    assert fast["http_encoder"] is fast["paths"]["http_encoder"]
    assert public["http_encoder"] is False
    assert fast["http_result"] == public["http_result"] == "SUCCESS"
    assert fast["http_bodies"] == [fast["http_sdk"]]
    assert public["http_bodies"] == [public["http_sdk"]]
    assert fast["http_bodies"] == public["http_bodies"]


def test_the_fallbacks_are_what_the_module_uses_when_forced_off() -> None:
    result = run_python(textwrap.dedent("""
        import json
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import ReadableSpan
        from otel_agentbus.telemetry import sdk_internals
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HTTPSpanExporter,
        )
        from otel_agentbus.telemetry.otlp import with_fast_encoder
        from otel_agentbus.telemetry.otlp_http import with_fast_http_encoder

        exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:9", insecure=True)
        plain_translate = type(exporter)._translate_data
        with_fast_encoder(exporter)
        http_exporter = with_fast_http_encoder(HTTPSpanExporter(endpoint="http://127.0.0.1:9"))
        print(json.dumps({
            "keyword_span": sdk_internals.new_readable_span is not ReadableSpan,
            "encoder_kept": "_translate_data" not in vars(exporter)
                            and type(exporter)._translate_data is plain_translate,
            "stub_kept": type(exporter._client).__name__ == "TraceServiceStub",
            "http_export_kept": "export" not in vars(http_exporter)
                                and type(http_exporter) is HTTPSpanExporter,
        }))
        exporter.shutdown()
        http_exporter.shutdown()
    """), env={**child_env(), "OTEL_AGENTBUS_SDK_INTERNALS": "off"})
    assert result["keyword_span"] and result["encoder_kept"] and result["stub_kept"]
    assert result["http_export_kept"]


@pytest.mark.skipif(not sdk_internals.READABLE_SPAN_POSITIONAL,
                    reason="this SDK's ReadableSpan takes other positional arguments")
def test_the_fast_span_constructor_is_the_sdks() -> None:
    from opentelemetry.sdk.trace import ReadableSpan

    assert sdk_internals.new_readable_span is ReadableSpan


def test_the_keyword_constructor_builds_the_same_span() -> None:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from telemetry_helpers import context

    arguments = ("n", context(1), context(2), None, {"a": 1}, (), (), SpanKind.CLIENT, None,
                 Status(StatusCode.OK), 5, 9, None)
    by_keyword = sdk_internals._readable_span_by_keyword(*arguments)
    by_sdk = ReadableSpan(name="n", context=context(1), parent=context(2), attributes={"a": 1},
                          kind=SpanKind.CLIENT, status=Status(StatusCode.OK), start_time=5,
                          end_time=9)
    assert by_keyword.to_json() == by_sdk.to_json()


def test_an_application_provider_without_a_public_processor_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from otel_agentbus.telemetry import config

    monkeypatch.setattr(sdk_internals, "ACTIVE_SPAN_PROCESSOR", False)
    with pytest.raises(config.ConfigurationError, match="span processor"):
        config._span_processor_of(TracerProvider(shutdown_on_exit=False), None)
