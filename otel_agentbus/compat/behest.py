"""Seed 002's invocation API (a Rust runtime's ``emit`` / ``on`` / ``Control``), as Python
code written against it calls it, running on :mod:`otel_agentbus.runtime.invocation`.

The Rust shapes translate the obvious way: ``EmitRequest::new(p, m, "hi")`` is
``EmitRequest.new(p, m, "hi")`` (or ``EmitRequest(p, m, "hi")``) and its builders return a
new request; enum variants are class attributes (``EventKind.ChatTextDelta``,
``InvocationError.TaskFailed``, ``AgentEvent.TextDelta(...)``); ``Result`` errors are
raised :class:`InvocationError` s; ``Duration`` is a ``timedelta`` (seconds as a number are
accepted too); ``Uuid`` is ``uuid.UUID``; ``Value::Null`` is ``None``; dropping an
:class:`InvocationHandle` aborts its listener, as the seed's ``Drop`` does.

Every run ``emit`` starts is a run of the project's invocation API, so it is a trace; the
:class:`Control` a request function or handler gets is enforced there (``cancel`` stops the
run and the listener, ``set_timeout`` is a deadline, ``set_concurrency_limit`` a limit),
where the seed only stores them. The runtime behind :class:`RuntimeInvocation` is any object
with ``run(run_request)`` (sync or async), the seed's ``AgentRuntime::run``.
"""

from __future__ import annotations

import enum
import inspect
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final, TypeAlias

from ..bus import EventBus
from ..events import Event, Scope, thaw_json
from ..kinds import (
    CHAT_FINISHED,
    CHAT_STARTED,
    CHAT_TEXT_DELTA,
    CHAT_TOOL_CALL_ARGUMENTS_DELTA,
    CHAT_TOOL_CALL_COMPLETED,
    CHAT_TOOL_CALL_STARTED,
    COMPACTION_CIRCUIT_OPENED,
    CONTEXT_BUILT,
    DOOM_LOOP_DETECTED,
    LLM_DELTA,
    LLM_REQUEST,
    LLM_TOOL_CALL_COMPLETED,
    LLM_TOOL_CALL_DELTA,
    LLM_TOOL_CALL_STARTED,
    LLM_USAGE,
    MESSAGE_ASSISTANT_COMMITTED,
    MESSAGE_TOOL_COMMITTED,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_STARTED,
    TOOL_CALL_COMPLETED,
    TOOL_CALL_STARTED,
)
from ..runtime import invocation as core

__all__ = [
    "AgentEvent",
    "ChatStreamEvent",
    "Control",
    "EmitRequest",
    "EventKind",
    "FinishReason",
    "InvocationError",
    "InvocationEvent",
    "InvocationHandle",
    "ModelName",
    "ProviderId",
    "RunCompleted",
    "RunId",
    "RunRequest",
    "RunStarted",
    "RuntimeInvocation",
    "SessionContext",
    "TextDelta",
    "ToolChoice",
    "spawn_listener",
]


# --------------------------------------------------------------------- small value types
class ProviderId(str):
    """A provider's id (``ProviderId::new("p")`` is ``ProviderId.new("p")``)."""

    __slots__ = ()

    @classmethod
    def new(cls, value: str) -> ProviderId:
        return cls(value)


class ModelName(str):
    """A model's name (``ModelName::new("m")``)."""

    __slots__ = ()

    @classmethod
    def new(cls, value: str) -> ModelName:
        return cls(value)


class RunId(str):
    """A run's id; ``RunId.new()`` makes a fresh one (a UUID's text)."""

    __slots__ = ()

    @classmethod
    def new(cls) -> RunId:
        return cls(str(uuid.uuid4()))


class ToolChoice(enum.StrEnum):
    """How the model may choose tools (the seed shows ``Auto``, what emit asks for)."""

    Auto = "auto"


class FinishReason(enum.StrEnum):
    """Why a run finished (the seed shows ``Stop``)."""

    Stop = "stop"


# --------------------------------------------------------------------------- errors
class InvocationError(Exception):
    """Everything ``emit`` and ``on`` raise; the seed's variants are subclasses:
    ``InvocationError.Runtime``, ``.TaskFailed`` and ``.InvalidRequest``."""

    Runtime: ClassVar[type[InvocationRuntimeError]]
    TaskFailed: ClassVar[type[InvocationTaskFailed]]
    InvalidRequest: ClassVar[type[InvocationInvalidRequest]]


class InvocationRuntimeError(InvocationError):
    """The runtime's own error (``#[error(transparent)]``): the message is the error's; the
    error itself is ``.error`` and ``__cause__``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error) or type(error).__name__)
        self.error = error


class InvocationTaskFailed(InvocationError):
    """The invocation did not run to its end: cancelled, timed out."""

    def __init__(self, message: str) -> None:
        super().__init__(f"invocation task failed: {message}")
        self.message = message


class InvocationInvalidRequest(InvocationError):
    """The request (or an ``on`` call) cannot work; the message names the problem."""

    def __init__(self, message: str) -> None:
        super().__init__(f"invalid invocation request: {message}")
        self.message = message


InvocationError.Runtime = InvocationRuntimeError
InvocationError.TaskFailed = InvocationTaskFailed
InvocationError.InvalidRequest = InvocationInvalidRequest


# ------------------------------------------------------------------------- requests
@dataclass(frozen=True, slots=True)
class RunRequest:
    """What a runtime's ``run`` gets (seed 002's ``RunRequest``)."""

    session_id: uuid.UUID | None
    run_id: RunId | None
    provider: ProviderId
    model: ModelName
    input: str
    metadata: Any
    tool_choice: ToolChoice
    client_request_id: str | None


@dataclass(frozen=True, slots=True)
class EmitRequest:
    """One run to emit. The ``with_*`` builders return a changed copy (the seed's
    ``#[must_use] fn with_x(mut self, ..) -> Self``); ``metadata`` starts as ``None``."""

    provider: ProviderId | str
    model: ModelName | str
    input: str
    session_id: uuid.UUID | None = None
    client_request_id: str | None = None
    metadata: Any = None

    @classmethod
    def new(cls, provider: ProviderId | str, model: ModelName | str, input: str) -> EmitRequest:
        return cls(provider, model, str(input))

    def with_session_id(self, session_id: uuid.UUID) -> EmitRequest:
        if not isinstance(session_id, uuid.UUID):
            raise InvocationError.InvalidRequest(
                f"session_id must be a uuid.UUID, got {type(session_id).__name__}")
        return replace(self, session_id=session_id)

    def with_client_request_id(self, id: str) -> EmitRequest:
        return replace(self, client_request_id=str(id))

    def with_metadata(self, metadata: Any) -> EmitRequest:
        return replace(self, metadata=metadata)

    def into_run_request(self) -> RunRequest:
        return RunRequest(
            session_id=self.session_id,
            run_id=None,
            provider=ProviderId(self.provider),
            model=ModelName(self.model),
            input=self.input,
            metadata=self.metadata,
            tool_choice=ToolChoice.Auto,
            client_request_id=self.client_request_id,
        )


def _check_request(request: object) -> EmitRequest:
    if not isinstance(request, EmitRequest):
        raise InvocationError.InvalidRequest(
            f"the request function must return an EmitRequest, got {type(request).__name__}")
    for name in ("provider", "model"):
        value = getattr(request, name)
        if not isinstance(value, str) or not value:
            raise InvocationError.InvalidRequest(f"{name} must be a non-empty str, got {value!r}")
    if not isinstance(request.input, str):
        raise InvocationError.InvalidRequest(
            f"input must be a str, got {type(request.input).__name__}")
    return request


# --------------------------------------------------------------------------- events
class EventKind(enum.Enum):
    """What ``on`` listens to; each value is the bus kind it stands for.

    The agent's own stream (``TextDelta``, ``ToolCallStarted``, ...) and the provider's chat
    stream (``ChatTextDelta``, ``ChatToolCallStarted``, ...) are different kinds on the bus
    (``agent.*`` and ``chat.*``), so a listener of one never gets the other.
    """

    Any = "*"
    RunStarted = RUN_STARTED
    ContextBuilt = CONTEXT_BUILT
    ModelStarted = LLM_REQUEST
    TextDelta = LLM_DELTA
    ToolCallStarted = LLM_TOOL_CALL_STARTED
    ToolCallDelta = LLM_TOOL_CALL_DELTA
    ToolCallCompleted = LLM_TOOL_CALL_COMPLETED
    ToolExecutionStarted = TOOL_CALL_STARTED
    ToolExecutionFinished = TOOL_CALL_COMPLETED
    AssistantMessageCommitted = MESSAGE_ASSISTANT_COMMITTED
    ToolMessageCommitted = MESSAGE_TOOL_COMMITTED
    UsageRecorded = LLM_USAGE
    RunCompleted = RUN_COMPLETED
    RunFailed = RUN_FAILED
    RunCancelled = RUN_CANCELLED
    DoomLoopDetected = DOOM_LOOP_DETECTED
    CompactionCircuitOpened = COMPACTION_CIRCUIT_OPENED
    ChatStarted = CHAT_STARTED
    ChatTextDelta = CHAT_TEXT_DELTA
    ChatToolCallStarted = CHAT_TOOL_CALL_STARTED
    ChatToolCallArgumentsDelta = CHAT_TOOL_CALL_ARGUMENTS_DELTA
    ChatToolCallCompleted = CHAT_TOOL_CALL_COMPLETED
    ChatFinished = CHAT_FINISHED

    @property
    def is_chat(self) -> bool:
        return self.value.startswith("chat.")

    def matches(self, event: InvocationEvent) -> bool:
        """True for every event when ``Any``, else for events of this kind only."""
        return self is EventKind.Any or event.event.kind == self.value


AGENT_KINDS: Final = frozenset(k.value for k in EventKind if k.value.startswith("agent."))
CHAT_KINDS: Final = frozenset(k.value for k in EventKind if k.is_chat)
_BY_VALUE: Final = {k.value: k for k in EventKind}


def _json_field(value: object) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID | datetime):
        return str(value)
    return value


def _time_ns(value: object) -> int | None:
    if isinstance(value, datetime):
        stamp = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(stamp.timestamp() * 1_000_000) * 1000
    return None


def _fields_of(data: object) -> dict[str, Any]:
    if is_dataclass(data) and not isinstance(data, type):
        return {f: getattr(data, f) for f in asdict(data)}
    if isinstance(data, Mapping):
        return dict(data)
    raise InvocationError.InvalidRequest(
        f"event data must be a dataclass or a mapping, got {type(data).__name__}")


def _build(kind: EventKind, fields: dict[str, Any], scope: Scope) -> Event:
    time_ns = _time_ns(fields.pop("timestamp", None))
    payload = {name: _json_field(value) for name, value in fields.items() if value is not None}
    return Event(kind.value, payload, scope=scope, time_ns=time_ns)


@dataclass(frozen=True, slots=True)
class RunStarted:
    run_id: RunId | str
    session_id: uuid.UUID | str
    provider: ProviderId | str
    model: ModelName | str
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class RunCompleted:
    run_id: RunId | str
    finish_reason: FinishReason | str
    iterations: int
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class TextDelta:
    run_id: RunId | str
    delta: str
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))


EventData: TypeAlias = object
"""A variant's data: a dataclass (``RunStarted(...)``) or a mapping, with a ``run_id``."""


class AgentEvent:
    """An event of the agent's run (the seed's ``AgentEvent``): a bus event of an
    ``agent.*`` kind. Build one per variant, ``AgentEvent.TextDelta(TextDelta(...))``; the
    bus event is ``.event`` (publish it), its kind ``.kind``."""

    __slots__ = ("event",)

    def __init__(self, event: Event) -> None:
        if event.kind not in AGENT_KINDS:
            raise InvocationError.InvalidRequest(
                f"{event.kind!r} is not a kind of the agent family ({sorted(AGENT_KINDS)})")
        self.event = event

    @classmethod
    def of(cls, kind: EventKind, data: EventData) -> AgentEvent:
        """The variant ``kind`` with ``data``; ``AgentEvent.RunStarted(x)`` and the other
        variant constructors call this."""
        if kind.value not in AGENT_KINDS:
            raise InvocationError.InvalidRequest(f"{kind.name} is not an agent event kind")
        fields = _fields_of(data)
        run_id = fields.pop("run_id", None)
        if not run_id:
            raise InvocationError.InvalidRequest(f"{kind.name} needs a run_id")
        session = fields.pop("session_id", None) if kind is EventKind.RunStarted else None
        scope = Scope(run_id=str(run_id), session_id=None if session is None else str(session))
        return cls(_build(kind, fields, scope))

    @property
    def kind(self) -> EventKind:
        return _BY_VALUE[self.event.kind]

    @property
    def payload(self) -> dict[str, Any]:
        return dict(thaw_json(self.event.payload))

    def run_id(self) -> RunId:
        return RunId(self.event.scope.run_id or "")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AgentEvent) and other.event == self.event

    def __hash__(self) -> int:
        return hash(self.event)

    def __repr__(self) -> str:
        return f"AgentEvent.{self.kind.name}(run_id={self.event.scope.run_id!r})"

    # One constructor per variant of the seed's AgentEvent.
    @classmethod
    def RunStarted(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.RunStarted, data)

    @classmethod
    def ContextBuilt(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.ContextBuilt, data)

    @classmethod
    def ModelStarted(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.ModelStarted, data)

    @classmethod
    def TextDelta(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.TextDelta, data)

    @classmethod
    def ToolCallStarted(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.ToolCallStarted, data)

    @classmethod
    def ToolCallDelta(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.ToolCallDelta, data)

    @classmethod
    def ToolCallCompleted(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.ToolCallCompleted, data)

    @classmethod
    def ToolExecutionStarted(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.ToolExecutionStarted, data)

    @classmethod
    def ToolExecutionFinished(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.ToolExecutionFinished, data)

    @classmethod
    def AssistantMessageCommitted(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.AssistantMessageCommitted, data)

    @classmethod
    def ToolMessageCommitted(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.ToolMessageCommitted, data)

    @classmethod
    def UsageRecorded(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.UsageRecorded, data)

    @classmethod
    def RunCompleted(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.RunCompleted, data)

    @classmethod
    def RunFailed(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.RunFailed, data)

    @classmethod
    def RunCancelled(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.RunCancelled, data)

    @classmethod
    def DoomLoopDetected(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.DoomLoopDetected, data)

    @classmethod
    def CompactionCircuitOpened(cls, data: EventData) -> AgentEvent:
        return cls.of(EventKind.CompactionCircuitOpened, data)


class ChatStreamEvent:
    """An event of a provider's chat stream (the seed's ``ChatStreamEvent``): a bus event
    of a ``chat.*`` kind, e.g. ``ChatStreamEvent.TextDelta(delta="x")``."""

    __slots__ = ("event",)

    def __init__(self, event: Event) -> None:
        if event.kind not in CHAT_KINDS:
            raise InvocationError.InvalidRequest(
                f"{event.kind!r} is not a kind of the chat family ({sorted(CHAT_KINDS)})")
        self.event = event

    @classmethod
    def of(cls, kind: EventKind, scope: Scope | None = None, **fields: Any) -> ChatStreamEvent:
        if not kind.is_chat:
            raise InvocationError.InvalidRequest(f"{kind.name} is not a chat event kind")
        return cls(_build(kind, fields, scope or Scope()))

    @property
    def kind(self) -> EventKind:
        return _BY_VALUE[self.event.kind]

    @property
    def payload(self) -> dict[str, Any]:
        return dict(thaw_json(self.event.payload))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChatStreamEvent) and other.event == self.event

    def __hash__(self) -> int:
        return hash(self.event)

    def __repr__(self) -> str:
        return f"ChatStreamEvent.{self.kind.name}({self.payload!r})"

    @classmethod
    def Started(cls, scope: Scope | None = None, **fields: Any) -> ChatStreamEvent:
        return cls.of(EventKind.ChatStarted, scope, **fields)

    @classmethod
    def TextDelta(cls, scope: Scope | None = None, **fields: Any) -> ChatStreamEvent:
        return cls.of(EventKind.ChatTextDelta, scope, **fields)

    @classmethod
    def ToolCallStarted(cls, scope: Scope | None = None, **fields: Any) -> ChatStreamEvent:
        return cls.of(EventKind.ChatToolCallStarted, scope, **fields)

    @classmethod
    def ToolCallArgumentsDelta(cls, scope: Scope | None = None,
                               **fields: Any) -> ChatStreamEvent:
        return cls.of(EventKind.ChatToolCallArgumentsDelta, scope, **fields)

    @classmethod
    def ToolCallCompleted(cls, scope: Scope | None = None, **fields: Any) -> ChatStreamEvent:
        return cls.of(EventKind.ChatToolCallCompleted, scope, **fields)

    @classmethod
    def Finished(cls, scope: Scope | None = None, **fields: Any) -> ChatStreamEvent:
        return cls.of(EventKind.ChatFinished, scope, **fields)


class InvocationEvent:
    """What a listener gets: ``InvocationEvent.Agent(agent_event)`` or
    ``InvocationEvent.Chat(chat_event)``; the bus event is ``.event``."""

    __slots__ = ("value",)

    def __init__(self, value: AgentEvent | ChatStreamEvent) -> None:
        self.value = value

    @classmethod
    def Agent(cls, event: AgentEvent) -> InvocationEvent:
        if not isinstance(event, AgentEvent):
            raise InvocationError.InvalidRequest(
                f"InvocationEvent.Agent takes an AgentEvent, got {type(event).__name__}")
        return cls(event)

    @classmethod
    def Chat(cls, event: ChatStreamEvent) -> InvocationEvent:
        if not isinstance(event, ChatStreamEvent):
            raise InvocationError.InvalidRequest(
                f"InvocationEvent.Chat takes a ChatStreamEvent, got {type(event).__name__}")
        return cls(event)

    @classmethod
    def from_event(cls, event: Event) -> InvocationEvent:
        """Wrap a bus event of the agent or chat family."""
        if event.kind in CHAT_KINDS:
            return cls(ChatStreamEvent(event))
        return cls(AgentEvent(event))

    @property
    def event(self) -> Event:
        return self.value.event

    def run_id(self) -> RunId | None:
        return self.value.run_id() if isinstance(self.value, AgentEvent) else None

    def as_agent(self) -> AgentEvent | None:
        return self.value if isinstance(self.value, AgentEvent) else None

    def as_chat(self) -> ChatStreamEvent | None:
        return self.value if isinstance(self.value, ChatStreamEvent) else None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InvocationEvent) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        family = "Agent" if isinstance(self.value, AgentEvent) else "Chat"
        return f"InvocationEvent.{family}({self.value!r})"


def _uuid_or_text(value: str | None) -> uuid.UUID | str | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return value


@dataclass(frozen=True, slots=True)
class SessionContext:
    """The session and run an event belongs to (seed 002's ``SessionContext``)."""

    session_id: uuid.UUID | str | None = None
    run_id: RunId | None = None

    @classmethod
    def default(cls) -> SessionContext:
        return cls()

    @classmethod
    def from_agent_event(cls, event: AgentEvent) -> SessionContext:
        """As in the seed, only ``RunStarted`` carries the session id."""
        session = event.event.scope.session_id if event.kind is EventKind.RunStarted else None
        return cls(_uuid_or_text(session), event.run_id())


# ---------------------------------------------------------------------------- control
class Control:
    """Cancel flag, timeout and concurrency limit; ``clone()`` shares them (the seed's
    ``Arc``). Enforced by the project's invocation API (see the module docstring)."""

    __slots__ = ("core",)

    def __init__(self, core_control: core.Control | None = None) -> None:
        self.core = core_control if core_control is not None else core.Control()

    @classmethod
    def new(cls) -> Control:
        return cls()

    @classmethod
    def default(cls) -> Control:
        return cls()

    def clone(self) -> Control:
        return Control(self.core)

    def __copy__(self) -> Control:
        return self.clone()

    def cancel(self) -> None:
        self.core.cancel()

    def is_cancelled(self) -> bool:
        return self.core.is_cancelled

    def set_timeout(self, timeout: timedelta | float) -> None:
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self.core.set_timeout(seconds)

    def timeout(self) -> timedelta | None:
        seconds = self.core.timeout
        return None if seconds is None else timedelta(seconds=seconds)

    def set_concurrency_limit(self, limit: int) -> None:
        self.core.set_concurrency_limit(limit)

    def concurrency_limit(self) -> int | None:
        return self.core.concurrency_limit

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Control) and other.core is self.core

    def __hash__(self) -> int:
        return id(self.core)

    def __repr__(self) -> str:
        return f"behest.{self.core!r}"


# ---------------------------------------------------------------------------- listeners
class InvocationHandle:
    """A running listener. ``abort()`` (or ``close()``, or leaving a ``with`` block) stops
    it; so does dropping the handle, like the seed's ``Drop``."""

    __slots__ = ("__weakref__", "_listener")

    def __init__(self, listener: core.ListenerHandle) -> None:
        self._listener = listener

    def abort(self) -> None:
        self._listener.abort()

    def close(self) -> None:
        self._listener.close()

    def is_finished(self) -> bool:
        return self._listener.is_finished

    async def wait(self) -> None:
        """Until the listener has stopped and its running handler calls ended."""
        await self._listener.wait()

    def __enter__(self) -> InvocationHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Handler: TypeAlias = Callable[[InvocationEvent, SessionContext, Control],
                              Awaitable[object] | object]
RequestFunction: TypeAlias = Callable[[SessionContext, Control],
                                      Awaitable[EmitRequest] | EmitRequest]
_FAMILY_KINDS: Final = AGENT_KINDS | CHAT_KINDS


def spawn_listener(receiver: EventBus, kind: EventKind, control: Control,
                   handler: Handler) -> InvocationHandle:
    """Call ``handler(event, ctx, control)`` for each event of ``kind`` on ``receiver``
    (the seed's broadcast receiver is the runtime's bus here). Needs a running loop."""
    if not isinstance(kind, EventKind):
        raise InvocationError.InvalidRequest(f"kind must be an EventKind, got {kind!r}")
    if not callable(handler):
        raise InvocationError.InvalidRequest(f"handler must be callable, got {handler!r}")

    async def call(event: Event, _ctx: core.SessionContext, _control: core.Control) -> None:
        wrapped = InvocationEvent.from_event(event)
        agent = wrapped.as_agent()
        ctx = SessionContext.from_agent_event(agent) if agent is not None else SessionContext()
        result = handler(wrapped, ctx, control)
        if inspect.isawaitable(result):
            await result

    kinds = _FAMILY_KINDS if kind is EventKind.Any else kind.value
    return InvocationHandle(core.Invocation(receiver).on(
        kinds, call, control=control.core))


class RuntimeInvocation:
    """``emit`` runs on a runtime and listen ``on`` its events (seed 002).

    ``runtime`` is any object with ``run(run_request)``; its bus is ``bus=``, else the
    runtime's ``bus`` attribute, else a new :class:`~otel_agentbus.EventBus`. A run's agent
    name (``gen_ai.agent.name``) is ``agent=``, else the runtime's ``name``, else "agent".
    """

    def __init__(self, runtime: Any, *, bus: EventBus | None = None,
                 agent: str | None = None) -> None:
        run = getattr(runtime, "run", None)
        if not callable(run):
            raise InvocationError.InvalidRequest(
                f"runtime must have a run(run_request) method, got {type(runtime).__name__}")
        if bus is None:
            found = getattr(runtime, "bus", None)
            bus = found if isinstance(found, EventBus) else EventBus()
        self._runtime = runtime
        self.bus = bus
        self._agent = agent or str(getattr(runtime, "name", "") or "agent")
        self._invocation = core.Invocation(bus)

    @classmethod
    def new(cls, runtime: Any, **options: Any) -> RuntimeInvocation:
        return cls(runtime, **options)

    def runtime(self) -> Any:
        return self._runtime

    async def emit(self, f: RequestFunction, *, control: Control | None = None) -> Any:
        """Ask ``f(ctx, control)`` for the request, run it, return the runtime's output.

        Raises ``InvocationError.TaskFailed`` when the control is cancelled (before, during
        or after ``f``) or its timeout passes, ``InvocationError.InvalidRequest`` for a
        request that cannot run, ``InvocationError.Runtime`` when the runtime raises.
        """
        control = Control() if control is None else control
        if control.is_cancelled():
            raise InvocationError.TaskFailed("cancelled")
        result = f(SessionContext(), control)
        request = await result if inspect.isawaitable(result) else result
        if control.is_cancelled():
            raise InvocationError.TaskFailed("cancelled")
        run_request = _check_request(request).into_run_request()
        runtime = self._runtime

        async def run(_input: object, _ctx: core.SessionContext, _control: core.Control) -> Any:
            output = runtime.run(run_request)
            return await output if inspect.isawaitable(output) else output

        summary = {"provider": str(run_request.provider), "model": str(run_request.model),
                   "input": run_request.input, "metadata": run_request.metadata,
                   "client_request_id": run_request.client_request_id}
        session = run_request.session_id
        try:
            return await self._invocation.emit(
                run, {k: v for k, v in summary.items() if v is not None},
                control=control.core, agent=self._agent,
                session_id=None if session is None else str(session))
        except core.InvocationTimeout as error:
            raise InvocationError.TaskFailed(f"timed out after {error.timeout}s") from error
        except core.InvocationCancelled as error:
            raise InvocationError.TaskFailed(error.reason) from error
        except InvocationError:
            raise
        except Exception as error:
            raise InvocationError.Runtime(error) from error

    async def on(self, kind: EventKind, f: Handler) -> InvocationHandle:
        """Call ``f(event, ctx, control)`` for each event of ``kind`` until the handle is
        aborted, closed or dropped, or ``control.cancel()`` is called in a handler."""
        return spawn_listener(self.bus, kind, Control(), f)
