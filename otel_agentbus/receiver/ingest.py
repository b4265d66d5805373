"""The transport-independent half of the receiver: decode, store, count.

gRPC and OTLP/HTTP both end here, so validation, storage and the counters
behave identically whichever way telemetry arrives.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import Enum
from typing import Final

from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from .convert import MalformedRequest, log_records, metric_records, span_records
from .fast_spans import fast_span_values
from .limits import DEFAULT_LIMITS, DecodeBudget, DecodeLimits
from .store import Store


class Signal(Enum):
    """The three OTLP signals, valued by their OTLP/HTTP path."""

    TRACES = "/v1/traces"
    METRICS = "/v1/metrics"
    LOGS = "/v1/logs"

    @property
    def request_type(self) -> type[Message]:
        return _REQUEST_TYPES[self]

    def empty_response(self) -> Message:
        """The success response; partial_success stays unset."""
        return _RESPONSE_TYPES[self]()

    def parse(self, data: bytes) -> Message:
        """Decode binary protobuf, mapping decoder errors to :class:`MalformedRequest`."""
        message = self.request_type()
        try:
            message.ParseFromString(data)
        except (DecodeError, ValueError) as exc:
            raise MalformedRequest(f"invalid {self.name.lower()} protobuf: {exc}") from exc
        return message


_REQUEST_TYPES: Final[dict[Signal, type[Message]]] = {
    Signal.TRACES: ExportTraceServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
    Signal.LOGS: ExportLogsServiceRequest,
}
_RESPONSE_TYPES: Final[dict[Signal, type[Message]]] = {
    Signal.TRACES: ExportTraceServiceResponse,
    Signal.METRICS: ExportMetricsServiceResponse,
    Signal.LOGS: ExportLogsServiceResponse,
}
SIGNAL_BY_PATH: Final[dict[str, Signal]] = {s.value: s for s in Signal}


@dataclass(frozen=True, slots=True)
class ReceiverStats:
    """A snapshot of the receiver's counters."""

    requests: int = 0
    rejected: int = 0
    spans: int = 0
    metric_points: int = 0
    log_records: int = 0
    over_limit: int = 0
    """Requests refused because they expand past a decode or decompression bound
    (also counted in ``rejected``)."""
    disconnects: int = 0
    """Clients gone before their answer (mid-body, or while their export was stored)."""
    refused_connections: int = 0
    """HTTP connections closed on arrival because the connection cap was reached."""
    refused_full: int = 0
    """Requests refused because the database or the disk was full (also in ``rejected``);
    ``Store.write`` raises ``StorageFull``, the transports answer 507 / RESOURCE_EXHAUSTED."""


class Ingest:
    """Stores decoded export requests and keeps the counters."""

    def __init__(self, store: Store, limits: DecodeLimits = DEFAULT_LIMITS) -> None:
        self.store = store
        self.limits = limits
        self._lock = threading.Lock()
        self._requests = 0
        self._rejected = 0
        self._over_limit = 0
        self._disconnects = 0
        self._refused_connections = 0
        self._spans = 0
        self._points = 0
        self._logs = 0
        self._full = 0
        store.add_full_listener(self._storage_full)

    def export_protobuf(self, signal: Signal, data: bytes) -> Message:
        """Decode a binary protobuf request and store it, as ``export(signal,
        signal.parse(data))`` does; traces take the fast decoder when it applies.

        Raises :class:`MalformedRequest`, or :class:`~.limits.LimitExceeded` for a request
        past the decode limits, before anything is written."""
        if signal is Signal.TRACES:
            spans = fast_span_values(data, DecodeBudget(self.limits))
            if spans is not None:
                self.store.write(spans=spans)
                self._count(spans=spans.count)
                return signal.empty_response()
        return self.export(signal, signal.parse(data))

    def export(self, signal: Signal, request: Message) -> Message:
        """Validate and store one request; raises :class:`MalformedRequest` or
        :class:`~.limits.LimitExceeded` before writing."""
        spans = metrics = logs = 0
        budget = DecodeBudget(self.limits)
        if isinstance(request, ExportTraceServiceRequest):
            rows = span_records(request, budget)
            self.store.write(spans=rows)
            spans = len(rows)
        elif isinstance(request, ExportMetricsServiceRequest):
            points = metric_records(request, budget)
            self.store.write(metrics=points)
            metrics = len(points)
        elif isinstance(request, ExportLogsServiceRequest):
            records = log_records(request, budget)
            self.store.write(logs=records)
            logs = len(records)
        else:  # pragma: no cover - programming error
            raise TypeError(f"not an OTLP export request: {type(request).__name__}")
        self._count(spans=spans, metrics=metrics, logs=logs)
        return signal.empty_response()

    def _storage_full(self) -> None:
        with self._lock:
            self._full += 1

    def _count(self, *, spans: int = 0, metrics: int = 0, logs: int = 0) -> None:
        with self._lock:
            self._requests += 1
            self._spans += spans
            self._points += metrics
            self._logs += logs

    def rejected(self) -> None:
        """Count a request refused for auth, size, encoding or content."""
        with self._lock:
            self._requests += 1
            self._rejected += 1

    def over_limit(self) -> None:
        """Count a request refused for expanding past a bound (a rejection too)."""
        with self._lock:
            self._requests += 1
            self._rejected += 1
            self._over_limit += 1

    def disconnected(self) -> None:
        """Count a client gone before its answer."""
        with self._lock:
            self._disconnects += 1

    def refused_connection(self) -> None:
        """Count a connection closed on arrival at the connection cap."""
        with self._lock:
            self._refused_connections += 1

    def stats(self) -> ReceiverStats:
        with self._lock:
            return ReceiverStats(
                requests=self._requests,
                rejected=self._rejected,
                spans=self._spans,
                metric_points=self._points,
                log_records=self._logs,
                over_limit=self._over_limit,
                disconnects=self._disconnects,
                refused_connections=self._refused_connections,
                refused_full=self._full,
            )
