"""An embedded OTLP receiver (gRPC + HTTP) that stores telemetry in SQLite.

For development and tests: the demo runs on a fresh machine without a
collector, and tests can assert on exactly what was exported.
"""

from __future__ import annotations

from .ingest import ReceiverStats
from .limits import DecodeLimits, HTTPLimits
from .queries import (
    LogRecord,
    MetricPoint,
    NotAReceiverDatabase,
    RunRow,
    SpanEvent,
    SpanNode,
    SpanRow,
    TraceNotFoundError,
    TraceTree,
    get_trace,
    list_runs,
    log_records,
    metric_points,
    trace_ids,
)
from .server import DEFAULT_MAX_BODY, TOKEN_ENV, Receiver

__all__ = [
    "DEFAULT_MAX_BODY",
    "TOKEN_ENV",
    "DecodeLimits",
    "HTTPLimits",
    "LogRecord",
    "MetricPoint",
    "NotAReceiverDatabase",
    "Receiver",
    "ReceiverStats",
    "RunRow",
    "SpanEvent",
    "SpanNode",
    "SpanRow",
    "TraceNotFoundError",
    "TraceTree",
    "get_trace",
    "list_runs",
    "log_records",
    "metric_points",
    "trace_ids",
]
