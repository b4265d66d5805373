"""The names table against what the demo workload really exports, in both directions.

The demo workload runs in-process with content capture on into in-memory span and metric
exporters; every documented name must show up there, and every name it exports under the
project's namespaces must be documented. The event limit per span is lowered so that the
batch spans (``agentbus.events ...``) appear too.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from telemetry_helpers import forget

from otel_agentbus import EventBus, configure
from otel_agentbus import semconv as sc
from otel_agentbus.demo.workload import EventCounter, plan_runs, run_workload
from otel_agentbus.telemetry.content import CaptureMode, ContentPolicy

OUR_PREFIXES = ("gen_ai.", "error.", "agentbus.", "openinference.", "input.", "output.")
"""The namespaces whose names the table owns; others (``service.name``, metric labels such
as ``outcome``) are not the project's to document."""


@dataclass
class Exported:
    spans: tuple[ReadableSpan, ...]
    attributes: set[str]
    """Span attribute keys."""
    event_attributes: set[str]
    event_names: set[str]
    metric_names: set[str]
    metric_attributes: set[str]


async def _export_demo(capture: CaptureMode) -> Exported:
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    telemetry = configure(
        service_name="names-test", span_exporter=spans,
        meter_provider=MeterProvider(metric_readers=[reader]),
        content=ContentPolicy(capture=capture, max_events_per_span=2),
        signal_handlers=False, mirror_new_buses=False)
    forget(telemetry)
    try:
        bus = telemetry.attach(EventBus())
        bus.subscribe(EventCounter(), buffer=100_000)  # as the demo's runner does
        await run_workload(bus, plan_runs(6, 42))
        metrics = reader.get_metrics_data()  # while the subscriber has a queue to observe
        await bus.close()
        assert telemetry.force_flush(10)
    finally:
        telemetry.shutdown(timeout=10)
    finished = spans.get_finished_spans()
    attributes = {key for span in finished for key in (span.attributes or {})}
    event_attributes = {key for span in finished for event in span.events
                        for key in (event.attributes or {})}
    metric_names: set[str] = set()
    metric_attributes: set[str] = set()
    assert metrics is not None
    for resource in metrics.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                metric_names.add(metric.name)
                for point in metric.data.data_points:
                    metric_attributes.update(point.attributes or {})
    return Exported(finished, attributes, event_attributes,
                    {event.name for span in finished for event in span.events},
                    metric_names, metric_attributes)


@pytest.fixture(scope="module")
def exported() -> Exported:
    return asyncio.run(_export_demo(CaptureMode.SPAN_ONLY))


def _documented(kind: str, *, exported: bool = True) -> list[str]:
    return [name for group in sc.NAME_TABLE if group.kind == kind
            and group.exported == exported for name in group.names]


def _pattern(name: str) -> re.Pattern[str]:
    """A documented name as a regular expression (``{payload key}`` stands for one key)."""
    return re.compile(re.escape(name).replace(re.escape(sc.PAYLOAD_KEY), r"[A-Za-z0-9_]+"))


def _unmatched(names: Iterable[str], documented: Iterable[str]) -> list[str]:
    exact = {name for name in documented if sc.PAYLOAD_KEY not in name}
    patterns = [_pattern(name) for name in documented if sc.PAYLOAD_KEY in name]
    return sorted(name for name in names if name not in exact
                  and not any(p.fullmatch(name) for p in patterns))


def _ours(names: Iterable[str]) -> set[str]:
    return {name for name in names if name.startswith(OUR_PREFIXES)}


def test_every_documented_attribute_is_emitted(exported: Exported) -> None:
    emitted = exported.attributes | exported.event_attributes | exported.metric_attributes
    missing = [name for name in _documented("attribute")
               if not any(_pattern(name).fullmatch(key) for key in emitted)]
    assert missing == [], "documented, never emitted by the demo workload"


def test_every_emitted_attribute_is_documented(exported: Exported) -> None:
    documented = _documented("attribute")
    exact = [name for name in documented if sc.PAYLOAD_KEY not in name]
    emitted = _ours(exported.attributes | exported.metric_attributes)
    assert len(emitted) > 60
    assert _unmatched(emitted, exact) == [], "emitted on spans or metrics, not documented"
    # Only span events carry payload fields under their own keys.
    events = _ours(exported.event_attributes)
    assert _unmatched(events, documented) == [], "emitted on span events, not documented"


def test_in_process_names_never_reach_a_span(exported: Exported) -> None:
    hidden = _documented("attribute", exported=False)
    assert hidden == [sc.EVENT_BRIDGED]
    assert not set(hidden) & (exported.attributes | exported.event_attributes
                              | exported.metric_attributes)


def test_span_events_and_span_names(exported: Exported) -> None:
    documented = set(_documented("span event"))
    assert documented <= exported.event_names
    # Other kinds become events named after the kind (``agent.*``), never anything else.
    assert {name for name in exported.event_names - documented
            if not name.startswith("agent.")} == set()
    for prefix in _documented("span name"):
        assert any(span.name.startswith(prefix + " ") for span in exported.spans), prefix


def test_metrics_both_ways(exported: Exported) -> None:
    documented = set(_documented("metric"))
    assert documented - exported.metric_names == set(), "documented, never emitted"
    assert exported.metric_names - documented == set(), "emitted, not documented"


def test_every_span_is_typed_for_genai_and_openinference_viewers(
    exported: Exported,
) -> None:
    kinds = {sc.OP_INVOKE_AGENT: sc.OI_AGENT, sc.OP_INVOKE_WORKFLOW: sc.OI_CHAIN,
             sc.OP_CHAT: sc.OI_LLM, sc.OP_EXECUTE_TOOL: sc.OI_TOOL}
    for span in exported.spans:
        attributes = span.attributes or {}
        operation = attributes.get(sc.GEN_AI_OPERATION_NAME)
        kind = attributes.get(sc.OPENINFERENCE_SPAN_KIND)
        if operation is None:  # the pending records and event batches: generic steps
            assert span.name.startswith((sc.PENDING_SPAN_PREFIX + " ", "agentbus.events ")), (
                span.name)
            assert kind == sc.OI_CHAIN
        else:
            assert kinds[str(operation)] == kind, span.name
    # One agent span per run, pending records included.
    agents = [s for s in exported.spans
              if (s.attributes or {}).get(sc.GEN_AI_OPERATION_NAME) == sc.OP_INVOKE_AGENT]
    runs = {(s.attributes or {})[sc.RUN_ID] for s in exported.spans}
    assert len(agents) == len(runs) == 6
    assert all((s.attributes or {}).get(sc.OPENINFERENCE_SPAN_KIND) != sc.OI_AGENT
               for s in exported.spans if s not in agents)


def test_schema_url_on_the_instrumentation_scope(exported: Exported) -> None:
    scopes = {(s.instrumentation_scope.name, s.instrumentation_scope.schema_url)
              for s in exported.spans if s.instrumentation_scope is not None}
    assert scopes == {(sc.INSTRUMENTATION_SCOPE, sc.SCHEMA_URL)}


def test_agent_spans_carry_the_runs_usage_and_model(exported: Exported) -> None:
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in exported.spans:
        assert span.context is not None
        by_trace.setdefault(span.context.trace_id, []).append(span)
    for spans in by_trace.values():
        (agent,) = [s for s in spans if (s.attributes or {}).get(sc.GEN_AI_OPERATION_NAME)
                    == sc.OP_INVOKE_AGENT]
        chats = [s.attributes or {} for s in spans
                 if (s.attributes or {}).get(sc.GEN_AI_OPERATION_NAME) == sc.OP_CHAT]
        attributes = agent.attributes or {}
        for usage in (sc.GEN_AI_USAGE_INPUT_TOKENS, sc.GEN_AI_USAGE_OUTPUT_TOKENS):
            assert attributes[usage] == sum(int(str(c[usage])) for c in chats if usage in c)
        assert attributes[sc.GEN_AI_REQUEST_MODEL] == chats[0][sc.GEN_AI_REQUEST_MODEL]
        assert attributes[sc.GEN_AI_PROVIDER_NAME] == chats[0][sc.GEN_AI_PROVIDER_NAME]


def test_run_content_in_the_message_schema(exported: Exported) -> None:
    agents = [s.attributes or {} for s in exported.spans
              if (s.attributes or {}).get(sc.GEN_AI_OPERATION_NAME) == sc.OP_INVOKE_AGENT]
    for attributes in agents:
        (message,) = json.loads(str(attributes[sc.GEN_AI_INPUT_MESSAGES]))
        assert message["role"] == "user"
        assert message["parts"] == [{"type": "text", "content": attributes[sc.INPUT_VALUE]}]
    completed = [a for a in agents if a.get(sc.RUN_STATUS) == sc.STATUS_COMPLETED]
    assert completed
    for attributes in completed:
        (message,) = json.loads(str(attributes[sc.GEN_AI_OUTPUT_MESSAGES]))
        assert message["role"] == "assistant" and message["finish_reason"] == "stop"
        assert message["parts"][0]["content"] == attributes[sc.OUTPUT_VALUE]


def test_capture_off_exports_no_content() -> None:
    quiet = asyncio.run(_export_demo(CaptureMode.NO_CONTENT))
    assert quiet.attributes & sc.CONTENT_ATTRIBUTES == set()
    assert len(quiet.spans) > 50
