"""A faster decode of binary OTLP trace requests into ``spans`` rows.

``span_records`` reads every attribute through protobuf objects (a wrapper for each
KeyValue and each AnyValue, then a ``WhichOneof``) and JSON-encodes a dict per span: about
11 µs a tool-call span, on a thread that shares the GIL with the agent when the receiver
is embedded. Here the request is parsed with a *wire-compatible* schema that declares the
span's nested messages (attributes, events, links, status) and the resource and scope as
``bytes``, so the parser hands back their encoded bytes. The bytes of a repeated attribute
(the tool's name, the run id, the agent) are the same in every span, so each is decoded,
converted and JSON-encoded once and then found in a cache; a short string attribute seen
for the first time (a tool call's id) is read straight from its bytes. The rows come out as
one flat list of column values, what the store binds. About 6 µs a span.

Every nested message is still decoded by the generated classes (or matched byte for byte
against one that was), so a request this path accepts is one ``ExportTraceServiceRequest``
accepts, and the rows are the same as ``span_records`` builds (tested on arbitrary spans).
Anything it does not handle (a decode error, an invalid id) returns ``None``, and the caller
takes the reference path, which produces the usual rows or error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from json.encoder import encode_basestring
from typing import Any, Final, TypeVar

from google.protobuf import descriptor_pb2  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from .convert import (
    _EMPTY_LIST,
    SPAN_KINDS,
    STATUS_CODES,
    MalformedRequest,
    SpanValues,
    _resource,
    any_value,
    dumps,
    events_json,
    links_json,
)
from .limits import DecodeBudget, LimitExceeded
from .names import PENDING_ATTRIBUTE, is_truthy

log = logging.getLogger(__name__)

_MAX_CACHED: Final = 8192
_MAX_CACHED_BYTES: Final = 256
_NOT_PENDING: Final[Any] = object()
_V = TypeVar("_V")


def _lite_request_class() -> Any:
    """The message class of the wire-compatible schema, or None if protobuf refuses it."""
    from google.protobuf import descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto

    def declare(name: str, number: int, kind: int, *, repeated: bool = False,
                message: str = "") -> Any:
        label = field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL
        declared = field(name=name, number=number, type=kind, label=label)
        if message:
            declared.type_name = f".otel_agentbus.receiver.lite.{message}"
        return declared

    blob, text = field.TYPE_BYTES, field.TYPE_STRING
    proto = descriptor_pb2.FileDescriptorProto(
        name="otel_agentbus/receiver/lite_trace.proto",
        package="otel_agentbus.receiver.lite", syntax="proto3")
    # Field numbers and wire types are trace.proto's; a repeated ``bytes`` field keeps each
    # occurrence, so a message sent in parts still merges exactly (see _merged).
    proto.message_type.add(name="Request", field=[
        declare("resource_spans", 1, field.TYPE_MESSAGE, repeated=True,
                message="ResourceSpans")])
    proto.message_type.add(name="ResourceSpans", field=[
        declare("resource", 1, blob, repeated=True),
        declare("scope_spans", 2, field.TYPE_MESSAGE, repeated=True, message="ScopeSpans"),
        declare("schema_url", 3, text)])
    proto.message_type.add(name="ScopeSpans", field=[
        declare("scope", 1, blob, repeated=True),
        declare("spans", 2, field.TYPE_MESSAGE, repeated=True, message="Span"),
        declare("schema_url", 3, text)])
    proto.message_type.add(name="Span", field=[
        declare("trace_id", 1, blob), declare("span_id", 2, blob),
        declare("trace_state", 3, text), declare("parent_span_id", 4, blob),
        declare("name", 5, text), declare("kind", 6, field.TYPE_INT32),
        declare("start_time_unix_nano", 7, field.TYPE_FIXED64),
        declare("end_time_unix_nano", 8, field.TYPE_FIXED64),
        declare("attributes", 9, blob, repeated=True),
        declare("events", 11, blob, repeated=True),
        declare("links", 13, blob, repeated=True),
        declare("status", 15, blob, repeated=True)])
    try:
        pool = descriptor_pool.DescriptorPool()
        pool.Add(proto)
        return message_factory.GetMessageClass(
            pool.FindMessageTypeByName("otel_agentbus.receiver.lite.Request"))
    except Exception:  # pragma: no cover - a protobuf without runtime descriptors
        log.debug("fast span decoding unavailable", exc_info=True)
        return None


_LiteRequest: Final = _lite_request_class()


def _merged(parts: Sequence[bytes]) -> bytes:
    """One message's bytes from its occurrences: concatenated messages parse as merged."""
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _remember(cache: dict[bytes, _V], raw: bytes, value: _V) -> None:
    """Cache ``value`` under a message's bytes, within bounds: only short messages (the
    repeated ones), and a full cache starts over rather than growing."""
    if len(raw) <= _MAX_CACHED_BYTES:
        if len(cache) >= _MAX_CACHED:
            cache.clear()
        cache[raw] = value


def _simple_string(raw: bytes) -> tuple[str, str] | None:
    """``(key, value)`` of a KeyValue holding a short string, read straight from its bytes
    (a tenth of a span's decoding went to parsing each unique one, like a tool call's id);
    None for any other shape, which the generated class then decodes.

    The shape is ``0A klen key 12 vlen 0A slen value`` with every length below 128: the
    key, then an AnyValue holding only ``string_value``, nothing else and nothing after.
    """
    size = len(raw)
    if size < 6 or raw[0] != 0x0A:
        return None
    key_end = raw[1] + 2
    if key_end >= 0x82 or size < key_end + 4 or raw[key_end] != 0x12 or raw[key_end + 2] != 0x0A:
        return None
    text_size = raw[key_end + 3]
    if text_size >= 0x80 or raw[key_end + 1] != text_size + 2 or size != key_end + 4 + text_size:
        return None
    try:
        return raw[2:key_end].decode(), raw[key_end + 4:].decode()
    except UnicodeDecodeError:
        return None  # protobuf rejects it too, with its own error


class _Attributes:
    """Attribute bytes to JSON fragments, each KeyValue converted once while cached.

    An entry also keeps how many nested values (array and kvlist items) its value holds,
    charged to the request's budget on every use, as the reference converter charges them.
    """

    def __init__(self) -> None:
        self._fragments: dict[bytes, tuple[str, str, Any, int]] = {}
        self._keys: dict[str, str] = {}

    def _head(self, key: str) -> str:
        """``'"key":'``, cached per key."""
        head = self._keys.get(key)
        if head is None:
            head = encode_basestring(key) + ":"
            if len(self._keys) < _MAX_CACHED:
                self._keys[key] = head
        return head

    def _entry(self, raw: bytes, budget: DecodeBudget) -> tuple[str, str, Any, int]:
        """``(key, '"key":value', value if it is the pending flag, nested values)``;
        raises DecodeError, or LimitExceeded once the nested values pass the budget."""
        simple = _simple_string(raw)
        nested = 0
        if simple is not None:
            key, text = simple
            value: Any = text
            fragment = self._head(key) + encode_basestring(text)
        else:
            kv = KeyValue.FromString(raw)
            key = kv.key
            any_of = kv.value
            before = budget.used_values
            value = any_value(any_of, budget)
            nested = budget.used_values - before
            fragment = self._head(key) + (encode_basestring(value) if type(value) is str
                                          else dumps(value))
        return key, fragment, value if key == PENDING_ATTRIBUTE else _NOT_PENDING, nested

    def json(self, items: Sequence[bytes], budget: DecodeBudget) -> tuple[str, Any]:
        """``dumps(attributes(...))`` of the span's attributes, and its pending flag's value.

        A repeated key keeps its first position and last value, as a dict does.
        """
        by_key: dict[str, str] = {}
        fragments: list[str] = []
        pending = _NOT_PENDING
        cache = self._fragments
        for raw in items:
            entry = cache.get(raw)
            if entry is None:
                entry = self._entry(raw, budget)
                _remember(cache, raw, entry)
            elif entry[3]:
                budget.values(entry[3])
            key, fragment, value, _ = entry
            by_key[key] = fragment
            fragments.append(fragment)
            if value is not _NOT_PENDING:
                pending = value
        if len(by_key) != len(fragments):  # a repeated key (joining a list is faster)
            fragments = list(by_key.values())
        return f"{{{','.join(fragments)}}}", pending


_attributes: Final = _Attributes()
_statuses: dict[bytes, tuple[str, str]] = {}


def _status(parts: Sequence[bytes]) -> tuple[str, str]:
    """``(status_code, status_message)`` columns; an absent status is UNSET."""
    if not parts:
        return "UNSET", ""
    raw = _merged(parts)
    cached = _statuses.get(raw)
    if cached is None:
        status = Status.FromString(raw)
        cached = (STATUS_CODES[status.code], status.message)
        _remember(_statuses, raw, cached)
    return cached


class _Invalid(Exception):
    """An id the reference path rejects; it is left to produce the error."""


def _values(data: bytes, budget: DecodeBudget) -> SpanValues:
    request = _LiteRequest.FromString(data)
    values: list[Any] = []
    extend = values.extend
    count = 0
    attributes_json = _attributes.json
    kinds = SPAN_KINDS
    for resource_spans in request.resource_spans:
        resource_json, service = _resource(
            Resource.FromString(_merged(resource_spans.resource)), budget)
        for scope_spans in resource_spans.scope_spans:
            scope = InstrumentationScope.FromString(_merged(scope_spans.scope))
            scope_name, scope_version = scope.name, scope.version
            for span in scope_spans.spans:
                trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
                if len(trace_id) != 16 or len(span_id) != 8 or (parent and len(parent) != 8):
                    raise _Invalid
                events, links = span.events, span.links
                budget.span(len(span.attributes), len(events), len(links))
                attributes, pending = attributes_json(span.attributes, budget)
                events_column = events_json(
                    [Span.Event.FromString(e) for e in events], budget
                ) if events else _EMPTY_LIST
                links_column = links_json(
                    [Span.Link.FromString(link) for link in links], budget
                ) if links else _EMPTY_LIST
                budget.decoded(len(attributes) + len(events_column) + len(links_column))
                code, message = _status(span.status)
                count += 1
                extend((
                    trace_id.hex(),
                    span_id.hex(),
                    parent.hex() if parent else None,
                    span.name,
                    kinds[span.kind],
                    span.start_time_unix_nano,
                    span.end_time_unix_nano,
                    code,
                    message,
                    attributes,
                    events_column,
                    links_column,
                    resource_json,
                    scope_name,
                    scope_version,
                    service,
                    span.trace_state,
                    0 if pending is _NOT_PENDING else int(is_truthy(pending)),
                ))
    return SpanValues(values, count)


def fast_span_values(data: bytes, budget: DecodeBudget | None = None) -> SpanValues | None:
    """The ``spans`` rows of a binary OTLP trace request, as
    ``span_records(ExportTraceServiceRequest.FromString(data))`` builds them, or None when
    the request is one to leave to that reference path (undecodable, an invalid id).

    A request past a bound of ``budget`` raises :class:`LimitExceeded` here, sparing the
    full decode the reference path would start with."""
    if _LiteRequest is None:
        return None
    try:
        return _values(data, budget or DecodeBudget())
    except LimitExceeded:
        raise
    except (DecodeError, MalformedRequest, _Invalid):
        return None
    except Exception:  # a bug here must not cost a request: the reference path decides
        log.debug("fast span decoding failed; using the reference path", exc_info=True)
        return None
