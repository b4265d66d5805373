"""Log correlation: every log record made during a run carries its trace and span id.

The attribute names are those of OpenTelemetry's logging instrumentation (``otelTraceID``,
``otelSpanID``, ``otelTraceSampled``), so existing formats keep working; with
``configure(logs=True)`` the records are also exported as OpenTelemetry logs.
"""

from __future__ import annotations

import logging
from typing import Final

from opentelemetry import trace

LOG_FORMAT: Final = (
    "%(asctime)s %(levelname)s %(name)s [trace_id=%(otelTraceID)s span_id=%(otelSpanID)s] "
    "%(message)s"
)


class TraceContextFilter(logging.Filter):
    """Adds the current span's ids to each record (zeros outside any span)."""

    def filter(self, record: logging.LogRecord) -> bool:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.otelTraceID = format(span_context.trace_id, "032x")
            record.otelSpanID = format(span_context.span_id, "016x")
            record.otelTraceSampled = span_context.trace_flags.sampled
        else:
            record.otelTraceID = "0" * 32
            record.otelSpanID = "0" * 16
            record.otelTraceSampled = False
        return True


def install_trace_context(
    logger: logging.Logger | None = None, fmt: str | None = LOG_FORMAT
) -> TraceContextFilter:
    """Add the filter to every handler of ``logger`` (root by default), set ``fmt`` on them."""
    target = logger or logging.getLogger()
    context_filter = TraceContextFilter()
    for handler in target.handlers:
        handler.addFilter(context_filter)
        if fmt is not None:
            handler.setFormatter(logging.Formatter(fmt))
    target.addFilter(context_filter)
    return context_filter
