"""The receiver subprocess fed hypothesis-generated garbage over real HTTP and gRPC:
random bytes, valid requests with bytes flipped, cut or inserted, malformed JSON, wrong
content types and encodings, gzip of garbage, oversized bodies.

Each request gets a clear answer (HTTP 200 or 4xx with a status body; gRPC OK,
INVALID_ARGUMENT or RESOURCE_EXHAUSTED), never a 5xx or a dropped connection; a rejected
request stores nothing and an accepted one stores all its spans (no request is stored
half-way); after each one the receiver still serves a valid request.
"""

from __future__ import annotations

import gzip
import http.client
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from google.rpc.status_pb2 import Status as RpcStatus  # type: ignore[import-untyped]
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from reliability_helpers import SERVICES, db_counts, start_receiver_at
from telemetry_helpers import Receiver

from otel_agentbus.receiver.convert import MalformedRequest
from otel_agentbus.receiver.ingest import Signal
from otel_agentbus.receiver.otlp_json import parse_json

pytestmark = pytest.mark.timeout(180)

MAX_BODY = 64 * 1024
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver_at(tmp_path_factory.mktemp("garbage"),
                                extra=("--max-body", str(MAX_BODY)))
    try:
        yield started
    finally:
        started.stop()


def valid_request(seed: int, spans: int = 2) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i in range(spans):
        scope.spans.append(Span(
            trace_id=seed.to_bytes(16, "big"), span_id=(seed * 8 + i + 1).to_bytes(8, "big"),
            name=f"span {i}", start_time_unix_nano=1, end_time_unix_nano=2))
    return bytes(request.SerializeToString())


VALID_JSON = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{
    "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "051581bf3cb55c13",
    "name": "json span", "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]}).encode()


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at]
    return bytes(data)


BODIES = st.one_of(
    st.binary(max_size=300),
    mutated(valid_request(7)),
    mutated(VALID_JSON),
    st.builds(lambda n: b"\x00" * n, st.integers(MAX_BODY - 10, MAX_BODY + 5000)),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.sampled_from(["resourceSpans", "scopeSpans", "spans",
                                                    "traceId", "spanId", "name", "x"]),
                                   inner, max_size=3), max_leaves=15
                 ).map(lambda doc: json.dumps(doc).encode()),
    st.just(b"[" * 50_000),
)
CONTENT_TYPES = st.one_of(
    st.sampled_from(["application/x-protobuf", "application/json"]),
    st.sampled_from(["application/json; charset=utf-8", "application/x-protobuf; x=y",
                     "text/plain", None, "multipart/form-data", "\x7f"]))
ENCODINGS = st.one_of(st.just(""), st.sampled_from(["gzip", "deflate", "br", "gzip-bogus"]))
PATHS = st.one_of(st.just("/v1/traces"),
                  st.sampled_from(["/v1/metrics", "/v1/logs", "/v2/traces", "/v1/traces?x=1",
                                   "/"]))


def span_keys(db: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return {(t, s) for t, s in conn.execute("SELECT trace_id, span_id FROM spans")}


def decoded_spans(body: bytes, content_type: str | None, encoding: str) -> set[tuple[str, str]]:
    """The spans an accepted traces request holds (decoded here, independently)."""
    if encoding in ("gzip", "deflate"):
        import zlib

        body = zlib.decompress(body, 16 + zlib.MAX_WBITS if encoding == "gzip" else 15)
    try:
        if (content_type or "").startswith("application/json"):
            request: Any = parse_json(Signal.TRACES, body)
        else:
            request = ExportTraceServiceRequest.FromString(body)
    except (MalformedRequest, Exception):
        return set()
    return {(s.trace_id.hex(), s.span_id.hex()) for rs in request.resource_spans
            for ss in rs.scope_spans for s in ss.spans}


def post(receiver: Receiver, path: str, body: bytes, headers: dict[str, str]
         ) -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", int(receiver.ready["http"].rsplit(":")[1]),
                                      timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("Content-Type") or ""
    finally:
        conn.close()


def still_serves_http(receiver: Receiver, seed: int) -> None:
    status, data, _ = post(receiver, "/v1/traces", valid_request(seed, 1),
                           {"Content-Type": "application/x-protobuf"})
    assert status == 200, data


@SETTINGS
@given(body=BODIES, content_type=CONTENT_TYPES, encoding=ENCODINGS, path=PATHS,
       compress=st.booleans(), seed=st.integers(10**6, 10**9))
def test_http_garbage(receiver: Receiver, body: bytes, content_type: str | None,
                      encoding: str, path: str, compress: bool, seed: int) -> None:
    if compress and encoding in ("gzip", "gzip-bogus"):
        body = gzip.compress(body)
    headers = {} if content_type is None else {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding.replace("-bogus", "")
    counts, keys = db_counts(receiver.db), span_keys(receiver.db)
    status, data, answer_type = post(receiver, path, body, headers)
    assert status in (200, 400, 404, 413, 415), (status, data[:200])
    event(f"HTTP {status}")
    if status == 200:
        if path.startswith("/v1/traces"):  # all of its spans stored, none half-way
            expected = decoded_spans(body, content_type, headers.get("Content-Encoding", ""))
            assert expected <= span_keys(receiver.db)
    else:
        assert db_counts(receiver.db) == counts  # nothing stored
        assert span_keys(receiver.db) == keys
        if answer_type == "application/x-protobuf":
            assert RpcStatus.FromString(data).message
        else:
            assert json.loads(data)["message"]
    still_serves_http(receiver, seed)


@SETTINGS
@given(body=BODIES, service=st.sampled_from(sorted(SERVICES)), seed=st.integers(10**6, 10**9))
def test_grpc_garbage(receiver: Receiver, body: bytes, service: str, seed: int) -> None:
    counts = db_counts(receiver.db)
    with grpc.insecure_channel(receiver.ready["grpc"]) as channel:
        export = channel.unary_unary(f"/{SERVICES[service]}/Export", request_serializer=None,
                                     response_deserializer=None)
        try:
            export(body, timeout=30)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
            assert error.details()
        event(f"gRPC {code.name}")
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
                        grpc.StatusCode.RESOURCE_EXHAUSTED), code
        if code is not grpc.StatusCode.OK:
            assert db_counts(receiver.db) == counts
        elif service == "traces":
            assert decoded_spans(body, None, "") <= span_keys(receiver.db)
        traces = channel.unary_unary(f"/{SERVICES['traces']}/Export",
                                     request_serializer=None, response_deserializer=None)
        traces(valid_request(seed, 1), timeout=30)  # still serving


def test_receiver_survived(receiver: Receiver) -> None:
    """After all of it: the process is alive and its database is sound."""
    assert receiver.proc.poll() is None
    with sqlite3.connect(receiver.db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
