"""Instrument existing agents without rewriting them: decorators and context managers.

``@agent`` makes a function one run (through :class:`~otel_agentbus.runs.RunScope`),
``@node`` a graph-node loop or one iteration of it, ``@llm_call`` an LLM call and ``@tool``
a tool call. Each has a context-manager twin (``agent_run``, ``node_loop``,
``llm_call_scope``, ``tool_call``) for code that is not shaped as one function. They work
on sync and async functions, generators and async generators, publish the lifecycle
events the telemetry mirror turns into spans, and make that span the current
OpenTelemetry span while the code runs, so spans other instrumentation starts inside
become its children.

Generators: every step of a decorated (async) generator runs inside a
:class:`contextvars.Context` of its own, entered for the step and left before the value
is handed to the consumer. The span is attached in that context and detached in it, so
nothing is ever attached in the consumer's context across a ``yield``: closing the
generator early, from another task or by garbage collection, never logs "Failed to
detach context" and never leaves a stale span current in the consumer.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import math
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Mapping
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Final, Protocol, Self, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry.trace import NonRecordingSpan as _NonRecordingSpan
from opentelemetry.trace import set_span_in_context as _set_span_in_context

from .bus import EventBus
from .events import (
    EMPTY_SCOPE,
    Event,
    JSONValue,
    Scope,
    Severity,
    Source,
    _freeze,
    _library_event,
    new_event_id,
)
from .recording import NoScopeError, decision, outcome, problem
from .runs import _CURRENT_RUN, RunHandle, RunScope, current_run
from .telemetry.content import REDACTED, is_secret_key
from .telemetry.context import context_of

__all__ = [
    "LLMCall",
    "NoBusError",
    "NoScopeError",
    "NodeIteration",
    "NodeLoop",
    "ToolCall",
    "agent",
    "agent_run",
    "current_llm_call",
    "current_node_loop",
    "current_tool_call",
    "decision",
    "get_default_bus",
    "iteration",
    "json_data",
    "llm_call",
    "llm_call_scope",
    "node",
    "node_loop",
    "outcome",
    "problem",
    "set_default_bus",
    "tool",
    "tool_call",
]

logger = logging.getLogger("otel_agentbus.instrument")

F = TypeVar("F", bound=Callable[..., Any])
H_co = TypeVar("H_co", covariant=True)

_MAX_DEPTH: Final = 64
_CANCELLED: Final = (asyncio.CancelledError, GeneratorExit)

_default_bus: EventBus | None = None
_new_object = object.__new__
_NO_ARGUMENTS: Final = _freeze({}, "payload", 0)
"""The frozen ``{}`` every call without arguments shares."""
_attach = otel_context.attach
_detach = otel_context.detach


class NoBusError(RuntimeError):
    """Instrumented code ran with no bus to publish to."""


def set_default_bus(bus: EventBus | None) -> None:
    """The bus instrumented code publishes to when it is given none and runs in no run.

    Call it once at start-up (``None`` clears it); inside a run, children use the run's bus.
    """
    global _default_bus
    if bus is not None and not isinstance(bus, EventBus):
        raise TypeError(f"set_default_bus() takes an otel_agentbus.EventBus, got {bus!r}")
    _default_bus = bus


def get_default_bus() -> EventBus | None:
    """The bus set with :func:`set_default_bus`, if any."""
    return _default_bus


def _resolve_bus(explicit: EventBus | None, what: str) -> EventBus:
    if explicit is not None:
        return explicit
    run = current_run()
    if run is not None:
        return run.bus
    if _default_bus is not None:
        return _default_bus
    raise NoBusError(
        f"{what} has no EventBus to publish to: pass bus=... or call "
        "otel_agentbus.instrument.set_default_bus(bus) once at start-up"
    )


# ------------------------------------------------------------------------- payloads
def json_data(value: Any, _depth: int = 0) -> Any:
    """``value`` as plain JSON data (str keys, lists, finite numbers); anything else as its
    ``repr``, so arbitrary arguments and results can go into an event payload. The values
    of secret-looking keys (``api_key``, ``*_token``, ...) become ``"[redacted]"``."""
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool:
        return value
    if kind is float:
        return value if math.isfinite(value) else repr(value)
    if _depth < _MAX_DEPTH:
        if kind is dict or isinstance(value, Mapping):  # secret keys: the value never leaves
            return {key if isinstance(key, str) else str(key):
                    REDACTED if isinstance(key, str) and is_secret_key(key)
                    else json_data(item, _depth + 1) for key, item in value.items()}
        if kind is list or kind is tuple or isinstance(value, list | tuple):
            return [json_data(item, _depth + 1) for item in value]
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, str):
            return str(value)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return json_data(float(value), _depth)
    return repr(value)


def _frozen_json(value: Any, converted: bool = False) -> JSONValue:
    """:func:`json_data` of ``value`` (unless ``converted`` says it is that already), frozen
    as an event payload value. It cannot fail: ``json_data`` turns anything nested deeper
    than the event's limit into text. An empty dict is the shared frozen one."""
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool:
        return value
    if kind is dict and not value:
        return _NO_ARGUMENTS
    return _freeze(value if converted else json_data(value), "payload", 0)


def _check_tool(name: object, tool_type: object, description: object) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"tool name must be a non-empty str, got {name!r}")
    _check_str("tool_type", tool_type)
    _check_str("description", description)


def _check_str(name: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")


def _is_plain_json(value: Any) -> bool:
    """True when :func:`json_data` keeps ``value`` as it is (no ``repr`` needed)."""
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        return all(type(k) is str and _is_plain_json(v) for k, v in value.items())
    if kind is list or kind is tuple:
        return all(_is_plain_json(v) for v in value)
    return False


def _error_payload(error: BaseException) -> dict[str, Any]:
    if isinstance(error, _CANCELLED):
        return {"error": "cancelled", "error_type": "cancelled"}
    return {"error": str(error) or type(error).__name__, "error_type": type(error).__name__}


class _Arguments:
    """Turns a call's arguments into a JSON payload (``self``/``cls`` left out; the values
    of secret-looking parameters, ``api_key`` and the like, as ``"[redacted]"``)."""

    __slots__ = ("_positional", "_required", "_signature", "_simple")

    def __init__(self, function: Callable[..., Any]) -> None:
        try:
            self._signature: inspect.Signature | None = inspect.signature(function)
        except (TypeError, ValueError):
            self._signature = None
        parameters = list(self._signature.parameters.values()) if self._signature else []
        empty = inspect.Parameter.empty
        positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
        self._positional = tuple(p.name for p in parameters if p.kind is positional)
        self._required = sum(1 for p in parameters
                             if p.kind is positional and p.default is empty)
        # Calls with positional arguments only skip ``Signature.bind`` (a few microseconds)
        # when the signature has nothing but plain parameters, none keyword-only required.
        self._simple = self._signature is not None and all(
            p.kind is positional or (p.kind is inspect.Parameter.KEYWORD_ONLY
                                     and p.default is not empty) for p in parameters)

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if not kwargs and self._simple and self._required <= len(args) <= len(
                self._positional):
            out: dict[str, Any] = {}
            for index, (name, value) in enumerate(zip(self._positional, args, strict=False)):
                if index == 0 and name in ("self", "cls"):
                    continue
                out[name] = REDACTED if is_secret_key(name) else json_data(value)
            return out
        if self._signature is not None:
            try:
                bound = self._signature.bind(*args, **kwargs)
            except TypeError:
                pass
            else:
                out = {}
                parameters = self._signature.parameters
                for index, (name, value) in enumerate(bound.arguments.items()):
                    if index == 0 and name in ("self", "cls"):
                        continue
                    if parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                        out.update(json_data(value))
                    else:
                        out[name] = REDACTED if is_secret_key(name) else json_data(value)
                return out
        out = json_data(kwargs)
        if args:
            out["args"] = json_data(args)
        return out

    def value(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The value the call passes for parameter ``name`` (None when it passes none)."""
        if name in kwargs:
            return kwargs[name]
        if self._signature is None or name not in self._signature.parameters:
            return None
        try:
            return self._signature.bind(*args, **kwargs).arguments.get(name)
        except TypeError:
            return None


# ------------------------------------------------------------------- the scopes
class _Scope:
    """Base of the context managers: publish the start on entry, attach its span, publish
    the end on exit. Usable with ``with`` and ``async with``; never suppresses errors."""

    _active: contextvars.ContextVar[Any]

    def __init__(self, bus: EventBus | None) -> None:
        self._explicit_bus = bus
        self.started: Event | None = None
        """The start event, stamped with the span's ids once published."""
        self.run: RunHandle | None = None
        self._bus: EventBus | None = None
        self._scope = EMPTY_SCOPE
        self._otel_token: object = None
        self._var_token: contextvars.Token[Any] | None = None

    # subclasses
    @property
    def _what(self) -> str:
        """Names the scope in errors and warnings (built only when one is raised)."""
        raise NotImplementedError

    def _node_id(self) -> str | None:
        loop = _CURRENT_NODE.get()
        return loop.node_id if loop is not None and loop.run is self.run else None

    def _start(self) -> Event:
        raise NotImplementedError

    def _finish(self, error: BaseException | None) -> None:
        raise NotImplementedError

    # shared
    def _emit(self, kind: str, payload: Mapping[str, Any], source: Source,
              severity: Severity = Severity.INFO, *, frozen: bool = False) -> Event:
        """Publish one of the scope's events. The kind, scope and source are the library's
        own, checked once (see ``_library_event``); ``frozen`` as there."""
        assert self._bus is not None
        event = _library_event(kind, payload, self._scope, source, severity, frozen=frozen)
        self._bus.publish_nowait(event)
        return event

    def _emit_guarded(self, kind: str, payload: Mapping[str, Any], source: Source,
                      severity: Severity = Severity.INFO, *, frozen: bool = False) -> None:
        """An end event must not replace the error the instrumented code raised."""
        try:
            self._emit(kind, payload, source, severity, frozen=frozen)
        except Exception:
            logger.warning("could not publish %s for %s", kind, self._what, exc_info=True)

    def _enter(self) -> None:
        if self.started is not None:
            raise RuntimeError(f"{self._what} was already entered; make a new one per use")
        run = self.run = _CURRENT_RUN.get()
        bus = self._explicit_bus
        if bus is None:
            bus = run.bus if run is not None else _resolve_bus(None, self._what)
        self._bus = bus
        node_id = self._node_id()
        if run is not None:
            self._scope = run.scope if node_id is None else run.child_scope(node_id)
        elif node_id is not None:
            self._scope = Scope(node_id=node_id)
        started = self.started = self._start()
        span_context = started._span_context  # stamped by the mirror, if one is attached
        self._otel_token = _attach(
            _set_span_in_context(_NonRecordingSpan(span_context))  # type: ignore[arg-type]
            if span_context is not None else context_of(started))
        self._var_token = self._active.set(self)

    def __enter__(self) -> Self:
        self._enter()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._exit(error)

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._exit(error)

    def _exit(self, error: BaseException | None) -> None:
        try:
            self._finish(error)
        finally:
            if self._var_token is not None:
                self._active.reset(self._var_token)
                self._var_token = None
            if self._otel_token is not None:
                _detach(self._otel_token)  # type: ignore[arg-type]
                self._otel_token = None


class _ScopeProtocol(Protocol[H_co]):
    def __enter__(self) -> H_co: ...

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None, /) -> bool | None: ...


class ToolCall(_Scope):
    """One tool call: ``agent.tool.call.started``, then ``completed`` with ``is_error``.

    Set ``result`` inside the block to record it (exported only with content capture on).
    """

    _active: contextvars.ContextVar[ToolCall | None]

    def __init__(self, name: str, *, arguments: Any = None, tool_type: str = "function",
                 tool_call_id: str | None = None, description: str | None = None,
                 bus: EventBus | None = None) -> None:
        _check_tool(name, tool_type, description)
        _check_str("tool_call_id", tool_call_id)
        self._setup(name, arguments, tool_type, tool_call_id, description, bus,
                    Source("tool", name), False)

    @property
    def _what(self) -> str:
        return f"tool {self.name!r}"

    @classmethod
    def _checked(cls, name: str, arguments: dict[str, Any], tool_type: str,
                 description: str | None, bus: EventBus | None, source: Source) -> ToolCall:
        """A call of an ``@tool`` function: its name, type and description were checked
        when it was decorated, and its arguments went through ``json_data`` already."""
        call = _new_object(cls)
        call._setup(name, arguments, tool_type, None, description, bus, source, True)
        return call

    def _setup(self, name: str, arguments: Any, tool_type: str, tool_call_id: str | None,
               description: str | None, bus: EventBus | None, source: Source,
               arguments_are_json: bool) -> None:
        _Scope.__init__(self, bus)
        self.name = name
        self.arguments = arguments
        self.tool_type = tool_type
        self.tool_call_id = tool_call_id or f"call-{new_event_id()}"
        self.description = description
        self.result: Any = None
        self.error: BaseException | None = None
        self._source = source
        self._arguments_are_json = arguments_are_json

    def _start(self) -> Event:
        # Every value is a str or frozen already: the event skips the payload check.
        payload: dict[str, Any] = {"tool_call_id": self.tool_call_id, "tool_name": self.name,
                                   "tool_type": self.tool_type}
        if self.arguments is not None:
            payload["arguments"] = _frozen_json(self.arguments, self._arguments_are_json)
        if self.description:
            payload["description"] = self.description
        return self._emit("agent.tool.call.started", payload, self._source, frozen=True)

    def _finish(self, error: BaseException | None) -> None:
        payload: dict[str, Any] = {"tool_call_id": self.tool_call_id, "tool_name": self.name}
        if error is None:
            payload["is_error"] = False
            if self.result is not None:
                payload["result"] = _frozen_json(self.result)
            self._emit_guarded("agent.tool.call.completed", payload, self._source,
                               frozen=True)
        else:
            self.error = error
            payload["is_error"] = True
            payload.update(_error_payload(error))
            self._emit_guarded("agent.tool.call.completed", payload, self._source,
                               Severity.ERROR, frozen=True)


class LLMCall(_Scope):
    """One LLM call: ``agent.llm.request``, then ``agent.llm.response`` or ``failed``.

    ``record_usage`` adds token counts and finish reasons to the response; ``delta`` reports
    a streamed chunk (counted by the mirror, never a span); set ``output`` to record the
    completion (exported only with content capture on).
    """

    _active: contextvars.ContextVar[LLMCall | None]

    def __init__(self, model: str | None = None, provider: str | None = None, *,
                 messages: Any = None, call_id: str | None = None,
                 bus: EventBus | None = None) -> None:
        _check_str("model", model)
        _check_str("provider", provider)
        _check_str("call_id", call_id)
        super().__init__(bus)
        self.model = model
        self.provider = provider
        self.messages = messages
        self.call_id = call_id or f"llm-{new_event_id()}"
        self.output: Any = None
        self.chunks = 0
        self.usage: dict[str, Any] = {}
        self.error: BaseException | None = None

    @property
    def _what(self) -> str:
        return f"LLM call to {self.model or 'unknown model'}"

    def _source(self) -> Source:
        return Source("llm", self.provider or self.model or "")

    def _start(self) -> Event:
        payload: dict[str, Any] = {"call_id": self.call_id}
        if self.model:
            payload["model"] = self.model
        if self.provider:
            payload["provider"] = self.provider
        if self.messages is not None:
            payload["messages"] = json_data(self.messages)
        return self._emit("agent.llm.request", payload, self._source())

    def record_usage(self, input_tokens: int | None = None, output_tokens: int | None = None,
                     finish_reasons: str | Iterable[str] | None = None, *,
                     cache_read_input_tokens: int | None = None,
                     reasoning_output_tokens: int | None = None,
                     response_model: str | None = None) -> None:
        """Token usage and finish reasons, published with the response (later calls add)."""
        for key, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens),
                           ("cache_read_input_tokens", cache_read_input_tokens),
                           ("reasoning_output_tokens", reasoning_output_tokens)):
            if value is not None:
                if type(value) is not int:
                    raise TypeError(f"{key} must be an int, got {value!r}")
                self.usage[key] = value
        if finish_reasons is not None:
            self.usage["finish_reasons"] = (
                [finish_reasons] if isinstance(finish_reasons, str) else
                [str(reason) for reason in finish_reasons])
        if response_model is not None:
            self.usage["response_model"] = response_model

    def delta(self, text: str) -> None:
        """One streamed chunk of text (``agent.llm.delta``; droppable under backpressure)."""
        self._chunk("agent.llm.delta", text)

    def reasoning_delta(self, text: str) -> None:
        """One streamed chunk of reasoning (``agent.llm.reasoning.delta``)."""
        self._chunk("agent.llm.reasoning.delta", text)

    def _chunk(self, kind: str, content: Any) -> None:
        if self.started is None:
            raise RuntimeError("delta() outside the LLM call: use it inside the block")
        self.chunks += 1
        payload: dict[str, Any] = {"call_id": self.call_id}
        if content is not None:
            payload["content"] = content if isinstance(content, str) else json_data(content)
        self._emit(kind, payload, self._source())

    def _finish(self, error: BaseException | None) -> None:
        base: dict[str, Any] = {"call_id": self.call_id}
        if self.model:
            base["model"] = self.model
        if error is None:
            payload = {**base, **self.usage}
            if self.output is not None:
                payload["content"] = json_data(self.output)
            self._emit_guarded("agent.llm.response", payload, self._source())
            return
        self.error = error
        if self.usage:
            self._emit_guarded("agent.llm.usage", {**base, **self.usage}, self._source())
        self._emit_guarded("agent.llm.failed", {**base, **_error_payload(error)},
                           self._source(), Severity.ERROR)



def _check_node(node_id: object, max_iterations: object) -> None:
    if not isinstance(node_id, str) or not node_id:
        raise ValueError(f"node_id must be a non-empty str, got {node_id!r}")
    if max_iterations is not None and (type(max_iterations) is not int
                                       or max_iterations < 1):
        raise ValueError(f"max_iterations must be an int >= 1, got {max_iterations!r}")


class NodeLoop(_Scope):
    """A graph node's loop: ``agent.node.loop.started``, ``iteration`` per
    :meth:`iteration`, then ``completed`` (with the count) or ``failed``."""

    _active: contextvars.ContextVar[NodeLoop | None]

    def __init__(self, node_id: str, max_iterations: int | None = None, *,
                 bus: EventBus | None = None) -> None:
        _check_node(node_id, max_iterations)
        super().__init__(bus)
        self.node_id = node_id
        self.max_iterations = max_iterations
        self.iterations = 0
        self.active = False

    @property
    def _what(self) -> str:
        return f"node {self.node_id!r}"

    def _node_id(self) -> str | None:
        return self.node_id

    def _start(self) -> Event:
        payload = {} if self.max_iterations is None else {"max_iterations": self.max_iterations}
        event = self._emit("agent.node.loop.started", payload, Source("node", self.node_id))
        self.active = True
        return event

    def _finish(self, error: BaseException | None) -> None:
        self.active = False
        if error is None:
            self._emit_guarded("agent.node.loop.completed", {"iterations": self.iterations},
                               Source("node", self.node_id))
        else:
            self._emit_guarded("agent.node.loop.failed",
                               {"iterations": self.iterations, **_error_payload(error)},
                               Source("node", self.node_id), Severity.ERROR)

    def iteration(self) -> NodeIteration:
        """The next iteration: ``with loop.iteration(): ...`` (its span is current inside)."""
        return NodeIteration(self)


_CURRENT_NODE: contextvars.ContextVar[NodeLoop | None] = contextvars.ContextVar(
    "otel_agentbus_current_node", default=None)
NodeLoop._active = _CURRENT_NODE


class NodeIteration:
    """One iteration of a :class:`NodeLoop` (``agent.node.loop.iteration``); the mirror
    ends its span when the next iteration starts or the loop ends."""

    def __init__(self, loop: NodeLoop) -> None:
        self.loop = loop
        self.number = 0
        self.started: Event | None = None
        self._otel_token: object = None

    def __enter__(self) -> NodeIteration:
        loop = self.loop
        if not loop.active:
            raise RuntimeError(f"node {loop.node_id!r}: iteration() outside its node_loop")
        if self.started is not None:
            raise RuntimeError("an iteration is entered once; call loop.iteration() again")
        loop.iterations += 1
        self.number = loop.iterations
        payload: dict[str, Any] = {"iteration": self.number}
        if loop.max_iterations is not None:
            payload["max_iterations"] = loop.max_iterations
        self.started = loop._emit("agent.node.loop.iteration", payload,
                                  Source("node", loop.node_id))
        self._otel_token = otel_context.attach(context_of(self.started))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._otel_token is not None:
            otel_context.detach(self._otel_token)  # type: ignore[arg-type]
            self._otel_token = None

    async def __aenter__(self) -> NodeIteration:
        return self.__enter__()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(kind, error, tb)


_CURRENT_TOOL: contextvars.ContextVar[ToolCall | None] = contextvars.ContextVar(
    "otel_agentbus_current_tool", default=None)
_CURRENT_LLM: contextvars.ContextVar[LLMCall | None] = contextvars.ContextVar(
    "otel_agentbus_current_llm", default=None)
ToolCall._active = _CURRENT_TOOL
LLMCall._active = _CURRENT_LLM


def current_tool_call() -> ToolCall | None:
    """The tool call the calling code runs in (set its ``result``, read its id)."""
    return _CURRENT_TOOL.get()


def current_llm_call() -> LLMCall | None:
    """The LLM call the calling code runs in: ``current_llm_call().record_usage(...)``."""
    return _CURRENT_LLM.get()


def current_node_loop() -> NodeLoop | None:
    """The node loop the calling code runs in, if it belongs to the current run."""
    loop = _CURRENT_NODE.get()
    return loop if loop is not None and loop.run is current_run() else None


def iteration() -> NodeIteration:
    """The next iteration of the current node loop (``with iteration(): ...``)."""
    loop = current_node_loop()
    if loop is None or not loop.active:
        raise RuntimeError("iteration() outside any node_loop(): open one first")
    return loop.iteration()


class _NodeCall:
    """A call of an ``@node`` function: one iteration of the enclosing loop of the same
    node in the same run, else a loop of its own with one iteration."""

    def __init__(self, node_id: str, max_iterations: int | None, bus: EventBus | None) -> None:
        self._node_id = node_id
        self._max_iterations = max_iterations
        self._bus = bus
        self._stack = ExitStack()

    def __enter__(self) -> NodeLoop:
        loop = current_node_loop()
        if loop is None or loop.node_id != self._node_id or not loop.active:
            loop = self._stack.enter_context(
                NodeLoop(self._node_id, self._max_iterations, bus=self._bus))
        try:
            self._stack.enter_context(loop.iteration())
        except BaseException as error:
            self._stack.__exit__(type(error), error, error.__traceback__)
            raise
        return loop

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stack.__exit__(kind, error, tb)


# ------------------------------------------------------------------ context managers
def agent_run(name: str, *, bus: EventBus | None = None, session_id: str | None = None,
              run_id: str | None = None, input: Any = None, stream_id: str | None = None,
              graph_id: str | None = None, traceparent: str | None = None,
              correlation_id: str | None = None) -> RunScope:
    """``with agent_run("planner") as run:`` (or ``async with``): one run of an agent.

    The bus is ``bus=``, else the enclosing run's, else :func:`set_default_bus`'s. A run
    inside another run is a sub-agent: it keeps the conversation (``session_id``).
    """
    return RunScope(_resolve_bus(bus, f"agent {name!r}"), name, run_id=run_id,
                    session_id=session_id, stream_id=stream_id, graph_id=graph_id,
                    input=None if input is None else json_data(input),
                    traceparent=traceparent, correlation_id=correlation_id)


def node_loop(node_id: str, max_iterations: int | None = None, *,
              bus: EventBus | None = None) -> NodeLoop:
    """``with node_loop("plan", max_iterations=5) as loop:`` then ``with loop.iteration():``."""
    return NodeLoop(node_id, max_iterations, bus=bus)


def llm_call_scope(model: str | None = None, provider: str | None = None, *,
                   messages: Any = None, call_id: str | None = None,
                   bus: EventBus | None = None) -> LLMCall:
    """``with llm_call_scope("gpt-4o", "openai") as call:`` around one LLM request."""
    return LLMCall(model, provider, messages=messages, call_id=call_id, bus=bus)


def tool_call(name: str, *, arguments: Any = None, tool_type: str = "function",
              tool_call_id: str | None = None, description: str | None = None,
              bus: EventBus | None = None) -> ToolCall:
    """``with tool_call("search", arguments={...}) as call:`` then ``call.result = ...``."""
    return ToolCall(name, arguments=arguments, tool_type=tool_type, tool_call_id=tool_call_id,
                    description=description, bus=bus)


# ------------------------------------------------------------------------ wrapping
class _InContext:
    """Awaits ``awaitable`` with each of its steps run inside ``context``."""

    __slots__ = ("_awaitable", "_context")

    def __init__(self, context: contextvars.Context, awaitable: Any) -> None:
        self._context = context
        self._awaitable = awaitable

    def __await__(self) -> Generator[Any, Any, Any]:
        run = self._context.run
        steps = self._awaitable.__await__()
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                if thrown is None:
                    signal = run(steps.send, sent)
                else:
                    error, thrown = thrown, None
                    signal = run(steps.throw, error)
            except StopIteration as stop:
                return stop.value
            try:
                sent = yield signal
            except GeneratorExit:
                run(steps.close)
                raise
            except BaseException as error:
                thrown = error
                sent = None


_Make = Callable[[tuple[Any, ...], dict[str, Any]], _ScopeProtocol[Any]]
_Done = Callable[[Any, Any], None]
_Item = Callable[[Any, Any], None]


def _wrap(function: F, make: _Make, done: _Done, item: _Item | None = None) -> F:
    """Run each call of ``function`` inside the scope ``make`` builds for it; ``done``
    records the result, ``item`` sees each value a generator yields."""
    if inspect.isasyncgenfunction(function):
        return _wrap_async_generator(function, make, done, item)
    if inspect.isgeneratorfunction(function):
        return _wrap_generator(function, make, done, item)
    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            with make(args, kwargs) as handle:
                result = await function(*args, **kwargs)
                done(handle, result)
                return result

        return run_async  # type: ignore[return-value]

    @functools.wraps(function)
    def run_sync(*args: Any, **kwargs: Any) -> Any:
        with make(args, kwargs) as handle:
            result = function(*args, **kwargs)
            done(handle, result)
            return result

    return run_sync  # type: ignore[return-value]


def _wrap_generator(function: F, make: _Make, done: _Done, item: _Item | None) -> F:
    @functools.wraps(function)
    def run_generator(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        context = contextvars.copy_context()
        run = context.run
        scope = run(make, args, kwargs)
        handle = run(scope.__enter__)
        try:
            inner = run(function, *args, **kwargs)
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                try:
                    if thrown is None:
                        value = run(inner.send, sent)
                    else:
                        error, thrown = thrown, None
                        value = run(inner.throw, error)
                except StopIteration as stop:
                    result = stop.value
                    break
                if item is not None:
                    run(item, handle, value)
                try:
                    sent = yield value
                except GeneratorExit:
                    run(inner.close)
                    raise
                except BaseException as error:
                    thrown = error
                    sent = None
            run(done, handle, result)
        except BaseException as error:
            run(scope.__exit__, type(error), error, error.__traceback__)
            raise
        run(scope.__exit__, None, None, None)
        return result

    return run_generator  # type: ignore[return-value]


def _wrap_async_generator(function: F, make: _Make, done: _Done, item: _Item | None) -> F:
    @functools.wraps(function)
    async def run_async_generator(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        context = contextvars.copy_context()
        run = context.run
        scope = run(make, args, kwargs)
        handle = run(scope.__enter__)
        try:
            inner = run(function, *args, **kwargs)
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                try:
                    if thrown is None:
                        value = await _InContext(context, inner.asend(sent))
                    else:
                        error, thrown = thrown, None
                        value = await _InContext(context, inner.athrow(error))
                except StopAsyncIteration:
                    break
                if item is not None:
                    run(item, handle, value)
                try:
                    sent = yield value
                except GeneratorExit:
                    await _InContext(context, inner.aclose())
                    raise
                except BaseException as error:
                    thrown = error
                    sent = None
            run(done, handle, None)
        except BaseException as error:
            run(scope.__exit__, type(error), error, error.__traceback__)
            raise
        run(scope.__exit__, None, None, None)

    return run_async_generator  # type: ignore[return-value]


def _name_of(function: Callable[..., Any]) -> str:
    return getattr(function, "__name__", None) or type(function).__name__


def _first_line(text: str | None) -> str | None:
    if not text:
        return None
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return None


# ----------------------------------------------------------------------- decorators
@overload
def agent(name: F, /) -> F: ...
@overload
def agent(name: str | None = None, *, bus: EventBus | None = None,
          session_id: str | None = None) -> Callable[[F], F]: ...
def agent(name: str | Callable[..., Any] | None = None, *, bus: EventBus | None = None,
          session_id: str | None = None) -> Any:
    """Each call of the decorated function is one run of agent ``name`` (default: the
    function's name): its arguments are the run's input, its return value the output."""
    if callable(name):
        return agent()(name)

    def decorate(function: F) -> F:
        agent_name = name or _name_of(function)
        arguments = _Arguments(function)

        def make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> RunScope:
            return agent_run(agent_name, bus=bus, session_id=session_id,
                             input=arguments(args, kwargs))

        def done(handle: RunHandle, result: Any) -> None:
            if result is not None:
                handle.output = json_data(result)

        return _wrap(function, make, done)

    return decorate


@overload
def node(node_id: F, /) -> F: ...
@overload
def node(node_id: str | None = None, max_iterations: int | None = None, *,
         bus: EventBus | None = None) -> Callable[[F], F]: ...
def node(node_id: str | Callable[..., Any] | None = None, max_iterations: int | None = None,
         *, bus: EventBus | None = None) -> Any:
    """Each call of the decorated function is one iteration of node ``node_id`` (default:
    the function's name): of the enclosing ``node_loop`` of that node, else of a loop of
    its own."""
    if callable(node_id):
        return node()(node_id)
    _check_node(node_id or "node", max_iterations)  # now, not at the first call

    def decorate(function: F) -> F:
        the_id = node_id or _name_of(function)

        def make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _NodeCall:
            return _NodeCall(the_id, max_iterations, bus)

        return _wrap(function, make, _ignore)

    return decorate


def _ignore(handle: Any, result: Any) -> None:
    return None


@overload
def llm_call(model: F, /) -> F: ...
@overload
def llm_call(model: str | None = None, provider: str | None = None, *,
             bus: EventBus | None = None) -> Callable[[F], F]: ...
def llm_call(model: str | Callable[..., Any] | None = None, provider: str | None = None, *,
             bus: EventBus | None = None) -> Any:
    """Each call of the decorated function is one LLM call.

    Without ``model=``, a ``model`` argument of the call names it; a ``messages`` argument
    becomes the request's messages. A str (or JSON) return value is the completion. In
    the function, ``current_llm_call().record_usage(...)`` reports tokens; a generator's
    or async generator's every yielded chunk is one ``agent.llm.delta``.
    """
    if callable(model):
        return llm_call()(model)

    def decorate(function: F) -> F:
        arguments = _Arguments(function)

        def make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> LLMCall:
            called_model = model or arguments.value("model", args, kwargs)
            return LLMCall(called_model if isinstance(called_model, str) else None, provider,
                           messages=arguments.value("messages", args, kwargs), bus=bus)

        def done(call: LLMCall, result: Any) -> None:
            if result is not None and call.output is None and _is_plain_json(result):
                call.output = result

        def chunk(call: LLMCall, value: Any) -> None:
            call._chunk("agent.llm.delta", value if isinstance(value, str) else None)

        return _wrap(function, make, done, chunk)

    return decorate


@overload
def tool(name: F, /) -> F: ...
@overload
def tool(name: str | None = None, tool_type: str = "function", *,
         description: str | None = None, bus: EventBus | None = None) -> Callable[[F], F]: ...
def tool(name: str | Callable[..., Any] | None = None, tool_type: str = "function", *,
         description: str | None = None, bus: EventBus | None = None) -> Any:
    """Each call of the decorated function is one tool call (``name`` defaults to the
    function's name, the description to its docstring's first line); its arguments and
    return value are the call's arguments and result."""
    if callable(name):
        return tool()(name)

    def decorate(function: F) -> F:
        tool_name = name or _name_of(function)
        arguments = _Arguments(function)
        summary = description or _first_line(function.__doc__)
        _check_tool(tool_name, tool_type, summary)  # now, not at the first call

        checked = ToolCall._checked
        source = Source("tool", tool_name)

        def make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ToolCall:
            return checked(tool_name, arguments(args, kwargs), tool_type, summary, bus, source)

        def done(call: ToolCall, result: Any) -> None:
            if result is not None and call.result is None:
                call.result = result

        return _wrap(function, make, done)

    return decorate
