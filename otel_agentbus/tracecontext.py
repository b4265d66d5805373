"""Trace context helpers: make an event's span current, carry it to threads and across HTTP.

Core, not telemetry: these need the OpenTelemetry API only, so the bus, runs, the runtime
and instrumentation use them without loading the SDK (``telemetry.context`` re-exports them).

The mirror never attaches a context on its own: an attach in one publish and a detach in
another (perhaps in another task) is what makes OpenTelemetry log "Failed to detach
context". These helpers attach and detach in the same frame, around code that does not
yield, so they are safe in generators and async generators.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import SpanContext, TraceFlags

from .events import Event

P = ParamSpec("P")
R = TypeVar("R")


def span_context_of(event: Event) -> SpanContext | None:
    """The OpenTelemetry span an event belongs to (stamped at publish), if any."""
    stamped = event._span_context
    if isinstance(stamped, SpanContext):
        return stamped
    correlation = event.correlation
    if correlation.trace_id and correlation.span_id:
        # An event read back from JSON: the ids survive, the sampled flag is assumed.
        return SpanContext(int(correlation.trace_id, 16), int(correlation.span_id, 16),
                           is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return None


def context_of(event: Event) -> otel_context.Context:
    """An OpenTelemetry Context whose current span is the event's span."""
    span_context = span_context_of(event)
    if span_context is None:
        return otel_context.get_current()
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))


@contextmanager
def use_span_of(event: Event) -> Iterator[None]:
    """Make the event's span current: spans started inside become its children.

    Do not ``yield`` (in a generator) inside the block; use it around the work itself.
    """
    token = otel_context.attach(context_of(event))
    try:
        yield
    finally:
        otel_context.detach(token)


def with_current_context(function: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``function`` to run in the caller's context (OpenTelemetry's included).

    ``ThreadPoolExecutor.submit``, ``loop.run_in_executor`` and ``threading.Thread`` start
    with an empty context; ``executor.submit(with_current_context(work))`` keeps the trace.
    """
    captured = contextvars.copy_context()

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return captured.copy().run(function, *args, **kwargs)

    return run


def inject_traceparent(
    headers: MutableMapping[str, str] | None = None, event: Event | None = None
) -> MutableMapping[str, str]:
    """Write ``traceparent`` (and ``tracestate``) for the current span, or the event's."""
    carrier: MutableMapping[str, str] = {} if headers is None else headers
    inject(carrier, context=context_of(event) if event is not None else None)
    return carrier


def traceparent_from(headers: MutableMapping[str, str] | dict[str, str]) -> str | None:
    """The ``traceparent`` of incoming headers, validated; None when absent or malformed.

    Put it in a run's ``agent.run.started`` payload as ``traceparent`` to join that trace.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    if "traceparent" not in lowered:
        return None
    span_context = trace.get_current_span(extract(lowered)).get_span_context()
    return lowered["traceparent"] if span_context.is_valid else None
