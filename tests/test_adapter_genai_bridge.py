"""The GenAI bridge: finished GenAI-convention spans of a real SDK tracer (hand-made, and
pydantic-ai's own instrumentation) become bridged bus events; nothing is exported twice."""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from adapter_helpers import in_order, kinds, metric_counts, read_back_run, tree_names
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode
from telemetry_helpers import Harness, HarnessFactory, Receiver, hex_span, hex_trace, start_receiver

from otel_agentbus import EventBus
from otel_agentbus import semconv as sc
from otel_agentbus.adapters import genai_bridge
from otel_agentbus.adapters._common import AdapterError
from otel_agentbus.events import Event
from otel_agentbus.runs import RunScope


@pytest.fixture
async def bridged(make: HarnessFactory) -> AsyncIterator[tuple[Harness, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    harness = make(metrics_enabled=True, meter_provider=MeterProvider(metric_readers=[reader]))
    genai_bridge.install(harness.bus, tracer_provider=harness.provider)
    yield harness, reader
    genai_bridge.uninstall(harness.provider)


def agent_trace(harness: Harness, *, failing_tool: bool = False) -> dict[str, Any]:
    """An app's own GenAI spans: an agent whose LLM call and tool sit under a non-GenAI span,
    and a sub-agent called as a tool. Returns the spans by a short name."""
    tracer = harness.tracer()
    spans: dict[str, Any] = {}
    run = {sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: "planner",
           sc.GEN_AI_CONVERSATION_ID: "conv-9"}
    chat = {sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_REQUEST_MODEL: "gpt-x",
            sc.GEN_AI_PROVIDER_NAME: "openai", sc.GEN_AI_RESPONSE_MODEL: "gpt-x-0301",
            sc.GEN_AI_USAGE_INPUT_TOKENS: 120, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 30,
            sc.GEN_AI_RESPONSE_FINISH_REASONS: ("tool_calls",)}
    research = {sc.GEN_AI_OPERATION_NAME: "execute_tool", sc.GEN_AI_TOOL_NAME: "research",
                sc.GEN_AI_TOOL_CALL_ID: "call-1"}
    sub = {sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: "researcher"}
    search = {sc.GEN_AI_OPERATION_NAME: "execute_tool", sc.GEN_AI_TOOL_NAME: "search"}
    with (tracer.start_as_current_span("invoke_agent planner", attributes=run) as spans["run"],
          tracer.start_as_current_span("agent step") as spans["step"]):
        with tracer.start_as_current_span("chat gpt-x", attributes=chat) as spans["chat"]:
            pass
        with (tracer.start_as_current_span("execute_tool research",
                                           attributes=research) as spans["tool"],
              tracer.start_as_current_span("invoke_agent researcher",
                                           attributes=sub) as spans["sub"],
              tracer.start_as_current_span("execute_tool search",
                                           attributes=search) as spans["search"]):
            if failing_tool:
                spans["search"].set_status(Status(StatusCode.ERROR, "no results"))
                spans["search"].set_attribute(sc.ERROR_TYPE, "EmptyResult")
    return spans


async def test_spans_become_bridged_events_in_tree_order(
        bridged: tuple[Harness, InMemoryMetricReader]) -> None:
    harness, _ = bridged
    spans = agent_trace(harness)
    events = in_order(harness.bus.history(limit=None))
    assert kinds(events) == [
        "agent.run.started", "agent.llm.request", "agent.llm.response",
        "agent.tool.call.started", "agent.run.started", "agent.tool.call.started",
        "agent.tool.call.completed", "agent.run.completed", "agent.tool.call.completed",
        "agent.run.completed",
    ]
    assert all(e.attrs.get(sc.EVENT_BRIDGED) is True for e in events)
    outer, sub = events[0], events[4]
    assert outer.scope.agent == "planner" and outer.scope.session_id == "conv-9"
    assert sub.scope.agent == "researcher" and sub.scope.run_id != outer.scope.run_id
    assert sub.scope.session_id == "conv-9"  # a sub-agent stays in the conversation
    assert events[5].scope.run_id == sub.scope.run_id
    assert events[-2].scope.run_id == outer.scope.run_id
    # The events carry the original spans' ids and times.
    assert outer.trace_id == hex_trace(spans["run"]) and outer.span_id == hex_span(spans["run"])
    assert events[1].span_id == hex_span(spans["chat"])
    assert events[1].time_ns == spans["chat"].start_time
    assert events[2].time_ns == spans["chat"].end_time
    response = events[2].payload
    assert (response["input_tokens"], response["output_tokens"]) == (120, 30)
    assert response["response_model"] == "gpt-x-0301"
    assert list(response["finish_reasons"]) == ["tool_calls"]
    assert events[1].payload["model"] == "gpt-x" and events[1].payload["provider"] == "openai"
    assert events[3].payload["tool_call_id"] == "call-1"


async def test_nothing_is_exported_twice_and_metrics_are_recorded(
        bridged: tuple[Harness, InMemoryMetricReader]) -> None:
    harness, reader = bridged
    agent_trace(harness, failing_tool=True)
    exported = harness.exporter.get_finished_spans()
    assert sorted(s.name for s in exported) == sorted([
        "invoke_agent planner", "agent step", "chat gpt-x", "execute_tool research",
        "invoke_agent researcher", "execute_tool search"])
    assert not [s for s in exported if s.instrumentation_scope
                and s.instrumentation_scope.name == sc.INSTRUMENTATION_SCOPE]
    assert harness.telemetry.force_flush(10)
    durations = metric_counts(reader, sc.METRIC_OPERATION_DURATION)
    assert [(a[sc.GEN_AI_REQUEST_MODEL], a[sc.GEN_AI_AGENT_NAME], n) for a, n in durations] \
        == [("gpt-x", "planner", 1.0)]
    tokens = {a[sc.GEN_AI_TOKEN_TYPE]: n for a, n in
              metric_counts(reader, sc.METRIC_TOKEN_USAGE)}
    assert tokens == {"input": 1.0, "output": 1.0}
    tools = {(a[sc.GEN_AI_TOOL_NAME], a["status"]): n for a, n in
             metric_counts(reader, sc.METRIC_TOOL_CALLS)}
    assert tools == {("research", "ok"): 1.0, ("search", "error"): 1.0}
    runs = {a[sc.GEN_AI_AGENT_NAME]: n for a, n in metric_counts(reader, sc.METRIC_RUNS)}
    assert runs == {"planner": 1.0, "researcher": 1.0}
    failed = harness.bus.history(kinds="agent.tool.call.completed")
    search = next(e for e in failed if e.payload["tool_name"] == "search")
    assert search.payload["is_error"] is True
    assert search.payload["error"] == "no results"
    assert search.payload["error_type"] == "EmptyResult"


async def test_our_own_spans_are_not_fed_back(
        bridged: tuple[Harness, InMemoryMetricReader]) -> None:
    harness, _ = bridged
    with RunScope(harness.bus, "native") as run:
        run.publish("agent.tool.call.started", {"tool_call_id": "t", "tool_name": "x"})
        run.publish("agent.tool.call.completed", {"tool_call_id": "t", "tool_name": "x"})
    assert {s.name for s in harness.spans()} == {"invoke_agent native", "execute_tool x"}
    assert kinds(in_order(harness.bus.history(limit=None))) == [
        "agent.run.started", "agent.tool.call.started", "agent.tool.call.completed",
        "agent.run.completed"]
    assert genai_bridge.installed(harness.provider) is not None
    assert genai_bridge.installed(harness.provider).spans_bridged == 0  # type: ignore[union-attr]


async def test_a_bare_llm_span_is_an_llm_call_outside_any_run(
        bridged: tuple[Harness, InMemoryMetricReader]) -> None:
    harness, _ = bridged
    with harness.tracer().start_as_current_span("chat m", attributes={
            sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_REQUEST_MODEL: "m"}):
        pass
    with harness.tracer().start_as_current_span("GET /health"):
        pass
    events = in_order(harness.bus.history(limit=None))
    assert kinds(events) == ["agent.llm.request", "agent.llm.response"]
    assert events[0].scope.run_id is None
    assert [s.name for s in harness.exporter.get_finished_spans()] == ["chat m", "GET /health"]


async def test_pydantic_ai_native_spans_are_bridged(
        bridged: tuple[Harness, InMemoryMetricReader]) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.instrumented import InstrumentationSettings
    from pydantic_ai.models.test import TestModel

    harness, _ = bridged
    agent = Agent(TestModel(), name="helper")
    agent.instrument = InstrumentationSettings(tracer_provider=harness.provider)

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        return a + b

    await agent.run("add two numbers")
    events = in_order(harness.bus.history(limit=None))
    assert kinds(events) == [
        "agent.run.started", "agent.llm.request", "agent.llm.response",
        "agent.tool.call.started", "agent.tool.call.completed", "agent.llm.request",
        "agent.llm.response", "agent.run.completed"]
    assert events[0].scope.agent == "helper"
    assert events[1].payload["model"] == "test" and events[1].payload["provider"] == "test"
    assert events[2].payload["input_tokens"] > 0
    assert events[3].payload["tool_name"] == "add"
    native = {s.name: s for s in harness.exporter.get_finished_spans()}
    assert events[0].span_id == hex_span(native["invoke_agent helper"])
    assert len(harness.exporter.get_finished_spans()) == 4  # pydantic-ai's own, once


async def test_install_twice_and_uninstall(make: HarnessFactory) -> None:
    harness = make()
    first = genai_bridge.install(harness.bus, tracer_provider=harness.provider)
    assert genai_bridge.install(EventBus(), tracer_provider=harness.provider) is first
    genai_bridge.uninstall(harness.provider)
    genai_bridge.uninstall(harness.provider)
    agent_trace(harness)
    assert harness.bus.history(limit=None) == []
    again = genai_bridge.install(harness.bus, tracer_provider=harness.provider)
    assert again is first  # the SDK keeps the processor: it wakes up, not a second one
    agent_trace(harness)
    assert len(harness.bus.history(kinds="agent.run.started")) == 2
    genai_bridge.uninstall(harness.provider)


async def test_a_new_provider_never_gets_a_collected_providers_bridge() -> None:
    # CPython hands a freed provider's memory, and so its id(), to the next one: each new
    # provider must still get a bridge registered on itself, and the old ones go away.
    run = {sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: "courier"}
    seen_ids: set[int] = set()
    reused = 0
    gone: list[weakref.ref[TracerProvider]] = []
    # Until an id has come back a few times (whether the allocator hands the same memory
    # back at once depends on what else was allocated meanwhile, so the count varies).
    for _ in range(200):
        if reused >= 3:
            break
        provider, bus = TracerProvider(shutdown_on_exit=False), EventBus()
        reused += id(provider) in seen_ids
        seen_ids.add(id(provider))
        gone.append(weakref.ref(provider))
        bridge = genai_bridge.install(bus, tracer_provider=provider)
        assert bridge.bus is bus
        with provider.get_tracer("the-app").start_as_current_span("invoke_agent courier",
                                                                 attributes=run):
            pass
        assert len(bus.history(kinds="agent.run.started")) == 1
        genai_bridge.uninstall(provider)
        provider.shutdown()
        del provider, bridge
        gc.collect()
    assert reused >= 3  # ids were reused, so the case above was exercised
    assert all(ref() is None for ref in gone)  # the registry keeps no provider alive


async def test_a_fault_never_breaks_the_instrumented_code(make: HarnessFactory) -> None:
    harness = make()
    bridge = genai_bridge.install(harness.bus, tracer_provider=harness.provider)
    await harness.bus.close()
    agent_trace(harness)  # every publish fails: the spans still end and export
    assert bridge.faults.count > 0
    assert len(harness.exporter.get_finished_spans()) == 6
    genai_bridge.uninstall(harness.provider)


async def test_traces_whose_root_never_ends_are_bounded(
        bridged: tuple[Harness, InMemoryMetricReader], monkeypatch: pytest.MonkeyPatch) -> None:
    harness, _ = bridged
    monkeypatch.setattr(genai_bridge, "MAX_PENDING_TRACES", 2)
    tracer = harness.tracer()
    chat = {sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_REQUEST_MODEL: "m"}
    roots = [tracer.start_span(f"request {n}") for n in range(3)]
    for root in roots:
        with trace.use_span(root), tracer.start_as_current_span("chat m", attributes=chat):
            pass
    # Three traces wait for their roots; past the limit the oldest is published as it is.
    assert kinds(in_order(harness.bus.history(limit=None))) == [
        "agent.llm.request", "agent.llm.response"]
    for root in roots:
        root.end()
    assert len(harness.bus.history(kinds="agent.llm.response")) == 3


def test_needs_an_sdk_provider() -> None:
    from opentelemetry.trace import NoOpTracerProvider

    with pytest.raises(AdapterError, match="SDK TracerProvider"):
        genai_bridge.install(EventBus(), tracer_provider=NoOpTracerProvider())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(tmp_path_factory.mktemp("adapter-bridge"))
    yield started
    started.stop()


async def test_exported_once_over_otlp_and_read_back(receiver: Receiver) -> None:
    from adapter_helpers import otlp_bus

    seen: list[Event] = []
    with otlp_bus(receiver, "bridge-e2e") as (telemetry, bus):
        bus.subscribe(seen.append)
        provider = trace.get_tracer_provider()
        genai_bridge.install(bus, tracer_provider=provider)  # type: ignore[arg-type]
        tracer = provider.get_tracer("an-adk-like-framework")
        agent = {sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: "courier"}
        tool = {sc.GEN_AI_OPERATION_NAME: "execute_tool", sc.GEN_AI_TOOL_NAME: "deliver"}
        with (tracer.start_as_current_span("invoke_agent courier", attributes=agent),
              tracer.start_as_current_span("execute_tool deliver", attributes=tool)):
            pass
        assert telemetry.force_flush(10)
        genai_bridge.uninstall(provider)  # type: ignore[arg-type]
        assert len(bus.history(limit=None)) == 4
    run, tree = read_back_run(Path(receiver.db), "courier")
    assert tree["span_count"] == 2  # the framework's two spans, no copy from the mirror
    names = [name for root in tree["roots"] for name in tree_names(root)]
    assert names == [(0, "invoke_agent courier"), (1, "execute_tool deliver")]
    assert json.dumps(run)  # listed by `otel-agentbus runs`
