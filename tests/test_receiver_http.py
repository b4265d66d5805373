"""The receiver in-process: OTLP/HTTP encodings and errors, gRPC errors, storage and queries."""

from __future__ import annotations

import gzip
import http.client
import json
import math
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from google.rpc.status_pb2 import Status as RpcStatus  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from telemetry_helpers import proto_kv, proto_value

from otel_agentbus.receiver import (
    Receiver,
    TraceNotFoundError,
    get_trace,
    list_runs,
    log_records,
    metric_points,
)
from otel_agentbus.receiver.convert import any_value
from otel_agentbus.receiver.render import format_runs, format_trace

pytestmark = pytest.mark.timeout(30)

TRACE = "5b8efff798038103d269b633813fc60c"
TRACE2 = "0af7651916cd43dd8448eb211c80319c"
MAX_BODY = 64 * 1024


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path / "recv.db", max_body=MAX_BODY) as r:
        yield r


def _span(
    span_id: str,
    name: str,
    *,
    trace_id: str = TRACE,
    parent: str | None = None,
    start: int = 1_000,
    end: int = 2_000,
    attrs: dict[str, Any] | None = None,
    error: bool = False,
) -> Span:
    return Span(
        trace_id=bytes.fromhex(trace_id),
        span_id=bytes.fromhex(span_id),
        parent_span_id=bytes.fromhex(parent) if parent else b"",
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=[proto_kv(k, v) for k, v in (attrs or {}).items()],
        status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_UNSET),
    )


def _request(*spans: Span, service: str = "svc") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(proto_kv("service.name", service))
    rs.scope_spans.add().spans.extend(spans)
    return req


def _agent(run_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "planner",
        "agentbus.run.id": run_id,
        **extra,
    }


def _post(
    receiver: Receiver,
    path: str,
    body: bytes,
    content_type: str | None = "application/x-protobuf",
    headers: dict[str, str] | None = None,
    method: str = "POST",
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, bytes, http.client.HTTPResponse]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", receiver.http_port, timeout=10)
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    conn.request(method, path, body=body, headers=all_headers)
    resp = conn.getresponse()
    data = resp.read()
    if own:
        conn.close()
    return resp.status, data, resp


def _stub(channel: Any) -> Any:
    return trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]


def _span_count(receiver: Receiver) -> int:
    with sqlite3.connect(receiver.db_path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0])


# ---- OTLP/HTTP encodings -----------------------------------------------------------


def test_otlp_json_traces_with_hex_ids(receiver: Receiver) -> None:
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [
                    {"key": "service.name", "value": {"stringValue": "js"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "json-scope", "version": "1.0"},
                        "spans": [
                            {
                                "traceId": TRACE.upper(),
                                "spanId": "051581bf3cb55c13",
                                "name": "invoke_agent planner",
                                "kind": 2,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000250000000",
                                "attributes": [
                                    {"key": "gen_ai.operation.name",
                                     "value": {"stringValue": "invoke_agent"}},
                                    {"key": "agentbus.run.id", "value": {"stringValue": "rj"}},
                                    {"key": "n", "value": {"intValue": "7"}},
                                    {"key": "ratio", "value": {"doubleValue": 0.5}},
                                    {"key": "ok", "value": {"boolValue": True}},
                                    {"key": "tags", "value": {"arrayValue": {"values": [
                                        {"stringValue": "a"}, {"intValue": 2}]}}},
                                    {"key": "obj", "value": {"kvlistValue": {"values": [
                                        {"key": "k", "value": {"stringValue": "v"}}]}}},
                                    {"key": "raw", "value": {"bytesValue": "AAEC"}},
                                ],
                                "events": [
                                    {"timeUnixNano": "1700000000100000000",
                                     "name": "agentbus.decision",
                                     "attributes": [{"key": "choice",
                                                     "value": {"stringValue": "x"}}]}
                                ],
                                "status": {"code": 2, "message": "bad"},
                                "futureField": {"ignored": True},
                            },
                            {
                                "traceId": TRACE,
                                "spanId": "1111111111111111",
                                "parentSpanId": "051581bf3cb55c13",
                                "name": "execute_tool search",
                                "kind": "SPAN_KIND_CLIENT",
                                "startTimeUnixNano": 1700000000010000000,
                                "endTimeUnixNano": 1700000000020000000,
                                "links": [{"traceId": TRACE2, "spanId": "2222222222222222"}],
                            },
                        ],
                    }
                ],
            }
        ]
    }  # fmt: skip
    status, data, resp = _post(
        receiver, "/v1/traces", json.dumps(body).encode(), "application/json"
    )
    assert status == 200, data
    assert resp.getheader("Content-Type") == "application/json"
    assert json.loads(data) == {}

    tree = get_trace(receiver.db_path, TRACE)
    root = tree.span("051581bf3cb55c13")
    assert root.kind == "SERVER" and root.status_code == "ERROR" and root.status_message == "bad"
    assert root.start_ns == 1_700_000_000_000_000_000 and root.duration_ms == pytest.approx(250.0)
    assert root.attributes == {
        "gen_ai.operation.name": "invoke_agent",
        "agentbus.run.id": "rj",
        "n": 7,
        "ratio": 0.5,
        "ok": True,
        "tags": ["a", 2],
        "obj": {"k": "v"},
        "raw": "AAEC",
    }
    assert root.events[0].name == "agentbus.decision" and root.events[0].attributes == {
        "choice": "x"
    }
    assert root.service_name == "js" and root.scope_name == "json-scope"
    child = tree.span("1111111111111111")
    assert child.parent_span_id == root.span_id and child.kind == "CLIENT"
    assert child.links[0]["trace_id"] == TRACE2 and child.links[0]["span_id"] == "2" * 16
    assert [c.span.span_id for c in tree.roots[0].children] == ["1111111111111111"]
    (run,) = list_runs(receiver.db_path)
    assert (run.run_id, run.status, run.span_count) == ("rj", "failed", 2)


def test_otlp_json_metrics_and_logs(receiver: Receiver) -> None:
    metrics = {
        "resourceMetrics": [{"scopeMetrics": [{"metrics": [
            {"name": "queue.depth", "unit": "1", "gauge": {"dataPoints": [
                {"timeUnixNano": "5", "asDouble": 2.5,
                 "attributes": [{"key": "q", "value": {"stringValue": "main"}}],
                 "exemplars": [{"timeUnixNano": "4", "asInt": "3", "traceId": TRACE,
                                "spanId": "051581bf3cb55c13"}]}]}},
            {"name": "latency", "summary": {"dataPoints": [
                {"timeUnixNano": "6", "count": "2", "sum": 3.0,
                 "quantileValues": [{"quantile": 0.5, "value": 1.5}]}]}},
        ]}]}]
    }  # fmt: skip
    status, data, _ = _post(
        receiver, "/v1/metrics", json.dumps(metrics).encode(), "application/json; charset=utf-8"
    )
    assert status == 200, data
    (gauge,) = metric_points(receiver.db_path, "queue.depth")
    assert (gauge.type, gauge.value, gauge.attributes) == ("gauge", 2.5, {"q": "main"})
    assert gauge.exemplars[0]["trace_id"] == TRACE and gauge.exemplars[0]["value"] == 3
    (summary,) = metric_points(receiver.db_path, "latency")
    assert summary.type == "summary" and summary.histogram == {
        "count": 2,
        "sum": 3.0,
        "quantile_values": [{"quantile": 0.5, "value": 1.5}],
    }

    logs = {
        "resourceLogs": [{"scopeLogs": [{"logRecords": [
            {"timeUnixNano": "10", "severityNumber": 17, "severityText": "ERROR",
             "body": {"stringValue": "boom"}, "traceId": TRACE, "spanId": "051581bf3cb55c13"},
            {"observedTimeUnixNano": "11", "body": {"kvlistValue": {"values": []}}},
        ]}]}]
    }  # fmt: skip
    status, data, _ = _post(receiver, "/v1/logs", json.dumps(logs).encode(), "application/json")
    assert status == 200, data
    (err,) = log_records(receiver.db_path, trace_id=TRACE)
    assert (err.body, err.severity_number, err.span_id) == ("boom", 17, "051581bf3cb55c13")
    assert [r.body for r in log_records(receiver.db_path)] == ["boom", {}]


def test_protobuf_and_gzip_over_http(receiver: Receiver) -> None:
    body = _request(_span("aaaaaaaaaaaaaaaa", "plain")).SerializeToString()
    status, data, resp = _post(receiver, "/v1/traces", body)
    assert status == 200 and resp.getheader("Content-Type") == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(data) == ExportTraceServiceResponse()

    zipped = gzip.compress(_request(_span("bbbbbbbbbbbbbbbb", "zipped")).SerializeToString())
    status, data, _ = _post(receiver, "/v1/traces", zipped, headers={"Content-Encoding": "gzip"})
    assert status == 200, data
    assert {s.name for s in get_trace(receiver.db_path, TRACE).spans} == {"plain", "zipped"}
    assert receiver.stats().spans == 2


# ---- OTLP/HTTP errors ----------------------------------------------------------------


def test_http_rejections_store_nothing(receiver: Receiver) -> None:
    good = _request(_span("aaaaaaaaaaaaaaaa", "ok")).SerializeToString()
    bad_len = _request(
        _span("aaaaaaaaaaaaaaaa", "fine"), Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 3)
    ).SerializeToString()
    bomb = gzip.compress(b"\x00" * (MAX_BODY * 4))
    assert len(bomb) < MAX_BODY
    cases: list[tuple[int, str, bytes, str | None, dict[str, str]]] = [
        (400, "/v1/traces", b"\xff\xff\xff not protobuf", "application/x-protobuf", {}),
        (400, "/v1/traces", bad_len, "application/x-protobuf", {}),  # atomic: 1st span dropped
        (400, "/v1/traces", b'{"resourceSpans": [', "application/json", {}),
        (400, "/v1/traces", b"[1, 2]", "application/json", {}),
        (
            400,
            "/v1/traces",
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"00"}]}]}]}',
            "application/json",
            {},
        ),
        (400, "/v1/traces", b"not gzip", "application/x-protobuf", {"Content-Encoding": "gzip"}),
        (415, "/v1/traces", good, "text/plain", {}),
        (415, "/v1/traces", good, None, {}),
        (415, "/v1/traces", good, "application/x-protobuf", {"Content-Encoding": "br"}),
        (413, "/v1/traces", b"\x00" * (MAX_BODY + 1), "application/x-protobuf", {}),
        (413, "/v1/traces", bomb, "application/x-protobuf", {"Content-Encoding": "gzip"}),
        (404, "/v1/spans", good, "application/x-protobuf", {}),
    ]
    # All on one keep-alive connection: rejections must not desynchronise it.
    conn = http.client.HTTPConnection("127.0.0.1", receiver.http_port, timeout=10)
    for expected, path, body, ctype, headers in cases:
        status, data, resp = _post(receiver, path, body, ctype, headers, conn=conn)
        assert status == expected, (expected, path, ctype, headers, data)
        if ctype == "application/x-protobuf":
            assert RpcStatus.FromString(data).message
        else:
            assert json.loads(data)["message"]
    status, _, resp = _post(receiver, "/v1/traces", b"", None, method="GET", conn=conn)
    assert status == 405 and resp.getheader("Allow") == "POST"
    assert _span_count(receiver) == 0
    assert receiver.stats().rejected == len(cases) + 1

    # Still serving, on the same connection.
    status, _, _ = _post(receiver, "/v1/traces", good, conn=conn)
    conn.close()
    assert status == 200 and _span_count(receiver) == 1


def test_token_http_and_grpc(tmp_path: Path) -> None:
    with Receiver(tmp_path / "t.db", token="tok") as r:
        body = _request(_span("aaaaaaaaaaaaaaaa", "x")).SerializeToString()
        assert _post(r, "/v1/traces", body)[0] == 401
        assert _post(r, "/v1/traces", body, headers={"Authorization": "Basic tok"})[0] == 401
        assert _post(r, "/v1/traces", body, headers={"Authorization": "Bearer tok"})[0] == 200
        with grpc.insecure_channel(r.grpc_address) as channel:
            stub = _stub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(_request(), metadata=(("authorization", "Bearer wrong"),), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            stub.Export(
                _request(_span("bbbbbbbbbbbbbbbb", "y")),
                metadata=(("authorization", "Bearer tok"),),
                timeout=5,
            )
        assert _span_count(r) == 2 and r.stats().rejected == 3


def test_grpc_invalid_ids_rejected_atomically(receiver: Receiver) -> None:
    bad = _request(_span("aaaaaaaaaaaaaaaa", "ok"), Span(trace_id=b"\x01" * 5, span_id=b"\x02" * 8))
    with grpc.insecure_channel(receiver.grpc_address) as channel:
        stub = _stub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Export(bad, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "trace_id" in info.value.details()
    assert _span_count(receiver) == 0


# ---- storage ---------------------------------------------------------------------------


def test_db_file_private_and_wal(receiver: Receiver) -> None:
    assert stat.S_IMODE(receiver.db_path.stat().st_mode) == 0o600
    with sqlite3.connect(receiver.db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_any_value_conversion() -> None:
    assert any_value(proto_value("s")) == "s"
    assert any_value(proto_value(True)) is True
    assert any_value(proto_value(-(2**63))) == -(2**63)
    assert any_value(proto_value(1.25)) == 1.25
    assert any_value(proto_value(b"\x00\xff")) == "AP8="
    assert any_value(proto_value([1, "a", [False]])) == [1, "a", [False]]
    assert any_value(proto_value({"a": {"b": [1.5]}})) == {"a": {"b": [1.5]}}
    assert any_value(AnyValue()) is None
    assert any_value(proto_value(math.nan)) == "NaN"
    assert any_value(proto_value(-math.inf)) == "-Infinity"


def test_pending_records_upsert(receiver: Receiver) -> None:
    root, child = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"
    pending = {"agentbus.span.pending": True}
    with grpc.insecure_channel(receiver.grpc_address) as channel:
        export = _stub(channel).Export
        export(_request(_span(root, "invoke_agent planner", attrs=_agent("r9", **pending))))
        export(_request(_span(child, "execute_tool t", parent=root, start=1_100, end=1_900)))
        (run,) = list_runs(receiver.db_path)
        assert (run.run_id, run.status, run.duration_s) == ("r9", "running", None)
        assert run.span_count == 1
        assert get_trace(receiver.db_path, TRACE).span(root).in_progress

        export(_request(_span(root, "invoke_agent planner", attrs=_agent("r9"), error=True)))
        # A late placeholder must not undo the finished span.
        export(_request(_span(root, "invoke_agent planner", attrs=_agent("r9", **pending))))
    (run,) = list_runs(receiver.db_path)
    assert (run.status, run.duration_s, run.span_count) == ("failed", 1e-6, 2)
    tree = get_trace(receiver.db_path, TRACE)
    assert len(tree.spans) == 2 and not tree.span(root).in_progress


def test_list_runs_top_level_only(receiver: Receiver) -> None:
    remote_parent = "cccccccccccccccc"
    spans = [
        _span("aaaaaaaaaaaaaaaa", "invoke_agent a", parent=remote_parent, attrs=_agent("ra")),
        _span("bbbbbbbbbbbbbbbb", "invoke_agent sub", parent="aaaaaaaaaaaaaaaa", start=1_500,
              attrs=_agent("rsub")),
        _span("dddddddddddddddd", "invoke_agent b", trace_id=TRACE2, start=500,
              attrs=_agent("rb", **{"agentbus.run.status": "cancelled"})),
        _span("eeeeeeeeeeeeeeee", "chat", start=10, attrs={"gen_ai.operation.name": "chat"}),
    ]  # fmt: skip
    with grpc.insecure_channel(receiver.grpc_address) as channel:
        _stub(channel).Export(_request(*spans))
    runs = list_runs(receiver.db_path)
    assert [(r.run_id, r.status, r.span_count) for r in runs] == [
        ("rb", "cancelled", 1),
        ("ra", "completed", 3),
    ]
    table = format_runs(runs).splitlines()
    # list_runs is oldest first; the table (like `runs --json` and the demo) newest first
    assert table[0].split()[:3] == ["RUN", "ID", "AGENT"] and table[1].startswith("ra")


def test_trace_tree_orphans_and_order(receiver: Receiver) -> None:
    spans = [
        _span("000000000000000b", "late child", parent="000000000000000a", start=300),
        _span("000000000000000c", "early child", parent="000000000000000a", start=200),
        _span("000000000000000a", "root", start=100, end=400),
        _span("000000000000000d", "orphan", parent="00000000000000ff", start=50),
    ]
    with grpc.insecure_channel(receiver.grpc_address) as channel:
        _stub(channel).Export(_request(*spans))
    tree = get_trace(receiver.db_path, TRACE.upper())
    assert [n.span.name for n in tree.roots] == ["orphan", "root"]
    assert [c.span.name for c in tree.roots[1].children] == ["early child", "late child"]
    assert [s.name for s in tree.spans] == ["orphan", "root", "early child", "late child"]
    text = format_trace(tree)
    assert "\n  early child" in text and "\norphan" in text


def test_query_errors(receiver: Receiver, tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(FileNotFoundError) as nf:
        list_runs(missing)
    assert str(missing) in str(nf.value) and not missing.exists()
    with pytest.raises(TraceNotFoundError) as tnf:
        get_trace(receiver.db_path, TRACE)
    assert isinstance(tnf.value, KeyError) and TRACE in str(tnf.value)
    with pytest.raises(ValueError, match="32 hex"):
        get_trace(receiver.db_path, "1234")


def test_logs_empty_ids_stored_as_null(receiver: Receiver) -> None:
    req = ExportLogsServiceRequest()
    rec = req.resource_logs.add().scope_logs.add().log_records.add()
    rec.body.string_value = "no trace"
    status, data, _ = _post(receiver, "/v1/logs", req.SerializeToString())
    assert status == 200, data
    (record,) = log_records(receiver.db_path)
    assert (record.body, record.trace_id, record.span_id) == ("no trace", None, None)
    assert receiver.stats().log_records == 1
