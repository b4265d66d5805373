"""The receiver's fast trace decoding stores exactly the rows the reference path does."""

from __future__ import annotations

import logging
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace import Status as SdkStatus
from opentelemetry.trace import StatusCode as SdkStatusCode
from opentelemetry.trace.span import TraceState
from telemetry_helpers import context, span

from otel_agentbus.receiver.convert import (
    SPAN_COLUMNS,
    MalformedRequest,
    SpanRecord,
    SpanValues,
    span_records,
)
from otel_agentbus.receiver.fast_spans import _simple_string, fast_span_values
from otel_agentbus.receiver.ingest import Ingest, Signal
from otel_agentbus.receiver.store import Store

PENDING = "agentbus.span.pending"


def reference(data: bytes) -> list[SpanRecord]:
    return span_records(ExportTraceServiceRequest.FromString(data))


def fast_span_records(data: bytes) -> list[SpanRecord] | None:
    spans = fast_span_values(data)
    if spans is None:
        return None
    rows = spans.records()
    assert spans.count == len(rows) and len(spans.values) == len(rows) * SPAN_COLUMNS
    return rows


def same_rows(data: bytes) -> list[SpanRecord]:
    """The fast path took the request and built the reference rows."""
    rows = fast_span_records(data)
    assert rows is not None, "the fast path left an ordinary request to the reference path"
    assert rows == reference(data)
    return rows


def request(*spans: Span) -> bytes:
    """A request holding ``spans`` as given (protobuf objects, not SDK spans)."""
    message = ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(scope_spans=[ScopeSpans(spans=list(spans))])])
    encoded: bytes = message.SerializeToString()
    return encoded


def field(tag: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (payloads under 128 bytes)."""
    assert len(payload) < 128
    return bytes((tag, len(payload))) + payload


def wrap_span(span_bytes: bytes, resource: bytes = b"") -> bytes:
    """A request of one span given as bytes; ``resource`` is the ResourceSpans' own."""
    return field(0x0A, resource + field(0x12, field(0x12, span_bytes)))


def proto_span(span_id: bytes = b"\x01" * 8, **fields: Any) -> Span:
    return Span(trace_id=b"\x02" * 16, span_id=span_id, name="p", **fields)


def test_every_span_field() -> None:
    resource = Resource({"service.name": "svc", "n": 3}, schema_url="https://r")
    scope = InstrumentationScope("lib", "1.0", "https://s", {"a": "b"})
    same_rows(encode_spans([
        span(),
        span(name="", start_time=0, end_time=None),
        span(context=context(3, state=TraceState([("k", "v"), ("x", "y")])),
             parent=context(9, remote=True), kind=SpanKind.CLIENT, resource=resource,
             instrumentation_scope=scope,
             attributes={"s": "x", "b": True, "f": False, "i": -5, "big": 1 << 62,
                         "d": 1.5, "nan": float("nan"), "inf": -math.inf, "l": ["a", "b"],
                         "li": [1, 2], "mixed": [1, "a", None, 2.5, True], "empty": [],
                         "": "empty key", "u": "héllo ✓", "long": "x" * 300,
                         "quote": 'a"b\\c\n', "es": ""},
             events=(SpanEvent("e", {"k": 1}, 5), SpanEvent("", None, 0)),
             links=(Link(context(7, remote=True), {"l": "v"}), Link(context(8))),
             status=SdkStatus(SdkStatusCode.ERROR, "boom")),
        span(parent=context(9), status=SdkStatus(SdkStatusCode.OK)),
        span(resource=resource, instrumentation_scope=None),
    ]).SerializeToString())


@pytest.mark.parametrize("flag", [True, False, "true", "1", "no", 1, 0, 2.0])
def test_pending_flag(flag: Any) -> None:
    rows = same_rows(encode_spans([span(attributes={"a": "b", PENDING: flag})])
                     .SerializeToString())
    assert rows[0].pending == (1 if flag in (True, "true", "1", 1) else 0)


def test_repeated_keys_keep_the_first_position_and_the_last_value() -> None:
    pairs = [("a", "1"), ("b", "2"), ("a", "3"), (PENDING, "true"), (PENDING, "false")]
    attributes = [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in pairs]
    rows = same_rows(request(proto_span(attributes=attributes)))
    assert rows[0].attributes == f'{{"a":"3","b":"2","{PENDING}":"false"}}'
    assert rows[0].pending == 0


def test_messages_sent_in_parts_are_merged() -> None:
    # protobuf merges a message field that occurs twice; so must the fast path.
    first = proto_span(status=Status(code=Status.STATUS_CODE_ERROR)).SerializeToString()
    late = field(0x7A, Status(message="late").SerializeToString())
    resource = (field(0x0A, field(0x0A, KeyValue(key="service.name",
                                                  value=AnyValue(string_value="a"))
                                  .SerializeToString()))
                + field(0x0A, field(0x0A, KeyValue(key="x", value=AnyValue(int_value=1))
                                    .SerializeToString())))
    rows = same_rows(wrap_span(first + late, resource))
    assert (rows[0].status_code, rows[0].status_message) == ("ERROR", "late")
    assert (rows[0].resource, rows[0].service_name) == ('{"service.name":"a","x":1}', "a")


def test_cached_attributes_stay_correct_across_requests() -> None:
    for index in range(3):
        same_rows(encode_spans([span(attributes={"tool": "search", "id": f"call-{index}"})
                                for _ in range(3)]).SerializeToString())


@pytest.mark.parametrize("data", [
    b"\xff\xff",  # not protobuf
    request(proto_span(span_id=b"\x01" * 3)),  # a 3-byte span id
    request(Span(trace_id=b"", span_id=b"\x01" * 8)),  # no trace id
    request(proto_span(parent_span_id=b"\x01")),
    request(proto_span(links=[Span.Link(trace_id=b"\x01", span_id=b"\x01" * 8)])),
])
def test_invalid_requests_are_left_to_the_reference_path(data: bytes, tmp_path: Path) -> None:
    assert fast_span_records(data) is None
    with Store(tmp_path / "r.db") as store:
        with pytest.raises(MalformedRequest) as fast:
            Ingest(store).export_protobuf(Signal.TRACES, data)
        with pytest.raises(MalformedRequest) as slow:
            Ingest(store).export(Signal.TRACES, Signal.TRACES.parse(data))
    assert str(fast.value) == str(slow.value)


def test_invalid_utf8_is_refused_like_protobuf_does() -> None:
    key_value = b"\x0a\x01k\x12\x04\x0a\x02\xc3\x28"  # string_value is not UTF-8
    data = wrap_span(proto_span().SerializeToString() + field(0x4A, key_value))
    assert fast_span_records(data) is None
    with pytest.raises(MalformedRequest, match="invalid traces protobuf"):
        Signal.TRACES.parse(data)


@pytest.mark.parametrize("value", [
    AnyValue(string_value="v"), AnyValue(string_value=""), AnyValue(string_value="é" * 40),
    AnyValue(string_value="x" * 126), AnyValue(int_value=3), AnyValue(bool_value=False),
])
@pytest.mark.parametrize("key", ["k", "", "ключ", "k" * 130])
def test_simple_string_reads_only_what_it_can(key: str, value: AnyValue) -> None:
    raw = KeyValue(key=key, value=value).SerializeToString()
    parsed = KeyValue.FromString(raw)
    got = _simple_string(raw)
    if got is not None:
        assert got == (parsed.key, parsed.value.string_value)
        assert parsed.value.WhichOneof("value") == "string_value"
    else:
        simple = (key and len(key.encode()) < 128 and value.WhichOneof("value") == "string_value"
                  and len(value.string_value.encode()) < 126)
        assert not simple, "a simple string attribute took the slow path"
    assert _simple_string(raw + b"\x00") is None  # trailing bytes: not the simple shape


def test_ingest_stores_and_counts_through_the_fast_path(tmp_path: Path) -> None:
    data = encode_spans([span(context=context(n)) for n in range(1, 6)]).SerializeToString()
    with Store(tmp_path / "r.db") as store:
        ingest = Ingest(store)
        ingest.export_protobuf(Signal.TRACES, data)
        assert ingest.stats().spans == 5
        assert ingest.stats().requests == 1
    with sqlite3.connect(tmp_path / "r.db") as connection:
        stored = connection.execute(f"SELECT {', '.join(SpanRecord._fields)} FROM spans "
                                    "ORDER BY span_id").fetchall()
    assert [SpanRecord(*row) for row in stored] == sorted(reference(data),
                                                          key=lambda row: row.span_id)


def test_span_values_round_trip() -> None:
    rows = reference(encode_spans([span(context=context(n)) for n in (1, 2)])
                     .SerializeToString())
    values = SpanValues.of(rows)
    assert (values.count, values.records()) == (2, rows)


scalars = st.one_of(
    st.text(max_size=20), st.booleans(), st.integers(-(1 << 63), (1 << 63) - 1),
    st.floats(allow_nan=True, allow_infinity=True),
)
attribute_values = st.one_of(
    scalars,
    st.sampled_from(["search", "run-1", "true", "false", "1"]),
    st.lists(st.text(max_size=5), max_size=3), st.lists(st.integers(0, 9), max_size=3),
    st.lists(st.booleans(), max_size=3), st.lists(st.floats(allow_nan=False), max_size=3),
)
attribute_maps = st.dictionaries(
    st.one_of(st.text(max_size=8), st.sampled_from(["gen_ai.tool.name", PENDING])),
    attribute_values, max_size=6)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(attribute_maps, st.integers(1, (1 << 64) - 1),
                          st.sampled_from(list(SdkStatusCode)),
                          st.lists(attribute_maps, max_size=2)), min_size=1, max_size=4))
def test_any_spans(spans: list[tuple[dict[str, Any], int, SdkStatusCode, list[Any]]]) -> None:
    logging.getLogger("opentelemetry.exporter.otlp.proto.common._internal").disabled = True
    try:
        encoded = encode_spans([
            span(context=context(span_id), attributes=attributes,
                 status=SdkStatus(code, "why" if code is SdkStatusCode.ERROR else None),
                 events=tuple(SpanEvent("e", event, 1) for event in events))
            for attributes, span_id, code, events in spans
        ]).SerializeToString()
    finally:
        logging.getLogger("opentelemetry.exporter.otlp.proto.common._internal").disabled = False
    same_rows(encoded)
