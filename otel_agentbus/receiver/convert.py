"""Flatten OTLP protobuf requests into plain rows for SQLite.

Kept free of I/O so both transports share it and a bad request is fully
validated (and rejected) before anything is written.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Exemplar,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    SummaryDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from .limits import DecodeBudget
from .names import PENDING_ATTRIBUTE, is_truthy


class _EnumNames(dict[int, str]):
    """An OTLP enum's names by number, indexed with ``[]``: a number this version does
    not know (a newer proto) stays as its digits, in every decoder alike."""

    def __missing__(self, number: int) -> str:
        return str(number)


SPAN_KINDS: Final = _EnumNames({
    Span.SPAN_KIND_UNSPECIFIED: "UNSPECIFIED",
    Span.SPAN_KIND_INTERNAL: "INTERNAL",
    Span.SPAN_KIND_SERVER: "SERVER",
    Span.SPAN_KIND_CLIENT: "CLIENT",
    Span.SPAN_KIND_PRODUCER: "PRODUCER",
    Span.SPAN_KIND_CONSUMER: "CONSUMER",
})
STATUS_CODES: Final = _EnumNames({
    Status.STATUS_CODE_UNSET: "UNSET",
    Status.STATUS_CODE_OK: "OK",
    Status.STATUS_CODE_ERROR: "ERROR",
})
TEMPORALITIES: dict[int, str] = {0: "unspecified", 1: "delta", 2: "cumulative"}


class MalformedRequest(ValueError):
    """The request decoded but violates OTLP rules (e.g. a 3-byte span id)."""


class SpanRecord(NamedTuple):
    """One ``spans`` row; field names are the column names."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status_code: str
    status_message: str
    attributes: str
    events: str
    links: str
    resource: str
    scope_name: str
    scope_version: str
    service_name: str | None
    trace_state: str
    pending: int


SPAN_COLUMNS: Final = len(SpanRecord._fields)


@dataclass(frozen=True, slots=True)
class SpanValues:
    """Spans as one flat list of column values, row after row: what a multi-row upsert
    binds. The fast decoder builds this instead of a SpanRecord per span, sparing the
    tuples (and the garbage collector, which kept finding them alive mid-request)."""

    values: list[Any]
    count: int

    @classmethod
    def of(cls, rows: Sequence[SpanRecord]) -> SpanValues:
        return cls([value for row in rows for value in row], len(rows))

    def records(self) -> list[SpanRecord]:
        """One SpanRecord per span (for tests and callers that want rows)."""
        values, width = self.values, SPAN_COLUMNS
        return [SpanRecord(*values[start:start + width])
                for start in range(0, len(values), width)]


class MetricPointRecord(NamedTuple):
    """One ``metrics`` row: a single data point of a metric."""

    name: str
    description: str
    unit: str
    type: str
    time_ns: int
    start_time_ns: int
    attributes: str
    value: float | int | None
    histogram: str | None
    exemplars: str
    temporality: str | None
    is_monotonic: int | None
    resource: str
    scope_name: str
    service_name: str | None


class LogRecordRow(NamedTuple):
    """One ``logs`` row."""

    time_ns: int
    observed_time_ns: int
    severity_number: int
    severity_text: str
    body: str
    event_name: str
    attributes: str
    trace_id: str | None
    span_id: str | None
    flags: int
    resource: str
    scope_name: str
    service_name: str | None


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_encode = _ENCODER.encode


def dumps(value: Any) -> str:
    """Compact JSON that SQLite's json1 functions can always parse (no NaN).

    One shared encoder: ``json.dumps`` with options builds a new one per call, which was a
    tenth of the cost of storing a span.
    """
    return _encode(value)


def _finite(number: float) -> float | str:
    # JSON has no NaN/Infinity; keep the information as a string instead.
    if math.isfinite(number):
        return number
    return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")


def any_value(value: AnyValue, budget: DecodeBudget | None = None) -> Any:
    """Convert an OTLP AnyValue to a JSON-able Python value (bytes become base64); the
    items of arrays and kvlists are charged to ``budget``."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return value.bool_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return _finite(value.double_value)
    if which == "array_value":
        items = value.array_value.values
        if budget is not None:
            budget.values(len(items))
        return [any_value(item, budget) for item in items]
    if which == "kvlist_value":
        pairs = value.kvlist_value.values
        if budget is not None:
            budget.values(len(pairs))
        return attributes(pairs, budget)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    # string_value_strindex only has meaning inside a profiles dictionary.
    return getattr(value, which)


def attributes(items: Iterable[KeyValue], budget: DecodeBudget | None = None) -> dict[str, Any]:
    """Key/value list to a dict; a repeated key keeps its last value. The caller charges
    the list's length; nested values are charged here, to ``budget``."""
    out: dict[str, Any] = {}
    for kv in items:
        value = kv.value
        # Most attributes are strings: skip the general conversion for them.
        if value.WhichOneof("value") == "string_value":
            out[kv.key] = value.string_value
        else:
            out[kv.key] = any_value(value, budget)
    return out


def _hex_id(raw: bytes, size: int, what: str, *, required: bool) -> str | None:
    if not raw:
        if required:
            raise MalformedRequest(f"{what} is empty")
        return None
    if len(raw) != size:
        raise MalformedRequest(f"{what} must be {size} bytes, got {len(raw)}")
    return raw.hex()


def _service_name(resource_attrs: dict[str, Any]) -> str | None:
    name = resource_attrs.get("service.name")
    return name if isinstance(name, str) else None


def _resource(resource: Resource, budget: DecodeBudget | None = None) -> tuple[str, str | None]:
    if budget is not None:
        budget.attributes(len(resource.attributes))
    attrs = attributes(resource.attributes, budget)
    return dumps(attrs), _service_name(attrs)


_EMPTY_LIST: Final = dumps([])


def _charged(items: Sequence[KeyValue], budget: DecodeBudget | None) -> dict[str, Any]:
    """``attributes(items)`` of an event or link, its count charged to ``budget`` first."""
    if budget is not None:
        budget.attributes(len(items))
    return attributes(items, budget)


def events_json(events: Iterable[Span.Event], budget: DecodeBudget | None = None) -> str:
    """The ``events`` column of a span."""
    return dumps([
        {
            "name": event.name,
            "time_ns": event.time_unix_nano,
            "attributes": _charged(event.attributes, budget),
        }
        for event in events
    ])


def links_json(links: Iterable[Span.Link], budget: DecodeBudget | None = None) -> str:
    """The ``links`` column of a span; raises :class:`MalformedRequest` on a bad id."""
    return dumps([
        {
            "trace_id": _hex_id(link.trace_id, 16, "link trace_id", required=True),
            "span_id": _hex_id(link.span_id, 8, "link span_id", required=True),
            "trace_state": link.trace_state,
            "attributes": _charged(link.attributes, budget),
        }
        for link in links
    ])


def span_records(
    request: ExportTraceServiceRequest, budget: DecodeBudget | None = None
) -> list[SpanRecord]:
    """All spans of a trace export request, in request order; raises
    :class:`~.limits.LimitExceeded` as soon as the request passes a bound of ``budget``."""
    budget = budget or DecodeBudget()
    rows: list[SpanRecord] = []
    append = rows.append
    for resource_spans in request.resource_spans:
        resource_json, service = _resource(resource_spans.resource, budget)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            scope_name, scope_version = scope.name, scope.version
            for span in scope_spans.spans:
                budget.span(len(span.attributes), len(span.events), len(span.links))
                attrs = attributes(span.attributes, budget)
                trace_id = _hex_id(span.trace_id, 16, "trace_id", required=True)
                span_id = _hex_id(span.span_id, 8, "span_id", required=True)
                assert trace_id is not None and span_id is not None
                events = events_json(span.events, budget) if span.events else _EMPTY_LIST
                links = links_json(span.links, budget) if span.links else _EMPTY_LIST
                attrs_json = dumps(attrs)
                budget.decoded(len(attrs_json) + len(events) + len(links))
                status = span.status
                # Positional: a NamedTuple built from keywords costs twice as much.
                append(SpanRecord(
                    trace_id,
                    span_id,
                    _hex_id(span.parent_span_id, 8, "parent_span_id", required=False),
                    span.name,
                    SPAN_KINDS[span.kind],
                    span.start_time_unix_nano,
                    span.end_time_unix_nano,
                    STATUS_CODES[status.code],
                    status.message,
                    attrs_json,
                    events,
                    links,
                    resource_json,
                    scope_name,
                    scope_version,
                    service,
                    span.trace_state,
                    int(is_truthy(attrs[PENDING_ATTRIBUTE])) if PENDING_ATTRIBUTE in attrs else 0,
                ))
    return rows


def _number(point: NumberDataPoint | Exemplar) -> float | int | None:
    which = point.WhichOneof("value")
    if which == "as_int":
        return point.as_int
    if which == "as_double":
        value = point.as_double
        return value if math.isfinite(value) else None
    return None


def _exemplars(items: Iterable[Exemplar], budget: DecodeBudget) -> str:
    return dumps(
        [
            {
                "time_ns": ex.time_unix_nano,
                "value": _number(ex),
                "attributes": _charged(ex.filtered_attributes, budget),
                "trace_id": ex.trace_id.hex() or None,
                "span_id": ex.span_id.hex() or None,
            }
            for ex in items
        ]
    )


def _optional(present: bool, value: float) -> float | str | None:
    return _finite(value) if present else None


def _histogram(point: HistogramDataPoint) -> dict[str, Any]:
    return {
        "count": point.count,
        "sum": _optional(point.HasField("sum"), point.sum),
        "min": _optional(point.HasField("min"), point.min),
        "max": _optional(point.HasField("max"), point.max),
        "bucket_counts": list(point.bucket_counts),
        "explicit_bounds": [_finite(b) for b in point.explicit_bounds],
    }


def _exp_histogram(point: ExponentialHistogramDataPoint) -> dict[str, Any]:
    return {
        "count": point.count,
        "sum": _optional(point.HasField("sum"), point.sum),
        "min": _optional(point.HasField("min"), point.min),
        "max": _optional(point.HasField("max"), point.max),
        "scale": point.scale,
        "zero_count": point.zero_count,
        "zero_threshold": _finite(point.zero_threshold),
        "positive": {
            "offset": point.positive.offset,
            "bucket_counts": list(point.positive.bucket_counts),
        },
        "negative": {
            "offset": point.negative.offset,
            "bucket_counts": list(point.negative.bucket_counts),
        },
    }


def _summary(point: SummaryDataPoint) -> dict[str, Any]:
    return {
        "count": point.count,
        "sum": _finite(point.sum),
        "quantile_values": [
            {"quantile": q.quantile, "value": _finite(q.value)} for q in point.quantile_values
        ],
    }


def _metric_points(
    metric: Metric,
    resource_json: str,
    scope_name: str,
    service: str | None,
    budget: DecodeBudget,
) -> list[MetricPointRecord]:
    kind = metric.WhichOneof("data")
    if kind is None:
        return []

    def row(
        point: NumberDataPoint
        | HistogramDataPoint
        | ExponentialHistogramDataPoint
        | SummaryDataPoint,
        type_: str,
        value: float | int | None,
        histogram: dict[str, Any] | None,
        temporality: int | None,
        monotonic: bool | None,
    ) -> MetricPointRecord:
        exemplars = (
            "[]" if isinstance(point, SummaryDataPoint) else _exemplars(point.exemplars, budget)
        )
        attrs_json = dumps(_charged(point.attributes, budget))
        budget.decoded(len(attrs_json) + len(exemplars))
        return MetricPointRecord(
            name=metric.name,
            description=metric.description,
            unit=metric.unit,
            type=type_,
            time_ns=point.time_unix_nano,
            start_time_ns=point.start_time_unix_nano,
            attributes=attrs_json,
            value=value,
            histogram=None if histogram is None else dumps(histogram),
            exemplars=exemplars,
            temporality=None if temporality is None else TEMPORALITIES.get(temporality),
            is_monotonic=None if monotonic is None else int(monotonic),
            resource=resource_json,
            scope_name=scope_name,
            service_name=service,
        )

    if kind == "gauge":
        return [row(p, "gauge", _number(p), None, None, None) for p in metric.gauge.data_points]
    if kind == "sum":
        s = metric.sum
        return [
            row(p, "sum", _number(p), None, s.aggregation_temporality, s.is_monotonic)
            for p in s.data_points
        ]
    if kind == "histogram":
        h = metric.histogram
        return [
            row(p, "histogram", None, _histogram(p), h.aggregation_temporality, None)
            for p in h.data_points
        ]
    if kind == "exponential_histogram":
        e = metric.exponential_histogram
        return [
            row(p, "exp_histogram", None, _exp_histogram(p), e.aggregation_temporality, None)
            for p in e.data_points
        ]
    return [row(p, "summary", None, _summary(p), None, None) for p in metric.summary.data_points]


def metric_records(
    request: ExportMetricsServiceRequest, budget: DecodeBudget | None = None
) -> list[MetricPointRecord]:
    """One row per data point of every metric in the request."""
    budget = budget or DecodeBudget()
    rows: list[MetricPointRecord] = []
    for resource_metrics in request.resource_metrics:
        resource_json, service = _resource(resource_metrics.resource, budget)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                rows.extend(
                    _metric_points(
                        metric, resource_json, scope_metrics.scope.name, service, budget
                    )
                )
    return rows


def log_records(
    request: ExportLogsServiceRequest, budget: DecodeBudget | None = None
) -> list[LogRecordRow]:
    """All log records of a logs export request."""
    budget = budget or DecodeBudget()
    rows: list[LogRecordRow] = []
    for resource_logs in request.resource_logs:
        resource_json, service = _resource(resource_logs.resource, budget)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                body = dumps(any_value(record.body, budget))
                attrs_json = dumps(_charged(record.attributes, budget))
                budget.decoded(len(body) + len(attrs_json))
                rows.append(
                    LogRecordRow(
                        time_ns=record.time_unix_nano,
                        observed_time_ns=record.observed_time_unix_nano,
                        severity_number=int(record.severity_number),
                        severity_text=record.severity_text,
                        body=body,
                        event_name=record.event_name,
                        attributes=attrs_json,
                        trace_id=_hex_id(record.trace_id, 16, "log trace_id", required=False),
                        span_id=_hex_id(record.span_id, 8, "log span_id", required=False),
                        flags=record.flags,
                        resource=resource_json,
                        scope_name=scope_logs.scope.name,
                        service_name=service,
                    )
                )
    return rows
