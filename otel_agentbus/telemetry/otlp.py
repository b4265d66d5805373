"""A faster OTLP span encoder for the gRPC exporter ``configure()`` sets up.

The SDK's ``encode_spans`` builds a protobuf object per span, attribute and value, and
hashes each span's Resource (a JSON dump of its attributes) to group spans: about 30 µs a
span, on the batch processor's thread but under the same GIL as the agent. That capped
export at a few thousand spans a second while the agent kept publishing, and a burst
overflowed the queue. This module writes the same ``ExportTraceServiceRequest`` straight to
protobuf wire bytes, caching the bytes of repeated attributes, names, resources and scopes
(about 6 µs a tool-call span), and gRPC sends those bytes as they are: the exporter's stub
is swapped for one whose serializer passes bytes through, instead of parsing them back into
a message to be serialized again. A batch that encodes over ``MAX_REQUEST_BYTES`` goes as
several requests. Anything unusual (bytes, mappings, integers beyond int64, strings that
are not valid UTF-8) is encoded by the SDK's own functions, with their behaviour, so the
message always equals what ``encode_spans`` produces.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import grpc  # type: ignore[import-untyped]
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Status, StatusCode

from . import sdk_internals as internals
from .export import note_unanswered
from .sdk_internals import (
    SPAN_KIND_MAP,
    encode_instrumentation_scope,
    encode_key_value,
    encode_resource,
)

_BYTES: Final = tuple(bytes((n,)) for n in range(128))
_pack_fixed64 = struct.Struct("<Q").pack
_pack_double = struct.Struct("<d").pack
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_MAX_CACHED: Final = 8192
_FLAGS_LOCAL: Final = b"\x85\x01" + struct.pack("<I", 0x100)
_FLAGS_REMOTE: Final = b"\x85\x01" + struct.pack("<I", 0x300)
_EMPTY_STATUS: Final = b"\x7a\x00"
_pack_times = struct.Struct("<BQBQ").pack
_KIND_FIELDS: Final = {kind: (b"\x30" + bytes((value,)) if value else b"")
                       for kind, value in SPAN_KIND_MAP.items()}
_SDK_SPAN_TYPES: Final = frozenset({ReadableSpan, SdkSpan})
_NO_OBJECT: Final = object()
_NULLS: Final = internals.ENCODES_NULLS
"""None (alone or in a list) encodes as an empty AnyValue; older SDKs drop the attribute."""
_EXPORT_METHOD: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MAX_REQUEST_BYTES: Final = 4_000_000
"""Largest request the gRPC exporter sends: gRPC servers, the collector's OTLP receiver
among them, refuse messages over 4 MiB by default. A batch that encodes larger (big spans,
or a large OTEL_BSP_MAX_EXPORT_BATCH_SIZE) goes as several requests."""


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _BYTES[value]
    if value < 0x4000:  # an encoded span's length
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes | None:
    """The AnyValue bytes of a scalar or a list of scalars; None for what the SDK must do."""
    kind = type(value)
    if kind is str:
        return _field(b"\x0a", value.encode())  # raises on lone surrogates: SDK path
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            return None
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if kind is float:
        return b"\x21" + _pack_double(value)
    if kind is tuple or kind is list:
        items = []
        for item in value:
            if item is None:
                if not _NULLS:
                    return None
                items.append(b"\x0a\x00")
                continue
            encoded = _any_value(item)
            if encoded is None:
                return None
            items.append(_field(b"\x0a", encoded))
        return _field(b"\x2a", b"".join(items))
    if value is None and _NULLS:
        return b""
    return None


def _dropped(container: object) -> int | None:
    """What a span's ``dropped_*`` property returns for this container, or None when its
    type is not one of the SDK's own."""
    kind = type(container)
    if kind is BoundedAttributes or kind is BoundedList:
        dropped: int = container.dropped  # type: ignore[attr-defined]
        return dropped
    if container is None or kind is dict or kind is tuple or kind is list:
        return 0
    return None


_SPAN_CONTAINERS: Final = internals.SPAN_CONTAINERS


def _dropped_counts(span: ReadableSpan) -> tuple[int, int, int]:
    """``(dropped_attributes, dropped_events, dropped_links)``.

    Each property does an ``isinstance`` against an ABC (about 0.25 µs, a tenth of a mirror
    span's encoding), so for the SDK's own span classes the containers are read directly;
    any other class, container or SDK layout goes through the properties.
    """
    if _SPAN_CONTAINERS and type(span) in _SDK_SPAN_TYPES:
        try:
            attributes, events, links = internals.span_containers(span)
            counts = (_dropped(attributes), _dropped(events), _dropped(links))
        except AttributeError:
            counts = (None, None, None)
        if None not in counts:
            return counts  # type: ignore[return-value]
    return span.dropped_attributes, span.dropped_events, span.dropped_links


class SpanEncoder:
    """Encodes SDK spans into an ``ExportTraceServiceRequest``; one per exporter."""

    def __init__(self) -> None:
        self._attributes: dict[tuple[bytes, str, type, Any], bytes] = {}
        self._strings: dict[tuple[bytes, str, str], bytes] = {}
        self._keys: dict[str, bytes] = {}
        self._resources: dict[int, tuple[Any, bytes]] = {}
        self._scopes: dict[int, tuple[Any, bytes]] = {}
        self._names: dict[str, bytes] = {}

    # ------------------------------------------------------------- attributes
    def _key_value(self, key: str, value: Any) -> bytes | None:
        """One KeyValue's bytes (without its field tag); None when the SDK skips it."""
        key_bytes: bytes | None = None
        try:
            any_value = _any_value(value)
            key_bytes = self._keys.get(key)
            if key_bytes is None:
                if type(key) is not str:
                    raise TypeError(key)
                key_bytes = _field(b"\x0a", key.encode()) if key else b""
                if len(self._keys) < _MAX_CACHED:
                    self._keys[key] = key_bytes
        except (UnicodeEncodeError, TypeError):
            any_value = None
        if any_value is None or key_bytes is None:
            # The SDK's own encoding, and its handling of what it cannot encode.
            try:
                return bytes(encode_key_value(key, value).SerializeToString())
            except Exception as error:
                if internals.encoder_logger is not None:
                    internals.encoder_logger.exception("Failed to encode key %s: %s", key,
                                                       error)
                return None
        return key_bytes + _field(b"\x12", any_value)

    def _string_field(self, tag: bytes, key: str, value: str) -> bytes | None:
        """A string attribute's field, written out directly when every length fits one
        byte and the key was seen before (the common case); else through _key_value."""
        key_field = self._keys.get(key)
        if key_field is not None:
            try:
                raw = value.encode()
            except UnicodeEncodeError:
                raw = None
            if raw is not None:
                size = len(raw)
                body_size = len(key_field) + size + 4
                if body_size < 0x80:
                    return (tag + _BYTES[body_size] + key_field + b"\x12" + _BYTES[size + 2]
                            + b"\x0a" + _BYTES[size] + raw)
        encoded = self._key_value(key, value)
        return None if encoded is None else _field(tag, encoded)

    def _add_attributes(self, out: list[bytes], tag: bytes,
                        attributes: Mapping[str, Any] | None) -> None:
        """Append the attribute fields (tag included); short strings, bools and ints are
        cached."""
        if not attributes:
            return
        append = out.append
        strings = self._strings
        cache = self._attributes
        for key, value in attributes.items():
            kind = type(value)
            if kind is str:
                short = len(value) <= 64
                if short:
                    field = strings.get((tag, key, value))
                    if field is not None:
                        append(field)
                        continue
                field = self._string_field(tag, key, value)
                if field is None:
                    continue
                if short:
                    if len(strings) >= _MAX_CACHED:
                        strings.clear()
                    strings[(tag, key, value)] = field
                append(field)
                continue
            cacheable = kind is bool or kind is int
            if cacheable:
                field = cache.get((tag, key, kind, value))
                if field is not None:
                    append(field)
                    continue
            encoded = self._key_value(key, value)
            if encoded is None:
                continue
            field = _field(tag, encoded)
            if cacheable:
                if len(cache) >= _MAX_CACHED:
                    cache.clear()
                cache[(tag, key, kind, value)] = field
            append(field)

    # ------------------------------------------------------------------- span
    def _name(self, name: str) -> bytes:
        """The span's name field (names repeat: cached)."""
        field = self._names.get(name)
        if field is None:
            field = _field(b"\x2a", name.encode()) if name else b""
            if len(self._names) >= _MAX_CACHED:
                self._names.clear()
            self._names[name] = field
        return field

    def _status(self, status: Status | None) -> bytes:
        """The status field; an unset status without a description is two bytes."""
        if status is None:
            return b""
        description = status.description
        if not description and status.status_code is StatusCode.UNSET:
            return _EMPTY_STATUS
        code = status.status_code.value
        status_parts = b""
        if description:
            status_parts += _field(b"\x12", description.encode())
        if code:
            status_parts += b"\x18" + _varint(code)
        return _field(b"\x7a", status_parts)

    def _span(self, span: ReadableSpan) -> bytes:
        context = span.get_span_context()
        assert context is not None
        parent = span.parent
        parts = [b"\x0a\x10" + context.trace_id.to_bytes(16, "big")
                 + b"\x12\x08" + context.span_id.to_bytes(8, "big")]
        append = parts.append
        trace_state = context.trace_state
        if trace_state:
            append(_field(b"\x1a", ",".join(
                [f"{key}={value}" for key, value in trace_state.items()]).encode()))
        if parent:
            append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
        append(self._name(span.name))
        append(_KIND_FIELDS[span.kind])
        start, end = span.start_time, span.end_time
        if start and end:
            append(_pack_times(0x39, start, 0x41, end))
        elif start:
            append(b"\x39" + _pack_fixed64(start))
        elif end:
            append(b"\x41" + _pack_fixed64(end))
        self._add_attributes(parts, b"\x4a", span.attributes)
        dropped_attributes, dropped_events, dropped_links = _dropped_counts(span)
        if dropped_attributes:
            append(b"\x50" + _varint(dropped_attributes))
        for event in span.events:
            event_parts = []
            if event.timestamp:
                event_parts.append(b"\x09" + _pack_fixed64(event.timestamp))
            if event.name:
                event_parts.append(_field(b"\x12", event.name.encode()))
            self._add_attributes(event_parts, b"\x1a", event.attributes)
            if event.dropped_attributes:
                event_parts.append(b"\x20" + _varint(event.dropped_attributes))
            append(_field(b"\x5a", b"".join(event_parts)))
        if dropped_events:
            append(b"\x60" + _varint(dropped_events))
        for link in span.links:
            link_context = link.context
            link_parts = [
                b"\x0a\x10" + link_context.trace_id.to_bytes(16, "big"),
                b"\x12\x08" + link_context.span_id.to_bytes(8, "big"),
            ]
            self._add_attributes(link_parts, b"\x22", link.attributes)
            if link.dropped_attributes:
                link_parts.append(b"\x28" + _varint(link.dropped_attributes))
            link_parts.append(b"\x35" + struct.pack(
                "<I", 0x300 if link_context.is_remote else 0x100))
            append(_field(b"\x6a", b"".join(link_parts)))
        if dropped_links:
            append(b"\x70" + _varint(dropped_links))
        append(self._status(span.status))
        append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
        return b"".join(parts)

    # -------------------------------------------------------------- grouping
    def _cached(self, cache: dict[int, tuple[Any, bytes]], item: Any, encode: Any) -> bytes:
        entry = cache.get(id(item))
        if entry is not None and entry[0] is item:
            return entry[1]
        encoded = bytes(encode(item).SerializeToString())
        if len(cache) >= 64:
            cache.clear()
        cache[id(item)] = (item, encoded)  # keeps the object alive, so its id stays its own
        return encoded

    def encode_requests(self, spans: Sequence[ReadableSpan], limit: int) -> list[bytes]:
        """``encode(spans)`` as requests of at most ``limit`` bytes each, halving the batch
        until its parts fit (a span larger than ``limit`` goes in a request of its own)."""
        encoded = self.encode(spans)
        if len(encoded) <= limit or len(spans) < 2:
            return [encoded]
        half = len(spans) // 2
        return (self.encode_requests(spans[:half], limit)
                + self.encode_requests(spans[half:], limit))

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """``encode_spans(spans).SerializeToString()``, grouped the same way."""
        # Group by resource and scope as the SDK does (by equality, in first-seen order),
        # looking objects up by identity first: comparing Resources hashes their JSON.
        groups: dict[Any, dict[Any, list[bytes]]] = {}
        by_id: dict[tuple[int, int], list[bytes]] = {}
        last_resource: Any = _NO_OBJECT
        last_scope: Any = _NO_OBJECT
        bucket: list[bytes] = []
        for span in spans:
            resource = span.resource
            scope = span.instrumentation_scope or None
            if resource is not last_resource or scope is not last_scope:
                key = (id(resource), id(scope))
                found = by_id.get(key)
                if found is None:
                    found = groups.setdefault(resource, {}).setdefault(scope, [])
                    by_id[key] = found
                bucket, last_resource, last_scope = found, resource, scope
            bucket.append(_field(b"\x12", self._span(span)))
        out = []
        for resource, scopes in groups.items():
            scope_parts = []
            for scope, encoded_spans in scopes.items():
                head = (_field(b"\x0a", self._cached(self._scopes, scope,
                                                     encode_instrumentation_scope))
                        if scope is not None else b"\x0a\x00")
                body = head + b"".join(encoded_spans)
                if scope is not None and scope.schema_url:
                    body += _field(b"\x1a", scope.schema_url.encode())
                scope_parts.append(_field(b"\x12", body))
            body = _field(b"\x0a", self._cached(self._resources, resource, encode_resource))
            body += b"".join(scope_parts)
            if resource.schema_url:
                body += _field(b"\x1a", resource.schema_url.encode())
            out.append(_field(b"\x0a", body))
        return b"".join(out)


def _request_bytes(request: Any) -> bytes:
    """The stub's serializer: the encoder's bytes as they are, a message serialized."""
    if type(request) is bytes:
        return request
    return bytes(request.SerializeToString())


class _Requests(tuple[bytes, ...]):
    """A batch encoded as several requests, each within MAX_REQUEST_BYTES."""


class _Export:
    """``Export`` of the stub: sends one request, or a :class:`_Requests` one after another
    within the call's deadline (a failure fails the call, which the exporter may retry
    whole: a request already stored is then sent again, as after a lost answer)."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __call__(self, request: Any, metadata: Any = None, timeout: float | None = None,
                 **options: Any) -> Any:
        try:
            if type(request) is not _Requests:
                return self._call(request, metadata=metadata, timeout=timeout, **options)
            deadline = None if timeout is None else time.monotonic() + timeout
            response = None
            for part in request:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                response = self._call(part, metadata=metadata, timeout=left, **options)
            return response
        except grpc.RpcError as error:
            code = getattr(error, "code", None)
            if callable(code) and code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                note_unanswered()  # sent, not answered in time: perhaps stored all the same
            raise


class _EncodedTraceServiceStub(TraceServiceStub):
    """The generated TraceService stub, except that ``Export`` takes the request as the
    encoder's bytes: parsing them into a message only for gRPC to serialize it again cost
    about a microsecond a span."""

    def __init__(self, channel: Any) -> None:
        super().__init__(channel)  # type: ignore[no-untyped-call]
        options: dict[str, Any] = {"request_serializer": _request_bytes,
                                   "response_deserializer": ExportTraceServiceResponse.FromString}
        try:
            call = channel.unary_unary(_EXPORT_METHOD, _registered_method=True, **options)
        except TypeError:  # a grpcio without registered methods
            call = channel.unary_unary(_EXPORT_METHOD, **options)
        self.Export = _Export(call)


def _send_bytes(exporter: OTLPSpanExporter) -> bool:
    """Make the exporter's stub (and any it creates on reconnecting) send request bytes;
    False when the exporter is not laid out as expected (it then gets messages)."""
    return internals.swap_export_stub(exporter, TraceServiceStub, _EncodedTraceServiceStub)


def with_fast_encoder(exporter: OTLPSpanExporter) -> OTLPSpanExporter:
    """Give the SDK's OTLP/gRPC span exporter this encoder; everything else about it
    (retries, timeouts, TLS, headers, compression, ``OTEL_EXPORTER_OTLP_*``) is unchanged,
    and so is its type. An SDK without the hook or the encoder helpers keeps its own
    encoder (see :func:`.sdk_internals.fast_paths`)."""
    if not internals.FAST_ENCODER or not internals.exporter_translate_hook(exporter):
        return exporter
    encoder = SpanEncoder()
    if _send_bytes(exporter):
        def translate_data(data: Sequence[ReadableSpan]) -> Any:
            requests = encoder.encode_requests(data, MAX_REQUEST_BYTES)
            return requests[0] if len(requests) == 1 else _Requests(requests)
    else:
        def translate_data(data: Sequence[ReadableSpan]) -> Any:
            return ExportTraceServiceRequest.FromString(encoder.encode(data))

    internals.set_translate(exporter, translate_data)
    return exporter
