"""Seed 002 (a Rust runtime's invocation API), call pattern by call pattern, as the seed text
writes them, translated to Python the obvious way (``X::new`` -> ``X.new``, enum variants
as attributes, ``Result`` errors raised, ``Duration`` -> ``timedelta``). The seed's own unit
tests are here too, as ``test_seed_*``. Table: docs/conformance-behest-picoclaw.md.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from async_helpers import wait_until
from telemetry_helpers import HarnessFactory

from otel_agentbus import EventBus
from otel_agentbus.compat.behest import (
    AgentEvent,
    ChatStreamEvent,
    Control,
    EmitRequest,
    EventKind,
    FinishReason,
    InvocationError,
    InvocationEvent,
    InvocationHandle,
    ModelName,
    ProviderId,
    RunCompleted,
    RunId,
    RunRequest,
    RunStarted,
    RuntimeInvocation,
    SessionContext,
    TextDelta,
    ToolChoice,
    spawn_listener,
)
from otel_agentbus.runs import current_run

pytestmark = pytest.mark.timeout(60)

AGENT_VARIANTS = [k for k in EventKind if k is not EventKind.Any and not k.name.startswith("Chat")]
CHAT_VARIANTS = [k for k in EventKind if k.name.startswith("Chat")]


def text_delta(run_id: RunId | None = None) -> AgentEvent:
    return AgentEvent.TextDelta(TextDelta(run_id=run_id or RunId.new(), delta="x",
                                          timestamp=datetime.now(UTC)))


def run_started(run_id: RunId | None = None) -> AgentEvent:
    return AgentEvent.RunStarted(RunStarted(
        run_id=run_id or RunId.new(), session_id=uuid.uuid4(), provider=ProviderId.new("p"),
        model=ModelName.new("m"), timestamp=datetime.now(UTC)))


def agent_variant(kind: EventKind) -> AgentEvent:
    constructor = getattr(AgentEvent, kind.name)
    event: AgentEvent = constructor({"run_id": RunId.new(), "timestamp": datetime.now(UTC)})
    return event


def chat_variant(kind: EventKind) -> ChatStreamEvent:
    name = kind.name.removeprefix("Chat")
    event: ChatStreamEvent = getattr(ChatStreamEvent, name)(delta="x")
    return event


class EchoRuntime:
    """The seed's ``AgentRuntime``: ``run(run_request) -> RunOutput``."""

    name = "echo"

    def __init__(self) -> None:
        self.requests: list[RunRequest] = []

    async def run(self, request: RunRequest) -> dict[str, Any]:
        self.requests.append(request)
        await asyncio.sleep(0)
        return {"output": request.input.upper(), "run_id": current_run().run_id}  # type: ignore[union-attr]


# ----------------------------------------------------------------------- EmitRequest
def test_emit_request_new_has_the_seed_defaults() -> None:
    req = EmitRequest.new(ProviderId.new("p"), ModelName.new("m"), "hi")
    assert (req.provider, req.model, req.input) == ("p", "m", "hi")
    assert req.session_id is None
    assert req.client_request_id is None
    assert req.metadata is None  # Value::Null


def test_emit_request_with_session_id() -> None:
    sid = uuid.uuid4()
    req = EmitRequest.new(ProviderId.new("p"), ModelName.new("m"), "hi")
    assert req.with_session_id(sid).session_id == sid
    assert req.session_id is None  # a builder returns a new request
    with pytest.raises(InvocationError.InvalidRequest, match="session_id must be a uuid"):
        req.with_session_id("not-a-uuid")  # type: ignore[arg-type]


def test_emit_request_with_client_request_id() -> None:
    req = EmitRequest.new(ProviderId.new("p"), ModelName.new("m"), "hi")
    assert req.with_client_request_id("cid").client_request_id == "cid"


def test_emit_request_with_metadata() -> None:
    req = EmitRequest.new(ProviderId.new("p"), ModelName.new("m"), "hi")
    assert req.with_metadata({"k": "v"}).metadata == {"k": "v"}


def test_seed_emit_request_converts_to_run_request() -> None:
    sid = uuid.uuid4()
    req = (EmitRequest.new(ProviderId.new("p"), ModelName.new("m"), "hi")
           .with_session_id(sid)
           .with_client_request_id("cid")
           .with_metadata({"k": "v"}))
    run = req.into_run_request()
    assert isinstance(run, RunRequest)
    assert run.provider == ProviderId.new("p")
    assert run.model == ModelName.new("m")
    assert run.input == "hi"
    assert run.session_id == sid
    assert run.client_request_id == "cid"
    assert run.metadata == {"k": "v"}
    assert run.tool_choice is ToolChoice.Auto
    assert run.run_id is None


def test_seed_emit_request_default_metadata_is_null() -> None:
    req = EmitRequest.new(ProviderId.new("p"), ModelName.new("m"), "hi")
    assert req.metadata is None
    run = EmitRequest(**{f: getattr(req, f) for f in
                         ("provider", "model", "input")}).into_run_request()  # req.clone()
    assert run.metadata is None


# ------------------------------------------------------------------- InvocationError
def test_invocation_error_runtime_is_transparent() -> None:
    cause = RuntimeError("provider unreachable")
    error = InvocationError.Runtime(cause)
    assert isinstance(error, InvocationError)
    assert str(error) == "provider unreachable"
    assert error.error is cause


def test_invocation_error_task_failed_message() -> None:
    error = InvocationError.TaskFailed("cancelled")
    assert isinstance(error, InvocationError)
    assert str(error) == "invocation task failed: cancelled"
    assert error.message == "cancelled"


def test_invocation_error_invalid_request_message() -> None:
    error = InvocationError.InvalidRequest("no model")
    assert isinstance(error, InvocationError)
    assert str(error) == "invalid invocation request: no model"


# ------------------------------------------------------------------- InvocationEvent
def test_invocation_event_agent_run_id_and_as_agent() -> None:
    run_id = RunId.new()
    agent = text_delta(run_id)
    event = InvocationEvent.Agent(agent)
    assert event.run_id() == run_id
    assert event.as_agent() is agent


def test_invocation_event_chat_has_no_run_id_and_is_not_agent() -> None:
    event = InvocationEvent.Chat(ChatStreamEvent.TextDelta(delta="x"))
    assert event.run_id() is None
    assert event.as_agent() is None


# ------------------------------------------------------------------------- EventKind
def test_event_kind_has_the_seed_variants() -> None:
    assert [k.name for k in EventKind] == [
        "Any", "RunStarted", "ContextBuilt", "ModelStarted", "TextDelta", "ToolCallStarted",
        "ToolCallDelta", "ToolCallCompleted", "ToolExecutionStarted", "ToolExecutionFinished",
        "AssistantMessageCommitted", "ToolMessageCommitted", "UsageRecorded", "RunCompleted",
        "RunFailed", "RunCancelled", "DoomLoopDetected", "CompactionCircuitOpened",
        "ChatStarted", "ChatTextDelta", "ChatToolCallStarted", "ChatToolCallArgumentsDelta",
        "ChatToolCallCompleted", "ChatFinished",
    ]


@pytest.mark.parametrize("kind", AGENT_VARIANTS, ids=lambda k: k.name)
def test_event_kind_matches_its_agent_variant_only(kind: EventKind) -> None:
    event = InvocationEvent.Agent(agent_variant(kind))
    assert kind.matches(event)
    assert EventKind.Any.matches(event)
    assert [k for k in EventKind if k.matches(event)] == [EventKind.Any, kind]


@pytest.mark.parametrize("kind", CHAT_VARIANTS, ids=lambda k: k.name)
def test_event_kind_matches_its_chat_variant_only(kind: EventKind) -> None:
    event = InvocationEvent.Chat(chat_variant(kind))
    assert kind.matches(event)
    assert [k for k in EventKind if k.matches(event)] == [EventKind.Any, kind]


def test_seed_event_kind_matches_agent_text_delta() -> None:
    ev = InvocationEvent.Agent(text_delta())
    assert EventKind.TextDelta.matches(ev)
    assert EventKind.Any.matches(ev)
    assert not EventKind.RunCompleted.matches(ev)
    assert not EventKind.ChatTextDelta.matches(ev)


def test_seed_event_kind_matches_agent_run_completed() -> None:
    ev = InvocationEvent.Agent(AgentEvent.RunCompleted(RunCompleted(
        run_id=RunId.new(), finish_reason=FinishReason.Stop, iterations=1,
        timestamp=datetime.now(UTC))))
    assert EventKind.RunCompleted.matches(ev)
    assert EventKind.Any.matches(ev)
    assert not EventKind.TextDelta.matches(ev)


def test_seed_event_kind_matches_chat_text_delta() -> None:
    ev = InvocationEvent.Chat(ChatStreamEvent.TextDelta(delta="x"))
    assert EventKind.ChatTextDelta.matches(ev)
    assert EventKind.Any.matches(ev)
    assert not EventKind.TextDelta.matches(ev)


def test_chat_and_agent_deltas_are_different_bus_kinds() -> None:
    assert text_delta().event.kind == "agent.llm.delta"
    assert ChatStreamEvent.TextDelta(delta="x").event.kind == "chat.text.delta"


# -------------------------------------------------------------------- SessionContext
def test_session_context_default_is_empty() -> None:
    ctx = SessionContext.default()
    assert ctx == SessionContext()
    assert (ctx.session_id, ctx.run_id) == (None, None)


def test_session_context_from_agent_event() -> None:
    run_id = RunId.new()
    sid = uuid.uuid4()
    started = AgentEvent.RunStarted(RunStarted(run_id=run_id, session_id=sid,
                                               provider="p", model="m",
                                               timestamp=datetime.now(UTC)))
    assert SessionContext.from_agent_event(started) == SessionContext(sid, run_id)
    # Only RunStarted carries the session, as in the seed.
    assert SessionContext.from_agent_event(text_delta(run_id)) == SessionContext(None, run_id)


# --------------------------------------------------------------------------- Control
def test_control_new_and_default() -> None:
    for control in (Control.new(), Control.default(), Control()):
        assert not control.is_cancelled()
        assert control.timeout() is None
        assert control.concurrency_limit() is None


def test_seed_control_cancel_sets_flag_and_shares_state() -> None:
    c = Control.new()
    assert not c.is_cancelled()
    c.cancel()
    assert c.is_cancelled()
    cloned = c.clone()
    assert cloned.is_cancelled(), "clone must share cancel state"


def test_control_set_timeout_and_timeout() -> None:
    c = Control.new()
    c.set_timeout(timedelta(milliseconds=1500))
    assert c.timeout() == timedelta(seconds=1.5)
    assert c.clone().timeout() == timedelta(seconds=1.5)


def test_control_set_concurrency_limit_and_concurrency_limit() -> None:
    c = Control.new()
    c.set_concurrency_limit(3)
    assert c.concurrency_limit() == 3
    assert c.clone().concurrency_limit() == 3


# --------------------------------------------------------------- RuntimeInvocation
def test_runtime_invocation_new_and_runtime() -> None:
    runtime = EchoRuntime()
    invocation = RuntimeInvocation.new(runtime)
    assert invocation.runtime() is runtime
    with pytest.raises(InvocationError.InvalidRequest, match="run"):
        RuntimeInvocation(object())


async def test_emit_builds_the_request_and_runs_it() -> None:
    runtime = EchoRuntime()
    invocation = RuntimeInvocation(runtime)
    sid = uuid.uuid4()
    seen: list[tuple[SessionContext, Control]] = []

    async def request(ctx: SessionContext, control: Control) -> EmitRequest:
        seen.append((ctx, control))
        return (EmitRequest.new(ProviderId.new("p"), ModelName.new("m"), "hi")
                .with_session_id(sid).with_client_request_id("cid"))

    output = await invocation.emit(request)
    assert output["output"] == "HI"
    [run_request] = runtime.requests
    assert run_request.session_id == sid and run_request.client_request_id == "cid"
    [(ctx, control)] = seen
    assert ctx == SessionContext.default()
    assert not control.is_cancelled()
    kinds = [e.kind for e in reversed(invocation.bus.history(limit=None))]
    assert kinds == ["agent.run.started", "agent.run.completed"]
    started = invocation.bus.history(kinds="agent.run.started")[0]
    assert started.scope.run_id == output["run_id"]
    assert started.scope.session_id == str(sid)
    assert started.scope.agent == "echo"
    await invocation.bus.close()


async def test_emit_cancelled_in_the_request_function_is_task_failed() -> None:
    runtime = EchoRuntime()
    invocation = RuntimeInvocation(runtime)

    def request(ctx: SessionContext, control: Control) -> EmitRequest:
        control.cancel()
        return EmitRequest.new("p", "m", "hi")

    with pytest.raises(InvocationError.TaskFailed, match="invocation task failed: cancelled"):
        await invocation.emit(request)
    assert runtime.requests == []


async def test_emit_with_a_cancelled_control_fails_before_asking() -> None:
    invocation = RuntimeInvocation(EchoRuntime())
    control = Control.new()
    control.cancel()
    asked: list[int] = []

    def request(ctx: SessionContext, c: Control) -> EmitRequest:
        asked.append(1)
        return EmitRequest.new("p", "m", "hi")

    with pytest.raises(InvocationError.TaskFailed):
        await invocation.emit(request, control=control)
    assert asked == []


async def test_emit_runtime_error_is_invocation_error_runtime() -> None:
    class Failing:
        async def run(self, request: RunRequest) -> None:
            raise ValueError("model overloaded")

    invocation = RuntimeInvocation(Failing())
    with pytest.raises(InvocationError.Runtime, match="model overloaded") as info:
        await invocation.emit(lambda ctx, c: EmitRequest.new("p", "m", "hi"))
    assert isinstance(info.value.__cause__, ValueError)
    [failed] = invocation.bus.history(kinds="agent.run.failed")
    assert failed.payload["error_type"] == "ValueError"


async def test_emit_invalid_request_is_invocation_error_invalid_request() -> None:
    invocation = RuntimeInvocation(EchoRuntime())
    with pytest.raises(InvocationError.InvalidRequest, match="must return an EmitRequest"):
        await invocation.emit(lambda ctx, c: "hi")  # type: ignore[arg-type,return-value]
    with pytest.raises(InvocationError.InvalidRequest, match="model must be a non-empty"):
        await invocation.emit(lambda ctx, c: EmitRequest.new("p", "", "hi"))


async def test_emit_timeout_set_by_the_request_function_is_enforced() -> None:
    class Slow:
        async def run(self, request: RunRequest) -> None:
            await asyncio.sleep(30)

    invocation = RuntimeInvocation(Slow())

    def request(ctx: SessionContext, control: Control) -> EmitRequest:
        control.set_timeout(timedelta(milliseconds=50))
        return EmitRequest.new("p", "m", "hi")

    with pytest.raises(InvocationError.TaskFailed, match="timed out"):
        await invocation.emit(request)
    [cancelled] = invocation.bus.history(kinds="agent.run.cancelled")
    assert cancelled.payload["reason"] == "timeout"


async def test_emit_run_is_a_trace(make: HarnessFactory) -> None:
    harness = make()
    invocation = RuntimeInvocation(EchoRuntime(), bus=harness.bus)
    await invocation.emit(lambda ctx, c: EmitRequest.new("p", "m", "hi"))
    span = harness.one("invoke_agent echo")
    assert (span.attributes or {})["agentbus.run.status"] == "completed"


# -------------------------------------------------------------------------- listeners
async def test_on_returns_a_handle_and_calls_the_handler() -> None:
    invocation = RuntimeInvocation(EchoRuntime())
    got: list[tuple[InvocationEvent, SessionContext, Control]] = []

    async def handler(event: InvocationEvent, ctx: SessionContext, control: Control) -> None:
        got.append((event, ctx, control))

    handle = await invocation.on(EventKind.RunStarted, handler)
    assert isinstance(handle, InvocationHandle)
    sid = uuid.uuid4()
    await invocation.emit(lambda ctx, c: EmitRequest.new("p", "m", "hi").with_session_id(sid))
    await wait_until(lambda: len(got) == 1)
    event, ctx, control = got[0]
    assert EventKind.RunStarted.matches(event)
    assert ctx.session_id == sid and ctx.run_id == event.run_id()
    assert isinstance(control, Control)
    handle.abort()
    await invocation.bus.close()


async def test_seed_on_only_handles_matching_events() -> None:
    bus = EventBus()
    counter: list[int] = []

    async def handler(event: InvocationEvent, ctx: SessionContext, control: Control) -> None:
        counter.append(1)

    handle = spawn_listener(bus, EventKind.TextDelta, Control.new(), handler)
    witness: list[int] = []
    keep = spawn_listener(bus, EventKind.Any, Control.new(), lambda e, c, k: witness.append(1))
    await bus.publish(text_delta().event)
    await bus.publish(run_started().event)
    await wait_until(lambda: len(witness) == 2)
    await wait_until(lambda: len(counter) >= 1)
    assert len(counter) == 1, "only the matching TextDelta event should be handled"
    handle.abort()
    keep.abort()
    await bus.close()


async def test_seed_invocation_handle_abort_stops_listener() -> None:
    bus = EventBus()
    counter: list[int] = []
    handle = spawn_listener(bus, EventKind.Any, Control.new(), lambda e, c, k: counter.append(1))
    witness: list[int] = []
    keep = spawn_listener(bus, EventKind.Any, Control.new(), lambda e, c, k: witness.append(1))
    await bus.publish(run_started().event)
    await wait_until(lambda: len(counter) >= 1)
    before = len(counter)
    handle.abort()
    await asyncio.wait_for(handle.wait(), 10)
    assert handle.is_finished(), "listener should finish after abort"
    await bus.publish(run_started().event)
    await wait_until(lambda: len(witness) == 2)
    assert len(counter) == before, "no events should be handled after abort"
    keep.abort()
    await bus.close()


async def test_dropping_the_invocation_handle_stops_its_listener() -> None:
    bus = EventBus()
    counter: list[int] = []
    witness: list[int] = []
    keep = spawn_listener(bus, EventKind.Any, Control.new(), lambda e, c, k: witness.append(1))
    handle: InvocationHandle | None = spawn_listener(
        bus, EventKind.Any, Control.new(), lambda e, c, k: counter.append(1))
    await bus.publish(run_started().event)
    await wait_until(lambda: counter == [1] and witness == [1])
    del handle  # the seed's Drop
    gc.collect()
    await bus.publish(run_started().event)
    await wait_until(lambda: len(witness) == 2)
    assert counter == [1]
    keep.abort()
    await bus.close()


async def test_cancel_in_a_handler_stops_its_listener() -> None:
    bus = EventBus()
    counter: list[int] = []

    def handler(event: InvocationEvent, ctx: SessionContext, control: Control) -> None:
        counter.append(1)
        control.cancel()

    handle = spawn_listener(bus, EventKind.Any, Control.new(), handler)
    await bus.publish(run_started().event)
    await asyncio.wait_for(handle.wait(), 10)
    await bus.publish(run_started().event)
    assert counter == [1]
    await bus.close()


async def test_a_chat_listener_gets_chat_deltas_not_agent_deltas() -> None:
    bus = EventBus()
    chat: list[InvocationEvent] = []
    agent: list[InvocationEvent] = []
    chat_handle = spawn_listener(bus, EventKind.ChatTextDelta, Control.new(),
                                 lambda e, c, k: chat.append(e))
    agent_handle = spawn_listener(bus, EventKind.TextDelta, Control.new(),
                                  lambda e, c, k: agent.append(e))
    await bus.publish(ChatStreamEvent.TextDelta(delta="from the provider").event)
    await bus.publish(text_delta().event)
    await wait_until(lambda: len(chat) == 1 and len(agent) == 1)
    assert chat[0].as_chat() is not None
    assert chat[0].as_chat().payload == {"delta": "from the provider"}  # type: ignore[union-attr]
    assert agent[0].as_agent() is not None
    chat_handle.abort()
    agent_handle.abort()
    await bus.close()


async def test_doom_loop_and_compaction_circuit_events_reach_their_listeners() -> None:
    bus = EventBus()
    got: list[EventKind] = []
    handles = [spawn_listener(bus, kind, Control.new(),
                              lambda e, c, k: got.append(e.as_agent().kind))  # type: ignore[union-attr]
               for kind in (EventKind.DoomLoopDetected, EventKind.CompactionCircuitOpened)]
    await bus.publish(agent_variant(EventKind.DoomLoopDetected).event)
    await bus.publish(agent_variant(EventKind.CompactionCircuitOpened).event)
    await wait_until(lambda: len(got) == 2)
    assert sorted(k.name for k in got) == ["CompactionCircuitOpened", "DoomLoopDetected"]
    for handle in handles:
        handle.abort()
    await bus.close()
