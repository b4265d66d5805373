"""Instrumentation overhead per tool call, on the caller's thread.

A function doing no work, called ``calls`` times inside an open run (or the tool's own
parent span), its span handed to a BatchSpanProcessor whose exporter counts and drops
spans (no network). Each side runs in its own interpreter (``python -m bench.tool_calls
worker SIDE``): traceloop-sdk and logfire install global tracer providers. The parent
alternates rounds between the workers and takes medians of time per call.

Sides:
  sdk            bare OpenTelemetry SDK: ``tracer.start_span(name, attributes=...)`` +
                 ``end()``, six attributes (the cheapest way to make the same span)
  sdk_current    the SDK as a decorator: ``@tracer.start_as_current_span(...)``
  ours_decorator ``@otel_agentbus.instrument.tool``: publishes agent.tool.call.started /
                 completed on a mirrored bus, the mirror builds the span (metrics on)
  ours_events    the same two events published by hand around the call (the equivalent
                 before ``instrument.tool`` existed)
  traceloop      traceloop-sdk's ``@tool`` (``Traceloop.init(exporter=...)``, no
                 instrumentations, telemetry and metrics off)
  logfire        ``with logfire.span(...)`` in the function (``send_to_logfire=False``,
                 no console, no metrics)
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from .common import batch_processor, null_exporter

SIDES = ("sdk", "sdk_current", "ours_decorator", "ours_events", "traceloop", "logfire")
PEER_MODULE = {"traceloop": "traceloop.sdk", "logfire": "logfire"}

ATTRIBUTES = {
    "gen_ai.operation.name": "execute_tool",
    "gen_ai.tool.name": "search",
    "gen_ai.tool.type": "function",
    "gen_ai.tool.call.id": "call-1",
    "agentbus.run.id": "run-1",
    "gen_ai.agent.name": "bench",
}

# Nothing may leave the machine: no vendor endpoints, no usage telemetry.
QUIET_ENV = {
    "TRACELOOP_TELEMETRY": "false",
    "TRACELOOP_METRICS_ENABLED": "false",
    "TRACELOOP_LOGGING_ENABLED": "false",
    "TRACELOOP_BASE_URL": "http://127.0.0.1:9",
    "TRACELOOP_API_KEY": "",
    "LOGFIRE_SEND_TO_LOGFIRE": "false",
    "LOGFIRE_TOKEN": "",
    "LOGFIRE_CONSOLE": "false",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "",
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "",
}


class Side:
    """One side: ``call`` is the instrumented no-op; ``close`` flushes and says how many
    spans reached the exporter."""

    call: Callable[[], object]

    def close(self) -> int:
        raise NotImplementedError


class SDK(Side):
    def __init__(self, current: bool) -> None:
        from opentelemetry.sdk.trace import TracerProvider

        self.exporter = null_exporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(batch_processor(self.exporter))
        tracer = self.provider.get_tracer("bench")
        self.parent = tracer.start_as_current_span("invoke_agent bench")
        self.parent.__enter__()
        if current:
            @tracer.start_as_current_span("execute_tool search", attributes=ATTRIBUTES)
            def search() -> None:
                return None

            self.call = search
        else:
            start_span = tracer.start_span

            def search_plain() -> None:
                span = start_span("execute_tool search", attributes=ATTRIBUTES)
                span.end()

            self.call = search_plain

    def close(self) -> int:
        self.parent.__exit__(None, None, None)
        self.provider.shutdown()
        spans: int = self.exporter.spans - 1  # the parent span
        return spans


class Ours(Side):
    def __init__(self, decorator: bool) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider

        from otel_agentbus import Event, EventBus, configure
        from otel_agentbus.runs import RunScope

        self.exporter = null_exporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(batch_processor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        self.telemetry = configure(tracer_provider=self.provider,
                                   meter_provider=self.meter_provider)
        self.bus = self.telemetry.attach(EventBus())
        self.run = RunScope(self.bus, "bench", run_id="run-1")
        handle = self.run.__enter__()
        if decorator:
            from otel_agentbus.instrument import tool

            @tool("search")
            def search() -> None:
                return None

            self.call = search
        else:
            publish = self.bus.publish_nowait
            scope = handle.scope
            counter = iter(range(1 << 62))

            def search_events() -> None:
                call_id = f"call-{next(counter)}"
                publish(Event("agent.tool.call.started",
                              {"tool_call_id": call_id, "tool_name": "search"}, scope=scope))
                publish(Event("agent.tool.call.completed",
                              {"tool_call_id": call_id, "tool_name": "search",
                               "is_error": False}, scope=scope))

            self.call = search_events

    def close(self) -> int:
        self.run.__exit__(None, None, None)
        self.telemetry.shutdown()
        self.provider.shutdown()
        self.meter_provider.shutdown()
        # The run span itself is not a tool call.
        spans: int = self.exporter.spans - 2  # run span + its pending record
        return spans


class Traceloop(Side):
    def __init__(self) -> None:
        from opentelemetry import trace
        from traceloop.sdk import Traceloop as TL
        from traceloop.sdk.decorators import tool

        self.exporter = null_exporter()
        TL.init(app_name="bench", exporter=self.exporter, disable_batch=False,
                telemetry_enabled=False, instruments=set(), should_enrich_metrics=False)
        self.parent = trace.get_tracer("bench").start_as_current_span("invoke_agent bench")
        self.parent.__enter__()

        @tool(name="search")
        def search() -> None:
            return None

        self.call = search

    def close(self) -> int:
        from opentelemetry import trace

        self.parent.__exit__(None, None, None)
        provider: Any = trace.get_tracer_provider()
        provider.force_flush()
        spans: int = self.exporter.spans - 1  # the parent span
        return spans


class Logfire(Side):
    def __init__(self) -> None:
        import logfire

        self.exporter = null_exporter()
        logfire.configure(send_to_logfire=False, console=False, metrics=False,
                          service_name="bench",
                          additional_span_processors=[batch_processor(self.exporter)])
        self.parent = logfire.span("invoke_agent bench")
        self.parent.__enter__()
        span = logfire.span
        attributes = dict(ATTRIBUTES)

        def search() -> None:
            with span("execute_tool search", **attributes):
                return None

        self.call = search

    def close(self) -> int:
        import logfire

        self.parent.__exit__(None, None, None)
        logfire.force_flush()
        spans: int = self.exporter.spans - 1
        return spans


def make(side: str) -> Side:
    if side == "sdk":
        return SDK(current=False)
    if side == "sdk_current":
        return SDK(current=True)
    if side == "ours_decorator":
        return Ours(decorator=True)
    if side == "ours_events":
        return Ours(decorator=False)
    if side == "traceloop":
        return Traceloop()
    if side == "logfire":
        return Logfire()
    raise SystemExit(f"unknown side {side!r}")


def available(side: str) -> str | None:
    """None if the side can run here, else why not."""
    import importlib.util

    module = PEER_MODULE.get(side)
    if module is not None:
        try:
            if importlib.util.find_spec(module) is None:
                return f"{module} not installed"
        except ImportError:
            return f"{module} not installed"
    if side == "ours_decorator":
        try:
            from otel_agentbus import instrument
        except ImportError:
            return "otel_agentbus.instrument not importable"
        if not hasattr(instrument, "tool"):
            return "otel_agentbus.instrument.tool does not exist yet"
    return None


def worker(side: str) -> int:
    """Line protocol: ``N`` runs N calls and answers µs per call; ``quit`` answers the
    number of spans exported, so a side that lost spans is caught."""
    reason = available(side)
    if reason is not None:
        print(json.dumps({"unavailable": reason}), flush=True)
        return 0
    import gc

    instance = make(side)
    call = instance.call
    calls_made = 0
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            exported = instance.close()
            print(json.dumps({"exported": exported, "calls": calls_made}), flush=True)
            return 0
        calls = int(command)
        gc.collect()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        elapsed = time.perf_counter() - start
        calls_made += calls
        print(json.dumps({"us": elapsed / calls * 1e6}), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        os.environ.update(QUIET_ENV)
        raise SystemExit(worker(sys.argv[2]))
    raise SystemExit("usage: python -m bench.tool_calls worker SIDE")
