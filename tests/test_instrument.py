"""otel_agentbus.instrument: decorators and context managers on every kind of function."""

from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from contextlib import aclosing
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from telemetry_helpers import Harness, HarnessFactory, parent_id, span_id, trace_id

from otel_agentbus import Event, EventBus
from otel_agentbus.instrument import (
    NoBusError,
    ToolCall,
    _Arguments,
    agent,
    agent_run,
    current_llm_call,
    current_node_loop,
    current_tool_call,
    get_default_bus,
    iteration,
    json_data,
    llm_call,
    llm_call_scope,
    node,
    node_loop,
    set_default_bus,
    tool,
    tool_call,
)
from otel_agentbus.runs import current_run
from otel_agentbus.telemetry import use_span_of

pytestmark = pytest.mark.timeout(60)

DETACH_FAILED = "Failed to detach context"


@pytest.fixture
async def make() -> AsyncGenerator[HarnessFactory, Any]:
    factory = HarnessFactory()
    yield factory
    await factory.close()


@pytest.fixture
async def h(make: HarnessFactory) -> AsyncGenerator[Harness, Any]:
    harness = make()
    set_default_bus(harness.bus)
    yield harness
    set_default_bus(None)


@pytest.fixture(autouse=True)
def _no_default_bus_leaks() -> Iterator[None]:
    yield
    set_default_bus(None)


@pytest.fixture
def otel_errors(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    caplog.set_level(logging.DEBUG, logger="opentelemetry.context")

    def messages() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "opentelemetry.context"]

    return messages


def events(bus: EventBus) -> list[Event]:
    """Everything published on ``bus``, oldest first."""
    return list(reversed(bus.history(limit=None)))


def kinds(bus: EventBus) -> list[str]:
    return [e.kind for e in events(bus)]


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


# --------------------------------------------------------------------------- metadata
def _sync(x: int, y: int = 2) -> int:
    """Sync doc."""
    return x + y


async def _async(x: int, y: int = 2) -> int:
    """Async doc."""
    return x + y


def _gen(x: int, y: int = 2) -> Generator[int, Any, Any]:
    """Gen doc."""
    yield x
    yield y


async def _agen(x: int, y: int = 2) -> AsyncGenerator[int, Any]:
    """Agen doc."""
    yield x
    yield y


FUNCTIONS = [_sync, _async, _gen, _agen]
DECORATORS: list[Callable[[Any], Any]] = [
    agent(), agent("named"), node("n"), node("n", max_iterations=3), llm_call("m", "p"),
    llm_call(), tool(), tool("t", "extension"),
]


def _kind_of(function: Any) -> tuple[bool, bool, bool]:
    return (inspect.iscoroutinefunction(function), inspect.isgeneratorfunction(function),
            inspect.isasyncgenfunction(function))


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("decorator", range(len(DECORATORS)))
def test_decorators_keep_metadata_and_function_kind(function: Any, decorator: int) -> None:
    wrapped = DECORATORS[decorator](function)
    assert wrapped is not function
    assert wrapped.__name__ == function.__name__
    assert wrapped.__doc__ == function.__doc__
    assert wrapped.__wrapped__ is function
    assert inspect.signature(wrapped) == inspect.signature(function)
    assert _kind_of(wrapped) == _kind_of(function)


def test_bare_decorators_work_without_parentheses() -> None:
    for decorator in (agent, node, llm_call, tool):
        wrapped = decorator(_async)
        assert inspect.iscoroutinefunction(wrapped)
        assert wrapped.__name__ == "_async"


# ------------------------------------------------------------------------- the bus
def test_no_bus_is_a_clear_error() -> None:
    @agent
    def lonely() -> None:
        raise AssertionError("must not run")

    with pytest.raises(NoBusError, match=r"agent 'lonely'.*set_default_bus"):
        lonely()

    @tool
    def fetch() -> None:
        raise AssertionError("must not run")

    with pytest.raises(NoBusError, match="bus="):
        fetch()


def test_sync_code_publishes_without_an_event_loop() -> None:
    bus = EventBus()
    set_default_bus(bus)
    assert get_default_bus() is bus

    @tool
    def add(a: int, b: int) -> int:
        return a + b

    @agent(session_id="conv-sync")
    def calculator(a: int) -> int:
        return add(a, 1)

    assert calculator(41) == 42
    assert kinds(bus) == ["agent.run.started", "agent.tool.call.started",
                          "agent.tool.call.completed", "agent.run.completed"]
    assert events(bus)[-1].payload["output"] == 42


async def test_explicit_bus_wins_and_children_follow_the_run(make: HarnessFactory) -> None:
    mine, default = make(), make()
    set_default_bus(default.bus)

    @tool
    def step() -> str:
        return "ok"

    @agent(bus=mine.bus)
    def worker() -> str:
        return step()

    worker()
    assert kinds(mine.bus) == ["agent.run.started", "agent.tool.call.started",
                               "agent.tool.call.completed", "agent.run.completed"]
    assert kinds(default.bus) == []


# ------------------------------------------------------------------------------ tools
async def test_tool_on_each_function_kind_publishes_started_and_completed(h: Harness) -> None:
    @tool("add", description="adds")
    def add_sync(a: int, b: int = 10) -> int:
        return a + b

    @tool("add")
    async def add_async(a: int, b: int = 10) -> int:
        await asyncio.sleep(0)
        return a + b

    @tool("count")
    def count_gen(n: int) -> Generator[int, Any, Any]:
        yield from range(n)
        return n

    @tool("count")
    async def count_agen(n: int) -> AsyncGenerator[int, Any]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @agent(session_id="conv-tools")
    async def runner() -> None:
        assert add_sync(1) == 11
        assert await add_async(1, b=2) == 3
        assert list(count_gen(3)) == [0, 1, 2]
        assert [i async for i in count_agen(2)] == [0, 1]

    await runner()
    published = events(h.bus)
    run_id = published[0].scope.run_id
    assert [e.kind for e in published] == (
        ["agent.run.started"]
        + ["agent.tool.call.started", "agent.tool.call.completed"] * 4
        + ["agent.run.completed"])
    tools = published[1:-1]
    for event in tools:
        assert event.scope.run_id == run_id
        assert event.scope.session_id == "conv-tools"
        assert event.scope.agent == "runner"
    starts, ends = tools[0::2], tools[1::2]
    for start, end in zip(starts, ends, strict=True):
        assert start.payload["tool_call_id"] == end.payload["tool_call_id"]
        assert end.payload["is_error"] is False
    assert len({s.payload["tool_call_id"] for s in starts}) == 4
    assert [s.payload["tool_name"] for s in starts] == ["add", "add", "count", "count"]
    assert starts[0].payload["arguments"] == {"a": 1}
    assert starts[0].payload["description"] == "adds"
    assert starts[1].payload["arguments"] == {"a": 1, "b": 2}
    assert [e.payload.get("result") for e in ends] == [11, 3, 3, None]
    spans = {s.name for s in h.spans()}
    assert {"execute_tool add", "execute_tool count", "invoke_agent runner"} <= spans


async def test_tool_description_defaults_to_the_docstring(h: Harness) -> None:
    @tool
    def lookup(key: str, *rest: int, **options: str) -> None:
        """Look a key up.

        More text.
        """

    lookup("k", 1, 2, mode="fast")
    started = events(h.bus)[0]
    assert started.payload["description"] == "Look a key up."
    assert started.payload["tool_name"] == "lookup"
    assert started.payload["arguments"] == {"key": "k", "rest": (1, 2), "mode": "fast"}


async def test_tool_errors_are_reraised_unchanged_and_recorded(h: Harness) -> None:
    error = ValueError("bad input")

    @tool
    def broken() -> None:
        raise error

    @tool
    async def broken_async() -> None:
        await asyncio.sleep(0)
        raise error

    for call in (broken, broken_async):
        with pytest.raises(ValueError) as raised:
            result = call()
            if inspect.isawaitable(result):
                await result
        assert raised.value is error
        frames = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
        assert frames[-1] in ("broken", "broken_async")  # the raising frame is still there
    ends = [e for e in events(h.bus) if e.kind == "agent.tool.call.completed"]
    assert len(ends) == 2
    for end in ends:
        assert end.payload["is_error"] is True
        assert end.payload["error"] == "bad input"
        assert end.payload["error_type"] == "ValueError"
        assert end.severity == "error"
    for span in h.named("execute_tool broken") + h.named("execute_tool broken_async"):
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == "ValueError"


async def test_generator_tool_errors_are_reraised_unchanged(h: Harness) -> None:
    error = RuntimeError("mid-stream")

    @tool
    def stream() -> Generator[int, Any, Any]:
        yield 1
        raise error

    @tool
    async def astream() -> AsyncGenerator[int, Any]:
        yield 1
        raise error

    with pytest.raises(RuntimeError) as raised:
        list(stream())
    assert raised.value is error
    with pytest.raises(RuntimeError) as raised_async:
        [item async for item in astream()]
    assert raised_async.value is error
    ends = [e for e in events(h.bus) if e.kind == "agent.tool.call.completed"]
    assert [e.payload["error_type"] for e in ends] == ["RuntimeError", "RuntimeError"]


async def test_tool_call_context_manager(h: Harness) -> None:
    with tool_call("search", arguments={"q": "otel"}, tool_type="datastore") as call:
        assert current_tool_call() is call
        call.result = ["a", "b"]
    assert current_tool_call() is None
    async with tool_call("fetch", tool_call_id="t-9") as other:
        assert current_tool_call() is other
    started, completed, started2, completed2 = events(h.bus)
    assert started.payload == {"tool_call_id": call.tool_call_id, "tool_name": "search",
                               "tool_type": "datastore", "arguments": {"q": "otel"}}
    assert completed.payload["result"] == ("a", "b")
    assert started2.payload["tool_call_id"] == completed2.payload["tool_call_id"] == "t-9"
    assert (h.one("execute_tool search").attributes or {})["gen_ai.tool.type"] == "datastore"


async def test_a_scope_is_entered_once(h: Harness) -> None:
    call = tool_call("once")
    with call:
        pass
    with pytest.raises(RuntimeError, match="already entered"), call:
        pass


# ------------------------------------------------------------------------------ agents
async def test_agent_on_each_function_kind(h: Harness) -> None:
    @agent
    def sync_agent(x: int) -> dict[str, int]:
        assert current_run() is not None
        return {"x": x}

    @agent
    async def async_agent(x: int) -> int:
        run = current_run()
        assert run is not None and run.scope.agent == "async_agent"
        return x * 2

    @agent
    def gen_agent(n: int) -> Generator[int, Any, Any]:
        run = current_run()
        assert run is not None and run.scope.agent == "gen_agent"
        yield from range(n)
        return n

    @agent
    async def agen_agent(n: int) -> AsyncGenerator[int, Any]:
        for i in range(n):
            assert current_run() is not None
            yield i

    assert sync_agent(1) == {"x": 1}
    assert await async_agent(2) == 4
    assert list(gen_agent(2)) == [0, 1]
    assert [i async for i in agen_agent(2)] == [0, 1]
    assert current_run() is None
    published = events(h.bus)
    assert [e.kind for e in published] == ["agent.run.started", "agent.run.completed"] * 4
    assert [e.scope.agent for e in published[::2]] == [
        "sync_agent", "async_agent", "gen_agent", "agen_agent"]
    assert published[0].payload["input"] == {"x": 1}
    assert [e.payload.get("output") for e in published[1::2]] == [{"x": 1}, 4, 2, None]
    assert len({e.scope.run_id for e in published}) == 4
    assert len(h.named("invoke_agent gen_agent")) == 1


async def test_agent_failure_is_recorded_and_reraised_unchanged(h: Harness) -> None:
    error = KeyError("nope")

    @agent("failing")
    async def failing() -> None:
        raise error

    with pytest.raises(KeyError) as raised:
        await failing()
    assert raised.value is error
    end = events(h.bus)[-1]
    assert end.kind == "agent.run.failed"
    assert end.payload["error_type"] == "KeyError"
    assert h.one("invoke_agent failing").status.status_code is StatusCode.ERROR


async def test_agent_cancellation_publishes_cancelled(h: Harness) -> None:
    entered = asyncio.Event()

    @agent
    async def sleeper() -> None:
        entered.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(sleeper())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert kinds(h.bus) == ["agent.run.started", "agent.run.cancelled"]
    span = h.one("invoke_agent sleeper")
    assert (span.attributes or {})["agentbus.run.status"] == "cancelled"


async def test_agent_run_context_manager(h: Harness) -> None:
    with agent_run("planner", session_id="c-1", input={"q": "hi"}) as run:
        run.output = "done"
    async with agent_run("async-planner") as arun:
        assert current_run() is arun
    published = events(h.bus)
    assert [e.kind for e in published] == ["agent.run.started", "agent.run.completed"] * 2
    assert published[0].payload["input"] == {"q": "hi"}
    assert published[0].scope.session_id == "c-1"
    assert published[1].payload["output"] == "done"


async def test_nested_agents_share_the_conversation_and_nest_in_the_trace(h: Harness) -> None:
    @agent("researcher")
    async def researcher(topic: str) -> str:
        return f"notes on {topic}"

    @tool
    async def delegate(topic: str) -> str:
        return await researcher(topic)

    @agent("lead", session_id="conv-42")
    async def lead() -> str:
        return await delegate("otel")

    assert await lead() == "notes on otel"
    starts = [e for e in events(h.bus) if e.kind == "agent.run.started"]
    assert [e.scope.agent for e in starts] == ["lead", "researcher"]
    assert {e.scope.session_id for e in events(h.bus)} == {"conv-42"}
    assert starts[0].scope.run_id != starts[1].scope.run_id
    lead_span = h.one("invoke_agent lead")
    tool_span = h.one("execute_tool delegate")
    sub_span = h.one("invoke_agent researcher")
    assert parent_id(tool_span) == span_id(lead_span)
    assert parent_id(sub_span) == span_id(tool_span)
    assert (sub_span.attributes or {})["gen_ai.conversation.id"] == "conv-42"


# ------------------------------------------------------------------------------- nodes
async def test_node_calls_inside_a_loop_are_iterations(h: Harness) -> None:
    @tool
    def think(i: int) -> int:
        return i

    @node("plan")
    def plan(i: int) -> int:
        loop = current_node_loop()
        assert loop is not None and loop.node_id == "plan"
        return think(i)

    @agent
    def planner() -> None:
        with node_loop("plan", max_iterations=5) as loop:
            for i in range(3):
                plan(i)
            assert loop.iterations == 3

    planner()
    published = events(h.bus)
    assert [e.kind for e in published] == (
        ["agent.run.started", "agent.node.loop.started"]
        + ["agent.node.loop.iteration", "agent.tool.call.started",
           "agent.tool.call.completed"] * 3
        + ["agent.node.loop.completed", "agent.run.completed"])
    iterations = [e for e in published if e.kind == "agent.node.loop.iteration"]
    assert [e.payload["iteration"] for e in iterations] == [1, 2, 3]
    assert published[1].payload["max_iterations"] == 5
    assert published[-2].payload["iterations"] == 3
    for event in published[1:-1]:
        assert event.scope.node_id == "plan"
    node_span = h.one("node plan")
    iteration_spans = h.named("iteration plan")
    assert len(iteration_spans) == 3
    assert all(parent_id(s) == span_id(node_span) for s in iteration_spans)
    iteration_ids = {span_id(s) for s in iteration_spans}
    assert all(parent_id(s) in iteration_ids for s in h.named("execute_tool think"))
    assert (node_span.attributes or {})["agentbus.node.iterations"] == 3


async def test_node_call_outside_a_loop_is_a_loop_of_its_own(h: Harness) -> None:
    @node("summarize")
    async def summarize() -> str:
        return "ok"

    @node  # the function's name
    def other() -> None:
        pass

    @agent
    async def runner() -> None:
        await summarize()
        await summarize()
        with node_loop("different"):
            other()  # a different node: its own loop

    await runner()
    assert kinds(h.bus) == (
        ["agent.run.started"]
        + ["agent.node.loop.started", "agent.node.loop.iteration",
           "agent.node.loop.completed"] * 2
        + ["agent.node.loop.started", "agent.node.loop.started", "agent.node.loop.iteration",
           "agent.node.loop.completed", "agent.node.loop.completed", "agent.run.completed"])
    assert len(h.named("node summarize")) == 2
    assert len(h.named("node other")) == 1


async def test_iteration_helper_and_node_failure(h: Harness) -> None:
    error = OSError("disk")

    @agent
    async def runner() -> None:
        async with node_loop("write") as loop:
            with iteration() as first:
                assert first.number == 1
            async with loop.iteration() as second:
                assert second.number == 2
                raise error

    with pytest.raises(OSError) as raised:
        await runner()
    assert raised.value is error
    failed = [e for e in events(h.bus) if e.kind == "agent.node.loop.failed"]
    assert len(failed) == 1
    assert failed[0].payload == {"iterations": 2, "error": "disk", "error_type": "OSError"}
    assert h.one("node write").status.status_code is StatusCode.ERROR
    with pytest.raises(RuntimeError, match="outside any node_loop"):
        iteration()


async def test_generator_node_is_one_iteration_per_call(h: Harness) -> None:
    @node("emit")
    def emit(n: int) -> Generator[int, Any, Any]:
        yield from range(n)

    @agent
    def runner() -> list[int]:
        with node_loop("emit"):
            return list(emit(2)) + list(emit(1))

    assert runner() == [0, 1, 0]
    iterations = [e.payload["iteration"] for e in events(h.bus)
                  if e.kind == "agent.node.loop.iteration"]
    assert iterations == [1, 2]


def test_node_arguments_are_checked_at_decoration() -> None:
    with pytest.raises(ValueError, match="max_iterations"):
        node("x", max_iterations=0)
    with pytest.raises(ValueError, match="node_id"):
        node_loop("")


# -------------------------------------------------------------------------------- LLMs
async def test_llm_call_with_usage(h: Harness) -> None:
    @llm_call(provider="openai")
    async def complete(messages: list[dict[str, str]], model: str = "gpt-4o") -> str:
        call = current_llm_call()
        assert call is not None
        call.record_usage(input_tokens=12, output_tokens=3, finish_reasons="stop")
        return "hello"

    @agent
    async def chat() -> str:
        return await complete([{"role": "user", "content": "hi"}], model="gpt-4o-mini")

    assert await chat() == "hello"
    request, response = [e for e in events(h.bus) if e.kind.startswith("agent.llm.")]
    assert request.kind == "agent.llm.request"
    assert request.payload["model"] == "gpt-4o-mini"
    assert request.payload["provider"] == "openai"
    assert request.payload["messages"] == ({"role": "user", "content": "hi"},)
    assert response.kind == "agent.llm.response"
    assert response.payload["call_id"] == request.payload["call_id"]
    assert response.payload["input_tokens"] == 12
    assert response.payload["output_tokens"] == 3
    assert response.payload["finish_reasons"] == ("stop",)
    assert response.payload["content"] == "hello"
    span = h.one("chat gpt-4o-mini")
    attributes = span.attributes or {}
    assert span.kind is trace.SpanKind.CLIENT
    assert attributes["gen_ai.usage.input_tokens"] == 12
    assert tuple(attributes["gen_ai.response.finish_reasons"]) == ("stop",)  # type: ignore[arg-type]
    assert "gen_ai.output.messages" not in attributes  # content stays home by default


async def test_llm_stream_chunks_are_deltas(h: Harness) -> None:
    @llm_call("m-1", "local")
    async def stream(prompt: str) -> AsyncGenerator[str, Any]:
        for word in prompt.split():
            await asyncio.sleep(0)
            yield word

    @llm_call("m-2")
    def sync_stream() -> Generator[object, Any, Any]:
        yield "a"
        yield {"not": "text"}

    @agent
    async def runner() -> list[Any]:
        words = [w async for w in stream("one two three")]
        return words + list(sync_stream())

    assert await runner() == ["one", "two", "three", "a", {"not": "text"}]
    llm = [e for e in events(h.bus) if e.kind.startswith("agent.llm.")]
    assert [e.kind for e in llm] == (
        ["agent.llm.request"] + ["agent.llm.delta"] * 3 + ["agent.llm.response"]
        + ["agent.llm.request"] + ["agent.llm.delta"] * 2 + ["agent.llm.response"])
    assert [e.payload.get("content") for e in llm[1:4]] == ["one", "two", "three"]
    assert "content" not in llm[7].payload  # a chunk that is not text is only counted
    assert (h.one("chat m-1").attributes or {})["agentbus.llm.chunks"] == 3
    assert all(s.name.startswith(("chat", "invoke_agent", "agentbus")) for s in h.spans())


async def test_llm_call_scope_and_failure(h: Harness) -> None:
    with llm_call_scope("gpt-4o", "openai", messages=["hi"]) as call:
        call.delta("he")
        call.reasoning_delta("thinking")
        call.delta("llo")
        call.output = "hello"
        call.record_usage(output_tokens=2)
    error = TimeoutError("slow")
    with pytest.raises(TimeoutError) as raised:
        async with llm_call_scope("gpt-4o") as failing:
            failing.record_usage(input_tokens=5)
            raise error
    assert raised.value is error
    published = events(h.bus)
    assert [e.kind for e in published] == [
        "agent.llm.request", "agent.llm.delta", "agent.llm.reasoning.delta", "agent.llm.delta",
        "agent.llm.response", "agent.llm.request", "agent.llm.usage", "agent.llm.failed"]
    assert published[4].payload["content"] == "hello"
    assert published[-1].payload["error_type"] == "TimeoutError"
    spans = h.named("chat gpt-4o")
    assert [s.status.status_code for s in spans] == [StatusCode.UNSET, StatusCode.ERROR]
    with pytest.raises(TypeError, match="input_tokens"):
        call.record_usage(input_tokens="5")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="outside the LLM call"):
        llm_call_scope("x").delta("too early")


# ------------------------------------------------------------- outside any run
async def test_children_outside_a_run_are_root_spans(h: Harness) -> None:
    @tool
    def standalone() -> str:
        return "ok"

    with llm_call_scope("solo-model"):
        pass
    standalone()
    for event in events(h.bus):
        assert event.scope.run_id is None
        assert event.trace_id is not None  # still stamped by the mirror
    assert h.one("execute_tool standalone").parent is None
    assert h.one("chat solo-model").parent is None


# ------------------------------------------------------ the span is the current span
async def test_plain_spans_inside_instrumented_code_are_children(h: Harness) -> None:
    tracer = h.tracer()

    @tool("sync-tool")
    def sync_tool() -> None:
        tracer.start_span("in sync").end()

    @tool("async-tool")
    async def async_tool() -> None:
        await asyncio.sleep(0)
        tracer.start_span("in async").end()

    @tool("gen-tool")
    def gen_tool() -> Generator[int, Any, Any]:
        tracer.start_span("in gen 1").end()
        yield 1
        tracer.start_span("in gen 2").end()

    @tool("agen-tool")
    async def agen_tool() -> AsyncGenerator[int, Any]:
        tracer.start_span("in agen 1").end()
        yield 1
        await asyncio.sleep(0)
        tracer.start_span("in agen 2").end()

    @llm_call("model-x")
    async def llm() -> None:
        tracer.start_span("in llm").end()

    @agent
    async def runner() -> None:
        sync_tool()
        await async_tool()
        for _ in gen_tool():
            # The consumer's body is not inside the tool: a span here is the run's child.
            tracer.start_span("consumer").end()
        async for _ in agen_tool():
            tracer.start_span("consumer").end()
        await llm()
        with node_loop("n"), iteration():
            tracer.start_span("in iteration").end()

    await runner()
    run_span = h.one("invoke_agent runner")
    expected = {
        "in sync": "execute_tool sync-tool", "in async": "execute_tool async-tool",
        "in gen 1": "execute_tool gen-tool", "in gen 2": "execute_tool gen-tool",
        "in agen 1": "execute_tool agen-tool", "in agen 2": "execute_tool agen-tool",
        "in llm": "chat model-x", "in iteration": "iteration n",
    }
    for child, parent in expected.items():
        assert parent_id(h.one(child)) == span_id(h.one(parent)), child
        assert trace_id(h.one(child)) == trace_id(run_span)
    for consumer in h.named("consumer"):
        assert parent_id(consumer) == span_id(run_span)


async def test_generator_steps_leave_the_consumers_context_alone(h: Harness) -> None:
    @tool
    def items() -> Generator[int, Any, Any]:
        yield 1
        yield 2

    @agent
    def agent_gen() -> Generator[int, Any, Any]:
        yield 1

    before = trace.get_current_span()
    iterator = items()
    assert next(iterator) == 1
    assert trace.get_current_span() is before
    assert current_tool_call() is None
    runs = agent_gen()
    next(runs)
    assert current_run() is None
    runs.close()
    iterator.close()


# ----------------------------------------------------------------- early close
async def test_closing_a_generator_early_ends_its_span(
    h: Harness, otel_errors: Callable[[], list[str]]
) -> None:
    @tool
    def numbers() -> Generator[int, Any, Any]:
        yield from range(100)

    @agent
    def counter() -> Generator[int, Any, Any]:
        yield from numbers()

    gen = counter()
    assert next(gen) == 0
    assert next(gen) == 1
    gen.close()
    assert kinds(h.bus) == ["agent.run.started", "agent.tool.call.started",
                            "agent.tool.call.completed", "agent.run.cancelled"]
    completed = events(h.bus)[2]
    assert completed.payload["is_error"] is True
    assert completed.payload["error_type"] == "cancelled"
    assert h.one("execute_tool numbers").status.status_code is StatusCode.ERROR
    assert (h.one("invoke_agent counter").attributes or {})["agentbus.run.status"] == "cancelled"
    assert not [m for m in otel_errors() if DETACH_FAILED in m]


async def test_aclose_from_another_task_ends_spans_without_detach_errors(
    h: Harness, otel_errors: Callable[[], list[str]]
) -> None:
    tracer = h.tracer()

    @llm_call("streamer")
    async def stream() -> AsyncGenerator[str, Any]:
        # Even the body's own span held across a yield is safe: each step runs in the
        # generator's own context.
        with tracer.start_as_current_span("held across yields"):
            for word in ("a", "b", "c", "d"):
                await asyncio.sleep(0)
                yield word

    @agent
    async def reader() -> AsyncGenerator[str, Any]:
        async with aclosing(stream()) as words:
            async for word in words:
                yield word

    gen = reader()
    assert await gen.__anext__() == "a"
    assert await gen.__anext__() == "b"
    await asyncio.create_task(gen.aclose())  # another task closes it
    await settle()
    llm = [e for e in events(h.bus) if e.kind.startswith("agent.llm.")]
    assert [e.kind for e in llm] == ["agent.llm.request", "agent.llm.delta", "agent.llm.delta",
                                     "agent.llm.failed"]
    assert llm[-1].payload["error_type"] == "cancelled"
    assert kinds(h.bus)[-1] == "agent.run.cancelled"
    assert h.one("chat streamer").status.status_code is StatusCode.ERROR
    assert parent_id(h.one("held across yields")) == span_id(h.one("chat streamer"))
    assert not [m for m in otel_errors() if DETACH_FAILED in m]
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_the_detach_check_can_fail(
    h: Harness, otel_errors: Callable[[], list[str]]
) -> None:
    """Control: a naive span attached across a yield does log the error we check for."""
    started = Event("agent.tool.call.started", {"tool_call_id": "x", "tool_name": "naive"})
    await h.bus.publish(started)

    async def naive() -> AsyncGenerator[int, Any]:
        with use_span_of(started):
            yield 1
            yield 2

    gen = naive()
    await gen.__anext__()
    await asyncio.create_task(gen.aclose())
    assert [m for m in otel_errors() if DETACH_FAILED in m]


async def test_values_sent_and_thrown_into_generators_reach_the_body(h: Harness) -> None:
    @tool
    def echo() -> Generator[Any, Any, Any]:
        received = yield "ready"
        try:
            yield f"got {received}"
        except KeyError:
            yield "handled"

    @tool
    async def aecho() -> AsyncGenerator[Any, Any]:
        received = yield "ready"
        yield f"got {received}"

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send(5) == "got 5"
    assert gen.throw(KeyError("k")) == "handled"
    with pytest.raises(StopIteration):
        next(gen)
    agen = aecho()
    assert await agen.asend(None) == "ready"
    assert await agen.asend(7) == "got 7"
    error = LookupError("thrown")
    with pytest.raises(LookupError) as raised:
        await agen.athrow(error)
    assert raised.value is error
    ends = [e.payload["is_error"] for e in events(h.bus) if e.kind.endswith("completed")]
    assert ends == [False, True]


async def test_cancelling_a_task_inside_an_instrumented_async_generator(h: Harness) -> None:
    entered = asyncio.Event()

    @tool
    async def slow() -> AsyncGenerator[int, Any]:
        entered.set()
        await asyncio.sleep(30)
        yield 1

    async def consume() -> None:
        async for _ in slow():
            pass

    task = asyncio.create_task(consume())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    end = events(h.bus)[-1]
    assert end.kind == "agent.tool.call.completed"
    assert end.payload["error_type"] == "cancelled"


# ---------------------------------------------------------------------- payloads
def test_json_data_keeps_json_and_reprs_the_rest() -> None:
    class Thing:
        def __repr__(self) -> str:
            return "<thing>"

    assert json_data({"a": [1, 2.5, None, True], 3: (Thing(),)}) == {
        "a": [1, 2.5, None, True], "3": ["<thing>"]}
    assert json_data(float("nan")) == "nan"
    deep: list[Any] = []
    deep.append(deep)
    assert isinstance(json_data(deep), list)  # a cycle ends as a repr, not a crash


async def test_non_json_arguments_and_results_are_recorded_as_repr(h: Harness) -> None:
    class Client:
        def __repr__(self) -> str:
            return "<client>"

    @tool
    def use(client: Client) -> Client:
        return client

    use(Client())
    started, completed = events(h.bus)
    assert started.payload["arguments"] == {"client": "<client>"}
    assert completed.payload["result"] == "<client>"


async def test_methods_leave_self_out_of_the_arguments(h: Harness) -> None:
    class Toolbox:
        @tool
        def run(self, query: str) -> str:
            return query

    assert Toolbox().run("q") == "q"
    assert events(h.bus)[0].payload["arguments"] == {"query": "q"}


async def test_sync_agent_in_a_worker_thread_publishes_in_order(h: Harness) -> None:
    @tool
    def blocking_io(n: int) -> int:
        return n

    @agent(session_id="conv-thread")
    def threaded() -> int:
        return blocking_io(3)

    assert await asyncio.to_thread(threaded) == 3  # published from another thread
    await settle()
    published = events(h.bus)
    assert [e.kind for e in published] == ["agent.run.started", "agent.tool.call.started",
                                           "agent.tool.call.completed", "agent.run.completed"]
    assert {e.scope.session_id for e in published} == {"conv-thread"}
    assert parent_id(h.one("execute_tool blocking_io")) == span_id(h.one("invoke_agent threaded"))


# ------------------------------------------------------- the tool call's fast paths
def _plain(a: int, b: int = 2, *, c: int = 3) -> None: ...
def _method(self: object, q: str) -> None: ...
def _var(a: int, *rest: int, **options: int) -> None: ...
def _positional_only(a: int, /, b: int = 1) -> None: ...
def _keyword_required(a: int, *, c: int) -> None: ...
def _secret(query: str, api_key: str) -> None: ...


@pytest.mark.parametrize("function, args, kwargs", [
    (_plain, (), {}), (_plain, (1,), {}), (_plain, (1, 5), {}), (_plain, (1, 5, 9), {}),
    (_plain, (1,), {"c": 4}), (_plain, (), {"a": 1}), (_plain, (1,), {"a": 2}),
    (_method, ("self", "q"), {}), (_method, ("self",), {}), (_var, (1, 2, 3), {"k": 4}),
    (_positional_only, (1, 2), {}), (_keyword_required, (1,), {}),
    (_keyword_required, (1,), {"c": 2}), (lambda: None, (), {}), (lambda: None, (1,), {}),
    (_secret, ("q", "sk-1"), {}), (_secret, ("q",), {"api_key": "sk-1"}),
    (_var, (1,), {"api_key": "sk-1"}),
])
def test_arguments_fast_path_gives_what_signature_bind_gives(
        function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    signature = inspect.signature(function)
    try:
        bound = signature.bind(*args, **kwargs).arguments
    except TypeError:  # the call itself will fail: its arguments are kept as they came
        expected: dict[str, Any] = {**kwargs, **({"args": list(args)} if args else {})}
        expected = {k: "[redacted]" if k == "api_key" else v for k, v in expected.items()}
    else:
        expected = {}
        for index, (name, value) in enumerate(bound.items()):
            if index == 0 and name in ("self", "cls"):
                continue
            if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                expected.update({k: "[redacted]" if k == "api_key" else v
                                 for k, v in value.items()})
            elif name == "api_key":
                expected[name] = "[redacted]"
            elif isinstance(value, tuple):
                expected[name] = list(value)
            else:
                expected[name] = value
    assert _Arguments(function)(args, kwargs) == expected


def test_tool_call_fields_must_be_strings() -> None:
    for field in ("tool_type", "tool_call_id", "description"):
        with pytest.raises(TypeError, match=field):
            ToolCall("search", **{field: 42})
    for field in ("model", "provider", "call_id"):
        with pytest.raises(TypeError, match=field):
            llm_call_scope(**{field: 42})
    with pytest.raises(TypeError, match="tool_type"):  # at decoration, not at the first call
        tool("search", 7)(lambda: None)  # type: ignore[arg-type]


async def test_tool_events_equal_the_events_the_constructor_builds(h: Harness) -> None:
    """The decorator builds its events without re-checking them: they must be exactly what
    ``Event(...)`` would have built (frozen payloads included)."""
    @tool("search", description="finds")
    def search(query: str, limit: int = 3) -> list[str]:
        return [query] * limit

    @agent
    def runner() -> None:
        search("q", 2)

    runner()
    started, completed = events(h.bus)[1:3]
    for event in (started, completed):
        rebuilt = Event(event.kind, event.payload, source=event.source, scope=event.scope,
                        correlation=event.correlation, severity=event.severity,
                        id=event.id, time_ns=event.time_ns)
        assert rebuilt.payload == event.payload and rebuilt.source == event.source
        assert rebuilt.must_deliver == event.must_deliver
        assert type(event.payload).__name__ == "mappingproxy"
        with pytest.raises(TypeError):
            event.payload["x"] = 1  # type: ignore[index]
    assert started.payload["arguments"] == {"query": "q", "limit": 2}
    assert isinstance(completed.payload["result"], tuple)  # frozen: a list became a tuple
    assert started.source.component == "tool" and started.source.name == "search"


async def test_a_result_too_deep_to_record_still_ends_the_call(h: Harness) -> None:
    deep: Any = "bottom"
    for _ in range(200):
        deep = [deep]

    with ToolCall("dig") as call:
        call.result = deep
    completed = events(h.bus)[-1]
    assert completed.kind == "agent.tool.call.completed"
    assert completed.payload["is_error"] is False
    assert h.one("execute_tool dig").status.status_code is StatusCode.UNSET


async def test_each_tool_span_gets_its_own_name_type_and_description(h: Harness) -> None:
    """The mirror reuses a tool's base attributes across calls; a different type or
    description must not reuse another's."""
    for name, tool_type, description in [("a", "function", None), ("a", "extension", None),
                                         ("a", "function", "first"), ("b", "function", None),
                                         ("a", "function", "first")]:
        with ToolCall(name, tool_type=tool_type, description=description):
            pass
    spans = [s for s in h.spans() if s.name.startswith("execute_tool")]
    seen = [(s.name, s.attributes["gen_ai.tool.type"],
             s.attributes.get("gen_ai.tool.description")) for s in spans]
    assert seen == [("execute_tool a", "function", None), ("execute_tool a", "extension", None),
                    ("execute_tool a", "function", "first"), ("execute_tool b", "function", None),
                    ("execute_tool a", "function", "first")]
    assert len({s.attributes["gen_ai.tool.call.id"] for s in spans}) == 5
