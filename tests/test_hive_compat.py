"""otel_agentbus.compat.hive: seed 000's EventBus API over our bus, mirrored to OpenTelemetry."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import AsyncGenerator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import StatusCode
from telemetry_helpers import Harness, HarnessFactory, Receiver, parent_id, run_python, span_id

from otel_agentbus import Event, Scope
from otel_agentbus import semconv as sc
from otel_agentbus.compat.hive import AgentEvent, EventBus, EventType
from otel_agentbus.instrument import set_default_bus, tool
from otel_agentbus.receiver.queries import SpanRow, get_trace, list_runs

pytestmark = pytest.mark.timeout(60)

# ---------------------------------------------------------------- the seed, by hand
SEED_TYPES = {
    "EXECUTION_STARTED": "execution_started",
    "EXECUTION_COMPLETED": "execution_completed",
    "EXECUTION_FAILED": "execution_failed",
    "EXECUTION_PAUSED": "execution_paused",
    "EXECUTION_RESUMED": "execution_resumed",
    "STATE_CHANGED": "state_changed",
    "STATE_CONFLICT": "state_conflict",
    "GOAL_PROGRESS": "goal_progress",
    "GOAL_ACHIEVED": "goal_achieved",
    "CONSTRAINT_VIOLATION": "constraint_violation",
    "STREAM_STARTED": "stream_started",
    "STREAM_STOPPED": "stream_stopped",
    "NODE_LOOP_STARTED": "node_loop_started",
    "NODE_LOOP_ITERATION": "node_loop_iteration",
    "NODE_LOOP_COMPLETED": "node_loop_completed",
    "LLM_TEXT_DELTA": "llm_text_delta",
    "LLM_REASONING_DELTA": "llm_reasoning_delta",
    "TOOL_CALL_STARTED": "tool_call_started",
    "TOOL_CALL_COMPLETED": "tool_call_completed",
    "CLIENT_OUTPUT_DELTA": "client_output_delta",
    "CLIENT_INPUT_REQUESTED": "client_input_requested",
    "NODE_INTERNAL_OUTPUT": "node_internal_output",
    "NODE_INPUT_BLOCKED": "node_input_blocked",
    "NODE_STALLED": "node_stalled",
    "CUSTOM": "custom",
}

R = inspect.Parameter.empty  # a required parameter
# method: ((parameter, default), ...), then the event type and the data it publishes for
# the sample arguments below.
SEED_EMITTERS: dict[str, tuple[tuple[tuple[str, Any], ...], str]] = {
    "emit_execution_started": (
        (("stream_id", R), ("execution_id", R), ("input_data", None),
         ("correlation_id", None)), "execution_started"),
    "emit_execution_completed": (
        (("stream_id", R), ("execution_id", R), ("output", None), ("correlation_id", None)),
        "execution_completed"),
    "emit_execution_failed": (
        (("stream_id", R), ("execution_id", R), ("error", R), ("correlation_id", None)),
        "execution_failed"),
    "emit_goal_progress": (
        (("stream_id", R), ("progress", R), ("criteria_status", R)), "goal_progress"),
    "emit_constraint_violation": (
        (("stream_id", R), ("execution_id", R), ("constraint_id", R), ("description", R)),
        "constraint_violation"),
    "emit_state_changed": (
        (("stream_id", R), ("execution_id", R), ("key", R), ("old_value", R),
         ("new_value", R), ("scope", R)), "state_changed"),
    "emit_node_loop_started": (
        (("stream_id", R), ("node_id", R), ("execution_id", None), ("max_iterations", None)),
        "node_loop_started"),
    "emit_node_loop_iteration": (
        (("stream_id", R), ("node_id", R), ("iteration", R), ("execution_id", None)),
        "node_loop_iteration"),
    "emit_node_loop_completed": (
        (("stream_id", R), ("node_id", R), ("iterations", R), ("execution_id", None)),
        "node_loop_completed"),
    "emit_llm_text_delta": (
        (("stream_id", R), ("node_id", R), ("content", R), ("snapshot", R),
         ("execution_id", None)), "llm_text_delta"),
    "emit_llm_reasoning_delta": (
        (("stream_id", R), ("node_id", R), ("content", R), ("execution_id", None)),
        "llm_reasoning_delta"),
    "emit_tool_call_started": (
        (("stream_id", R), ("node_id", R), ("tool_use_id", R), ("tool_name", R),
         ("tool_input", None), ("execution_id", None)), "tool_call_started"),
    "emit_tool_call_completed": (
        (("stream_id", R), ("node_id", R), ("tool_use_id", R), ("tool_name", R),
         ("result", ""), ("is_error", False), ("execution_id", None)), "tool_call_completed"),
    "emit_client_output_delta": (
        (("stream_id", R), ("node_id", R), ("content", R), ("snapshot", R),
         ("execution_id", None)), "client_output_delta"),
    "emit_client_input_requested": (
        (("stream_id", R), ("node_id", R), ("prompt", ""), ("execution_id", None)),
        "client_input_requested"),
    "emit_node_internal_output": (
        (("stream_id", R), ("node_id", R), ("content", R), ("execution_id", None)),
        "node_internal_output"),
    "emit_node_stalled": (
        (("stream_id", R), ("node_id", R), ("reason", ""), ("execution_id", None)),
        "node_stalled"),
    "emit_node_input_blocked": (
        (("stream_id", R), ("node_id", R), ("prompt", ""), ("execution_id", None)),
        "node_input_blocked"),
}

SAMPLE_ARGS: dict[str, Any] = {
    "stream_id": "s", "execution_id": "e", "node_id": "n", "input_data": {"q": 1},
    "output": {"a": 2}, "error": "boom", "correlation_id": "c", "progress": 0.5,
    "criteria_status": {"x": True}, "constraint_id": "k", "description": "d", "key": "k",
    "old_value": 1, "new_value": 2, "scope": "execution", "max_iterations": 3,
    "iteration": 1, "iterations": 2, "content": "txt", "snapshot": "snap",
    "tool_use_id": "tu", "tool_name": "search", "tool_input": {"q": "x"}, "result": "r",
    "is_error": True, "prompt": "?", "reason": "why",
}

# The data the seed's emitters put in each event for SAMPLE_ARGS.
SEED_DATA: dict[str, dict[str, Any]] = {
    "emit_execution_started": {"input": {"q": 1}},
    "emit_execution_completed": {"output": {"a": 2}},
    "emit_execution_failed": {"error": "boom"},
    "emit_goal_progress": {"progress": 0.5, "criteria_status": {"x": True}},
    "emit_constraint_violation": {"constraint_id": "k", "description": "d"},
    "emit_state_changed": {"key": "k", "old_value": 1, "new_value": 2, "scope": "execution"},
    "emit_node_loop_started": {"max_iterations": 3},
    "emit_node_loop_iteration": {"iteration": 1},
    "emit_node_loop_completed": {"iterations": 2},
    "emit_llm_text_delta": {"content": "txt", "snapshot": "snap"},
    "emit_llm_reasoning_delta": {"content": "txt"},
    "emit_tool_call_started": {"tool_use_id": "tu", "tool_name": "search",
                               "tool_input": {"q": "x"}},
    "emit_tool_call_completed": {"tool_use_id": "tu", "tool_name": "search", "result": "r",
                                 "is_error": True},
    "emit_client_output_delta": {"content": "txt", "snapshot": "snap"},
    "emit_client_input_requested": {"prompt": "?"},
    "emit_node_internal_output": {"content": "txt"},
    "emit_node_stalled": {"reason": "why"},
    "emit_node_input_blocked": {"prompt": "?"},
}


@pytest.fixture
async def bus() -> AsyncGenerator[EventBus, Any]:
    hive = EventBus()
    yield hive
    await hive.close()


async def until(condition: Any, timeout: float = 10.0) -> None:
    """Wait (generously: the machine is shared) until ``condition()`` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if condition():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.001)


# ------------------------------------------------------------------------ the API
def test_event_types_are_exactly_the_seeds() -> None:
    assert {t.name: t.value for t in EventType} == SEED_TYPES
    assert EventType("tool_call_started") is EventType.TOOL_CALL_STARTED
    assert isinstance(EventType.CUSTOM, str) and str(EventType.CUSTOM) == "custom"


def test_agent_event_has_the_seeds_fields_and_to_dict() -> None:
    fields = [(f.name, f.default) for f in dataclasses.fields(AgentEvent)]
    assert [name for name, _ in fields] == [
        "type", "stream_id", "node_id", "execution_id", "data", "timestamp", "correlation_id"]
    event = AgentEvent(EventType.GOAL_ACHIEVED, "s", data={"x": 1}, correlation_id="c")
    assert isinstance(event.timestamp, datetime) and event.data == {"x": 1}
    assert event.to_dict() == {
        "type": "goal_achieved", "stream_id": "s", "node_id": None, "execution_id": None,
        "data": {"x": 1}, "timestamp": event.timestamp.isoformat(), "correlation_id": "c"}
    assert AgentEvent(EventType.CUSTOM, "s").data == {}


def test_constructor_subscribe_and_query_signatures_match_the_seed() -> None:
    def shape(function: Any) -> list[tuple[str, Any]]:
        return [(p.name, p.default) for p in inspect.signature(function).parameters.values()
                if p.name != "self" and p.kind is not inspect.Parameter.KEYWORD_ONLY]

    assert shape(EventBus.__init__) == [("max_history", 1000), ("max_concurrent_handlers", 10)]
    assert shape(EventBus.subscribe) == [
        ("event_types", R), ("handler", R), ("filter_stream", None), ("filter_node", None),
        ("filter_execution", None)]
    assert shape(EventBus.unsubscribe) == [("subscription_id", R)]
    assert shape(EventBus.publish) == [("event", R)]
    assert shape(EventBus.get_history) == [
        ("event_type", None), ("stream_id", None), ("execution_id", None), ("limit", 100)]
    assert shape(EventBus.get_stats) == []
    assert shape(EventBus.wait_for) == [
        ("event_type", R), ("stream_id", None), ("node_id", None), ("execution_id", None),
        ("timeout", None)]
    assert inspect.iscoroutinefunction(EventBus.publish)
    assert inspect.iscoroutinefunction(EventBus.wait_for)


def test_every_emitter_has_the_seeds_signature() -> None:
    emitters = {name for name in dir(EventBus) if name.startswith("emit_")}
    assert emitters == set(SEED_EMITTERS)
    for name, (parameters, _) in SEED_EMITTERS.items():
        method = getattr(EventBus, name)
        assert inspect.iscoroutinefunction(method), name
        found = [(p.name, p.default) for p in inspect.signature(method).parameters.values()]
        assert found == [("self", R), *parameters], name


@pytest.mark.parametrize("name", sorted(SEED_EMITTERS))
async def test_every_emitter_publishes_the_seeds_event(bus: EventBus, name: str) -> None:
    parameters, type_value = SEED_EMITTERS[name]
    arguments = {p: SAMPLE_ARGS[p] for p, _ in parameters}
    await getattr(bus, name)(**arguments)
    (event,) = bus.get_history()
    assert event.type is EventType(type_value)
    assert event.data == SEED_DATA[name]
    assert event.stream_id == "s"
    assert event.node_id == arguments.get("node_id")
    assert event.execution_id == arguments.get("execution_id")
    # and on the underlying bus, as the mapped kind with the mapped scope
    (core,) = bus.bus.history()
    assert core.scope.stream_id == "s"
    assert core.scope.run_id == arguments.get("execution_id")
    assert core.scope.node_id == arguments.get("node_id")


# ---------------------------------------------------------------------- subscribe
async def test_subscribe_filters_like_the_seed(bus: EventBus) -> None:
    got: dict[str, list[AgentEvent]] = {k: [] for k in ("type", "stream", "node", "exec")}

    def collect(key: str) -> Any:
        async def handler(event: AgentEvent) -> None:
            got[key].append(event)
        return handler

    ids = [
        bus.subscribe([EventType.TOOL_CALL_STARTED], collect("type")),
        bus.subscribe([EventType.TOOL_CALL_STARTED, EventType.NODE_STALLED], collect("stream"),
                      filter_stream="s1"),
        bus.subscribe([EventType.TOOL_CALL_STARTED], collect("node"), filter_node="n1"),
        bus.subscribe([EventType.TOOL_CALL_STARTED], collect("exec"), filter_execution="e1"),
    ]
    assert ids == ["sub_1", "sub_2", "sub_3", "sub_4"]
    published = [
        AgentEvent(EventType.TOOL_CALL_STARTED, "s1", node_id="n1", execution_id="e1"),
        AgentEvent(EventType.TOOL_CALL_STARTED, "s2", node_id="n1", execution_id="e2"),
        AgentEvent(EventType.TOOL_CALL_STARTED, "s1", node_id="n2", execution_id="e1"),
        AgentEvent(EventType.NODE_STALLED, "s1", node_id="n1", execution_id="e1"),
        AgentEvent(EventType.TOOL_CALL_COMPLETED, "s1", node_id="n1", execution_id="e1"),
    ]
    for event in published:
        await bus.publish(event)
    await until(lambda: sum(len(v) for v in got.values()) >= 10)
    await asyncio.sleep(0.01)
    assert got["type"] == published[:3]
    assert got["stream"] == [published[0], published[2], published[3]]
    assert got["node"] == [published[0], published[1]]
    assert got["exec"] == [published[0], published[2]]
    assert got["type"][0] is published[0]  # handlers get the very object published


async def test_unsubscribe(bus: EventBus) -> None:
    seen: list[AgentEvent] = []

    async def handler(event: AgentEvent) -> None:
        seen.append(event)

    sub_id = bus.subscribe([EventType.CUSTOM], handler)
    await bus.publish(AgentEvent(EventType.CUSTOM, "s"))
    await until(lambda: len(seen) == 1)
    assert bus.unsubscribe(sub_id) is True
    assert bus.unsubscribe(sub_id) is False
    assert bus.unsubscribe("sub_99") is False
    await bus.publish(AgentEvent(EventType.CUSTOM, "s"))
    await asyncio.sleep(0.05)
    assert len(seen) == 1
    assert bus.get_stats()["subscriptions"] == 0


def test_subscribing_before_the_event_loop_runs() -> None:
    hive = EventBus()
    seen: list[str] = []

    async def handler(event: AgentEvent) -> None:
        seen.append(event.stream_id)

    assert hive.subscribe([EventType.GOAL_ACHIEVED], handler) == "sub_1"

    async def main() -> None:
        await hive.publish(AgentEvent(EventType.GOAL_ACHIEVED, "early"))
        await until(lambda: seen == ["early"])
        await hive.close()

    asyncio.run(main())
    assert seen == ["early"]


async def test_queued_delivery_with_await_handlers_gives_the_seeds_publish(
    caplog: pytest.LogCaptureFixture
) -> None:
    hive = EventBus(queued_delivery=True, await_handlers=True)
    done: list[str] = []

    async def slow(event: AgentEvent) -> None:
        await asyncio.sleep(0.02)
        done.append("slow")

    async def failing(event: AgentEvent) -> None:
        raise RuntimeError("handler bug")

    hive.subscribe([EventType.STREAM_STARTED], slow)
    hive.subscribe([EventType.STREAM_STARTED], failing)
    with caplog.at_level(logging.ERROR, logger="otel_agentbus.compat.hive"):
        await hive.publish(AgentEvent(EventType.STREAM_STARTED, "s"))
    assert done == ["slow"]  # every handler has run when publish returns
    assert any("handler bug" in r.getMessage() for r in caplog.records)
    await hive.publish(AgentEvent(EventType.STREAM_STOPPED, "s"))  # nobody to wait for
    await hive.close()


async def test_queued_delivery_publish_does_not_wait_for_handlers() -> None:
    bus = EventBus(queued_delivery=True)  # the project's faster delivery, opted in
    release = asyncio.Event()
    handled: list[AgentEvent] = []

    async def blocked(event: AgentEvent) -> None:
        await release.wait()
        handled.append(event)

    bus.subscribe([EventType.STREAM_STARTED], blocked)
    await asyncio.wait_for(bus.publish(AgentEvent(EventType.STREAM_STARTED, "s")), 10)
    assert handled == []
    release.set()
    await until(lambda: len(handled) == 1)
    await bus.close()


async def test_handler_errors_do_not_reach_the_publisher_or_other_handlers(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    async def failing(event: AgentEvent) -> None:
        raise ValueError("nope")

    async def fine(event: AgentEvent) -> None:
        seen.append(event.stream_id)

    bus.subscribe([EventType.CUSTOM], failing)
    bus.subscribe([EventType.CUSTOM], fine)
    with caplog.at_level(logging.ERROR, logger="otel_agentbus.compat.hive"):
        await bus.publish(AgentEvent(EventType.CUSTOM, "a"))
        await bus.publish(AgentEvent(EventType.CUSTOM, "b"))
        await until(lambda: seen == ["a", "b"])
    assert [r.getMessage() for r in caplog.records].count("Handler error for custom: nope") == 2


async def test_max_concurrent_handlers_caps_handlers_across_subscriptions() -> None:
    hive = EventBus(max_concurrent_handlers=1)
    running = peak = finished = 0

    async def handler(event: AgentEvent) -> None:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005)
        running -= 1
        finished += 1

    for _ in range(3):
        hive.subscribe([EventType.CUSTOM], handler)
    for _ in range(2):
        await hive.publish(AgentEvent(EventType.CUSTOM, "s"))
    await until(lambda: finished == 6)
    assert peak == 1
    await hive.close()


# ------------------------------------------------------------------ history, stats
async def test_get_history_filters_limits_and_is_most_recent_first(bus: EventBus) -> None:
    await bus.emit_execution_started("s1", "e1")
    await bus.emit_node_loop_started("s1", "n", execution_id="e1")
    await bus.emit_execution_started("s2", "e2")
    await bus.emit_execution_completed("s1", "e1")
    history = bus.get_history()
    assert [(e.type.value, e.execution_id) for e in history] == [
        ("execution_completed", "e1"), ("execution_started", "e2"),
        ("node_loop_started", "e1"), ("execution_started", "e1")]
    assert [e.execution_id for e in bus.get_history(EventType.EXECUTION_STARTED)] == [
        "e2", "e1"]
    assert {e.stream_id for e in bus.get_history(stream_id="s1")} == {"s1"}
    assert len(bus.get_history(stream_id="s1")) == 3
    assert [e.type for e in bus.get_history(execution_id="e2")] == [
        EventType.EXECUTION_STARTED]
    assert len(bus.get_history(limit=2)) == 2
    assert bus.get_history(limit=2)[0].type is EventType.EXECUTION_COMPLETED


async def test_history_is_bounded_by_max_history() -> None:
    hive = EventBus(max_history=3)
    for i in range(5):
        await hive.emit_goal_progress("s", i / 10, {})
    assert [e.data["progress"] for e in hive.get_history()] == [0.4, 0.3, 0.2]
    await hive.close()


async def test_get_stats_has_the_seeds_keys(bus: EventBus) -> None:
    async def handler(event: AgentEvent) -> None:
        pass

    bus.subscribe([EventType.CUSTOM], handler)
    await bus.emit_execution_started("s", "e")
    await bus.emit_node_stalled("s", "n")
    await bus.emit_node_stalled("s", "n")
    assert bus.get_stats() == {
        "total_events": 3, "subscriptions": 1,
        "events_by_type": {"execution_started": 1, "node_stalled": 2}}


async def test_wait_for_returns_the_event_or_none_on_timeout(bus: EventBus) -> None:
    waiter = asyncio.create_task(
        bus.wait_for(EventType.NODE_LOOP_COMPLETED, stream_id="s", node_id="n",
                     execution_id="e", timeout=10))
    await asyncio.sleep(0.01)
    await bus.emit_node_loop_completed("s", "other", 1, execution_id="e")  # wrong node
    await bus.emit_node_loop_completed("s", "n", 4, execution_id="e")
    event = await waiter
    assert event is not None
    assert (event.node_id, event.data) == ("n", {"iterations": 4})
    assert await bus.wait_for(EventType.GOAL_ACHIEVED, timeout=0.01) is None


# --------------------------------------------------------------- the two buses meet
async def test_events_published_on_the_underlying_bus_reach_hive_handlers(
    bus: EventBus
) -> None:
    seen: list[AgentEvent] = []

    async def handler(event: AgentEvent) -> None:
        seen.append(event)

    bus.subscribe([EventType.TOOL_CALL_STARTED], handler)
    set_default_bus(bus.bus)
    try:
        @tool
        def search(query: str) -> str:
            return query

        search("otel")
    finally:
        set_default_bus(None)
    await until(lambda: len(seen) == 1)
    (event,) = seen
    assert event.type is EventType.TOOL_CALL_STARTED
    assert event.data["tool_name"] == "search"
    assert event.data["arguments"] == {"query": "otel"}
    assert bus.get_history(EventType.TOOL_CALL_STARTED) == [event]


async def test_scope_agent_correlation_and_time_reach_the_underlying_event(
    bus: EventBus
) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678901)
    await bus.publish(AgentEvent(EventType.EXECUTION_STARTED, "webhook", execution_id="e1",
                                 data={"input_data": {"q": 1}}, timestamp=when,
                                 correlation_id="corr"))
    await bus.emit_tool_call_started("webhook", "n", "tu", "t", execution_id="e1")
    await bus.publish(AgentEvent(EventType.EXECUTION_STARTED, "webhook", execution_id="e2",
                                 data={"agent": "planner", "blob": {1: object()}}))
    started, tool_started, named = reversed(bus.bus.history())
    assert started.kind == "agent.run.started"
    assert started.scope == Scope(run_id="e1", stream_id="webhook", agent="webhook")
    assert started.payload["input"] == {"q": 1}  # input_data is the mirror's input
    assert started.correlation.correlation_id == "corr"
    assert abs(started.time_ns - when.timestamp() * 1e9) < 2_000  # the event's own time
    assert tool_started.scope.agent == "webhook"  # every event of the run carries it
    assert named.scope.agent == "planner"
    assert isinstance(named.payload["blob"]["1"], str)  # not JSON: its repr


async def test_events_from_elsewhere_convert_back_to_agent_events(bus: EventBus) -> None:
    await bus.bus.publish(Event("agent.node.stalled", {"reason": "stuck"},
                                scope=Scope(run_id="r", stream_id="s", node_id="n")))
    (event,) = bus.get_history()
    assert event == AgentEvent(EventType.NODE_STALLED, "s", node_id="n", execution_id="r",
                               data={"reason": "stuck"}, timestamp=event.timestamp)


# ------------------------------------------------------------------------- telemetry
async def hive_agent(bus: EventBus, execution_id: str, fail: bool = False) -> None:
    """An agent written against the Hive API, unchanged apart from its import."""
    stream = "webhook"
    await bus.emit_execution_started(stream, execution_id, input_data={"topic": "otel"})
    await bus.emit_node_loop_started(stream, "research", execution_id=execution_id,
                                     max_iterations=3)
    for i in (1, 2):
        await bus.emit_node_loop_iteration(stream, "research", i, execution_id=execution_id)
        if i == 1:  # a decision through the underlying bus: a span event on the iteration
            await bus.bus.publish(Event(
                "agent.decision.made",
                {"decision_id": "d1", "chosen": "web_search", "options": ["web_search", "ask"],
                 "reasoning": "fresh facts needed"},
                scope=Scope(run_id=execution_id, stream_id=stream, node_id="research")))
        await bus.emit_tool_call_started(stream, "research", f"tu-{i}", "web_search",
                                         {"q": "otel"}, execution_id=execution_id)
        await bus.emit_llm_text_delta(stream, "research", "tok", "tok",
                                      execution_id=execution_id)
        await bus.emit_tool_call_completed(stream, "research", f"tu-{i}", "web_search",
                                           result="rate limited" if i == 2 else "ok",
                                           is_error=i == 2, execution_id=execution_id)
    await bus.emit_node_loop_completed(stream, "research", 2, execution_id=execution_id)
    await bus.emit_state_changed(stream, execution_id, "phase", "research", "answer",
                                 "execution")
    if fail:
        await bus.emit_execution_failed(stream, execution_id, "gave up")
    else:
        await bus.emit_execution_completed(stream, execution_id, output={"answer": 42})


@pytest.fixture
async def make() -> AsyncGenerator[HarnessFactory, Any]:
    factory = HarnessFactory()
    yield factory
    await factory.close()


async def test_a_hive_agent_becomes_a_trace_in_process(make: HarnessFactory) -> None:
    h: Harness = make()
    hive = EventBus(bus=h.bus)
    await hive_agent(hive, "exec-1")
    root = h.one("invoke_agent webhook")
    node = h.one("node research")
    iterations = h.named("iteration research")
    tools = h.named("execute_tool web_search")
    assert parent_id(node) == span_id(root)
    assert [parent_id(s) for s in iterations] == [span_id(node)] * 2
    assert [parent_id(s) for s in tools] == [span_id(s) for s in iterations]
    assert [s.status.status_code for s in tools] == [StatusCode.UNSET, StatusCode.ERROR]
    assert [e.name for e in iterations[0].events] == ["agentbus.decision"]
    assert [e.name for e in root.events] == ["agent.state.changed"]
    assert (root.attributes or {})[sc.RUN_ID] == "exec-1"


async def test_telemetry_argument_attaches_the_mirror(make: HarnessFactory) -> None:
    h: Harness = make()
    hive = EventBus(telemetry=h.telemetry)
    await hive_agent(hive, "exec-2", fail=True)
    await hive.close()
    root = h.one("invoke_agent webhook")
    assert root.status.status_code is StatusCode.ERROR
    assert root.status.description == "gave up"
    assert (root.attributes or {})[sc.RUN_STATUS] == "failed"


HIVE_AGENT_SCRIPT = r'''
import asyncio, json, sys
from otel_agentbus import Event, Scope, configure
from otel_agentbus.compat.hive import AgentEvent, EventBus, EventType

endpoint = sys.argv[1]


async def research_agent(bus, execution_id, fail=False):
    """Written against Hive's EventBus; only the import changed."""
    stream = "webhook"
    await bus.emit_execution_started(stream, execution_id, input_data={"topic": "otel"},
                                     correlation_id="corr-" + execution_id)
    await bus.emit_node_loop_started(stream, "research", execution_id=execution_id,
                                     max_iterations=3)
    for i in (1, 2):
        await bus.emit_node_loop_iteration(stream, "research", i, execution_id=execution_id)
        if i == 1:
            await bus.bus.publish(Event(
                "agent.decision.made",
                {"decision_id": "d1", "chosen": "web_search",
                 "options": ["web_search", "ask"], "reasoning": "fresh facts needed"},
                scope=Scope(run_id=execution_id, stream_id=stream, node_id="research")))
        await bus.emit_tool_call_started(stream, "research", f"tu-{i}", "web_search",
                                         {"q": "otel"}, execution_id=execution_id)
        await bus.emit_llm_text_delta(stream, "research", "tok", "tok",
                                      execution_id=execution_id)
        await bus.emit_tool_call_completed(stream, "research", f"tu-{i}", "web_search",
                                           result="rate limited" if i == 2 else "ok",
                                           is_error=i == 2, execution_id=execution_id)
    await bus.emit_node_loop_completed(stream, "research", 2, execution_id=execution_id)
    if fail:
        await bus.emit_execution_failed(stream, execution_id, "gave up")
    else:
        await bus.emit_execution_completed(stream, execution_id, output={"answer": 42})


async def main():
    telemetry = configure(endpoint=endpoint, protocol="grpc", service_name="hive-agent",
                          metrics_enabled=False)
    bus = EventBus()
    telemetry.attach(bus.bus)
    completed = []

    async def on_completed(event):
        completed.append(event.execution_id)

    bus.subscribe([EventType.EXECUTION_COMPLETED], on_completed)
    await research_agent(bus, "exec-ok")
    await research_agent(bus, "exec-bad", fail=True)
    await bus.close()
    flushed = telemetry.force_flush(10)
    telemetry.shutdown(timeout=10)
    print(json.dumps({"completed": completed, "flushed": flushed,
                      "stats": bus.get_stats(), "export": telemetry.export_stats()}))


asyncio.run(main())
'''


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    from telemetry_helpers import start_receiver

    started = start_receiver(tmp_path_factory.mktemp("hive-e2e"))
    try:
        yield started
    finally:
        started.stop()


def _spans(db: Path, trace_id: str) -> list[SpanRow]:
    return [s for s in get_trace(db, trace_id).spans if not s.pending]


def test_a_hive_agent_produces_the_expected_trace_in_the_receiver(receiver: Receiver) -> None:
    result = run_python(HIVE_AGENT_SCRIPT, receiver.grpc_endpoint, timeout=45)
    assert result["completed"] == ["exec-ok"]
    assert result["flushed"] is True
    assert result["export"]["spans_export_failed"] == 0
    assert result["stats"]["events_by_type"]["tool_call_completed"] == 4
    assert "Failed to detach context" not in result["_stderr"]

    runs = {run.run_id: run for run in list_runs(receiver.db)}
    assert set(runs) == {"exec-ok", "exec-bad"}
    assert runs["exec-ok"].status == "completed"
    assert runs["exec-bad"].status == "failed"
    assert runs["exec-ok"].agent == "webhook"
    assert runs["exec-ok"].trace_id != runs["exec-bad"].trace_id

    spans = _spans(receiver.db, runs["exec-ok"].trace_id)
    by_name: dict[str, list[SpanRow]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    assert sorted(by_name) == ["execute_tool web_search", "invoke_agent webhook",
                               "iteration research", "node research"]
    (root,), (node,) = by_name["invoke_agent webhook"], by_name["node research"]
    iterations, tools = by_name["iteration research"], by_name["execute_tool web_search"]
    assert root.parent_span_id is None
    assert root.service_name == "hive-agent"
    assert root.attributes[sc.GEN_AI_AGENT_NAME] == "webhook"
    assert root.attributes[sc.STREAM_ID] == "webhook"
    assert root.attributes[sc.RUN_ID] == "exec-ok"
    assert root.attributes[sc.RUN_STATUS] == "completed"
    assert node.parent_span_id == root.span_id
    assert node.attributes[sc.NODE_MAX_ITERATIONS] == 3
    assert node.attributes[sc.NODE_ITERATIONS] == 2
    assert sorted(s.attributes[sc.NODE_ITERATION] for s in iterations) == [1, 2]
    assert {s.parent_span_id for s in iterations} == {node.span_id}
    iteration_by_number = {s.attributes[sc.NODE_ITERATION]: s for s in iterations}
    tool_by_id = {s.attributes[sc.GEN_AI_TOOL_CALL_ID]: s for s in tools}
    assert set(tool_by_id) == {"tu-1", "tu-2"}
    assert tool_by_id["tu-1"].parent_span_id == iteration_by_number[1].span_id
    assert tool_by_id["tu-2"].parent_span_id == iteration_by_number[2].span_id
    assert tool_by_id["tu-1"].status_code == "UNSET"
    assert tool_by_id["tu-2"].status_code == "ERROR"
    assert tool_by_id["tu-2"].attributes[sc.ERROR_TYPE] == "_OTHER"
    assert sc.GEN_AI_TOOL_CALL_RESULT not in tool_by_id["tu-2"].attributes  # content stays home
    (decision,) = iteration_by_number[1].events
    assert decision.name == "agentbus.decision"
    assert decision.attributes[sc.DECISION_CHOSEN] == "web_search"

    bad = _spans(receiver.db, runs["exec-bad"].trace_id)
    (bad_root,) = [s for s in bad if s.name == "invoke_agent webhook"]
    assert bad_root.status_code == "ERROR"
    assert bad_root.status_message == "gave up"
    assert len([s for s in bad if s.name == "execute_tool web_search"]) == 2
