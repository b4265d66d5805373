"""The LangGraph / LangChain adapter against real LangGraph graphs driven by LangChain's own
fake chat model: spans, links, attributes, decisions, problems and delivery order, in every
way a graph can be run; bad input; and an unchanged app under ``opentelemetry-instrument``
exporting into the embedded receiver."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from telemetry_helpers import attrs, child_env, forget, parent_id, span_id, start_receiver

pytest.importorskip("langgraph", reason="pip install 'otel-agentbus[langgraph]'")

from langchain_core.callbacks import CallbackManager
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from otel_agentbus import Event, EventBus, Telemetry, configure, decision, problem
from otel_agentbus import semconv as sc
from otel_agentbus.adapters import langgraph as adapter
from otel_agentbus.adapters._common import AdapterError
from otel_agentbus.instrument import tool as agentbus_tool

pytestmark = pytest.mark.timeout(90)

REPO_ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------ the app
class ScriptedModel(GenericFakeChatModel):
    """LangChain's fake chat model, with tools bound as a real one would (ignored) and a
    stream that yields each scripted message whole, tool calls and usage included."""

    model_name: str = "fake-gpt"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        return self

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        message = self._generate(messages, stop, run_manager, **kwargs).generations[0].message
        assert isinstance(message, AIMessage)
        chunk = AIMessageChunk(
            content=message.content, response_metadata=message.response_metadata,
            usage_metadata=message.usage_metadata, id=message.id,
            tool_call_chunks=[{"name": c["name"], "args": json.dumps(c["args"]),
                               "id": c["id"], "index": i, "type": "tool_call_chunk"}
                              for i, c in enumerate(message.tool_calls)])
        if run_manager is not None:
            run_manager.on_llm_new_token(str(message.content), chunk=None)
        yield ChatGenerationChunk(message=chunk)


def calls(*tool_calls: tuple[str, dict[str, Any], str]) -> AIMessage:
    return AIMessage(
        content="calling tools",
        tool_calls=[{"name": name, "args": args, "id": call_id}
                    for name, args, call_id in tool_calls],
        usage_metadata={"input_tokens": 11, "output_tokens": 4, "total_tokens": 15},
        response_metadata={"finish_reason": "tool_calls", "model_name": "fake-gpt-0613"})


def answer(text: str) -> AIMessage:
    return AIMessage(content=text, usage_metadata={"input_tokens": 20, "output_tokens": 2,
                                                   "total_tokens": 22},
                     response_metadata={"finish_reason": "stop"})


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"boom: {reason}")


def build_app(script: list[AIMessage], *, with_subgraph: bool = True,
              node_hook: Callable[[], None] | None = None) -> Any:
    model = ScriptedModel(messages=iter(script))

    def agent(state: MessagesState) -> dict[str, Any]:
        if node_hook is not None:
            node_hook()
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([add, explode], handle_tool_errors=True))
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    if with_subgraph:
        inner = StateGraph(MessagesState)
        inner.add_node("lookup", lambda state: {"messages": []})
        inner.add_edge(START, "lookup")
        graph.add_node("memory", inner.compile(name="memory_graph"))
        graph.add_edge(START, "memory")
        graph.add_edge("memory", "agent")
    else:
        graph.add_edge(START, "agent")
    return graph.compile(name="assistant")


def one_tool_script() -> list[AIMessage]:
    return [calls(("add", {"a": 2, "b": 3}, "call-1")), answer("5")]


INPUT = {"messages": [("user", "what is 2 + 3?")]}


# ------------------------------------------------------------------- fixtures
class Spans:
    def __init__(self) -> None:
        self.provider = TracerProvider()
        self.exporter = InMemorySpanExporter()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.telemetry: Telemetry = configure(
            tracer_provider=self.provider, metrics_enabled=False, pending_spans=False,
            signal_handlers=False)
        forget(self.telemetry)

    def all(self) -> list[ReadableSpan]:
        return sorted(self.exporter.get_finished_spans(), key=lambda s: s.start_time or 0)

    def names(self) -> list[str]:
        return [s.name for s in self.all()]

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, self.names()
        return found[0]


@pytest.fixture
def spans() -> Iterator[Spans]:
    made = Spans()
    yield made
    made.telemetry.shutdown(timeout=5)
    made.provider.shutdown()


@pytest.fixture
def bus(spans: Spans) -> Iterator[EventBus]:
    made = adapter.install(EventBus())
    yield made
    adapter.uninstall()


def kinds(bus: EventBus) -> list[str]:
    return [e.kind for e in reversed(bus.history(limit=None))]


def events_named(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


EXPECTED_TREE = [
    "invoke_agent assistant",
    "node memory", "iteration memory", "invoke_agent memory_graph", "node lookup",
    "iteration lookup",
    "node agent", "iteration agent", "chat fake-gpt",
    "node tools", "iteration tools", "execute_tool add",
    "node agent", "iteration agent", "chat fake-gpt",
]


# ------------------------------------------------------------------ the mapping
def test_a_graph_run_becomes_a_run_with_nodes_models_tools_and_a_subgraph(
        spans: Spans, bus: EventBus) -> None:
    result = build_app(one_tool_script()).invoke(INPUT)
    assert result["messages"][-1].content == "5"
    assert spans.names() == EXPECTED_TREE
    run = spans.one("invoke_agent assistant")
    assert run.parent is None and run.status.status_code is StatusCode.UNSET
    assert len({s.context.trace_id for s in spans.all()}) == 1
    by_id = {span_id(s): s for s in spans.all()}

    def parent_name(span: ReadableSpan) -> str:
        parent = parent_id(span)
        assert parent is not None
        return by_id[parent].name

    subgraph = spans.one("invoke_agent memory_graph")
    assert parent_name(subgraph) == "iteration memory"
    assert attrs(subgraph)[sc.GEN_AI_AGENT_NAME] == "memory_graph"
    assert attrs(subgraph)[sc.RUN_ID] != attrs(run)[sc.RUN_ID]
    assert parent_name(spans.one("node lookup")) == "invoke_agent memory_graph"
    chat = spans.named("chat fake-gpt")[0]
    assert parent_name(chat) == "iteration agent"
    assert attrs(chat)[sc.GEN_AI_REQUEST_MODEL] == "fake-gpt"
    assert attrs(chat)[sc.GEN_AI_RESPONSE_MODEL] == "fake-gpt-0613"
    assert attrs(chat)[sc.GEN_AI_PROVIDER_NAME] == "scriptedmodel"  # LangChain's ls_provider
    assert attrs(chat)[sc.GEN_AI_USAGE_INPUT_TOKENS] == 11
    assert attrs(chat)[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 4
    assert list(attrs(chat)[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == ["tool_calls"]
    assert list(attrs(spans.named("chat fake-gpt")[1])[sc.GEN_AI_RESPONSE_FINISH_REASONS]) \
        == ["stop"]
    tool_span = spans.one("execute_tool add")
    assert parent_name(tool_span) == "iteration tools"
    assert attrs(tool_span)[sc.GEN_AI_TOOL_CALL_ID] == "call-1"
    assert attrs(tool_span)[sc.GEN_AI_TOOL_DESCRIPTION] == "Add two integers."
    iterations = [attrs(s)[sc.NODE_ITERATION] for s in spans.named("iteration agent")]
    assert iterations == [1, 2]


def test_conditional_edges_become_decisions_with_their_options(
        spans: Spans, bus: EventBus) -> None:
    build_app(one_tool_script()).invoke(INPUT)
    decisions = [events_named(s, sc.EV_DECISION) for s in spans.named("iteration agent")]
    assert [[d[sc.DECISION_CHOSEN] for d in found] for found in decisions] == [
        ["tools"], ["__end__"]]
    assert "tools" in str(decisions[0][0][sc.DECISION_OPTIONS])
    made = [e for e in bus.history(limit=None) if e.kind == "agent.decision.made"]
    options = [o["id"] for o in made[-1].payload["options"]]  # oldest last in history
    assert options == ["tools", "__end__"]
    assert made[-1].payload["intent"] == "route after agent"
    assert made[-1].payload["decision_type"] == "path_choice"


async def test_async_run_delivers_events_to_subscribers_in_publish_order(
        spans: Spans, bus: EventBus) -> None:
    seen: list[Event] = []
    subscription = bus.subscribe(seen.append)
    result = await build_app(one_tool_script()).ainvoke(INPUT)
    assert result["messages"][-1].content == "5"
    await bus.close()  # drains: every event has reached the subscriber
    assert subscription.stats().received == len(kinds(bus))
    delivered = [e.kind for e in seen]
    assert delivered == kinds(bus)
    assert [e.seq for e in seen] == sorted(e.seq or 0 for e in seen)
    assert delivered[:3] == ["agent.run.started", "agent.node.loop.started",
                             "agent.node.loop.iteration"]
    assert delivered.index("agent.tool.call.started") < delivered.index(
        "agent.tool.call.completed")
    assert delivered[-1] == "agent.run.completed"
    assert spans.names() == EXPECTED_TREE


def run_sync_stream(app: Any) -> None:
    for _ in app.stream(INPUT):
        pass


def run_astream(app: Any) -> None:
    async def consume() -> None:
        async for _ in app.astream(INPUT, stream_mode=["updates", "messages"]):
            pass
    asyncio.run(consume())


def run_astream_events(app: Any) -> None:
    async def consume() -> None:
        async for _ in app.astream_events(INPUT, version="v2"):
            pass
    asyncio.run(consume())


@pytest.mark.parametrize("run", [run_sync_stream, run_astream, run_astream_events],
                         ids=["stream", "astream", "astream_events"])
def test_every_way_of_running_a_graph_gives_the_same_trace(
        spans: Spans, bus: EventBus, run: Callable[[Any], None]) -> None:
    run(build_app(one_tool_script()))
    assert spans.names() == EXPECTED_TREE
    assert attrs(spans.one("execute_tool add"))[sc.GEN_AI_TOOL_NAME] == "add"
    assert adapter.faults() == 0


def test_a_failing_tool_fails_its_span_and_reports_a_problem(
        spans: Spans, bus: EventBus) -> None:
    script = [calls(("explode", {"reason": "disk full"}, "call-x")), answer("sorry")]
    result = build_app(script, with_subgraph=False).invoke(INPUT)
    assert result["messages"][-1].content == "sorry"  # ToolNode turned it into a message
    failed = spans.one("execute_tool explode")
    assert failed.status.status_code is StatusCode.ERROR
    assert "boom: disk full" in (failed.status.description or "")
    assert attrs(failed)[sc.ERROR_TYPE] == "RuntimeError"
    problems = [e for e in bus.history(limit=None) if e.kind == "agent.problem.reported"]
    assert len(problems) == 1
    assert problems[0].payload["severity"] == "warning"
    assert problems[0].payload["tool_call_id"] == "call-x"
    assert events_named(failed, sc.EV_PROBLEM)  # on the tool's span


def test_a_failing_node_fails_the_run_with_its_cause(spans: Spans, bus: EventBus) -> None:
    def broken() -> None:
        raise KeyError("missing plan")

    app = build_app(one_tool_script(), with_subgraph=False, node_hook=broken)
    with pytest.raises(KeyError, match="missing plan") as raised:
        app.invoke(INPUT)
    assert raised.type is KeyError  # the user's own error, unchanged
    run, node = spans.one("invoke_agent assistant"), spans.one("node agent")
    for span in (run, node):
        assert span.status.status_code is StatusCode.ERROR
        assert "missing plan" in (span.status.description or "")
        assert attrs(span)[sc.ERROR_TYPE] == "KeyError"
    problems = events_named(spans.one("iteration agent"), sc.EV_PROBLEM)
    assert problems[0]["agentbus.problem.severity"] == "critical"


def test_decision_problem_and_decorated_tools_inside_a_node_join_the_graph_run(
        spans: Spans, bus: EventBus) -> None:
    @agentbus_tool
    def lookup(key: str) -> str:
        return key.upper()

    def inside_node() -> None:
        decision("answer directly or use a tool", ["tool", "direct"], "tool")
        problem("minor", "cache cold")
        lookup("k")
        with spans.provider.get_tracer("lib").start_as_current_span("library work"):
            pass

    build_app(one_tool_script(), with_subgraph=False, node_hook=inside_node).invoke(INPUT)
    iteration = spans.named("iteration agent")[0]
    assert [e.name for e in iteration.events][:2] == [sc.EV_DECISION, sc.EV_PROBLEM]
    run_id = attrs(spans.one("invoke_agent assistant"))[sc.RUN_ID]
    decorated = spans.named("execute_tool lookup")
    assert len(decorated) == 2 and all(attrs(s)[sc.RUN_ID] == run_id for s in decorated)
    library = spans.named("library work")[0]
    assert parent_id(library) == span_id(iteration)


def test_a_library_span_inside_a_langchain_tool_is_a_child_of_the_tool_span(
        spans: Spans, bus: EventBus) -> None:
    @tool
    def fetch(url: str) -> str:
        """Fetch a page."""
        with spans.provider.get_tracer("http-client").start_as_current_span("GET"):
            return "<html>"

    model = ScriptedModel(messages=iter([calls(("fetch", {"url": "u"}, "c-f")), answer("ok")]))
    graph = StateGraph(MessagesState)
    graph.add_node("agent", lambda s: {"messages": [model.invoke(s["messages"])]})
    graph.add_node("tools", ToolNode([fetch]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, ["tools", END])
    graph.add_edge("tools", "agent")
    graph.compile(name="fetcher").invoke(INPUT)
    assert parent_id(spans.one("GET")) == span_id(spans.one("execute_tool fetch"))


# ------------------------------------------------------------------- bad input
def test_install_twice_changes_nothing_and_uninstall_stops_it(spans: Spans) -> None:
    bus = EventBus()
    assert adapter.install(bus) is bus
    try:
        assert adapter.install() is bus
        assert adapter.install(bus) is bus
        manager = CallbackManager([])
        assert manager.inheritable_handlers == [adapter.handler()]
        with pytest.raises(AdapterError, match="installed with another bus"):
            adapter.install(EventBus())
        build_app(one_tool_script(), with_subgraph=False).invoke(INPUT)
        assert kinds(bus).count("agent.run.started") == 1  # one handler, not two
    finally:
        adapter.uninstall()
    adapter.uninstall()
    assert not adapter.installed()
    assert CallbackManager([]).inheritable_handlers == []
    before = len(bus.history(limit=None))
    build_app(one_tool_script(), with_subgraph=False).invoke(INPUT)
    assert len(bus.history(limit=None)) == before


def test_a_fault_in_our_callback_never_breaks_the_graph(
        spans: Spans, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="otel_agentbus.adapters")
    bus = EventBus()
    adapter.install(bus)
    before = adapter.faults()
    try:
        asyncio.run(bus.close())  # every publish now raises BusClosedError
        result = build_app(one_tool_script()).invoke(INPUT)
    finally:
        adapter.uninstall()
    assert result["messages"][-1].content == "5"
    assert adapter.faults() > before + 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and r.name == "otel_agentbus.adapters"]
    assert len(warnings) <= 1  # logged once per process, then only counted
    assert not [r for r in caplog.records if "Error in AgentBusCallbackHandler" in
                r.getMessage()]


def test_a_missing_framework_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "langgraph":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(AdapterError, match=r"langgraph is not installed: pip install "
                                           r"'otel-agentbus\[langgraph\]'"):
        adapter.install()
    assert not adapter.installed()


def test_an_unsupported_version_is_refused_with_its_version(tmp_path: Path) -> None:
    """A real interpreter that finds an old langgraph's metadata first on its path."""
    old = tmp_path / "langgraph-0.2.74.dist-info"
    old.mkdir()
    (old / "METADATA").write_text("Metadata-Version: 2.1\nName: langgraph\nVersion: 0.2.74\n")
    script = textwrap.dedent("""
        from otel_agentbus.adapters import langgraph
        from otel_agentbus.adapters._common import AdapterError
        try:
            langgraph.install()
        except AdapterError as error:
            print(error)
    """)
    env = child_env(PYTHONPATH=f"{tmp_path}:{REPO_ROOT}")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "langgraph 0.2.74 is not supported by the langgraph adapter" in done.stdout
    assert "pip install 'otel-agentbus[langgraph]'" in done.stdout


# -------------------------------------------- opentelemetry-instrument, real OTLP
APP = '''
from typing import Any
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition


class Model(GenericFakeChatModel):
    model_name: str = "fake-gpt"

    def bind_tools(self, tools: Any, **kwargs: Any) -> "Model":
        return self


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


model = Model(messages=iter([
    AIMessage(content="adding", tool_calls=[{"name": "add", "args": {"a": 2, "b": 3},
                                               "id": "call-1"}],
              usage_metadata={"input_tokens": 9, "output_tokens": 3, "total_tokens": 12}),
    AIMessage(content="5", usage_metadata={"input_tokens": 14, "output_tokens": 1,
                                           "total_tokens": 15}),
]))
graph = StateGraph(MessagesState)
graph.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
graph.add_node("tools", ToolNode([add]))
graph.add_edge(START, "agent")
graph.add_conditional_edges("agent", tools_condition)
graph.add_edge("tools", "agent")
print(graph.compile(name="calculator").invoke({"messages": [("user", "2 + 3?")]})
      ["messages"][-1].content)
'''


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "otel_agentbus.cli", *args],
                          capture_output=True, text=True, env=child_env(), timeout=30)


def test_opentelemetry_instrument_traces_an_unchanged_app_into_the_receiver(
        tmp_path: Path) -> None:
    launcher = shutil.which("opentelemetry-instrument",
                            path=str(Path(sys.executable).parent))
    assert launcher, "opentelemetry-instrument comes with the langgraph extra"
    app = tmp_path / "app.py"
    app.write_text(APP)
    receiver = start_receiver(tmp_path)
    try:
        env = child_env(OTEL_SERVICE_NAME="calculator-app",
                        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.grpc_endpoint,
                        OTEL_EXPORTER_OTLP_INSECURE="true",
                        OTEL_TRACES_EXPORTER="otlp", OTEL_METRICS_EXPORTER="none",
                        OTEL_LOGS_EXPORTER="none")
        done = subprocess.run([launcher, sys.executable, str(app)], capture_output=True,
                              text=True, env=env, timeout=90, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == "5"
        runs: list[dict[str, Any]] = []
        for _ in range(100):  # the receiver stores what the exit flush sent
            listed = cli("runs", "--db", str(receiver.db), "--json")
            assert listed.returncode == 0, listed.stderr
            runs = json.loads(listed.stdout)["runs"]
            if runs and runs[0]["status"] == "completed":
                break
            time.sleep(0.1)
        assert [(r["agent"], r["status"]) for r in runs] == [("calculator", "completed")]
        shown = cli("trace", runs[0]["trace_id"], "--db", str(receiver.db), "--json")
        assert shown.returncode == 0, shown.stderr
        (root,) = json.loads(shown.stdout)["roots"]
        assert root["name"] == "invoke_agent calculator"

        def names(node: dict[str, Any]) -> list[str]:
            return [node["name"], *(n for child in node["children"] for n in names(child))]

        found = names(root)
        assert found.count("chat fake-gpt") == 2 and "execute_tool add" in found
        assert found.count("iteration agent") == 2 and "node tools" in found
    finally:
        receiver.stop()


@pytest.fixture(autouse=True)
def _never_left_installed() -> Iterator[None]:
    yield
    adapter.uninstall()


def test_an_interrupt_pauses_the_run_without_failing_it(spans: Spans, bus: EventBus) -> None:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import interrupt

    graph = StateGraph(MessagesState)
    graph.add_node("approve", lambda state: {"messages": [("ai", interrupt("approve?"))]})
    graph.add_edge(START, "approve")
    app = graph.compile(name="approver", checkpointer=InMemorySaver())
    result = app.invoke(INPUT, {"configurable": {"thread_id": "t-1"}})
    assert "__interrupt__" in result
    run, node = spans.one("invoke_agent approver"), spans.one("node approve")
    assert run.status.status_code is StatusCode.UNSET
    assert node.status.status_code is StatusCode.UNSET
    assert attrs(run)[sc.GEN_AI_CONVERSATION_ID] == "t-1"  # the thread is the conversation
    assert not [e for e in bus.history(limit=None) if e.kind == "agent.problem.reported"]


def test_a_model_called_outside_any_graph_joins_the_decorated_run(
        spans: Spans, bus: EventBus) -> None:
    from otel_agentbus.instrument import agent

    model = ScriptedModel(messages=iter([answer("hi")]))

    @agent("chatter", bus=bus)
    def chat() -> str:
        return str(model.invoke("hello").content)

    assert chat() == "hi"
    chat_span, run = spans.one("chat fake-gpt"), spans.one("invoke_agent chatter")
    assert parent_id(chat_span) == span_id(run)
    assert attrs(chat_span)[sc.RUN_ID] == attrs(run)[sc.RUN_ID]


def test_the_instrumentor_installs_and_uninstalls(spans: Spans) -> None:
    from otel_agentbus.adapters.langgraph_instrumentor import LangGraphInstrumentor

    bus = EventBus()
    instrumentor = LangGraphInstrumentor()
    instrumentor.instrument(bus=bus)
    try:
        assert adapter.installed() and adapter.install() is bus
        build_app(one_tool_script(), with_subgraph=False).invoke(INPUT)
        assert "agent.tool.call.started" in kinds(bus)
    finally:
        instrumentor.uninstrument()
    assert not adapter.installed()


def test_a_graph_called_as_a_tool_is_a_child_run_of_the_tool_span(
        spans: Spans, bus: EventBus) -> None:
    inner = StateGraph(MessagesState)
    inner.add_node("research", lambda state: {"messages": [("ai", "found it")]})
    inner.add_edge(START, "research")
    researcher = inner.compile(name="researcher")

    @tool
    def ask_researcher(question: str) -> str:
        """Delegate to the research agent."""
        return str(researcher.invoke({"messages": [("user", question)]})["messages"][-1]
                   .content)

    model = ScriptedModel(messages=iter([calls(("ask_researcher", {"question": "q"}, "c-r")),
                                         answer("done")]))
    graph = StateGraph(MessagesState)
    graph.add_node("agent", lambda s: {"messages": [model.invoke(s["messages"])]})
    graph.add_node("tools", ToolNode([ask_researcher]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    graph.compile(name="lead").invoke(INPUT)
    child, tool_span = spans.one("invoke_agent researcher"), spans.one(
        "execute_tool ask_researcher")
    assert parent_id(child) == span_id(tool_span)
    assert child.context.trace_id == spans.one("invoke_agent lead").context.trace_id
    assert attrs(child)[sc.GEN_AI_AGENT_NAME] == "researcher"
    assert parent_id(spans.one("node research")) == span_id(child)
