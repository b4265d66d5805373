"""The telemetry mirror, in process: bus events become spans, span events and metrics.

Every test configures telemetry on its own SDK TracerProvider exporting to memory
(``configure(tracer_provider=...)``), so tests never depend on the process-global provider.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode
from telemetry_helpers import (
    Harness,
    HarnessFactory,
    all_events,
    attrs,
    hex_span,
    hex_trace,
    otlp_bytes,
    parent_id,
    span_id,
    trace_id,
)

from otel_agentbus import Correlation, Event, EventBus, Scope
from otel_agentbus import semconv as sc
from otel_agentbus.telemetry import (
    CaptureMode,
    ContentPolicy,
    TraceContextFilter,
    inject_traceparent,
    install_trace_context,
    traceparent_from,
    use_span_of,
    with_current_context,
)
from otel_agentbus.telemetry.content import CAPTURE_ENV, EVENTS_ENV, LENGTH_ENV, TRUNCATION_MARK

pytestmark = pytest.mark.timeout(30)

CANARY = "canary-7f3a9d1e"
"""Stands for conversation content: must never leave the process unless capture is on."""


@pytest.fixture(autouse=True)
def _clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (CAPTURE_ENV, EVENTS_ENV, LENGTH_ENV, "OTEL_ATTRIBUTE_COUNT_LIMIT"):
        monkeypatch.delenv(name, raising=False)


def ev(kind: str, payload: dict[str, Any] | None = None, **scope: str) -> Event:
    return Event(kind, payload, scope=Scope(**scope))


async def publish(bus: EventBus, *events: Event) -> None:
    for event in events:
        await bus.publish(event)


def of_run(spans: list[ReadableSpan], run_id: str) -> list[ReadableSpan]:
    return [s for s in spans if (s.attributes or {}).get(sc.RUN_ID) == run_id]


async def full_run(
    bus: EventBus, run_id: str = "r1", agent: str = "planner", session: str | None = "conv-7",
) -> dict[str, Event]:
    """A run with a node loop, two iterations, an LLM call, a tool call and a decision."""
    run = {"run_id": run_id, "agent": agent} | ({"session_id": session} if session else {})
    node = run | {"node_id": "n1"}
    events = {
        "run.started": ev("agent.run.started", **run),
        "node.started": ev("agent.node.loop.started", {"max_iterations": 5}, **node),
        "iteration.1": ev("agent.node.loop.iteration", {"iteration": 1}, **node),
        "llm.request": ev("agent.llm.request",
                          {"model": "gpt-4o", "provider": "openai", "call_id": "c1"}, **node),
        "llm.delta": ev("agent.llm.delta", {"call_id": "c1", "text": "hel"}, **node),
        "llm.response": ev("agent.llm.response",
                           {"call_id": "c1", "input_tokens": 12, "output_tokens": 34,
                            "finish_reasons": ["tool_calls"]}, **node),
        "iteration.2": ev("agent.node.loop.iteration", {"iteration": 2}, **node),
        "tool.started": ev("agent.tool.call.started",
                           {"tool_call_id": "t1", "tool_name": "search"}, **node),
        "decision": ev("agent.decision.made",
                       {"tool_call_id": "t1", "decision_id": "d1", "chosen": "search"}, **node),
        "tool.completed": ev("agent.tool.call.completed",
                             {"tool_call_id": "t1", "tool_name": "search", "is_error": False},
                             **node),
        "state": ev("agent.state.changed", {"key": "k", "value": 1}, **node),
        "node.completed": ev("agent.node.loop.completed", {"iterations": 2}, **node),
        "run.completed": ev("agent.run.completed", **run),
    }
    await publish(bus, *events.values())
    return events


# ====================================================================== runs as traces
async def test_one_trace_per_run_for_concurrent_runs(make: HarnessFactory) -> None:
    h = make()

    async def run(i: int) -> None:
        scope = {"run_id": f"run-{i}", "agent": f"agent{i}"}
        node = scope | {"node_id": "n"}
        for event in (
            ev("agent.run.started", **scope),
            ev("agent.node.loop.started", **node),
            ev("agent.tool.call.started", {"tool_call_id": f"t{i}", "tool_name": "search"},
               **node),
            ev("agent.tool.call.completed", {"tool_call_id": f"t{i}", "tool_name": "search"},
               **node),
            ev("agent.node.loop.completed", **node),
            ev("agent.run.completed", **scope),
        ):
            await h.bus.publish(event)
            await asyncio.sleep(0)  # interleave the three runs

    await asyncio.gather(*(run(i) for i in range(3)))
    roots = []
    for i in range(3):
        spans = of_run(h.spans(), f"run-{i}")
        assert sorted(s.name for s in spans) == sorted(
            [f"invoke_agent agent{i}", "execute_tool search", "node n"])
        root = next(s for s in spans if s.name.startswith("invoke_agent"))
        assert {trace_id(s) for s in spans} == {trace_id(root)}
        assert root.kind is SpanKind.INTERNAL
        assert root.parent is None
        assert attrs(root) == {
            sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: f"agent{i}",
            sc.OPENINFERENCE_SPAN_KIND: "AGENT", sc.RUN_ID: f"run-{i}",
            sc.RUN_STATUS: "completed"}
        roots.append(root)
    assert len({trace_id(r) for r in roots}) == 3
    # One pending record per run, in the run's trace, under its root; not an agent span.
    pending = h.pending()
    assert sorted((trace_id(p), parent_id(p)) for p in pending) == sorted(
        (trace_id(r), span_id(r)) for r in roots)
    for record in pending:
        assert record.name.startswith(f"{sc.PENDING_SPAN_PREFIX} invoke_agent agent")
        assert sc.GEN_AI_OPERATION_NAME not in attrs(record)
        assert attrs(record)[sc.OPENINFERENCE_SPAN_KIND] == "CHAIN"
        assert record.start_time == record.end_time


@pytest.mark.parametrize("session", ["conv-7", None])
async def test_conversation_id_on_every_span_only_when_session_given(
    make: HarnessFactory, session: str | None
) -> None:
    h = make()
    await full_run(h.bus, session=session)
    spans = h.spans(pending=True)
    assert sorted({s.name for s in spans}) == [
        "agentbus.pending invoke_agent planner", "chat gpt-4o", "execute_tool search",
        "invoke_agent planner", "iteration n1", "node n1"]
    for span in spans:
        assert attrs(span).get(sc.GEN_AI_CONVERSATION_ID) == session, span.name
        assert attrs(span)[sc.RUN_ID] == "r1"


@pytest.mark.parametrize(
    ("kind", "payload", "code", "run_status", "error_type"),
    [
        ("agent.run.completed", {}, StatusCode.UNSET, "completed", None),
        ("agent.run.failed", {"error": "boom", "error_type": "ValueError"}, StatusCode.ERROR,
         "failed", "ValueError"),
        ("agent.run.failed", {"error": "boom"}, StatusCode.ERROR, "failed", "_OTHER"),
        ("agent.run.cancelled", {"reason": "user"}, StatusCode.ERROR, "cancelled", "cancelled"),
    ],
)
async def test_run_status_from_end_event(
    make: HarnessFactory, kind: str, payload: dict[str, Any], code: StatusCode,
    run_status: str, error_type: str | None,
) -> None:
    h = make()
    scope = {"run_id": "r1", "agent": "planner"}
    await publish(h.bus, ev("agent.run.started", **scope), ev(kind, payload, **scope))
    root = h.one("invoke_agent planner")
    assert root.status.status_code is code
    assert attrs(root)[sc.RUN_STATUS] == run_status
    assert attrs(root).get(sc.ERROR_TYPE) == error_type
    assert sc.END_REASON not in attrs(root)
    if "error" in payload:
        assert root.status.description == "boom"


async def test_node_and_iteration_spans(make: HarnessFactory) -> None:
    h = make()
    events = await full_run(h.bus)
    root = h.one("invoke_agent planner")
    node = h.one("node n1")
    first, second = sorted(h.named("iteration n1"), key=lambda s: s.start_time or 0)
    assert parent_id(node) == span_id(root)
    assert attrs(node)[sc.NODE_ID] == "n1"
    assert attrs(node)[sc.NODE_MAX_ITERATIONS] == 5
    assert attrs(node)[sc.NODE_ITERATIONS] == 2
    for number, iteration in ((1, first), (2, second)):
        assert parent_id(iteration) == span_id(node)
        assert iteration.kind is SpanKind.INTERNAL
        assert attrs(iteration)[sc.NODE_ITERATION] == number
        assert attrs(iteration)[sc.NODE_ID] == "n1"
    # The next iteration ends the previous one; node completion ends the last.
    assert first.end_time == events["iteration.2"].time_ns == second.start_time
    assert second.end_time == node.end_time == events["node.completed"].time_ns
    assert node.status.status_code is StatusCode.UNSET


async def test_node_failed_is_an_error(make: HarnessFactory) -> None:
    h = make()
    scope = {"run_id": "r1", "agent": "a", "node_id": "n1"}
    await publish(
        h.bus, ev("agent.run.started", run_id="r1", agent="a"),
        ev("agent.node.loop.started", **scope),
        ev("agent.node.loop.failed", {"error": "bad node", "error_type": "NodeError"}, **scope),
        ev("agent.run.completed", run_id="r1", agent="a"))
    node = h.one("node n1")
    assert node.status.status_code is StatusCode.ERROR
    assert attrs(node)[sc.ERROR_TYPE] == "NodeError"


async def test_llm_call_is_one_client_span_with_usage_and_counted_chunks(
    make: HarnessFactory,
) -> None:
    h = make()
    node = {"run_id": "r1", "agent": "a", "node_id": "n1"}
    await publish(h.bus, ev("agent.run.started", run_id="r1", agent="a"),
                  ev("agent.node.loop.iteration", {"iteration": 1}, **node),
                  ev("agent.llm.request", {"model": "gpt-4o", "provider": "openai",
                                           "call_id": "c1"}, **node))
    for i in range(50):
        await h.bus.publish(ev("agent.llm.delta", {"call_id": "c1", "text": f"t{i}"}, **node))
    for _ in range(3):
        await h.bus.publish(ev("agent.llm.reasoning.delta", {"call_id": "c1", "text": "r"},
                               **node))
    await publish(
        h.bus,
        ev("agent.llm.response", {"call_id": "c1", "input_tokens": 12, "output_tokens": 34,
                                  "cache_read_input_tokens": 5, "finish_reasons": ["stop"],
                                  "response_model": "gpt-4o-2024-08-06"}, **node),
        ev("agent.node.loop.completed", **node),
        ev("agent.run.completed", run_id="r1", agent="a"))
    chat = h.one("chat gpt-4o")
    iteration = h.one("iteration n1")
    assert chat.kind is SpanKind.CLIENT
    assert parent_id(chat) == span_id(iteration)
    a = attrs(chat)
    assert a[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert a[sc.GEN_AI_REQUEST_MODEL] == "gpt-4o"
    assert a[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert a[sc.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-08-06"
    assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] == 12
    assert a[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 34
    assert a[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 5
    assert list(a[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == ["stop"]
    assert a[sc.LLM_CHUNKS] == 50
    assert a[sc.LLM_REASONING_CHUNKS] == 3
    first_chunk = a[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert isinstance(first_chunk, float)
    assert 0 <= first_chunk <= (chat.end_time - chat.start_time) / 1e9  # seconds, not ms
    assert a[sc.GEN_AI_REQUEST_STREAM] is True  # chunks arrived
    assert chat.status.status_code is StatusCode.UNSET
    # Deltas are counted, never a span or a span event each.
    assert sorted(s.name for s in h.spans()) == [
        "chat gpt-4o", "invoke_agent a", "iteration n1", "node n1"]
    assert all(not s.events for s in h.spans())


async def test_llm_failure_is_an_error(make: HarnessFactory) -> None:
    h = make()
    scope = {"run_id": "r1", "agent": "a"}
    await publish(h.bus, ev("agent.run.started", **scope),
                  ev("agent.llm.request", {"model": "m", "call_id": "c1"}, **scope),
                  ev("agent.llm.failed", {"call_id": "c1", "error": "429",
                                          "error_type": "RateLimitError"}, **scope),
                  ev("agent.run.completed", **scope))
    chat = h.one("chat m")
    assert chat.status.status_code is StatusCode.ERROR
    assert attrs(chat)[sc.ERROR_TYPE] == "RateLimitError"
    assert parent_id(chat) == span_id(h.one("invoke_agent a"))


async def test_tool_spans(make: HarnessFactory) -> None:
    h = make()
    scope = {"run_id": "r1", "agent": "a", "session_id": "s1"}
    await publish(
        h.bus, ev("agent.run.started", **scope),
        ev("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "search"}, **scope),
        ev("agent.tool.call.started", {"tool_call_id": "t2", "tool_name": "fetch",
                                       "tool_type": "extension"}, **scope),
        ev("agent.tool.call.completed", {"tool_call_id": "t2", "tool_name": "fetch",
                                         "is_error": True, "error": "404 not found",
                                         "error_type": "HTTPError"}, **scope),
        ev("agent.tool.call.completed", {"tool_call_id": "t1", "tool_name": "search",
                                         "is_error": False}, **scope),
        ev("agent.run.completed", **scope))
    root = h.one("invoke_agent a")
    ok, failed = h.one("execute_tool search"), h.one("execute_tool fetch")
    assert attrs(ok) == {
        sc.GEN_AI_OPERATION_NAME: "execute_tool", sc.OPENINFERENCE_SPAN_KIND: "TOOL",
        sc.GEN_AI_TOOL_NAME: "search",
        sc.GEN_AI_TOOL_CALL_ID: "t1", sc.GEN_AI_TOOL_TYPE: "function", sc.RUN_ID: "r1",
        sc.GEN_AI_CONVERSATION_ID: "s1", sc.GEN_AI_AGENT_NAME: "a"}
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "404 not found"
    assert attrs(failed)[sc.ERROR_TYPE] == "HTTPError"
    assert attrs(failed)[sc.GEN_AI_TOOL_TYPE] == "extension"
    assert attrs(failed)[sc.GEN_AI_TOOL_CALL_ID] == "t2"
    for tool in (ok, failed):
        assert tool.kind is SpanKind.INTERNAL
        assert parent_id(tool) == span_id(root)
        assert trace_id(tool) == trace_id(root)


async def test_decisions_outcomes_problems_go_to_the_innermost_open_span(
    make: HarnessFactory,
) -> None:
    h = make()
    run = {"run_id": "r1", "agent": "a"}
    node = run | {"node_id": "n1"}
    decision = ev("agent.decision.made",
                  {"tool_call_id": "t1", "decision_id": "d1", "intent": "find facts",
                   "options": ["search", "ask"], "chosen": "search", "reasoning": "cheaper",
                   "confidence": 0.75}, **node)
    await publish(
        h.bus, ev("agent.run.started", **run),
        ev("agent.problem.reported", {"severity": "warn", "description": "slow"}, **run),
        ev("agent.node.loop.started", **node),
        ev("agent.decision.outcome", {"decision_id": "d0", "success": True}, **node),
        ev("agent.node.loop.iteration", {"iteration": 1}, **node),
        ev("agent.decision.made", {"decision_id": "d2", "chosen": "plan"}, **node),
        ev("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "search"}, **node),
        decision,
        ev("agent.tool.call.completed", {"tool_call_id": "t1", "tool_name": "search"}, **node),
        ev("agent.node.loop.completed", **node),
        ev("agent.run.completed", **run))

    def names(span: ReadableSpan) -> list[str]:
        return [e.name for e in span.events]

    root, node_span = h.one("invoke_agent a"), h.one("node n1")
    iteration, tool = h.one("iteration n1"), h.one("execute_tool search")
    assert names(root) == ["agentbus.problem"]
    assert names(node_span) == ["agentbus.outcome"]
    assert names(iteration) == ["agentbus.decision"]
    assert names(tool) == ["agentbus.decision"]
    (made,) = tool.events
    assert made.timestamp == decision.time_ns
    a = dict(made.attributes or {})
    assert a[sc.DECISION_ID] == "d1"
    assert a[sc.DECISION_INTENT] == "find facts"
    assert list(a[sc.DECISION_OPTIONS]) == ["search", "ask"]
    assert a[sc.DECISION_CHOSEN] == "search"
    assert a[sc.DECISION_REASONING] == "cheaper"
    assert a["agentbus.decision.confidence"] == 0.75
    assert a[sc.EVENT_SEQ] == decision.seq
    assert dict(root.events[0].attributes or {})["agentbus.problem.description"] == "slow"
    assert dict(node_span.events[0].attributes or {})["agentbus.outcome.success"] is True
    assert dict(iteration.events[0].attributes or {})[sc.DECISION_ID] == "d2"


async def test_other_kinds_in_a_run_become_span_events_named_after_the_kind(
    make: HarnessFactory,
) -> None:
    h = make()
    run = {"run_id": "r1", "agent": "a"}
    await publish(h.bus, ev("agent.run.started", **run),
                  ev("agent.state.changed", {"key": "plan", "value": 3}, **run),
                  ev("custom.my_app.thing", {"n": 1}, **run),
                  ev("agent.run.completed", **run))
    root = h.one("invoke_agent a")
    assert [e.name for e in root.events] == ["agent.state.changed", "custom.my_app.thing"]
    assert dict(root.events[0].attributes or {})["agentbus.key"] == "plan"


# ====================================================================== stamping
async def test_every_published_event_is_stamped_with_its_span(make: HarnessFactory) -> None:
    h = make()
    seen: list[tuple[str, str | None, str | None, str | None]] = []

    def record(event: Event) -> None:  # runs after publish; sees what every subscriber sees
        c = event.correlation
        seen.append((event.kind, c.trace_id, c.span_id, c.parent_span_id))

    h.bus.subscribe(record, buffer=1000)
    events = await full_run(h.bus)
    await h.bus.close()
    root, node = h.one("invoke_agent planner"), h.one("node n1")
    it1, it2 = sorted(h.named("iteration n1"), key=lambda s: s.start_time or 0)
    chat, tool = h.one("chat gpt-4o"), h.one("execute_tool search")
    expected = {
        "run.started": root, "node.started": node, "iteration.1": it1, "llm.request": chat,
        "llm.delta": chat, "llm.response": chat, "iteration.2": it2, "tool.started": tool,
        "decision": tool, "tool.completed": tool, "state": it2, "node.completed": node,
        "run.completed": root,
    }
    assert set(expected) == set(events)
    for key, span in expected.items():
        correlation = events[key].correlation
        assert correlation.trace_id == hex_trace(span), key
        assert correlation.span_id == hex_span(span), key
        parent = parent_id(span)
        assert correlation.parent_span_id == (None if parent is None else f"{parent:016x}"), key
    assert seen == [(e.kind, *e.correlation[:3]) for e in events.values()]
    assert all(trace == hex_trace(root) for _, trace, _, _ in seen)


async def test_stamping_keeps_the_callers_correlation_id(make: HarnessFactory) -> None:
    h = make()
    started = Event("agent.run.started", scope=Scope(run_id="r1", agent="a"),
                    correlation=Correlation(correlation_id="corr-1", request_id="req-9"))
    await h.bus.publish(started)
    assert started.correlation.correlation_id == "corr-1"
    assert started.correlation.request_id == "req-9"
    assert started.correlation.trace_id is not None
    await h.bus.publish(ev("agent.run.completed", run_id="r1", agent="a"))
    assert started.correlation.span_id == hex_span(h.one("invoke_agent a"))


# ====================================================================== no span stays open
async def test_spans_without_their_end_event_end_at_run_end(make: HarnessFactory) -> None:
    h = make()
    node = {"run_id": "r1", "agent": "a", "node_id": "n1"}
    await publish(h.bus, ev("agent.run.started", run_id="r1", agent="a"),
                  ev("agent.node.loop.iteration", {"iteration": 1}, **node),
                  ev("agent.llm.request", {"model": "m", "call_id": "c1"}, **node),
                  ev("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "x"},
                     **node))
    completed = ev("agent.run.completed", run_id="r1", agent="a")
    await h.bus.publish(completed)
    spans = {s.name: s for s in h.spans()}
    assert sorted(spans) == ["chat m", "execute_tool x", "invoke_agent a", "iteration n1",
                             "node n1"]
    for name in ("chat m", "execute_tool x", "iteration n1", "node n1"):
        assert attrs(spans[name])[sc.END_REASON] == "run_ended", name
        assert spans[name].end_time == completed.time_ns
    assert sc.END_REASON not in attrs(spans["invoke_agent a"])
    stats = h.telemetry.export_stats()
    assert stats["spans_started"] == stats["spans_ended"] == 5
    assert stats["spans_force_ended"] == 4


async def test_failed_run_ends_open_tool_span_as_error(make: HarnessFactory) -> None:
    h = make()
    run = {"run_id": "r1", "agent": "a"}
    await publish(h.bus, ev("agent.run.started", **run),
                  ev("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "x"}, **run),
                  ev("agent.run.failed", {"error": "crash"}, **run))
    tool = h.one("execute_tool x")
    assert tool.status.status_code is StatusCode.ERROR
    assert attrs(tool)[sc.END_REASON] == "failed"


@pytest.mark.parametrize("reason", [None, "timeout"])
async def test_cancelled_run_mid_tool_call_ends_the_tool_span(
    make: HarnessFactory, reason: str | None
) -> None:
    h = make()
    run = {"run_id": "r1", "agent": "a"}
    await publish(h.bus, ev("agent.run.started", **run),
                  ev("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "x"}, **run))
    cancelled = ev("agent.run.cancelled", {"reason": reason} if reason else {}, **run)
    await h.bus.publish(cancelled)
    tool, root = h.one("execute_tool x"), h.one("invoke_agent a")
    assert tool.end_time == cancelled.time_ns
    assert tool.status.status_code is StatusCode.ERROR
    assert attrs(tool)[sc.END_REASON] == (reason or "cancelled")
    assert root.status.status_code is StatusCode.ERROR
    assert attrs(root)[sc.RUN_STATUS] == "cancelled"
    assert h.telemetry.mirror.open_runs == 0


async def test_shutdown_ends_open_runs_with_reason_shutdown(make: HarnessFactory) -> None:
    h = make()
    node = {"run_id": "r1", "agent": "a", "node_id": "n1"}
    await publish(h.bus, ev("agent.run.started", run_id="r1", agent="a"),
                  ev("agent.node.loop.started", **node),
                  ev("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "x"}, **node),
                  ev("agent.tool.call.started", {"tool_call_id": "o1", "tool_name": "orphan"}))
    assert h.spans() == []
    assert h.telemetry.mirror.open_runs == 1
    assert h.telemetry.shutdown(timeout=5) is True
    spans = {s.name: s for s in h.spans()}
    assert sorted(spans) == ["execute_tool orphan", "execute_tool x", "invoke_agent a",
                             "node n1"]
    for span in spans.values():
        assert attrs(span)[sc.END_REASON] == "shutdown", span.name
        assert span.status.status_code is StatusCode.ERROR
    assert h.telemetry.mirror.open_runs == 0
    assert h.telemetry.shutdown() is True  # idempotent


async def test_restarted_run_id_ends_the_previous_run(make: HarnessFactory) -> None:
    h = make()
    run = {"run_id": "r1", "agent": "a"}
    await publish(h.bus, ev("agent.run.started", **run), ev("agent.run.started", **run),
                  ev("agent.run.completed", **run))
    first, second = sorted(h.named("invoke_agent a"), key=lambda s: s.start_time or 0)
    assert attrs(first)[sc.END_REASON] == "restarted"
    assert attrs(second)[sc.RUN_STATUS] == "completed"
    assert trace_id(first) != trace_id(second)


# ====================================================================== no span event lost
async def test_ten_thousand_decisions_are_all_exported(make: HarnessFactory) -> None:
    h = make()
    run = {"run_id": "r1", "agent": "a"}
    await h.bus.publish(ev("agent.run.started", **run))
    for i in range(10_000):
        await h.bus.publish(ev("agent.decision.made", {"decision_id": f"d{i}", "chosen": "x"},
                               **run))
    await h.bus.publish(ev("agent.run.completed", **run))
    root = h.one("invoke_agent a")
    spans = [s for s in h.spans() if trace_id(s) == trace_id(root)]
    decisions = all_events(spans, "agentbus.decision")
    assert len(decisions) == 10_000
    assert {dict(e.attributes)[sc.DECISION_ID] for e in decisions} == {
        f"d{i}" for i in range(10_000)}
    batches = h.named("agentbus.events invoke_agent a")
    assert len(batches) == 10_000 // 128
    assert sorted(attrs(b)[sc.EVENTS_BATCH] for b in batches) == list(range(1, 79))
    for batch in batches:
        assert parent_id(batch) == span_id(root)
        assert len(batch.events) == 128
    assert len(root.events) == 10_000 - 78 * 128
    # What the SDK's exporter would send holds them too: nothing dropped on the wire.
    assert otlp_bytes(spans).count(b"agentbus.decision") >= 10_000


async def test_event_limit_from_env_spreads_a_tool_spans_events(
    make: HarnessFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(EVENTS_ENV, "10")
    h = make()
    run = {"run_id": "r1", "agent": "a"}
    await publish(h.bus, ev("agent.run.started", **run),
                  ev("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "x"}, **run))
    for i in range(25):
        await h.bus.publish(ev("agent.decision.made", {"tool_call_id": "t1", "decision_id": i},
                               **run))
    await publish(h.bus, ev("agent.tool.call.completed", {"tool_call_id": "t1"}, **run),
                  ev("agent.run.completed", **run))
    tool = h.one("execute_tool x")
    batches = h.named("agentbus.events execute_tool x")
    assert len(batches) == 2
    assert all(parent_id(b) == span_id(tool) for b in batches)
    assert len(tool.events) == 5
    ids = [dict(e.attributes)[sc.DECISION_ID] for e in all_events([tool, *batches],
                                                                     "agentbus.decision")]
    assert sorted(ids) == list(range(25))


# ====================================================================== content
async def content_run(bus: EventBus, canary: str = CANARY) -> None:
    """Content in every place an agent puts it; ``visible-marker`` is not content."""
    run = {"run_id": "r1", "agent": "a"}
    node = run | {"node_id": "n1"}
    await publish(
        bus,
        ev("agent.run.started", {"prompt": canary, "input": canary,
                                 "system_instructions": canary,
                                 "tools": [{"name": "search", "description": canary}]}, **run),
        ev("agent.node.loop.iteration", {"iteration": 1}, **node),
        ev("agent.llm.request", {"model": "m", "call_id": "c1", "prompt": canary,
                                 "messages": [{"role": "user", "content": canary}],
                                 "system_instructions": canary,
                                 "tools": [{"type": "function", "function": {
                                     "name": "search", "description": canary,
                                     "parameters": {"type": "object"}}}]}, **node),
        ev("agent.llm.delta", {"call_id": "c1", "text": canary}, **node),
        ev("agent.llm.reasoning.delta", {"call_id": "c1", "text": canary}, **node),
        ev("agent.llm.response", {"call_id": "c1", "content": canary, "output_tokens": 3,
                                  "finish_reason": "tool_calls",
                                  "tool_calls": [{"id": "t1", "function": {
                                      "name": "search", "arguments": f'{{"q": "{canary}"}}'}}]},
           **node),
        ev("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "search",
                                       "arguments": {"q": canary}}, **node),
        ev("agent.tool.call.completed", {"tool_call_id": "t1", "tool_name": "search",
                                         "result": canary}, **node),
        ev("agent.tool.call.started", {"tool_call_id": "t2", "tool_name": "calc",
                                       "tool_input": canary}, **node),
        ev("agent.tool.call.completed", {"tool_call_id": "t2", "result": {"answer": canary}},
           **node),
        ev("agent.message.assistant.committed", {"content": canary}, **node),
        ev("agent.state.changed", {"key": "visible-marker", "prompt": canary,
                                   "snapshot": canary}, **node),
        ev("agent.node.internal_output", {"output": canary}, **node),
        ev("agent.client.output.delta", {"text": canary}, **node),
        ev("agent.decision.made", {"decision_id": "d1", "chosen": "search",
                                   "prompt": canary, "input": canary}, **node),
        ev("agent.decision.outcome", {"decision_id": "d1", "result": canary}, **node),
        ev("agent.problem.reported", {"description": "p", "content": canary}, **node),
        ev("agent.node.loop.completed", **node),
        ev("agent.run.completed", {"output": canary, "result": canary}, **run),
    )


@pytest.mark.parametrize("env", [None, "NO_CONTENT", "false", "EVENT_ONLY"])
async def test_content_stays_home_by_default(
    make: HarnessFactory, monkeypatch: pytest.MonkeyPatch, env: str | None,
) -> None:
    if env is not None:
        monkeypatch.setenv(CAPTURE_ENV, env)
    h = make()
    await content_run(h.bus)
    wire = otlp_bytes(h.spans(pending=True))
    assert b"visible-marker" in wire  # the search does see exported attributes
    assert CANARY.encode() not in wire
    # Neither the GenAI content attributes nor OpenInference's input and output.
    assert {sc.INPUT_VALUE, sc.OUTPUT_VALUE, sc.GEN_AI_TOOL_DEFINITIONS} <= sc.CONTENT_ATTRIBUTES
    assert not any(key in attrs(s) for s in h.spans(pending=True)
                   for key in sc.CONTENT_ATTRIBUTES)


@pytest.mark.parametrize("env", ["SPAN_ONLY", "SPAN_AND_EVENT", "true"])
async def test_content_exported_when_capture_is_on(
    make: HarnessFactory, monkeypatch: pytest.MonkeyPatch, env: str,
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, env)
    h = make()  # configure() reads the variable (ContentPolicy.from_env)
    await content_run(h.bus)
    assert CANARY.encode() in otlp_bytes(h.spans())
    search, calc, chat = h.one("execute_tool search"), h.one("execute_tool calc"), h.one("chat m")
    assert attrs(search)[sc.GEN_AI_TOOL_CALL_ARGUMENTS] == f'{{"q": "{CANARY}"}}'
    assert attrs(search)[sc.GEN_AI_TOOL_CALL_RESULT] == CANARY
    assert attrs(calc)[sc.GEN_AI_TOOL_CALL_ARGUMENTS] == CANARY
    assert attrs(calc)[sc.GEN_AI_TOOL_CALL_RESULT] == f'{{"answer": "{CANARY}"}}'
    # The GenAI role/parts message schema, as JSON text.
    assert json.loads(str(attrs(chat)[sc.GEN_AI_INPUT_MESSAGES])) == [
        {"role": "user", "parts": [{"type": "text", "content": CANARY}]}]
    assert json.loads(str(attrs(chat)[sc.GEN_AI_SYSTEM_INSTRUCTIONS])) == [
        {"type": "text", "content": CANARY}]
    assert json.loads(str(attrs(chat)[sc.GEN_AI_OUTPUT_MESSAGES])) == [
        {"role": "assistant", "finish_reason": "tool_calls", "parts": [
            {"type": "text", "content": CANARY},
            {"type": "tool_call", "id": "t1", "name": "search", "arguments": {"q": CANARY}}]}]
    assert json.loads(str(attrs(chat)[sc.GEN_AI_TOOL_DEFINITIONS])) == [
        {"type": "function", "name": "search", "description": CANARY,
         "parameters": {"type": "object"}}]
    # Viewers derive an LLM span's messages from those; a run and a tool call also carry
    # OpenInference's input and output, which is what Phoenix lists.
    assert sc.INPUT_VALUE not in attrs(chat)
    root = attrs(h.one("invoke_agent a"))
    assert json.loads(str(root[sc.GEN_AI_INPUT_MESSAGES])) == [
        {"role": "user", "parts": [{"type": "text", "content": CANARY}]}]
    assert json.loads(str(root[sc.GEN_AI_OUTPUT_MESSAGES])) == [
        {"role": "assistant", "finish_reason": "stop",
         "parts": [{"type": "text", "content": CANARY}]}]
    assert (root[sc.INPUT_VALUE], root[sc.INPUT_MIME_TYPE]) == (CANARY, "text/plain")
    assert (root[sc.OUTPUT_VALUE], root[sc.OUTPUT_MIME_TYPE]) == (CANARY, "text/plain")
    assert json.loads(str(root[sc.GEN_AI_TOOL_DEFINITIONS]))[0]["description"] == CANARY
    assert attrs(search)[sc.INPUT_VALUE] == f'{{"q": "{CANARY}"}}'
    assert attrs(search)[sc.INPUT_MIME_TYPE] == "application/json"
    assert (attrs(search)[sc.OUTPUT_VALUE], attrs(search)[sc.OUTPUT_MIME_TYPE]) == (
        CANARY, "text/plain")
    iteration = h.one("iteration n1")
    by_name = {e.name: dict(e.attributes or {}) for e in iteration.events}
    assert by_name["agent.state.changed"]["agentbus.prompt"] == CANARY
    assert by_name["agent.message.assistant.committed"]["agentbus.content"] == CANARY
    assert by_name["agentbus.decision"]["agentbus.decision.prompt"] == CANARY


async def test_explicit_content_policy_captures(make: HarnessFactory) -> None:
    h = make(content=ContentPolicy(capture=CaptureMode.SPAN_ONLY))
    await content_run(h.bus)
    assert attrs(h.one("execute_tool search"))[sc.GEN_AI_TOOL_CALL_RESULT] == CANARY


async def test_bad_capture_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "EVERYTHING")
    with pytest.raises(ValueError, match=CAPTURE_ENV):
        ContentPolicy.from_env()


async def test_redaction_hook_is_applied_to_every_content_value(
    make: HarnessFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "SPAN_ONLY")
    keys: set[str] = set()

    def redact(key: str, value: Any) -> Any:
        keys.add(key)
        if key == "system_instructions":
            return None  # dropped entirely
        return "[scrubbed]" if CANARY in str(value) else value

    h = make(redact=redact)
    await content_run(h.bus)
    wire = otlp_bytes(h.spans())
    assert CANARY.encode() not in wire
    assert b"[scrubbed]" in wire
    assert {"arguments", "tool_input", "result", "messages", "content", "prompt", "tools",
            "tool_calls"} <= keys
    assert attrs(h.one("execute_tool search"))[sc.GEN_AI_TOOL_CALL_ARGUMENTS] == "[scrubbed]"
    assert sc.GEN_AI_SYSTEM_INSTRUCTIONS not in attrs(h.one("chat m"))


async def test_redaction_hook_applies_with_an_explicit_policy(make: HarnessFactory) -> None:
    h = make(content=ContentPolicy(capture=CaptureMode.SPAN_ONLY),
             redact=lambda key, value: "[scrubbed]")
    await content_run(h.bus)
    assert CANARY.encode() not in otlp_bytes(h.spans())


async def test_long_values_are_truncated_with_the_mark(make: HarnessFactory) -> None:
    h = make(content=ContentPolicy(capture=CaptureMode.SPAN_ONLY, max_length=64))
    run = {"run_id": "r1", "agent": "a"}
    await publish(
        h.bus, ev("agent.run.started", **run),
        ev("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "x",
                                       "arguments": "x" * 1000, "description": "d" * 200},
           **run),
        ev("agent.tool.call.completed", {"tool_call_id": "t1", "result": ["y" * 100, "ok"]},
           **run),
        ev("agent.decision.made", {"decision_id": "d1", "reasoning": "r" * 500}, **run),
        ev("agent.state.changed", {"note": "n" * 500, "short": "fine"}, **run),
        ev("agent.run.failed", {"error": "e" * 500}, **run))
    tool, root = h.one("execute_tool x"), h.one("invoke_agent a")
    arguments = attrs(tool)[sc.GEN_AI_TOOL_CALL_ARGUMENTS]
    assert len(arguments) == 64
    assert arguments == "x" * (64 - len(TRUNCATION_MARK)) + TRUNCATION_MARK
    assert len(attrs(tool)[sc.GEN_AI_TOOL_DESCRIPTION]) == 64
    result = list(attrs(tool)[sc.GEN_AI_TOOL_CALL_RESULT])  # a list of str: each truncated
    assert result == ["y" * (64 - len(TRUNCATION_MARK)) + TRUNCATION_MARK, "ok"]
    decision, state = root.events
    assert len(dict(decision.attributes)[sc.DECISION_REASONING]) == 64
    assert dict(state.attributes)["agentbus.note"].endswith(TRUNCATION_MARK)
    assert len(dict(state.attributes)["agentbus.note"]) == 64
    assert dict(state.attributes)["agentbus.short"] == "fine"
    assert root.status.description is not None
    assert len(root.status.description) == 64


async def test_length_limit_from_env(
    make: HarnessFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(LENGTH_ENV, "32")
    h = make()
    run = {"run_id": "r1", "agent": "a"}
    await publish(h.bus, ev("agent.run.started", **run),
                  ev("agent.state.changed", {"note": "n" * 100}, **run),
                  ev("agent.run.completed", **run))
    (state,) = h.one("invoke_agent a").events
    assert dict(state.attributes)["agentbus.note"] == "n" * (32 - len(TRUNCATION_MARK)) + (
        TRUNCATION_MARK)


@pytest.mark.parametrize("capture", [CaptureMode.NO_CONTENT, CaptureMode.SPAN_ONLY])
async def test_secret_keys_are_always_redacted(
    make: HarnessFactory, capture: CaptureMode,
) -> None:
    h = make(content=ContentPolicy(capture=capture))
    run = {"run_id": "r1", "agent": "a"}
    secrets = {"api_key": "sekrit-1", "Authorization": "Bearer sekrit-2",
               "github_token": "sekrit-3", "client_secret": "sekrit-4", "password": "sekrit-5"}
    await publish(h.bus, ev("agent.run.started", **run),
                  ev("agent.state.changed", {"key": "k", **secrets}, **run),
                  ev("agent.decision.made", {"decision_id": "d", "api_key": "sekrit-6"}, **run),
                  ev("agent.run.completed", **run))
    root = h.one("invoke_agent a")
    state, decision = (dict(e.attributes or {}) for e in root.events)
    for key in secrets:
        assert state[f"agentbus.{key}"] == "[redacted]"
    assert decision["agentbus.decision.api_key"] == "[redacted]"
    assert b"sekrit" not in otlp_bytes(h.spans(pending=True))


@pytest.mark.parametrize("where", ["nested_payload", "tool_arguments"])
async def test_nested_secret_keys_are_redacted(make: HarnessFactory, where: str) -> None:
    h = make(content=ContentPolicy(capture=CaptureMode.SPAN_ONLY))
    run = {"run_id": "r1", "agent": "a"}
    if where == "nested_payload":
        inner = ev("agent.state.changed",
                   {"key": "k", "headers": {"authorization": "Bearer sekrit-7"}}, **run)
    else:
        inner = ev("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "http",
                                               "arguments": {"api_key": "sekrit-7"}}, **run)
    await publish(h.bus, ev("agent.run.started", **run), inner, ev("agent.run.completed", **run))
    assert b"sekrit-7" not in otlp_bytes(h.spans())


async def test_nested_content_keys_stay_home_by_default(make: HarnessFactory) -> None:
    h = make()
    run = {"run_id": "r1", "agent": "a"}
    await publish(h.bus, ev("agent.run.started", **run),
                  ev("agent.state.changed", {"key": "k", "data": {"prompt": CANARY}}, **run),
                  ev("agent.run.completed", **run))
    assert CANARY.encode() not in otlp_bytes(h.spans())


# ====================================================================== sampling
async def test_unsampled_runs_export_nothing_but_are_delivered_in_full(
    make: HarnessFactory,
) -> None:
    h = make(sampler=ALWAYS_OFF)
    got: list[str] = []
    h.bus.subscribe(lambda e: got.append(e.kind), buffer=1000)
    events = await full_run(h.bus)
    await h.bus.close()
    assert got == [e.kind for e in events.values()]
    assert h.exporter.get_finished_spans() == ()
    assert h.telemetry.export_stats()["spans_emitted"] == 0


async def test_unsampled_calls_outside_runs_export_nothing(make: HarnessFactory) -> None:
    h = make(sampler=ALWAYS_OFF)
    await publish(h.bus,
                  ev("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "x"}),
                  ev("agent.tool.call.completed", {"tool_call_id": "t1", "tool_name": "x"}),
                  ev("agent.llm.request", {"model": "m", "call_id": "c1"}),
                  ev("agent.llm.response", {"call_id": "c1"}))
    assert h.exporter.get_finished_spans() == ()


async def test_ratio_sampling_is_decided_once_per_run(make: HarnessFactory) -> None:
    h = make(sampler=ParentBased(TraceIdRatioBased(0.5)))
    runs = 60
    for i in range(runs):
        await full_run(h.bus, run_id=f"run-{i}")
    names_by_run: dict[str, set[str]] = defaultdict(set)
    for span in h.spans(pending=True):
        names_by_run[str(attrs(span)[sc.RUN_ID])].add(
            span.name + (" (pending)" if attrs(span).get("agentbus.span.pending") else ""))
    full = {"invoke_agent planner", "agentbus.pending invoke_agent planner (pending)",
            "node n1", "iteration n1", "chat gpt-4o", "execute_tool search"}
    assert all(names == full for names in names_by_run.values())
    assert 0 < len(names_by_run) < runs
    per_trace = Counter(trace_id(s) for s in h.spans())
    assert set(per_trace.values()) == {6}  # root, node, 2 iterations, chat, tool: all or none


@pytest.mark.parametrize("flags", ["01", "00"])
async def test_remote_parent_sampling_flag_is_followed(make: HarnessFactory, flags: str) -> None:
    h = make()  # the SDK default sampler: ParentBased(ALWAYS_ON)
    parent = f"00-{'ab' * 16}-{'cd' * 8}-{flags}"
    started = ev("agent.run.started", {"traceparent": parent}, run_id="r1", agent="a")
    await publish(h.bus, started, ev("agent.run.completed", run_id="r1", agent="a"))
    assert started.correlation.trace_id == "ab" * 16
    assert len(h.spans(pending=True)) == (2 if flags == "01" else 0)


# ====================================================================== trace context
async def test_run_with_traceparent_joins_the_callers_trace(make: HarnessFactory) -> None:
    h = make()
    caller_trace, caller_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    run = {"run_id": "r1", "agent": "a"}
    with h.tracer().start_as_current_span("ignored: the traceparent wins"):
        await h.bus.publish(ev("agent.run.started",
                               {"traceparent": f"00-{caller_trace}-{caller_span}-01"}, **run))
    await publish(h.bus,
                  ev("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "x"}, **run),
                  ev("agent.tool.call.completed", {"tool_call_id": "t1"}, **run),
                  ev("agent.run.completed", **run))
    root, tool = h.one("invoke_agent a"), h.one("execute_tool x")
    assert hex_trace(root) == hex_trace(tool) == caller_trace
    assert root.parent is not None
    assert f"{root.parent.span_id:016x}" == caller_span
    assert root.parent.is_remote
    assert parent_id(tool) == span_id(root)


async def test_run_started_under_an_app_span_is_its_child(make: HarnessFactory) -> None:
    h = make()
    run = {"run_id": "r1", "agent": "a"}
    with h.tracer().start_as_current_span("POST /agents/run") as app_span:
        await h.bus.publish(ev("agent.run.started", **run))
        await h.bus.publish(ev("agent.run.completed", **run))
    root, app = h.one("invoke_agent a"), h.one("POST /agents/run")
    assert app_span.get_span_context().span_id == span_id(app)
    assert trace_id(root) == trace_id(app)
    assert parent_id(root) == span_id(app)


async def test_run_published_from_a_thread_keeps_the_threads_span(
    make: HarnessFactory,
) -> None:
    """publish_nowait from another thread hands the caller's context to the bus's loop."""
    h = make()
    tracer = h.tracer()

    def worker() -> None:
        with tracer.start_as_current_span("job in a thread"):
            h.bus.publish_nowait(ev("agent.run.started", run_id="r1", agent="a"))

    await h.bus.publish(ev("agent.state.changed", {"key": "bind the loop"}))
    await asyncio.to_thread(worker)
    for _ in range(5):
        await asyncio.sleep(0)
    await h.bus.publish(ev("agent.run.completed", run_id="r1", agent="a"))
    job, root = h.one("job in a thread"), h.one("invoke_agent a")
    assert trace_id(root) == trace_id(job)
    assert parent_id(root) == span_id(job)


async def test_inject_traceparent_round_trips_an_events_ids(make: HarnessFactory) -> None:
    h = make()
    started = ev("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "x"},
                 run_id="r1", agent="a")
    await publish(h.bus, ev("agent.run.started", run_id="r1", agent="a"), started)
    headers = inject_traceparent(event=started)
    c = started.correlation
    assert headers["traceparent"] == f"00-{c.trace_id}-{c.span_id}-01"
    assert traceparent_from({"Traceparent": headers["traceparent"]}) == headers["traceparent"]
    assert traceparent_from({"traceparent": "00-not-a-header"}) is None
    assert traceparent_from({}) is None
    # The ids survive JSON: an event read back gives the same header.
    assert inject_traceparent({}, event=Event.from_json(started.to_json())) == headers
    with use_span_of(started):
        assert inject_traceparent() == headers
    # A run started with it joins the tool's trace under the tool span.
    await publish(h.bus, ev("agent.run.started", {"traceparent": headers["traceparent"]},
                            run_id="sub", agent="b"),
                  ev("agent.run.completed", run_id="sub", agent="b"))
    sub = h.one("invoke_agent b")
    assert hex_trace(sub) == c.trace_id
    assert f"{parent_id(sub):016x}" == c.span_id


@pytest.fixture
async def tool_call(make: HarnessFactory) -> AsyncIterator[tuple[Harness, Event]]:
    h = make()
    started = ev("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "fetch"},
                 run_id="r1", agent="a")
    await publish(h.bus, ev("agent.run.started", run_id="r1", agent="a"), started)
    yield h, started


async def finish_tool(h: Harness) -> ReadableSpan:
    await publish(h.bus, ev("agent.tool.call.completed", {"tool_call_id": "t1"}, run_id="r1",
                            agent="a"), ev("agent.run.completed", run_id="r1", agent="a"))
    return h.one("execute_tool fetch")


async def test_plain_otel_span_inside_use_span_of_is_the_tool_spans_child(
    tool_call: tuple[Harness, Event],
) -> None:
    h, started = tool_call
    tracer = h.tracer()

    async def in_task() -> None:
        tracer.start_span("in a task").end()

    def in_thread() -> None:
        tracer.start_span("in to_thread").end()

    with use_span_of(started):
        with tracer.start_as_current_span("GET /weather"):
            pass
        task = asyncio.create_task(in_task())
        await asyncio.to_thread(in_thread)
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(with_current_context(
                lambda: tracer.start_span("in a pool thread").end())).result()
    await task
    tool = await finish_tool(h)
    for name in ("GET /weather", "in a task", "in to_thread", "in a pool thread"):
        child = h.one(name)
        assert trace_id(child) == trace_id(tool), name
        assert parent_id(child) == span_id(tool), name


async def test_thread_pool_without_the_helper_loses_the_context(
    tool_call: tuple[Harness, Event],
) -> None:
    """Why ``with_current_context`` exists: executor threads start with an empty context."""
    h, started = tool_call
    tracer = h.tracer()
    with use_span_of(started), ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: tracer.start_span("lost").end()).result()
    tool = await finish_tool(h)
    lost = h.one("lost")
    assert lost.parent is None
    assert trace_id(lost) != trace_id(tool)


async def test_async_generator_closed_from_another_task_detaches_cleanly(
    tool_call: tuple[Harness, Event], caplog: pytest.LogCaptureFixture,
) -> None:
    h, started = tool_call
    tracer = h.tracer()
    caplog.set_level(logging.ERROR, logger="opentelemetry.context")

    async def steps() -> AsyncIterator[int]:
        for i in range(100):
            with use_span_of(started):  # around each step, never across the yield
                tracer.start_span(f"step {i}").end()
            yield i

    async def across_yield() -> AsyncIterator[int]:  # the misuse, to prove detection works
        with use_span_of(started):
            yield 0
            yield 1

    async def close_elsewhere(gen: Any) -> None:
        await asyncio.create_task(gen.aclose())

    good = steps()
    assert [await good.__anext__(), await good.__anext__()] == [0, 1]
    await close_elsewhere(good)
    assert "Failed to detach context" not in caplog.text
    tool = await finish_tool(h)
    assert parent_id(h.one("step 0")) == parent_id(h.one("step 1")) == span_id(tool)

    bad = across_yield()
    await bad.__anext__()
    await close_elsewhere(bad)
    assert "Failed to detach context" in caplog.text


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def test_logger() -> Iterator[tuple[logging.Logger, _Records]]:
    logger = logging.getLogger("otel_agentbus.tests.telemetry")
    handler = _Records()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, handler
    logger.removeHandler(handler)
    logger.filters.clear()
    logger.propagate = True


async def test_log_records_carry_the_spans_ids(
    tool_call: tuple[Harness, Event], test_logger: tuple[logging.Logger, _Records],
) -> None:
    h, started = tool_call
    logger, handler = test_logger
    handler.addFilter(TraceContextFilter())
    with use_span_of(started):
        logger.info("inside the tool call")
    logger.info("outside")
    tool = await finish_tool(h)
    inside, outside = handler.records
    assert inside.otelTraceID == hex_trace(tool) == started.correlation.trace_id  # type: ignore[attr-defined]
    assert inside.otelSpanID == hex_span(tool)  # type: ignore[attr-defined]
    assert inside.otelTraceSampled is True  # type: ignore[attr-defined]
    assert outside.otelTraceID == "0" * 32  # type: ignore[attr-defined]
    assert outside.otelSpanID == "0" * 16  # type: ignore[attr-defined]


async def test_install_trace_context_formats_ids(tool_call: tuple[Harness, Event]) -> None:
    _, started = tool_call
    # A logger outside the hierarchy: install_trace_context sets the format on every
    # handler of the logger it is given, and pytest's capture handlers must keep theirs.
    logger = logging.Logger("otel_agentbus.tests.install")
    handler = _Records()
    logger.addHandler(handler)
    install_trace_context(logger)
    with use_span_of(started):
        logger.warning("hello")
    line = handler.format(handler.records[0])
    c = started.correlation
    assert f"[trace_id={c.trace_id} span_id={c.span_id}] hello" in line


# ====================================================================== metrics
def points(data: MetricsData | None, name: str) -> list[Any]:
    assert data is not None
    return [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            if m.name == name for p in m.data.data_points]


@pytest.fixture
def reader() -> Iterator[tuple[InMemoryMetricReader, MeterProvider]]:
    metric_reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[metric_reader])
    yield metric_reader, provider
    provider.shutdown()


async def test_run_tool_llm_and_decision_metrics(
    make: HarnessFactory, reader: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    metric_reader, meter_provider = reader
    h = make(metrics_enabled=True, meter_provider=meter_provider)
    alpha = {"run_id": "r1", "agent": "alpha"}
    await publish(
        h.bus, ev("agent.run.started", **alpha),
        ev("agent.llm.request", {"model": "gpt-4o", "provider": "openai", "call_id": "c1"},
           **alpha),
        ev("agent.llm.response", {"call_id": "c1", "input_tokens": 10, "output_tokens": 20},
           **alpha),
        ev("agent.llm.request", {"model": "gpt-4o", "provider": "openai", "call_id": "c2"},
           **alpha),
        ev("agent.llm.failed", {"call_id": "c2", "error_type": "RateLimitError"}, **alpha),
        ev("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "search"}, **alpha),
        ev("agent.tool.call.completed", {"tool_call_id": "t1"}, **alpha),
        ev("agent.tool.call.started", {"tool_call_id": "t2", "tool_name": "fetch"}, **alpha),
        ev("agent.tool.call.completed", {"tool_call_id": "t2", "is_error": True,
                                         "error_type": "HTTPError"}, **alpha),
        *(ev("agent.decision.made", {"decision_id": f"d{i}"}, **alpha) for i in range(3)),
        ev("agent.run.completed", **alpha),
        ev("agent.run.started", run_id="r2", agent="alpha"),
        ev("agent.run.failed", {"error": "x"}, run_id="r2", agent="alpha"),
        ev("agent.run.started", run_id="r3", agent="beta"),
        ev("agent.run.cancelled", run_id="r3", agent="beta"),
    )
    data = metric_reader.get_metrics_data()

    durations = points(data, sc.METRIC_OPERATION_DURATION)
    assert sum(p.count for p in durations) == 2
    by_error = {p.attributes.get(sc.ERROR_TYPE): p for p in durations}
    assert set(by_error) == {None, "RateLimitError"}
    for p in durations:
        assert p.attributes[sc.GEN_AI_OPERATION_NAME] == "chat"
        assert p.attributes[sc.GEN_AI_REQUEST_MODEL] == "gpt-4o"
        assert p.attributes[sc.GEN_AI_PROVIDER_NAME] == "openai"
        assert p.sum >= 0

    tokens = {p.attributes[sc.GEN_AI_TOKEN_TYPE]: p for p in points(data, sc.METRIC_TOKEN_USAGE)}
    assert set(tokens) == {"input", "output"}
    assert (tokens["input"].count, tokens["input"].sum) == (1, 10)
    assert (tokens["output"].count, tokens["output"].sum) == (1, 20)

    runs = {(p.attributes[sc.GEN_AI_AGENT_NAME], p.attributes[sc.RUN_STATUS]): p.value
            for p in points(data, sc.METRIC_RUNS)}
    assert runs == {("alpha", "completed"): 1, ("alpha", "failed"): 1, ("beta", "cancelled"): 1}
    assert sum(p.count for p in points(data, sc.METRIC_RUN_DURATION)) == 3

    tools = {(p.attributes[sc.GEN_AI_TOOL_NAME], p.attributes["status"],
              p.attributes.get(sc.ERROR_TYPE)): p.value for p in points(data, sc.METRIC_TOOL_CALLS)}
    assert tools == {("search", "ok", None): 1, ("fetch", "error", "HTTPError"): 1}
    assert sum(p.count for p in points(data, sc.METRIC_TOOL_DURATION)) == 2

    decisions = points(data, sc.METRIC_DECISIONS)
    assert [(p.attributes[sc.GEN_AI_AGENT_NAME], p.value) for p in decisions] == [("alpha", 3)]


async def test_token_usage_recorded_for_unsampled_runs(
    make: HarnessFactory, reader: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    metric_reader, meter_provider = reader
    h = make(sampler=ALWAYS_OFF, metrics_enabled=True, meter_provider=meter_provider)
    run = {"run_id": "r1", "agent": "a"}
    await publish(h.bus, ev("agent.run.started", **run),
                  ev("agent.llm.request", {"model": "m", "call_id": "c1"}, **run),
                  ev("agent.llm.response", {"call_id": "c1", "input_tokens": 10,
                                            "output_tokens": 20}, **run),
                  ev("agent.run.completed", **run))
    data = metric_reader.get_metrics_data()
    assert sum(p.count for p in points(data, sc.METRIC_OPERATION_DURATION)) == 1
    tokens = {p.attributes[sc.GEN_AI_TOKEN_TYPE]: p.sum
              for p in points(data, sc.METRIC_TOKEN_USAGE)}
    assert tokens == {"input": 10, "output": 20}


async def test_bus_metrics_reflect_bus_stats(
    make: HarnessFactory, reader: tuple[InMemoryMetricReader, MeterProvider],
) -> None:
    metric_reader, meter_provider = reader
    h = make(metrics_enabled=True, meter_provider=meter_provider)
    gate = asyncio.Event()

    async def slow(event: Event) -> None:
        await gate.wait()

    def broken(event: Event) -> None:
        raise RuntimeError("handler bug")

    slow_sub = h.bus.subscribe(slow, name="slow", kinds="agent.llm.delta", buffer=2,
                               backpressure="drop_newest")
    h.bus.subscribe(broken, name="broken", kinds="agent.goal.progress")
    for i in range(10):
        await h.bus.publish(ev("agent.llm.delta", {"text": str(i)}))
    for _ in range(3):
        await h.bus.publish(ev("agent.goal.progress", {"progress": 0.5}))
    for _ in range(20):
        await asyncio.sleep(0)
    stats = h.bus.stats()
    assert stats.published == 13
    assert stats.dropped > 0
    assert stats.failed == 3
    data = metric_reader.get_metrics_data()

    def value(name: str) -> Any:
        (point,) = points(data, name)
        assert point.attributes == {"agentbus.bus": "default"}
        return point.value

    assert value(sc.METRIC_BUS_PUBLISHED) == stats.published
    assert value(sc.METRIC_BUS_DROPPED) == stats.dropped
    assert value(sc.METRIC_BUS_FAILED) == stats.failed
    depth = {p.attributes["agentbus.subscriber"]: p.value
             for p in points(data, sc.METRIC_QUEUE_DEPTH)}
    assert depth == {"slow": slow_sub.stats().queued, "broken": 0}
    assert depth["slow"] == 1  # the handler holds one event, one waits, the rest dropped
    gate.set()
