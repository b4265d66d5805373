"""The trace context helpers, where they were first published; they live in the core module
:mod:`otel_agentbus.tracecontext` (API only) and are re-exported here unchanged."""

from ..tracecontext import (
    context_of,
    inject_traceparent,
    span_context_of,
    traceparent_from,
    use_span_of,
    with_current_context,
)

__all__ = [
    "context_of",
    "inject_traceparent",
    "span_context_of",
    "traceparent_from",
    "use_span_of",
    "with_current_context",
]
