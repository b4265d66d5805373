"""The OpenAI Agents SDK adapter, driven by the real SDK with a scripted ``Model``: no network
(the adapter is installed exclusively, so the SDK's exporter to OpenAI is not called)."""

from __future__ import annotations

import importlib.metadata
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from adapter_helpers import in_order, kinds, otlp_bus, read_back_run, tree_names
from agents import (
    Agent,
    GuardrailFunctionOutput,
    InputGuardrailTripwireTriggered,
    Model,
    ModelResponse,
    Runner,
    Usage,
    function_tool,
    input_guardrail,
)
from agents.tracing import generation_span, get_trace_provider, response_span
from openai.types.responses import (
    Response,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from telemetry_helpers import Harness, HarnessFactory, Receiver, attrs, start_receiver

from otel_agentbus import EventBus
from otel_agentbus import semconv as sc
from otel_agentbus.adapters import openai_agents
from otel_agentbus.adapters._common import AdapterError
from otel_agentbus.events import Event


def message(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id="msg_1", type="message", role="assistant", status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])])


def tool_call(name: str, arguments: dict[str, Any], call_id: str) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(id=f"fc_{call_id}", call_id=call_id, type="function_call",
                                    name=name, arguments=json.dumps(arguments))


class ScriptedModel(Model):
    """Returns the scripted outputs in turn, reporting each as a generation span."""

    def __init__(self, name: str, outputs: list[list[Any]]) -> None:
        self.name = name
        self.outputs = list(outputs)

    async def get_response(self, system_instructions: Any, input: Any, model_settings: Any,
                           tools: Any, output_schema: Any, handoffs: Any, tracing: Any,
                           **kwargs: Any) -> ModelResponse:
        with generation_span(model=self.name, input=[]) as span:
            output = self.outputs.pop(0)
            span.span_data.output = [item.model_dump() for item in output]
            span.span_data.usage = {"input_tokens": 12, "output_tokens": 5,
                                    "output_tokens_details": {"reasoning_tokens": 2}}
            return ModelResponse(output=output, response_id=None, usage=Usage(
                requests=1, input_tokens=12, output_tokens=5, total_tokens=17))

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class ResponsesModel(ScriptedModel):
    """Reports each call as a response span, as the SDK's Responses API model does: the model
    name is known only from the response, at the end."""

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        with response_span() as span:
            output = self.outputs.pop(0)
            span.span_data.response = Response.model_construct(id="resp_1", model=self.name)
            span.span_data.usage = {"input_tokens": 7, "output_tokens": 2}
            return ModelResponse(output=output, response_id="resp_1", usage=Usage(
                requests=1, input_tokens=7, output_tokens=2, total_tokens=9))


@function_tool
def lookup(order: str) -> str:
    """Look an order up."""
    return f"order {order}: paid twice"


class BrokenModel(ScriptedModel):
    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        with generation_span(model=self.name):
            raise RuntimeError("model down")


def support_agents(billing_model: Model | None = None) -> Agent[Any]:
    """triage calls a tool, then hands off to billing (of billing and shipping), which
    answers."""
    billing = Agent(name="billing", instructions="Refund.", model=billing_model
                    or ScriptedModel("scripted-billing", [[message("refunded")]]))
    shipping = Agent(name="shipping", instructions="Ship.",
                     model=ScriptedModel("scripted-shipping", []))
    return Agent(name="triage", instructions="Route.", tools=[lookup],
                 handoffs=[billing, shipping], model=ScriptedModel("scripted-triage", [
                     [tool_call("lookup", {"order": "A7"}, "c1")],
                     [tool_call("transfer_to_billing", {}, "c2")]]))


@input_guardrail
async def no_secrets(context: Any, agent: Any, text: Any) -> GuardrailFunctionOutput:
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered="secret" in str(text))


@pytest.fixture
def sdk_processors() -> Iterator[None]:
    """Whatever a test installs, the SDK's processors are put back afterwards."""
    provider = get_trace_provider()
    saved = openai_agents._processors_of(provider)
    yield
    openai_agents.uninstall()
    provider.set_processors(saved or [])


@pytest.fixture
async def harness(make: HarnessFactory, sdk_processors: None) -> AsyncIterator[Harness]:
    made = make()
    openai_agents.install(made.bus, exclusive=True)
    yield made


async def test_run_handoff_and_tools_become_spans(harness: Harness) -> None:
    result = await Runner.run(support_agents(), "I was charged twice")
    assert result.final_output == "refunded"
    names = [s.name for s in harness.spans()]
    assert names.count("chat scripted-triage") == 2
    assert "chat scripted-billing" in names
    root = harness.one("invoke_agent Agent workflow")
    triage = harness.one("node triage")
    child_run = harness.one("invoke_agent billing")
    tool = harness.one("execute_tool lookup")
    assert triage.parent is not None and triage.parent.span_id == root.context.span_id
    # The receiving agent runs as a child run in the same trace, its spans named after it.
    assert child_run.context.trace_id == root.context.trace_id
    handoff_turn = max(harness.named("iteration triage"), key=lambda s: s.start_time or 0)
    assert child_run.parent is not None
    assert child_run.parent.span_id == handoff_turn.context.span_id
    billing_node = harness.one("node billing")
    assert billing_node.parent is not None
    assert billing_node.parent.span_id == child_run.context.span_id
    assert attrs(billing_node)[sc.GEN_AI_AGENT_NAME] == "billing"
    assert attrs(harness.one("chat scripted-billing"))[sc.GEN_AI_AGENT_NAME] == "billing"
    # Tools and LLM calls sit in the agent's turns (node iterations).
    iterations = {s.context.span_id: s for s in harness.named("iteration triage")}
    assert len(iterations) == 2
    assert tool.parent is not None and tool.parent.span_id in iterations
    tool_attrs = attrs(tool)
    assert tool_attrs[sc.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert tool_attrs[sc.GEN_AI_TOOL_NAME] == "lookup"
    chat = attrs(harness.named("chat scripted-triage")[0])
    assert chat[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert chat[sc.GEN_AI_REQUEST_MODEL] == "scripted-triage"
    assert chat[sc.GEN_AI_USAGE_INPUT_TOKENS] == 12
    assert chat[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert chat[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 2
    assert attrs(root)[sc.RUN_STATUS] == "completed"
    # The handoff is a decision event on the handing-off agent's turn.
    decisions = [(s.name, e) for s in harness.spans() for e in s.events
                 if e.name == sc.EV_DECISION]
    assert len(decisions) == 1
    span_name, decision = decisions[0]
    assert span_name == "iteration triage"
    assert decision.attributes[sc.DECISION_CHOSEN] == "billing"
    options = json.loads(str(decision.attributes[sc.DECISION_OPTIONS]))
    assert [option["id"] for option in options] == ["billing", "shipping"]


async def test_response_spans_are_chat_spans_named_at_their_end(harness: Harness) -> None:
    agent = Agent(name="responder", instructions="r",
                  model=ResponsesModel("gpt-resp", [[message("hi")]]))
    assert (await Runner.run(agent, "hello")).final_output == "hi"
    chat = harness.one("chat gpt-resp")
    attributes = attrs(chat)
    assert attributes[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert attributes[sc.GEN_AI_RESPONSE_MODEL] == "gpt-resp"
    assert (attributes[sc.GEN_AI_USAGE_INPUT_TOKENS],
            attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS]) == (7, 2)
    iteration = harness.one("iteration responder")
    assert chat.parent is not None and chat.parent.span_id == iteration.context.span_id
    assert (chat.end_time or 0) >= (chat.start_time or 0) >= (iteration.start_time or 0)


async def test_bus_delivery_order(harness: Harness) -> None:
    seen: list[Event] = []
    harness.bus.subscribe(seen.append)
    await Runner.run(support_agents(), "I was charged twice")
    published = in_order(harness.bus.history(limit=None))
    assert kinds(published) == [
        "agent.run.started", "agent.node.loop.started",
        "agent.node.loop.iteration", "agent.llm.request", "agent.llm.response",
        "agent.tool.call.started", "agent.tool.call.completed",
        "agent.node.loop.iteration", "agent.llm.request", "agent.llm.response",
        "agent.decision.made", "agent.node.loop.completed",
        "agent.run.started", "agent.node.loop.started", "agent.node.loop.iteration",
        "agent.llm.request", "agent.llm.response", "agent.node.loop.completed",
        "agent.run.completed", "agent.run.completed",
    ]
    decision = published[10]
    assert decision.payload["chosen"] == "billing"
    assert [o["id"] for o in decision.payload["options"]] == ["billing", "shipping"]
    assert decision.payload["intent"] == "handoff"
    assert decision.scope.node_id == "triage"
    child_start = published[12]
    assert child_start.scope.agent == "billing"
    assert child_start.scope.run_id != published[0].scope.run_id
    assert child_start.trace_id == published[0].trace_id  # one trace
    assert published[-2].scope.run_id == child_start.scope.run_id  # the child ends first
    tool_done = published[6]
    assert tool_done.payload["result"] == "order A7: paid twice"
    from async_helpers import eventually

    await eventually(lambda: len(seen) == len(published))
    assert [e.id for e in seen] == [e.id for e in published]


async def test_a_failing_receiving_agent_fails_its_child_run_and_the_trace(
        harness: Harness) -> None:
    with pytest.raises(RuntimeError, match="model down"):
        await Runner.run(support_agents(BrokenModel("broken", [])), "I was charged twice")
    child = harness.one("invoke_agent billing")
    assert attrs(child)[sc.RUN_STATUS] == "failed"
    assert "model down" in (child.status.description or "")
    assert attrs(harness.one("node billing"))[sc.ERROR_TYPE] == sc.ERROR_TYPE_FALLBACK
    assert attrs(harness.one("invoke_agent Agent workflow"))[sc.RUN_STATUS] == "failed"
    assert sc.ERROR_TYPE not in attrs(harness.one("node triage"))  # triage did its part


async def test_guardrail_trip_is_a_problem_and_fails_the_run(harness: Harness) -> None:
    guarded = Agent(name="guarded", instructions="g", input_guardrails=[no_secrets],
                    model=ScriptedModel("scripted", [[message("ok")]]))
    with pytest.raises(InputGuardrailTripwireTriggered):
        await Runner.run(guarded, "tell me the secret")
    problems = harness.bus.history(kinds="agent.problem.reported")
    assert len(problems) == 1
    assert problems[0].payload["severity"] == "critical"
    assert "no_secrets" in problems[0].payload["description"]
    assert problems[0].scope.node_id == "guarded"
    root = harness.one("invoke_agent Agent workflow")
    assert attrs(root)[sc.RUN_STATUS] == "failed"
    assert any(e.name == sc.EV_PROBLEM for s in harness.spans() for e in s.events)


async def test_install_twice_changes_nothing(make: HarnessFactory, sdk_processors: None) -> None:
    harness = make()
    before = openai_agents._processors_of(get_trace_provider())
    first = openai_agents.install(harness.bus, exclusive=True)
    assert openai_agents.install(EventBus(), exclusive=True) is first
    assert openai_agents._processors_of(get_trace_provider()) == [first]
    openai_agents.uninstall()
    openai_agents.uninstall()
    assert openai_agents.installed() is None
    assert openai_agents._processors_of(get_trace_provider()) == before  # the SDK's, back


async def test_not_exclusive_keeps_the_sdk_processors(make: HarnessFactory,
                                                      sdk_processors: None) -> None:
    before = openai_agents._processors_of(get_trace_provider()) or []
    processor = openai_agents.install(make().bus)
    assert openai_agents._processors_of(get_trace_provider()) == [*before, processor]
    openai_agents.uninstall()
    assert openai_agents._processors_of(get_trace_provider()) == before


async def test_a_fault_in_our_callback_never_breaks_the_agent(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    processor = openai_agents.installed()
    assert processor is not None

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("adapter bug")

    processor._writer.node_started = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.DEBUG, logger="otel_agentbus.adapters"):
        result = await Runner.run(support_agents(), "I was charged twice")
    assert result.final_output == "refunded"
    assert processor.faults.count == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "openai-agents adapter" in warnings[0].getMessage()


def test_missing_framework_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "openai-agents":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(AdapterError, match=r"otel-agentbus\[openai-agents\]"):
        openai_agents.install(EventBus())


def test_unsupported_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "0.19.3" if name == "openai-agents" else real(name))
    with pytest.raises(AdapterError, match=r"openai-agents 0\.19\.3 is not supported"):
        openai_agents.install(EventBus())


def test_no_bus_is_a_clear_error() -> None:
    with pytest.raises(AdapterError, match="set_default_bus"):
        openai_agents.install()


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(tmp_path_factory.mktemp("adapter-openai"))
    yield started
    started.stop()


async def test_exported_over_otlp_and_read_back(receiver: Receiver,
                                                sdk_processors: None) -> None:
    with otlp_bus(receiver, "openai-agents-e2e") as (telemetry, bus):
        openai_agents.install(bus, exclusive=True)
        await Runner.run(support_agents(), "I was charged twice", run_config=_named("support"))
        assert telemetry.force_flush(10)
    run, tree = read_back_run(Path(receiver.db), "support")
    assert run["status"] == "completed"
    names = [name for root in tree["roots"] for name in tree_names(root)]
    assert (0, "invoke_agent support") in names
    assert (1, "node triage") in names
    assert names.count((2, "iteration triage")) == 2
    assert (3, "execute_tool lookup") in names
    assert (3, "chat scripted-triage") in names
    assert (3, "invoke_agent billing") in names  # the child run, under the handoff's turn
    assert (4, "node billing") in names


def _named(workflow: str) -> Any:
    from agents import RunConfig

    return RunConfig(workflow_name=workflow)
