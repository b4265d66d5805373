"""Bridged events (``agentbus.bridged``): telemetry another instrumentation exported already.
The mirror records their metrics and builds no span, and keeps the span ids they came with."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from telemetry_helpers import HarnessFactory, hex_span, hex_trace

from otel_agentbus import semconv as sc
from otel_agentbus.events import Correlation, Event, Scope

BRIDGED = {sc.EVENT_BRIDGED: True}
RUN = Scope(run_id="run-b", agent="elsewhere")


def _counts(reader: InMemoryMetricReader, name: str) -> float:
    data = reader.get_metrics_data()
    total = 0.0
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    total += sum(getattr(p, "count", None) or getattr(p, "value", 0)
                                 for p in metric.data.data_points)
    return total


async def test_bridged_run_records_metrics_and_exports_nothing(make: HarnessFactory) -> None:
    reader = InMemoryMetricReader()
    harness = make(metrics_enabled=True, meter_provider=MeterProvider(metric_readers=[reader]))
    given = Correlation("ab" * 16, "cd" * 8)
    for kind, payload in (
        ("agent.run.started", {}),
        ("agent.llm.request", {"call_id": "l", "model": "m"}),
        ("agent.llm.response", {"call_id": "l", "model": "m", "input_tokens": 3}),
        ("agent.tool.call.started", {"tool_call_id": "t", "tool_name": "x"}),
        ("agent.tool.call.completed", {"tool_call_id": "t", "tool_name": "x"}),
        ("agent.run.completed", {}),
    ):
        harness.bus.publish_nowait(Event(kind, payload, scope=RUN, attrs=BRIDGED,
                                         correlation=given))
    assert harness.exporter.get_finished_spans() == ()
    assert harness.telemetry.export_stats()["spans_emitted"] == 0
    assert all(e.correlation == given for e in harness.bus.history(limit=None))
    assert harness.telemetry.force_flush(10)
    assert _counts(reader, sc.METRIC_RUNS) == 1
    assert _counts(reader, sc.METRIC_TOOL_CALLS) == 1
    assert _counts(reader, sc.METRIC_OPERATION_DURATION) == 1


async def test_bridged_events_take_the_current_span_and_others_are_unchanged(
        make: HarnessFactory) -> None:
    harness = make()
    with harness.tracer().start_as_current_span("their invoke_agent") as theirs:
        started = Event("agent.run.started", {}, scope=RUN, attrs=BRIDGED)
        harness.bus.publish_nowait(started)
        orphan = Event("agent.tool.call.started", {"tool_call_id": "o", "tool_name": "y"},
                       attrs=BRIDGED)
        harness.bus.publish_nowait(orphan)
        harness.bus.publish_nowait(Event("agent.tool.call.completed",
                                         {"tool_call_id": "o", "tool_name": "y"},
                                         attrs=BRIDGED))
    harness.bus.publish_nowait(Event("agent.run.completed", {}, scope=RUN, attrs=BRIDGED))
    assert started.span_id == hex_span(theirs) and started.trace_id == hex_trace(theirs)
    assert [s.name for s in harness.exporter.get_finished_spans()] == ["their invoke_agent"]
    # An event without the marker still gets a span of its own.
    harness.bus.publish_nowait(Event("agent.run.started", {}, scope=Scope(run_id="r2",
                                                                          agent="ours")))
    harness.bus.publish_nowait(Event("agent.run.completed", {}, scope=Scope(run_id="r2",
                                                                            agent="ours")))
    assert [s.name for s in harness.spans()] == ["their invoke_agent", "invoke_agent ours"]
