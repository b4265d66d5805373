"""The pydantic-ai adapter, with pydantic-ai's own fake models (``TestModel``,
``FunctionModel``): runs, model requests and tool executions as bus events and spans, and no
span exported twice when pydantic-ai's own instrumentation is on too."""

from __future__ import annotations

import asyncio
import importlib.metadata
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from adapter_helpers import in_order, kinds, metric_counts, otlp_bus, read_back_run, tree_names
from async_helpers import eventually
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.models.test import TestModel
from telemetry_helpers import (
    Harness,
    HarnessFactory,
    Receiver,
    attrs,
    child_env,
    hex_span,
    start_receiver,
)

from otel_agentbus import EventBus
from otel_agentbus import semconv as sc
from otel_agentbus.adapters import genai_bridge
from otel_agentbus.adapters import pydantic_ai as adapter
from otel_agentbus.adapters._common import AdapterError
from otel_agentbus.events import Event
from otel_agentbus.runs import current_run

RUNS_SEEN_BY_TOOLS: list[str | None] = []
"""The agent name of ``current_run()`` inside each call of the ``add`` tool."""


def calculator(name: str = "calculator") -> Agent[None, str]:
    agent: Agent[None, str] = Agent(TestModel(), name=name)

    @agent.tool_plain
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        run = current_run()
        RUNS_SEEN_BY_TOOLS.append(run.scope.agent if run is not None else None)
        return a + b

    return agent


@pytest.fixture
async def harness(make: HarnessFactory) -> AsyncIterator[Harness]:
    made = make()
    adapter.install(made.bus)
    yield made
    adapter.uninstall()


async def test_run_model_requests_and_tools_become_spans(harness: Harness) -> None:
    result = await calculator().run("add two numbers")
    assert result.output == '{"add":0}'
    root = harness.one("invoke_agent calculator")
    chats = harness.named("chat test")
    tool = harness.one("execute_tool add")
    assert len(chats) == 2
    for span in [*chats, tool]:
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.context.trace_id == root.context.trace_id
    chat = attrs(chats[0])
    assert chat[sc.GEN_AI_PROVIDER_NAME] == "test"
    assert chat[sc.GEN_AI_REQUEST_MODEL] == "test"
    assert chat[sc.GEN_AI_RESPONSE_MODEL] == "test"
    assert chat[sc.GEN_AI_USAGE_INPUT_TOKENS] > 0 and chat[sc.GEN_AI_USAGE_OUTPUT_TOKENS] > 0
    tool_attrs = attrs(tool)
    assert tool_attrs[sc.GEN_AI_TOOL_NAME] == "add"
    assert tool_attrs[sc.GEN_AI_TOOL_DESCRIPTION] == "Add two numbers."
    assert tool_attrs[sc.GEN_AI_TOOL_CALL_ID] == "pyd_ai_tool_call_id__add"
    run = attrs(root)
    assert run[sc.RUN_STATUS] == "completed"
    assert run[sc.GEN_AI_CONVERSATION_ID]  # pydantic-ai's own conversation id


async def test_bus_delivery_order(harness: Harness) -> None:
    seen: list[Event] = []
    harness.bus.subscribe(seen.append)
    RUNS_SEEN_BY_TOOLS.clear()
    await calculator().run("add two numbers")
    assert RUNS_SEEN_BY_TOOLS == ["calculator"]  # code inside a tool sees the run
    published = in_order(harness.bus.history(limit=None))
    assert kinds(published) == [
        "agent.run.started", "agent.llm.request", "agent.llm.response",
        "agent.tool.call.started", "agent.tool.call.completed", "agent.llm.request",
        "agent.llm.response", "agent.run.completed"]
    assert {e.scope.run_id for e in published} == {published[0].scope.run_id}
    assert published[3].payload["arguments"] == {"a": 0, "b": 0}
    assert published[4].payload["result"] == 0
    assert published[-1].payload["output"] == '{"add":0}'
    await eventually(lambda: len(seen) == len(published))
    assert [e.id for e in seen] == [e.id for e in published]


async def test_a_failing_tool_fails_its_span_and_the_run(harness: Harness) -> None:
    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart("explode", {}, tool_call_id="boom-1")])

    agent: Agent[None, str] = Agent(FunctionModel(model), name="fragile")

    @agent.tool_plain
    def explode() -> str:
        raise RuntimeError("tool broke")

    with pytest.raises(RuntimeError, match="tool broke"):
        await agent.run("go")
    tool = harness.one("execute_tool explode")
    assert tool.status.is_ok is False
    assert attrs(tool)[sc.ERROR_TYPE] == "RuntimeError"
    root = harness.one("invoke_agent fragile")
    assert attrs(root)[sc.RUN_STATUS] == "failed"
    assert attrs(root)[sc.ERROR_TYPE] == "RuntimeError"


async def test_run_stream_is_a_run(harness: Harness) -> None:
    async with calculator("streamer").run_stream("add two numbers") as result:
        assert await result.get_output() == '{"add":0}'
    assert attrs(harness.one("invoke_agent streamer"))[sc.RUN_STATUS] == "completed"
    assert len(harness.named("chat test")) == 2


@pytest.mark.parametrize("native", [False, True], ids=["ours", "native-instrumentation"])
async def test_a_cancelled_run_ends_cancelled(harness: Harness, native: bool) -> None:
    entered = asyncio.Event()

    async def stuck(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("never answered")

    agent: Agent[None, str] = Agent(FunctionModel(stuck), name="stuck")
    if native:
        agent.instrument = InstrumentationSettings(tracer_provider=harness.provider)
    task = asyncio.create_task(agent.run("wait"))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ended = [e for e in harness.bus.history(limit=None) if e.kind.startswith("agent.run.")
             and e.kind != "agent.run.started"]
    assert [e.kind for e in ended] == ["agent.run.cancelled"]
    assert ended[0].payload["reason"] == "CancelledError"
    assert ended[0].scope.agent == "stuck"


async def test_an_agent_inside_a_tool_is_a_child_run(harness: Harness) -> None:
    inner = calculator("inner")

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart("delegate", {}, tool_call_id="d-1")])
        return ModelResponse(parts=[TextPart("done")])

    outer: Agent[None, str] = Agent(FunctionModel(model), name="outer")

    @outer.tool_plain
    async def delegate() -> str:
        return (await inner.run("add")).output

    assert (await outer.run("delegate it")).output == "done"
    tool = harness.one("execute_tool delegate")
    child = harness.one("invoke_agent inner")
    assert child.parent is not None and child.parent.span_id == tool.context.span_id
    assert attrs(child)[sc.GEN_AI_AGENT_NAME] == "inner"
    assert attrs(harness.one("execute_tool add"))[sc.GEN_AI_AGENT_NAME] == "inner"


async def test_native_instrumentation_is_deduplicated(make: HarnessFactory) -> None:
    reader = InMemoryMetricReader()
    harness = make(metrics_enabled=True, meter_provider=MeterProvider(metric_readers=[reader]))
    adapter.install(harness.bus)
    # The GenAI bridge on the same provider leaves pydantic-ai's spans to the adapter.
    bridge = genai_bridge.install(harness.bus, tracer_provider=harness.provider)
    try:
        agent = calculator()
        agent.instrument = InstrumentationSettings(tracer_provider=harness.provider)
        RUNS_SEEN_BY_TOOLS.clear()
        await agent.run("add two numbers")
        assert RUNS_SEEN_BY_TOOLS == ["calculator"]
    finally:
        adapter.uninstall()
        genai_bridge.uninstall(harness.provider)
    assert bridge.spans_bridged == 0
    exported = harness.exporter.get_finished_spans()
    # pydantic-ai's own spans, each once; none of ours.
    assert sorted(s.name for s in exported) == sorted(
        ["invoke_agent calculator", "chat test", "execute_tool add", "chat test"])
    assert {s.instrumentation_scope.name for s in exported
            if s.instrumentation_scope} == {"pydantic-ai"}
    events = in_order(harness.bus.history(limit=None))
    assert kinds(events) == [
        "agent.run.started", "agent.llm.request", "agent.llm.response",
        "agent.tool.call.started", "agent.tool.call.completed", "agent.llm.request",
        "agent.llm.response", "agent.run.completed"]
    assert all(e.attrs.get(sc.EVENT_BRIDGED) for e in events)
    native = {s.name: s for s in exported}
    assert events[0].span_id == hex_span(native["invoke_agent calculator"])
    assert events[3].span_id == hex_span(native["execute_tool add"])
    assert harness.telemetry.force_flush(10)
    runs = metric_counts(reader, sc.METRIC_RUNS)
    assert [(a[sc.GEN_AI_AGENT_NAME], n) for a, n in runs] == [("calculator", 1.0)]
    assert sum(n for _, n in metric_counts(reader, sc.METRIC_OPERATION_DURATION)) == 2.0


async def test_install_twice_changes_nothing(make: HarnessFactory) -> None:
    original = Agent.iter
    harness = make()
    first = adapter.install(harness.bus)
    assert adapter.install(EventBus()) is first
    await calculator().run("once")
    assert len(harness.bus.history(kinds="agent.run.started")) == 1
    adapter.uninstall()
    adapter.uninstall()
    assert Agent.iter is original
    await calculator().run("not instrumented")
    assert len(harness.bus.history(kinds="agent.run.started")) == 1


async def test_a_fault_never_breaks_the_agent(make: HarnessFactory) -> None:
    harness = make()
    capability = adapter.install(harness.bus)
    try:
        await harness.bus.close()  # every publish now fails inside our capability
        result = await calculator().run("add two numbers")
    finally:
        adapter.uninstall()
    assert result.output == '{"add":0}'
    assert capability.faults.count >= 1


def test_missing_framework_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "pydantic-ai-slim":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(AdapterError, match=r"otel-agentbus\[pydantic-ai\]"):
        adapter.install(EventBus())


def test_unsupported_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "3.0.1" if name == "pydantic-ai-slim" else real(name))
    with pytest.raises(AdapterError, match=r"pydantic-ai-slim 3\.0\.1 is not supported"):
        adapter.install(EventBus())


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(tmp_path_factory.mktemp("adapter-pydantic-ai"))
    yield started
    started.stop()


async def test_exported_over_otlp_and_read_back(receiver: Receiver) -> None:
    with otlp_bus(receiver, "pydantic-ai-e2e") as (telemetry, bus):
        adapter.install(bus)
        try:
            await calculator("adder").run("add two numbers")
        finally:
            adapter.uninstall()
        assert telemetry.force_flush(10)
    run, tree = read_back_run(Path(receiver.db), "adder")
    assert run["status"] == "completed"
    names = [name for root in tree["roots"] for name in tree_names(root)]
    assert names[0] == (0, "invoke_agent adder")
    assert sorted(names[1:]) == [(1, "chat test"), (1, "chat test"), (1, "execute_tool add")]


UNCHANGED_APP = '''
from pydantic_ai import Agent
from pydantic_ai.models.test import TestModel

agent = Agent(TestModel(), name="unchanged")


@agent.tool_plain
def add(a: int, b: int) -> int:
    return a + b


print(agent.run_sync("add two numbers").output)
'''


def test_opentelemetry_instrument_runs_an_unchanged_app(receiver: Receiver,
                                                       tmp_path: Path) -> None:
    """``opentelemetry-instrument python app.py``: our entry point makes a bus, mirrors it
    from the OTEL_* settings and installs the adapter; the app has no line of ours."""
    app = tmp_path / "app.py"
    app.write_text(UNCHANGED_APP)
    launcher = Path(sys.executable).parent / "opentelemetry-instrument"
    done = subprocess.run(
        [str(launcher), sys.executable, str(app)], capture_output=True, text=True, timeout=90,
        cwd=tmp_path, env=child_env(OTEL_SERVICE_NAME="unchanged-app",
                                    OTEL_EXPORTER_OTLP_ENDPOINT=receiver.grpc_endpoint))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '{"add":0}'
    run, tree = read_back_run(Path(receiver.db), "unchanged")
    assert run["status"] == "completed"
    assert run["service_name"] == "unchanged-app"
    names = sorted(name for root in tree["roots"] for name in tree_names(root))
    assert names == [(0, "invoke_agent unchanged"), (1, "chat test"), (1, "chat test"),
                     (1, "execute_tool add")]
