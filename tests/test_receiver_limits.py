"""The receiver's bounds, in-process over real sockets: decompression caps, per-request
decode limits (both span decoders and OTLP/JSON alike), the HTTP connection cap, the
header, body and idle deadlines, and quiet, counted client disconnects."""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from google.rpc.status_pb2 import Status as RpcStatus  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_agentbus.receiver import Receiver
from otel_agentbus.receiver.convert import span_records
from otel_agentbus.receiver.decompress import (
    BadEncoding,
    DecompressLimits,
    TooLarge,
    decompress,
)
from otel_agentbus.receiver.fast_spans import fast_span_values
from otel_agentbus.receiver.ingest import Signal
from otel_agentbus.receiver.limits import DecodeBudget, DecodeLimits, HTTPLimits, LimitExceeded
from otel_agentbus.receiver.otlp_json import parse_json

pytestmark = pytest.mark.timeout(60)

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SMALL = DecodeLimits(max_span_attributes=8, max_span_events=3, max_span_links=2,
                     max_request_values=40, max_decoded_bytes=4096, max_json_nodes=400)
FAST = HTTPLimits(max_connections=4, header_timeout=0.5, body_timeout=0.5, idle_timeout=0.5)


def request(*spans: Span) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.extend(spans)
    return req


def span(index: int, attributes: int = 1, events: int = 0, links: int = 0,
         array: int = 0) -> Span:
    out = Span(trace_id=TRACE, span_id=(index + 1).to_bytes(8, "big"), name=f"s{index}",
               start_time_unix_nano=1, end_time_unix_nano=2,
               attributes=[KeyValue(key=f"k{i}", value=AnyValue(string_value=f"v{i}"))
                           for i in range(attributes)])
    if array:
        out.attributes.append(KeyValue(key="list", value=AnyValue(array_value=ArrayValue(
            values=[AnyValue(int_value=i) for i in range(array)]))))
    for i in range(events):
        out.events.add(name=f"e{i}", time_unix_nano=i)
    for i in range(links):
        out.links.add(trace_id=TRACE, span_id=(100 + i).to_bytes(8, "big"))
    return out


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path / "r.db", http_limits=FAST, decode_limits=SMALL) as r:
        yield r


def post(r: Receiver, body: bytes, content_type: str = "application/x-protobuf",
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=10)
    try:
        conn.request("POST", "/v1/traces", body=body,
                     headers={"Content-Type": content_type, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def connect(r: Receiver) -> socket.socket:
    return socket.create_connection(("127.0.0.1", r.http_port), timeout=5)


def closed_by_server(sock: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes; fails if it keeps the socket open."""
    sock.settimeout(within)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {within} s (got {data!r})")
    except ConnectionResetError:
        pass
    return data


# ---- decompression -------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(st.binary(max_size=3000), min_size=1, max_size=12),
       encoding=st.sampled_from(["gzip", "deflate"]))
def test_decompress_matches_zlib_member_by_member(parts: list[bytes], encoding: str) -> None:
    if encoding == "gzip":
        body = b"".join(gzip.compress(p) for p in parts)
        expected = b"".join(parts)
    else:
        body, expected = zlib.compress(parts[0]), parts[0]
    assert decompress(body, encoding, DecompressLimits(max_output=1 << 20)) == expected


def test_decompress_caps_members_ratio_and_size() -> None:
    members = gzip.compress(b"") * 2000
    with pytest.raises(TooLarge, match="more than 1024 members"):
        decompress(members, "gzip", DecompressLimits(max_output=1 << 20))
    assert decompress(members, "gzip", DecompressLimits(1 << 20, max_members=2000)) == b""
    bomb = gzip.compress(b"\0" * (4 << 20))
    with pytest.raises(TooLarge, match="expands more than 200 times"):
        decompress(bomb, "gzip", DecompressLimits(max_output=16 << 20))
    with pytest.raises(TooLarge, match="exceeds 1000 bytes"):
        decompress(gzip.compress(b"x" * 1001), "gzip", DecompressLimits(max_output=1000))
    with pytest.raises(BadEncoding, match="truncated gzip"):
        decompress(gzip.compress(b"abc")[:-3], "gzip", DecompressLimits(max_output=1000))
    with pytest.raises(BadEncoding, match="invalid deflate"):
        decompress(b"nonsense", "deflate", DecompressLimits(max_output=1000))


def test_many_members_over_http_is_413_and_counted(receiver: Receiver) -> None:
    body = gzip.compress(request(span(0)).SerializeToString()) + gzip.compress(b"") * 1100
    status, data = post(receiver, body, headers={"Content-Encoding": "gzip"})
    assert status == 413 and "members" in RpcStatus.FromString(data).message
    assert receiver.stats().over_limit == 1 and receiver.stats().spans == 0


# ---- decode limits -------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "words"), [
    ({"attributes": 9}, "9 attributes"),
    ({"events": 4}, "4 events"),
    ({"links": 3}, "3 links"),
    ({"array": 50}, "attribute values"),
])
def test_both_span_decoders_refuse_the_same_requests(shape: dict[str, int], words: str
                                                     ) -> None:
    req = request(span(0), span(1, **shape))
    data = req.SerializeToString()
    with pytest.raises(LimitExceeded, match=words):
        fast_span_values(data, DecodeBudget(SMALL))
    with pytest.raises(LimitExceeded, match=words):
        span_records(req, DecodeBudget(SMALL))


def test_request_wide_bounds_add_up_across_spans() -> None:
    # Each span is within bounds; together they pass the request's value count.
    req = request(*(span(i, attributes=8) for i in range(6)))
    with pytest.raises(LimitExceeded, match="more than 40 attribute values"):
        fast_span_values(req.SerializeToString(), DecodeBudget(SMALL))
    with pytest.raises(LimitExceeded, match="more than 40 attribute values"):
        span_records(req, DecodeBudget(SMALL))
    # Under the limits, both decoders give the same rows (and the default budget allows it).
    ok = request(*(span(i, attributes=4, events=1, links=1, array=2) for i in range(3)))
    fast = fast_span_values(ok.SerializeToString(), DecodeBudget(SMALL))
    assert fast is not None and fast.records() == span_records(ok, DecodeBudget(SMALL))
    big = DecodeLimits(max_decoded_bytes=100)
    with pytest.raises(LimitExceeded, match="decodes to more than 100 bytes"):
        span_records(ok, DecodeBudget(big))


def test_over_limit_refused_on_every_transport(receiver: Receiver) -> None:
    over = request(span(0, attributes=20))
    status, data = post(receiver, over.SerializeToString())
    assert status == 413 and "20 attributes" in RpcStatus.FromString(data).message
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": TRACE.hex(), "spanId": "0000000000000001", "name": "j",
        "attributes": [{"key": f"k{i}", "value": {"intValue": i}} for i in range(200)]}]}]}]}
    status, data = post(receiver, json.dumps(doc).encode(), "application/json")
    assert status == 413 and "application/x-protobuf" in json.loads(data)["message"]
    with pytest.raises(LimitExceeded, match="9 attributes"):  # under the JSON node bound
        doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = [  # type: ignore[index]
            {"key": f"k{i}", "value": {"intValue": i}} for i in range(9)]
        span_records(parse_json(Signal.TRACES, json.dumps(doc).encode(), 400),  # type: ignore[arg-type]
                     DecodeBudget(SMALL))
    with grpc.insecure_channel(receiver.grpc_address) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as caught:
            stub.Export(over, timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        stub.Export(request(span(5)), timeout=10)
    stats = receiver.stats()
    assert (stats.over_limit, stats.rejected, stats.spans) == (3, 3, 1)


# ---- connections and deadlines -------------------------------------------------------


def test_connection_cap_refuses_fast_and_keeps_serving_the_others(receiver: Receiver) -> None:
    held = [connect(receiver) for _ in range(FAST.max_connections)]
    try:
        time.sleep(0.1)  # let the server see them all
        extra = connect(receiver)
        answer = closed_by_server(extra, within=2)
        assert answer.startswith(b"HTTP/1.1 503") and b"connection limit of 4" in answer
        extra.close()
        assert receiver.stats().refused_connections >= 1
        # A held connection is still served, and gRPC is untouched.
        body = request(span(0)).SerializeToString()
        held[0].sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: "
                        b"application/x-protobuf\r\nContent-Length: "
                        + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert held[0].recv(65536).startswith(b"HTTP/1.1 200")
        with grpc.insecure_channel(receiver.grpc_address) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
            stub.Export(request(span(1)), timeout=10)
    finally:
        for sock in held:
            sock.close()
    assert receiver.stats().spans == 2


def test_header_body_and_idle_deadlines(receiver: Receiver) -> None:
    silent = connect(receiver)
    assert closed_by_server(silent, within=3) == b""  # never sent a request line
    partial = connect(receiver)
    partial.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")  # headers never end
    assert closed_by_server(partial, within=3) == b""
    slow = connect(receiver)
    slow.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{")
    answer = closed_by_server(slow, within=3)
    assert answer.startswith(b"HTTP/1.1 408") and b"not received within" in answer
    idle = connect(receiver)
    body = request(span(0)).SerializeToString()
    idle.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf"
                 b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert closed_by_server(idle, within=4).startswith(b"HTTP/1.1 200")  # then idle-closed
    for sock in (silent, partial, slow, idle):
        sock.close()


def test_malformed_request_gets_a_status_body(receiver: Receiver) -> None:
    sock = connect(receiver)
    sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    answer = closed_by_server(sock, within=3)
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and json.loads(body)["message"]


def test_disconnects_are_one_counted_debug_line(receiver: Receiver,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(3):
        sock = connect(receiver)
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/x-protobuf\r\nContent-Length: 1000\r\n\r\nabc")
        time.sleep(0.05)
        sock.close()
    deadline = time.monotonic() + 5
    while receiver.stats().disconnects < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert receiver.stats().disconnects == 3
    assert post(receiver, request(span(0)).SerializeToString())[0] == 200
    gone = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(gone) == 3 and all(r.levelno == logging.DEBUG for r in gone)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_stop_is_bounded_with_clients_mid_request(tmp_path: Path) -> None:
    r = Receiver(tmp_path / "s.db").start()
    idle = connect(r)
    hanging = connect(r)
    hanging.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: "
                    b"application/x-protobuf\r\nContent-Length: 1000\r\n\r\nabc")
    assert post(r, request(span(0)).SerializeToString())[0] == 200
    started = time.monotonic()
    r.stop(grace=0.5)
    took = time.monotonic() - started
    assert took < 5.0, took  # grace, then every connection dropped
    assert closed_by_server(idle, within=1) == b""
    closed_by_server(hanging, within=1)
    with pytest.raises(OSError):
        connect(r)
    idle.close()
    hanging.close()


def test_client_gone_during_a_slow_export_is_counted_quietly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The client gives up (closes) while its large export is being decoded and stored:
    the export is stored, the disconnect counted on one debug line, no traceback."""
    caplog.set_level(logging.DEBUG)
    with Receiver(tmp_path / "slow.db") as r:
        body = request(*(span(i, attributes=20) for i in range(20_000))).SerializeToString()
        sock = connect(r)
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/x-protobuf\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        sock.close()
        deadline = time.monotonic() + 30
        while r.stats().disconnects < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.stats().disconnects == 1 and r.stats().spans == 20_000
    gone = [rec for rec in caplog.records if "disconnected" in rec.getMessage()]
    assert len(gone) == 1 and "stored" in gone[0].getMessage()
    assert not [rec for rec in caplog.records if rec.exc_info or rec.levelno >= logging.ERROR]
