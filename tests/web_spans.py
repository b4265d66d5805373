"""Spans for the web view's tests, stored through the receiver's own ingest (binary OTLP),
so the tests read what a real exporter would have written: runs, open runs (only their
pending record stored), failures, decisions, and hostile names."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from telemetry_helpers import proto_kv

from otel_agentbus.receiver.ingest import Ingest, Signal
from otel_agentbus.receiver.store import Store

BASE_NS = 1_790_000_000_000_000_000
MS = 1_000_000


@dataclass
class SpanSpec:
    span_id: int
    parent: int | None
    name: str
    start_ms: int
    end_ms: int
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    error: str | None = None

    def proto(self, trace: int) -> Span:
        span = Span(trace_id=trace.to_bytes(16, "big"), span_id=self.span_id.to_bytes(8, "big"),
                    name=self.name, start_time_unix_nano=BASE_NS + self.start_ms * MS,
                    end_time_unix_nano=BASE_NS + self.end_ms * MS)
        if self.parent is not None:
            span.parent_span_id = self.parent.to_bytes(8, "big")
        span.attributes.extend(proto_kv(k, v)
                               for k, v in self.attributes.items())
        for name, at_ms, attributes in self.events:
            event = span.events.add(name=name, time_unix_nano=BASE_NS + at_ms * MS)
            event.attributes.extend(proto_kv(k, v)
                                    for k, v in attributes.items())
        if self.error is not None:
            span.status.code = Status.STATUS_CODE_ERROR
            span.status.message = self.error
        return span


def trace_hex(trace: int) -> str:
    return trace.to_bytes(16, "big").hex()


def span_hex(span_id: int) -> str:
    return span_id.to_bytes(8, "big").hex()


def request_bytes(trace: int, specs: list[SpanSpec]) -> bytes:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.append(proto_kv("service.name", "web-tests"))
    resource.scope_spans.add().spans.extend(spec.proto(trace) for spec in specs)
    return bytes(request.SerializeToString())


def store_spans(store: Store, trace: int, specs: list[SpanSpec]) -> None:
    """Into a database directly (no receiver running on it)."""
    Ingest(store).export_protobuf(Signal.TRACES, request_bytes(trace, specs))


def export_spans(base_url: str, trace: int, specs: list[SpanSpec]) -> None:
    """To a running receiver, over OTLP/HTTP, as an exporter would."""
    status, _, body = get(f"{base_url}/v1/traces", {"Content-Type": "application/x-protobuf"},
                          method="POST", body=request_bytes(trace, specs))
    assert status == 200, body


def run_specs(index: int, *, agent: str = "researcher", failed: bool = False,
              tool: str = "search", start_ms: int | None = None,
              open_run: bool = False) -> list[SpanSpec]:
    """One run (trace ``index``): a node with a decision, a model call and a tool call;
    ``open_run`` stores only what an open run has exported (its pending record, the node)."""
    start = index * 1000 if start_ms is None else start_ms
    root = index * 100 + 1
    common = {"agentbus.run.id": f"run-{index:04d}", "gen_ai.agent.name": agent}
    node = SpanSpec(root + 1, root, "node act", start + 1, start + 80,
                    {**common, "gen_ai.operation.name": "invoke_workflow"},
                    events=[("agentbus.decision", start + 2,
                             {"agentbus.decision.chosen": tool,
                              "agentbus.decision.options": [tool, "answer"]})])
    chat = SpanSpec(root + 2, root + 1, "chat gpt-4o", start + 3, start + 30,
                    {**common, "gen_ai.operation.name": "chat",
                     "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10})
    tool_span = SpanSpec(root + 3, root + 1, f"execute_tool {tool}", start + 31, start + 79,
                         {**common, "gen_ai.operation.name": "execute_tool",
                          "gen_ai.tool.name": tool},
                         error="TimeoutError: no answer" if failed else None)
    if failed:
        node.events.append(("agentbus.problem", start + 79,
                            {"agentbus.problem.severity": "error"}))
    if open_run:
        pending = SpanSpec(root + 50, root, f"agentbus.pending invoke_agent {agent}", start,
                           start, {**common, "agentbus.span.pending": True})
        return [pending, node, chat]
    run = SpanSpec(root, None, f"invoke_agent {agent}", start, start + 100,
                   {**common, "gen_ai.operation.name": "invoke_agent",
                    "agentbus.run.status": "failed" if failed else "completed"},
                   error="TimeoutError: no answer" if failed else None)
    return [run, node, chat, tool_span]


def get(url: str, headers: dict[str, str] | None = None,
        method: str = "GET", body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request; HTTP errors are answers too. Redirects are not followed."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers=headers or {}, method=method, data=body)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, \
                response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, _, body = get(url, headers)
    return status, json.loads(body) if body else None
