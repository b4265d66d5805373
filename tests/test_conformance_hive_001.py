"""Seed 001 (Hive ``AgentRuntime``), as the seed text calls it. Every expectation is read
off the seed, not off our API: one test per call pattern. Graph, goal and LLM are types
from outside the seeds: here plain objects with only the attributes the seed uses.
The table of rows is ``docs/conformance-hive.md``."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from async_helpers import wait_until
from telemetry_helpers import run_python

from otel_agentbus.compat.hive import (
    AgentEvent,
    AgentRuntime,
    AgentRuntimeConfig,
    EntryPointSpec,
    EventBus,
    EventType,
    ExecutionResult,
    OutcomeAggregator,
    SharedStateManager,
    create_agent_runtime,
)
from otel_agentbus.runtime import Constraint, Goal, Graph, Node

pytestmark = pytest.mark.timeout(60)

R = inspect.Parameter.empty
SEED_CONFIG = {
    "max_concurrent_executions": 100, "cache_ttl": 60.0, "batch_interval": 0.1,
    "max_history": 1000, "execution_result_max": 1000, "execution_result_ttl_seconds": None,
    "webhook_host": "127.0.0.1", "webhook_port": 8080, "webhook_routes": [],
}
SEED_SIGNATURES: dict[str, tuple[tuple[str, Any], ...]] = {
    "__init__": (("graph", R), ("goal", R), ("storage_path", R), ("llm", None),
                 ("tools", None), ("tool_executor", None), ("config", None),
                 ("runtime_log_store", None), ("checkpoint_config", None)),
    "register_entry_point": (("spec", R),),
    "unregister_entry_point": (("entry_point_id", R),),
    "start": (),
    "stop": (),
    "trigger": (("entry_point_id", R), ("input_data", R), ("correlation_id", None),
                ("session_state", None)),
    "trigger_and_wait": (("entry_point_id", R), ("input_data", R), ("timeout", None),
                         ("session_state", None)),
    "inject_input": (("node_id", R), ("content", R)),
    "get_goal_progress": (),
    "cancel_execution": (("entry_point_id", R), ("execution_id", R)),
    "get_entry_points": (),
    "get_stream": (("entry_point_id", R),),
    "get_execution_result": (("entry_point_id", R), ("execution_id", R)),
    "subscribe_to_events": (("event_types", R), ("handler", R), ("filter_stream", None)),
    "unsubscribe_from_events": (("subscription_id", R),),
    "get_stats": (),
}
SEED_FACTORY = (("graph", R), ("goal", R), ("storage_path", R), ("entry_points", R),
                ("llm", None), ("tools", None), ("tool_executor", None), ("config", None),
                ("runtime_log_store", None), ("enable_logging", True),
                ("checkpoint_config", None))
ASYNC_METHODS = {"start", "stop", "trigger", "trigger_and_wait", "inject_input",
                 "get_goal_progress", "cancel_execution"}


def _positional(function: Any) -> tuple[tuple[str, Any], ...]:
    return tuple((p.name, p.default) for p in inspect.signature(function).parameters.values()
                 if p.name != "self" and p.kind is not inspect.Parameter.KEYWORD_ONLY)


# ------------------------------------------------- stand-ins for types outside the seeds
class Criterion:
    def __init__(self, id: str, target: Any = 1.0, metric: str = "success_rate") -> None:
        self.id, self.target, self.metric, self.description = id, target, metric, id
        self.weight = 1.0


class SupportGoal:
    """Only what the seed and the aggregator read of a goal."""

    id = "support-goal"
    description = "Handle support tickets"
    success_criteria = (Criterion("resolved", target="90%"),)
    constraints = ()


class LLMProvider:
    model = "fake-model"


async def process_webhook(ctx: Any, memory: dict[str, Any]) -> dict[str, Any]:
    decision = ctx.runtime.decide(intent="Classify ticket",
                                  options=[{"id": "howto"}, {"id": "bug"}], chosen="howto",
                                  reasoning="matches how-to")
    ctx.runtime.record_outcome(decision, success=True, result={"category": "howto"})
    return {"ticket_id": memory["ticket_id"], "model": ctx.llm.model}


async def process_request(ctx: Any, memory: dict[str, Any]) -> dict[str, Any]:
    return {"answer": f"help with {memory['query']}"}


async def handle_event(ctx: Any, memory: dict[str, Any]) -> dict[str, Any]:
    return {"handled": memory["event"]["data"]}


async def wait_for_user(ctx: Any, memory: dict[str, Any]) -> dict[str, Any]:
    ctx.shared["visits"] = ctx.shared.get("visits", 0) + 1
    reply = await ctx.request_input("your name?")
    return {"name": reply}


class SupportGraph:
    """A graph as the seed uses it: ``get_node(id)``; its nodes are callables."""

    id = "support-agent"

    def __init__(self) -> None:
        self._nodes = {"process-webhook": process_webhook, "process-request": process_request,
                       "ask-user": wait_for_user, "handle-event": handle_event}

    def get_node(self, node_id: str) -> Any:
        return self._nodes.get(node_id)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[AgentRuntime]:
    made = AgentRuntime(graph=SupportGraph(), goal=SupportGoal(),
                        storage_path=tmp_path / "storage", llm=LLMProvider())
    made.register_entry_point(EntryPointSpec(id="webhook", name="Zendesk Webhook",
                                             entry_node="process-webhook",
                                             trigger_type="webhook",
                                             isolation_level="shared"))
    made.register_entry_point(EntryPointSpec(id="api", name="API Handler",
                                             entry_node="process-request", trigger_type="api",
                                             isolation_level="shared"))
    made.register_entry_point(EntryPointSpec(id="chat", name="Chat",
                                             entry_node="ask-user"))
    yield made
    await made.stop()
    await made.event_bus.close()


# ------------------------------------------------------------------ the API surface
def test_config_has_the_seeds_fields_and_defaults() -> None:
    fields = {f.name: f for f in dataclasses.fields(AgentRuntimeConfig)}
    assert list(fields) == list(SEED_CONFIG)
    assert dataclasses.asdict(AgentRuntimeConfig()) == SEED_CONFIG
    routes = [{"source_id": "github", "path": "/hooks/github", "methods": ["POST"],
               "secret": None}]
    assert AgentRuntimeConfig(webhook_routes=routes).webhook_routes == routes


@pytest.mark.parametrize("method", sorted(SEED_SIGNATURES))
def test_runtime_method_has_the_seeds_parameters(method: str) -> None:
    function = getattr(AgentRuntime, method)
    assert _positional(function) == SEED_SIGNATURES[method]
    assert inspect.iscoroutinefunction(function) == (method in ASYNC_METHODS)


def test_create_agent_runtime_has_the_seeds_parameters() -> None:
    assert _positional(create_agent_runtime) == SEED_FACTORY


def test_entry_point_spec_takes_the_seeds_fields() -> None:
    spec = EntryPointSpec(id="webhook", name="Zendesk Webhook", entry_node="process-webhook",
                          trigger_type="webhook", isolation_level="shared",
                          trigger_config={"event_types": ["custom"]})
    assert (spec.id, spec.name, spec.entry_node, spec.trigger_type, spec.isolation_level,
            spec.trigger_config) == ("webhook", "Zendesk Webhook", "process-webhook",
                                     "webhook", "shared", {"event_types": ["custom"]})


@pytest.mark.parametrize("name", ["EventBus", "EntryPointSpec", "ExecutionStream",
                                  "ExecutionResult", "OutcomeAggregator", "SharedStateManager",
                                  "ConcurrentStorage", "SessionStore", "AgentRuntime",
                                  "AgentRuntimeConfig", "create_agent_runtime"])
def test_the_names_seed_001_imports_are_importable(name: str) -> None:
    import otel_agentbus.compat.hive as hive

    assert name in hive.__all__
    assert getattr(hive, name) is not None


# ------------------------------------------------------------ the docstring example
async def test_the_seeds_docstring_example(tmp_path: Path) -> None:
    support_agent_graph, support_agent_goal = SupportGraph(), SupportGoal()
    llm_provider = LLMProvider()
    # --- the seed's example, verbatim apart from the storage folder
    runtime = AgentRuntime(
        graph=support_agent_graph,
        goal=support_agent_goal,
        storage_path=tmp_path / "storage",
        llm=llm_provider,
    )
    runtime.register_entry_point(EntryPointSpec(
        id="webhook",
        name="Zendesk Webhook",
        entry_node="process-webhook",
        trigger_type="webhook",
        isolation_level="shared",
    ))
    runtime.register_entry_point(EntryPointSpec(
        id="api",
        name="API Handler",
        entry_node="process-request",
        trigger_type="api",
        isolation_level="shared",
    ))
    await runtime.start()
    exec_1 = await runtime.trigger("webhook", {"ticket_id": "123"})
    exec_2 = await runtime.trigger("api", {"query": "help"})
    progress = await runtime.get_goal_progress()
    print(f"Progress: {progress['overall_progress']:.1%}")
    await runtime.stop()
    # ---
    assert exec_1 != exec_2
    assert set(progress) >= {"overall_progress", "criteria_status", "constraint_violations",
                             "metrics", "recommendation"}
    sessions = await runtime.session_store.list_sessions()
    assert {s["execution_id"] for s in sessions} == {exec_1, exec_2}
    await runtime.event_bus.close()


# --------------------------------------------------------------- entry points
async def test_register_entry_point_refuses_what_the_seed_refuses(
    runtime: AgentRuntime
) -> None:
    with pytest.raises(ValueError, match="already registered"):
        runtime.register_entry_point(EntryPointSpec("api", "again", "process-request"))
    with pytest.raises(ValueError, match="Entry node 'missing' not found in graph"):
        runtime.register_entry_point(EntryPointSpec("x", "x", "missing"))
    with pytest.raises(ValueError, match="unknown event type 'execution_done'"):
        runtime.register_entry_point(EntryPointSpec(
            "z", "z", "process-request", trigger_type="event",
            trigger_config={"event_types": ["execution_done"]}))
    await runtime.start()
    with pytest.raises(RuntimeError, match="while runtime is running"):
        runtime.register_entry_point(EntryPointSpec("y", "y", "process-request"))
    with pytest.raises(RuntimeError, match="while runtime is running"):
        runtime.unregister_entry_point("api")


def test_unregister_entry_point_returns_whether_it_was_there(runtime: AgentRuntime) -> None:
    assert runtime.unregister_entry_point("chat") is True
    assert runtime.unregister_entry_point("chat") is False
    assert [s.id for s in runtime.get_entry_points()] == ["webhook", "api"]


# ----------------------------------------------------------------- triggering
async def test_trigger_with_input_data_keyword_returns_an_execution_id(
    runtime: AgentRuntime
) -> None:
    with pytest.raises(RuntimeError, match="not running"):
        await runtime.trigger("api", input_data={"query": "q"})
    await runtime.start()
    with pytest.raises(ValueError, match="Entry point 'nope' not found"):
        await runtime.trigger("nope", input_data={})
    execution_id = await runtime.trigger("api", input_data={"query": "docs"},
                                         correlation_id="corr-1")
    assert isinstance(execution_id, str) and execution_id
    await wait_until(lambda: runtime.get_execution_result("api", execution_id) is not None)
    result = runtime.get_execution_result("api", execution_id)
    assert isinstance(result, ExecutionResult)
    assert result.success and result.output == {"answer": "help with docs"}
    assert result.correlation_id == "corr-1"


async def test_trigger_and_wait_returns_the_result_or_none_on_timeout(
    runtime: AgentRuntime
) -> None:
    await runtime.start()
    result = await runtime.trigger_and_wait("webhook", {"ticket_id": "7"}, timeout=30)
    assert result is not None and result.success
    assert result.output == {"ticket_id": "7", "model": "fake-model"}  # ctx.llm is the llm
    assert await runtime.trigger_and_wait("chat", {}, timeout=0.05) is None  # waits for input


async def test_inject_input_reaches_the_waiting_node(runtime: AgentRuntime) -> None:
    await runtime.start()
    assert await runtime.inject_input("ask-user", "nobody waits") is False
    execution_id = await runtime.trigger("chat", {})
    await wait_until(lambda: bool(runtime.agent_runtime.waiting_for_input()))
    assert await runtime.inject_input("ask-user", "Ada") is True
    await wait_until(lambda: runtime.get_execution_result("chat", execution_id) is not None)
    result = runtime.get_execution_result("chat", execution_id)
    assert result is not None and result.output == {"name": "Ada"}


async def test_cancel_execution_by_entry_point_and_execution_id(runtime: AgentRuntime) -> None:
    await runtime.start()
    execution_id = await runtime.trigger("chat", {})
    assert await runtime.cancel_execution("api", execution_id) is False  # not its stream
    assert await runtime.cancel_execution("chat", "exec-unknown") is False
    assert await runtime.cancel_execution("chat", execution_id) is True
    await wait_until(lambda: runtime.get_execution_result("chat", execution_id) is not None)
    result = runtime.get_execution_result("chat", execution_id)
    assert result is not None and result.status == "cancelled"
    assert await runtime.cancel_execution("chat", execution_id) is False  # already over


async def test_get_stream_and_get_execution_result_by_entry_point(
    runtime: AgentRuntime
) -> None:
    assert runtime.get_stream("api") is None  # streams exist while running, as in the seed
    await runtime.start()
    stream = runtime.get_stream("api")
    assert stream is not None and stream.id == "api"
    assert runtime.get_stream("nope") is None
    result = await runtime.trigger_and_wait("api", {"query": "q"}, timeout=30)
    assert result is not None
    assert runtime.get_execution_result("api", result.execution_id) == result
    assert runtime.get_execution_result("webhook", result.execution_id) is None


async def test_get_goal_progress_is_the_outcome_aggregators_report(
    runtime: AgentRuntime
) -> None:
    await runtime.start()
    await runtime.trigger_and_wait("webhook", {"ticket_id": "1"}, timeout=30)
    progress = await runtime.get_goal_progress()
    status = progress["criteria_status"]["resolved"]
    assert status["target"] == 0.9
    assert status["met"] is True and progress["overall_progress"] == 1.0
    assert progress["metrics"]["total_decisions"] == 1
    assert progress["recommendation"] == "complete"


async def test_goal_constraints_with_a_check_judge_every_execution(tmp_path: Path) -> None:
    goal = Goal("answers", "Answer briefly", constraints=[
        Constraint("brief", "answers stay short",
                   check=lambda result: len(str(result.output)) < 30 or "answer too long")])
    runtime = AgentRuntime(SupportGraph(), goal, tmp_path)
    runtime.register_entry_point(EntryPointSpec("api", "API", "process-request"))
    violations: list[AgentEvent] = []

    async def on_violation(event: AgentEvent) -> None:
        violations.append(event)

    runtime.subscribe_to_events([EventType.CONSTRAINT_VIOLATION], on_violation)
    await runtime.start()
    short = await runtime.trigger_and_wait("api", {"query": "x"}, timeout=30)
    long = await runtime.trigger_and_wait("api", {"query": "x" * 40}, timeout=30)
    progress = await runtime.get_goal_progress()
    await runtime.stop()
    await runtime.event_bus.close()
    assert short is not None and long is not None
    assert [(v["constraint_id"], v["description"], v["execution_id"])
            for v in progress["constraint_violations"]] == [
        ("brief", "answer too long", long.execution_id)]
    assert progress["recommendation"] == "adjust"
    assert [(e.execution_id, e.data["constraint_id"]) for e in violations] == [
        (long.execution_id, "brief")]


# ---------------------------------------------------------------- subscriptions
async def test_subscribe_to_events_and_unsubscribe_by_id(runtime: AgentRuntime) -> None:
    seen: list[AgentEvent] = []

    async def on_completed(event: AgentEvent) -> None:
        seen.append(event)

    sub_id = runtime.subscribe_to_events(event_types=[EventType.EXECUTION_COMPLETED],
                                         handler=on_completed, filter_stream="api")
    assert sub_id == "sub_1"
    await runtime.start()
    result = await runtime.trigger_and_wait("api", {"query": "q"}, timeout=30)
    await runtime.trigger_and_wait("webhook", {"ticket_id": "1"}, timeout=30)
    assert result is not None
    assert [(e.type, e.stream_id, e.execution_id) for e in seen] == [
        (EventType.EXECUTION_COMPLETED, "api", result.execution_id)]
    assert runtime.unsubscribe_from_events("sub_1") is True
    assert runtime.unsubscribe_from_events("sub_1") is False


async def test_event_bus_publish_triggers_an_event_entry_point(tmp_path: Path) -> None:
    runtime = AgentRuntime(SupportGraph(), SupportGoal(), tmp_path)
    runtime.register_entry_point(EntryPointSpec(
        id="on-ticket", name="On ticket", entry_node="handle-event", trigger_type="event",
        trigger_config={"event_types": ["custom"], "filter_stream": "tickets"}))
    await runtime.start()
    try:
        await runtime.event_bus.publish(AgentEvent(
            type=EventType.CUSTOM, stream_id="tickets", data={"query": "refund"}))
        await runtime.event_bus.publish(AgentEvent(type=EventType.CUSTOM, stream_id="other"))
        await wait_until(lambda: runtime.get_stats()["streams"]["on-ticket"]["completed"] == 1)
        (session,) = await runtime.session_store.list_sessions()
        assert session["input_data"]["event"]["data"] == {"query": "refund"}
        assert session["input_data"]["event"]["type"] == "custom"
    finally:
        await runtime.stop()
        await runtime.event_bus.close()


async def test_webhook_routes_publish_requests_to_the_bus(tmp_path: Path) -> None:
    config = AgentRuntimeConfig(webhook_port=0, webhook_routes=[
        {"source_id": "github", "path": "/hooks/github", "methods": ["POST"], "secret": None}])
    runtime = AgentRuntime(SupportGraph(), SupportGoal(), tmp_path, config=config)
    runtime.register_entry_point(EntryPointSpec(
        id="on-push", name="On push", entry_node="handle-event", trigger_type="event",
        trigger_config={"event_types": [EventType.CUSTOM], "filter_stream": "github"}))
    await runtime.start()
    try:
        assert runtime.webhook_server is not None
        url = runtime.webhook_server.url("/hooks/github")
        body = json.dumps({"query": "push"}).encode()

        def post() -> int:
            request = urllib.request.Request(url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)

        assert await asyncio.to_thread(post) == 202
        await wait_until(lambda: runtime.get_stats()["streams"]["on-push"]["completed"] == 1)
        (event,) = runtime.event_bus.get_history(EventType.CUSTOM)
        assert event.stream_id == "github"
        assert event.data["payload"] == {"query": "push"}
    finally:
        await runtime.stop()
        await runtime.event_bus.close()
    assert runtime.webhook_server is None


async def test_a_webhook_route_without_a_path_is_refused_by_name(tmp_path: Path) -> None:
    config = AgentRuntimeConfig(webhook_port=0, webhook_routes=[{"source_id": "github",
                                                                 "secret": "s3cret"}])
    runtime = AgentRuntime(SupportGraph(), SupportGoal(), tmp_path, config=config)
    with pytest.raises(ValueError, match=r"webhook_routes\[0\] needs") as caught:
        await runtime.start()
    assert "s3cret" not in str(caught.value)
    assert not runtime.is_running
    await runtime.event_bus.close()


async def test_a_webhook_port_in_use_leaves_the_runtime_stopped(tmp_path: Path) -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    config = AgentRuntimeConfig(webhook_port=port, webhook_routes=[
        {"source_id": "github", "path": "/hooks/github"}])
    runtime = AgentRuntime(SupportGraph(), SupportGoal(), tmp_path, config=config)
    runtime.register_entry_point(EntryPointSpec("api", "API", "process-request"))
    try:
        with pytest.raises(OSError):
            await runtime.start()
        assert not runtime.is_running
        assert not runtime.agent_runtime.is_running
    finally:
        blocker.close()
        await blocker.wait_closed()
    config.webhook_port = 0
    await runtime.start()  # and it can start once the port is free
    assert runtime.is_running
    await runtime.stop()
    await runtime.event_bus.close()


# ------------------------------------------------------------ stats and properties
async def test_get_stats_has_the_seeds_keys(runtime: AgentRuntime) -> None:
    await runtime.start()
    await runtime.trigger_and_wait("api", {"query": "q"}, timeout=30)
    stats = runtime.get_stats()
    assert set(stats) == {"running", "entry_points", "streams", "goal_id",
                          "outcome_aggregator", "event_bus", "state_manager"}
    assert (stats["running"], stats["entry_points"], stats["goal_id"]) == (True, 3,
                                                                         "support-goal")
    assert set(stats["streams"]) == {"webhook", "api", "chat"}
    assert stats["event_bus"]["events_by_type"]["execution_completed"] == 1


def test_properties_and_intro_message(runtime: AgentRuntime) -> None:
    assert isinstance(runtime.state_manager, SharedStateManager)
    assert isinstance(runtime.event_bus, EventBus)
    assert isinstance(runtime.outcome_aggregator, OutcomeAggregator)
    assert runtime.webhook_server is None
    assert runtime.is_running is False
    assert runtime.intro_message == ""
    runtime.intro_message = "Hello"
    assert runtime.intro_message == "Hello"
    assert isinstance(runtime.graph, SupportGraph) and isinstance(runtime.goal, SupportGoal)


async def test_create_agent_runtime_registers_and_logs(tmp_path: Path) -> None:
    runtime = create_agent_runtime(
        graph=SupportGraph(), goal=SupportGoal(), storage_path=tmp_path,
        entry_points=[EntryPointSpec("api", "API", "process-request")])
    assert not runtime.is_running
    assert [s.id for s in runtime.get_entry_points()] == ["api"]
    await runtime.start()
    result = await runtime.trigger_and_wait("api", {"query": "q"}, timeout=30)
    await runtime.stop()
    await runtime.event_bus.close()
    assert result is not None
    summary = json.loads((tmp_path / "runtime_logs" / f"{result.execution_id}.json")
                         .read_text())
    assert summary["status"] == "completed"


# ------------------------------------------------------------------ persistence
async def test_sessions_and_shared_state_survive_a_restart(tmp_path: Path) -> None:
    first = AgentRuntime(SupportGraph(), SupportGoal(), tmp_path)
    first.register_entry_point(EntryPointSpec("chat", "Chat", "ask-user"))
    await first.start()
    execution_id = await first.trigger("chat", {"topic": "billing"})
    await wait_until(lambda: bool(first.agent_runtime.waiting_for_input()))
    await first.stop()  # the execution is cancelled while it waits: a paused session
    await first.event_bus.close()

    second = AgentRuntime(SupportGraph(), SupportGoal(), tmp_path)  # a fresh object
    second.register_entry_point(EntryPointSpec("chat", "Chat", "ask-user"))
    assert second.state_manager.get("visits") == 1
    session = await second.session_store.read_state(execution_id)
    assert session is not None
    assert session["status"] == "cancelled"
    assert session["session_state"] == {"memory": {"topic": "billing"}, "paused_at": "ask-user"}
    await second.start()
    resumed = await second.trigger("chat", {}, session_state=session["session_state"])
    await wait_until(lambda: bool(second.agent_runtime.waiting_for_input()))
    assert await second.inject_input("ask-user", "Ada")
    await wait_until(lambda: second.get_execution_result("chat", resumed) is not None)
    result = second.get_execution_result("chat", resumed)
    assert result is not None and result.state == {"topic": "billing"}
    assert second.state_manager.get("visits") == 2
    await second.stop()
    await second.event_bus.close()


FIRST_PROCESS = r'''
import asyncio, json, sys
from otel_agentbus.compat.hive import AgentRuntime, EntryPointSpec


class Goal:
    id = "support-goal"


async def remember(ctx, memory):
    ctx.shared["customers"] = ctx.shared.get("customers", []) + [memory["customer"]]
    memory["greeted"] = True
    raise RuntimeError("the LLM is down")  # fails: the session is paused here


class Graph:
    def get_node(self, node_id):
        return remember if node_id == "remember" else None


async def main(path):
    runtime = AgentRuntime(Graph(), Goal(), path)
    runtime.register_entry_point(EntryPointSpec("api", "API", "remember"))
    await runtime.start()
    result = await runtime.trigger_and_wait("api", {"customer": "Ada"}, timeout=30)
    await runtime.stop()
    print(json.dumps({"execution_id": result.execution_id, "status": result.status}))


asyncio.run(main(sys.argv[1]))
'''


async def test_sessions_and_state_survive_a_process_restart(tmp_path: Path) -> None:
    first = await asyncio.to_thread(run_python, FIRST_PROCESS, str(tmp_path), timeout=60)
    assert first["status"] == "failed"

    async def remember(ctx: Any, memory: dict[str, Any]) -> dict[str, Any]:
        return {"customers": ctx.shared["customers"], "greeted": memory["greeted"]}

    class Graph:
        def get_node(self, node_id: str) -> Any:
            return remember if node_id == "remember" else None

    runtime = AgentRuntime(Graph(), SupportGoal(), tmp_path)
    runtime.register_entry_point(EntryPointSpec("api", "API", "remember"))
    assert runtime.state_manager.get("customers") == ["Ada"]
    session = await runtime.session_store.read_state(first["execution_id"])
    assert session is not None and session["status"] == "failed"
    assert session["result"]["error"] == "the LLM is down"
    await runtime.start()
    result = await runtime.trigger_and_wait("api", {}, timeout=30,
                                            session_state=session["session_state"])
    await runtime.stop()
    await runtime.event_bus.close()
    assert result is not None
    assert result.output == {"customers": ["Ada"], "greeted": True}


# ------------------------------------------------------------------ duck typing
def test_a_graph_whose_entry_node_cannot_run_is_refused(tmp_path: Path) -> None:
    class SpecOnlyGraph:
        def get_node(self, node_id: str) -> Any:
            return object()

    runtime = AgentRuntime(SpecOnlyGraph(), SupportGoal(), tmp_path)
    with pytest.raises(ValueError, match="cannot run"):
        runtime.register_entry_point(EntryPointSpec("api", "API", "anything"))


def test_objects_missing_what_the_seed_uses_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="get_node"):
        AgentRuntime(object(), SupportGoal(), tmp_path)
    with pytest.raises(TypeError, match="'id'"):
        AgentRuntime(SupportGraph(), object(), tmp_path)


async def test_our_graph_runs_with_its_edges(tmp_path: Path) -> None:
    async def first(ctx: Any, state: dict[str, Any]) -> str:
        state["first"] = True
        return "one"

    async def second(ctx: Any, state: dict[str, Any]) -> str:
        return "two"

    graph = Graph("two-step", nodes=[Node("first", first), Node("second", second)])
    graph.add_edge("first", "second")
    runtime = AgentRuntime(graph, SupportGoal(), tmp_path)
    runtime.register_entry_point(EntryPointSpec("api", "API", "first"))
    await runtime.start()
    result = await runtime.trigger_and_wait("api", {}, timeout=30)
    await runtime.stop()
    await runtime.event_bus.close()
    assert result is not None
    assert (result.path, result.output, result.state) == (("first", "second"), "two",
                                                          {"first": True})
