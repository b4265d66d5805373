"""AgentRuntime: registration, triggers, cancellation, limits, retention, idempotency,
client input, event-triggered entry points, graphs, telemetry and stats."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from async_helpers import WAIT, eventually
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from telemetry_helpers import HarnessFactory, parent_id, span_id, trace_id

from otel_agentbus import Event, EventBus, Scope
from otel_agentbus.runtime.agent_runtime import AgentRuntime, AgentRuntimeConfig
from otel_agentbus.runtime.entry_points import EntryPoint, EntryPointError
from otel_agentbus.runtime.execution import (
    ExecutionContext,
    ExecutionRejectedError,
    RuntimeNotRunningError,
    UnknownEntryPointError,
)
from otel_agentbus.runtime.graph import CONTINUE, Edge, Graph, GraphError, Node
from otel_agentbus.runtime.retention import ExpiringStore


def kinds(bus: EventBus, run_id: str | None = None) -> list[str]:
    return [e.kind for e in reversed(bus.history(run_id=run_id, limit=None))]


async def echo(ctx: ExecutionContext, input: Any) -> Any:
    return {"echo": input}


@pytest.fixture
def make(runtimes: list[AgentRuntime]) -> Callable[..., AgentRuntime]:
    def build(*entry_points: EntryPoint, **options: Any) -> AgentRuntime:
        runtime = AgentRuntime(**options)
        for spec in entry_points:
            runtime.register_entry_point(spec)
        runtimes.append(runtime)
        return runtime
    return build


class Gate:
    """An agent that records itself and blocks until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.tasks: list[asyncio.Task[Any]] = []

    async def __call__(self, ctx: ExecutionContext, input: Any) -> Any:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        self.entered += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.wait_for(self.release.wait(), WAIT)
        finally:
            self.in_flight -= 1
        return input


# ----------------------------------------------------------------- registration
async def test_registration_errors_are_clear(make: Callable[..., AgentRuntime]) -> None:
    graph = Graph("g", nodes=[Node("a", lambda ctx, state: 1)])
    runtime = make(EntryPoint("api", entry_node="a"), graph=graph)
    with pytest.raises(EntryPointError, match="already registered"):
        runtime.register_entry_point(EntryPoint("api", entry_node="a"))
    with pytest.raises(EntryPointError, match="entry node 'nope' not found"):
        runtime.register_entry_point(EntryPoint("x", entry_node="nope"))
    with pytest.raises(EntryPointError, match="trigger_type"):
        runtime.register_entry_point(EntryPoint("x", entry_node="a",
                                                trigger_type="timer"))  # type: ignore[arg-type]
    with pytest.raises(EntryPointError, match="needs 'kinds'"):
        runtime.register_entry_point(EntryPoint("x", entry_node="a", trigger_type="event"))
    with pytest.raises(EntryPointError, match="unknown event kind"):
        runtime.register_entry_point(EntryPoint("x", entry_node="a", trigger_type="event",
                                                trigger_config={"kinds": ["agent.run.strated"]}))
    with pytest.raises(EntryPointError, match="max_concurrent"):
        runtime.register_entry_point(EntryPoint("x", entry_node="a", max_concurrent=0))
    with pytest.raises(EntryPointError, match="not both"):
        runtime.register_entry_point(EntryPoint("x", entry_node="a", agent=echo))
    runtime.register_entry_point(EntryPoint("h1", entry_node="a", trigger_type="webhook",
                                            trigger_config={"path": "/in"}))
    with pytest.raises(EntryPointError, match="already used"):
        runtime.register_entry_point(EntryPoint("h2", entry_node="a", trigger_type="webhook",
                                                trigger_config={"path": "/in"}))
    assert [spec.id for spec in runtime.get_entry_points()] == ["api", "h1"]

    no_graph = make()
    with pytest.raises(EntryPointError, match="has no graph"):
        no_graph.register_entry_point(EntryPoint("x", entry_node="a"))
    with pytest.raises(EntryPointError, match="nothing to run"):
        no_graph.register_entry_point(EntryPoint("x"))

    await runtime.start()
    with pytest.raises(RuntimeError, match="while the runtime is running"):
        runtime.register_entry_point(EntryPoint("late", entry_node="a"))
    with pytest.raises(UnknownEntryPointError, match="no entry point 'nope'"):
        await runtime.trigger("nope", {})


async def test_trigger_before_start_and_after_stop_is_refused(
    make: Callable[..., AgentRuntime],
) -> None:
    runtime = make(EntryPoint("api", agent=echo))
    with pytest.raises(RuntimeNotRunningError):
        await runtime.trigger("api", 1)
    await runtime.start()
    assert (await runtime.trigger_and_wait("api", 1, timeout=WAIT)) is not None
    await runtime.stop()
    with pytest.raises(RuntimeNotRunningError):
        await runtime.trigger("api", 1)


# --------------------------------------------------------------------- triggers
async def test_trigger_returns_at_once_and_the_run_happens_in_its_own_task(
    make: Callable[..., AgentRuntime],
) -> None:
    gate = Gate()
    runtime = make(EntryPoint("api", agent=gate))
    await runtime.start()
    execution_id = await runtime.trigger("api", {"q": 1}, correlation_id="c-1")
    assert execution_id in runtime.active_executions()
    await eventually(lambda: gate.entered == 1)
    assert "agent.run.completed" not in kinds(runtime.bus)
    gate.release.set()
    result = await runtime.wait_for_execution(execution_id, WAIT)
    assert result is not None and result.success and result.output == {"q": 1}
    assert result.correlation_id == "c-1"
    assert kinds(runtime.bus, execution_id) == ["agent.run.started", "agent.run.completed"]
    started = runtime.bus.history(kinds="agent.run.started", run_id=execution_id)[0]
    assert started.payload["input"] == {"q": 1}
    assert started.payload["correlation_id"] == "c-1"
    assert started.scope.stream_id == "api"
    assert runtime.get_execution_result(execution_id) == result


async def test_trigger_and_wait_gives_the_result_or_none_on_timeout(
    make: Callable[..., AgentRuntime],
) -> None:
    async def boom(ctx: ExecutionContext, input: Any) -> Any:
        raise ValueError("bad ticket")

    gate = Gate()
    runtime = make(EntryPoint("api", agent=echo), EntryPoint("boom", agent=boom),
                   EntryPoint("slow", agent=gate))
    await runtime.start()
    result = await runtime.trigger_and_wait("api", "hi", timeout=WAIT)
    assert result is not None and result.status == "completed"
    assert result.output == {"echo": "hi"}

    failed = await runtime.trigger_and_wait("boom", None, timeout=WAIT)
    assert failed is not None and failed.status == "failed" and not failed.success
    assert (failed.error, failed.error_type) == ("bad ticket", "ValueError")
    end = runtime.bus.history(run_id=failed.execution_id, limit=1)[0]
    assert end.kind == "agent.run.failed" and end.payload["error_type"] == "ValueError"

    assert await runtime.trigger_and_wait("slow", None, timeout=0.05) is None
    assert runtime.get_stats()["streams"]["slow"]["running"] == 1  # it goes on
    gate.release.set()


async def test_cancel_execution_cancels_the_task_and_publishes_run_cancelled(
    make: Callable[..., AgentRuntime],
) -> None:
    gate = Gate()
    runtime = make(EntryPoint("api", agent=gate))
    await runtime.start()
    execution_id = await runtime.trigger("api", None)
    await eventually(lambda: gate.entered == 1)
    assert await runtime.cancel_execution(execution_id, reason="user asked") is True
    assert gate.tasks[0].cancelled()
    end = runtime.bus.history(run_id=execution_id, limit=1)[0]
    assert end.kind == "agent.run.cancelled" and end.payload["reason"] == "user asked"
    result = await runtime.wait_for_execution(execution_id, WAIT)
    assert result is not None and result.status == "cancelled" and result.error == "user asked"
    assert await runtime.cancel_execution(execution_id) is False
    assert await runtime.cancel_execution("exec-unknown") is False


async def test_cancel_before_the_task_ran_still_ends_the_run(
    make: Callable[..., AgentRuntime],
) -> None:
    calls: list[Any] = []

    async def agent(ctx: ExecutionContext, input: Any) -> None:
        calls.append(input)

    runtime = make(EntryPoint("api", agent=agent))
    await runtime.start()
    execution_id = await runtime.trigger("api", 1)
    assert await runtime.cancel_execution(execution_id, reason="changed my mind")
    assert calls == []
    assert kinds(runtime.bus, execution_id) == ["agent.run.started", "agent.run.cancelled"]
    assert runtime.bus.history(run_id=execution_id, limit=1)[0].payload["reason"] == \
        "changed my mind"


async def test_execution_timeout_cancels_with_reason_timeout(
    make: Callable[..., AgentRuntime],
) -> None:
    gate = Gate()
    runtime = make(EntryPoint("api", agent=gate, timeout=0.05))
    await runtime.start()
    result = await runtime.trigger_and_wait("api", None, timeout=WAIT)
    assert result is not None and result.status == "cancelled" and result.error == "timeout"
    end = runtime.bus.history(run_id=result.execution_id, limit=1)[0]
    assert end.kind == "agent.run.cancelled" and end.payload["reason"] == "timeout"


async def test_stop_cancels_running_executions_and_closes_subscriptions(
    make: Callable[..., AgentRuntime],
) -> None:
    gate = Gate()
    runtime = make(EntryPoint("api", agent=gate),
                   EntryPoint("on", agent=echo, trigger_type="event",
                              trigger_config={"kinds": ["custom.ping"]}))
    await runtime.start()
    subscribers = runtime.bus.stats().subscribers
    assert subscribers == 1
    ids = [await runtime.trigger("api", i) for i in range(2)]
    await eventually(lambda: gate.entered == 2)
    await runtime.stop()
    assert all(task.cancelled() for task in gate.tasks)
    for execution_id in ids:
        end = runtime.bus.history(run_id=execution_id, limit=1)[0]
        assert end.kind == "agent.run.cancelled" and end.payload["reason"] == "runtime_stopped"
    assert runtime.bus.stats().subscribers == 0
    await runtime.bus.publish(Event("custom.ping"))
    assert runtime.get_stats()["streams"]["on"]["triggered"] == 0
    assert not runtime.is_running


# ---------------------------------------------------------------------- limits
async def test_max_concurrent_holds_and_excess_waits_in_order(
    make: Callable[..., AgentRuntime],
) -> None:
    gate = Gate()
    runtime = make(EntryPoint("api", agent=gate, max_concurrent=2))
    await runtime.start()
    ids = [await runtime.trigger("api", i) for i in range(6)]
    stream = runtime.get_stream("api")
    assert stream is not None
    await eventually(lambda: stream.running == 2 and stream.queued == 4)
    await asyncio.sleep(0.05)  # give a third execution every chance to slip in
    assert gate.entered == 2 and gate.max_in_flight == 2
    gate.release.set()
    results = [await runtime.wait_for_execution(i, WAIT) for i in ids]
    assert [r.output for r in results if r is not None] == list(range(6))
    assert gate.max_in_flight == 2 and stream.max_running == 2


async def test_a_full_queue_rejects_and_queue_timeout_fails_the_run(
    make: Callable[..., AgentRuntime],
) -> None:
    gate = Gate()
    runtime = make(EntryPoint("api", agent=gate, max_concurrent=1, max_queued=1),
                   EntryPoint("short", agent=gate, max_concurrent=1, queue_timeout=0.05))
    await runtime.start()
    await runtime.trigger("api", 1)
    await runtime.trigger("api", 2)
    with pytest.raises(ExecutionRejectedError, match="'api' is full"):
        await runtime.trigger("api", 3)
    assert runtime.get_stats()["streams"]["api"]["rejected"] == 1

    await runtime.trigger("short", 1)
    waited = await runtime.trigger_and_wait("short", 2, timeout=WAIT)
    assert waited is not None and waited.error_type == "ExecutionQueueTimeoutError"
    end = runtime.bus.history(run_id=waited.execution_id, limit=1)[0]
    assert end.kind == "agent.run.failed"
    gate.release.set()


# ------------------------------------------------------------------- retention
async def test_results_are_kept_up_to_a_count(make: Callable[..., AgentRuntime]) -> None:
    runtime = make(EntryPoint("api", agent=echo),
                   config=AgentRuntimeConfig(execution_result_max=2))
    await runtime.start()
    ids = []
    for i in range(3):
        result = await runtime.trigger_and_wait("api", i, timeout=WAIT)
        assert result is not None
        ids.append(result.execution_id)
    assert runtime.get_execution_result(ids[0]) is None
    kept = [runtime.get_execution_result(i) for i in ids[1:]]
    assert [r.output for r in kept if r is not None] == [{"echo": 1}, {"echo": 2}]
    assert runtime.get_stats()["results_evicted"] == 1


async def test_results_expire_after_their_ttl(make: Callable[..., AgentRuntime]) -> None:
    now = [1000.0]
    runtime = make(EntryPoint("api", agent=echo), config=AgentRuntimeConfig(
        execution_result_ttl_seconds=10, clock=lambda: now[0]))
    await runtime.start()
    first = await runtime.trigger_and_wait("api", 1, timeout=WAIT)
    assert first is not None
    now[0] += 5
    second = await runtime.trigger_and_wait("api", 2, timeout=WAIT)
    assert second is not None
    now[0] += 9.9  # the first is 14.9 s old, the second 9.9 s
    assert runtime.get_execution_result(first.execution_id) is None
    assert runtime.get_execution_result(second.execution_id) == second
    now[0] += 0.2
    assert runtime.get_execution_result(second.execution_id) is None
    assert await runtime.wait_for_execution(second.execution_id, 0.01) is None


def test_expiring_store_bounds_by_count_and_age() -> None:
    now = [0.0]
    store: ExpiringStore[str, int] = ExpiringStore(3, ttl=5, clock=lambda: now[0])
    for i, key in enumerate("abcd"):
        store.put(key, i)
        now[0] += 1
    assert "a" not in store and store.get("b") == 1 and len(store) == 3
    now[0] = 6.5  # b was stored at 1, c at 2, d at 3
    assert store.values() == [2, 3]
    assert store.evicted == 2
    with pytest.raises(ValueError):
        ExpiringStore(-1)


@given(st.integers(0, 5), st.lists(st.tuples(st.integers(0, 9), st.floats(0, 3)), max_size=30))
def test_expiring_store_keeps_exactly_the_newest_live_entries(
    max_items: int, puts: list[tuple[int, float]],
) -> None:
    now = [0.0]
    store: ExpiringStore[int, float] = ExpiringStore(max_items, ttl=4, clock=lambda: now[0])
    model: dict[int, float] = {}  # key -> time stored, insertion-ordered like the store
    for key, step in puts:
        now[0] += step
        store.put(key, now[0])
        model.pop(key, None)
        model[key] = now[0]
    live = [k for k, at in model.items() if at > now[0] - 4]
    expected = live[max(0, len(live) - max_items):] if max_items else []
    assert store.values() == [model[k] for k in expected]


# ----------------------------------------------------------------- idempotency
async def test_same_idempotency_key_same_execution_no_second_run(
    make: Callable[..., AgentRuntime],
) -> None:
    calls: list[Any] = []

    async def agent(ctx: ExecutionContext, input: Any) -> Any:
        calls.append(input)
        return input

    runtime = make(EntryPoint("api", agent=agent), EntryPoint("other", agent=agent))
    await runtime.start()
    first = await runtime.trigger("api", 1, idempotency_key="k-1")
    again = await runtime.trigger("api", 2, idempotency_key="k-1")
    assert again == first
    result = await runtime.wait_for_execution(first, WAIT)
    assert result is not None and result.output == 1
    assert await runtime.trigger("api", 3, idempotency_key="k-1") == first  # after it ended
    elsewhere = await runtime.trigger("other", 4, idempotency_key="k-1")
    assert elsewhere != first
    await runtime.wait_for_execution(elsewhere, WAIT)
    assert calls == [1, 4]
    assert len(runtime.bus.history(kinds="agent.run.started", limit=None)) == 2
    assert runtime.get_stats()["streams"]["api"]["deduplicated"] == 2


# ------------------------------------------------------------------ client input
async def test_inject_input_unblocks_a_waiting_node(make: Callable[..., AgentRuntime]) -> None:
    graph = Graph("chat")

    @graph.node()
    async def ask(ctx: ExecutionContext, state: dict[str, Any]) -> str:
        name = await ctx.request_input("What is your name?", timeout=WAIT)
        return f"hello {name}"

    runtime = make(EntryPoint("chat", entry_node="ask"), graph=graph)
    await runtime.start()
    assert await runtime.inject_input("ask", "too early") is False
    execution_id = await runtime.trigger("chat", None)
    await eventually(lambda: runtime.waiting_for_input() == [(execution_id, "ask")])
    requested = runtime.bus.history(kinds="agent.client.input.requested")[0]
    assert requested.scope.node_id == "ask" and requested.scope.run_id == execution_id
    assert requested.payload["prompt"] == "What is your name?"
    assert await runtime.inject_input("ask", "Ada", execution_id="exec-other") is False
    assert await runtime.inject_input("ask", "Ada") is True
    result = await runtime.wait_for_execution(execution_id, WAIT)
    assert result is not None and result.output == "hello Ada"
    received = runtime.bus.history(kinds="agent.client.input.received")[0]
    assert received.scope.node_id == "ask" and received.payload["content"] == "Ada"
    assert kinds(runtime.bus, execution_id).index("agent.client.input.received") < \
        kinds(runtime.bus, execution_id).index("agent.node.loop.completed")
    assert runtime.get_stats()["input"] == {"requested": 1, "delivered": 1, "waiting": 0}


async def test_a_plain_agent_waits_under_its_entry_point_id(
    make: Callable[..., AgentRuntime],
) -> None:
    async def agent(ctx: ExecutionContext, input: Any) -> str:
        return await ctx.request_input("ok?", timeout=WAIT)

    runtime = make(EntryPoint("approve", agent=agent))
    await runtime.start()
    execution_id = await runtime.trigger("approve", None)
    await eventually(lambda: bool(runtime.waiting_for_input()))
    assert await runtime.inject_input("approve", "yes")
    result = await runtime.wait_for_execution(execution_id, WAIT)
    assert result is not None and result.output == "yes"


# -------------------------------------------------------------- event triggers
async def test_event_entry_point_fires_on_matching_events_only(
    make: Callable[..., AgentRuntime],
) -> None:
    seen: list[dict[str, Any]] = []

    async def agent(ctx: ExecutionContext, input: Any) -> None:
        seen.append(input["event"])

    runtime = make(EntryPoint("on-ticket", agent=agent, trigger_type="event",
                              trigger_config={"kinds": ["custom.ticket.created"],
                                              "agent": "helpdesk"}))
    bus = runtime.bus
    await bus.publish(Event("custom.ticket.created", {"id": "early"},
                            scope=Scope(agent="helpdesk")))  # before start: no subscription
    await runtime.start()
    await bus.publish(Event("custom.ticket.closed", {"id": "t0"}, scope=Scope(agent="helpdesk")))
    await bus.publish(Event("custom.ticket.created", {"id": "t1"}, scope=Scope(agent="sales")))
    await bus.publish(Event("custom.ticket.created", {"id": "t2"},
                            scope=Scope(agent="helpdesk")))
    stream = runtime.get_stream("on-ticket")
    assert stream is not None
    await eventually(lambda: stream.completed == 1)
    sub = next(s for s in bus.stats().subscriber_stats if s.name == "entry-point:on-ticket")
    assert (sub.received, stream.triggered) == (1, 1)
    assert [e["payload"] for e in seen] == [{"id": "t2"}]
    assert seen[0]["kind"] == "custom.ticket.created"


async def test_an_event_entry_point_is_not_retriggered_by_its_own_runs(
    make: Callable[..., AgentRuntime],
) -> None:
    runtime = make(EntryPoint("api", agent=echo),
                   EntryPoint("audit", agent=echo, trigger_type="event",
                              trigger_config={"event_types": ["execution_completed"]}))
    await runtime.start()
    await runtime.trigger_and_wait("api", 1, timeout=WAIT)
    audit = runtime.get_stream("audit")
    assert audit is not None
    await eventually(lambda: audit.completed == 1)

    def idle() -> bool:
        sub = next(s for s in runtime.bus.stats().subscriber_stats
                   if s.name == "entry-point:audit")
        return sub.received == 2 and sub.handled == 2  # api's completion and its own

    await eventually(idle)
    assert audit.triggered == 1


# ------------------------------------------------------------------------ graphs
def loop_node(done_at: int) -> Callable[[ExecutionContext, dict[str, Any]], Any]:
    async def node(ctx: ExecutionContext, state: dict[str, Any]) -> Any:
        assert ctx.iteration is not None
        return CONTINUE if ctx.iteration < done_at else f"done after {ctx.iteration}"
    return node


async def test_graph_follows_static_and_conditional_edges(
    make: Callable[..., AgentRuntime],
) -> None:
    async def classify(ctx: ExecutionContext, state: dict[str, Any]) -> str:
        state["seen"] = ctx.input["text"]
        return "urgent" if "!" in ctx.input["text"] else "normal"

    async def escalate(ctx: ExecutionContext, state: dict[str, Any]) -> str:
        return "paged on-call"

    async def reply(ctx: ExecutionContext, state: dict[str, Any]) -> str:
        return f"re: {state['seen']}"

    async def log(ctx: ExecutionContext, state: dict[str, Any]) -> str:
        return f"logged {ctx.results}"

    graph = Graph("triage", nodes=[Node("classify", classify), Node("escalate", escalate),
                                   Node("reply", reply), Node("log", log)])
    graph.add_edge("classify", "escalate", when=lambda result, state: result == "urgent")
    graph.add_edge("classify", "reply")  # the fallback: edges are tried in order
    graph.add_router("reply", lambda result, state: "log" if state.get("audit") else None)
    runtime = make(EntryPoint("api", entry_node="classify"), graph=graph)
    await runtime.start()

    urgent = await runtime.trigger_and_wait("api", {"text": "down!"}, timeout=WAIT)
    assert urgent is not None and urgent.path == ("classify", "escalate")
    assert urgent.output == "paged on-call"
    normal = await runtime.trigger_and_wait("api", {"text": "hi"}, timeout=WAIT)
    assert normal is not None and normal.path == ("classify", "reply")
    assert normal.output == "re: hi" and normal.state == {"seen": "hi"}
    audited = await runtime.trigger_and_wait("api", {"text": "hi"}, timeout=WAIT,
                                             session_state={"audit": True})
    assert audited is not None and audited.path == ("classify", "reply", "log")
    started = runtime.bus.history(kinds="agent.run.started", run_id=audited.execution_id)[0]
    assert started.scope.graph_id == "triage"
    node_events = [(e.kind, e.scope.node_id) for e in reversed(runtime.bus.history(
        run_id=normal.execution_id, limit=None)) if e.kind.startswith("agent.node.")]
    assert node_events == [
        ("agent.node.loop.started", "classify"), ("agent.node.loop.iteration", "classify"),
        ("agent.node.loop.completed", "classify"), ("agent.node.loop.started", "reply"),
        ("agent.node.loop.iteration", "reply"), ("agent.node.loop.completed", "reply"),
    ]


async def test_node_loops_until_done_within_max_iterations(
    make: Callable[..., AgentRuntime],
) -> None:
    graph = Graph("loops", nodes=[Node("work", loop_node(3), max_iterations=3)])
    runtime = make(EntryPoint("api", entry_node="work"), graph=graph)
    await runtime.start()
    result = await runtime.trigger_and_wait("api", None, timeout=WAIT)
    assert result is not None and result.output == "done after 3"
    events = [e for e in reversed(runtime.bus.history(run_id=result.execution_id, limit=None))
              if e.kind.startswith("agent.node.")]
    assert [e.payload.get("iteration") for e in events
            if e.kind == "agent.node.loop.iteration"] == [1, 2, 3]
    assert events[0].payload["max_iterations"] == 3
    assert events[-1].kind == "agent.node.loop.completed" and events[-1].payload["iterations"] == 3


async def test_a_node_that_never_finishes_stalls_and_fails_the_run(
    make: Callable[..., AgentRuntime],
) -> None:
    graph = Graph("loops", nodes=[
        Node("spin", loop_node(100), max_iterations=3),
        Node("lenient", loop_node(100), max_iterations=2, on_stall="proceed"),
        Node("after", lambda ctx, state: ("after", ctx.results["lenient"])),
    ])
    graph.add_edge("lenient", "after")
    runtime = make(EntryPoint("strict", entry_node="spin"),
                   EntryPoint("lenient", entry_node="lenient"), graph=graph)
    await runtime.start()
    failed = await runtime.trigger_and_wait("strict", None, timeout=WAIT)
    assert failed is not None and failed.status == "failed"
    assert failed.error_type == "NodeStalledError"
    tail = kinds(runtime.bus, failed.execution_id)[-4:]
    assert tail == ["agent.node.loop.iteration", "agent.node.stalled", "agent.node.loop.failed",
                    "agent.run.failed"]
    stalled = runtime.bus.history(kinds="agent.node.stalled", run_id=failed.execution_id)[0]
    assert stalled.payload["iterations"] == 3 and stalled.scope.node_id == "spin"
    assert kinds(runtime.bus, failed.execution_id).count("agent.node.loop.iteration") == 3

    proceeded = await runtime.trigger_and_wait("lenient", None, timeout=WAIT)
    assert proceeded is not None and proceeded.success
    assert proceeded.output == ("after", None) and proceeded.path == ("lenient", "after")
    assert "agent.node.stalled" in kinds(runtime.bus, proceeded.execution_id)


async def test_a_node_exception_fails_the_node_loop_and_the_run(
    make: Callable[..., AgentRuntime],
) -> None:
    async def broken(ctx: ExecutionContext, state: dict[str, Any]) -> None:
        raise KeyError("missing field")

    graph = Graph("g", nodes=[Node("ok", lambda ctx, state: 1), Node("broken", broken)])
    graph.add_edge("ok", "broken")
    runtime = make(EntryPoint("api", entry_node="ok"), graph=graph)
    await runtime.start()
    result = await runtime.trigger_and_wait("api", None, timeout=WAIT)
    assert result is not None and result.status == "failed" and result.error_type == "KeyError"
    assert result.path == ("ok", "broken")
    failed = runtime.bus.history(kinds="agent.node.loop.failed", run_id=result.execution_id)
    assert len(failed) == 1 and failed[0].scope.node_id == "broken"
    assert failed[0].payload["error_type"] == "KeyError"
    assert kinds(runtime.bus, result.execution_id)[-1] == "agent.run.failed"


async def test_graph_guards_unknown_routes_and_endless_cycles(
    make: Callable[..., AgentRuntime],
) -> None:
    with pytest.raises(GraphError, match="no node 'b'"):
        Graph("g", nodes=[Node("a", echo)], edges=[Edge("a", "b")])
    with pytest.raises(GraphError, match="already in graph"):
        Graph("g", nodes=[Node("a", echo), Node("a", echo)])
    with pytest.raises(GraphError, match="max_iterations"):
        Node("a", echo, max_iterations=0)
    with pytest.raises(GraphError, match="exactly one"):
        Edge("a")

    graph = Graph("g", nodes=[Node("a", lambda c, s: 1), Node("b", lambda c, s: 2)],
                  max_steps=5)
    graph.add_edge("a", "b")
    graph.add_edge("b", "a")
    graph.add_node("c", lambda c, s: 3)
    graph.add_router("c", lambda result, state: "nowhere")
    runtime = make(EntryPoint("cycle", entry_node="a"), EntryPoint("lost", entry_node="c"),
                   graph=graph)
    await runtime.start()
    cycle = await runtime.trigger_and_wait("cycle", None, timeout=WAIT)
    assert cycle is not None and cycle.error_type == "GraphStepLimitError"
    assert cycle.path == ("a", "b", "a", "b", "a")
    lost = await runtime.trigger_and_wait("lost", None, timeout=WAIT)
    assert lost is not None and lost.error_type == "GraphError"
    assert "unknown node 'nowhere'" in (lost.error or "")


# -------------------------------------------------------------------- telemetry
async def test_mirror_draws_run_node_and_iteration_spans_parented(
    runtimes: list[AgentRuntime],
) -> None:
    factory = HarnessFactory()
    try:
        h = factory()
        inner_tracer = h.tracer()

        async def plan(ctx: ExecutionContext, state: dict[str, Any]) -> Any:
            with inner_tracer.start_as_current_span("plain otel work"):
                pass
            assert ctx.iteration is not None
            return CONTINUE if ctx.iteration < 2 else "plan"

        async def act(ctx: ExecutionContext, state: dict[str, Any]) -> str:
            return "acted"

        graph = Graph("support", nodes=[Node("plan", plan), Node("act", act)])
        graph.add_edge("plan", "act")
        runtime = AgentRuntime(h.bus, graph=graph)
        runtimes.append(runtime)
        runtime.register_entry_point(EntryPoint("api", entry_node="plan"))
        await runtime.start()
        result = await runtime.trigger_and_wait("api", None, timeout=WAIT, session_id="conv-1")
        assert result is not None and result.success

        run = h.one("invoke_agent support")
        assert run.parent is None
        assert (run.attributes or {})["gen_ai.conversation.id"] == "conv-1"
        plan_span, act_span = h.one("node plan"), h.one("node act")
        assert parent_id(plan_span) == parent_id(act_span) == span_id(run)
        iterations = h.named("iteration plan")
        assert len(iterations) == 2
        assert {parent_id(s) for s in iterations} == {span_id(plan_span)}
        assert [(s.attributes or {})["agentbus.node.iteration"] for s in
                sorted(iterations, key=lambda s: s.start_time or 0)] == [1, 2]
        assert parent_id(h.one("iteration act")) == span_id(act_span)
        plain = h.named("plain otel work")
        assert len(plain) == 2 and {parent_id(s) for s in plain} == {
            span_id(s) for s in iterations}
        assert {trace_id(s) for s in h.spans()} == {trace_id(run)}
        assert (plan_span.attributes or {})["agentbus.node.iterations"] == 2
        assert trace.get_current_span().get_span_context().is_valid is False
    finally:
        for runtime in runtimes:
            await runtime.stop()
        await factory.close()


# ------------------------------------------------------------------------ stats
async def test_get_stats_counts_exactly(make: Callable[..., AgentRuntime]) -> None:
    async def boom(ctx: ExecutionContext, input: Any) -> None:
        raise RuntimeError("no")

    gate = Gate()
    runtime = make(EntryPoint("api", agent=echo), EntryPoint("boom", agent=boom),
                   EntryPoint("slow", agent=gate, max_concurrent=1, max_queued=1),
                   name="stats-agent")
    before = runtime.get_stats()
    assert before["running"] is False and before["entry_points"] == 3
    await runtime.start()
    for i in range(2):
        await runtime.trigger_and_wait("api", i, timeout=WAIT, idempotency_key=f"k{i}")
    await runtime.trigger("api", 9, idempotency_key="k0")
    await runtime.trigger_and_wait("boom", None, timeout=WAIT)
    cancelled = await runtime.trigger("slow", 1)
    await runtime.trigger("slow", 2)
    with pytest.raises(ExecutionRejectedError):
        await runtime.trigger("slow", 3)
    await eventually(lambda: gate.entered == 1)
    stats = runtime.get_stats()
    assert stats["totals"] == {"triggered": 5, "completed": 2, "failed": 1, "cancelled": 0,
                               "rejected": 1, "deduplicated": 1, "running": 1, "queued": 1}
    assert stats["active_executions"] == 2 and stats["results_kept"] == 3
    await runtime.cancel_execution(cancelled)
    gate.release.set()
    stream = runtime.get_stream("slow")
    assert stream is not None
    await eventually(lambda: stream.unfinished == 0)
    stats = runtime.get_stats()
    assert stats["streams"]["slow"] == {
        "entry_point": "slow", "name": "slow", "trigger_type": "api", "max_concurrent": 1,
        "max_queued": 1, "running": 0, "queued": 0, "max_running": 1, "triggered": 2,
        "completed": 1, "failed": 0, "cancelled": 1, "rejected": 1, "deduplicated": 0,
    }
    assert stats["streams"]["api"]["triggered"] == 2
    assert stats["streams"]["api"]["deduplicated"] == 1
    assert stats["running"] is True and stats["name"] == "stats-agent"
    assert stats["active_executions"] == 0 and stats["results_kept"] == 5
    assert stats["webhook"] is None and stats["goal_id"] is None
