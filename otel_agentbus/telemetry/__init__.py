"""Telemetry: the mirror from bus events to OpenTelemetry spans, span events and metrics."""

from .config import ConfigurationError, CountingSpanExporter, Telemetry, configure
from .content import CaptureMode, ContentPolicy
from .context import (
    context_of,
    inject_traceparent,
    span_context_of,
    traceparent_from,
    use_span_of,
    with_current_context,
)
from .logs import TraceContextFilter, install_trace_context
from .mirror import TelemetryMirror
from .signals import install_signal_handlers, uninstall_signal_handlers

__all__ = [
    "CaptureMode",
    "ConfigurationError",
    "ContentPolicy",
    "CountingSpanExporter",
    "Telemetry",
    "TelemetryMirror",
    "TraceContextFilter",
    "configure",
    "context_of",
    "inject_traceparent",
    "install_signal_handlers",
    "install_trace_context",
    "span_context_of",
    "traceparent_from",
    "uninstall_signal_handlers",
    "use_span_of",
    "with_current_context",
]
